"""verify_container on a multi-chunk container: progress from start to end, one pass per payload."""

from __future__ import annotations

from pathlib import Path

from ane_build.container.verify import verify_container
from ane_build.container.writer import embed_ane_metadata
from ane_build.driver.kernel_onnx.b64 import CHUNK
from ane_build.formats.payload import PayloadRef
from ane_build.synthetic.chains import make_chain, make_weights
from tests.helpers import M1_TD_SIZE, relu_model


def test_progress_runs_through_the_weights_to_their_length(tmp_path: Path) -> None:
    weights = make_weights(3 * CHUNK + 1234, seed=4)  # four chunks of text, and more
    output = tmp_path / "big_ane.onnx"
    embed_ane_metadata(
        relu_model(tmp_path / "m.onnx"),
        output,
        microcode=PayloadRef.from_bytes(make_chain(2)),
        td_size=M1_TD_SIZE,
        td_count=2,
        weights=PayloadRef.from_bytes(weights),
    )
    calls: list[tuple[int, int]] = []
    report = verify_container(output, progress=lambda done, total: calls.append((done, total)))
    assert report.ok, report.summary()
    assert len(calls) >= 4
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == len(weights)
    assert all(d <= total for d, total in calls)
    # The total is known from the start (the text's length), not discovered at the end.
    assert calls[0][1] >= len(weights)
