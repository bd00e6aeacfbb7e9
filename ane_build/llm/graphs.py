"""The chunk graphs of a split, authored with `onnx.helper` from a checkpoint's weights.

Every graph reads and writes float16 (what the engine holds), keeps its weights as float16
initializers, and computes in float32 inside: RMSNorm, rotary embeddings from cos/sin inputs,
grouped-query attention over the static KV cache plus this run's new rows, a softmax written out
stably (row maximum subtracted before ``Exp``) so a float16 engine cannot overflow, and the SwiGLU
MLP. A position the mask marks `MASKED` has its score replaced (not offset: a stale cache row of
any finite size cannot leak through) before the softmax. The graph
layouts (names, shapes) come from `plan`; this module must not decide them, and must not run them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from .checkpoint import Checkpoint
from .plan import ChunkPlan, TensorPlan, cache_names
from .spec import LlamaSpec

OPSET = 17
# onnxruntime 1.17, the oldest the package allows, reads IR version 9.
IR_VERSION = 9
# The mask value of a hidden position: float16's lowest finite value, so the mask itself never
# holds an infinity. Anything below half of it hides the position.
MASKED = float(np.finfo(np.float16).min)
# The score a hidden position gets inside the graph (float32): far below any real score, finite so
# the softmax's subtraction of the row maximum cannot produce a NaN.
_HIDDEN_SCORE = -1e30
PRODUCER = "ane_build.llm"


class _Builder:
    """Nodes and initializers of one graph, with unique value names."""

    def __init__(self) -> None:
        import onnx

        self.onnx = onnx
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0
        self._consts: dict[tuple[str, bytes], str] = {}

    def weight(self, name: str, array: npt.NDArray[Any]) -> str:
        """A float16 weight, cast to float32 where it is used (onnxruntime folds the cast)."""
        self.initializers.append(self.onnx.numpy_helper.from_array(array.astype(np.float16), name))
        return self.op("Cast", name, to=self.onnx.TensorProto.FLOAT)

    def const(self, array: npt.NDArray[Any]) -> str:
        key = (str(array.dtype) + str(array.shape), array.tobytes())
        if key not in self._consts:
            name = f"const_{len(self._consts)}"
            self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
            self._consts[key] = name
        return self._consts[key]

    def ints(self, *values: int) -> str:
        return self.const(np.array(values, dtype=np.int64))

    def scalar(self, value: float) -> str:
        return self.const(np.array(value, dtype=np.float32))

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        self._count += 1
        name = out or f"{op_type.lower()}_{self._count}"
        self.nodes.append(
            self.onnx.helper.make_node(
                op_type, list(inputs), [name], name=f"n{self._count}_{op_type}", **attrs
            )
        )
        return name

    def to_float(self, name: str) -> str:
        return self.op("Cast", name, to=self.onnx.TensorProto.FLOAT)

    def to_half(self, name: str, out: str | None = None) -> str:
        return self.op("Cast", name, out=out, to=self.onnx.TensorProto.FLOAT16)

    def model(self, plan: ChunkPlan) -> Any:
        helper, tp = self.onnx.helper, self.onnx.TensorProto

        def info(tensor: TensorPlan) -> Any:
            dtype = tp.INT64 if tensor.dtype == "int64" else tp.FLOAT16
            dims = [d if d >= 0 else "sequence" for d in tensor.shape]
            return helper.make_tensor_value_info(tensor.name, dtype, dims)

        graph = helper.make_graph(
            self.nodes,
            plan.name.replace(".", "_"),
            [info(t) for t in plan.inputs],
            [info(t) for t in plan.outputs],
            self.initializers,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name=PRODUCER,
            ir_version=IR_VERSION,
        )
        model.doc_string = f"{plan.name}: chunk of a LLaMA checkpoint split by ane_build."
        return model


def _rms_norm(b: _Builder, x: str, weight: npt.NDArray[Any], name: str, eps: float) -> str:
    mean = b.op("ReduceMean", b.op("Mul", x, x), axes=[-1], keepdims=1)
    scale = b.op("Reciprocal", b.op("Sqrt", b.op("Add", mean, b.scalar(eps))))
    return b.op("Mul", b.op("Mul", x, scale), b.weight(name, weight))


def _softmax(b: _Builder, scores: str) -> str:
    """Softmax over the last axis with the row maximum subtracted first."""
    shifted = b.op("Sub", scores, b.op("ReduceMax", scores, axes=[-1], keepdims=1))
    exp = b.op("Exp", shifted)
    return b.op("Div", exp, b.op("ReduceSum", exp, b.ints(-1), keepdims=1))


class _Layer:
    """One decoder layer's nodes inside a block graph."""

    def __init__(self, b: _Builder, spec: LlamaSpec, cos: str, sin: str, mask: str) -> None:
        self.b, self.spec, self.cos, self.sin, self.mask = b, spec, cos, sin, mask

    def heads_first(self, t: str, count: int) -> str:
        b, d = self.b, self.spec.head_dim
        return b.op("Transpose", b.op("Reshape", t, b.ints(0, 0, count, d)), perm=[0, 2, 1, 3])

    def rotate(self, t: str) -> str:
        b, half, d = self.b, self.spec.head_dim // 2, self.spec.head_dim
        first = b.op("Slice", t, b.ints(0), b.ints(half), b.ints(-1))
        second = b.op("Slice", t, b.ints(half), b.ints(d), b.ints(-1))
        turned = b.op("Concat", b.op("Neg", second), first, axis=-1)
        return b.op("Add", b.op("Mul", t, self.cos), b.op("Mul", turned, self.sin))

    def attention(self, ckpt: Checkpoint, layer: int, h: str) -> str:
        b, spec = self.b, self.spec
        heads, kv, d, width = spec.num_heads, spec.num_kv_heads, spec.head_dim, spec.hidden_size
        p = f"model.layers.{layer}.self_attn"
        wq = b.weight(f"{p}.q_proj.weight", ckpt.linear(f"{p}.q_proj.weight", heads * d, width))
        wk = b.weight(f"{p}.k_proj.weight", ckpt.linear(f"{p}.k_proj.weight", kv * d, width))
        wv = b.weight(f"{p}.v_proj.weight", ckpt.linear(f"{p}.v_proj.weight", kv * d, width))
        wo = b.weight(f"{p}.o_proj.weight", ckpt.linear(f"{p}.o_proj.weight", width, heads * d))
        q = self.rotate(self.heads_first(b.op("MatMul", h, wq), heads))
        key_cache, value_cache, new_key, new_value = cache_names(layer)
        # New rows are rounded to float16 as they leave the program, and attended as rounded, so
        # this run sees exactly what later runs will read back from the cache.
        k = b.to_float(b.to_half(self.rotate(self.heads_first(b.op("MatMul", h, wk), kv)), new_key))
        v = b.to_float(b.to_half(self.heads_first(b.op("MatMul", h, wv), kv), new_value))
        keys = b.op("Concat", b.to_float(key_cache), k, axis=2)
        values = b.op("Concat", b.to_float(value_cache), v, axis=2)
        # Grouped-query attention without repeating the cache: queries [1, kv, group, S, d]
        # against keys broadcast as [1, kv, 1, N + S, d].
        grouped = b.op("Reshape", q, b.ints(1, kv, spec.group, -1, d))
        keys_t = b.op("Transpose", b.op("Unsqueeze", keys, b.ints(2)), perm=[0, 1, 2, 4, 3])
        scores = b.op("Mul", b.op("MatMul", grouped, keys_t), b.scalar(1.0 / math.sqrt(d)))
        probs = _softmax(b, b.op("Where", self.mask, b.scalar(_HIDDEN_SCORE), scores))
        context = b.op("MatMul", probs, b.op("Unsqueeze", values, b.ints(2)))
        merged = b.op(
            "Transpose", b.op("Reshape", context, b.ints(1, heads, -1, d)), perm=[0, 2, 1, 3]
        )
        return b.op("MatMul", b.op("Reshape", merged, b.ints(1, -1, heads * d)), wo)

    def mlp(self, ckpt: Checkpoint, layer: int, h: str) -> str:
        b, width, size = self.b, self.spec.hidden_size, self.spec.intermediate_size
        p = f"model.layers.{layer}.mlp"
        gate = b.op(
            "MatMul",
            h,
            b.weight(f"{p}.gate_proj", ckpt.linear(f"{p}.gate_proj.weight", size, width)),
        )
        up = b.op(
            "MatMul", h, b.weight(f"{p}.up_proj", ckpt.linear(f"{p}.up_proj.weight", size, width))
        )
        down = b.weight(f"{p}.down_proj", ckpt.linear(f"{p}.down_proj.weight", width, size))
        swish = b.op("Mul", gate, b.op("Sigmoid", gate))
        return b.op("MatMul", b.op("Mul", swish, up), down)

    def __call__(self, ckpt: Checkpoint, layer: int, x: str) -> str:
        spec, b = self.spec, self.b
        p = f"model.layers.{layer}"
        norm = ckpt.vector(f"{p}.input_layernorm.weight", spec.hidden_size)
        x = b.op(
            "Add",
            x,
            self.attention(
                ckpt, layer, _rms_norm(b, x, norm, f"{p}.input_layernorm.weight", spec.rms_norm_eps)
            ),
        )
        norm = ckpt.vector(f"{p}.post_attention_layernorm.weight", spec.hidden_size)
        h = _rms_norm(b, x, norm, f"{p}.post_attention_layernorm.weight", spec.rms_norm_eps)
        return b.op("Add", x, self.mlp(ckpt, layer, h))


