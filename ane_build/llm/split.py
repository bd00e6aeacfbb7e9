"""``llm split``: a checkpoint folder into chunk graphs, tokenizer files and a manifest.

The plan is made (and checked against the limits) before anything is read beyond the config;
then each graph is authored from the memory-mapped weights and written atomically, one at a time
so only one chunk's weights are in memory; the tokenizer and config files are copied so the folder
is all a chat needs; the manifest comes last. This module must not compile or run programs.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .._fs import replace_atomically
from ..errors import FileAccessError
from .checkpoint import TOKENIZER_FILES, Checkpoint, checkpoint_files, digest_files
from .errors import LlmError, ManifestError
from .graphs import chunk_graph
from .manifest import MANIFEST_FILE, CheckpointInfo, Manifest, read_manifest, write_manifest
from .plan import SplitPlan, SplitSettings, plan_split
from .spec import CONFIG_FILE

log = logging.getLogger(__name__)

NOTES = (
    "embed runs on the CPU (onnxruntime): a table lookup, no work for the ANE",
    "prefill programs end at the hidden state: the decode head computes the last position's "
    "logits, so the head's weights are held on the ANE once",
)


@dataclass(frozen=True)
class SplitResult:
    """What a split wrote.

    Attributes:
        directory: The split folder.
        manifest: Its manifest.
        written: Files written, in order (the manifest last).
        reused: True when an up-to-date split was found and nothing was written.
        elapsed: Seconds taken.
    """

    directory: Path
    manifest: Manifest
    written: tuple[Path, ...]
    reused: bool
    elapsed: float

    def summary(self) -> list[str]:
        """Human lines: the plan, then what was written."""
        lines = self.manifest.plan.report()
        if self.reused:
            lines.append(f"{self.directory}: up to date (same checkpoint digest and settings)")
        else:
            lines.append(
                f"wrote {len(self.written)} files to {self.directory} in {self.elapsed:.1f} s"
            )
        return lines


def _same(manifest: Manifest, settings: SplitSettings, digest: str) -> bool:
    return manifest.checkpoint.sha256 == digest and manifest.plan.settings == settings


def current_split(out_dir: Path, settings: SplitSettings, digest: str) -> Manifest | None:
    """The manifest of ``out_dir`` when it was made from this checkpoint with these settings."""
    try:
        manifest = read_manifest(out_dir)
    except ManifestError:
        return None
    if not _same(manifest, settings, digest):
        return None
    if not all((out_dir / c.graph).is_file() for c in manifest.chunks):
        return None
    return manifest


def _write_graph(path: Path, model: object) -> None:
    data = model.SerializeToString()  # type: ignore[attr-defined]  # an onnx.ModelProto
    replace_atomically(path, lambda out, _tmp: out.write(data))


def _copy(source: Path, target: Path) -> None:
    def write(out: object, _tmp: str) -> None:
        with source.open("rb") as f:
            shutil.copyfileobj(f, out)  # type: ignore[arg-type]  # a binary stream

    replace_atomically(target, write)


def split_checkpoint(
    model_dir: Path,
    out_dir: Path,
    settings: SplitSettings,
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> SplitResult:
    """Split a checkpoint into chunk graphs under ``out_dir`` (see the module docstring).

    Args:
        model_dir: The checkpoint folder (``config.json``, safetensors, tokenizer files).
        out_dir: Where the split goes (created; its manifest is replaced last).
        settings: Chunks, context, prefill.
        force: Write even when ``out_dir`` already holds this split.
        progress: Called with each file name before it is written.

    Raises:
        LlmError: The checkpoint is unreadable or unsupported, the plan does not fit, or a file
            cannot be written (nothing half-written is left; an old manifest is removed first,
            so an interrupted split is never taken for a finished one).
    """
    start = time.perf_counter()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.resolve() == model_dir.resolve():
        raise LlmError(f"{out_dir}: the split cannot go into the checkpoint folder itself")
    with Checkpoint(model_dir) as ckpt:
        plan = plan_split(ckpt.spec, settings)
        files = checkpoint_files(model_dir)
        digest = digest_files(files)
        existing = None if force else current_split(out_dir, settings, digest)
        if existing is not None:
            return SplitResult(out_dir, existing, (), True, time.perf_counter() - start)
        manifest = Manifest(
            checkpoint=CheckpointInfo(
                directory=str(model_dir), files=tuple(f.name for f in files), sha256=digest
            ),
            spec=ckpt.spec,
            plan=plan,
            notes=NOTES,
        )
        written = _write_all(ckpt, plan, model_dir, out_dir, progress)
    written.append(write_manifest(out_dir, manifest))
    log.info("split %s into %s: %d programs", model_dir, out_dir, len(plan.chunks))
    return SplitResult(out_dir, manifest, tuple(written), False, time.perf_counter() - start)


def _write_all(
    ckpt: Checkpoint,
    plan: SplitPlan,
    model_dir: Path,
    out_dir: Path,
    progress: Callable[[str], None] | None,
) -> list[Path]:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / MANIFEST_FILE).unlink(missing_ok=True)
    except OSError as exc:
        raise FileAccessError(f"{out_dir}: cannot prepare the split folder: {exc}") from exc
    written = []
    for chunk in plan.chunks:
        if progress:
            progress(chunk.graph)
        path = out_dir / chunk.graph
        # One chunk's weights in memory at a time: the proto goes before the next is built.
        _write_graph(path, chunk_graph(ckpt, chunk))
        written.append(path)
    for name in (CONFIG_FILE, *TOKENIZER_FILES):
        if (model_dir / name).is_file():
            _copy(model_dir / name, out_dir / name)
            written.append(out_dir / name)
    return written
