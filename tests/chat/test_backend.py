"""The decoder backends: choosing one, the ane backend through the chat stack, the example."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ane_build.chat.backend import AneDecoder, choose_backend, open_decoder
from ane_build.chat.errors import ChatError
from ane_build.chat.model import CausalLM
from ane_build.chat.sampling import SamplingConfig
from ane_build.chat.session import ChatModel, ChatSession
from tests.helpers import tiny_split

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "tinyllama_chat.py"
GREEDY = SamplingConfig(temperature=0.0)


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_split(tmp_path_factory.mktemp("backend"))


def test_choose_backend(split_dir: Path) -> None:
    model = split_dir.parent / "model"
    assert choose_backend(split_dir) == "ane"
    assert choose_backend(model) == "ort"
    assert choose_backend(model, "ane") == "ane" and choose_backend(split_dir, "ort") == "ort"


def test_ane_needs_a_split_folder(split_dir: Path) -> None:
    with pytest.raises(ChatError, match=r"manifest\.json"):
        open_decoder(split_dir.parent / "model", backend="ane")
    lm = open_decoder(split_dir.parent / "model")
    assert isinstance(lm, CausalLM) and lm.where() == "all layers on the CPU (onnxruntime)"


def test_chat_sessions_agree_across_backends(split_dir: Path) -> None:
    ort = ChatModel.load(split_dir.parent / "model", threads=1)
    ane = ChatModel.load(split_dir, backend="auto", device="auto", threads=1)
    try:
        assert isinstance(ane.lm, AneDecoder)
        # Synthetic containers go to the simulator even when "auto" could find hardware.
        assert ane.lm.device is not None and ane.lm.device.is_simulated
        assert ane.context_window == 64 and "2 block chunk(s)" in ane.describe()
        assert "on the ANE simulator" in ane.lm.where()
        sessions = [ChatSession(m, sampling=GREEDY, max_new_tokens=6) for m in (ort, ane)]
        for text in ("Hello there.", "Tell me more."):
            answers = ["".join(s.ask(text)) for s in sessions]
            assert answers[0] == answers[1]
        assert sessions[1].last_stats is not None and sessions[1].last_stats.reused_tokens > 0
    finally:
        ane.close()
        ort.close()


def test_a_split_without_containers_runs_its_chunks_on_the_cpu(
    split_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "s"
    shutil.copytree(split_dir, folder)
    for container in folder.glob("*_ane.onnx"):
        container.unlink()
    lm = open_decoder(folder)
    try:
        assert isinstance(lm, AneDecoder) and lm.device is None
        assert "the CPU (onnxruntime)" in lm.where() and "ANE" not in lm.where()
    finally:
        lm.close()


def run_example(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args, "--temperature", "0", "--max-new-tokens", "6"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_demo_runs_on_both_backends_with_the_same_answer(tmp_path: Path) -> None:
    ane = run_example(tmp_path, "--backend", "ane", "--prompt", "Why is the sky blue?")
    assert ane.returncode == 0, ane.stderr
    assert (
        "chunks: embed on the CPU (onnxruntime); block_0, block_1, head_0 on the ANE simulator"
        in ane.stderr
    )
    assert "not hardware results" in ane.stderr
    assert (tmp_path / "build" / "tiny-llama" / "chunks" / "block_0.decode_ane.onnx").is_file()
    ort = run_example(tmp_path, "--backend", "ort", "--prompt", "Why is the sky blue?")
    assert ort.returncode == 0, ort.stderr
    assert "all layers on the CPU (onnxruntime)" in ort.stderr
    assert ane.stdout == ort.stdout and ane.stdout.strip()
    again = run_example(tmp_path, "--backend", "ane", "--prompt", "Why is the sky blue?")
    assert "split up to date" in again.stderr and again.stdout == ane.stdout


def test_the_example_takes_a_split_folder(split_dir: Path, tmp_path: Path) -> None:
    done = run_example(tmp_path, str(split_dir), "--device", "sim", "--prompt", "Hi")
    assert done.returncode == 0, done.stderr
    assert "Backend ane" in done.stderr and "ANE simulator" in done.stderr
    long = run_example(tmp_path, str(split_dir), "--device", "sim", "--prompt", "word " * 80)
    assert long.returncode == 1 and "context window is 64" in long.stderr
