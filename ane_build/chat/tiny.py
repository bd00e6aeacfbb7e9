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
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ..llm.safetensors import write_safetensors
from ._deps import require
from .errors import ChatError
from .template import TINYLLAMA_CHAT_TEMPLATE
from .tiny_graph import build_model

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
