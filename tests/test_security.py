"""Security (issue 6): no shell, no code from data, no paths leaving the project root.

- The package, its tools and examples never build a shell command: no ``shell=True``, no
  ``os.system``/``os.popen``, no string commands; nothing evaluates code (``eval``, ``exec``,
  ``pickle``, ``yaml.load``, an unsandboxed jinja2 environment). Checked on the source with `ast`,
  and on the doit tasks, whose actions are Python callables, never command strings.
- Configs (TOML) and bundles (JSON) are data: shell-, Python- and Jinja-looking values are stored
  verbatim or rejected, never run.
- Artefact paths, source paths, outputs and the source's external data cannot leave the project
  root unless the config says ``allow_outside_root = true``; both ways are tested.
"""

from __future__ import annotations

import ast
import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ane_build.build import tasks
from ane_build.build.context import BuildContext, set_context
from ane_build.build.project import load_project
from ane_build.build.runner import run_doit
from ane_build.cli import convert_main
from ane_build.container.external import safe_location
from ane_build.container.metadata import parse_ane_metadata, read_ane_payloads
from ane_build.errors import ConfigError
from ane_build.synthetic.chains import make_chain
from tests.helpers import external_data_model, relu_model

REPO = Path(__file__).resolve().parents[1]
CHAIN = make_chain(2)

# --- no shell, no eval: the source, checked with ast ---------------------------------------

BANNED_CALLS = {
    "eval": "evaluates a string as code",
    "exec": "executes a string as code",
    "compile": "compiles a string to code",
    "__import__": "imports a module named by data",
    "os.system": "runs a shell command string",
    "os.popen": "runs a shell command string",
    "subprocess.getoutput": "always runs a shell",
    "subprocess.getstatusoutput": "always runs a shell",
    "asyncio.create_subprocess_shell": "runs a shell command string",
    "pty.spawn": "spawns a program",
    "pickle.load": "unpickling runs code",
    "pickle.loads": "unpickling runs code",
    "marshal.loads": "loads code objects",
    "yaml.load": "can construct arbitrary objects",
    "yaml.unsafe_load": "constructs arbitrary objects",
    "jinja2.Environment": "unsandboxed template engine",
    "jinja2.Template": "unsandboxed template engine",
}
BANNED_PREFIXES = ("os.exec", "os.spawn", "os.posix_spawn")
BANNED_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "yaml"}
PROCESS_CALLS = ("subprocess.", "os.popen", "asyncio.create_subprocess_")


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.what}"


