"""Reading a LLaMA config.json, and the rotary frequencies it implies."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ane_build.llm.errors import CheckpointError
from ane_build.llm.spec import LlamaSpec, inverse_frequencies, rope_tables

# TinyLlama-1.1B-Chat-v1.0's config.json, the fields that matter.
TINYLLAMA: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "tie_word_embeddings": False,
    "vocab_size": 32000,
    "torch_dtype": "bfloat16",
}


def test_tinyllama_config_is_read() -> None:
    spec = LlamaSpec.from_config(TINYLLAMA)
    assert (spec.num_layers, spec.num_heads, spec.num_kv_heads) == (22, 32, 4)
    assert spec.head_dim == 64 and spec.group == 8
    assert (spec.rms_norm_eps, spec.rope_theta, spec.rope_scaling) == (1e-5, 10000.0, None)
    assert not spec.tie_embeddings and spec.max_positions == 2048
    # TinyLlama's published size: 1,100,048,384 parameters.
    assert 22 * spec.layer_params + 2 * 32000 * 2048 + 2048 == 1_100_048_384


def test_defaults_follow_transformers() -> None:
    config = {k: v for k, v in TINYLLAMA.items() if k not in ("num_key_value_heads", "rope_theta")}
    config["tie_word_embeddings"] = True
    spec = LlamaSpec.from_config(config)
    assert spec.num_kv_heads == 32 and spec.rope_theta == 10000.0 and spec.tie_embeddings


def test_explicit_head_dim_wins() -> None:
    spec = LlamaSpec.from_config({**TINYLLAMA, "head_dim": 128, "hidden_size": 3072})
    assert spec.head_dim == 128


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"num_hidden_layers": None}, ["num_hidden_layers"]),
        ({"hidden_size": "big"}, ["hidden_size", "integer"]),
        ({"model_type": "qwen2"}, ["qwen2", "llama"]),
        ({"attention_bias": True}, ["attention_bias"]),
        ({"hidden_act": "gelu"}, ["gelu"]),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, ["yarn", "llama3"]),
        ({"num_key_value_heads": 5}, ["multiple", "5"]),
        ({"hidden_size": 2050, "head_dim": None}, ["hidden_size", "2050"]),
    ],
)
def test_bad_configs_name_the_field(change: dict[str, Any], words: list[str]) -> None:
    config = {k: v for k, v in {**TINYLLAMA, **change}.items() if v is not None}
    with pytest.raises(CheckpointError) as info:
        LlamaSpec.from_config(config)
    for word in words:
        assert word in str(info.value)


def test_from_dir_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        LlamaSpec.from_dir(tmp_path)
    (tmp_path / "config.json").write_text("{nope")
    with pytest.raises(CheckpointError, match="invalid JSON"):
        LlamaSpec.from_dir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(TINYLLAMA))
    assert LlamaSpec.from_dir(tmp_path).vocab_size == 32000


def test_default_frequencies() -> None:
    spec = LlamaSpec.from_config({**TINYLLAMA, "rope_theta": 500000.0})
    inv = inverse_frequencies(spec, 2048)
    assert inv.shape == (32,)
    for i, value in enumerate(inv):
        assert value == pytest.approx(500000.0 ** (-2 * i / 64), rel=1e-12)


def test_linear_scaling_divides_every_frequency() -> None:
    base = inverse_frequencies(LlamaSpec.from_config(TINYLLAMA), 2048)
    scaled = LlamaSpec.from_config({**TINYLLAMA, "rope_scaling": {"type": "linear", "factor": 4}})
    assert np.allclose(inverse_frequencies(scaled, 2048), base / 4, rtol=1e-12)


def test_llama3_scaling_keeps_short_divides_long_and_blends_between() -> None:
    config = {
        **TINYLLAMA,
        "head_dim": 128,
        "hidden_size": 4096,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    }
    spec = LlamaSpec.from_config({**config, "num_attention_heads": 32})
    got = inverse_frequencies(spec, 2048)
    kinds = set()
    for i, value in enumerate(got):
        base = 500000.0 ** (-2 * i / 128)
        wavelength = 2 * math.pi / base
        if wavelength < 8192 / 4:
            expected, kind = base, "kept"
        elif wavelength > 8192 / 1:
            expected, kind = base / 8, "divided"
        else:
            smooth = (8192 / wavelength - 1) / (4 - 1)
            expected, kind = (1 - smooth) * base / 8 + smooth * base, "blended"
        kinds.add(kind)
        assert value == pytest.approx(expected, rel=1e-9), i
    assert kinds == {"kept", "divided", "blended"}


def test_dynamic_scaling_is_plain_within_the_original_context() -> None:
    spec = LlamaSpec.from_config({**TINYLLAMA, "rope_scaling": {"type": "dynamic", "factor": 2}})
    plain = inverse_frequencies(LlamaSpec.from_config(TINYLLAMA), 2048)
    assert np.array_equal(inverse_frequencies(spec, 2048), plain)
    with pytest.raises(CheckpointError, match="dynamic"):
        inverse_frequencies(spec, 4096)


def test_rope_tables_repeat_the_angles_for_both_halves() -> None:
    inv = inverse_frequencies(LlamaSpec.from_config(TINYLLAMA), 2048)
    cos, sin = rope_tables(inv, [0, 5, 2047])
    assert cos.shape == sin.shape == (3, 64) and cos.dtype == np.float32
    assert np.array_equal(cos[0], np.ones(64)) and np.array_equal(sin[0], np.zeros(64))
    assert np.array_equal(cos[:, :32], cos[:, 32:]) and np.array_equal(sin[:, :32], sin[:, 32:])
    assert sin[1, 0] == pytest.approx(math.sin(5.0), abs=1e-6)
    assert cos[2, 1] == pytest.approx(math.cos(2047 * 10000 ** (-2 / 64)), abs=1e-5)
