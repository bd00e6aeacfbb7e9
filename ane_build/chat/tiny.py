"""Builds the tiny random-weight LLaMA-architecture demo model, its tokenizer and configs.

The graph is written with `onnx.helper` (token embedding, RMSNorm, rotary position embedding,
grouped-query attention with a KV cache, SwiGLU MLP, LM head) and named like the common exports;
weights come from a seeded numpy generator; the byte-level BPE tokenizer is trained with
`tokenizers` on the text shipped in ``ane_build/chat/data``. The weights are random: the model
proves the plumbing, it does not answer sensibly. This module must not run the model.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ..llm.graphs import IR_VERSION, OPSET
from ..llm.safetensors import write_safetensors
from ._deps import require
from .errors import ChatError
from .template import TINYLLAMA_CHAT_TEMPLATE

log = logging.getLogger(__name__)

#: Bumped whenever the files written change, so cached builds are redone.
FORMAT_VERSION = 2
#: The Hugging Face checkpoint written beside the ONNX export, from the same weights.
CHECKPOINT_FILE = "model.safetensors"

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")


@dataclass(frozen=True)
class TinyLlamaConfig:
    """Dimensions and options of the tiny model.

    Attributes:
        hidden_size: Width of the residual stream.
        intermediate_size: Width of the SwiGLU MLP.
        num_layers: Decoder layers.
        num_heads: Query heads.
        num_kv_heads: Key/value heads (grouped-query attention when fewer than query heads).
        max_position_embeddings: Context window written to ``config.json``.
        vocab_size: Target vocabulary of the trained tokenizer (the model uses its real size).
        model_vocab_size: Rows of the embedding and columns of the LM head, when the model
            should have more ids than the tokenizer (e.g. LLaMA's 32000, for realistic logits
            sizes); the extra ids have no text. None gives the model the tokenizer's size.
        rope_theta: Base of the rotary frequencies.
        rms_norm_eps: Epsilon of RMSNorm.
        cache_dtype: Element type of the KV cache inputs and outputs; the model computes in
            float32 either way.
        position_ids: Take ``position_ids`` as an input; without it the graph derives
            positions from the cache length (the other common export convention).
        seed: Seed of the random weights.
    """

    hidden_size: int = 64
    intermediate_size: int = 176
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    max_position_embeddings: int = 512
    vocab_size: int = 1024
    model_vocab_size: int | None = None
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    cache_dtype: Literal["float32", "float16"] = "float32"
    position_ids: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ChatError("hidden_size must be a multiple of num_heads")
        if self.num_heads % self.num_kv_heads:
            raise ChatError("num_heads must be a multiple of num_kv_heads")
        if self.head_dim % 2:
            raise ChatError("the head size must be even for rotary embeddings")
        if self.cache_dtype not in ("float32", "float16"):
            raise ChatError(f"cache_dtype must be float32 or float16, not {self.cache_dtype}")
        if self.vocab_size < 300:
            raise ChatError("vocab_size must leave room for 256 byte tokens and merges")
        if self.model_vocab_size is not None and self.model_vocab_size < self.vocab_size:
            # The trained tokenizer has at most vocab_size ids; the model must cover them all.
            raise ChatError("model_vocab_size must be at least vocab_size")

    @property
    def head_dim(self) -> int:
        """Size of one attention head."""
        return self.hidden_size // self.num_heads


def training_text() -> list[str]:
    """The shipped tokenizer training text, one string per file, in file-name order."""
    folder = resources.files("ane_build.chat").joinpath("data")
    names = sorted(item.name for item in folder.iterdir() if item.name.endswith(".txt"))
    if not names:
        raise ChatError("ane_build/chat/data holds no training text")
    return [folder.joinpath(name).read_text(encoding="utf-8") for name in names]


def train_tokenizer(vocab_size: int = 1024) -> Any:
    """Train the byte-level BPE tokenizer of the tiny model on the shipped text.

    Ids 0, 1 and 2 are ``<unk>``, ``<s>`` and ``</s>`` as in LLaMA tokenizers; the chat role
    markers are added tokens so a prompt's structure costs one token each.

    Returns:
        A `tokenizers.Tokenizer`.
    """
    tk = require("tokenizers")
    tokenizer = tk.Tokenizer(tk.models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=vocab_size - len(ROLE_TOKENS),
        min_frequency=2,
        special_tokens=[UNK, BOS, EOS],
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [line for text in training_text() for line in text.splitlines(keepends=True)]
    tokenizer.train_from_iterator(lines, trainer=trainer, length=len(lines))
    tokenizer.add_tokens([tk.AddedToken(t, normalized=False, special=False) for t in ROLE_TOKENS])
    return tokenizer


def tokenizer_config(config: TinyLlamaConfig) -> dict[str, Any]:
    """The ``tokenizer_config.json`` of the tiny model, with the TinyLlama chat template."""
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "pad_token": None,
        "model_max_length": config.max_position_embeddings,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        "chat_template": TINYLLAMA_CHAT_TEMPLATE,
    }


def model_config(config: TinyLlamaConfig, vocab_size: int) -> dict[str, Any]:
    """The ``config.json`` of the tiny model (Hugging Face field names, plus our build stamp)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "max_position_embeddings": config.max_position_embeddings,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "vocab_size": vocab_size,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "ane_build_tiny": {"format": FORMAT_VERSION, **asdict(config)},
    }


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