class _Scanner(ast.NodeVisitor):
    """Finds shell and code-execution hazards, resolving import aliases to dotted names."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.aliases: dict[str, str] = {}
        self.findings: list[Finding] = []

    def _add(self, node: ast.AST, what: str) -> None:
        self.findings.append(Finding(self.file, getattr(node, "lineno", 0), what))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.aliases[(alias.asname or alias.name).split(".")[0]] = alias.name.split(".")[0]
            if alias.name.split(".")[0] in BANNED_MODULES:
                self._add(node, f"imports {alias.name}")
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if module.split(".")[0] in BANNED_MODULES:
            self._add(node, f"imports from {module}")
        for alias in node.names:
            self.aliases[alias.asname or alias.name] = f"{module}.{alias.name}" if module else ""
        self.generic_visit(node)

    def dotted(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self.dotted(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def visit_Call(self, node: ast.Call) -> None:
        name = self.dotted(node.func) or ""
        if name in BANNED_CALLS:
            self._add(node, f"calls {name}: {BANNED_CALLS[name]}")
        elif name.startswith(BANNED_PREFIXES):
            self._add(node, f"calls {name}: replaces or spawns a process")
        for keyword in node.keywords:
            value = keyword.value
            literal_false = isinstance(value, ast.Constant) and value.value in (False, None)
            if keyword.arg == "shell" and not literal_false:
                self._add(node, f"calls {name or 'something'} with shell={ast.unparse(value)}")
        if name.startswith(PROCESS_CALLS) and node.args and _is_string(node.args[0]):
            self._add(node, f"calls {name} with a command string: {ast.unparse(node.args[0])}")
        self.generic_visit(node)


def _is_string(node: ast.AST) -> bool:
    """A string command (built or literal) rather than an argument list."""
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
        return _is_string(node.left) or _is_string(node.right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr in ("format", "join") and _is_string(node.func.value)
    return False


def scan_source(text: str, file: str = "<snippet>") -> list[Finding]:
    scanner = _Scanner(file)
    scanner.visit(ast.parse(text, file))
    return scanner.findings


def package_sources() -> Iterator[Path]:
    yield from sorted((REPO / "ane_build").rglob("*.py"))
    for folder in ("tools", "examples"):
        yield from sorted((REPO / folder).glob("*.py"))


@pytest.mark.parametrize(
    "snippet",
    [
        "import subprocess\nsubprocess.run(cmd, shell=True)",
        "import subprocess as sp\nsp.Popen(f'anecc {path}')",
        "from subprocess import check_output\ncheck_output('ls ' + folder)",
        "import subprocess\nsubprocess.call('anecc {}'.format(path))",
        "import subprocess\nsubprocess.run(cmd, shell=use_shell)",
        "import os\nos.system('doit ' + name)",
        "from os import popen\npopen(cmd)",
        "import os\nos.execvp('sh', args)",
        "eval(config['expr'])",
        "exec(text)",
        "compile(text, 'f', 'exec')",
        "__import__(name)",
        "import pickle\npickle.loads(blob)",
        "from yaml import load\nload(text)",
        "import jinja2\njinja2.Environment().from_string(t)",
        "from jinja2 import Template\nTemplate(t)",
        "import marshal",
    ],
)
def test_scanner_finds_each_hazard(snippet: str) -> None:
    assert scan_source(snippet), snippet


@pytest.mark.parametrize(
    "snippet",
    [
        "import subprocess\nsubprocess.run(['anecc', str(path)], check=True)",
        "import subprocess\nsubprocess.run(args, shell=False)",
        "import re\nre.compile('x')",
        "from jinja2 import sandbox\nsandbox.ImmutableSandboxedEnvironment()",
        "import json\njson.loads(text)",
    ],
)
def test_scanner_accepts_safe_code(snippet: str) -> None:
    assert scan_source(snippet) == []


def test_package_runs_no_shell_and_evaluates_no_code() -> None:
    files = list(package_sources())
    assert len(files) > 30  # the whole package was found
    findings = [
        finding
        for path in files
        for finding in scan_source(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    ]
    assert findings == [], "\n".join(map(str, findings))


# --- a project whose configs look like shell, Python and Jinja ------------------------------

PAYLOAD = (
    "$(touch pwned-dollar) `touch pwned-backtick`; touch pwned-semicolon | {{ 7*7 }} ${HOME} "
    "__import__('os').system('touch pwned-python') %(x)s {0}"
)
SHELLY_SOURCE = "m; touch pwned-src $(touch pwned-src2).onnx"
SHELLY_MICROCODE = "`touch pwned-mc`.tsk"


def toml_string(text: str) -> str:
    return json.dumps(text)  # a JSON string of printable ASCII is a valid TOML basic string


def make_project(root: Path, config: str) -> Path:
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "art").mkdir()
    relu_model(root / "models" / "m.onnx")
    (root / "art" / "m.tsk").write_bytes(CHAIN)
    (root / "dodo.py").write_text("from ane_build.dodo import *  # noqa: F403\n")
    (root / "configs" / "m.toml").write_text(config, encoding="utf-8")
    return root


def no_pwned(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob("pwned*")]


def test_config_values_and_paths_are_data_not_commands(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    config = (
        f"source = {toml_string('models/' + SHELLY_SOURCE)}\n"
        f"toolchain = {toml_string(PAYLOAD)}\n"
        f"[artifacts]\nmicrocode = {toml_string('art/' + SHELLY_MICROCODE)}\n"
    )
    make_project(root, config)
    (root / "models" / "m.onnx").rename(root / "models" / SHELLY_SOURCE)
    (root / "art" / "m.tsk").rename(root / "art" / SHELLY_MICROCODE)

    proc = subprocess.run(
        [sys.executable, "-m", "doit", "convert"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    meta = parse_ane_metadata(root / "build" / "m_ane.onnx")
    assert meta.toolchain == PAYLOAD  # stored verbatim: nothing expanded, formatted or rendered
    assert no_pwned(tmp_path) == []


def test_doit_actions_are_python_callables_never_command_strings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # doit runs a string action through the shell, with task values formatted into it.
    root = make_project(
        tmp_path / "proj", 'source = "models/m.onnx"\n[artifacts]\nmicrocode = "art/m.tsk"\n'
    )
    monkeypatch.chdir(root)
    set_context(BuildContext(root))
    try:
        generated = [
            *tasks.gen_example(),
            *tasks.gen_compile(),
            *tasks.gen_convert(),
            *tasks.gen_verify(),
            *tasks.gen_deploy(),
            tasks.gen_orphans(),
            tasks.gen_smoke(),
        ]
    finally:
        set_context(None)
    actions = [action for task in generated for action in task.get("actions") or ()]
    assert len(actions) >= 4  # convert, verify, deploy, smoke
    for action in actions:
        func = action[0] if isinstance(action, tuple) else action
        assert callable(func) and not isinstance(func, str | bytes | list), action


@pytest.mark.parametrize("name", ["a;b", "$(x)", "a b", "`x`"])
def test_model_names_cannot_carry_shell_syntax(tmp_path: Path, name: str) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / f"{name}.toml").write_text('source = "m.onnx"\n')
    with pytest.raises(ConfigError, match="invalid model name"):
        load_project(tmp_path)


# --- bundles are data ------------------------------------------------------------------------


def convert_bundle(tmp_path: Path, doc: dict[str, object]) -> tuple[int, str]:
    source = relu_model(tmp_path / "model.onnx")
    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps(doc))
    code = convert_main([str(source), "--bundle", str(bundle), "-o", str(tmp_path / "out.onnx")])
    return code, str(tmp_path / "out.onnx")


@pytest.mark.parametrize(
    "payload",
    [
        "__import__('os').system('touch pwned')",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}{% for x in range(9**9) %}{% endfor %}",
        "!!python/object/apply:os.system ['touch pwned']",
        "$(touch pwned)",
    ],
)
def test_bundle_code_in_a_payload_field_is_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], payload: str
) -> None:
    code, output = convert_bundle(tmp_path, {"microcode_b64": payload})
    err = capsys.readouterr().err
    assert code == 1
    assert "microcode_b64: not base64 as the kernel reads it" in err
    assert not Path(output).exists()
    assert no_pwned(tmp_path) == []


@pytest.mark.parametrize(
    "payload",
    [
        "{{ 7*7 }}",
        "{% for x in ().__class__.__base__.__subclasses__() %}{{ x }}{% endfor %}",
        "__import__('os').system('touch pwned')",
        "!!python/object/apply:os.system ['touch pwned']",
        "${HOME} $(touch pwned) %(name)s {0}",
    ],
)
def test_bundle_text_fields_are_kept_as_data_and_unknown_fields_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], payload: str
) -> None:
    doc = {"microcode_b64": base64.b64encode(CHAIN).decode(), "toolchain": payload}
    code, output = convert_bundle(tmp_path, doc)
    assert code == 0, capsys.readouterr().err
    assert parse_ane_metadata(output).toolchain == payload
    assert read_ane_payloads(output).microcode == CHAIN
    Path(output).unlink()
    hostile = {**doc, "__class__": payload, "__proto__": {"polluted": payload}, "exec": payload}
    code, output = convert_bundle(tmp_path, hostile)
    err = capsys.readouterr().err
    assert code == 1 and not Path(output).exists()
    assert "__class__" in err and "__proto__" in err and "exec" in err
    assert no_pwned(tmp_path) == []


# --- paths cannot leave the project root unless the config allows it ------------------------


@dataclass(frozen=True)
class Escape:
    """A project with one path leaving the root; ``key`` is what the refusal names."""

    id: str
    config: str
    key: str
    output: str = "build/m_ane.onnx"

    def setup(self, root: Path, outside: Path) -> None:
        if self.id == "artefact-symlink":
            (root / "art" / "ln.tsk").symlink_to(outside / "m.tsk")
        elif self.id == "discovered-symlink":
            (root / "found").mkdir()
            (root / "found" / "x.tsk").symlink_to(outside / "m.tsk")
        elif self.id.startswith("external-data"):
            location = {
                "external-data-dotdot": "../../outside/w.bin",
                "external-data-absolute": str(outside / "w.bin"),
                "external-data-symlink": "w.bin",
            }[self.id]
            if self.id == "external-data-symlink":
                (root / "models" / "w.bin").symlink_to(outside / "w.bin")
            external_data_model(root / "models" / "m.onnx", location)


ESCAPES = [
    Escape("artefact-dotdot", 'microcode = "../outside/m.tsk"', "artifacts.microcode"),
    Escape("artefact-symlink", 'microcode = "art/ln.tsk"', "artifacts.microcode"),
    Escape("artefact-absolute", 'microcode = "{outside}/m.tsk"', "artifacts.microcode"),
    Escape("discovered-symlink", 'root = "found"', "found/x.tsk"),
    Escape("source-dotdot", 'microcode = "art/m.tsk"', "source", output="build/m_ane.onnx"),
    Escape("output-dotdot", 'microcode = "art/m.tsk"', "output", output="../outside/m_ane.onnx"),
    # External data must sit next to the output for onnx to load it, so these write there.
    Escape("external-data-dotdot", 'microcode = "art/m.tsk"', "source", "models/m_ane.onnx"),
    Escape("external-data-absolute", 'microcode = "art/m.tsk"', "source", "models/m_ane.onnx"),
    Escape("external-data-symlink", 'microcode = "art/m.tsk"', "source", "models/m_ane.onnx"),
]


def escape_project(tmp_path: Path, escape: Escape, allow: bool) -> tuple[Path, Path]:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "m.tsk").write_bytes(CHAIN)
    (outside / "w.bin").write_bytes(bytes(256))
    relu_model(outside / "m.onnx")
    source = "../outside/m.onnx" if escape.id == "source-dotdot" else "models/m.onnx"
    config = (
        f"allow_outside_root = {'true' if allow else 'false'}\n"
        f'source = "{source}"\noutput = "{escape.output}"\n'
        f"[artifacts]\n{escape.config.format(outside=outside)}\n"
    )
    root = make_project(tmp_path / "proj", config)
    escape.setup(root, outside)
    return root, outside


def build(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """``doit convert`` in this process (doit's state lives in the working folder)."""
    monkeypatch.chdir(root)
    code = run_doit(root, ["convert"])
    out, err = capsys.readouterr()
    return code, out + err


@pytest.mark.parametrize("escape", ESCAPES, ids=[e.id for e in ESCAPES])
def test_paths_leaving_the_root_are_refused_by_default(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    escape: Escape,
) -> None:
    root, outside = escape_project(tmp_path, escape, allow=False)
    before = sorted(p.name for p in outside.iterdir())

    code, text = build(root, monkeypatch, capsys)

    assert code != 0, text
    assert "outside the project root" in text and escape.key in text, text
    assert "Traceback" not in text
    assert not (root / escape.output).exists()
    assert sorted(p.name for p in outside.iterdir()) == before  # nothing written outside


@pytest.mark.parametrize("escape", ESCAPES, ids=[e.id for e in ESCAPES])
def test_paths_leaving_the_root_build_when_the_config_allows_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    escape: Escape,
) -> None:
    root, _ = escape_project(tmp_path, escape, allow=True)

    code, text = build(root, monkeypatch, capsys)

    assert code == 0, text
    meta = parse_ane_metadata(root / escape.output)
    assert meta.td_count == 2


def test_external_data_outside_the_model_folder_never_goes_next_to_another_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Even when allowed, a container in another folder would name data onnx refuses to load.
    escape = Escape("external-data-dotdot", 'microcode = "art/m.tsk"', "source")
    root, _ = escape_project(tmp_path, escape, allow=True)

    code, text = build(root, monkeypatch, capsys)

    assert code == 1, text
    assert "external data locations must be relative paths inside the model's folder" in text
    assert "'../../outside/w.bin'" in text
    assert not (root / "build" / "m_ane.onnx").exists()


@pytest.mark.parametrize(
    ("location", "safe"),
    [
        ("w.bin", True),
        ("data/w.bin", True),
        ("", False),
        ("../w.bin", False),
        ("data/../../w.bin", False),
        ("/etc/passwd", False),
        ("C:\\weights.bin", False),
        ("C:weights.bin", False),
        ("\\\\server\\share\\w.bin", False),
        ("..\\w.bin", False),
    ],
)
def test_safe_external_data_locations(location: str, safe: bool) -> None:
    assert safe_location(location) is safe
