"""Tests for build.project and build.config: messages, defaults, path rules, digests, schema."""

from __future__ import annotations

import json
from pathlib import Path

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ane_build.build.config import DeployConfig, ModelConfig, config_schema, schema_text
from ane_build.build.layout import find_project_root
from ane_build.build.project import load_project
from ane_build.build.taskgraph import CONVERT_SECTIONS, DEPLOY_SECTIONS, settings_digest
from ane_build.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def make_project(root: Path, files: dict[str, str]) -> Path:
    (root / "configs").mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / "configs" / name).write_text(text, encoding="utf-8")
    return root


def problems(root: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_project(root)
    return str(info.value).splitlines()


RELU = 'source = "models/relu.onnx"\n[artifacts]\nroot = "compiler-out/relu"\n'


# --- valid projects -----------------------------------------------------------------------


def test_loads_models_sorted_with_defaults_and_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(
        tmp_path / "proj",
        {
            "relu.toml": RELU + '[deploy]\ndevice = "sim"\n',
            "add.toml": 'source = "models/add.onnx"\noutput = "out/add.onnx"\n'
            'toolchain = "anecc, macOS 12.4"\n[artifacts]\nanec = "c/add.anec"\ntd_size = 628\n',
            "defaults.toml": '[deploy]\nsubmit_mode = "direct"\ndevice = "auto"\n'
            "[artifacts]\ntd_count = 2\n",
        },
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # paths must not depend on the cwd

    project = load_project(Path("../proj"))

    assert project.root == root.resolve()
    assert list(project.models) == ["add", "relu"]
    relu = project.models["relu"]
    assert relu.source == root.resolve() / "models/relu.onnx"
    assert relu.output == root.resolve() / "build/relu_ane.onnx"
    assert relu.artifacts.root == root.resolve() / "compiler-out/relu"
    assert relu.config_path == root.resolve() / "configs/relu.toml"
    # Model file wins over defaults; untouched defaults still apply (deep merge).
    assert relu.config.deploy == DeployConfig(device="sim", submit_mode="direct")
    assert relu.artifacts.td_count == 2
    add = project.models["add"]
    assert add.output == root.resolve() / "out/add.onnx"
    assert add.artifacts.anec == root.resolve() / "c/add.anec"
    assert add.artifacts.td_size == 628
    assert add.config.toolchain == "anecc, macOS 12.4"
    assert project.defaults_path == root.resolve() / "configs/defaults.toml"
    assert project.config_files[-1] == project.defaults_path
    assert {spec.output for spec in project.models.values()} == {add.output, relu.output}


def test_missing_artefacts_are_not_an_error(tmp_path: Path) -> None:
    make_project(tmp_path, {"relu.toml": RELU + 'weights = "nowhere/w.bin"\n'})
    spec = load_project(tmp_path).models["relu"]
    assert spec.artifact_paths() == {
        "root": tmp_path.resolve() / "compiler-out/relu",
        "weights": tmp_path.resolve() / "nowhere/w.bin",
    }


def test_hidden_and_non_toml_files_are_not_models(tmp_path: Path) -> None:
    make_project(
        tmp_path,
        {"relu.toml": RELU, ".#relu.toml": "garbage [", "schema.json": "{}", "notes.txt": "x"},
    )
    assert list(load_project(tmp_path).models) == ["relu"]


def test_models_are_frozen(tmp_path: Path) -> None:
    make_project(tmp_path, {"relu.toml": RELU})
    config = load_project(tmp_path).models["relu"].config
    with pytest.raises(pydantic.ValidationError):
        config.toolchain = "x"
    with pytest.raises(pydantic.ValidationError):
        ModelConfig.model_validate({"source": "a.onnx", "bogus": 1})


def test_root_given_through_a_symlink(tmp_path: Path) -> None:
    real = make_project(tmp_path / "real", {"relu.toml": RELU})
    (tmp_path / "link").symlink_to(real)
    project = load_project(tmp_path / "link")
    assert project.root == real.resolve()
    assert project.models["relu"].source == real.resolve() / "models/relu.onnx"


def test_empty_configs_folder_gives_an_empty_project(tmp_path: Path) -> None:
    make_project(tmp_path, {})
    assert load_project(tmp_path).models == {}


# --- error messages -------------------------------------------------------------------------


def test_error_line_names_file_key_message_and_value(tmp_path: Path) -> None:
    make_project(tmp_path, {"relu.toml": RELU + "td_size = -3\n"})
    assert problems(tmp_path) == [
        "configs/relu.toml: artifacts.td_size: must be greater than 0 (got -3)"
    ]


def test_every_problem_in_every_file_is_listed(tmp_path: Path) -> None:
    make_project(
        tmp_path,
        {
            "a.toml": 'source = "a.onnx"\n[deploy]\nsubmit_mode = "fast"\ndevice = "accel0"\n',
            "b.toml": 'source = "b.onnx"\nallow_outside_root = "yes"\n'
            '[artifacts]\ntd_count = "4"\n',
            "c.toml": "output = 'x.onnx'\n",
        },
    )
    assert problems(tmp_path) == [
        'configs/a.toml: deploy.device: must be "auto", "sim", "sim:stock" or a device node '
        'path under /dev/ (got "accel0")',
        'configs/a.toml: deploy.submit_mode: must be "onnx" or "direct" (got "fast")',
        'configs/b.toml: allow_outside_root: must be true or false (got "yes")',
        'configs/b.toml: artifacts.td_count: must be an integer (got "4")',
        "configs/c.toml: source: required key is missing",
    ]


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("td_size = 4.0", "artifacts.td_size: must be an integer (got 4.0)"),
        ("td_size = true", "artifacts.td_size: must be an integer (got true)"),
        ("td_size = nan", "artifacts.td_size: must be an integer (got nan)"),  # not None
        ("root = 5", "artifacts.root: must be a string (got 5)"),
        ("root = [1, 2]", "artifacts.root: must be a string (got [1, 2])"),
    ],
)
def test_wrong_types_name_expected_type_and_value(tmp_path: Path, toml: str, expected: str) -> None:
    make_project(tmp_path, {"relu.toml": f'source = "r.onnx"\n[artifacts]\n{toml}\n'})
    (line,) = problems(tmp_path)
    assert line == f"configs/relu.toml: {expected}"


