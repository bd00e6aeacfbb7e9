"""The chunked decoder on the simulator against the ONNX export of the same checkpoint.

The reference is `CausalLM` (the ``ort`` backend) on ``model.onnx``, which `chat.tiny` authors
separately from the chunk graphs; the chunks run as ANE programs on the simulator (outputs
computed from each container's graph in fp16). Greedy tokens agree as long as the reference's
top-two margin stays above fp16's resolution of the logits, which holds for these prompts.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ane_build.chat.backend import AneDecoder
from ane_build.chat.errors import ChatError
from ane_build.chat.generate import TokenGenerator
from ane_build.chat.session import ChatModel
from ane_build.driver.device import ANEDevice
from ane_build.driver.simulator import SimulatedKernel
from ane_build.llm.chunks import ON_CPU, ON_SIMULATOR, AneChunk
from ane_build.llm.errors import ContextFullError, ManifestError
from ane_build.llm.runtime import ChunkedDecoder
from tests.helpers import tiny_split

PROMPTS = (
    "Why is the sky blue?",
    "Write a haiku about the sea.",
    "What is 12 times 7?",
    "Name three colours.",
    "Tell me a short story about a robot who learns to paint, in two sentences.",
)
NEW_TOKENS = 16


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> ChatModel:
    return ChatModel.load(model_dir, threads=1)


@pytest.fixture
def kernel() -> SimulatedKernel:
    return SimulatedKernel()


@pytest.fixture
def ane(split_dir: Path, kernel: SimulatedKernel) -> Iterator[AneDecoder]:
    decoder = AneDecoder(split_dir, device=ANEDevice.simulated(kernel=kernel), threads=1)
    try:
        yield decoder
    finally:
        decoder.close()
    assert kernel.live_bos == 0


def prompt_ids(model: ChatModel, text: str) -> list[int]:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]
    return model.tokenizer.encode(model.template.render(messages))  # type: ignore[arg-type]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_greedy_tokens_and_logits_match_the_export(
    reference: ChatModel, ane: AneDecoder, kernel: SimulatedKernel
) -> None:
    worst = 1.0
    for text in PROMPTS:
        ids = prompt_ids(reference, text)
        ort_cache, ane_cache = reference.lm.new_cache(), ane.new_cache()
        ours = ane.forward(ane_cache, ids).copy()
        theirs = reference.lm.forward(ort_cache, ids).copy()  # type: ignore[arg-type]
        ours_tokens, theirs_tokens = [], []
        for _ in range(NEW_TOKENS):
            worst = min(worst, cosine(ours, theirs))
            ours_tokens.append(int(np.argmax(ours)))
            theirs_tokens.append(int(np.argmax(theirs)))
            ours = ane.forward(ane_cache, ours_tokens[-1:]).copy()
            theirs = reference.lm.forward(ort_cache, theirs_tokens[-1:]).copy()  # type: ignore[arg-type]
        assert ours_tokens == theirs_tokens, text
    assert worst >= 0.999
    placement = ane.chunks.placement()
    assert placement.pop("embed") == ON_CPU
    assert set(placement.values()) == {ON_SIMULATOR}
    # Every chunk output came from the simulator evaluating the container's graph.
    assert len(kernel.submits) == sum(ane.chunks.stats.runs.values())
    assert all(record.outputs and record.evaluation_error is None for record in kernel.submits)
    runs = ane.chunks.stats.runs
    assert runs["block_0.prefill"] > 0 and runs["block_1.decode"] > 0 and runs["head_0.decode"] > 0


def test_multi_turn_with_cache_reuse(reference: ChatModel, ane: AneDecoder) -> None:
    first = prompt_ids(reference, PROMPTS[0])
    ours, theirs = TokenGenerator(ane), TokenGenerator(reference.lm)
    answer = list(ours.generate(first, max_new_tokens=8))
    assert answer == list(theirs.generate(first, max_new_tokens=8))
    follow = first + answer + prompt_ids(reference, "And at night?")[1:]
    second = list(ours.generate(follow, max_new_tokens=8))
    assert ours.last_stats.reused_tokens == len(first) + len(answer) - 1
    assert second == list(theirs.generate(follow, max_new_tokens=8))
    # A prompt that leaves the cached path keeps only the common prefix, and is still right.
    diverged = prompt_ids(reference, PROMPTS[2])
    cached = follow + second[:-1]
    common = next(i for i, (a, b) in enumerate(zip(cached, diverged, strict=False)) if a != b)
    assert 0 < common < len(first)
    third = list(ours.generate(diverged, max_new_tokens=8))
    assert ours.last_stats.reused_tokens == common
    assert third == list(TokenGenerator(reference.lm).generate(diverged, max_new_tokens=8))


@pytest.mark.parametrize("length", [1, 8, 11, 19])
def test_prefill_blocks_ending_mid_prompt(
    reference: ChatModel, ane: AneDecoder, length: int
) -> None:
    ids = prompt_ids(reference, PROMPTS[4])[:length]
    assert len(ids) == length
    prefilled = ane.forward(ane.new_cache(), ids).copy()
    blocks = -(-length // 8) if length > 1 else 0
    assert ane.chunks.stats.runs["block_0.prefill"] == blocks
    theirs = reference.lm.forward(reference.lm.new_cache(), ids)  # type: ignore[arg-type]
    assert cosine(prefilled, theirs) >= 0.999
    if length == 11:
        # One full block and one of 3 positions, against the decode programs one at a time.
        stepped_cache = ane.new_cache()
        for token in ids:
            stepped = ane.forward(stepped_cache, [token])
        assert cosine(prefilled, stepped) >= 0.999
        assert np.abs(prefilled - stepped).max() <= 0.05


def test_a_context_that_fills_up(tmp_path: Path, reference: ChatModel, model_dir: Path) -> None:
    shutil.copytree(model_dir, tmp_path / "model")
    split = tiny_split(tmp_path, context=24)
    ids = prompt_ids(reference, "Hi")
    assert len(ids) < 24
    decoder = AneDecoder(split, device=ANEDevice.simulated(), threads=1)
    try:
        ours = TokenGenerator(decoder, context_window=24)
        tokens = list(ours.generate(ids, max_new_tokens=100))
        assert ours.last_stats.stop_reason == "context"
        assert decoder.chunks.length == 24
        theirs = list(
            TokenGenerator(reference.lm, context_window=24).generate(ids, max_new_tokens=100)
        )
        assert tokens == theirs
        with pytest.raises(ContextFullError, match="context of 24"):
            decoder.chunks.forward([5])
        with pytest.raises(ChatError, match="context of 24"):
            decoder.forward(ours.cache, [5])  # type: ignore[arg-type]
        assert decoder.chunks.length == 24
    finally:
        decoder.close()


def _bo(chunk: AneChunk, name: str) -> bytes:
    slot = next(s for s, io in chunk.program.io.items() if io.name == name)
    return chunk.program.buffers[slot].read()


def test_decode_updates_the_cache_in_place_new_rows_only(
    reference: ChatModel, ane: AneDecoder, kernel: SimulatedKernel
) -> None:
    cache = ane.new_cache()
    logits = ane.forward(cache, prompt_ids(reference, PROMPTS[1]))
    logits = ane.forward(cache, [int(np.argmax(logits))])
    block = ane.chunks.decode[0]
    assert isinstance(block, AneChunk)
    before = {name: _bo(block, name) for name in ("key_cache.0", "value_cache.0", "mask")}
    inits = kernel.counters["DRM_IOCTL_ANE_BO_INIT"], kernel.counters["DRM_IOCTL_ANE_BO_FREE"]
    submits = kernel.counters["DRM_IOCTL_ANE_SUBMIT"]
    position = ane.chunks.length
    ane.forward(cache, [int(np.argmax(logits))])
    assert (
        kernel.counters["DRM_IOCTL_ANE_BO_INIT"],
        kernel.counters["DRM_IOCTL_ANE_BO_FREE"],
    ) == inits
    assert kernel.counters["DRM_IOCTL_ANE_SUBMIT"] == submits + 3
    io = {io.name: io for io in block.program.io.values()}
    for name in ("key_cache.0", "value_cache.0"):
        after = _bo(block, name)
        changed = {i for i, (a, b) in enumerate(zip(before[name], after, strict=True)) if a != b}
        spec = io[name]
        allowed = {
            plane * spec.plane_stride + position * spec.row_stride + byte
            for plane in range(spec.c)
            for byte in range(spec.w * 2)
        }
        assert changed and changed <= allowed, name
    # The mask opens exactly one column: the position the previous step wrote.
    after = _bo(block, "mask")
    changed = {i for i, (a, b) in enumerate(zip(before["mask"], after, strict=True)) if a != b}
    assert changed <= {2 * (position - 1), 2 * (position - 1) + 1} and changed


def test_bytes_per_token_do_not_grow_with_the_context(
    reference: ChatModel, ane: AneDecoder
) -> None:
    cache = ane.new_cache()
    prompt = prompt_ids(reference, PROMPTS[0])
    logits = ane.forward(cache, prompt)
    # The first decode step copies the prompt's rows into the decode programs, once.
    ane.chunks.reset_counters()
    logits = ane.forward(cache, [int(np.argmax(logits))])
    first = ane.chunks.stats.bytes_written
    per_step = []
    for _ in range(12):
        ane.chunks.reset_counters()
        logits = ane.forward(cache, [int(np.argmax(logits))])
        per_step.append((ane.chunks.stats.bytes_written, ane.chunks.stats.bytes_read))
    assert len(set(per_step)) == 1, per_step
    spec = ane.chunks.spec
    rows = len(prompt) * spec.num_layers * 2 * spec.num_kv_heads * spec.head_dim * 2
    assert first == per_step[0][0] + rows + len(ane.chunks.decode) * 2 * (len(prompt) - 1)


def test_a_chunk_without_container_runs_on_onnxruntime(
    tmp_path: Path, split_dir: Path, reference: ChatModel
) -> None:
    shutil.copytree(split_dir, tmp_path / "s")
    (tmp_path / "s" / "block_1.decode_ane.onnx").unlink()
    ids = prompt_ids(reference, PROMPTS[3])
    with ChunkedDecoder(tmp_path / "s", device=ANEDevice.simulated(), threads=1) as mixed:
        assert mixed.placement()["block_1.decode"] == ON_CPU
        assert mixed.placement()["block_1.prefill"] == ON_SIMULATOR
        line = mixed.describe_placement()
        assert f"embed, block_1.decode on {ON_CPU}" in line
        assert f"block_0, block_1.prefill, head_0 on {ON_SIMULATOR}" in line
        assert "not hardware results" in line
        first = mixed.forward(ids).copy()
        second = mixed.forward([int(np.argmax(first))]).copy()
    theirs_cache = reference.lm.new_cache()
    reference.lm.forward(theirs_cache, ids)  # type: ignore[arg-type]
    theirs = reference.lm.forward(theirs_cache, [int(np.argmax(first))])  # type: ignore[arg-type]
    assert cosine(second, theirs) >= 0.999


def test_no_device_runs_every_chunk_on_onnxruntime(split_dir: Path) -> None:
    with ChunkedDecoder(split_dir) as cpu:
        assert set(cpu.placement().values()) == {ON_CPU}
        assert "not hardware" not in cpu.describe_placement()


def test_a_container_from_another_chunk_is_refused(tmp_path: Path, split_dir: Path) -> None:
    shutil.copytree(split_dir, tmp_path / "s")
    wrong = tmp_path / "s" / "block_1.decode_ane.onnx"
    shutil.copy(tmp_path / "s" / "block_0.decode_ane.onnx", wrong)
    kernel = SimulatedKernel()
    with pytest.raises(ManifestError) as info:
        ChunkedDecoder(tmp_path / "s", device=ANEDevice.simulated(kernel=kernel))
    assert str(wrong) in str(info.value) and "key_cache" in str(info.value)
    assert kernel.live_bos == 0


def test_stale_caches_are_refused(ane: AneDecoder) -> None:
    old = ane.new_cache()
    ane.new_cache()
    with pytest.raises(ChatError, match="earlier"):
        ane.forward(old, [1])
