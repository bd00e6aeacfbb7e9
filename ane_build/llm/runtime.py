"""The chunked decoder: token ids in, logits out, through a split's programs, cache kept in place.

Every program is loaded once. Each block program's KV caches and mask are inputs it keeps between
runs (in its BOs on the ANE); a step writes only the new rows and the newly allowed mask columns.
A host copy of the cache rows lets a program that missed steps catch up (decode and prefill
programs hold separate caches), and lets a shorter prefix be kept (multi-turn reuse) without
copying anything: rows past the kept length are masked, then overwritten. Prompts run through the
prefill programs in blocks of ``S`` (the last block padded), tokens through the decode programs.
This module must not tokenize or sample.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .._resource import Closing
from ..driver.device import ANEDevice
from ..run import SubmitMode
from .chunks import ON_SIMULATOR, SIMULATOR_NOTE, AneChunk, ChunkRunner, Embedding, OrtChunk
from .errors import ContextFullError, LlmError
from .graphs import MASKED
from .manifest import Manifest, read_manifest
from .plan import ChunkPlan, cache_names
from .spec import inverse_frequencies, rope_tables

log = logging.getLogger(__name__)


@dataclass
class DecoderStats:
    """What the decoder did since it was loaded (or since `reset_counters`).

    Attributes:
        runs: Runs per program.
        bytes_written: Bytes of tensor data written into programs' inputs.
        bytes_read: Bytes of outputs read back.
    """

    runs: Counter[str] = field(default_factory=Counter)
    bytes_written: int = 0
    bytes_read: int = 0


@dataclass
class _Kept:
    """How far a block program's inputs follow the cache: rows copied in, mask columns open."""

    rows: int = 0
    allowed: int = 0


