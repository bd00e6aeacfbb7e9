"""The layering rules of the package (docs/architecture.md), checked on every import in the source.

Every ``import`` and ``from ... import`` is read with `ast`, at module level and inside functions
(``TYPE_CHECKING`` blocks included), resolved to a module of the package and checked: no cycle
between modules, no import that goes up the layer order, doit and watchdog only where the build
layer needs them, the kernel ABI mirror on the standard library only, nothing importing the command
line. The checker is run on a planted package too, to show it fails where it must.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ane_build"

# Bottom to top. A unit is a subpackage or a top-level module; a module may import its own unit
# and units listed before it, nothing else.
ORDER = (
    "errors",
    "_typing",
    "_resource",
    "_fs",
    "_validation",
    "driver",
    "formats",
    "container",
    "artifacts",
    "synthetic",
    "run",
    "check",
    "convert",
    "deploy",
    "llm",
    "build",
    "chat",
    "cli",
    "dodo",
    "__main__",
    "__init__",
)
# Third-party packages only some units may import.
RESTRICTED = {
    "doit": {"build", "cli"},
    "watchdog": {"build"},
}
# Modules by their name inside the package.
STDLIB_ONLY = {"driver.uapi"}
WATCHDOG_MODULES = {"build.watch"}


def module_name(path: Path, root: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1] or ["__init__"]
        if parts == ["__init__"]:
            return package
    return ".".join([package, *parts])


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imports_of(path: Path, name: str, modules: set[str]) -> set[str]:
    """Every module ``path`` imports (absolute dotted names), at any depth of the file."""
    found: set[str] = set()
    base = name.split(".") if is_package(path) else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                target = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                target = node.module or ""
            subs = {f"{target}.{alias.name}" for alias in node.names}
            # `from pkg import sub` imports the submodule; the package itself only counts when a
            # name is not a submodule (importing a submodule runs its parents, never a cycle).
            found.update(subs & modules)
            if subs - modules:
                found.add(target)
    return found


def unit_of(module: str, package: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def scan(root: Path, package: str) -> dict[str, set[str]]:
    """Module name -> the package modules it imports."""
    modules = {module_name(p, root, package): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for target in imports_of(path, name, set(modules)):
            if target in modules:
                targets.add(target)
        graph[name] = targets - {name}
    return graph


def third_party(root: Path, package: str) -> dict[str, set[str]]:
    """Module name -> top-level names of what it imports from outside the package."""
    out: dict[str, set[str]] = {}
    paths = sorted(root.rglob("*.py"))
    modules = {module_name(p, root, package) for p in paths}
    for path in paths:
        name = module_name(path, root, package)
        tops = {t.split(".")[0] for t in imports_of(path, name, modules)}
        out[name] = {t for t in tops if t and t != package}
    return out


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules, each as a cycle to show."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def violations(root: Path, package: str, order: tuple[str, ...] = ORDER) -> list[str]:
    """Every broken rule, one line each, naming the edge."""
    graph = scan(root, package)
    rank = {unit: k for k, unit in enumerate(order)}
    problems = [f"import cycle: {' <-> '.join(group)}" for group in find_cycles(graph)]
    for module, targets in sorted(graph.items()):
        here = unit_of(module, package)
        if here not in rank:
            problems.append(f"{module}: unit {here!r} is not in the layer order")
            continue
        for target in sorted(targets):
            there = unit_of(target, package)
            if there == here:
                continue
            if there not in rank or rank[there] > rank[here]:
                problems.append(f"upward import: {module} -> {target} ({here} < {there})")
            if there == "cli" and here not in ("cli", "__main__"):
                problems.append(f"{module} imports the command line ({target})")
    for module, tops in sorted(third_party(root, package).items()):
        here = unit_of(module, package)
        for lib, allowed in RESTRICTED.items():
            if lib in tops and here not in allowed:
                problems.append(f"{module} imports {lib}; only {sorted(allowed)} may")
        inner = module.removeprefix(f"{package}.")
        if "watchdog" in tops and inner not in WATCHDOG_MODULES:
            problems.append(f"{module} imports watchdog; only {sorted(WATCHDOG_MODULES)} may")
        if inner in STDLIB_ONLY and not tops <= set(sys.stdlib_module_names) | {"__future__"}:
            problems.append(f"{module} must import the standard library only: {sorted(tops)}")
    return problems


def test_the_package_follows_its_layers() -> None:
    problems = violations(PACKAGE, "ane_build")
    assert not problems, "\n".join(problems)


def test_every_unit_of_the_package_is_in_the_order() -> None:
    units = {
        unit_of(module_name(p, PACKAGE, "ane_build"), "ane_build") for p in PACKAGE.rglob("*.py")
    }
    assert units <= set(ORDER), sorted(units - set(ORDER))


def plant(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_a_planted_cycle_is_found(tmp_path: Path) -> None:
    pkg = plant(
        tmp_path,
        {
            "__init__.py": "",
            "driver/__init__.py": "",
            "driver/a.py": "from . import b\n",
            "driver/b.py": "def f():\n    from .a import x\n",  # function level counts
        },
    )
    assert violations(pkg, "pkg") == ["import cycle: pkg.driver.a <-> pkg.driver.b"]


def test_a_planted_upward_import_is_found(tmp_path: Path) -> None:
    pkg = plant(
        tmp_path,
        {
            "__init__.py": "",
            "driver/__init__.py": "",
            "driver/dev.py": "from ..formats.tiling import tile\n",
            "formats/__init__.py": "",
            "formats/tiling.py": "import doit\nfrom ..cli import main\n",
            "cli/__init__.py": "",
        },
    )
    assert violations(pkg, "pkg") == [
        "upward import: pkg.driver.dev -> pkg.formats.tiling (driver < formats)",
        "upward import: pkg.formats.tiling -> pkg.cli (formats < cli)",
        "pkg.formats.tiling imports the command line (pkg.cli)",
        "pkg.formats.tiling imports doit; only ['build', 'cli'] may",
    ]


def test_the_abi_mirror_may_import_only_the_standard_library(tmp_path: Path) -> None:
    files = {"__init__.py": "", "driver/__init__.py": "", "driver/uapi.py": "import ctypes\n"}
    assert violations(plant(tmp_path / "ok", files), "pkg") == []
    files["driver/uapi.py"] += "import numpy\n"
    assert violations(plant(tmp_path / "bad", files), "pkg") == [
        "pkg.driver.uapi must import the standard library only: ['ctypes', 'numpy']"
    ]


@pytest.mark.parametrize("extra", [[], ["ane_build.chat"]])
def test_importing_any_module_has_no_side_effects(extra: list[str]) -> None:
    modules = sorted(
        module_name(p, PACKAGE, "ane_build")
        for p in PACKAGE.rglob("*.py")
        if p.name != "__main__.py"
    )
    code = (
        "import importlib, logging, sys, threading\n"
        "before = threading.active_count()\n"
        f"for name in {modules + extra!r}:\n"
        "    importlib.import_module(name)\n"
        "assert threading.active_count() == before, 'a thread was started on import'\n"
        "assert not logging.getLogger().handlers, 'logging was configured on import'\n"
        "heavy = {'onnxruntime', 'tokenizers', 'jinja2'} & set(sys.modules)\n"
        "assert not heavy, f'imported eagerly: {heavy}'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
