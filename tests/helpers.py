"""Shared test builders: chains, .anec files, models, example projects, and polling helpers."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ane_build.build.runner import run_doit as _run_doit
from ane_build.driver.uapi import PAGE_SIZE, round_up
from ane_build.formats import protowire as pw
from ane_build.formats.anec import ANEC_HEADER_SIZE, ANEC_PAYLOAD_OFFSET, AnecHeader
from ane_build.llm.random_weights import write_random_weights
from ane_build.synthetic import chains as synthetic
from ane_build.synthetic.example import generate_model, load_synthetic

M1_TD_SIZE = 0x274


def make_chain(
    sizes: Sequence[int] = (M1_TD_SIZE,),
    *,
    align: int = 0x100,
    fill: int = 0x5A,
    trailing: bytes = b"",
) -> bytes:
    """A valid chain of descriptors of ``sizes``; non-zero bodies so a wrong td_size shows up as
    data after the chain."""
    return synthetic.make_chain(len(sizes), sizes=sizes, align=align, fill=fill) + trailing


def make_anec_bytes(
    microcode: bytes,
    weights: bytes = b"",
    *,
    td_size: int | None = None,
    td_count: int | None = None,
    src_count: int = 1,
    dst_count: int = 1,
    tiles: Mapping[int, int] | None = None,
    nchw: Mapping[int, tuple[int, int, int, int, int, int]] | None = None,
    payload_offset: int = ANEC_PAYLOAD_OFFSET,
    **overrides: int,
) -> bytes:
    """An .anec image; slots default to one (1,1,1,77) tensor per output and input."""
    pad = round_up(len(microcode), 16) - len(microcode)
    payload = microcode + bytes(pad) + weights
    if nchw is None:
        nchw = {4 + k: (1, 1, 1, 77, 192, 192) for k in range(src_count + dst_count)}
    if tiles is None:
        tiles = {0: round_up(len(payload) + 1, PAGE_SIZE) // PAGE_SIZE}
        tiles.update(dict.fromkeys(nchw, 1))
    fields = {
        "size": len(payload),
        "td_size": M1_TD_SIZE if td_size is None else td_size,
        "td_count": 1 if td_count is None else td_count,
        "tsk_size": len(microcode),
        "krn_size": len(weights),
        "src_count": src_count,
        "dst_count": dst_count,
    }
    fields.update(overrides)
    header = AnecHeader(
        **fields,
        tiles=tuple(tiles.get(i, 0) for i in range(32)),
        nchw=tuple(nchw.get(i, (0,) * 6) for i in range(32)),
    ).pack()
    return header + bytes(payload_offset - ANEC_HEADER_SIZE) + payload


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def b64(data: bytes) -> str:
    """Standard padded base64 text."""
    return base64.b64encode(data).decode()


def seed_bundle(path: Path, microcode: bytes, weights: bytes | None = None, **fields: Any) -> Path:
    """Write a bundle in the seed's format (``microcode_b64``, ``weights_b64``, ...)."""
    doc: dict[str, Any] = {"microcode_b64": b64(microcode)}
    if weights is not None:
        doc["weights_b64"] = b64(weights)
    doc.update(fields)
    return write(path, json.dumps(doc).encode())


TIMEOUT = 120.0


# ../shared/anec-samples/README.md: tiles per slot in 16 KiB units.
SAMPLE_TILES = {
    "concat.ane": {0: 2, 4: 65, 5: 1, 6: 64},
    "conv.ane": {0: 1, 4: 1, 5: 1},
    "gemm.ane": {0: 33, 4: 2, 5: 2},
    "mul.ane": {0: 2, 4: 1, 5: 1, 6: 1},
    "mul_macos14.ane": {0: 2, 4: 1, 5: 1, 6: 1},
    "relu.ane": {0: 2, 4: 1, 5: 1},
    "sigmoid.ane": {0: 1, 4: 1, 5: 1},
    "sum.ane": {0: 2, 4: 1, 5: 1, 6: 1},
}


