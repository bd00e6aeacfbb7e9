"""An ``[llm]`` model in the build: split, then per program compile, convert, deploy + check."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from ane_build.build import tasks
from ane_build.build.context import BuildContext, set_context
from ane_build.build.project import load_project
from ane_build.build.reasons import why
from ane_build.build.runner import run_doit
from tests.helpers import EXAMPLE_COMPILER, REPO, doit_cli

PROGRAMS = [
    "tiny.block_0.decode",
    "tiny.block_0.prefill",
    "tiny.block_1.decode",
    "tiny.block_1.prefill",
    "tiny.head_0.decode",
]
LLM_TOML = '[llm]\ncheckpoint = "ckpt"\nchunks = 2\ncontext = 32\nprefill = 4\n'


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny LLaMA checkpoint, written once (copied into each project)."""
    from ane_build.chat.tiny import write_tiny_llama

    return write_tiny_llama(tmp_path_factory.mktemp("tiny") / "ckpt")


def llm_project(root: Path, checkpoint: Path, config: str = LLM_TOML) -> Path:
    """A project with the example defaults (example compiler, simulator) and one [llm] model."""
    (root / "configs").mkdir(parents=True)
    shutil.copy(REPO / "configs" / "defaults.toml", root / "configs" / "defaults.toml")
    (root / "configs" / "tiny.toml").write_text(config)
    (root / "tools").mkdir()
    shutil.copy(EXAMPLE_COMPILER, root / "tools" / EXAMPLE_COMPILER.name)
    shutil.copy(REPO / "dodo.py", root / "dodo.py")
    shutil.copytree(checkpoint, root / "ckpt", ignore=shutil.ignore_patterns("model.onnx*"))
    return root


