"""The stand-in compile step: containers with synthetic programs, the chunk graph and its slots."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ane_build.container import parse_ane_metadata, verify_container
from ane_build.container.graph import graph_io
from ane_build.llm.manifest import read_manifest
from ane_build.llm.simcompile import compile_synthetic
from ane_build.synthetic.chains import is_synthetic


def test_every_ane_chunk_gets_a_verified_synthetic_container(split_dir: Path) -> None:
    manifest = read_manifest(split_dir)
    for plan in manifest.chunks:
        if not plan.on_ane:
            assert plan.container is None
            continue
        assert plan.container is not None
        container = split_dir / plan.container
        report = verify_container(container)
        assert report.ok, report.summary()
        metadata = parse_ane_metadata(container)
        assert is_synthetic(metadata.toolchain)
        by_name = {io.name: (slot, io.role) for slot, io in metadata.io.items()}
        assert by_name == {t.name: (s, t.role) for s, t in plan.slots().items()}
        inputs, outputs = graph_io(container, dims={})
        assert [i.name for i in inputs] == [t.name for t in plan.inputs]
        assert [o.name for o in outputs] == [t.name for t in plan.outputs]
        assert container.stat().st_size <= plan.container_bytes


def test_up_to_date_containers_are_kept(tmp_path: Path, split_dir: Path) -> None:
    folder = tmp_path / "s"
    shutil.copytree(split_dir, folder)
    assert compile_synthetic(folder) == []
    graph = folder / "block_1.prefill.onnx"
    later = graph.stat().st_mtime_ns + 10**9
    os.utime(graph, ns=(later, later))
    assert compile_synthetic(folder) == [folder / "block_1.prefill_ane.onnx"]
    assert len(compile_synthetic(folder, force=True)) == 5