def causal_block(positions: int) -> npt.NDArray[np.float32]:
    """``[positions, positions]``: 0 where a new position may attend another, `MASKED` above."""
    upper = np.triu(np.ones((positions, positions), dtype=bool), k=1)
    return np.where(upper, MASKED, 0.0).astype(np.float32)


def block_graph(ckpt: Checkpoint, plan: ChunkPlan) -> Any:
    """The graph of a block program (``plan.kind == "block"``)."""
    assert plan.layers is not None and plan.positions is not None
    b, spec, s = _Builder(), ckpt.spec, plan.positions
    cos, sin = b.to_float("cos"), b.to_float("sin")
    # The mask input covers the cached positions; the causal block among the new ones is fixed.
    # Where it is true, a position is hidden.
    cached = b.op("Unsqueeze", b.to_float("mask"), b.ints(1))
    causal = b.const(causal_block(s).reshape(1, 1, 1, s, s))
    full = b.op("Concat", cached, causal, axis=-1)
    mask = b.op("Less", full, b.scalar(MASKED / 2))
    layer = _Layer(b, spec, cos, sin, mask)
    x = b.to_float("hidden")
    for index in range(*plan.layers):
        x = layer(ckpt, index, x)
    b.to_half(x, out="hidden_out")
    return b.model(plan)


