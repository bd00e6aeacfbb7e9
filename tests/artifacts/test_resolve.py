"""Tests for artefact resolution: every source, discovery, inference, contradictions, escapes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ane_build import _fs
from ane_build.artifacts import ArtifactSpec, discover_candidates, resolve_artifacts
from ane_build.artifacts.discover import DISCOVERY_MAX_DEPTH
from ane_build.errors import ArtifactError, DescriptorChainError
from ane_build.formats.anec import read_anec
from tests.helpers import M1_TD_SIZE, b64, make_anec_bytes, make_chain, seed_bundle, write

TWO = make_chain((M1_TD_SIZE, M1_TD_SIZE))  # 0x574 bytes, second descriptor at 0x300
ONE = make_chain()
WEIGHTS = bytes(range(256)) * 4


def bundle(path: Path, **fields: Any) -> Path:
    weights = fields.pop("weights", None)
    return seed_bundle(path, TWO, weights, **fields)


def resolve(tmp_path: Path, **spec: Any) -> Any:
    return resolve_artifacts(ArtifactSpec(**spec), base_dir=tmp_path)


# --- bundles ------------------------------------------------------------------------------


def test_bundle_with_descriptor_object(tmp_path: Path) -> None:
    tds = TWO[:M1_TD_SIZE] + TWO[0x300:]
    bundle(
        tmp_path / "out" / "bundle.json",
        weights=WEIGHTS,
        tile_descriptors={"b64": b64(tds), "entry_size": M1_TD_SIZE, "count": 2},
        toolchain="anecc 1.0",
    )
    art = resolve(tmp_path, bundle="out/bundle.json")
    assert art.microcode.read() == TWO and art.weights.read() == WEIGHTS
    assert art.tile_descriptors.read() == tds
    assert (art.td_size, art.td_count) == (M1_TD_SIZE, 2)
    assert art.toolchain == "anecc 1.0"
    assert art.inputs == (tmp_path / "out" / "bundle.json",)
    assert not any("inferred" in n for n in art.notes)


def test_bundle_folder_without_descriptors_infers_from_microcode(tmp_path: Path) -> None:
    bundle(tmp_path / "relu" / "bundle.json")
    art = resolve(tmp_path, bundle="relu")
    assert (art.td_size, art.td_count) == (M1_TD_SIZE, 2)
    assert art.weights is None and art.tile_descriptors is None
    assert "inferred td_count=2 from the microcode's descriptor chain" in art.notes
    assert "inferred td_size=628 from the microcode's descriptor chain" in art.notes
    assert art.inputs == (tmp_path / "relu" / "bundle.json",)


def test_bundle_descriptor_chain_gives_params(tmp_path: Path) -> None:
    bundle(tmp_path / "bundle.json", tile_descriptors={"b64": b64(TWO)})
    art = resolve(tmp_path, bundle="bundle.json")
    assert (art.td_size, art.td_count) == (M1_TD_SIZE, 2)
    assert any(
        n.startswith("inferred td_count=2 from the tile descriptors' chain") for n in art.notes
    )


def test_toolchain_argument_overrides_bundle(tmp_path: Path) -> None:
    bundle(tmp_path / "bundle.json", toolchain="from bundle")
    spec = ArtifactSpec(bundle=Path("bundle.json"))
    art = resolve_artifacts(spec, base_dir=tmp_path, toolchain="from caller")
    assert art.toolchain == "from caller"


# --- explicit paths and descriptor inference ------------------------------------------------


def test_explicit_paths(tmp_path: Path) -> None:
    write(tmp_path / "c" / "m.tsk", TWO)
    write(tmp_path / "c" / "w.bin", WEIGHTS)
    art = resolve(tmp_path, microcode="c/m.tsk", weights="c/w.bin", td_size=628, td_count=2)
    assert art.microcode.path == tmp_path / "c" / "m.tsk" and art.microcode.data is None
    assert art.weights.path == tmp_path / "c" / "w.bin" and art.weights.data is None
    assert art.weights.length == len(WEIGHTS)
    assert (art.td_size, art.td_count) == (628, 2)
    assert art.inputs == (tmp_path / "c" / "m.tsk", tmp_path / "c" / "w.bin")
    assert art.notes == ()


def test_td_count_from_flat_descriptors_and_td_size(tmp_path: Path) -> None:
    # A flat table of two 628-byte entries is not a walkable chain (offsets are the microcode's).
    flat = bytes(2 * M1_TD_SIZE)
    write(tmp_path / "m.tsk", TWO)
    write(tmp_path / "m.td.bin", flat)
    art = resolve(tmp_path, microcode="m.tsk", tile_descriptors="m.td.bin", td_size=628)
    assert art.td_count == 2
    assert any(
        n.startswith("inferred td_count=2 from the tile descriptors' length (m.td.bin, 1256 bytes)")
        for n in art.notes
    )


def test_td_size_from_flat_descriptors_and_td_count(tmp_path: Path) -> None:
    write(tmp_path / "m.tsk", TWO)
    write(tmp_path / "m.td.bin", bytes(2 * M1_TD_SIZE))
    art = resolve(tmp_path, microcode="m.tsk", tile_descriptors="m.td.bin", td_count=2)
    assert art.td_size == 628
    assert any(
        n.startswith("inferred td_size=628 from the tile descriptors' length") for n in art.notes
    )


def test_td_count_only_falls_back_to_microcode_chain(tmp_path: Path) -> None:
    write(tmp_path / "m.tsk", TWO)
    art = resolve(tmp_path, microcode="m.tsk", td_count=2)
    assert art.td_size == 628
    assert art.notes == ("inferred td_size=628 from the microcode's descriptor chain",)


def test_explicit_td_count_contradicting_chain_shows_both(tmp_path: Path) -> None:
    write(tmp_path / "m.tsk", TWO)
    with pytest.raises(DescriptorChainError) as info:
        resolve(tmp_path, microcode="m.tsk", td_count=3)
    text = str(info.value)
    assert "m.tsk" in text and "td_count is 3" in text and "chain gives 2" in text
    assert "artifacts.td_count" in text


def test_explicit_td_size_contradicting_descriptor_chain(tmp_path: Path) -> None:
    write(tmp_path / "m.tsk", TWO)
    write(tmp_path / "m.td.bin", TWO)
    with pytest.raises(
        ArtifactError, match=r"td_count=3 from artifacts\.td_count contradicts .* gives td_count=2"
    ):
        resolve(tmp_path, microcode="m.tsk", tile_descriptors="m.td.bin", td_count=3)


def test_wrong_td_size_leaves_data_after_the_chain(tmp_path: Path) -> None:
    write(tmp_path / "m.tsk", ONE)
    with pytest.raises(DescriptorChainError, match=r"td_size=600 .* suggests td_size=628"):
        resolve(tmp_path, microcode="m.tsk", td_size=600)


def test_zero_padding_after_chain_is_noted(tmp_path: Path) -> None:
    write(tmp_path / "m.tsk", ONE + bytes(12))
    art = resolve(tmp_path, microcode="m.tsk", td_size=628, td_count=1)
    assert art.microcode.length == 640
    assert any("12 zero bytes after its descriptor chain" in n for n in art.notes)


def test_flag_wins_over_bundle_with_a_note(tmp_path: Path) -> None:
    bundle(tmp_path / "bundle.json", td_count=5)
    art = resolve(tmp_path, bundle="bundle.json", td_count=2)
    assert art.td_count == 2
    assert any(
        "td_count=2 from artifacts.td_count overrides td_count=5 from the bundle" in n
        for n in art.notes
    )


def test_bundle_value_contradicting_chain(tmp_path: Path) -> None:
    bundle(tmp_path / "bundle.json", td_count=5)
    with pytest.raises(DescriptorChainError) as info:
        resolve(tmp_path, bundle="bundle.json")
    text = str(info.value)
    assert "td_count is 5" in text and "chain gives 2" in text and "bundle bundle.json" in text


def test_microcode_given_twice_is_an_error_naming_both(tmp_path: Path) -> None:
    bundle(tmp_path / "bundle.json", weights=WEIGHTS)
    write(tmp_path / "one.tsk", ONE)
    with pytest.raises(ArtifactError) as info:
        resolve(tmp_path, bundle="bundle.json", microcode="one.tsk")
    text = str(info.value)
    assert "microcode is given twice: one.tsk (--microcode FILE" in text
    assert "the bundle bundle.json" in text and "--override NAME" in text


def test_declared_override_replaces_the_bundles_payload(tmp_path: Path) -> None:
    bundle(tmp_path / "bundle.json", weights=WEIGHTS)
    write(tmp_path / "one.tsk", ONE)
    art = resolve(tmp_path, bundle="bundle.json", microcode="one.tsk", overrides=["microcode"])
    assert art.microcode.read() == ONE and art.weights.read() == WEIGHTS
    assert art.td_count == 1
    assert "microcode from one.tsk overrides the bundle's" in art.notes


def test_anec_plus_weights_file_needs_an_override(tmp_path: Path) -> None:
    write(tmp_path / "m.anec", make_anec_bytes(ONE, WEIGHTS))
    write(tmp_path / "w.bin", WEIGHTS[::-1])
    with pytest.raises(ArtifactError, match=r"weights is given twice: w\.bin .*file m\.anec"):
        resolve(tmp_path, anec="m.anec", weights="w.bin")
    art = resolve(tmp_path, anec="m.anec", weights="w.bin", overrides=["weights"])
    assert art.weights.read() == WEIGHTS[::-1] and art.microcode.read() == ONE


def test_weights_file_beside_an_anec_without_weights_is_no_conflict(tmp_path: Path) -> None:
    write(tmp_path / "m.anec", make_anec_bytes(ONE))
    write(tmp_path / "w.bin", WEIGHTS)
    art = resolve(tmp_path, anec="m.anec", weights="w.bin")
    assert art.weights.read() == WEIGHTS


def test_override_without_its_file_is_an_error(tmp_path: Path) -> None:
    bundle(tmp_path / "bundle.json")
    with pytest.raises(ArtifactError, match=r"names weights, but no weights file is given"):
        resolve(tmp_path, bundle="bundle.json", overrides=["weights"])


def test_skip_validation_keeps_a_chain_this_tool_does_not_understand(tmp_path: Path) -> None:
    odd = TWO + b"\x01"  # data after the end-of-network descriptor
    write(tmp_path / "m.tsk", odd)
    with pytest.raises(DescriptorChainError, match=r"--skip-validation skips this check"):
        resolve(tmp_path, microcode="m.tsk", td_size=M1_TD_SIZE, td_count=2)
    art = resolve(tmp_path, microcode="m.tsk", td_size=M1_TD_SIZE, td_count=7, skip_validation=True)
    assert (art.td_size, art.td_count) == (M1_TD_SIZE, 7) and art.microcode.read() == odd
    assert any("not checked (skip_validation)" in n for n in art.notes)


def test_skip_validation_reads_an_anec_whose_header_disagrees_with_its_chain(
    tmp_path: Path,
) -> None:
    write(tmp_path / "m.anec", make_anec_bytes(TWO, td_count=5))
    with pytest.raises(DescriptorChainError):
        resolve(tmp_path, anec="m.anec")
    art = resolve(tmp_path, anec="m.anec", skip_validation=True)
    assert art.td_count == 5


def test_io_table_from_the_spec_or_the_bundle(tmp_path: Path) -> None:
    io = {"4": {"role": "output", "name": "y", "c": 3}, "5": {"role": "input", "c": 3, "w": 40}}
    bundle(tmp_path / "bundle.json", io=io)
    art = resolve(tmp_path, bundle="bundle.json")
    assert [(s, v.role, v.name, v.w, v.row_stride) for s, v in art.io.items()] == [
        (4, "output", "y", 1, 64),
        (5, "input", None, 40, 128),
    ]
    assert art.tiles == {4: 16384, 5: 16384}
    write(tmp_path / "m.tsk", TWO)
    spec_io = {6: {"role": "input", "c": 2, "h": 3, "w": 4, "plane_stride": 4096}}
    art = resolve(tmp_path, microcode="m.tsk", io=spec_io)
    assert art.io[6].plane_stride == 4096 and art.tiles == {6: 16384}
    art = resolve(tmp_path, bundle="bundle.json", io=spec_io)
    assert sorted(art.io) == [6]
    assert any("replace the bundle's" in n for n in art.notes)


# --- .anec -----------------------------------------------------------------------------------


def test_explicit_anec_sample(anec_samples: Path, tmp_path: Path) -> None:
    path = anec_samples / "concat.ane"
    art = resolve_artifacts(ArtifactSpec(anec=path), base_dir=tmp_path)
    assert (art.td_size, art.td_count) == (0x274, 2)
    assert art.tiles == {0: 2 * 16384, 4: 65 * 16384, 5: 16384, 6: 64 * 16384}
    assert [art.io[s].role for s in (4, 5, 6)] == ["output", "input", "input"]
    assert art.microcode.read() == path.read_bytes()[0x1000 : 0x1000 + 0x574]
    assert art.inputs == (path,)


def test_anec_via_discovery(anec_samples: Path, tmp_path: Path) -> None:
    (tmp_path / "out" / "relu").mkdir(parents=True)
    (tmp_path / "out" / "relu" / "relu.ane").symlink_to(anec_samples / "relu.ane")
    art = resolve(tmp_path, root="out")
    assert "discovered anec: out/relu/relu.ane" in art.notes
    assert art.inputs == (tmp_path / "out" / "relu" / "relu.ane",)
    assert art.io[5].w == 77 and art.weights.length == 0x4000
    # The same link escapes the project once outside paths are refused.
    with pytest.raises(ArtifactError, match=r"relu\.ane resolves to .* outside the project root"):
        resolve_artifacts(ArtifactSpec(root=Path("out")), base_dir=tmp_path, allow_outside=False)


def test_synthetic_anec_with_legacy_offset(tmp_path: Path) -> None:
    write(tmp_path / "m.anec", make_anec_bytes(TWO, WEIGHTS, td_count=2, payload_offset=0x800))
    art = resolve(tmp_path, anec="m.anec", anec_payload_offset=0x800)
    assert art.td_count == 2 and art.weights.read() == WEIGHTS
    assert art.io[4].name == "output0" and art.io[5].name == "input0"


def test_bundle_and_anec_together_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"choose one: --bundle PATH .* or --anec FILE"):
        resolve(tmp_path, bundle="b.json", anec="m.anec")


# --- discovery ---------------------------------------------------------------------------------


def test_discovery_single_candidates(tmp_path: Path) -> None:
    write(tmp_path / "compiler-out" / "relu" / "model.tsk", TWO)
    write(tmp_path / "compiler-out" / "relu" / "model_weights.bin", WEIGHTS)
    write(tmp_path / "compiler-out" / "relu" / "model_tile_desc.bin", bytes(2 * 628))
    write(tmp_path / "compiler-out" / "relu" / "readme.txt", b"x")
    art = resolve(tmp_path, root="compiler-out")
    assert art.microcode.read() == TWO and art.weights.read() == WEIGHTS
    assert art.notes[:3] == (
        "discovered microcode: compiler-out/relu/model.tsk",
        "discovered weights: compiler-out/relu/model_weights.bin",
        "discovered tile descriptors: compiler-out/relu/model_tile_desc.bin",
    )
    assert (art.td_size, art.td_count) == (628, 2)
    assert len(art.inputs) == 3


def test_discovery_fills_only_what_is_missing(tmp_path: Path) -> None:
    write(tmp_path / "out" / "a.tsk", TWO)
    write(tmp_path / "out" / "b.tsk", ONE)
    write(tmp_path / "out" / "w.weights", WEIGHTS)
    art = resolve(tmp_path, root="out", microcode="out/b.tsk")
    assert art.microcode.read() == ONE and art.weights.read() == WEIGHTS
    assert art.notes[0] == "discovered weights: out/w.weights"
    assert not any("microcode:" in n for n in art.notes)


def test_discovery_nothing_found(tmp_path: Path) -> None:
    write(tmp_path / "out" / "notes.txt", b"")
    with pytest.raises(ArtifactError) as info:
        resolve(tmp_path, root="out")
    text = str(info.value)
    assert "no compiler artefacts found under out" in text
    for pattern in ("bundle.json", "*.anec", "*.ane", "*.tsk", "*.microcode", "*weights*.bin"):
        assert pattern in text
    assert "--microcode FILE" in text and "artifacts.microcode" in text


@pytest.mark.parametrize(
    ("microcode", "weights", "descriptors"),
    [
        ("m.tsk.bin", "m.aneweights", "m.tds"),
        ("m.microcode.bin", "m.aneweights.bin", "m.ane.td"),
        ("m.tsk.bin", "m.aneweights", "m.tile_descriptors.bin"),
        ("m.tsk", "m.weights", "m.tiledesc.bin"),
    ],
)
def test_discovery_finds_the_seeds_suffixes(
    tmp_path: Path, microcode: str, weights: str, descriptors: str
) -> None:
    write(tmp_path / "out" / microcode, TWO)
    write(tmp_path / "out" / weights, WEIGHTS)
    write(tmp_path / "out" / descriptors, TWO)
    art = resolve(tmp_path, root="out")
    assert art.microcode.read() == TWO and art.weights.read() == WEIGHTS
    assert art.tile_descriptors.read() == TWO
    assert f"discovered microcode: out/{microcode}" in art.notes


def test_discovery_two_microcode_candidates(tmp_path: Path) -> None:
    write(tmp_path / "out" / "a" / "model.tsk", TWO)
    write(tmp_path / "out" / "b" / "model.microcode", TWO)
    with pytest.raises(ArtifactError) as info:
        resolve(tmp_path, root="out")
    text = str(info.value)
    assert "out/a/model.tsk" in text and "out/b/model.microcode" in text
    assert "--microcode FILE (config key artifacts.microcode)" in text


def test_discovery_bundle_and_microcode_are_ambiguous(tmp_path: Path) -> None:
    bundle(tmp_path / "out" / "bundle.json")
    write(tmp_path / "out" / "model.tsk", TWO)
    with pytest.raises(ArtifactError) as info:
        resolve(tmp_path, root="out")
    text = str(info.value)
    assert "out/bundle.json (bundle)" in text and "out/model.tsk (microcode)" in text
    assert "--bundle PATH" in text and "--microcode FILE" in text


def test_discovery_two_weights_candidates(tmp_path: Path) -> None:
    write(tmp_path / "out" / "m.tsk", TWO)
    write(tmp_path / "out" / "weights.bin", WEIGHTS)
    write(tmp_path / "out" / "old_weights.bin", WEIGHTS)
    with pytest.raises(ArtifactError) as info:
        resolve(tmp_path, root="out")
    text = str(info.value)
    assert "out/old_weights.bin" in text and "out/weights.bin" in text
    assert "--weights FILE (config key artifacts.weights)" in text
    # Naming the weights resolves it.
    art = resolve(tmp_path, root="out", weights="out/weights.bin")
    assert art.weights.path == tmp_path / "out" / "weights.bin"


def test_discovered_bundle_is_used(tmp_path: Path) -> None:
    bundle(tmp_path / "out" / "relu" / "bundle.json", weights=WEIGHTS)
    write(tmp_path / "out" / "relu" / "stray_weights.bin", b"other")
    art = resolve(tmp_path, root="out")
    assert art.notes[0] == "discovered bundle: out/relu/bundle.json"
    # A bundle is self-contained: loose files next to it are not mixed in.
    assert art.weights.read() == WEIGHTS
    assert art.inputs == (tmp_path / "out" / "relu" / "bundle.json",)


def test_discover_candidates_skips_hidden_temp_and_deep(tmp_path: Path) -> None:
    write(tmp_path / "b.tsk", b"")
    write(tmp_path / "a.tsk", b"")
    write(tmp_path / ".hidden.tsk", b"")
    write(tmp_path / ".git" / "x.tsk", b"")
    write(tmp_path / "m.tsk.tmp", b"")
    write(tmp_path / "m.tsk~", b"")
    deep = tmp_path.joinpath(*["d"] * (DISCOVERY_MAX_DEPTH + 1))
    write(deep / "deep.tsk", b"")
    write(tmp_path.joinpath(*["d"] * DISCOVERY_MAX_DEPTH) / "ok.TSK", b"")
    write(tmp_path / "x.td.bin", b"")
    write(tmp_path / "net_tile_desc.bin", b"")
    write(tmp_path / "k.weights", b"")
    write(tmp_path / "m.anec", b"")
    write(tmp_path / "sub" / "bundle.json", b"")
    found = discover_candidates(tmp_path)
    assert found["microcode"] == [
        tmp_path / "a.tsk",
        tmp_path / "b.tsk",
        tmp_path.joinpath(*["d"] * DISCOVERY_MAX_DEPTH) / "ok.TSK",
    ]
    assert found["tile_descriptors"] == [tmp_path / "net_tile_desc.bin", tmp_path / "x.td.bin"]
    assert found["weights"] == [tmp_path / "k.weights"]
    assert found["anec"] == [tmp_path / "m.anec"]
    assert found["bundle"] == [tmp_path / "sub" / "bundle.json"]
    with pytest.raises(ArtifactError, match="does not exist"):
        discover_candidates(tmp_path / "missing")


def test_nothing_given_at_all(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"no compiler artefacts given: .*--artifact-root DIR"):
        resolve(tmp_path)


# --- bad files and escapes --------------------------------------------------------------------


def test_bad_files_name_the_file_and_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ArtifactError, match=r"microcode .*missing\.tsk: does not exist"):
        resolve(tmp_path, microcode="missing.tsk")
    (tmp_path / "dir.tsk").mkdir()
    with pytest.raises(ArtifactError, match=r"dir\.tsk: is a directory"):
        resolve(tmp_path, microcode="dir.tsk")
    (tmp_path / "loop.tsk").symlink_to(tmp_path / "loop.tsk")
    with pytest.raises(ArtifactError, match=r"loop\.tsk: symlink loop"):
        resolve(tmp_path, microcode="loop.tsk")
    (tmp_path / "dangling.tsk").symlink_to(tmp_path / "gone.tsk")
    with pytest.raises(ArtifactError, match=r"dangling\.tsk: dangling symlink"):
        resolve(tmp_path, microcode="dangling.tsk")
    write(tmp_path / "m.tsk", TWO)

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(args[0]))

    # Tests run as root, where chmod cannot make a file unreadable; simulate the kernel's answer.
    monkeypatch.setattr(_fs, "open", denied, raising=False)
    with pytest.raises(ArtifactError, match=r"microcode .*m\.tsk: permission denied"):
        resolve(tmp_path, microcode="m.tsk")


def test_escape_with_dotdot(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write(tmp_path / "outside.tsk", TWO)
    project.mkdir()
    spec = ArtifactSpec(microcode=Path("../outside.tsk"))
    with pytest.raises(ArtifactError) as info:
        resolve_artifacts(spec, base_dir=project, allow_outside=False)
    assert "../outside.tsk" in str(info.value) and "outside the project root" in str(info.value)
    art = resolve_artifacts(spec, base_dir=project)  # allowed by default
    assert art.microcode.read() == TWO


def test_escape_with_symlink(tmp_path: Path) -> None:
    project = tmp_path / "project"
    seed_bundle(tmp_path / "elsewhere" / "bundle.json", TWO)
    project.mkdir()
    (project / "link").symlink_to(tmp_path / "elsewhere")
    spec = ArtifactSpec(bundle=Path("link"))
    with pytest.raises(ArtifactError, match=r"bundle .*project/link resolves to .*/elsewhere,"):
        resolve_artifacts(spec, base_dir=project, allow_outside=False)
    assert resolve_artifacts(spec, base_dir=project).td_count == 2
    inside = ArtifactSpec(root=Path("."))
    write(project / "in.tsk", ONE)
    assert resolve_artifacts(inside, base_dir=project, allow_outside=False).td_count == 1


def test_microcode_too_large_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ane_build.artifacts import descriptors

    monkeypatch.setattr(descriptors, "MAX_CHAIN_BYTES", 1000)
    write(tmp_path / "big.tsk", TWO)
    with pytest.raises(ArtifactError, match=r"big\.tsk is 1396 bytes, more than any descriptor"):
        resolve(tmp_path, microcode="big.tsk")


# --- the spec model ---------------------------------------------------------------------------


def test_spec_model() -> None:
    spec = ArtifactSpec(microcode="a.tsk", td_size=628)  # type: ignore[arg-type]
    assert spec.microcode == Path("a.tsk") and spec.anec_payload_offset == 0x1000
    with pytest.raises(ValidationError):
        ArtifactSpec(micrcode="a.tsk")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        ArtifactSpec(td_size=0)
    with pytest.raises(ValidationError, match="boolean"):
        ArtifactSpec(td_count=True)
    with pytest.raises(ValidationError):
        ArtifactSpec(anec_payload_offset=0x100)
    with pytest.raises(ValidationError):
        spec.td_size = 1
    assert set(ArtifactSpec.model_fields) == {
        "root",
        "anec",
        "bundle",
        "microcode",
        "tile_descriptors",
        "weights",
        "td_size",
        "td_count",
        "anec_payload_offset",
        "overrides",
        "skip_validation",
        "io",
    }


def test_relative_base_dir_is_anchored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "proj" / "m.tsk", TWO)
    monkeypatch.chdir(tmp_path)
    art = resolve_artifacts(ArtifactSpec(microcode=Path("m.tsk")), base_dir=Path("proj"))
    assert art.microcode.path == tmp_path / "proj" / "m.tsk"
    assert os.path.isabs(art.inputs[0])


def test_anec_sample_resolves_to_its_header_values(anec_samples: Path) -> None:
    path = anec_samples / "concat.ane"
    f = read_anec(path)
    art = resolve_artifacts(ArtifactSpec(anec=path), toolchain="anecc")
    assert (art.td_size, art.td_count, art.toolchain) == (0x274, 2, "anecc")
    assert art.microcode == f.microcode and art.weights == f.weights
    assert art.io == f.io and art.tiles == f.tiles
    assert art.inputs == (path,)
    assert art.tile_descriptors is None
    assert any("td_count=2" in note for note in art.notes)