def test_table_expected(tmp_path: Path) -> None:
    make_project(tmp_path, {"relu.toml": 'source = "r.onnx"\ndeploy = "sim"\n'})
    assert problems(tmp_path) == ['configs/relu.toml: deploy: must be a table (got "sim")']


def test_unknown_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    make_project(tmp_path, {"relu.toml": RELU + "tdsize = 4\n", "b.toml": 'source="b"\nsorce=1\n'})
    lines = problems(tmp_path)
    assert len(lines) == 2
    assert lines[0].startswith("configs/b.toml: sorce: unknown key (allowed: ")
    assert lines[0].endswith("did you mean 'source'?")
    assert lines[1].startswith("configs/relu.toml: artifacts.tdsize: unknown key (allowed: anec,")
    assert "td_size" in lines[1]
    assert lines[1].endswith("did you mean 'td_size'?")


def test_toml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    make_project(tmp_path, {"relu.toml": 'source = "r.onnx"\ntoolchain = anecc\n'})
    (line,) = problems(tmp_path)
    assert line.startswith("configs/relu.toml: line 2, column 13: invalid TOML: ")


def test_toml_not_utf8(tmp_path: Path) -> None:
    make_project(tmp_path, {})
    (tmp_path / "configs/relu.toml").write_bytes(b'source = "\xff"\n')
    (line,) = problems(tmp_path)
    assert line.startswith("configs/relu.toml: not valid UTF-8")


def test_toml_dates_are_rejected(tmp_path: Path) -> None:
    make_project(tmp_path, {"relu.toml": "source = 1979-05-27\n"})
    assert problems(tmp_path) == [
        "configs/relu.toml: source: must not be a TOML date or time (got 1979-05-27)"
    ]


def test_empty_paths_and_toolchain_are_rejected(tmp_path: Path) -> None:
    make_project(tmp_path, {"relu.toml": 'source = ""\ntoolchain = ""\n'})
    assert problems(tmp_path) == [
        'configs/relu.toml: source: must be a file path, not empty (got "")',
        'configs/relu.toml: toolchain: must have at least 1 character (got "")',
    ]


