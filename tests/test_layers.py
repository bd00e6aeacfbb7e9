"""The import rules of DESIGN section 2, checked on the source."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ane_build"
DOIT_LEVEL = {"tasks", "dodo", "doitplugins", "cli", "__main__"}
WATCHDOG_LEVEL = {"watch", "tasks", "cli", "__main__"}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                found.add("ane_build." + base if base else "ane_build")
                found.update(f"ane_build.{alias.name}" for alias in node.names if not base)
            else:
                found.add(base)
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_import_direction(path: Path) -> None:
    name = path.stem
    found = imports(path)
    top = {i.split(".")[0] for i in found}
    if name not in DOIT_LEVEL:
        assert "doit" not in top, f"{name} must not import doit"
    if name not in WATCHDOG_LEVEL:
        assert "watchdog" not in top, f"{name} must not import watchdog"
    assert "ane_build.cli" not in found or name == "__main__" or name == "doitplugins"
    if name == "uapi":
        assert top <= {"__future__", "ctypes"}


def test_importing_has_no_side_effects() -> None:
    code = (
        "import logging, sys, threading\n"
        "before = threading.active_count()\n"
        "import ane_build, ane_build.device, ane_build.simulator, ane_build.tasks, ane_build.dodo\n"
        "import ane_build.watch, ane_build.container, ane_build.chat, ane_build.cli\n"
        "assert threading.active_count() == before, 'a thread was started on import'\n"
        "assert not logging.getLogger().handlers, 'logging was configured on import'\n"
        "assert 'onnxruntime' not in sys.modules, 'the chat extra was imported eagerly'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
