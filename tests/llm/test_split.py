"""Splitting a checkpoint: the files, the manifest, reuse, failures that leave nothing behind."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from ane_build.llm.checkpoint import checkpoint_files, digest_files
from ane_build.llm.errors import CheckpointError, LlmError, ManifestError, PlanError
from ane_build.llm.manifest import MANIFEST_FILE, read_manifest
from ane_build.llm.plan import SplitSettings
from ane_build.llm.split import current_split, split_checkpoint

SETTINGS = SplitSettings(chunks=2, context=64, prefill=8)


def test_split_writes_graphs_tokenizer_and_manifest(split_dir: Path, model_dir: Path) -> None:
    manifest = read_manifest(split_dir)
    assert manifest.checkpoint.sha256 == digest_files(checkpoint_files(model_dir))
    assert manifest.checkpoint.files == ("config.json", "model.safetensors")
    assert manifest.plan.settings == SETTINGS and manifest.context == 64
    for chunk in manifest.chunks:
        assert (split_dir / chunk.graph).is_file()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (split_dir / name).read_bytes() == (model_dir / name).read_bytes()
    assert any("CPU" in note for note in manifest.notes)
    assert [c.name for c in manifest.blocks("decode")] == ["block_0.decode", "block_1.decode"]
    assert [c.name for c in manifest.heads()] == ["head_0.decode"]


def test_an_up_to_date_split_is_reused_and_force_rewrites(tmp_path: Path, model_dir: Path) -> None:
    out = tmp_path / "s"
    first = split_checkpoint(model_dir, out, SETTINGS)
    assert not first.reused and first.written[-1].name == MANIFEST_FILE
    stamps = {p: p.stat().st_mtime_ns for p in first.written}
    again = split_checkpoint(model_dir, out, SETTINGS)
    assert again.reused and again.written == ()
    assert {p: p.stat().st_mtime_ns for p in first.written} == stamps
    assert "up to date" in again.summary()[-1]
    changed = split_checkpoint(model_dir, out, SplitSettings(chunks=1, context=64, prefill=8))
    assert not changed.reused and read_manifest(out).plan.blocks == 1
    forced = split_checkpoint(
        model_dir, out, SplitSettings(chunks=1, context=64, prefill=8), force=True
    )
    assert not forced.reused


def test_a_changed_checkpoint_is_split_again(tmp_path: Path, model_dir: Path) -> None:
    model = tmp_path / "m"
    shutil.copytree(model_dir, model)
    split_checkpoint(model, tmp_path / "s", SETTINGS)
    config = json.loads((model / "config.json").read_text())
    config["rms_norm_eps"] = 1e-6
    (model / "config.json").write_text(json.dumps(config))
    digest = digest_files(checkpoint_files(model))
    assert current_split(tmp_path / "s", SETTINGS, digest) is None
    assert not split_checkpoint(model, tmp_path / "s", SETTINGS).reused


def test_a_plan_that_does_not_fit_writes_nothing(tmp_path: Path, model_dir: Path) -> None:
    tiny_limit = SplitSettings(chunks=2, context=64, prefill=8, container_limit=1000)
    with pytest.raises(PlanError, match="container"):
        split_checkpoint(model_dir, tmp_path / "s", tiny_limit)
    assert not (tmp_path / "s").exists()


def test_a_failed_split_leaves_no_manifest(tmp_path: Path, model_dir: Path) -> None:
    model = tmp_path / "m"
    shutil.copytree(model_dir, model)
    split_checkpoint(model, tmp_path / "s", SETTINGS)
    # Same header, but a weight is missing now: the split fails part way.
    from safetensors.numpy import load_file, save_file

    weights = load_file(str(model / "model.safetensors"))
    del weights["model.layers.1.mlp.down_proj.weight"]
    save_file(weights, str(model / "model.safetensors"))
    with pytest.raises(CheckpointError, match="down_proj"):
        split_checkpoint(model, tmp_path / "s", SETTINGS)
    assert not (tmp_path / "s" / MANIFEST_FILE).exists()
    assert not [p for p in os.listdir(tmp_path / "s") if p.endswith(".tmp")]


def test_the_split_cannot_overwrite_its_checkpoint(model_dir: Path) -> None:
    with pytest.raises(LlmError, match="checkpoint folder itself"):
        split_checkpoint(model_dir, model_dir, SETTINGS)


def test_bad_manifests_are_reported_by_key(tmp_path: Path, split_dir: Path) -> None:
    with pytest.raises(ManifestError, match="ane-build llm split"):
        read_manifest(tmp_path)
    data = json.loads((split_dir / MANIFEST_FILE).read_text())
    data["plan"]["settings"]["context"] = "long"
    data["bogus"] = 1
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(ManifestError) as info:
        read_manifest(tmp_path)
    assert "plan.settings.context" in str(info.value) and "bogus" in str(info.value)
    (tmp_path / MANIFEST_FILE).write_text("{")
    with pytest.raises(ManifestError, match="invalid JSON"):
        read_manifest(tmp_path)