def test_keys_needing_quotes_are_quoted(tmp_path: Path) -> None:
    make_project(tmp_path, {"relu.toml": RELU + '"a.b" = 1\n'})
    (line,) = problems(tmp_path)
    assert line.startswith('configs/relu.toml: artifacts."a.b": unknown key')


@settings(max_examples=25, deadline=None)
@given(value=st.integers(max_value=0))
def test_non_positive_td_size_always_reports_its_value(
    tmp_path_factory: pytest.TempPathFactory, value: int
) -> None:
    root = make_project(tmp_path_factory.mktemp("p"), {"m.toml": RELU + f"td_size = {value}\n"})
    assert problems(root) == [
        f"configs/m.toml: artifacts.td_size: must be greater than 0 (got {value})"
    ]


# --- defaults -------------------------------------------------------------------------------


def test_defaults_may_not_set_source_or_output(tmp_path: Path) -> None:
    make_project(
        tmp_path,
        {"relu.toml": RELU, "defaults.toml": 'source = "s.onnx"\noutput = "o.onnx"\n'},
    )
    assert problems(tmp_path) == [
        "configs/defaults.toml: source: not allowed in defaults (every model sets its own) "
        '(got "s.onnx")',
        "configs/defaults.toml: output: not allowed in defaults (every model sets its own) "
        '(got "o.onnx")',
    ]


def test_defaults_errors_name_defaults_file_once(tmp_path: Path) -> None:
    make_project(
        tmp_path,
        {
            "a.toml": 'source = "a.onnx"\n',
            "b.toml": 'source = "b.onnx"\n',
            "defaults.toml": "[deploy]\nmode = 1\n",
        },
    )
    (line,) = problems(tmp_path)
    assert line.startswith("configs/defaults.toml: deploy.mode: unknown key (allowed: device,")


def test_model_value_overriding_a_bad_default_is_attributed_to_the_model(tmp_path: Path) -> None:
    make_project(
        tmp_path,
        {
            "a.toml": 'source = "a.onnx"\n[artifacts]\ntd_size = 0\n',
            "defaults.toml": "[artifacts]\ntd_size = 628\n",
        },
    )
    assert problems(tmp_path) == [
        "configs/a.toml: artifacts.td_size: must be greater than 0 (got 0)"
    ]


def test_defaults_are_checked_without_any_model(tmp_path: Path) -> None:
    make_project(tmp_path, {"defaults.toml": '[deploy]\ndevice = "gpu"\n'})
    (line,) = problems(tmp_path)
    assert line.startswith("configs/defaults.toml: deploy.device: must be")


def test_defaults_syntax_error(tmp_path: Path) -> None:
    make_project(tmp_path, {"relu.toml": RELU, "defaults.toml": "[deploy\n"})
    (line,) = problems(tmp_path)
    assert line.startswith("configs/defaults.toml: line 1, column 8: invalid TOML")


# --- names ------------------------------------------------------------------------------------


def test_invalid_model_name(tmp_path: Path) -> None:
    make_project(tmp_path, {"my model.toml": RELU, "ok-1.2_x.toml": RELU})
    (line,) = problems(tmp_path)
    assert line.startswith("configs/my model.toml: invalid model name 'my model'")


def test_case_insensitive_duplicates_name_both_files(tmp_path: Path) -> None:
    make_project(tmp_path, {"Relu.toml": RELU, "relu.toml": RELU.replace("relu", "relu2")})
    if len(list((tmp_path / "configs").iterdir())) < 2:
        pytest.skip("case-insensitive file system")
    (line,) = problems(tmp_path)
    assert line.startswith("configs/Relu.toml, configs/relu.toml: model names differ only in case")


# --- project-level checks --------------------------------------------------------------------


def test_two_models_with_the_same_output(tmp_path: Path) -> None:
    make_project(
        tmp_path,
        {
            "a.toml": 'source = "a.onnx"\noutput = "build/x.onnx"\n',
            "b.toml": 'source = "b.onnx"\noutput = "build/../build/x.onnx"\n',
        },
    )
    assert problems(tmp_path) == [
        "configs/a.toml, configs/b.toml: output: these models all write build/x.onnx; give each "
        "its own output"
    ]


