"""`write_random_weights`: a checkpoint for a config.json alone, that the split reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ane_build.llm.errors import CheckpointError
from ane_build.llm.manifest import read_manifest
from ane_build.llm.plan import SplitSettings
from ane_build.llm.random_weights import write_random_weights
from ane_build.llm.safetensors import SafetensorsFile
from ane_build.llm.spec import LlamaSpec
from ane_build.llm.split import split_checkpoint
from tests.helpers import REPO

EXAMPLE = REPO / "checkpoints" / "tiny_llama"


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    shutil.copy(EXAMPLE / "config.json", folder / "config.json")
    return folder


def test_every_weight_has_the_shape_the_config_implies(checkpoint: Path) -> None:
    config = (checkpoint / "config.json").read_bytes()
    path = write_random_weights(checkpoint, checkpoint / "model.safetensors", seed=3)
    spec = LlamaSpec.from_dir(checkpoint)
    with SafetensorsFile(path) as weights:
        shapes = {name: weights.tensor(name).shape for name in weights}
        norm = np.asarray(weights.tensor("model.norm.weight"), dtype=np.float32)
    # Counted independently of `weight_shapes`: the per-layer parameters `plan` budgets with.
    per_layer = sum(int(np.prod(s)) for n, s in shapes.items() if n.startswith("model.layers.0."))
    assert per_layer == spec.layer_params
    assert len([n for n in shapes if n.endswith("q_proj.weight")]) == spec.num_layers
    assert shapes["model.embed_tokens.weight"] == (spec.vocab_size, spec.hidden_size)
    assert shapes["lm_head.weight"] == (spec.vocab_size, spec.hidden_size)
    assert abs(float(norm.mean()) - 1.0) < 0.1
    assert (checkpoint / "config.json").read_bytes() == config  # the config is the source


def test_the_seed_decides_the_weights(checkpoint: Path, tmp_path: Path) -> None:
    a = write_random_weights(checkpoint, tmp_path / "a.safetensors", seed=1).read_bytes()
    b = write_random_weights(checkpoint, tmp_path / "b.safetensors", seed=1).read_bytes()
    c = write_random_weights(checkpoint, tmp_path / "c.safetensors", seed=2).read_bytes()
    assert a == b != c


def test_the_split_reads_them(checkpoint: Path, tmp_path: Path) -> None:
    write_random_weights(checkpoint, checkpoint / "model.safetensors")
    out = tmp_path / "split"
    split_checkpoint(checkpoint, out, SplitSettings(chunks=2, context=16, prefill=4))
    manifest = read_manifest(out)
    assert [c.name for c in manifest.blocks("decode")] == ["block_0.decode", "block_1.decode"]
    assert all((out / c.graph).is_file() for c in manifest.chunks)


def test_tied_embeddings_have_no_lm_head(checkpoint: Path) -> None:
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}))
    assert "lm_head.weight" not in LlamaSpec.from_dir(checkpoint).weight_shapes()


def test_a_missing_config_is_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        write_random_weights(tmp_path, tmp_path / "model.safetensors")
    assert not (tmp_path / "model.safetensors").exists()