def build_model(config: TinyLlamaConfig, vocab_size: int) -> Any:
    """Build the tiny LLaMA-architecture causal LM as an ONNX model.

    Inputs: ``input_ids`` and ``attention_mask`` (int64), ``position_ids`` (optional, int64),
    ``past_key_values.N.key/value`` ``[batch, kv_heads, past, head_dim]``. Outputs: ``logits``
    ``[batch, seq, vocab]`` (float32) and ``present.N.key/value`` (past plus this step).

    Args:
        config: Dimensions and options.
        vocab_size: Rows of the embedding and columns of the LM head.

    Returns:
        An ``onnx.ModelProto``.
    """
    import onnx

    helper, tp = onnx.helper, onnx.TensorProto
    g = _Graph()
    w = _Weights(config.seed)
    hidden, heads, kv_heads, dim = (
        config.hidden_size,
        config.num_heads,
        config.num_kv_heads,
        config.head_dim,
    )
    group = heads // kv_heads
    cache_type = tp.FLOAT16 if config.cache_dtype == "float16" else tp.FLOAT

    inputs = [
        helper.make_tensor_value_info("input_ids", tp.INT64, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info(
            "attention_mask", tp.INT64, ["batch_size", "total_sequence_length"]
        ),
    ]
    if config.position_ids:
        inputs.append(
            helper.make_tensor_value_info(
                "position_ids", tp.INT64, ["batch_size", "sequence_length"]
            )
        )
    outputs = [
        helper.make_tensor_value_info(
            "logits", tp.FLOAT, ["batch_size", "sequence_length", vocab_size]
        )
    ]
    for i in range(config.num_layers):
        for kind in ("key", "value"):
            inputs.append(
                helper.make_tensor_value_info(
                    f"past_key_values.{i}.{kind}",
                    cache_type,
                    ["batch_size", kv_heads, "past_sequence_length", dim],
                )
            )
            outputs.append(
                helper.make_tensor_value_info(
                    f"present.{i}.{kind}",
                    cache_type,
                    ["batch_size", kv_heads, "total_sequence_length", dim],
                )
            )

    embed = g.weight("model.embed_tokens.weight", w.normal((vocab_size, hidden), 1.0))
    x = g.op("Gather", embed, "input_ids")

    # Lengths as scalars: this step's tokens, the whole context, and the cached part.
    seq_len = g.op("Squeeze", g.op("Shape", "input_ids", start=1, end=2), g.ints(0))
    total = g.op("Squeeze", g.op("Shape", "attention_mask", start=1, end=2), g.ints(0))
    past_len = g.op("Sub", total, seq_len)

    if config.position_ids:
        positions = "position_ids"
    else:
        positions = g.op(
            "Unsqueeze",
            g.op("Range", past_len, total, g.scalar_int(1)),
            g.ints(0),
        )

    # Rotary tables [batch, 1, seq, dim], halves rotated together (the LLaMA convention).
    inv_freq = 1.0 / (config.rope_theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    freq = g.weight("rotary.inv_freq", inv_freq.astype(np.float32))
    angles = g.op(
        "Mul",
        g.op("Unsqueeze", g.op("Cast", positions, to=tp.FLOAT), g.ints(2)),
        freq,
    )
    angles = g.op("Concat", angles, angles, axis=-1)
    cos = g.op("Unsqueeze", g.op("Cos", angles), g.ints(1))
    sin = g.op("Unsqueeze", g.op("Sin", angles), g.ints(1))
    half = dim // 2

    def rotate(t: str) -> str:
        first = g.op("Slice", t, g.ints(0), g.ints(half), g.ints(-1))
        second = g.op("Slice", t, g.ints(half), g.ints(dim), g.ints(-1))
        turned = g.op("Concat", g.op("Neg", second), first, axis=-1)
        return g.op("Add", g.op("Mul", t, cos), g.op("Mul", turned, sin))

    # Causal and padding mask [batch, 1, 1, seq, total] for scores laid out per KV group.
    query_pos = g.op("Unsqueeze", g.op("Range", past_len, total, g.scalar_int(1)), g.ints(1))
    key_pos = g.op("Unsqueeze", g.op("Range", g.scalar_int(0), total, g.scalar_int(1)), g.ints(0))
    causal = g.op("LessOrEqual", key_pos, query_pos)
    padding = g.op("Unsqueeze", g.op("Cast", "attention_mask", to=tp.BOOL), g.ints(1, 2, 3))
    allowed = g.op("And", causal, padding)
    masked = g.scalar_float(-1e9)
    scale = g.scalar_float(1.0 / math.sqrt(dim))

    def rms_norm(t: str, name: str) -> str:
        weight = g.weight(name, w.norm(hidden))
        mean = g.op("ReduceMean", g.op("Mul", t, t), axes=[-1], keepdims=1)
        denom = g.op("Sqrt", g.op("Add", mean, g.scalar_float(config.rms_norm_eps)))
        return g.op("Mul", g.op("Div", t, denom), weight)

    def heads_first(t: str, count: int) -> str:
        split = g.op("Reshape", t, g.ints(0, 0, count, dim))
        return g.op("Transpose", split, perm=[0, 2, 1, 3])

    def cached(new: str, layer: int, kind: str) -> str:
        past = f"past_key_values.{layer}.{kind}"
        present = f"present.{layer}.{kind}"
        if cache_type == tp.FLOAT:
            return g.op("Concat", past, new, axis=2, out=present)
        # The fp16 cache is rounded once and read back as float32, so this step's tokens are
        # attended with exactly the values later steps will read from the cache.
        rounded = g.op("Cast", new, to=tp.FLOAT16)
        g.op("Concat", past, rounded, axis=2, out=present)
        return g.op("Cast", present, to=tp.FLOAT)

    for layer in range(config.num_layers):
        prefix = f"model.layers.{layer}"
        h = rms_norm(x, f"{prefix}.input_layernorm.weight")
        wq = g.weight(
            f"{prefix}.self_attn.q_proj.weight", w.normal((hidden, heads * dim), hidden**-0.5)
        )
        wk = g.weight(
            f"{prefix}.self_attn.k_proj.weight", w.normal((hidden, kv_heads * dim), hidden**-0.5)
        )
        wv = g.weight(
            f"{prefix}.self_attn.v_proj.weight", w.normal((hidden, kv_heads * dim), hidden**-0.5)
        )
        wo = g.weight(
            f"{prefix}.self_attn.o_proj.weight",
            w.normal((heads * dim, hidden), (heads * dim) ** -0.5),
        )
        q = rotate(heads_first(g.op("MatMul", h, wq), heads))
        k = rotate(heads_first(g.op("MatMul", h, wk), kv_heads))
        v = heads_first(g.op("MatMul", h, wv), kv_heads)
        keys = g.op("Unsqueeze", cached(k, layer, "key"), g.ints(2))
        values = g.op("Unsqueeze", cached(v, layer, "value"), g.ints(2))
        # Grouped-query attention without repeating the cache: queries are grouped
        # [batch, kv_heads, group, seq, dim] and broadcast against [batch, kv_heads, 1, total, dim].
        grouped = g.op("Reshape", q, g.ints(0, kv_heads, group, -1, dim))
        scores = g.op(
            "Mul", g.op("MatMul", grouped, g.op("Transpose", keys, perm=[0, 1, 2, 4, 3])), scale
        )
        probs = g.op("Softmax", g.op("Where", allowed, scores, masked), axis=-1)
        context = g.op("Reshape", g.op("MatMul", probs, values), g.ints(0, heads, -1, dim))
        merged = g.op(
            "Reshape", g.op("Transpose", context, perm=[0, 2, 1, 3]), g.ints(0, 0, heads * dim)
        )
        x = g.op("Add", x, g.op("MatMul", merged, wo))

        h = rms_norm(x, f"{prefix}.post_attention_layernorm.weight")
        size = config.intermediate_size
        w_gate = g.weight(f"{prefix}.mlp.gate_proj.weight", w.normal((hidden, size), hidden**-0.5))
        w_up = g.weight(f"{prefix}.mlp.up_proj.weight", w.normal((hidden, size), hidden**-0.5))
        w_down = g.weight(f"{prefix}.mlp.down_proj.weight", w.normal((size, hidden), size**-0.5))
        gate = g.op("MatMul", h, w_gate)
        swish = g.op("Mul", gate, g.op("Sigmoid", gate))
        x = g.op("Add", x, g.op("MatMul", g.op("Mul", swish, g.op("MatMul", h, w_up)), w_down))

    h = rms_norm(x, "model.norm.weight")
    # A wide LM head makes the logits spread out, so greedy choices are clear-cut.
    head = g.weight("lm_head.weight", w.normal((hidden, vocab_size), 3.0 * hidden**-0.5))
    g.op("MatMul", h, head, out="logits")

    graph = helper.make_graph(g.nodes, "tiny_llama", inputs, outputs, g.initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="ane_build.chat.tiny",
        ir_version=IR_VERSION,
    )
    model.doc_string = "Tiny LLaMA-architecture demo model with RANDOM weights (ane_build)."
    onnx.checker.check_model(model)
    return model


# Initializers of the export that are a Linear layer's weight, stored [in, out] for MatMul; a
# Hugging Face checkpoint stores them [out, in].
_LINEAR_SUFFIXES = ("_proj.weight", "lm_head.weight")


def checkpoint_weights(model: Any) -> dict[str, NDArray[Any]]:
    """The export's weights as a Hugging Face LLaMA checkpoint holds them.

    The weights keep their names; projections and the LM head are transposed to ``[out, in]``;
    the graph's own constants (shape values, rotary frequencies) are left out.

    Args:
        model: The ``onnx.ModelProto`` of `build_model`.
    """
    from onnx import numpy_helper

    out: dict[str, NDArray[Any]] = {}
    for tensor in model.graph.initializer:
        name = tensor.name
        if not (name.startswith("model.") or name == "lm_head.weight"):
            continue
        array = numpy_helper.to_array(tensor)
        out[name] = np.ascontiguousarray(array.T) if name.endswith(_LINEAR_SUFFIXES) else array
    return out


def write_tiny_llama(
    out_dir: Path, config: TinyLlamaConfig | None = None, *, external_data: bool = False
) -> Path:
    """Write the tiny model folder: model, Hugging Face checkpoint, tokenizer and configs.

    Files: ``model.onnx`` (plus ``model.onnx.data`` with ``external_data``), ``model.safetensors``
    (the same weights in Hugging Face's names and layout, see `checkpoint_weights`),
    ``tokenizer.json``, ``tokenizer_config.json``, ``config.json``, ``generation_config.json``.
    ``config.json`` is written last, so an interrupted build is never taken for a finished one.

    Args:
        out_dir: Folder to create or overwrite.
        config: Dimensions and options; the defaults are tiny.
        external_data: Store the weights in ``model.onnx.data`` beside the model.

    Returns:
        ``out_dir``.
    """
    import onnx

    config = config or TinyLlamaConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").unlink(missing_ok=True)
    tokenizer = train_tokenizer(config.vocab_size)
    vocab = int(tokenizer.get_vocab_size(with_added_tokens=True))
    if config.model_vocab_size is not None:
        vocab = config.model_vocab_size
    tokenizer.save(str(out_dir / "tokenizer.json"))
    _write_json(out_dir / "tokenizer_config.json", tokenizer_config(config))
    _write_json(
        out_dir / "generation_config.json",
        {"bos_token_id": 1, "eos_token_id": 2, "max_length": config.max_position_embeddings},
    )
    model = build_model(config, vocab)
    write_safetensors(out_dir / CHECKPOINT_FILE, checkpoint_weights(model))
    if external_data:
        # Small tensors (shape constants) stay inline: onnxruntime's shape inference reads them
        # while loading, before external data is attached.
        onnx.save_model(
            model,
            str(out_dir / "model.onnx"),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location="model.onnx.data",
            size_threshold=1024,
        )
    else:
        onnx.save_model(model, str(out_dir / "model.onnx"))
    _write_json(out_dir / "config.json", model_config(config, vocab))
    log.info("wrote the tiny random-weight model to %s (vocab %d)", out_dir, vocab)
    return out_dir


def ensure_tiny_llama(out_dir: Path, config: TinyLlamaConfig | None = None) -> bool:
    """Build the tiny model into ``out_dir`` unless an identical build is already there.

    Returns:
        True when it was built now, False when the cached build was reused.
    """
    config = config or TinyLlamaConfig()
    stamp = {"format": FORMAT_VERSION, **asdict(config)}
    try:
        existing = json.loads((Path(out_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        existing = {}
    files = ("model.onnx", CHECKPOINT_FILE, "tokenizer.json", "tokenizer_config.json")
    if existing.get("ane_build_tiny") == stamp and all(
        (Path(out_dir) / f).is_file() for f in files
    ):
        return False
    write_tiny_llama(out_dir, config)
    return True


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