def test_output_over_a_source_or_an_artefact(tmp_path: Path) -> None:
    make_project(
        tmp_path,
        {
            "a.toml": 'source = "models/a.onnx"\noutput = "models/b.onnx"\n',
            "b.toml": 'source = "models/b.onnx"\n[artifacts]\nweights = "w.bin"\n',
            "c.toml": 'source = "models/c.onnx"\noutput = "w.bin"\n',
            "d.toml": 'source = "models/d.onnx"\noutput = "models/d.onnx"\n',
        },
    )
    assert problems(tmp_path) == [
        "configs/a.toml: output: models/b.onnx is also the source of model 'b' (configs/b.toml); "
        "it would be overwritten",
        "configs/c.toml: output: w.bin is also the artifacts.weights of model 'b' "
        "(configs/b.toml); it would be overwritten",
        "configs/d.toml: output: models/d.onnx is also this model's source; it would be "
        "overwritten",
    ]


def test_output_equal_to_a_source_through_a_symlink(tmp_path: Path) -> None:
    make_project(tmp_path, {"a.toml": 'source = "models/a.onnx"\noutput = "alias/a.onnx"\n'})
    (tmp_path / "models").mkdir()
    (tmp_path / "alias").symlink_to("models")
    (line,) = problems(tmp_path)
    assert line.startswith("configs/a.toml: output: alias/a.onnx is also this model's source")


def test_output_inside_configs(tmp_path: Path) -> None:
    make_project(tmp_path, {"a.toml": 'source = "a.onnx"\noutput = "configs/a_ane.onnx"\n'})
    (line,) = problems(tmp_path)
    assert line.startswith("configs/a.toml: output: configs/a_ane.onnx is inside configs/")


@pytest.mark.parametrize(
    ("key", "toml"),
    [
        ("source", 'source = "../x.onnx"\n'),
        ("output", 'source = "x.onnx"\noutput = "/tmp/out.onnx"\n'),
        ("artifacts.anec", 'source = "x.onnx"\n[artifacts]\nanec = "../../a.anec"\n'),
    ],
)
def test_paths_leaving_the_root(tmp_path: Path, key: str, toml: str) -> None:
    root = make_project(tmp_path / "p", {"a.toml": toml})
    (line,) = problems(root)
    assert line.startswith(f"configs/a.toml: {key}: resolves to /")
    assert f"outside the project root {root.resolve()}" in line
    assert "allow_outside_root = true" in line
    (root / "configs/a.toml").write_text("allow_outside_root = true\n" + toml)
    assert list(load_project(root).models) == ["a"]


