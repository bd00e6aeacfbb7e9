import base64
import errno
import struct
from pathlib import Path

import numpy as np
import onnx
import pytest

from ane_build.cli import convert_main
from ane_build.container.metadata import parse_ane_metadata, read_ane_payloads
from ane_build.container.writer import embed_ane_metadata
from ane_build.driver import uapi
from ane_build.driver.device import ANEDevice
from ane_build.driver.kernel_onnx import check_bo
from ane_build.driver.simulator import SimulatedKernel
from ane_build.errors import AneDeviceError, AneError, SubmitValidationError
from ane_build.formats.payload import IoSlot, PayloadRef
from ane_build.formats.tiling import layout_for
from ane_build.run import AneProgram, program_for, submit_onnx_model
from ane_build.synthetic.chains import make_chain, make_weights
from tests.conftest import SAMPLE_PARAMS
from tests.helpers import SAMPLE_TILES, relu_model


def _header(path: Path) -> tuple[int, int, int, int]:
    data = path.read_bytes()
    td_size, td_count, tsk_size, krn_size = struct.unpack_from("<IIQQ", data, 8)
    return td_size, td_count, tsk_size, krn_size


@pytest.mark.parametrize("sample", SAMPLE_PARAMS)
@pytest.mark.parametrize("how", ["anec", "artifact-root"])
def test_every_sample_converts_and_submits(
    sample: Path, how: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = relu_model(tmp_path / "model.onnx")
    if how == "anec":
        args = [str(source), "--anec", str(sample)]
    else:
        root = tmp_path / "compiler-out"
        root.mkdir()
        (root / sample.name).symlink_to(sample)  # read in place, never copied
        args = [str(source), "--artifact-root", str(root)]
    assert convert_main([*args, "--toolchain", "anecc"]) == 0
    out = capsys.readouterr().out
    output = tmp_path / "model_ane.onnx"
    assert f"wrote {output}" in out
    if how == "artifact-root":
        assert "discovered" in out and sample.name in out

    td_size, td_count, tsk_size, krn_size = _header(sample)
    meta = parse_ane_metadata(output)
    assert (meta.td_size, meta.td_count) == (td_size, td_count)
    assert (meta.microcode_len, meta.weights_len) == (tsk_size, krn_size)
    assert meta.toolchain == "anecc"
    expected_tiles = {s: n * 16384 for s, n in SAMPLE_TILES[sample.name].items()}
    assert {s: n for s, n in meta.tiles.items()} == expected_tiles
    data = sample.read_bytes()
    payloads = read_ane_payloads(output)
    assert payloads.microcode == data[0x1000 : 0x1000 + tsk_size]
    weights_at = 0x1000 + (tsk_size + 15) // 16 * 16
    assert payloads.weights == data[weights_at : weights_at + krn_size]

    for abi, mode in (("fork", "onnx"), ("fork", "direct"), ("stock", "direct")):
        with ANEDevice.simulated(abi) as dev:
            result = submit_onnx_model(dev, output, mode=mode)
            assert result.simulated and result.td_count == td_count
            kernel = dev.kernel
            assert kernel is not None and len(kernel.submits) == 1
            assert kernel.submits[0].onnx_translated == (mode == "onnx")
            assert set(result.slots) == {*expected_tiles, "btsp"} - {1}
        assert kernel.live_bos == 0 and kernel.open_fds == 0


def test_onnx_mode_on_the_stock_driver_is_einval(tmp_path: Path) -> None:
    output = _container(tmp_path)
    with ANEDevice.simulated("stock") as dev:
        with pytest.raises(AneDeviceError) as info:
            submit_onnx_model(dev, output, mode="onnx")
        assert info.value.errno == errno.EINVAL
        assert dev.kernel is not None and dev.kernel.live_bos == 0


def _container(tmp_path: Path, count: int = 2, weights: bytes = b"") -> Path:
    source = relu_model(tmp_path / "m.onnx")
    output = tmp_path / "m_ane.onnx"
    io = {
        4: IoSlot(role="output", name="y", n=1, c=64, h=1, w=1, plane_stride=64, row_stride=64),
        5: IoSlot(role="input", name="x", n=1, c=64, h=1, w=1, plane_stride=64, row_stride=64),
    }
    embed_ane_metadata(
        source,
        output,
        microcode=PayloadRef.from_bytes(make_chain(count)),
        td_size=0x274,
        td_count=count,
        weights=PayloadRef.from_bytes(weights) if weights else None,
        io=io,
        tiles={0: 32768, 4: 16384, 5: 16384},
    )
    return output


def test_container_bytes_and_inputs(tmp_path: Path) -> None:
    output = _container(tmp_path, weights=make_weights(5000))
    x = np.arange(64, dtype=np.float16).reshape(1, 64, 1, 1)
    with ANEDevice.simulated() as dev:
        result = submit_onnx_model(dev, output.read_bytes(), inputs={"x": x})
        assert result.mode == "onnx"
        assert result.outputs["y"].shape == (1, 64, 1, 1)
        # The time reported is the work done: loading, then the run, the ioctl inside it.
        assert 0 < result.elapsed < result.total and result.load > 0
        total_ms = f"took {(result.load + result.total) * 1e3:.2f} ms"
        assert total_ms in result.describe() and "load " in result.describe()
        with pytest.raises(SubmitValidationError, match=r"unknown input\(s\) \['z'\]"):
            submit_onnx_model(dev, output, inputs={"z": x})
        assert dev.kernel is not None and dev.kernel.live_bos == 0


def test_program_submits_many_times_without_reallocating(tmp_path: Path) -> None:
    microcode = make_chain(3)
    with ANEDevice.simulated() as dev:
        kernel = dev.kernel
        assert kernel is not None
        with AneProgram(
            dev,
            microcode=microcode,
            td_size=0x274,
            td_count=3,
            weights=make_weights(3000),
            tiles={2: 16384, 4: 16384},
            container=_container(tmp_path, count=3),
        ) as program:
            inits = kernel.counters["DRM_IOCTL_ANE_BO_INIT"]
            for i in range(50):
                program.run("onnx" if i % 2 else "direct")
            assert kernel.counters["DRM_IOCTL_ANE_BO_INIT"] == inits
            assert kernel.counters["DRM_IOCTL_ANE_BO_FREE"] == 0
            assert len(kernel.submits) == 50
        assert kernel.live_bos == 0


def test_disagreeing_chain_is_refused_before_allocating() -> None:
    with ANEDevice.simulated() as dev:
        with pytest.raises(AneError, match="td_count is 2"):
            AneProgram(dev, microcode=make_chain(3), td_size=0x274, td_count=2)
        assert dev.kernel is not None and dev.kernel.counters["DRM_IOCTL_ANE_BO_INIT"] == 0


@pytest.mark.parametrize("mode", ["onnx", "direct"])
@pytest.mark.parametrize("op", ["BO_INIT", "mmap", "SUBMIT", "BO_FREE"])
@pytest.mark.parametrize(
    "err", [errno.EINVAL, errno.ENOMEM, errno.ENOSPC, errno.ETIMEDOUT, errno.EACCES, errno.ENODEV]
)
def test_every_fault_releases_every_bo(tmp_path: Path, mode: str, op: str, err: int) -> None:
    output = _container(tmp_path, weights=make_weights(100))
    kernel = SimulatedKernel()
    fired_at = []
    for nth in range(1, 6):
        with ANEDevice.open(backend=kernel) as dev:
            before = kernel.counters["faults"]
            kernel.inject_fault(op, err, nth=nth)
            raised: AneDeviceError | None = None
            try:
                submit_onnx_model(dev, output, mode=mode)  # type: ignore[arg-type]
            except AneDeviceError as exc:
                raised = exc
            fired = kernel.counters["faults"] > before
            kernel.clear_faults()
            assert dev.live_buffers == ()
        assert kernel.live_bos == 0, (op, nth)
        if not fired:
            assert raised is None, (op, nth)  # the program has fewer such calls than nth
        elif op == "BO_FREE":
            assert raised is None, (op, nth)  # one failed free is retried, and then succeeds
        else:
            assert raised is not None and raised.errno == err, (op, nth)
        fired_at += [nth] if fired else []
    assert fired_at and fired_at[0] == 1, fired_at  # every step's first call was hit
    assert kernel.open_fds == 0


def test_eintr_everywhere_is_retried(tmp_path: Path) -> None:
    output = _container(tmp_path)
    kernel = SimulatedKernel()
    for op in ("BO_INIT", "mmap", "SUBMIT", "BO_FREE", "open", "VERSION"):
        kernel.inject_fault(op, errno.EINTR, count=2)
    with ANEDevice.open(backend=kernel) as dev:
        submit_onnx_model(dev, output)
    assert len(kernel.submits) == 1 and kernel.live_bos == 0 and kernel.open_fds == 0


def test_tiling_layout_matches_the_samples() -> None:
    # relu.ane slot 4: N C H W = 1 1 1 77 with row and plane stride 192.
    row, plane, size = layout_for((1, 1, 1, 77))
    assert (row, plane, size) == (192, 192, 16384)


def test_simulator_computes_outputs_through_the_whole_data_path(tmp_path: Path) -> None:
    output = _container(tmp_path)
    x = np.linspace(-4, 4, 64, dtype=np.float16).reshape(1, 64, 1, 1)
    with ANEDevice.simulated() as dev:
        result = submit_onnx_model(dev, output, inputs={"x": x})
        assert dev.kernel is not None and dev.kernel.submits[-1].outputs == ("y",)
        np.testing.assert_array_equal(result.outputs["y"], np.maximum(x, 0))
        # Direct mode carries no graph: the output buffer is left as it was (zero).
        direct = submit_onnx_model(dev, output, mode="direct", inputs={"x": x})
        assert dev.kernel.submits[-1].outputs == ()
        assert not direct.outputs["y"].any()


def test_onnx_mode_translates_once_then_resubmits(tmp_path: Path) -> None:
    output = _container(tmp_path, weights=make_weights(3000))
    rng = np.random.default_rng(5)
    with ANEDevice.simulated() as dev:
        kernel = dev.kernel
        assert kernel is not None
        with program_for(dev, output, mode="onnx") as program:
            first = [program.run("onnx", {"x": np.ones((1, 64, 1, 1), np.float16)})]
            results = [program.run("onnx", {"x": np.ones((1, 64, 1, 1), np.float16)})]
            ones = np.ones((1, 64, 1, 1), np.float16)
            for i in range(98):
                x = ones if i % 10 == 0 else rng.normal(size=(1, 64, 1, 1)).astype(np.float16)
                result = program.run("onnx", {"x": x})
                # Computed again on every run, from this run's inputs.
                np.testing.assert_array_equal(result.outputs["y"], np.maximum(x, 0))
                results.append(result)
                if x is ones:  # the same inputs give identical outputs, run after run
                    assert result.outputs["y"].tobytes() == first[0].outputs["y"].tobytes()
            assert program.uploads == 1
        assert kernel.counters["onnx translations"] == 1
        assert kernel.counters["DRM_IOCTL_ANE_SUBMIT"] == 100
        assert first[0].translated and not any(r.translated for r in results)
        np.testing.assert_array_equal(first[0].outputs["y"], results[0].outputs["y"])
        # Later runs are plain submits of what the kernel wrote back: pad 0, the real sizes.
        assert [s.flags for s in kernel.submits] == [uapi.ANE_SUBMIT_FLAG_ONNX] + [0] * 99
        assert {(s.tsk_size, s.td_size, s.td_count) for s in kernel.submits} == {
            (len(make_chain(2)), 0x274, 2)
        }


def test_a_foreign_odd_container_still_submits(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign_ane.onnx"
    foreign.write_bytes(_odd_container(tmp_path))
    assert foreign.stat().st_size % 2 == 1
    # As is, in a page-rounded BO, the kernel refuses it; our upload evens the zeros behind it.
    assert check_bo(foreign.read_bytes()).rule == "truncated-tag"
    with ANEDevice.simulated() as dev:
        result = submit_onnx_model(dev, foreign, mode="onnx")
        assert result.translated and dev.kernel is not None


def _odd_container(tmp_path: Path) -> bytes:
    """A container as another tool writes it: onnx.save, odd length, no ane.pad."""
    model = onnx.load(relu_model(tmp_path / "src.onnx"))
    microcode = make_chain(2)
    for key, value in (
        ("ane.microcode.b64", base64.b64encode(microcode).decode()),
        ("ane.td_size", "628"),
        ("ane.td_count", "2"),
    ):
        model.metadata_props.add(key=key, value=value)
    data = model.SerializeToString()
    if len(data) % 2 == 0:
        model.metadata_props.add(key="note", value="x")
        data = model.SerializeToString()
    return bytes(data)


def test_stale_bytes_never_reach_a_parse(tmp_path: Path) -> None:
    output = _container(tmp_path)
    with ANEDevice.simulated() as dev, program_for(dev, output, mode="onnx") as program:
        program.cmd.write(b"\xff" * program.cmd.size)  # what an earlier use left behind
        assert program.run("onnx").translated
