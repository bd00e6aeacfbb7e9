import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ane_build.cli import convert_main, main
from ane_build.container.metadata import parse_ane_metadata, read_ane_payloads
from ane_build.synthetic.chains import make_chain, make_weights
from tests.helpers import relu_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return relu_model(tmp_path / "relu.onnx")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = convert_main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_bundle_without_descriptors(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    microcode, weights = make_chain(2), make_weights(999)
    bundle = tmp_path / "bundle.json"
    bundle.write_text(
        json.dumps(
            {
                "microcode_b64": base64.b64encode(microcode).decode(),
                "weights_b64": base64.b64encode(weights).decode(),
            }
        )
    )
    code, out, _ = run([str(model), "--bundle", str(bundle)], capsys)
    assert code == 0
    assert "inferred td_count=2" in out
    payloads = read_ane_payloads(tmp_path / "relu_ane.onnx")
    assert (payloads.microcode, payloads.weights) == (microcode, weights)


def test_bundle_folder_with_descriptor_object(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    microcode = make_chain(3)
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "bundle.json").write_text(
        json.dumps(
            {
                "microcode_b64": base64.b64encode(microcode).decode(),
                "tile_descriptors": {
                    "b64": base64.b64encode(microcode).decode(),
                    "entry_size": 0x274,
                    "count": 3,
                },
            }
        )
    )
    code, _out, err = run(
        [str(model), "--bundle", str(folder), "-o", str(tmp_path / "x.onnx")], capsys
    )
    assert code == 0, err
    meta = parse_ane_metadata(tmp_path / "x.onnx")
    assert (meta.td_size, meta.td_count, meta.tile_descriptors_len) == (0x274, 3, len(microcode))


@pytest.mark.parametrize(("flag", "value"), [("--td-size", "0x274"), ("--td-count", "2")])
def test_explicit_paths_with_one_td_value(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    microcode = make_chain(2)
    (tmp_path / "m.tsk").write_bytes(microcode)
    (tmp_path / "td.bin").write_bytes(microcode[:0x274] + microcode[0x300:0x574])
    code, _out, err = run(
        [
            str(model),
            "--microcode",
            str(tmp_path / "m.tsk"),
            "--tile-descriptors",
            str(tmp_path / "td.bin"),
            flag,
            value,
        ],
        capsys,
    )
    assert code == 0, err
    meta = parse_ane_metadata(tmp_path / "relu_ane.onnx")
    assert (meta.td_size, meta.td_count) == (0x274, 2)


def test_discovery_zero_one_two(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "compiler-out"
    root.mkdir()
    code, _, err = run([str(model), "--artifact-root", str(root)], capsys)
    assert code == 1
    assert "convert-to-ane: error:" in err and "*.tsk" in err and "Traceback" not in err
    (root / "a.tsk").write_bytes(make_chain(1))
    code, out, err = run([str(model), "--artifact-root", str(root)], capsys)
    assert code == 0, err
    assert "discovered microcode" in out and "a.tsk" in out
    (root / "b.tsk").write_bytes(make_chain(2))
    code, _, err = run([str(model), "--artifact-root", str(root)], capsys)
    assert code == 1
    assert "a.tsk" in err and "b.tsk" in err and "--microcode" in err


def test_contradiction_shows_both_values(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "m.tsk").write_bytes(make_chain(2))
    code, _, err = run(
        [str(model), "--microcode", str(tmp_path / "m.tsk"), "--td-count", "3"], capsys
    )
    assert code == 1
    assert "td_count is 3 (0x3) but the descriptor chain gives 2 (0x2)" in err


def test_usage_errors_exit_2(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([str(model), "--td-size", "0"], [str(model), "--bogus"], []):
        with pytest.raises(SystemExit) as info:
            convert_main(argv)
        assert info.value.code == 2
    assert "must be greater than 0 (got 0)" in capsys.readouterr().err


def test_missing_model_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "m.tsk").write_bytes(make_chain(1))
    code, _, err = run(
        [str(tmp_path / "nope.onnx"), "--microcode", str(tmp_path / "m.tsk")], capsys
    )
    assert code == 1
    assert "nope.onnx" in err and "Traceback" not in err
    assert not list(tmp_path.glob("*_ane.onnx")) and not list(tmp_path.glob(".*tmp"))
    code, _, err = run(
        ["--verbose", str(tmp_path / "nope.onnx"), "--microcode", str(tmp_path / "m.tsk")], capsys
    )
    assert code == 1 and "Traceback" in err


def test_inspect_verify_submit(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "m.tsk").write_bytes(make_chain(2))
    assert convert_main([str(model), "--microcode", str(tmp_path / "m.tsk")]) == 0
    container = tmp_path / "relu_ane.onnx"
    capsys.readouterr()
    assert main(["inspect", str(container)]) == 0
    out = capsys.readouterr().out
    assert "td_count" in out and "0x274" in out
    assert main(["inspect", "--json", str(container)]) == 0
    assert json.loads(capsys.readouterr().out)["td_count"] == 2
    assert main(["verify", str(container)]) == 0
    assert "FAIL" not in capsys.readouterr().out
    assert main(["submit", str(container), "--device", "sim"]) == 0
    assert "simulator" in capsys.readouterr().out
    assert main(["verify", str(model)]) == 1
    assert main(["inspect", str(model)]) == 1
    assert "ane.microcode.b64" in capsys.readouterr().err


def test_tool_script_and_module_entry_points(model: Path, tmp_path: Path) -> None:
    (tmp_path / "m.tsk").write_bytes(make_chain(1))
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "convert_to_ane.py"),
            str(model),
            "--microcode",
            str(tmp_path / "m.tsk"),
            "-o",
            str(tmp_path / "a.onnx"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ane_build",
            "convert",
            str(model),
            "--microcode",
            str(tmp_path / "m.tsk"),
            "-o",
            str(tmp_path / "b.onnx"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert read_ane_payloads(tmp_path / "a.onnx") == read_ane_payloads(tmp_path / "b.onnx")
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "onnx_submit.py"),
            str(tmp_path / "a.onnx"),
            "--device",
            "sim",
            "--mode",
            "direct",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "simulator" in proc.stdout and "direct mode" in proc.stdout
