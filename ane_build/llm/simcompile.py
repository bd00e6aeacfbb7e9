"""A stand-in compile step for a split: synthetic programs packaged with the real chunk graphs.

For the simulator only. Each ANE chunk graph gets a synthetic descriptor chain (``<program>.tsk``,
NOT real ANE code, and marked so: such containers never go to hardware) and is packaged by
`convert_model` with its tensor slots into ``<program>_ane.onnx``. The simulator computes a
container's outputs from its graph, so the whole data path runs; with a real compiler, its output
takes the place of the ``.tsk`` file. Containers newer than their graph are kept. This module
must not run programs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from .._fs import write_atomic
from ..artifacts import ArtifactSpec
from ..convert import convert_model
from ..synthetic.chains import M1_TD_SIZE, SYNTHETIC_MARK, make_chain
from .manifest import read_manifest
from .plan import ChunkPlan

log = logging.getLogger(__name__)

TOOLCHAIN = f"synthetic (ane_build llm split; {SYNTHETIC_MARK})"
DESCRIPTORS = 2


def artifact_spec(plan: ChunkPlan, microcode: Path) -> ArtifactSpec:
    """What `convert_model` needs for a chunk: its microcode and its tensor slots."""
    return ArtifactSpec(
        microcode=microcode, td_size=M1_TD_SIZE, td_count=DESCRIPTORS, io=plan.slots()
    )


def _stale(container: Path, graph: Path) -> bool:
    try:
        return container.stat().st_mtime_ns < graph.stat().st_mtime_ns
    except FileNotFoundError:
        return True


def compile_synthetic(
    directory: Path, *, force: bool = False, progress: Callable[[str], None] | None = None
) -> list[Path]:
    """Give every ANE chunk of a split a synthetic-program container (see the module docstring).

    Args:
        directory: The split folder.
        force: Rebuild containers that look up to date.
        progress: Called with each container name before it is written.

    Returns:
        The containers written.

    Raises:
        AneError: The manifest is unreadable, or a conversion failed (no partial file is left).
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    written = []
    for index, plan in enumerate(manifest.ane_programs()):
        assert plan.container is not None
        graph, container = directory / plan.graph, directory / plan.container
        if not force and not _stale(container, graph):
            continue
        if progress:
            progress(plan.container)
        microcode = graph.with_suffix(".tsk")
        write_atomic(microcode, make_chain(DESCRIPTORS, seed=index))
        convert_model(graph, artifact_spec(plan, microcode), output=container, toolchain=TOOLCHAIN)
        written.append(container)
    log.info("%s: %d synthetic container(s) written", directory, len(written))
    return written
