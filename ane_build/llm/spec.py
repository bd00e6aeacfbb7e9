"""What a LLaMA-architecture checkpoint's ``config.json`` says, and the rotary tables it implies.

`LlamaSpec` holds the numbers the split and the runtime need (widths, heads, grouped-query
attention, RMSNorm epsilon, rotary base and scaling, tied embeddings); `rope_tables` is the one
home of the rotary frequencies, used by the runtime to feed the chunks their cos/sin inputs. This
module reads JSON only: it must not open weights or build graphs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ._validate import validate
from .errors import CheckpointError

CONFIG_FILE = "config.json"
SUPPORTED_MODEL_TYPES = ("llama",)
# Rotary scalings whose frequencies do not depend on the sequence length.
RopeKind = Literal["default", "linear", "dynamic", "llama3"]


@dataclass(frozen=True)
class RopeScaling:
    """A ``rope_scaling`` entry of a config.

    Attributes:
        kind: ``linear`` (positions divided by ``factor``), ``llama3`` (long wavelengths
            stretched, short ones kept, a smooth band between) or ``dynamic`` (NTK scaling,
            which changes nothing until the context passes ``original_context``).
        factor: The scaling factor.
        low_freq_factor: llama3: wavelengths beyond ``original_context / low_freq_factor`` are
            divided by ``factor``.
        high_freq_factor: llama3: wavelengths below ``original_context / high_freq_factor`` are
            kept.
        original_context: The context the model was trained at before scaling.
    """

    kind: RopeKind
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_context: int = 8192


class _RopeScalingModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    rope_type: str | None = None
    type: str | None = None
    factor: float = Field(default=1.0, gt=0)
    low_freq_factor: float = Field(default=1.0, gt=0)
    high_freq_factor: float = Field(default=4.0, gt=0)
    original_max_position_embeddings: int | None = Field(default=None, gt=0)


class _ConfigModel(BaseModel):
    """The fields of a Hugging Face LLaMA ``config.json`` that shape the graphs."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model_type: str = "llama"
    hidden_size: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    num_hidden_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int | None = Field(default=None, gt=0)
    head_dim: int | None = Field(default=None, gt=0)
    vocab_size: int = Field(gt=0)
    rms_norm_eps: float = Field(default=1e-6, gt=0)
    rope_theta: float = Field(default=10000.0, gt=0)
    rope_scaling: _RopeScalingModel | None = None
    tie_word_embeddings: bool = False
    max_position_embeddings: int | None = Field(default=None, gt=0)
    attention_bias: bool = False
    mlp_bias: bool = False
    hidden_act: str = "silu"

    @model_validator(mode="after")
    def _supported(self) -> _ConfigModel:
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"model_type {self.model_type!r} is not a LLaMA-architecture model "
                f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
            )
        for flag in ("attention_bias", "mlp_bias"):
            if getattr(self, flag):
                raise ValueError(f"{flag} = true is not supported (LLaMA layers have no biases)")
        if self.hidden_act != "silu":
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported (only silu)")
        return self