def relu_model(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 64, 1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 64, 1, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.metadata_props.add(key="author", value="tests")
    onnx.save(model, path)
    return path


def external_data_model(path: Path, location: str) -> Path:
    """A model whose one initializer lives in external data at ``location``."""
    weight = numpy_helper.from_array(np.ones(64, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "256")):
        tensor.external_data.add(key=key, value=value)
    onnx.save(model, path)
    return path


def wait_for(what: str, check: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.002)


def all_temps(root: Path) -> list[str]:
    """Every temp file anywhere under ``root``, relative."""
    return sorted(
        os.path.relpath(os.path.join(d, n), root)
        for d, _, names in os.walk(root)
        for n in names
        if n.startswith(".") and n.endswith(".tmp")
    )


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def make_project(root: Path, models: int = 6, weights: int = 2 << 20) -> list[str]:
    """A project of ``models`` synthetic models (every artefact form), deployed to the simulator."""
    (root / "configs").mkdir(parents=True)
    forms = ["anec", "discover", "bundle"]
    spec = []
    names = []
    for i in range(models):
        name, form = f"m{i}", forms[i % len(forms)]
        names.append(name)
        spec.append(
            f'[models.{name}]\nsource = "models/{name}.onnx"\nop = "Relu"\n'
            f'shape = [1, 64, 1, 1]\nform = "{form}"\ndir = "compiler-out/{name}"\n'
            f"descriptors = {1 + i % 3}\nweights = {weights}\nseed = {i + 1}\n"
        )
        artifact = {
            "anec": f'anec = "compiler-out/{name}/{name}.anec"',
            "discover": f'root = "compiler-out/{name}"',
            "bundle": f'bundle = "compiler-out/{name}"',
        }[form]
        (root / "configs" / f"{name}.toml").write_text(
            f'source = "models/{name}.onnx"\n\n[artifacts]\n{artifact}\n'
        )
    (root / "synthetic.toml").write_text("\n".join(spec))
    set_toolchain(root, "build 0")
    (root / "dodo.py").write_text("from ane_build.dodo import *  # noqa: F403\n")
    generate_all(root)
    return names


REPO = Path(__file__).resolve().parents[1]
EXAMPLE_MODELS = ["add", "concat", "relu", "sigmoid"]
# The chunk programs of the example's [llm] model (configs/tiny_llama.toml): models of the build.
EXAMPLE_LLM_PROGRAMS = [
    f"tiny_llama.{p}"
    for p in ("block_0.decode", "block_0.prefill", "block_1.decode", "block_1.prefill")
] + ["tiny_llama.head_0.decode"]
EXAMPLE_PROGRAMS = sorted(EXAMPLE_MODELS + EXAMPLE_LLM_PROGRAMS)
EXAMPLE_UP_TO_DATE = f"summary: all {len(EXAMPLE_PROGRAMS)} model(s) up to date"
EXAMPLE_BUILT = f"{len(EXAMPLE_PROGRAMS)} model(s) built or deployed, 0 already up to date"
EXAMPLE_COMPILER = REPO / "tools" / "example_compiler.py"


def _ignore_weights(folder: str, names: list[str]) -> list[str]:
    # A checkout may hold weights `doit` wrote; the copy starts from the config alone.
    return [n for n in names if n.endswith(".safetensors")]


def example_project(root: Path, *, generate: bool = True) -> Path:
    """A copy of the repository's example project (configs, sources, the example compiler)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "configs", root / "configs")
    shutil.copy(REPO / "synthetic.toml", root / "synthetic.toml")
    shutil.copytree(REPO / "checkpoints", root / "checkpoints", ignore=_ignore_weights)
    shutil.copy(REPO / "dodo.py", root / "dodo.py")
    (root / "tools").mkdir()
    shutil.copy(EXAMPLE_COMPILER, root / "tools" / EXAMPLE_COMPILER.name)
    if generate:
        generate_all(root)
    return root


def default_sigint() -> None:
    """``preexec_fn`` of a child the test interrupts: SIGINT as a user's terminal delivers it.

    A runner started in the background (``cmd &`` in a script) ignores SIGINT, and children
    inherit that: without this, a Ctrl-C test would wait for a process that cannot see it.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interruptible(root: Path, *args: str) -> subprocess.Popen[str]:
    """``python ARGS`` in ``root``, output piped as text, ready for a Ctrl-C (`default_sigint`)."""
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )


def doit_run(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``doit ARGS`` in-process in ``root``: its exit status and what it printed."""
    capsys.readouterr()
    code = _run_doit(root, list(args))
    return code, capsys.readouterr().out


def doit_cli(root: Path, *args: str, env: Mapping[str, str] | None = None) -> Any:
    """``python -m doit ARGS`` in ``root`` (a separate process, as a user runs it)."""
    return subprocess.run(
        [sys.executable, "-m", "doit", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
        env=None if env is None else {**os.environ, **env},
    )


def set_toolchain(root: Path, toolchain: str) -> None:
    """Change a setting every model's container records: all of them become stale."""
    (root / "configs" / "defaults.toml").write_text(
        f'toolchain = "{toolchain}"\n\n[deploy]\ndevice = "sim"\n'
    )


def converted(out: str) -> set[str]:
    """Models whose container this doit output says was written."""
    return {
        line.split(":")[1]
        for line in out.splitlines()
        if line.startswith("convert:") and ": wrote " in line
    }


def check_state(root: Path) -> None:
    """Every state file reads back: doit's sqlite DB, the digest cache, the graph, the records."""
    state = root / ".ane_build"
    with contextlib.closing(sqlite3.connect(state / "doit.sqlite")) as db:
        assert db.execute("pragma integrity_check").fetchone() == ("ok",)
        for task_id, data in db.execute("select task_id, task_data from doit"):
            assert isinstance(json.loads(data), dict), task_id
    for name in ("digests.json", "graph.json"):
        if (state / name).exists():
            assert isinstance(json.loads((state / name).read_bytes()), dict), name
    for record in (state / "records").glob("*.json"):
        assert isinstance(json.loads(record.read_bytes()), dict), record
    for record in (root / "build" / "deploy").glob("*.json"):
        assert isinstance(json.loads(record.read_bytes()), dict), record


def generate_all(root: Path) -> list[Path]:
    """Generate every model of ``root/synthetic.toml``; return the files written."""
    spec = load_synthetic(root)
    assert spec is not None, f"{root} has no synthetic.toml"
    written: list[Path] = []
    for name, model in spec.models.items():
        written += generate_model(name, model, root)
    for checkpoint in spec.checkpoints.values():
        weights = checkpoint.weights(root)
        written.append(write_random_weights(root / checkpoint.dir, weights, checkpoint.seed))
    return written


def encode_entry(key: bytes, value: bytes) -> bytes:
    """Encode a StringStringEntryProto body (key = field 1, value = field 2)."""
    return (
        pw.encode_len_header(pw.ENTRY_KEY, len(key))
        + key
        + pw.encode_len_header(pw.ENTRY_VALUE, len(value))
    ) + value


def graph_model(
    path: Path, ops: Sequence[tuple[str, str]], shape: Sequence[int], *, dtype: int = 10
) -> Path:
    """A model of elementwise ops on one input ``x``: each ``(op, output)`` is one graph output.

    ``dtype`` is the ONNX element type (10: float16, 1: float).
    """
    nodes = [helper.make_node(op, ["x"], [out]) for op, out in ops]
    graph = helper.make_graph(
        nodes,
        "ops",
        [helper.make_tensor_value_info("x", dtype, list(shape))],
        [helper.make_tensor_value_info(out, dtype, list(shape)) for _, out in ops],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def io_slots(inputs: Sequence[str], outputs: Sequence[str], shape: Sequence[int]) -> dict[int, Any]:
    """``ane.io`` slots in anecc's convention (outputs from slot 4, then inputs), default layout."""
    from ane_build.formats.payload import IoSlot
    from ane_build.formats.tiling import layout_for

    n, c, h, w = (1,) * (4 - len(shape)) + tuple(shape)
    row, plane, _ = layout_for((n, c, h, w))
    slots: dict[int, Any] = {}
    for slot, (role, name) in enumerate(
        [("output", o) for o in outputs] + [("input", i) for i in inputs], start=4
    ):
        slots[slot] = IoSlot(
            role=role, name=name, n=n, c=c, h=h, w=w, plane_stride=plane, row_stride=row
        )
    return slots


def synthetic_container(
    source: Path, output: Path, io: dict[int, Any], *, toolchain: str | None = None
) -> Path:
    """``source`` with a two-descriptor synthetic program, the given ``ane.io`` and toolchain."""
    from ane_build.container import embed_ane_metadata
    from ane_build.formats.payload import PayloadRef
    from ane_build.formats.tiling import layout_for

    tiles = {0: 32768}
    for slot, spec in io.items():
        tiles[slot] = layout_for((spec.n, spec.c, spec.h, spec.w))[2]
    embed_ane_metadata(
        source,
        output,
        microcode=PayloadRef.from_bytes(make_chain((M1_TD_SIZE, M1_TD_SIZE))),
        td_size=M1_TD_SIZE,
        td_count=2,
        io=io,
        tiles=tiles,
        toolchain=toolchain,
    )
    return output


def even(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with an ``ane.pad`` entry when its length is odd, as our writer pads it.

    The fork kernel refuses odd-length containers (a stray zero byte ends the BO), so a model
    meant to pass the kernel check must be even.
    """
    if len(model.SerializeToString()) % 2:
        for value in ("", "0"):
            padded = onnx.ModelProto()
            padded.CopyFrom(model)
            padded.metadata_props.add(key="ane.pad", value=value)
            if len(padded.SerializeToString()) % 2 == 0:
                return padded
    return model


OPSET = 17


def onnx_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Mapping[str, Sequence[int | str]],
    outputs: Mapping[str, Sequence[int | str] | None],
    *,
    initializers: Mapping[str, np.ndarray] | None = None,
    elem: int = TensorProto.FLOAT,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        list(nodes),
        "check_test",
        [helper.make_tensor_value_info(n, elem, list(s)) for n, s in inputs.items()],
        [
            helper.make_tensor_value_info(n, elem, None if s is None else list(s))
            for n, s in outputs.items()
        ],
        initializer=[numpy_helper.from_array(v, n) for n, v in (initializers or {}).items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def save_model(path: Path, proto: onnx.ModelProto) -> Path:
    onnx.save(proto, str(path))
    return path


def unary_model(op: str, shape: Sequence[int] = (1, 4)) -> onnx.ModelProto:
    return onnx_model([helper.make_node(op, ["x"], ["y"])], {"x": shape}, {"y": shape})


def three_outputs_model(shape: Sequence[int] = (1, 4, 8, 8)) -> onnx.ModelProto:
    """Outputs of three magnitudes: ``sig`` in (0, 1), ``lin`` = 300x + 1, ``tiny`` = 1e-4 x."""
    nodes = [
        helper.make_node("Sigmoid", ["x"], ["sig"]),
        helper.make_node("Mul", ["x", "k300"], ["scaled"]),
        helper.make_node("Add", ["scaled", "one"], ["lin"]),
        helper.make_node("Mul", ["x", "k_tiny"], ["tiny"]),
    ]
    consts = {
        "k300": np.array(300.0, np.float32),
        "one": np.array(1.0, np.float32),
        "k_tiny": np.array(1e-4, np.float32),
    }
    outs = {name: shape for name in ("sig", "lin", "tiny")}
    return onnx_model(nodes, {"x": shape}, outs, initializers=consts)


def tiny_split(root: Path, *, compile: bool = True, config: Any = None, **settings: Any) -> Path:
    """The tiny checkpoint under ``root/model`` split into ``root/split`` (synthetic containers).

    ``settings`` are `SplitSettings` fields (default: 2 chunks, context 64, prefill 8).
    """
    from ane_build.chat.tiny import write_tiny_llama
    from ane_build.llm.plan import SplitSettings
    from ane_build.llm.simcompile import compile_synthetic
    from ane_build.llm.split import split_checkpoint

    model = root / "model"
    if not (model / "config.json").is_file():
        write_tiny_llama(model, config)
    chosen = {"chunks": 2, "context": 64, "prefill": 8, **settings}
    split_checkpoint(model, root / "split", SplitSettings(**chosen))
    if compile:
        compile_synthetic(root / "split")
    return root / "split"
