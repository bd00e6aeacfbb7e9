"""The tiny LLaMA-architecture demo model's ONNX graph, written node by node with `onnx.helper`.

Token embedding, RMSNorm, rotary position embedding, grouped-query attention with a KV cache,
SwiGLU MLP and LM head, named like the common exports; weights drawn in a fixed order from one
seeded generator. This module must not write files or run the model.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from ..llm.graphs import IR_VERSION, OPSET


class TinyShape(Protocol):
    """What the graph needs of a `TinyLlamaConfig` (read-only)."""

    @property
    def hidden_size(self) -> int: ...  # noqa: D102

    @property
    def intermediate_size(self) -> int: ...  # noqa: D102

    @property
    def num_layers(self) -> int: ...  # noqa: D102

    @property
    def num_heads(self) -> int: ...  # noqa: D102

    @property
    def num_kv_heads(self) -> int: ...  # noqa: D102

    @property
    def rope_theta(self) -> float: ...  # noqa: D102

    @property
    def rms_norm_eps(self) -> float: ...  # noqa: D102

    @property
    def cache_dtype(self) -> str: ...  # noqa: D102

    @property
    def position_ids(self) -> bool: ...  # noqa: D102

    @property
    def seed(self) -> int: ...  # noqa: D102

    @property
    def head_dim(self) -> int: ...  # noqa: D102


class _Graph:
    """Accumulates nodes and initializers with unique value names."""

    def __init__(self) -> None:
        import onnx

        self.helper = onnx.helper
        self.numpy_helper = onnx.numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0
        self._consts: dict[tuple[str, tuple[float, ...]], str] = {}

    def weight(self, name: str, array: NDArray[Any]) -> str:
        self.initializers.append(self.numpy_helper.from_array(array, name))
        return name

    def ints(self, *values: int) -> str:
        return self._const("i64", values, np.array(values, dtype=np.int64))

    def scalar_int(self, value: int) -> str:
        return self._const("s64", (value,), np.array(value, dtype=np.int64))

    def scalar_float(self, value: float) -> str:
        return self._const("f32", (value,), np.array(value, dtype=np.float32))

    def _const(self, kind: str, values: tuple[float, ...], array: NDArray[Any]) -> str:
        key = (kind, values)
        if key not in self._consts:
            self._consts[key] = self.weight(f"const_{kind}_{len(self._consts)}", array)
        return self._consts[key]

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        self._count += 1
        name = out or f"{op_type.lower()}_{self._count}"
        self.nodes.append(
            self.helper.make_node(
                op_type, list(inputs), [name], name=f"n{self._count}_{op_type}", **attrs
            )
        )
        return name


class _Weights:
    """Deterministic random weights, drawn in a fixed order from one seeded generator.

    Every value is a float16 number stored as float32, as a checkpoint trained or shipped in
    half precision holds: a float16 engine then runs exactly the export's weights.
    """

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def normal(self, shape: tuple[int, ...], std: float) -> NDArray[np.float32]:
        return _half_exact(self.rng.standard_normal(shape) * std)

    def norm(self, size: int) -> NDArray[np.float32]:
        return _half_exact(1.0 + self.rng.standard_normal(size) * 0.1)


def _half_exact(values: NDArray[np.float64]) -> NDArray[np.float32]:
    return values.astype(np.float16).astype(np.float32)


class _Builder:
    """Writes the decoder graph; weights are drawn in the order the layers use them."""

    def __init__(self, config: TinyShape, vocab_size: int) -> None:
        import onnx

        self.helper, self.tp = onnx.helper, onnx.TensorProto
        self.config, self.vocab = config, vocab_size
        self.g, self.w = _Graph(), _Weights(config.seed)
        self.hidden, self.heads = config.hidden_size, config.num_heads
        self.kv_heads, self.dim = config.num_kv_heads, config.head_dim
        self.cache_type = self.tp.FLOAT16 if config.cache_dtype == "float16" else self.tp.FLOAT
        self.inputs: list[Any] = []
        self.outputs: list[Any] = []
        self.masked = self.scale = ""

    def declare_io(self) -> None:
        """Graph inputs and outputs, named like the common exports."""
        info, tp = self.helper.make_tensor_value_info, self.tp
        self.inputs = [
            info("input_ids", tp.INT64, ["batch_size", "sequence_length"]),
            info("attention_mask", tp.INT64, ["batch_size", "total_sequence_length"]),
        ]
        if self.config.position_ids:
            self.inputs.append(info("position_ids", tp.INT64, ["batch_size", "sequence_length"]))
        self.outputs = [info("logits", tp.FLOAT, ["batch_size", "sequence_length", self.vocab])]
        for i in range(self.config.num_layers):
            for kind in ("key", "value"):
                self.inputs.append(
                    info(
                        f"past_key_values.{i}.{kind}",
                        self.cache_type,
                        ["batch_size", self.kv_heads, "past_sequence_length", self.dim],
                    )
                )
                self.outputs.append(
                    info(
                        f"present.{i}.{kind}",
                        self.cache_type,
                        ["batch_size", self.kv_heads, "total_sequence_length", self.dim],
                    )
                )

    def lengths(self) -> tuple[str, str, str]:
        """This step's tokens, the whole context and the cached part, as scalars."""
        g = self.g
        seq_len = g.op("Squeeze", g.op("Shape", "input_ids", start=1, end=2), g.ints(0))
        total = g.op("Squeeze", g.op("Shape", "attention_mask", start=1, end=2), g.ints(0))
        return seq_len, total, g.op("Sub", total, seq_len)

    def rotary(self, past_len: str, total: str) -> tuple[str, str]:
        """Cos and sin tables [batch, 1, seq, dim], halves rotated together (LLaMA's way)."""
        g, dim = self.g, self.dim
        if self.config.position_ids:
            positions = "position_ids"
        else:
            positions = g.op(
                "Unsqueeze", g.op("Range", past_len, total, g.scalar_int(1)), g.ints(0)
            )
        theta = self.config.rope_theta
        inv_freq = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
        freq = g.weight("rotary.inv_freq", inv_freq.astype(np.float32))
        angles = g.op(
            "Mul", g.op("Unsqueeze", g.op("Cast", positions, to=self.tp.FLOAT), g.ints(2)), freq
        )
        angles = g.op("Concat", angles, angles, axis=-1)
        cos = g.op("Unsqueeze", g.op("Cos", angles), g.ints(1))
        return cos, g.op("Unsqueeze", g.op("Sin", angles), g.ints(1))

    def rotate(self, t: str, cos: str, sin: str) -> str:
        """Apply the rotary embedding to ``t`` [batch, heads, seq, dim]."""
        g, half = self.g, self.dim // 2
        first = g.op("Slice", t, g.ints(0), g.ints(half), g.ints(-1))
        second = g.op("Slice", t, g.ints(half), g.ints(self.dim), g.ints(-1))
        turned = g.op("Concat", g.op("Neg", second), first, axis=-1)
        return g.op("Add", g.op("Mul", t, cos), g.op("Mul", turned, sin))

    def allowed(self, past_len: str, total: str) -> str:
        """Causal and padding mask [batch, 1, 1, seq, total] for scores laid out per KV group."""
        g = self.g
        query_pos = g.op("Unsqueeze", g.op("Range", past_len, total, g.scalar_int(1)), g.ints(1))
        key_pos = g.op(
            "Unsqueeze", g.op("Range", g.scalar_int(0), total, g.scalar_int(1)), g.ints(0)
        )
        causal = g.op("LessOrEqual", key_pos, query_pos)
        padding = g.op(
            "Unsqueeze", g.op("Cast", "attention_mask", to=self.tp.BOOL), g.ints(1, 2, 3)
        )
        return g.op("And", causal, padding)

    def rms_norm(self, t: str, name: str) -> str:
        """RMSNorm with a learnt scale (its weight drawn now)."""
        g = self.g
        weight = g.weight(name, self.w.norm(self.hidden))
        mean = g.op("ReduceMean", g.op("Mul", t, t), axes=[-1], keepdims=1)
        denom = g.op("Sqrt", g.op("Add", mean, g.scalar_float(self.config.rms_norm_eps)))
        return g.op("Mul", g.op("Div", t, denom), weight)

    def heads_first(self, t: str, count: int) -> str:
        """[batch, seq, count * dim] to [batch, count, seq, dim]."""
        split = self.g.op("Reshape", t, self.g.ints(0, 0, count, self.dim))
        return self.g.op("Transpose", split, perm=[0, 2, 1, 3])

    def cached(self, new: str, layer: int, kind: str) -> str:
        """The past rows plus this step's, as ``present.*``; returned as float32."""
        g = self.g
        past, present = f"past_key_values.{layer}.{kind}", f"present.{layer}.{kind}"
        if self.cache_type == self.tp.FLOAT:
            return g.op("Concat", past, new, axis=2, out=present)
        # The fp16 cache is rounded once and read back as float32, so this step's tokens are
        # attended with exactly the values later steps will read from the cache.
        rounded = g.op("Cast", new, to=self.tp.FLOAT16)
        g.op("Concat", past, rounded, axis=2, out=present)
        return g.op("Cast", present, to=self.tp.FLOAT)

    def attention(self, x: str, layer: int, rope: tuple[str, str], allowed: str) -> str:
        """One layer's attention block; returns the residual stream after it."""
        g, w, hidden, heads, kv_heads, dim = (
            self.g,
            self.w,
            self.hidden,
            self.heads,
            self.kv_heads,
            self.dim,
        )
        prefix = f"model.layers.{layer}"
        h = self.rms_norm(x, f"{prefix}.input_layernorm.weight")
        std = hidden**-0.5
        wq = g.weight(f"{prefix}.self_attn.q_proj.weight", w.normal((hidden, heads * dim), std))
        wk = g.weight(f"{prefix}.self_attn.k_proj.weight", w.normal((hidden, kv_heads * dim), std))
        wv = g.weight(f"{prefix}.self_attn.v_proj.weight", w.normal((hidden, kv_heads * dim), std))
        wo = g.weight(
            f"{prefix}.self_attn.o_proj.weight",
            w.normal((heads * dim, hidden), (heads * dim) ** -0.5),
        )
        q = self.rotate(self.heads_first(g.op("MatMul", h, wq), heads), *rope)
        k = self.rotate(self.heads_first(g.op("MatMul", h, wk), kv_heads), *rope)
        v = self.heads_first(g.op("MatMul", h, wv), kv_heads)
        keys = g.op("Unsqueeze", self.cached(k, layer, "key"), g.ints(2))
        values = g.op("Unsqueeze", self.cached(v, layer, "value"), g.ints(2))
        # Grouped-query attention without repeating the cache: queries are grouped
        # [batch, kv_heads, group, seq, dim] and broadcast against [batch, kv_heads, 1, total, dim].
        grouped = g.op("Reshape", q, g.ints(0, kv_heads, heads // kv_heads, -1, dim))
        scores = g.op(
            "Mul",
            g.op("MatMul", grouped, g.op("Transpose", keys, perm=[0, 1, 2, 4, 3])),
            self.scale,
        )
        masked = g.op("Where", allowed, scores, self.masked)
        probs = g.op("Softmax", masked, axis=-1)
        context = g.op("Reshape", g.op("MatMul", probs, values), g.ints(0, heads, -1, dim))
        merged = g.op(
            "Reshape", g.op("Transpose", context, perm=[0, 2, 1, 3]), g.ints(0, 0, heads * dim)
        )
        return g.op("Add", x, g.op("MatMul", merged, wo))

    def mlp(self, x: str, layer: int) -> str:
        """One layer's SwiGLU MLP block; returns the residual stream after it."""
        g, w, hidden, size = self.g, self.w, self.hidden, self.config.intermediate_size
        prefix = f"model.layers.{layer}"
        h = self.rms_norm(x, f"{prefix}.post_attention_layernorm.weight")
        w_gate = g.weight(f"{prefix}.mlp.gate_proj.weight", w.normal((hidden, size), hidden**-0.5))
        w_up = g.weight(f"{prefix}.mlp.up_proj.weight", w.normal((hidden, size), hidden**-0.5))
        w_down = g.weight(f"{prefix}.mlp.down_proj.weight", w.normal((size, hidden), size**-0.5))
        gate = g.op("MatMul", h, w_gate)
        swish = g.op("Mul", gate, g.op("Sigmoid", gate))
        return g.op("Add", x, g.op("MatMul", g.op("Mul", swish, g.op("MatMul", h, w_up)), w_down))

    def build(self) -> Any:
        """The whole model."""
        import onnx

        g, w = self.g, self.w
        self.declare_io()
        embed = g.weight("model.embed_tokens.weight", w.normal((self.vocab, self.hidden), 1.0))
        x = g.op("Gather", embed, "input_ids")
        _, total, past_len = self.lengths()
        rope = self.rotary(past_len, total)
        allowed = self.allowed(past_len, total)
        self.masked = g.scalar_float(-1e9)
        self.scale = g.scalar_float(1.0 / math.sqrt(self.dim))
        for layer in range(self.config.num_layers):
            x = self.mlp(self.attention(x, layer, rope, allowed), layer)
        h = self.rms_norm(x, "model.norm.weight")
        # A wide LM head makes the logits spread out, so greedy choices are clear-cut.
        head = g.weight(
            "lm_head.weight", w.normal((self.hidden, self.vocab), 3.0 * self.hidden**-0.5)
        )
        g.op("MatMul", h, head, out="logits")
        graph = self.helper.make_graph(
            g.nodes, "tiny_llama", self.inputs, self.outputs, g.initializers
        )
        model = self.helper.make_model(
            graph,
            opset_imports=[self.helper.make_opsetid("", OPSET)],
            producer_name="ane_build.chat.tiny",
            ir_version=IR_VERSION,
        )
        model.doc_string = "Tiny LLaMA-architecture demo model with RANDOM weights (ane_build)."
        onnx.checker.check_model(model)
        return model


def build_model(config: TinyShape, vocab_size: int) -> Any:
    """Build the tiny LLaMA-architecture causal LM as an ONNX model.

    Inputs: ``input_ids`` and ``attention_mask`` (int64), ``position_ids`` (optional, int64),
    ``past_key_values.N.key/value`` ``[batch, kv_heads, past, head_dim]``. Outputs: ``logits``
    ``[batch, seq, vocab]`` (float32) and ``present.N.key/value`` (past plus this step).

    Args:
        config: Dimensions and options (a `TinyLlamaConfig`).
        vocab_size: Rows of the embedding and columns of the LM head.

    Returns:
        An ``onnx.ModelProto``.
    """
    return _Builder(config, vocab_size).build()
