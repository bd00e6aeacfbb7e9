"""`AneProgram.write_region`: part of an input written in place, in the ANE layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ane_build.driver.device import ANEDevice
from ane_build.driver.simulator import SimulatedKernel
from ane_build.errors import InputError, SubmitValidationError
from ane_build.formats.payload import IoSlot
from ane_build.formats.tiling import layout_for, tile, untile
from ane_build.run import AneProgram, program_for
from tests.helpers import M1_TD_SIZE, graph_model, make_chain, synthetic_container

SHAPE = (1, 3, 5, 40)  # 40 fp16 values = 80 bytes: rows padded to 128


def io_for(shape: tuple[int, ...], names: tuple[str, str] = ("x", "y")) -> dict[int, IoSlot]:
    row, plane, _ = layout_for(shape)
    n, c, h, w = shape
    return {
        4: IoSlot(
            role="output", name=names[1], n=n, c=c, h=h, w=w, row_stride=row, plane_stride=plane
        ),
        5: IoSlot(
            role="input", name=names[0], n=n, c=c, h=h, w=w, row_stride=row, plane_stride=plane
        ),
    }


def bare_program(device: ANEDevice, shape: tuple[int, ...] = SHAPE) -> AneProgram:
    size = layout_for(shape)[2]
    return AneProgram(
        device,
        microcode=make_chain((M1_TD_SIZE,)),
        td_size=M1_TD_SIZE,
        td_count=1,
        tiles={4: size, 5: size},
        io=io_for(shape),
    )


def input_bytes(program: AneProgram) -> bytes:
    return program.buffers[5].read()


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_a_region_lands_where_a_whole_tile_would_put_it(data: st.DataObject) -> None:
    n, c, h, w = SHAPE
    row = data.draw(st.integers(0, h - 1))
    column = data.draw(st.integers(0, w - 1))
    rows = data.draw(st.integers(1, h - row))
    columns = data.draw(st.integers(1, w - column))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    before = rng.standard_normal(SHAPE).astype(np.float16)
    block = rng.standard_normal((n, c, rows, columns)).astype(np.float16)
    with ANEDevice.simulated() as device, bare_program(device) as program:
        row_stride, plane_stride = program.io[5].row_stride, program.io[5].plane_stride
        tile(before, row_stride=row_stride, plane_stride=plane_stride, out=program.buffers[5].view)
        written = program.write_region("x", block, row=row, column=column)
        expected = before.copy()
        expected[:, :, row : row + rows, column : column + columns] = block
        image = tile(expected, row_stride=row_stride, plane_stride=plane_stride)
        assert image is not None
        got = input_bytes(program)
        assert got[: len(image)] == image  # padding untouched (still zero), the rest as tiled
        assert written == block.size * 2
        assert np.array_equal(untile(got, *SHAPE, row_stride, plane_stride), expected)


def test_lower_ranks_and_nan_are_taken_like_whole_inputs() -> None:
    with ANEDevice.simulated() as device, bare_program(device, (1, 1, 4, 8)) as program:
        program.write_region("x", np.array([np.nan, 2.0], dtype=np.float32), row=3, column=6)
        got = untile(
            input_bytes(program), 1, 1, 4, 8, program.io[5].row_stride, program.io[5].plane_stride
        )
        assert got[0, 0, 3, 7] == 2.0
        assert got.view(np.uint16)[0, 0, 3, 6] == 0x7E00  # canonical quiet NaN, as libane writes
        assert np.count_nonzero(np.nan_to_num(got)) == 1


@pytest.mark.parametrize(
    ("name", "shape", "row", "column", "error", "words"),
    [
        ("nope", (1, 3, 1, 1), 0, 0, SubmitValidationError, "no input 'nope'"),
        ("y", (1, 3, 1, 1), 0, 0, SubmitValidationError, "no input 'y'"),
        ("x", (1, 2, 1, 1), 0, 0, InputError, "1x2x1x1"),
        ("x", (1, 3, 2, 1), 4, 0, InputError, "row 4"),
        ("x", (1, 3, 1, 2), 0, 39, InputError, "column 39"),
        ("x", (1, 3, 1, 1), -1, 0, InputError, "row -1"),
        ("x", (1, 1, 1, 3, 1, 1), 0, 0, InputError, "rank 6"),
    ],
)
def test_bad_regions_are_refused_and_write_nothing(
    name: str, shape: tuple[int, ...], row: int, column: int, error: type[Exception], words: str
) -> None:
    with ANEDevice.simulated() as device, bare_program(device) as program:
        before = input_bytes(program)
        with pytest.raises(error, match=words):
            program.write_region(name, np.ones(shape, np.float16), row=row, column=column)
        assert input_bytes(program) == before


def test_a_slot_too_small_for_its_tensor_is_refused_at_load(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kernel = SimulatedKernel()
    with ANEDevice.simulated(kernel=kernel) as device:
        with pytest.raises(SubmitValidationError, match=r"slot 4 \(16384 bytes\) is too small"):
            AneProgram(
                device,
                microcode=make_chain((M1_TD_SIZE,)),
                td_size=M1_TD_SIZE,
                td_count=1,
                tiles={4: 16384, 5: 16384},
                io=io_for((1, 1, 200, 64)),  # 200 rows of 128 bytes: 25,600 bytes
            )
        assert kernel.counters["DRM_IOCTL_ANE_BO_INIT"] == kernel.counters["DRM_IOCTL_ANE_BO_FREE"]
    assert "still exported" not in caplog.text


def test_runs_read_what_regions_wrote_and_keep_it(tmp_path: Path) -> None:
    source = graph_model(tmp_path / "relu.onnx", [("Relu", "y")], SHAPE)
    container = synthetic_container(source, tmp_path / "relu_ane.onnx", io_for(SHAPE))
    kernel = SimulatedKernel()
    with ANEDevice.simulated(kernel=kernel) as device, program_for(device, container) as program:
        program.write_region("x", np.full((1, 3, 1, 40), -1.0, np.float16), row=0)
        program.write_region("x", np.full((1, 3, 2, 3), 5.0, np.float16), row=1, column=2)
        first = program.run("onnx").outputs["y"]
        expected = np.zeros(SHAPE, np.float16)
        expected[:, :, 1:3, 2:5] = 5.0
        assert np.array_equal(first, expected)
        # A run without inputs keeps them: the next run sees the same tensor plus one new row.
        program.write_region("x", np.full((1, 3, 1, 1), 7.0, np.float16), row=4, column=0)
        expected[:, :, 4, 0] = 7.0
        assert np.array_equal(program.run("onnx").outputs["y"], expected)
        assert kernel.counters["DRM_IOCTL_ANE_BO_INIT"] == 4


def test_a_run_lays_inputs_out_as_tile_does_and_clears_outputs() -> None:
    rng = np.random.default_rng(7)
    size = layout_for(SHAPE)[2]
    with ANEDevice.simulated() as device, bare_program(device) as program:
        for _ in range(3):
            values = rng.normal(size=SHAPE).astype(np.float32)
            values[0, 1, 2, 3] = np.nan
            program.buffers[4].write(b"\xff" * size)  # what a previous run left
            program.run("direct", {"x": values})
            expected = tile(values, row_stride=io_for(SHAPE)[5].row_stride)
            assert input_bytes(program) == expected
            assert program.buffers[4].read() == bytes(size)


def test_inputs_of_another_kind_are_refused_by_name() -> None:
    with (
        ANEDevice.simulated() as device,
        bare_program(device) as program,
        pytest.raises(InputError, match=r"'x'.*cannot convert"),
    ):
        program.run("direct", {"x": np.full(SHAPE, "a")})


def test_closing_the_device_under_a_program_frees_everything() -> None:
    kernel = SimulatedKernel()
    device = ANEDevice.simulated(kernel=kernel)
    program = bare_program(device)
    program.write_region("x", np.ones((1, 3, 1, 1), np.float16))
    with pytest.warns(ResourceWarning):
        device.close()
    program.close()
    program.close()
    assert kernel.counters["DRM_IOCTL_ANE_BO_INIT"] == kernel.counters["DRM_IOCTL_ANE_BO_FREE"]
