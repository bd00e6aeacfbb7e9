"""What a model folder's ``config.json`` or onnxruntime-genai ``genai_config.json`` says.

Hugging Face exports describe the model in ``config.json``; onnxruntime-genai exports write
``genai_config.json`` instead (``model.decoder.*`` for the graph, ``model.*`` for the vocabulary,
context and special tokens, name templates such as ``past_key_values.%d.key``). Both become one
`ModelConfig`; when both files exist, ``genai_config.json`` wins, as it was written for the ONNX
graph. This module only reads JSON: it must not load models or tokenizers.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ChatError

GENAI_CONFIG = "genai_config.json"
HF_CONFIG = "config.json"
#: Tokenizer configs use huge sentinels for "no limit"; a real context is below this.
_MAX_CONTEXT = 10_000_000


@dataclass(frozen=True)
class IoNames:
    """Input and output names of a causal-LM graph; cache names are ``%d`` templates.

    Attributes:
        input_ids: Token ids input.
        attention_mask: Attention mask input (used only when the graph has it).
        position_ids: Position ids input (used only when the graph has it).
        logits: Logits output.
        past_key: Template of the past-key inputs, ``%d`` standing for the layer.
        past_value: Template of the past-value inputs.
        present_key: Templates of the present-key outputs; the first the graph has is used.
        present_value: Templates of the present-value outputs, likewise.
    """

    input_ids: str = "input_ids"
    attention_mask: str = "attention_mask"
    position_ids: str = "position_ids"
    logits: str = "logits"
    past_key: str = "past_key_values.%d.key"
    past_value: str = "past_key_values.%d.value"
    present_key: tuple[str, ...] = ("present.%d.key", "present_key_values.%d.key")
    present_value: tuple[str, ...] = ("present.%d.value", "present_key_values.%d.value")


@dataclass(frozen=True)
class ModelConfig:
    """What a model folder's configuration says; None where it says nothing.

    Attributes:
        source: The file(s) read, for messages; empty when there were none.
        num_layers: Decoder layers.
        num_heads: Query heads.
        num_kv_heads: Key/value heads.
        head_dim: Size of one head.
        hidden_size: Width of the residual stream.
        vocab_size: Vocabulary the model was built for.
        context_length: Most positions the model supports.
        eos_token_ids: Token ids that end generation.
        bos_token_id: Beginning-of-sequence id.
        pad_token_id: Padding id (batch-1 generation never pads; kept for callers that do).
        model_file: The ONNX file the config names, relative to the folder.
        io: Input and output names of the graph.
    """

    source: str = ""
    num_layers: int | None = None
    num_heads: int | None = None
    num_kv_heads: int | None = None
    head_dim: int | None = None
    hidden_size: int | None = None
    vocab_size: int | None = None
    context_length: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    bos_token_id: int | None = None
    pad_token_id: int | None = None
    model_file: str | None = None
    io: IoNames = IoNames()

    @property
    def cache_dims(self) -> tuple[int, int] | None:
        """KV heads and head size, derived as transformers does when not given; None if unknown."""
        heads = self.num_kv_heads or self.num_heads
        head_dim = self.head_dim
        if head_dim is None and self.hidden_size and self.num_heads:
            head_dim = self.hidden_size // self.num_heads
        if heads is None or head_dim is None:
            return None
        return heads, head_dim

    @classmethod
    def from_dir(cls, directory: Path) -> ModelConfig:
        """Read ``genai_config.json`` and ``config.json`` of ``directory`` (either may be absent).

        Raises:
            ChatError: A file is unreadable or not the expected JSON structure.
        """
        genai = read_json(Path(directory) / GENAI_CONFIG)
        hf = read_json(Path(directory) / HF_CONFIG)
        config = cls.from_genai(genai) if genai else cls()
        if hf:
            config = config.filled_from(cls.from_hf(hf))
        return config

    @classmethod
    def from_hf(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Normalize a parsed Hugging Face ``config.json``."""
        context = _first_int(data, "max_position_embeddings", "n_positions")
        return cls(
            source=HF_CONFIG,
            num_layers=_first_int(data, "num_hidden_layers", "n_layer"),
            num_heads=_first_int(data, "num_attention_heads", "n_head"),
            num_kv_heads=_int(data.get("num_key_value_heads")),
            head_dim=_int(data.get("head_dim")),
            hidden_size=_first_int(data, "hidden_size", "n_embd"),
            vocab_size=_int(data.get("vocab_size")),
            context_length=context if context is not None and context < _MAX_CONTEXT else None,
            eos_token_ids=token_ids(data.get("eos_token_id")),
            bos_token_id=_int(data.get("bos_token_id")),
            pad_token_id=_int(data.get("pad_token_id")),
        )

    @classmethod
    def from_genai(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Normalize a parsed onnxruntime-genai ``genai_config.json``.

        Raises:
            ChatError: ``model``, ``model.decoder`` or its ``inputs``/``outputs`` are not
                objects, or a name template lacks its ``%d``.
        """
        model = _section(data, "model", "")
        decoder = _section(model, "decoder", "model.")
        filename = decoder.get("filename")
        return cls(
            source=GENAI_CONFIG,
            num_layers=_int(decoder.get("num_hidden_layers")),
            num_heads=_int(decoder.get("num_attention_heads")),
            num_kv_heads=_int(decoder.get("num_key_value_heads")),
            head_dim=_int(decoder.get("head_size")),
            hidden_size=_int(decoder.get("hidden_size")),
            vocab_size=_int(model.get("vocab_size")),
            context_length=_int(model.get("context_length")),
            eos_token_ids=token_ids(model.get("eos_token_id")),
            bos_token_id=_int(model.get("bos_token_id")),
            pad_token_id=_int(model.get("pad_token_id")),
            model_file=filename if isinstance(filename, str) and filename else None,
            io=_genai_names(decoder),
        )

    def filled_from(self, other: ModelConfig) -> ModelConfig:
        """This config with its missing numbers taken from ``other`` (names stay ours)."""
        changes: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            if field.name in ("source", "io", "model_file"):
                continue
            if getattr(self, field.name) in (None, ()):
                changes[field.name] = getattr(other, field.name)
        sources = " + ".join(s for s in (self.source, other.source) if s)
        return dataclasses.replace(self, source=sources, **changes)


def token_ids(value: object) -> tuple[int, ...]:
    """Token ids as configs store them: one int, a list of ints, or nothing."""
    if isinstance(value, list):
        return tuple(v for v in value if _int(v) is not None)
    single = _int(value)
    return () if single is None else (single,)


def _int(value: object) -> int | None:
    # JSON true/false are bools, which Python also counts as ints.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _first_int(data: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = _int(data.get(key))
        if value is not None and value > 0:
            return value
    return None


def read_json(path: Path) -> dict[str, Any]:
    """Parse a JSON object file; an absent file gives an empty dict.

    Raises:
        ChatError: The file exists but is unreadable or not a JSON object.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ChatError(f"{path}: cannot read: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ChatError(f"{path}: invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ChatError(f"{path}: expected a JSON object")
    return data


def _section(data: Mapping[str, Any], key: str, prefix: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise ChatError(f"{GENAI_CONFIG}: {prefix}{key} is not an object")
    return value


def _genai_names(decoder: Mapping[str, Any]) -> IoNames:
    inputs = _section(decoder, "inputs", "model.decoder.")
    outputs = _section(decoder, "outputs", "model.decoder.")
    default = IoNames()

    def name(section: Mapping[str, Any], key: str, fallback: str) -> str:
        value = section.get(key)
        return value if isinstance(value, str) and value else fallback

    def template(section: Mapping[str, Any], key: str) -> str | None:
        value = section.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or value.count("%d") != 1:
            raise ChatError(f"{GENAI_CONFIG}: {key} must be a name with one %d, not {value!r}")
        return value

    present_key = template(outputs, "present_key_names")
    present_value = template(outputs, "present_value_names")
    return IoNames(
        input_ids=name(inputs, "input_ids", default.input_ids),
        attention_mask=name(inputs, "attention_mask", default.attention_mask),
        position_ids=name(inputs, "position_ids", default.position_ids),
        logits=name(outputs, "logits", default.logits),
        past_key=template(inputs, "past_key_names") or default.past_key,
        past_value=template(inputs, "past_value_names") or default.past_value,
        present_key=(present_key,) if present_key else default.present_key,
        present_value=(present_value,) if present_value else default.present_value,
    )
