"""Ctrl-C anywhere prints one line and ends with SIGINT's status, never a traceback (issue 9)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from ane_build.build.state import project_lock
from tests.helpers import default_sigint, make_project, wait_for


def _interrupt(cmd: list[str], cwd: Path, ready: str, timeout: float = 60) -> tuple[int, str]:
    """Start ``cmd``, wait until its stderr or stdout shows ``ready``, send SIGINT."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # A test runner may ignore SIGINT; the child must see it as a user would.
        preexec_fn=default_sigint,
    )
    seen: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        seen.append(line)
        if ready in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=timeout)
    return proc.returncode, "".join(seen) + rest


def test_doit_waiting_for_the_lock(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    make_project(root, models=1, weights=1024)
    with project_lock(root, wait_message=False):
        code, out = _interrupt([sys.executable, "-m", "doit"], root, "waiting for the build lock")
    assert code in (130, -signal.SIGINT), out
    assert "Traceback" not in out
    assert out.rstrip().endswith("interrupted while waiting for the build lock")


def test_doit_during_a_task(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    make_project(root, models=2, weights=64 << 20)
    code, out = _interrupt([sys.executable, "-m", "doit", "-v", "2"], root, "convert:m0:")
    assert code == -signal.SIGINT, out
    assert "Traceback" not in out and out.rstrip().endswith("doit: interrupted")
    # Nothing half-written: no temp file is left and no container is partial.
    assert not [p for p in root.rglob(".*.tmp")]


def test_convert_to_ane_while_writing(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    make_project(root, models=1, weights=512 << 20)
    argv = ["convert-to-ane", "models/m0.onnx", "--anec", "compiler-out/m0/m0.anec", "-o", "o.onnx"]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from ane_build.cli import convert_main; "
            "sys.exit(convert_main(sys.argv[1:]))",
            *argv[1:],
        ],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    # Interrupt once the output's temp file exists: the writer is mid-way.
    wait_for("the convert to start writing", lambda: list(root.glob(".o.onnx.*.tmp")) or None)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert err.rstrip() == "convert-to-ane: interrupted" and "Traceback" not in out + err
    assert not (root / "o.onnx").exists() and not list(root.glob(".o.onnx.*"))