def head_graph(ckpt: Checkpoint, plan: ChunkPlan) -> Any:
    """The graph of a head program: final norm, then the LM head's columns of ``plan.vocab``."""
    assert plan.vocab is not None
    b, spec = _Builder(), ckpt.spec
    first, end = plan.vocab
    h = _rms_norm(
        b,
        b.to_float("hidden"),
        ckpt.vector("model.norm.weight", spec.hidden_size),
        "model.norm.weight",
        spec.rms_norm_eps,
    )
    columns = np.ascontiguousarray(ckpt.lm_head()[first:end].T)
    b.to_half(b.op("MatMul", h, b.weight("lm_head.weight", columns)), out="logits")
    return b.model(plan)


def embed_graph(ckpt: Checkpoint, plan: ChunkPlan) -> Any:
    """The embedding lookup (run on the CPU): ``Gather`` of float16 rows."""
    import onnx

    b = _Builder()
    table = onnx.numpy_helper.from_array(
        ckpt.embedding().astype(np.float16), "model.embed_tokens.weight"
    )
    b.initializers.append(table)
    b.op("Gather", "model.embed_tokens.weight", "input_ids", out="hidden")
    return b.model(plan)


def chunk_graph(ckpt: Checkpoint, plan: ChunkPlan) -> Any:
    """The graph of any program of a split."""
    build = {"block": block_graph, "head": head_graph, "embed": embed_graph}[plan.kind]
    return build(ckpt, plan)
