"""A checkpoint folder: shards, the index, weight shapes, tied heads, the digest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ane_build.llm.checkpoint import Checkpoint, checkpoint_files, digest_files, shard_files
from ane_build.llm.errors import CheckpointError

safetensors_numpy = pytest.importorskip("safetensors.numpy")

CONFIG: dict[str, Any] = {
    "model_type": "llama",
    "hidden_size": 8,
    "intermediate_size": 12,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "vocab_size": 10,
    "tie_word_embeddings": False,
}


def weights(config: dict[str, Any]) -> dict[str, np.ndarray]:
    """Random weights of a LLaMA checkpoint in Hugging Face's names and [out, in] layout."""
    rng = np.random.default_rng(0)
    h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    d = h // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * d
    out = {"model.embed_tokens.weight": rng.standard_normal((v, h)).astype(np.float32)}
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}"
        shapes = {
            "self_attn.q_proj": (h, h),
            "self_attn.k_proj": (kv, h),
            "self_attn.v_proj": (kv, h),
            "self_attn.o_proj": (h, h),
            "mlp.gate_proj": (i, h),
            "mlp.up_proj": (i, h),
            "mlp.down_proj": (h, i),
        }
        for name, shape in shapes.items():
            out[f"{p}.{name}.weight"] = rng.standard_normal(shape).astype(np.float32)
        out[f"{p}.input_layernorm.weight"] = np.ones(h, np.float32)
        out[f"{p}.post_attention_layernorm.weight"] = np.ones(h, np.float32)
    out["model.norm.weight"] = np.ones(h, np.float32)
    if not config["tie_word_embeddings"]:
        out["lm_head.weight"] = rng.standard_normal((v, h)).astype(np.float32)
    return out


def write_checkpoint(
    folder: Path, config: dict[str, Any] = CONFIG, *, shards: int = 1, drop: str | None = None
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    tensors = {k: v for k, v in weights(config).items() if k != drop}
    names = sorted(tensors)
    if shards == 1:
        safetensors_numpy.save_file(tensors, str(folder / "model.safetensors"))
        return folder
    weight_map = {}
    for index in range(shards):
        part = names[index::shards]
        file = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        safetensors_numpy.save_file({n: tensors[n] for n in part}, str(folder / file))
        weight_map.update(dict.fromkeys(part, file))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder


def test_projections_come_out_transposed_in_fp16(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path / "m")
    original = weights(CONFIG)["model.layers.1.self_attn.k_proj.weight"]
    with Checkpoint(folder) as ckpt:
        got = ckpt.linear("model.layers.1.self_attn.k_proj.weight", 4, 8)
        assert got.shape == (8, 4) and got.dtype == np.float16
        assert np.array_equal(got, original.T.astype(np.float16))
        assert ckpt.vector("model.norm.weight", 8).dtype == np.float16


def test_sharded_checkpoint_finds_every_weight(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path / "m", shards=3)
    assert len(shard_files(folder)) == 3
    expected = weights(CONFIG)
    with Checkpoint(folder) as ckpt:
        for name, array in expected.items():
            assert name in ckpt
            assert np.array_equal(ckpt.tensor(name, array.shape), array)


def test_missing_shard_and_missing_weights(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path / "m", shards=2)
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model-00002-of-00002"):
        Checkpoint(folder)
    empty = tmp_path / "e"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps(CONFIG))
    with pytest.raises(CheckpointError, match=r"no \*\.safetensors"):
        Checkpoint(empty)
    dropped = write_checkpoint(tmp_path / "d", drop="model.layers.0.mlp.up_proj.weight")
    with Checkpoint(dropped) as ckpt, pytest.raises(CheckpointError, match="up_proj"):
        ckpt.linear("model.layers.0.mlp.up_proj.weight", 12, 8)


def test_wrong_shape_names_the_weight_and_both_shapes(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path / "m")
    with Checkpoint(folder) as ckpt, pytest.raises(CheckpointError) as info:
        ckpt.linear("model.layers.0.mlp.gate_proj.weight", 8, 12)
    assert "gate_proj" in str(info.value)
    assert "[12, 8]" in str(info.value) and "[8, 12]" in str(info.value)


def test_tied_and_untied_heads(tmp_path: Path) -> None:
    tied = {**CONFIG, "tie_word_embeddings": True}
    with Checkpoint(write_checkpoint(tmp_path / "t", tied)) as ckpt:
        assert np.array_equal(ckpt.lm_head(), ckpt.embedding())
    untied = write_checkpoint(tmp_path / "u")
    with Checkpoint(untied) as ckpt:
        assert np.array_equal(ckpt.lm_head(), weights(CONFIG)["lm_head.weight"])
    broken = write_checkpoint(tmp_path / "b", drop="lm_head.weight")
    with Checkpoint(broken) as ckpt, pytest.raises(CheckpointError, match="lm_head"):
        ckpt.lm_head()


def test_digest_covers_config_and_shards(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path / "m", shards=2)
    files = checkpoint_files(folder)
    assert files[0].name == "config.json" and len(files) == 3
    first = digest_files(files)
    assert digest_files(checkpoint_files(folder)) == first
    shard = files[1]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    assert digest_files(files) != first
    with pytest.raises(CheckpointError):
        digest_files([tmp_path / "absent"])


def test_bad_index(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path / "m")
    (folder / "model.safetensors.index.json").write_text("[]")
    with pytest.raises(CheckpointError, match="not a safetensors index"):
        shard_files(folder)