def test_symlink_leaving_the_root(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", {"a.toml": 'source = "models/a.onnx"\n'})
    (tmp_path / "outside").mkdir()
    (root / "models").symlink_to(tmp_path / "outside")
    (line,) = problems(root)
    assert line.startswith(f"configs/a.toml: source: resolves to {tmp_path.resolve()}/outside/")
    # The stored path keeps the symlink, so retargeting it later is followed by the build.
    (root / "configs/a.toml").write_text('allow_outside_root = true\nsource = "models/a.onnx"\n')
    assert load_project(root).models["a"].source == root.resolve() / "models/a.onnx"


def test_symlink_loop_is_a_clear_error(tmp_path: Path) -> None:
    make_project(tmp_path, {"a.toml": 'source = "m/loop1"\n'})
    (tmp_path / "m").mkdir()
    (tmp_path / "m/loop1").symlink_to("loop2")
    (tmp_path / "m/loop2").symlink_to("loop1")
    assert problems(tmp_path) == [
        'configs/a.toml: source: symlink loop while resolving (got "m/loop1")'
    ]


def test_missing_configs_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no configs/ folder"):
        load_project(tmp_path)


# --- find_project_root ---------------------------------------------------------------------


def test_find_project_root_walks_up(tmp_path: Path) -> None:
    make_project(tmp_path, {})
    deep = tmp_path / "a/b/c"
    deep.mkdir(parents=True)
    assert find_project_root(deep) == tmp_path.resolve()
    (deep / "f.txt").write_text("")
    assert find_project_root(deep / "f.txt") == tmp_path.resolve()
    assert find_project_root(tmp_path) == tmp_path.resolve()


def test_find_project_root_fails_clearly(tmp_path: Path) -> None:
    if any((p / "configs").is_dir() for p in (tmp_path, *tmp_path.parents)):
        pytest.skip("a parent of the temporary folder holds configs/")
    with pytest.raises(ConfigError, match=r"no configs/ folder here or in any parent folder"):
        find_project_root(tmp_path)


# --- flat settings and digests ---------------------------------------------------------------


def test_flat_dict_lists_every_effective_setting(tmp_path: Path) -> None:
    make_project(tmp_path, {"relu.toml": RELU + "td_size = 4\n"})
    flat = load_project(tmp_path).models["relu"].as_flat_dict()
    assert flat["source"] == "models/relu.onnx"
    assert flat["output"] == "build/relu_ane.onnx"
    assert flat["artifacts.root"] == "compiler-out/relu"
    assert flat["artifacts.td_size"] == 4
    assert flat["artifacts.weights"] is None
    assert flat["artifacts.anec_payload_offset"] == 0x1000
    assert flat["deploy.device"] == "auto"
    assert flat["deploy.submit_mode"] == "onnx"
    assert flat["allow_outside_root"] is False
    assert list(flat) == sorted(flat)
    json.dumps(flat)  # JSON-compatible, for the build system's state


def test_flat_dict_shows_outside_paths_absolute(tmp_path: Path) -> None:
    make_project(tmp_path / "p", {"a.toml": 'allow_outside_root = true\nsource = "../x.onnx"\n'})
    flat = load_project(tmp_path / "p").models["a"].as_flat_dict()
    assert flat["source"] == str(tmp_path.resolve() / "x.onnx")


def test_digest_follows_only_its_sections(tmp_path: Path) -> None:
    make_project(tmp_path, {"relu.toml": RELU})
    before = load_project(tmp_path).models["relu"]
    (tmp_path / "configs/relu.toml").write_text(RELU + '[deploy]\ndevice = "sim"\n')
    after = load_project(tmp_path).models["relu"]
    assert settings_digest(before.settings(*DEPLOY_SECTIONS)) != settings_digest(
        after.settings(*DEPLOY_SECTIONS)
    )
    assert settings_digest(before.settings()) != settings_digest(after.settings())
    assert settings_digest(before.settings(*CONVERT_SECTIONS)) == settings_digest(
        after.settings(*CONVERT_SECTIONS)
    )
    assert after.settings("deploy") == {"deploy.device": "sim", "deploy.submit_mode": "onnx"}
    # "source" must not select a hypothetical "source_extra" key: exact or dotted prefix only.
    assert set(after.settings("source")) == {"source"}


def test_digest_ignores_explicit_defaults_and_the_project_location(tmp_path: Path) -> None:
    make_project(tmp_path / "one", {"relu.toml": RELU})
    explicit = RELU.replace("[artifacts]", 'output = "build/relu_ane.onnx"\n[artifacts]')
    make_project(tmp_path / "two", {"relu.toml": explicit + "anec_payload_offset = 4096\n"})
    one = load_project(tmp_path / "one").models["relu"]
    two = load_project(tmp_path / "two").models["relu"]
    assert settings_digest(one.settings()) == settings_digest(two.settings())


# --- JSON schema -------------------------------------------------------------------------


def test_schema_describes_the_config() -> None:
    schema = config_schema()
    assert "required" not in schema
    assert schema["oneOf"] == [{"required": ["source"]}, {"required": ["llm"]}]
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(ModelConfig.model_fields)
    deploy = schema["$defs"]["DeployConfig"]["properties"]
    assert deploy["submit_mode"]["enum"] == ["onnx", "direct"]
    # TOML has no null: optional keys must not advertise it.
    assert "null" not in schema_text()


def test_committed_schema_is_current() -> None:
    committed = REPO / "configs" / "schema.json"
    assert committed.is_file(), "configs/schema.json is missing"
    assert committed.read_text(encoding="utf-8") == schema_text(), (
        "configs/schema.json is stale; regenerate it with "
        "`python -m ane_build schema > configs/schema.json`"
    )


# --- keep going: broken configs are set aside, per model ----------------------------------


def test_problems_are_filed_under_the_models_they_concern(tmp_path: Path) -> None:
    make_project(
        tmp_path,
        {
            "good.toml": 'source = "g.onnx"\n',
            "bad.toml": 'source = "b.onnx"\n[deploy]\nmode = 1\n',
            "x.toml": 'source = "x.onnx"\noutput = "build/same.onnx"\n',
            "y.toml": 'source = "y.onnx"\noutput = "build/same.onnx"\n',
        },
    )
    project = load_project(tmp_path, strict=False)
    assert sorted(project.models) == ["good"]
    assert sorted(project.broken) == ["bad", "x", "y"]
    assert project.broken["bad"][0].startswith("configs/bad.toml: deploy.mode: unknown key")
    assert project.broken["x"] == project.broken["y"]
    # Strict loading still lists them all in one error.
    assert len(problems(tmp_path)) == 2


def test_a_broken_defaults_file_breaks_every_model(tmp_path: Path) -> None:
    make_project(tmp_path, {"a.toml": 'source = "a.onnx"\n', "defaults.toml": "[deploy\n"})
    project = load_project(tmp_path, strict=False)
    assert project.models == {} and list(project.broken) == ["a"]
    assert project.broken["a"][0].startswith("configs/defaults.toml: line 1")


# --- [compile] and [check] -----------------------------------------------------------------


def test_compile_table_resolves_placeholders_and_becomes_the_artefact_root(
    tmp_path: Path,
) -> None:
    make_project(
        tmp_path,
        {
            "defaults.toml": '[compile]\ncommand = ["anecc", "{source}", "-o", "{out}"]\n'
            'tool = "bin/anecc"\noutputs = "out/{name}"\ninputs = ["cfg/{name}/*.json"]\n',
            "m.toml": 'source = "m.onnx"\n',
            "n.toml": 'source = "n.onnx"\n[artifacts]\nanec = "out/n/x.anec"\n',
        },
    )
    project = load_project(tmp_path)
    m, n = project.models["m"], project.models["n"]
    assert m.compile is not None and n.compile is not None
    assert m.compile.outputs == tmp_path / "out" / "m" and m.artifacts.root == m.compile.outputs
    assert m.compile.tool == tmp_path / "bin" / "anecc"
    assert m.compile.inputs == (str(tmp_path / "cfg" / "m" / "*.json"),)
    assert n.artifacts.root is None and n.artifacts.anec == tmp_path / "out" / "n" / "x.anec"
    values = m.compile.values("m", tmp_path, m.source, tmp_path / "fresh")
    assert m.compile.argv(values) == ["anecc", str(m.source), "-o", str(tmp_path / "fresh")]


def test_compile_can_be_turned_off_per_model(tmp_path: Path) -> None:
    make_project(
        tmp_path,
        {
            "defaults.toml": '[compile]\ncommand = ["anecc"]\n',
            "m.toml": 'source = "m.onnx"\n[compile]\nenabled = false\n',
        },
    )
    assert load_project(tmp_path).models["m"].compile is None


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("atol = -1", "check.atol: must be greater than or equal to 0 (got -1)"),
        ("rtol = nan", "check.rtol: must be a finite number"),
        ("seed = 1.5", "check.seed: must be an integer (got 1.5)"),
        ("[check.outputs.y]\natl = 1", "check.outputs.y.atl: unknown key (allowed: atol, rtol)"),
        ('data = ""', "check.data: must be a file path, not empty"),
        ("enabled = 1", "check.enabled: must be true or false (got 1)"),
    ],
)
def test_check_table_errors(tmp_path: Path, table: str, message: str) -> None:
    make_project(tmp_path, {"m.toml": f'source = "m.onnx"\n[check]\n{table}\n'})
    (line,) = problems(tmp_path)
    assert line == f"configs/m.toml: {message}" or line.startswith(f"configs/m.toml: {message}")


def test_check_defaults_are_the_checkers(tmp_path: Path) -> None:
    from ane_build.check.compare import DEFAULT_TOLERANCE

    make_project(tmp_path, {"m.toml": 'source = "m.onnx"\n[check]\ndata = "data/m"\n'})
    spec = load_project(tmp_path).models["m"]
    check = spec.config.check
    assert (check.atol, check.rtol, check.seed, check.enabled) == (
        DEFAULT_TOLERANCE.atol,
        DEFAULT_TOLERANCE.rtol,
        0,
        True,
    )
    assert spec.check_data == tmp_path / "data" / "m"
