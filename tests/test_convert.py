"""Every real sample through every input path of the converter: containers the kernel accepts.

The oracle is the fork kernel's parser model (`driver.kernel_onnx`, itself checked against the
922 kernel vectors) on the container in a page-rounded BO, and the sample's own payload bytes.
"""

from __future__ import annotations

import errno
import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ane_build.check.samples import SAMPLES, write_sample_graph
from ane_build.cli.app import convert_main, main
from ane_build.container import embed_ane_metadata, read_ane_payloads
from ane_build.driver.kernel_onnx import check_bo, prepare_submit
from ane_build.driver.uapi import PAGE_SIZE, round_up
from ane_build.formats.anec import read_anec
from ane_build.formats.payload import PayloadRef
from tests.helpers import M1_TD_SIZE, b64, even, make_chain, relu_model, seed_bundle, write

NAMES = sorted(SAMPLES)


def _payloads(sample: Path) -> tuple[bytes, bytes, int, int]:
    anec = read_anec(sample)
    weights = anec.weights.read() if anec.weights else b""
    return anec.microcode.read(), weights, anec.td_size, anec.td_count


def _anec(sample: Path, folder: Path) -> list[str]:
    return ["--anec", str(sample)]


def _bundle_top_level(sample: Path, folder: Path) -> list[str]:
    microcode, weights, td_size, td_count = _payloads(sample)
    path = seed_bundle(
        folder / "b" / "bundle.json",
        microcode,
        weights or None,
        td_size=str(td_size),
        td_count=str(td_count),
    )
    return ["--bundle", str(path)]


def _bundle_descriptor_object(sample: Path, folder: Path) -> list[str]:
    microcode, weights, td_size, td_count = _payloads(sample)
    tds = {"b64": b64(microcode), "entry_size": td_size, "count": td_count}
    seed_bundle(folder / "b" / "bundle.json", microcode, weights or None, tile_descriptors=tds)
    return ["--bundle", str(folder / "b")]  # a folder holding bundle.json


def _explicit_files(sample: Path, folder: Path) -> list[str]:
    microcode, weights, td_size, td_count = _payloads(sample)
    argv = ["--microcode", str(write(folder / "m.tsk", microcode))]
    argv += ["--td-size", str(td_size), "--td-count", str(td_count)]
    if weights:
        argv += ["--weights", str(write(folder / "w.bin", weights))]
    return argv


def _tile_descriptors(sample: Path, folder: Path) -> list[str]:
    microcode, weights, _, _ = _payloads(sample)
    argv = ["--microcode", str(write(folder / "m.tsk", microcode))]
    argv += ["--tile-descriptors", str(write(folder / "m.td.bin", microcode))]
    if weights:
        argv += ["--weights", str(write(folder / "w.bin", weights))]
    return argv


def _artifact_root_seed_suffixes(sample: Path, folder: Path) -> list[str]:
    microcode, weights, _, _ = _payloads(sample)
    write(folder / "out" / "prog.tsk.bin", microcode)
    if weights:
        write(folder / "out" / "prog.aneweights", weights)
    return ["--artifact-root", str(folder / "out")]


def _artifact_root_anec(sample: Path, folder: Path) -> list[str]:
    (folder / "out" / "deep").mkdir(parents=True)
    (folder / "out" / "deep" / sample.name).symlink_to(sample)
    return ["--artifact-root", str(folder / "out")]


PATHS: dict[str, Callable[[Path, Path], list[str]]] = {
    "anec": _anec,
    "bundle-top-level": _bundle_top_level,
    "bundle-descriptor-object": _bundle_descriptor_object,
    "explicit-files": _explicit_files,
    "tile-descriptors": _tile_descriptors,
    "artifact-root-seed-suffixes": _artifact_root_seed_suffixes,
    "artifact-root-anec": _artifact_root_anec,
}


