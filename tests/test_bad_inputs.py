"""The bad-input matrix (issue 6): one row per bad input, fed to the command a user would run.

Every case asserts the exit code, that the message names the file, the field (or key, byte
offset) and the value, that no traceback escapes, and that nothing was half-written: the failed
command created no file and changed none (no output, no ``.*.tmp`` left, sources untouched).
Commands run through their real entry points: ``convert_main`` and ``main`` in process, doit in a
subprocess on a throw-away project. ``docs/bad-inputs.md`` lists the same cases, one line each.
"""

from __future__ import annotations

import base64
import builtins
import errno
import hashlib
import json
import os
import re
import stat
import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import pytest

import ane_build._fs
import ane_build.container.scan
import ane_build.formats.payload
from ane_build.cli import convert_main, main
from ane_build.formats import protowire
from ane_build.synthetic.chains import make_chain, make_weights
from tests.helpers import even, external_data_model, make_anec_bytes, relu_model

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "bad-inputs.md"

CHAIN2 = make_chain(2)  # descriptors of 0x274 bytes at 0x0 and 0x300; tsk_size 0x574
CHAIN1 = make_chain(1)
WEIGHTS = make_weights(100)
OUT_NAME = "model_ane.onnx"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def with_word(data: bytes, offset: int, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into("<I", out, offset, value)
    return bytes(out)


LOOPING = with_word(CHAIN2, 28, 0)  # descriptor 0's next offset points back to itself
OUT_OF_RANGE = with_word(CHAIN2, 28, 0x10000)  # ... past the end of the microcode


@dataclass(frozen=True)
class Run:
    """What a case runs, and the text its message must contain."""

    argv: list[str]
    file: str
    field: str
    value: str


class Env:
    """Builds one case's inputs under its own temporary folder (the working folder)."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp = tmp
        self.mp = monkeypatch

    def file(self, name: str, data: bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def model(self, name: str = "model.onnx") -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return relu_model(path)

    def convert(
        self, *args: str | Path, source: Path | None = None, output: Path | None = None
    ) -> list[str]:
        src = self.model() if source is None else source
        out = self.tmp / "out" / OUT_NAME if output is None else output
        return [str(src), *map(str, args), "-o", str(out)]

    def microcode(self, data: bytes = CHAIN2, name: str = "m.tsk") -> Path:
        return self.file(name, data)

    def bundle(self, doc: Any, name: str = "bundle.json") -> Path:
        text = doc if isinstance(doc, str) else json.dumps(doc)
        return self.file(name, text.encode())

    def anec(self, name: str, **fields: Any) -> Path:
        fields.setdefault("td_count", 2)
        return self.file(name, make_anec_bytes(CHAIN2, WEIGHTS, **fields))

    def container(
        self,
        name: str,
        meta: dict[str, str] | None = None,
        *,
        microcode: bytes = CHAIN2,
        extra: Sequence[tuple[str, str]] = (),
    ) -> Path:
        """A hand-made container: relu graph, valid ane.* entries overridden by ``meta``."""
        model = onnx.load(self.model())
        entries = {"ane.microcode.b64": b64(microcode), "ane.td_size": "628", "ane.td_count": "2"}
        entries.update(meta or {})
        for key, value in [*entries.items(), *extra]:
            model.metadata_props.add(key=key, value=value)
        path = self.tmp / name
        onnx.save(even(model), path)  # even, as our writer makes them: parity hides no rule
        return path

    def deny(self, module: object, target: Path) -> None:
        """Make ``open`` in ``module`` fail with EACCES for ``target``.

        Tests run as root, where chmod cannot make a file unreadable; this gives the kernel's
        answer for one path and leaves every other open alone.
        """
        real_open = builtins.open

        def fake_open(file: Any, *args: Any, **kwargs: Any) -> Any:
            if os.fspath(file) == os.fspath(target):
                raise PermissionError(errno.EACCES, "Permission denied", os.fspath(file))
            return real_open(file, *args, **kwargs)

        self.mp.setattr(module, "open", fake_open, raising=False)

    # -- doit projects ---------------------------------------------------------------------

    @property
    def root(self) -> Path:
        return self.tmp / "proj"

    def project(self, configs: dict[str, str]) -> Path:
        root = self.root
        (root / "configs").mkdir(parents=True)
        self.model("proj/models/m.onnx")
        self.model("proj/models/n.onnx")
        self.file("proj/art/m.tsk", CHAIN2)
        self.file("proj/dodo.py", b"from ane_build.dodo import *  # noqa: F403\n")
        self.file("elsewhere/m.tsk", CHAIN2)
        for name, text in configs.items():
            (root / "configs" / name).write_text(text, encoding="utf-8")
        return root

    def external_data_model(self, path: Path, location: str) -> Path:
        """A model whose one initializer lives in external data at ``location``."""
        return external_data_model(path, location)


M = 'source = "models/m.onnx"\n[artifacts]\nmicrocode = "art/m.tsk"\n'
N = 'source = "models/n.onnx"\n[artifacts]\nmicrocode = "art/m.tsk"\n'


def doit(
    env: Env, configs: dict[str, str], field: str, value: str, file: str = "configs/m.toml"
) -> Run:
    env.project(configs)
    # `doit convert:m`: the one model the case is about (any other would build).
    return Run(["convert:m"], file, field, value)


# -- builders that need more than one line -------------------------------------------------


def truncated(env: Env, name: str) -> tuple[Path, str, str]:
    """A model cut in half, and the field and value the error must name."""
    data = env.model().read_bytes()
    cut = len(data) // 2
    graph = next(f for f in protowire.iter_fields(data) if f.number == protowire.MODEL_GRAPH)
    field = f"field 7 at byte {graph.offset}"
    value = f"declares {graph.length} bytes but only {cut - graph.value_offset} remain"
    return env.file(name, data[:cut]), field, value


def truncated_onnx(env: Env) -> Run:
    path, field, value = truncated(env, "trunc.onnx")
    return Run(env.convert("--microcode", env.microcode(), source=path), path.name, field, value)


def truncated_container(env: Env) -> Run:
    path, field, value = truncated(env, "half.onnx")
    return Run(["verify", str(path)], path.name, field, value)


def truncated_anec(env: Env) -> Run:
    path = env.file("cut.anec", env.anec("whole.anec").read_bytes()[:0x500])
    return Run(env.convert("--anec", path), path.name, ".anec header", "file is 1280 bytes")


def no_graph_model(env: Env) -> Path:
    model = onnx.ModelProto(ir_version=8)
    model.opset_import.add(version=17)
    return env.file("nograph.onnx", model.SerializeToString())


def symlink_loop(env: Env, name: str) -> Path:
    path = env.tmp / name
    path.symlink_to(path)
    return path


def dangling(env: Env, name: str) -> Path:
    path = env.tmp / name
    path.symlink_to(env.tmp / "gone")
    return path


def folder(env: Env, name: str) -> Path:
    path = env.tmp / name
    path.mkdir(parents=True)
    return path


def fifo(env: Env, name: str) -> Path:
    path = env.tmp / name
    os.mkfifo(path)
    return path


def unreadable_source(env: Env) -> Run:
    source = env.model("secret.onnx")
    env.deny(ane_build.container.scan, source)
    return Run(
        env.convert("--microcode", env.microcode(), source=source),
        "secret.onnx",
        "cannot open",
        "Permission denied",
    )


def unreadable_artefact(env: Env) -> Run:
    path = env.microcode(name="secret.tsk")
    env.deny(ane_build._fs, path)
    return Run(env.convert("--microcode", path), "secret.tsk", "microcode", "permission denied")


def unreadable_while_writing(env: Env) -> Run:
    weights = env.file("w.weights", WEIGHTS)
    # Resolution opens it fine; the read that streams it into the container fails.
    env.deny(ane_build.formats.payload, weights)
    argv = env.convert("--microcode", env.microcode(), "--weights", weights)
    return Run(argv, "w.weights", "cannot read", "Permission denied")


def output_over_source_symlink(env: Env) -> Run:
    env.project({"m.toml": 'output = "build/latest.onnx"\n' + M})
    (env.root / "build").mkdir()
    (env.root / "build/latest.onnx").symlink_to(env.root / "models/m.onnx")
    return Run(
        ["convert"], "configs/m.toml", "output", "build/latest.onnx is also this model's source"
    )


def escape_symlink(env: Env) -> Run:
    env.project({"m.toml": 'source = "models/m.onnx"\n[artifacts]\nmicrocode = "art/ln.tsk"\n'})
    (env.root / "art/ln.tsk").symlink_to(env.tmp / "elsewhere/m.tsk")
    return Run(["convert"], "configs/m.toml", "artifacts.microcode", '(got "art/ln.tsk")')


def escape_absolute(env: Env) -> Run:
    outside = env.tmp / "elsewhere" / "m.tsk"
    config = f'source = "models/m.onnx"\n[artifacts]\nmicrocode = "{outside}"\n'
    env.project({"m.toml": config})
    # The full path is named where it resolves; the "(got ...)" echo is clipped for long paths.
    return Run(["convert"], "configs/m.toml", "artifacts.microcode", f"resolves to {outside},")


def config_symlink_loop(env: Env) -> Run:
    env.project({"m.toml": 'source = "models/m.onnx"\n[artifacts]\nmicrocode = "art/loop.tsk"\n'})
    (env.root / "art/loop.tsk").symlink_to(env.root / "art/loop.tsk")
    return Run(["convert"], "configs/m.toml", "artifacts.microcode", "symlink loop")


def external_data(env: Env, location: str | None, *, link: bool = False) -> Run:
    env.project({"m.toml": M})
    secret = env.file("elsewhere/secret.bin", bytes(256))
    if location is None:
        location = str(secret)
    if link:
        (env.root / "models" / location).symlink_to(secret)
    env.external_data_model(env.root / "models/m.onnx", location)
    return Run(["convert"], "configs/m.toml", "source", f"external data {location!r}")


def output_over_external_data(env: Env) -> Run:
    env.project({"m.toml": M, "n.toml": 'output = "models/w.bin"\n' + N})
    env.file("proj/models/w.bin", bytes(256))
    env.external_data_model(env.root / "models/m.onnx", "w.bin")
    return Run(["convert:n"], "configs/n.toml", "output", "external data file 'w.bin'")


def discovered_escape(env: Env) -> Run:
    env.project({"m.toml": 'source = "models/m.onnx"\n[artifacts]\nroot = "found"\n'})
    (env.root / "found").mkdir()
    (env.root / "found/x.tsk").symlink_to(env.tmp / "elsewhere/m.tsk")
    return Run(["convert"], "found/x.tsk", "microcode", "outside the project root")


# -- the matrix ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One row: the input, the command, where it is caught and what the user sees."""

    id: str
    input: str
    command: str  # convert | verify | inspect | doit
    caught: str
    code: int
    build: Callable[[Env], Run]
    stream: str = "err"


def convert_case(
    id: str, input: str, caught: str, build: Callable[[Env], Run], code: int = 1
) -> Case:
    return Case(id, input, "convert", caught, code, build)


def verify_case(id: str, input: str, caught: str, build: Callable[[Env], Run]) -> Case:
    return Case(id, input, "verify", caught, 1, build, stream="out")


def inspect_case(id: str, input: str, caught: str, build: Callable[[Env], Run]) -> Case:
    return Case(id, input, "inspect", caught, 1, build)


def doit_case(id: str, input: str, caught: str, build: Callable[[Env], Run], code: int = 1) -> Case:
    # A broken config fails its model (exit 1) like a failed task: reported in doit's output.
    return Case(id, input, "doit", caught, code, build, stream="out")


def chk(argv: list[str], path: Path, field: str, value: str) -> Run:
    return Run(argv, path.name, field, value)


def verify(env: Env, name: str, meta: dict[str, str], field: str, value: str, **kw: Any) -> Run:
    path = env.container(name, meta, **kw)
    return Run(["verify", str(path)], name, field, value)


def inspect(env: Env, name: str, meta: dict[str, str], field: str, value: str, **kw: Any) -> Run:
    path = env.container(name, meta, **kw)
    return Run(["inspect", str(path)], name, field, value)


def micro(env: Env, data: bytes, name: str, field: str, value: str, *args: str) -> Run:
    path = env.microcode(data, name)
    return chk(env.convert("--microcode", path, *args), path, field, value)


def anec(env: Env, name: str, field: str, value: str, **fields: Any) -> Run:
    path = env.anec(name, **fields)
    return chk(env.convert("--anec", path), path, field, value)


def bundle(env: Env, doc: Any, field: str, value: str) -> Run:
    path = env.bundle(doc)
    return chk(env.convert("--bundle", path), path, field, value)


def bad_path(
    env: Env, flag: str, make: Callable[[Env, str], Path], name: str, field: str, value: str
) -> Run:
    path = make(env, name)
    # Weights and tile descriptors come with microcode; the others stand alone.
    beside = (
        ["--microcode", str(env.microcode())] if flag in ("--weights", "--tile-descriptors") else []
    )
    return chk(env.convert(flag, path, *beside), path, field, value)


def bad_source(env: Env, make: Callable[[Env, str], Path], name: str, value: str) -> Run:
    path = make(env, name)
    return chk(env.convert("--microcode", env.microcode(), source=path), path, "cannot open", value)


M_B64 = b64(CHAIN2)
SOURCE = "container._open_model"
SCAN = "protowire scan (container._scan)"
PLAN = "container._plan"
PARSE = "container._metadata_from_scan"
VERIFY = "container.verify_container"
CHAIN = "microcode.walk_chain via artifacts resolver"
CHECK = "artifacts.descriptors.DescriptorParams.check_microcode"
HEADER = "anec._validate_header"
SLOTS = "anec._validate_slots"
BUNDLE = "artifacts.load_bundle"
OPEN = "anec.open_artifact"
ARGS = "cli argparse"
LOAD = "config.load_project (doit task graph)"
GRAPH = "graph.build_graph (doit task graph)"
RESOLVE = "artifacts resolver (convert task)"

CASES: list[Case] = [
    # --- the source ONNX model ---
    convert_case("onnx-truncated", "source ONNX cut in half", SCAN, truncated_onnx),
    convert_case(
        "onnx-garbage",
        "source ONNX is not protobuf",
        SCAN,
        lambda e: chk(
            e.convert("--microcode", e.microcode(), source=e.file("junk.onnx", b"\x0fGARBAGE")),
            Path("junk.onnx"),
            "field 1",
            "unsupported wire type 7",
        ),
    ),
    convert_case(
        "onnx-no-graph",
        "source ModelProto without a graph",
        PLAN,
        lambda e: chk(
            e.convert("--microcode", e.microcode(), source=no_graph_model(e)),
            Path("nograph.onnx"),
            "field 7",
            "has no graph",
        ),
    ),
    convert_case(
        "onnx-missing",
        "source path does not exist",
        SOURCE,
        lambda e: bad_source(e, lambda e, n: e.tmp / n, "nope.onnx", "No such file"),
    ),
    convert_case(
        "onnx-directory",
        "source path is a directory",
        SOURCE,
        lambda e: bad_source(e, folder, "dir.onnx", "Is a directory"),
    ),
    convert_case(
        "onnx-symlink-loop",
        "source path is a symlink loop",
        SOURCE,
        lambda e: bad_source(e, symlink_loop, "loop.onnx", "Too many levels of symbolic links"),
    ),
    convert_case("onnx-unreadable", "source unreadable (EACCES)", SOURCE, unreadable_source),
    verify_case(
        "verify-onnx-truncated",
        "container cut in half",
        VERIFY,
        truncated_container,
    ),
    verify_case(
        "verify-onnx-garbage",
        "container is not protobuf",
        VERIFY,
        lambda e: chk(
            ["verify", str(e.file("junk.onnx", b"\x0fGARBAGE"))],
            Path("junk.onnx"),
            "field 1",
            "wire type 7",
        ),
    ),
    verify_case(
        "verify-onnx-no-graph",
        "container without a graph",
        VERIFY,
        lambda e: chk(
            ["verify", str(no_graph_model(e))], Path("nograph.onnx"), "graph", "no graph"
        ),
    ),
    inspect_case(
        "inspect-onnx-garbage",
        "container is not protobuf",
        SCAN,
        lambda e: chk(
            ["inspect", str(e.file("junk.onnx", b"\x0fGARBAGE"))],
            Path("junk.onnx"),
            "field 1",
            "wire type 7",
        ),
    ),
    # --- ane.* metadata in a container ---
    verify_case(
        "meta-microcode-base64",
        "ane.microcode.b64 with a non-base64 byte",
        VERIFY,
        lambda e: verify(e, "c.onnx", {"ane.microcode.b64": "@@@@"}, "ane.microcode.b64", "'@'"),
    ),
    verify_case(
        "meta-microcode-dangling",
        "ane.microcode.b64 with a dangling character",
        VERIFY,
        # The kernel decodes 3 bytes (it drops leftover bits); our chain check refuses them,
        # and the portability check names the text.
        lambda e: verify(
            e, "c.onnx", {"ane.microcode.b64": "AAAAA"}, "ane.microcode.b64", "5 characters"
        ),
    ),
    verify_case(
        "meta-weights-base64",
        "ane.weights.b64 with a non-base64 byte",
        VERIFY,
        lambda e: verify(e, "c.onnx", {"ane.weights.b64": "abc!"}, "ane.weights.b64", "'!'"),
    ),
    verify_case(
        "meta-td-size-hex",
        "ane.td_size = '0x274' (not decimal)",
        VERIFY,
        lambda e: verify(e, "c.onnx", {"ane.td_size": "0x274"}, "ane.td_size", "'0x274'"),
    ),
    inspect_case(
        "meta-td-size-zero",
        "ane.td_size = '0'",
        PARSE,
        lambda e: inspect(e, "c.onnx", {"ane.td_size": "0"}, "ane.td_size", "'0'"),
    ),
    verify_case(
        "meta-td-count-zero",
        "ane.td_count = '0'",
        VERIFY,
        lambda e: verify(e, "c.onnx", {"ane.td_count": "0"}, "ane.td_count", "is 0"),
    ),
    inspect_case(
        "meta-td-count-words",
        "ane.td_count = 'two'",
        PARSE,
        lambda e: inspect(e, "c.onnx", {"ane.td_count": "two"}, "ane.td_count", "'two'"),
    ),
    verify_case(
        "meta-td-count-too-long",
        "ane.td_count of 40 digits",
        VERIFY,
        lambda e: verify(e, "c.onnx", {"ane.td_count": "1" * 40}, "ane.td_count", "1" * 24),
    ),
    inspect_case(
        "meta-missing-microcode",
        "container without ane.microcode.b64",
        PARSE,
        lambda e: Run(
            ["inspect", str(e.model("plain.onnx"))], "plain.onnx", "ane.microcode.b64", "missing"
        ),
    ),
    inspect_case(
        "meta-duplicate-key",
        "ane.td_size twice",
        PARSE,
        lambda e: inspect(
            e, "c.onnx", {}, "ane.td_size", "more than once", extra=[("ane.td_size", "628")]
        ),
    ),
    verify_case(
        "meta-key-too-long",
        "a 64-byte metadata key",
        VERIFY,
        lambda e: verify(e, "c.onnx", {}, "key-too-long", "'" + "k" * 24, extra=[("k" * 64, "v")]),
    ),
    # --- descriptor chains in a container ---
    verify_case(
        "meta-chain-loop",
        "microcode whose next offset points back",
        VERIFY,
        lambda e: verify(
            e, "c.onnx", {}, "ane.td_size = 628", "0x0 points back", microcode=LOOPING
        ),
    ),
    verify_case(
        "meta-chain-out-of-range",
        "microcode whose next offset is past the end",
        VERIFY,
        lambda e: verify(
            e, "c.onnx", {}, "ane.td_size = 628", "offset 0x10000", microcode=OUT_OF_RANGE
        ),
    ),
    verify_case(
        "meta-chain-td-count",
        "ane.td_count = 3 for a 2-descriptor chain",
        VERIFY,
        lambda e: verify(e, "c.onnx", {"ane.td_count": "3"}, "ane.td_count", "is 3"),
    ),
    verify_case(
        "meta-chain-td-size",
        "ane.td_size = 600 for one 628-byte descriptor",
        VERIFY,
        lambda e: verify(
            e,
            "c.onnx",
            {"ane.td_size": "600", "ane.td_count": "1"},
            "ane.td_size = 600",
            "non-zero data up to 0x274",
            microcode=CHAIN1,
        ),
    ),
    # --- descriptor chains given to the converter ---
    convert_case(
        "chain-loop",
        "microcode whose next offset points back",
        CHAIN,
        lambda e: micro(e, LOOPING, "loop.tsk", "descriptor 0", "offset 0x0 points back"),
    ),
    convert_case(
        "chain-out-of-range",
        "microcode whose next offset is past the end",
        CHAIN,
        lambda e: micro(e, OUT_OF_RANGE, "far.tsk", "descriptor 0", "offset 0x10000"),
    ),
    convert_case(
        "chain-too-short",
        "microcode of 8 bytes",
        CHAIN,
        lambda e: micro(e, bytes(8), "short.tsk", "microcode", "8 bytes"),
    ),
    convert_case(
        "chain-td-count",
        "--td-count 3 for a 2-descriptor chain",
        CHECK,
        lambda e: micro(e, CHAIN2, "m.tsk", "td_count", "is 3", "--td-count", "3"),
    ),
    convert_case(
        "chain-td-size-loop",
        "--td-size 0x304 overlapping descriptor 1",
        CHAIN,
        lambda e: micro(e, CHAIN2, "m.tsk", "td_size", "772", "--td-size", "0x304"),
    ),
    convert_case(
        "chain-td-size-short",
        "--td-size 600 for one 628-byte descriptor",
        CHECK,
        lambda e: micro(e, CHAIN1, "one.tsk", "td_size", "600", "--td-size", "600"),
    ),
    convert_case(
        "chain-td-size-unaligned",
        "--td-size 601",
        CHAIN,
        lambda e: micro(e, CHAIN2, "m.tsk", "td_size", "601", "--td-size", "601"),
    ),
    # Usage errors (argparse, exit 2) involve no file: the option is the field.
    convert_case(
        "cli-td-size-zero",
        "--td-size 0",
        ARGS,
        lambda e: Run(
            e.convert("--microcode", e.microcode(), "--td-size", "0"), "", "--td-size", "got 0"
        ),
        code=2,
    ),
    convert_case(
        "cli-td-count-not-decimal",
        "--td-count two",
        ARGS,
        lambda e: Run(
            e.convert("--microcode", e.microcode(), "--td-count", "two"), "", "--td-count", "'two'"
        ),
        code=2,
    ),
    # --- .anec headers that lie ---
    convert_case(
        "anec-size",
        ".anec size larger than the file",
        HEADER,
        lambda e: anec(e, "size.anec", "size", "0x1869f", size=99999),
    ),
    convert_case(
        "anec-tsk-size",
        ".anec tsk_size disagreeing with size",
        HEADER,
        lambda e: anec(e, "tsk.anec", "tsk_size", "0x500", tsk_size=0x500),
    ),
    convert_case(
        "anec-krn-size",
        ".anec krn_size disagreeing with size",
        HEADER,
        lambda e: anec(e, "krn.anec", "krn_size", "0x32", krn_size=50),
    ),
    convert_case(
        "anec-td-count-zero",
        ".anec td_count = 0",
        HEADER,
        lambda e: anec(e, "tdc.anec", "td_count", "=0", td_count=0),
    ),
    convert_case(
        "anec-td-count-chain",
        ".anec td_count = 3 for a 2-descriptor chain",
        "microcode.check_chain in anec.read_anec",
        lambda e: anec(e, "tdc.anec", "td_count", "is 3", td_count=3),
    ),
    convert_case(
        "anec-td-size-zero",
        ".anec td_size = 0",
        HEADER,
        lambda e: anec(e, "tds.anec", "td_size", "0x0", td_size=0),
    ),
    convert_case(
        "anec-td-size-chain",
        ".anec td_size = 0x304 overlapping descriptor 1",
        "microcode.walk_chain in anec.read_anec",
        lambda e: anec(e, "tds.anec", "td_size", "0x304", td_size=0x304),
    ),
    convert_case(
        "anec-tiles",
        ".anec tiles[0] = 0 (no room for the payload)",
        SLOTS,
        lambda e: anec(e, "tiles.anec", "tiles[0]", "=0", tiles={0: 0, 4: 1, 5: 1}),
    ),
    convert_case(
        "anec-row-stride",
        ".anec row stride smaller than W*2",
        SLOTS,
        lambda e: anec(
            e,
            "row.anec",
            "row stride",
            "100",
            nchw={4: (1, 1, 1, 77, 192, 100), 5: (1, 1, 1, 77, 192, 192)},
        ),
    ),
    convert_case(
        "anec-plane-stride",
        ".anec plane stride not a multiple of 64",
        SLOTS,
        lambda e: anec(
            e,
            "plane.anec",
            "plane stride",
            "200",
            nchw={4: (1, 1, 1, 77, 200, 192), 5: (1, 1, 1, 77, 192, 192)},
        ),
    ),
    convert_case(
        "anec-slot-counts",
        ".anec src_count = 40 (more slots than exist)",
        SLOTS,
        lambda e: anec(e, "slots.anec", "src_count", "=40", src_count=40),
    ),
    convert_case(
        "anec-truncated",
        ".anec shorter than its header",
        HEADER,
        truncated_anec,
    ),
    # --- JSON bundles with wrong types or values ---
    convert_case(
        "bundle-microcode-int",
        "bundle microcode_b64 is 5",
        BUNDLE,
        lambda e: bundle(e, {"microcode_b64": 5}, "microcode_b64", "got 5"),
    ),
    convert_case(
        "bundle-microcode-list",
        "bundle microcode_b64 is a list",
        BUNDLE,
        lambda e: bundle(e, {"microcode_b64": [M_B64]}, "microcode_b64", "an array of 1 item"),
    ),
    convert_case(
        "bundle-microcode-base64",
        "bundle microcode_b64 is Python code, not base64",
        BUNDLE,
        lambda e: bundle(
            e, {"microcode_b64": "__import__('os')"}, "microcode_b64", "byte 0x28 at offset 10"
        ),
    ),
    convert_case(
        "bundle-weights-base64",
        "bundle weights_b64 'abc!'",
        BUNDLE,
        lambda e: bundle(
            e, {"microcode_b64": M_B64, "weights_b64": "abc!"}, "weights_b64", "byte 0x21"
        ),
    ),
    convert_case(
        "bundle-td-size-string",
        'bundle td_size is "62x"',
        BUNDLE,
        lambda e: bundle(e, {"microcode_b64": M_B64, "td_size": "62x"}, "td_size", '"62x"'),
    ),
    convert_case(
        "bundle-td-count-float",
        "bundle td_count is 2.0",
        BUNDLE,
        lambda e: bundle(e, {"microcode_b64": M_B64, "td_count": 2.0}, "td_count", "got 2.0"),
    ),
    convert_case(
        "bundle-td-count-bool",
        "bundle td_count is true",
        BUNDLE,
        lambda e: bundle(e, {"microcode_b64": M_B64, "td_count": True}, "td_count", "got true"),
    ),
    convert_case(
        "bundle-td-count-chain",
        "bundle td_count 3 for a 2-descriptor chain",
        CHECK,
        lambda e: bundle(e, {"microcode_b64": M_B64, "td_count": 3}, "td_count", "is 3"),
    ),
    convert_case(
        "bundle-tile-descriptors-list",
        "bundle tile_descriptors is a list",
        BUNDLE,
        lambda e: bundle(
            e,
            {"microcode_b64": M_B64, "tile_descriptors": [M_B64]},
            "tile_descriptors",
            "must be an object",
        ),
    ),
    convert_case(
        "bundle-entry-size-string",
        'bundle tile_descriptors.entry_size is "x"',
        BUNDLE,
        lambda e: bundle(
            e,
            {"microcode_b64": M_B64, "tile_descriptors": {"b64": M_B64, "entry_size": "x"}},
            "tile_descriptors.entry_size",
            'got "x"',
        ),
    ),
    convert_case(
        "bundle-toolchain-int",
        "bundle toolchain is 3",
        BUNDLE,
        lambda e: bundle(e, {"microcode_b64": M_B64, "toolchain": 3}, "toolchain", "got 3"),
    ),
    convert_case(
        "bundle-unknown-key",
        'bundle key "weight" (a typo for weights_b64)',
        BUNDLE,
        lambda e: bundle(
            e, {"microcode_b64": M_B64, "weight": M_B64}, "weight", "did you mean 'weights_b64'"
        ),
    ),
    convert_case(
        "bundle-top-level-list",
        "bundle is a JSON array",
        BUNDLE,
        lambda e: bundle(e, [M_B64], "top level", "must be a JSON object"),
    ),
    convert_case(
        "bundle-missing-microcode",
        "bundle without microcode_b64",
        BUNDLE,
        lambda e: bundle(e, {"weights_b64": M_B64}, "microcode_b64", "missing"),
    ),
    convert_case(
        "bundle-not-json",
        "bundle is not JSON",
        BUNDLE,
        lambda e: bundle(e, "{microcode: 1}", "invalid JSON", "line 1 column 2"),
    ),
    # --- artefact paths ---
    convert_case(
        "path-missing",
        "--microcode names a missing file",
        OPEN,
        lambda e: bad_path(
            e, "--microcode", lambda e, n: e.tmp / n, "nope.tsk", "microcode", "does not exist"
        ),
    ),
    convert_case("path-unreadable", "--microcode unreadable (EACCES)", OPEN, unreadable_artefact),
    convert_case(
        "path-directory",
        "--weights names a directory",
        OPEN,
        lambda e: bad_path(e, "--weights", folder, "w.d", "weights", "is a directory"),
    ),
    convert_case(
        "path-symlink-loop",
        "--tile-descriptors is a symlink loop",
        OPEN,
        lambda e: bad_path(
            e, "--tile-descriptors", symlink_loop, "td.bin", "tile descriptors", "symlink loop"
        ),
    ),
    convert_case(
        "path-dangling-symlink",
        "--anec is a dangling symlink",
        OPEN,
        lambda e: bad_path(e, "--anec", dangling, "x.anec", ".anec file", "dangling symlink"),
    ),
    convert_case(
        "path-fifo",
        "--microcode is a FIFO",
        OPEN,
        lambda e: bad_path(e, "--microcode", fifo, "pipe.tsk", "microcode", "not a regular file"),
    ),
    convert_case(
        "path-bundle-missing",
        "--bundle names a missing path",
        BUNDLE,
        lambda e: bad_path(
            e, "--bundle", lambda e, n: e.tmp / n, "gone", "bundle", "does not exist"
        ),
    ),
    convert_case(
        "path-bundle-symlink-loop",
        "--bundle is a symlink loop",
        BUNDLE,
        lambda e: bad_path(e, "--bundle", symlink_loop, "b", "bundle", "symlink loop"),
    ),
    convert_case(
        "path-root-symlink-loop",
        "--artifact-root is a symlink loop",
        "artifacts.discover_candidates",
        lambda e: bad_path(
            e, "--artifact-root", symlink_loop, "r", "artefact root", "symlink loop"
        ),
    ),
    convert_case(
        "path-unreadable-while-writing",
        "weights become unreadable while the container is written",
        "payload.PayloadRef.iter_chunks in container._write_atomic",
        unreadable_while_writing,
    ),
    convert_case(
        "output-is-directory",
        "-o names an existing directory",
        "container._write_atomic",
        lambda e: chk(
            e.convert("--microcode", e.microcode(), output=folder(e, "out/taken.onnx")),
            Path("taken.onnx"),
            "cannot write",
            "Is a directory",
        ),
    ),
    convert_case(
        "output-is-source",
        "-o names the source model",
        "convert.convert_model",
        lambda e: chk(
            e.convert("--microcode", e.microcode(), output=e.tmp / "model.onnx"),
            Path("model.onnx"),
            "output",
            "would overwrite the source model",
        ),
    ),
    # --- configs (doit) ---
    doit_case(
        "config-unknown-key",
        "artifacts.bogus = 1",
        LOAD,
        lambda e: doit(e, {"m.toml": M + "bogus = 1\n"}, "artifacts.bogus", "unknown key"),
    ),
    doit_case(
        "config-unknown-key-typo",
        "sorce = ... (typo of source)",
        LOAD,
        lambda e: doit(e, {"m.toml": 'sorce = "x"\n' + M}, "sorce", "did you mean 'source'"),
    ),
    doit_case(
        "config-wrong-type-int",
        'artifacts.td_size = "628"',
        LOAD,
        lambda e: doit(e, {"m.toml": M + 'td_size = "628"\n'}, "artifacts.td_size", '(got "628")'),
    ),
    doit_case(
        "config-wrong-type-bool",
        'allow_outside_root = "yes"',
        LOAD,
        lambda e: doit(
            e, {"m.toml": 'allow_outside_root = "yes"\n' + M}, "allow_outside_root", '(got "yes")'
        ),
    ),
    doit_case(
        "config-wrong-type-table",
        'deploy = "sim"',
        LOAD,
        lambda e: doit(e, {"m.toml": 'deploy = "sim"\n' + M}, "deploy: must be a table", '"sim"'),
    ),
    doit_case(
        "config-bad-device",
        'deploy.device = "accel0"',
        LOAD,
        lambda e: doit(
            e, {"m.toml": M + '[deploy]\ndevice = "accel0"\n'}, "deploy.device", '"accel0"'
        ),
    ),
    doit_case(
        "config-toml-syntax",
        "toolchain = anecc (unquoted)",
        LOAD,
        lambda e: doit(
            e, {"m.toml": "toolchain = anecc\n" + M}, "line 1, column 13", "invalid TOML"
        ),
    ),
    doit_case(
        "config-duplicate-names",
        "configs/m.toml and configs/M.toml",
        LOAD,
        lambda e: doit(
            e, {"m.toml": M, "M.toml": N}, "configs/M.toml", "differ only in case", "configs/m.toml"
        ),
    ),
    doit_case(
        "config-output-collision",
        "two models write build/m_ane.onnx",
        LOAD,
        lambda e: doit(
            e,
            {"m.toml": M, "n.toml": 'output = "build/m_ane.onnx"\n' + N},
            "output",
            "all write build/m_ane.onnx",
        ),
    ),
    doit_case(
        "config-output-over-source",
        "output = the model's own source",
        LOAD,
        lambda e: doit(
            e, {"m.toml": 'output = "models/m.onnx"\n' + M}, "output", "also this model's source"
        ),
    ),
    doit_case(
        "config-output-over-other-source",
        "output = another model's source",
        LOAD,
        lambda e: doit(
            e,
            {"m.toml": 'output = "models/n.onnx"\n' + M, "n.toml": N},
            "output",
            "models/n.onnx is also the source of model 'n'",
        ),
    ),
    doit_case(
        "config-output-over-source-symlink",
        "output is a symlink to the source",
        LOAD,
        output_over_source_symlink,
    ),
    doit_case(
        "config-output-over-artefact",
        "output = the model's microcode",
        LOAD,
        lambda e: doit(
            e, {"m.toml": 'output = "art/m.tsk"\n' + M}, "output", "artifacts.microcode"
        ),
    ),
    doit_case(
        "config-output-over-external-data",
        "output = another model's external data file",
        GRAPH,
        output_over_external_data,
    ),
    doit_case(
        "config-escape-dotdot",
        'artifacts.microcode = "../elsewhere/m.tsk"',
        LOAD,
        lambda e: doit(
            e,
            {"m.toml": M.replace("art/m.tsk", "../elsewhere/m.tsk")},
            "artifacts.microcode",
            "outside the project root",
        ),
    ),
    doit_case(
        "config-escape-symlink",
        "artifacts.microcode is a symlink leaving the root",
        LOAD,
        escape_symlink,
    ),
    doit_case(
        "config-escape-absolute",
        "artifacts.microcode is an absolute path outside",
        LOAD,
        escape_absolute,
    ),
    doit_case(
        "config-source-escape",
        'source = "../elsewhere/m.onnx"',
        LOAD,
        lambda e: doit(
            e,
            {"m.toml": M.replace("models/m.onnx", "../elsewhere/m.onnx")},
            "source",
            '(got "../elsewhere/m.onnx")',
        ),
    ),
    doit_case(
        "config-symlink-loop",
        "artifacts.microcode is a symlink loop",
        LOAD,
        config_symlink_loop,
    ),
    doit_case(
        "config-external-data-dotdot",
        "source's external data at '../../elsewhere/secret.bin'",
        GRAPH,
        lambda e: external_data(e, "../../elsewhere/secret.bin"),
    ),
    doit_case(
        "config-external-data-absolute",
        "source's external data at an absolute path",
        GRAPH,
        lambda e: external_data(e, None),
    ),
    doit_case(
        "config-external-data-symlink",
        "source's external data file is a symlink leaving the root",
        GRAPH,
        lambda e: external_data(e, "w.bin", link=True),
    ),
    doit_case(
        "config-discovered-escape",
        "a discovered artefact is a symlink leaving the root",
        RESOLVE,
        discovered_escape,
        code=1,
    ),
    doit_case(
        "config-artefact-missing",
        "artifacts.microcode names a missing file",
        RESOLVE,
        lambda e: doit(
            e,
            {"m.toml": M.replace("art/m.tsk", "art/gone.tsk")},
            "microcode",
            "does not exist",
            "art/gone.tsk",
        ),
        code=1,
    ),
]


# -- running a case --------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every regular file under ``root``.

    Build state, Python's caches and the build's report are excluded: a build that fails still
    records how it went.
    """
    files: dict[str, str] = {}
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in (".ane_build", "__pycache__")]
        for name in names:
            path = Path(folder, name)
            if path.relative_to(root).as_posix().endswith("build/report.json"):
                continue
            if stat.S_ISREG(os.lstat(path).st_mode):
                files[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def execute(
    case: Case, env: Env, run: Run, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    if case.command == "doit":
        proc = subprocess.run(
            [sys.executable, "-m", "doit", *run.argv],
            cwd=env.root,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return proc.returncode, proc.stdout, proc.stderr
    entry = convert_main if case.command == "convert" else main
    try:
        code = entry(run.argv)
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    env = Env(tmp_path, monkeypatch)
    run = case.build(env)
    before = snapshot(tmp_path)

    code, out, err = execute(case, env, run, capsys)

    shown = f"exit {code}\n--- stdout\n{out}\n--- stderr\n{err}"
    assert code == case.code, shown
    assert "Traceback" not in out + err, shown
    message = out if case.stream == "out" else err
    for what, text in (("file", run.file), ("field", run.field), ("value", run.value)):
        assert text in message, f"the message does not name the {what} {text!r}:\n{shown}"
    # Nothing half-written: the failed command created no file and changed none.
    assert snapshot(tmp_path) == before, shown


# -- the doc lists exactly these cases -------------------------------------------------------


def doc_rows() -> dict[str, int]:
    rows: dict[str, int] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\|\s*`([a-z0-9-]+)`\s*\|(.*)", line)
        if match:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", match[2])]
            rows[match[1]] = int(cells[3])
    return rows


def test_doc_lists_every_case_with_its_exit_code() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    rows = doc_rows()
    assert sorted(rows) == sorted(ids)
    assert {c.id: c.code for c in CASES} == rows