class ChunkedDecoder(Closing):
    """A split folder's programs, loaded once, run as one causal LM with batch size 1.

    Args:
        directory: The split folder (``manifest.json`` and the chunk graphs).
        device: Where programs with a container run; None runs every chunk on onnxruntime.
        mode: How ANE programs are submitted; by default ``"onnx"`` on the simulator (the only
            mode it computes outputs for) and ``"direct"`` on hardware (the command buffer then
            holds microcode and weights, not the whole container).
        threads: onnxruntime intra-op threads for chunks on the CPU.

    Raises:
        LlmError: The manifest or a chunk cannot be loaded (nothing stays allocated).
    """

    def __init__(
        self,
        directory: Path,
        *,
        device: ANEDevice | None = None,
        mode: SubmitMode | None = None,
        threads: int | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.manifest: Manifest = read_manifest(self.directory)
        self.spec = self.manifest.spec
        self.context = self.manifest.context
        self.stats = DecoderStats()
        self._runners: list[ChunkRunner | Embedding] = []
        spec, n = self.spec, self.context
        shape = (spec.num_layers, spec.num_kv_heads, n, spec.head_dim)
        # The host copy of every cached row: keys and values [layer, kv_head, position, dim].
        self._keys = np.zeros(shape, dtype=np.float16)
        self._values = np.zeros(shape, dtype=np.float16)
        longest = max(c.positions or 1 for c in self.manifest.chunks)
        cos, sin = rope_tables(inverse_frequencies(spec, n), np.arange(n + longest))
        self._cos, self._sin = cos.astype(np.float16), sin.astype(np.float16)
        self._logits = np.zeros(spec.vocab_size, dtype=np.float32)
        self.length = 0
        try:
            self._load(device, mode, threads)
            self._kept = {r.plan.name: _Kept() for r in (*self.decode, *self.prefill)}
            for runner in (*self.decode, *self.prefill):
                s = runner.plan.positions or 1
                self._write(runner, "mask", np.full((1, 1, s, n), MASKED, dtype=np.float16))
        except BaseException:
            self.close()
            raise

    def _load(self, device: ANEDevice | None, mode: SubmitMode | None, threads: int | None) -> None:
        manifest = self.manifest
        chosen: SubmitMode = mode or ("onnx" if device is None or device.is_simulated else "direct")

        def load(plan: ChunkPlan) -> ChunkRunner:
            runner: ChunkRunner
            container = self.directory / plan.container if plan.container else None
            if device is not None and container is not None and container.is_file():
                runner = AneChunk(device, self.directory, plan, chosen)
            else:
                runner = OrtChunk(self.directory, plan, threads)
            self._runners.append(runner)
            return runner

        self.embed = Embedding(self.directory, manifest.embed(), threads)
        self._runners.append(self.embed)
        self.decode = [load(p) for p in manifest.blocks("decode")]
        self.prefill = [load(p) for p in manifest.blocks("prefill")]
        self.heads = [load(p) for p in manifest.heads()]
        if not self.decode or not self.heads:
            raise LlmError(f"{self.directory}: the manifest has no decode blocks or no head")

    # -- placement and counters ------------------------------------------------------------

    def placement(self) -> dict[str, str]:
        """Where each program runs, by program name."""
        return {r.plan.name: r.where for r in self._runners}

    def describe_placement(self) -> str:
        """One line: which chunks run where.

        A chunk whose programs all run in one place is named once; when the simulator runs any,
        the line says its results are not the hardware's.
        """
        placement = self.placement()
        places: dict[str, list[ChunkPlan]] = {}
        for runner in self._runners:
            places.setdefault(runner.where, []).append(runner.plan)
        parts = []
        for where, plans in places.items():
            names: list[str] = []
            for plan in plans:
                whole = all(placement[c.name] == where for c in self._chunk(plan.chunk))
                name = plan.chunk if whole else plan.name
                if name not in names:
                    names.append(name)
            parts.append(f"{', '.join(names)} on {where}")
        note = f" ({SIMULATOR_NOTE})" if ON_SIMULATOR in places else ""
        return "; ".join(parts) + note

    def _chunk(self, chunk: str) -> list[ChunkPlan]:
        return [c for c in self.manifest.chunks if c.chunk == chunk]

    def reset_counters(self) -> None:
        """Start counting runs and bytes from zero."""
        self.stats = DecoderStats()

    def _write(
        self,
        runner: ChunkRunner,
        name: str,
        values: npt.NDArray[Any],
        row: int = 0,
        column: int = 0,
    ) -> None:
        self.stats.bytes_written += runner.write(name, values, row=row, column=column)

    def _run(self, runner: ChunkRunner) -> dict[str, npt.NDArray[np.float16]]:
        outputs = runner.run()
        self.stats.runs[runner.plan.name] += 1
        self.stats.bytes_read += sum(o.nbytes for o in outputs.values())
        return outputs

    # -- the cache -------------------------------------------------------------------------

    def truncate(self, length: int) -> None:
        """Keep only the first ``length`` cached positions (nothing is copied).

        Programs keep their rows past that point until they are overwritten; the mask hides
        them, and no program counts them as its own any more.
        """
        self.length = min(self.length, max(length, 0))
        for kept in self._kept.values():
            kept.rows = min(kept.rows, self.length)

    def _catch_up(self, runner: ChunkRunner, position: int) -> None:
        """Bring a program's cache rows and mask to the first ``position`` positions."""
        kept, plan = self._kept[runner.plan.name], runner.plan
        assert plan.layers is not None
        if kept.rows < position:
            start = kept.rows
            for layer in range(*plan.layers):
                key, value, _, _ = cache_names(layer)
                self._write(runner, key, self._keys[layer, None, :, start:position], row=start)
                self._write(runner, value, self._values[layer, None, :, start:position], row=start)
        kept.rows = position
        s = plan.positions or 1
        if kept.allowed < position:
            opened = np.zeros((1, 1, s, position - kept.allowed), dtype=np.float16)
            self._write(runner, "mask", opened, column=kept.allowed)
        elif kept.allowed > position:
            closed = np.full((1, 1, s, kept.allowed - position), MASKED, dtype=np.float16)
            self._write(runner, "mask", closed, column=position)
        kept.allowed = position

    def _blocks(
        self, runners: Sequence[ChunkRunner], position: int, rows: npt.NDArray[np.float16]
    ) -> npt.NDArray[np.float16]:
        """Run ``rows`` (hidden states of consecutive new positions) through every block."""
        s = runners[0].plan.positions or 1
        count = len(rows)
        hidden = np.zeros((1, s, self.spec.hidden_size), dtype=np.float16)
        hidden[0, :count] = rows
        cos = self._cos[None, None, position : position + s]
        sin = self._sin[None, None, position : position + s]
        end = position + count
        for runner in runners:
            self._catch_up(runner, position)
            self._write(runner, "hidden", hidden)
            self._write(runner, "cos", cos)
            self._write(runner, "sin", sin)
            out = self._run(runner)
            hidden = out["hidden_out"]
            assert runner.plan.layers is not None
            for layer in range(*runner.plan.layers):
                key, value, new_key, new_value = cache_names(layer)
                keys, values = out[new_key][:, :, :count], out[new_value][:, :, :count]
                self._keys[layer, :, position:end] = keys[0]
                self._values[layer, :, position:end] = values[0]
                self._write(runner, key, keys, row=position)
                self._write(runner, value, values, row=position)
            self._kept[runner.plan.name].rows = end
        return hidden[0, :count]

    def _head(self, hidden: npt.NDArray[np.float16]) -> npt.NDArray[np.float32]:
        row = hidden.reshape(1, 1, -1)
        for runner in self.heads:
            assert runner.plan.vocab is not None
            first, end = runner.plan.vocab
            self._write(runner, "hidden", row)
            self._logits[first:end] = self._run(runner)["logits"].reshape(-1)
        return self._logits

    def forward(self, token_ids: Sequence[int]) -> npt.NDArray[np.float32]:
        """Run ``token_ids`` after the cached positions; extend the cache with them.

        Several ids run through the prefill programs in blocks (the decode programs when the
        split has none); one id runs through the decode programs.

        Returns:
            Logits of the last new position, ``[vocab]`` float32: a buffer reused by the next
            call (copy it to keep it).

        Raises:
            ContextFullError: The positions would pass the static context.
            LlmError: A chunk failed (the cache then holds the positions before the call).
        """
        count = len(token_ids)
        if count == 0:
            raise LlmError("forward needs at least one new token")
        start = self.length
        if start + count > self.context:
            raise ContextFullError(
                f"{start} cached + {count} new positions do not fit the chunks' context of "
                f"{self.context}"
            )
        hidden = self.embed(token_ids)
        if count > 1 and self.prefill:
            step = self.prefill[0].plan.positions or 1
            runners = self.prefill
        else:
            step, runners = 1, self.decode
        for offset in range(0, count, step):
            last = self._blocks(runners, start + offset, hidden[offset : offset + step])
        self.length = start + count
        return self._head(last[-1])

    def close(self) -> None:
        """Free every program. Idempotent."""
        runners, self._runners = self._runners, []
        for runner in reversed(runners):
            runner.close()