def _kernel_accepts(data: bytes, microcode: bytes, weights: bytes) -> None:
    """Accepted in the page-rounded BO and in a larger one; the decoded payloads are the inputs."""
    for bo_size in (round_up(len(data), PAGE_SIZE), round_up(len(data), PAGE_SIZE) + PAGE_SIZE):
        verdict = check_bo(data, bo_size)
        assert verdict.errno == 0, f"BO of {bo_size}: {verdict.rule}: {verdict.detail}"
        assert verdict.microcode_sha256 == hashlib.sha256(microcode).hexdigest()
        assert verdict.weights_sha256 == hashlib.sha256(weights).hexdigest()
    bo = bytearray(data) + bytes(round_up(len(data), PAGE_SIZE) - len(data))
    verdict = prepare_submit(memoryview(bo))
    assert verdict.errno == 0 and verdict.tsk_size == len(microcode)
    start = round_up(len(microcode), 16)
    assert bytes(bo[: len(microcode)]) == microcode
    assert bytes(bo[start : start + len(weights)]) == weights


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("name", NAMES)
def test_every_sample_through_every_path_gives_a_container_the_kernel_accepts(
    anec_samples: Path, tmp_path: Path, name: str, path: str
) -> None:
    sample = anec_samples / name
    source = tmp_path / f"{Path(name).stem}.onnx"
    write_sample_graph(name, source)
    output = tmp_path / "out_ane.onnx"
    argv = [str(source), *PATHS[path](sample, tmp_path), "-o", str(output)]
    assert convert_main(argv) == 0
    data = output.read_bytes()
    assert len(data) % 2 == 0, f"{len(data)} bytes: odd length leaves a stray zero in the BO"
    microcode, weights, td_size, td_count = _payloads(sample)
    _kernel_accepts(data, microcode, weights)
    payloads = read_ane_payloads(output)
    assert (payloads.microcode, payloads.weights or b"") == (microcode, weights)
    verdict = check_bo(data)
    assert (verdict.td_size, verdict.td_count) == (td_size, td_count)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    descriptors=st.integers(1, 4),
    weights=st.binary(max_size=3000),
    toolchain=st.text(max_size=40),
    doc_string=st.text(max_size=33),
)
def test_writer_output_is_accepted_and_decodes_to_its_inputs(
    tmp_path_factory: pytest.TempPathFactory,
    descriptors: int,
    weights: bytes,
    toolchain: str,
    doc_string: str,
) -> None:
    import onnx

    folder = tmp_path_factory.mktemp("w")
    source = relu_model(folder / "m.onnx")
    model = onnx.load(source)
    model.doc_string = doc_string  # any source length, odd or even
    onnx.save(model, source)
    microcode = make_chain((M1_TD_SIZE,) * descriptors)
    output = folder / "m_ane.onnx"
    embed_ane_metadata(
        source,
        output,
        microcode=PayloadRef.from_bytes(microcode),
        td_size=M1_TD_SIZE,
        td_count=descriptors,
        weights=PayloadRef.from_bytes(weights) if weights else None,
        toolchain=toolchain or None,
    )
    data = output.read_bytes()
    assert len(data) % 2 == 0
    _kernel_accepts(data, microcode, weights)
    assert check_bo(data).td_count == descriptors


def test_erange_reaches_the_cli_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import onnx

    model = onnx.load(relu_model(tmp_path / "m.onnx"))
    for key, value in (
        ("ane.microcode.b64", b64(make_chain())),
        ("ane.td_size", str(M1_TD_SIZE)),
        ("ane.td_count", "4294967296"),  # one above u32: kstrtou32 answers ERANGE
    ):
        model.metadata_props.add(key=key, value=value)
    container = tmp_path / "m_ane.onnx"
    container.write_bytes(even(model).SerializeToString())
    assert check_bo(container.read_bytes()).errno == errno.ERANGE
    code = main(["submit", str(container), "--device", "sim"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "ERANGE" in err, err


def test_a_bundles_io_table_reaches_the_container_and_verify(tmp_path: Path) -> None:
    from ane_build.container import parse_ane_metadata, verify_container

    source = relu_model(tmp_path / "m.onnx")  # x, y: 1x64x1x1

    def convert(channels: int) -> Path:
        io = {
            "4": {"role": "output", "name": "y", "c": channels},
            "5": {"role": "input", "name": "x", "c": channels},
        }
        bundle = seed_bundle(tmp_path / f"{channels}" / "bundle.json", make_chain(), io=io)
        output = tmp_path / f"m{channels}_ane.onnx"
        assert convert_main([str(source), "--bundle", str(bundle), "-o", str(output)]) == 0
        return output

    def graph_check(path: Path) -> tuple[bool, str]:
        [check] = [c for c in verify_container(path).checks if c.name == "graph vs program"]
        return check.ok, check.detail

    right = convert(64)
    meta = parse_ane_metadata(right)
    assert {s: (v.role, v.name, v.c) for s, v in meta.io.items()} == {
        4: ("output", "y", 64),
        5: ("input", "x", 64),
    }
    assert meta.tiles == {4: PAGE_SIZE, 5: PAGE_SIZE}
    assert graph_check(right)[0]
    ok, detail = graph_check(convert(77))
    assert not ok and "x [1, 64, 1, 1]; ane.io has slot 5 1x77x1x1" in detail
