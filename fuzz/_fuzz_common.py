"""Helpers shared by the atheris entry points; standard library only, atheris optional.

Each ``fuzz_*.py`` script defines ``TestOneInput(data)`` (importable without atheris, so a pytest
test can run it) and ``seeds()`` (valid inputs the fuzzer starts from). The property is the same
everywhere: a target either returns or raises an ``ane_build`` error (`AneError`); any other
exception escapes and libFuzzer reports a crash. `guarded` also fails a call that takes longer
than ``FUZZ_CALL_BUDGET_S`` seconds (default 2) or whose traced allocation peak exceeds
``64 x input size + 1 MiB`` (set ``FUZZ_TRACEMALLOC=0`` to skip that check for speed).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

T = TypeVar("T")

MEM_FACTOR = 64
MEM_SLACK = 1 << 20
CALL_BUDGET = float(os.environ.get("FUZZ_CALL_BUDGET_S", "2"))
CHECK_MEMORY = os.environ.get("FUZZ_TRACEMALLOC", "1") != "0"
REPO = Path(__file__).resolve().parents[1]


def _atheris() -> ModuleType | None:
    try:
        import atheris  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return None
    return atheris  # type: ignore[no-any-return]


def instrumented(enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """Instrument ``ane_build`` imports for coverage when fuzzing for real (atheris present)."""
    atheris = _atheris() if enabled else None
    if atheris is None:
        return contextlib.nullcontext()
    return atheris.instrument_imports(include=["ane_build"])  # type: ignore[no-any-return]


def guarded(call: Callable[[], T], size: int) -> T | Exception:
    """Run ``call`` on an input of ``size`` bytes; return its result or the AneError it raised.

    Any other exception propagates (that is the finding). Also asserts the time and memory
    budgets described in the module docstring.
    """
    from ane_build.errors import AneError

    if CHECK_MEMORY and not tracemalloc.is_tracing():
        # Traced for the whole run: starting and stopping per call fragments the heap, and
        # libFuzzer would report the growing RSS as an out-of-memory crash.
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    start = time.perf_counter()
    try:
        result: T | Exception = call()
    except AneError as exc:
        result = exc
    finally:
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] - before if CHECK_MEMORY else 0
    if elapsed > CALL_BUDGET:
        raise AssertionError(f"call took {elapsed:.2f} s on a {size}-byte input")
    if peak > MEM_FACTOR * size + MEM_SLACK:
        raise AssertionError(f"peak allocation {peak} bytes on a {size}-byte input")
    return result


class Input:
    """A tiny FuzzedDataProvider: take a few control bytes from the front, keep the rest."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        """The next byte (0 once the input is used up)."""
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def uint(self, size: int) -> int:
        """The next ``size`` bytes as a little-endian unsigned integer."""
        return int.from_bytes(bytes(self.byte() for _ in range(size)), "little")

    def rest(self) -> bytes:
        """Everything not consumed yet."""
        return self.data[self.pos :]


_SCRATCH: list[Path] = []


def scratch_file(name: str, data: bytes) -> Path:
    """Write ``data`` to ``name`` in a private temp folder (reused; removed at exit)."""
    if not _SCRATCH:
        folder = Path(tempfile.mkdtemp(prefix="ane-fuzz-"))
        atexit.register(shutil.rmtree, folder, True)
        _SCRATCH.append(folder)
    path = _SCRATCH[0] / name
    path.write_bytes(data)
    return path


def sample_files() -> Iterator[Path]:
    """Real ``.anec`` samples beside the checkout (``ANE_SAMPLES_DIR``), read in place."""
    env = os.environ.get("ANE_SAMPLES_DIR")
    folder = Path(env) if env else REPO.parent / "shared" / "anec-samples"
    if folder.is_dir():
        yield from sorted(folder.glob("*.ane"))


def prepare_corpus(argv: list[str], seeds: Iterable[bytes]) -> None:
    """Write ``seeds`` into every empty corpus folder named on the command line."""
    for arg in argv[1:]:
        if arg.startswith("-") or not os.path.isdir(arg) or os.listdir(arg):
            continue
        for k, seed in enumerate(seeds):
            Path(arg, f"seed-{k:03d}").write_bytes(seed)


def require_atheris() -> ModuleType:
    """The atheris module, or exit with a hint when it is not installed."""
    atheris = _atheris()
    if atheris is None:
        sys.exit("atheris is not installed: pip install atheris")
    return atheris


def run(test_one_input: Callable[[bytes], None], seeds: Iterable[bytes]) -> None:
    """Fuzz ``test_one_input`` with atheris (libFuzzer flags and corpus folders from argv)."""
    atheris = require_atheris()
    prepare_corpus(sys.argv, seeds)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