@dataclass(frozen=True)
class LlamaSpec:
    """The shape of a LLaMA-architecture decoder.

    Attributes:
        hidden_size: Width of the residual stream.
        intermediate_size: Width of the SwiGLU MLP.
        num_layers: Decoder layers.
        num_heads: Query heads.
        num_kv_heads: Key/value heads (fewer than query heads: grouped-query attention).
        head_dim: Size of one head.
        vocab_size: Rows of the embedding, columns of the LM head.
        rms_norm_eps: RMSNorm epsilon.
        rope_theta: Base of the rotary frequencies.
        rope_scaling: Rotary scaling, None for none.
        tie_embeddings: The LM head reuses the embedding matrix.
        max_positions: The model's context window, when the config says.
    """

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    tie_embeddings: bool = False
    max_positions: int | None = None

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise CheckpointError(
                f"num_attention_heads {self.num_heads} is not a multiple of num_key_value_heads "
                f"{self.num_kv_heads}"
            )
        if self.head_dim % 2:
            raise CheckpointError(f"head_dim {self.head_dim} is odd; rotary embeddings need pairs")

    @property
    def group(self) -> int:
        """Query heads per key/value head."""
        return self.num_heads // self.num_kv_heads

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every weight a Hugging Face LLaMA checkpoint of this config holds, by name.

        Projections are ``[out, in]``, as the checkpoint stores them; ``lm_head.weight`` is left
        out when the embeddings are tied.
        """
        h, i, d = self.hidden_size, self.intermediate_size, self.head_dim
        q, kv = self.num_heads * d, self.num_kv_heads * d
        shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (self.vocab_size, h)}
        for layer in range(self.num_layers):
            p = f"model.layers.{layer}"
            shapes |= {
                f"{p}.input_layernorm.weight": (h,),
                f"{p}.self_attn.q_proj.weight": (q, h),
                f"{p}.self_attn.k_proj.weight": (kv, h),
                f"{p}.self_attn.v_proj.weight": (kv, h),
                f"{p}.self_attn.o_proj.weight": (h, q),
                f"{p}.post_attention_layernorm.weight": (h,),
                f"{p}.mlp.gate_proj.weight": (i, h),
                f"{p}.mlp.up_proj.weight": (i, h),
                f"{p}.mlp.down_proj.weight": (h, i),
            }
        shapes["model.norm.weight"] = (h,)
        if not self.tie_embeddings:
            shapes["lm_head.weight"] = (self.vocab_size, h)
        return shapes

    @property
    def layer_params(self) -> int:
        """Parameters of one decoder layer (attention, MLP, two norms)."""
        h, i, d = self.hidden_size, self.intermediate_size, self.head_dim
        attention = 2 * h * self.num_heads * d + 2 * h * self.num_kv_heads * d
        return attention + 3 * h * i + 2 * h

    @classmethod
    def from_config(cls, data: Any, source: str = CONFIG_FILE) -> LlamaSpec:
        """Read a parsed Hugging Face ``config.json``.

        Raises:
            CheckpointError: A field is missing, of the wrong type or not supported (one line per
                problem, naming the key and the value).
        """
        model = validate(_ConfigModel, data, source, CheckpointError)
        heads = model.num_attention_heads
        if model.head_dim is None and model.hidden_size % heads:
            raise CheckpointError(
                f"{source}: hidden_size {model.hidden_size} is not a multiple of "
                f"num_attention_heads {heads} and there is no head_dim"
            )
        return cls(
            hidden_size=model.hidden_size,
            intermediate_size=model.intermediate_size,
            num_layers=model.num_hidden_layers,
            num_heads=heads,
            num_kv_heads=model.num_key_value_heads or heads,
            head_dim=model.head_dim or model.hidden_size // heads,
            vocab_size=model.vocab_size,
            rms_norm_eps=model.rms_norm_eps,
            rope_theta=model.rope_theta,
            rope_scaling=_scaling(model, source),
            tie_embeddings=model.tie_word_embeddings,
            max_positions=model.max_position_embeddings,
        )

    @classmethod
    def from_dir(cls, directory: Path) -> LlamaSpec:
        """Read ``directory/config.json``.

        Raises:
            CheckpointError: The file is missing, unreadable, not JSON or not supported.
        """
        path = Path(directory) / CONFIG_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise CheckpointError(f"{path}: no config.json: not a Hugging Face checkpoint") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path}: cannot read: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{path}: invalid JSON: {exc}") from exc
        return cls.from_config(data, str(path))


def _scaling(model: _ConfigModel, source: str) -> RopeScaling | None:
    raw = model.rope_scaling
    if raw is None:
        return None
    kind = raw.rope_type or raw.type or "default"
    if kind == "default":
        return None
    if kind not in ("linear", "dynamic", "llama3"):
        raise CheckpointError(
            f"{source}: rope_scaling.rope_type {kind!r} is not supported "
            "(supported: default, linear, dynamic, llama3)"
        )
    original = raw.original_max_position_embeddings or model.max_position_embeddings or 8192
    return RopeScaling(
        kind=kind,  # type: ignore[arg-type]  # checked against the literal just above
        factor=raw.factor,
        low_freq_factor=raw.low_freq_factor,
        high_freq_factor=raw.high_freq_factor,
        original_context=original,
    )


def inverse_frequencies(spec: LlamaSpec, context: int) -> npt.NDArray[np.float64]:
    """The rotary inverse frequencies (``head_dim / 2`` of them) for a static ``context``.

    Raises:
        CheckpointError: Dynamic scaling with a context beyond the original one, where the
            frequencies would depend on the sequence length.
    """
    d = spec.head_dim
    inv = 1.0 / spec.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d)
    scaling = spec.rope_scaling
    if scaling is None:
        return inv
    if scaling.kind == "linear":
        return inv / scaling.factor
    if scaling.kind == "dynamic":
        if context > scaling.original_context:
            raise CheckpointError(
                f"rope_scaling dynamic with context {context} beyond the original "
                f"{scaling.original_context} is not supported (its frequencies change with length)"
            )
        return inv
    return _llama3(inv, scaling)


def _llama3(inv: npt.NDArray[np.float64], s: RopeScaling) -> npt.NDArray[np.float64]:
    """Llama 3: long wavelengths divided by the factor, short ones kept, a blend between."""
    wavelength = 2 * math.pi / inv
    long_limit = s.original_context / s.low_freq_factor
    short_limit = s.original_context / s.high_freq_factor
    blend = (s.original_context / wavelength - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor
    )
    blended = (1 - blend) * inv / s.factor + blend * inv
    out = np.where(wavelength > long_limit, inv / s.factor, inv)
    between = (wavelength >= short_limit) & (wavelength <= long_limit)
    return np.where(between, blended, out)


def rope_tables(
    inv_freq: npt.NDArray[np.float64], positions: npt.ArrayLike
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The cos and sin tables ``[len(positions), head_dim]`` for the given positions.

    The two halves of a head rotate together (the LLaMA convention, ``rotate_half``), so each
    table repeats its ``head_dim / 2`` angles twice.
    """
    angles = np.outer(np.asarray(positions, dtype=np.float64), inv_freq)
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