@pytest.fixture
def project(tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = llm_project(tmp_path / "proj", checkpoint)
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def built(project: Path) -> Path:
    assert run_doit(project, []) == 0
    return project


@pytest.fixture
def ctx(project: Path) -> Iterator[BuildContext]:
    ctx = BuildContext(project)
    set_context(ctx)
    try:
        yield ctx
    finally:
        set_context(None)


def build(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = run_doit(root, [])
    return code, capsys.readouterr().out


def ran(out: str, step: str) -> list[str]:
    """Names whose ``step`` printed a line in this run's output."""
    return sorted({line.split(":")[1] for line in out.splitlines() if line.startswith(f"{step}:")})


def by_name(generated: Iterator[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{t['basename']}:{t['name']}": t for t in generated if t.get("name")}


# --- the expansion ------------------------------------------------------------------------


def test_an_llm_table_expands_into_a_split_and_one_model_per_ane_program(
    ctx: BuildContext,
) -> None:
    assert sorted(ctx.models) == PROGRAMS
    split = ctx.graph.splits["tiny"]
    assert split.programs == tuple(PROGRAMS)
    assert split.cpu_programs == ("tiny.embed",)
    out = ctx.root / "build" / "llm" / "tiny"
    for name in PROGRAMS:
        program = name.removeprefix("tiny.")
        node = ctx.models[name]
        assert node.split == "tiny"
        assert node.source == os.fspath(out / f"{program}.onnx")
        assert node.output == os.fspath(out / f"{program}_ane.onnx")
        assert node.compile_outputs == os.fspath(ctx.root / "compiler-out" / name)

    splits = by_name(tasks.gen_split())
    assert list(splits) == ["split:tiny"]
    deps = {os.path.basename(str(p)) for p in splits["split:tiny"]["file_dep"]}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= deps
    targets = set(splits["split:tiny"]["targets"])
    graphs = {ctx.models[n].source for n in PROGRAMS} | {os.fspath(out / "embed.onnx")}
    copies = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")
    assert graphs | {os.fspath(out / n) for n in ("manifest.json", *copies)} == targets

    compiles = by_name(tasks.gen_compile())
    assert sorted(compiles) == [f"compile:{n}" for n in PROGRAMS]
    # The split's graph is the compile's file dependency: doit orders them by it.
    assert ctx.models[PROGRAMS[0]].source in compiles[f"compile:{PROGRAMS[0]}"]["file_dep"]
    deploys = by_name(tasks.gen_deploy())
    assert sorted(deploys) == [f"deploy:{n}" for n in PROGRAMS]
    assert not any("embed" in name for name in (*compiles, *deploys))


def test_the_compile_template_gets_the_program_name_and_graph(project: Path) -> None:
    spec = load_project(project).models["tiny.block_1.prefill"]
    assert spec.compile is not None
    values = spec.compile.values(spec.name, project, spec.source, project / "out")
    argv = spec.compile.argv(values)
    assert argv[2:] == [str(project / "build/llm/tiny/block_1.prefill.onnx"), str(project / "out")]
    # One layer per chunk: hidden, new K, new V out; hidden, cos, sin, mask, K, V caches in.
    assert spec.artifacts.io is not None
    roles = [slot.role for slot in spec.artifacts.io.values()]
    assert roles == ["output"] * 3 + ["input"] * 6


# --- building -----------------------------------------------------------------------------


def test_a_cold_build_checks_every_program_and_a_second_run_is_a_no_op(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = build(project, capsys)
    assert code == 0, out
    assert ran(out, "split") == ["tiny"]
    assert ran(out, "deploy") == PROGRAMS
    assert "tiny.embed: runs on the CPU (onnxruntime): no compile, convert or deploy" in out
    report = json.loads((project / "build" / "report.json").read_text())
    assert sorted(report["models"]) == PROGRAMS
    for name in PROGRAMS:
        assert report["models"][name]["status"] == "ok"
        assert report["models"][name]["check"]["passed"] is True, name
    assert report["splits"]["tiny"]["cpu_programs"] == ["tiny.embed"]
    assert report["splits"]["tiny"]["split"]["status"] == "built"

    code, out = build(project, capsys)
    assert code == 0
    assert f"summary: all {len(PROGRAMS)} model(s) up to date" in out
    assert not ran(out, "split")


def _change_layer(checkpoint: Path, layer: int) -> None:
    path = checkpoint / "model.safetensors"
    tensors = load_file(path)
    key = f"model.layers.{layer}.mlp.down_proj.weight"
    tensors[key] = (tensors[key] * np.float32(1.5)).astype(tensors[key].dtype)
    save_file(tensors, path)


def test_a_changed_checkpoint_resplits_and_rebuilds_only_the_changed_programs(
    built: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _change_layer(built / "ckpt", 1)
    reasons = why(BuildContext(built))["tiny.head_0.decode"]
    assert reasons[0].startswith("split:tiny: input ckpt/model.safetensors changed: "), reasons
    code, out = build(built, capsys)
    assert code == 0, out
    assert ran(out, "split") == ["tiny"]
    changed = ["tiny.block_1.decode", "tiny.block_1.prefill"]
    assert ran(out, "compile") == changed
    assert [n for n in ran(out, "deploy") if n in PROGRAMS] == changed

    os.utime(built / "ckpt" / "model.safetensors")  # same bytes: nothing to do
    code, out = build(built, capsys)
    assert code == 0
    assert not ran(out, "split") and not ran(out, "compile")


def test_split_settings_resplit_and_other_settings_do_not(
    built: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = built / "configs" / "tiny.toml"
    config.write_text(LLM_TOML + "[check]\nseed = 3\n")
    code, out = build(built, capsys)
    assert code == 0, out
    assert not ran(out, "split") and not ran(out, "compile")
    assert ran(out, "deploy") == PROGRAMS  # the check's seed is a deploy setting

    config.write_text(LLM_TOML.replace("context = 32", "context = 16") + "[check]\nseed = 3\n")
    code, out = build(built, capsys)
    assert code == 0, out
    assert "split:tiny: config context changed: 32 -> 16" in out
    assert ran(out, "compile") == [n for n in PROGRAMS if "block" in n]  # the head has no cache


# --- config errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "line"),
    [
        (
            '[llm]\ncheckpoint = "ckpt"\ncontext = 1\n',
            "configs/bad.toml: llm.context: must be greater than or equal to 2 (got 1)",
        ),
        (
            '[llm]\ncheckpoint = "ckpt"\nchunks = "many"\n',
            "configs/bad.toml: llm.chunks:",
        ),
        ('[llm]\ncheckpoint = "nowhere"\n', "configs/bad.toml: llm: "),
        ('[llm]\ncheckpoint = "ckpt"\nchunks = 7\n', "configs/bad.toml: llm: "),
        (
            'source = "m.onnx"\n[llm]\ncheckpoint = "ckpt"\n',
            "configs/bad.toml: llm: a model has a source or an [llm] table, not both",
        ),
    ],
)
def test_a_bad_llm_table_breaks_that_model_only(project: Path, table: str, line: str) -> None:
    (project / "configs" / "bad.toml").write_text(table)
    loaded = load_project(project, strict=False)
    assert sorted(loaded.models) == PROGRAMS
    assert list(loaded.broken) == ["bad"]
    assert loaded.broken["bad"][0].startswith(line), loaded.broken["bad"]
    assert "bad" not in loaded.splits


def test_a_removed_llm_config_leaves_orphans_that_clean_removes(
    built: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    split = built / "build" / "llm" / "tiny"
    assert (split / "manifest.json").is_file() and (split / "tokenizer.json").is_file()
    (built / "configs" / "tiny.toml").unlink()
    code, out = build(built, capsys)
    assert code == 0
    assert "(tiny, tiny.block_0.decode," in out
    assert doit_cli(built, "clean", "orphans").returncode == 0
    assert not split.exists()
    assert not (built / "compiler-out" / "tiny.block_0.decode").exists()
