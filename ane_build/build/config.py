"""The model configuration files (``configs/*.toml``) as pydantic models, and their JSON schema.

One TOML file per model (the file stem is the model name), optionally merged over
``configs/defaults.toml``; `project` loads and resolves them. This module defines the shape only:
it must not read files, import doit or watchdog.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from ..artifacts import ArtifactSpec
from ..check.compare import DEFAULT_TOLERANCE
from ..driver.device import DEVICE_SPEC_HELP, SIM_SPECS, check_device_spec
from ..errors import InvalidArgumentError
from ..llm.pipeline import LlmConfig
from .placeholders import PATH_PLACEHOLDERS, RUN_PLACEHOLDERS, check_template

__all__ = [
    "CheckConfig",
    "CompileConfig",
    "DeployConfig",
    "ModelConfig",
    "OutputTolerance",
    "config_schema",
    "schema_text",
]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DEFAULT_COMPILE_OUTPUTS = "build/compiled/{name}"
DEFAULT_COMPILE_TIMEOUT_S = 600.0


def _check_device(value: str) -> str:
    try:
        return check_device_spec(value)
    except InvalidArgumentError:
        # The config error names the key and shows the value itself.
        raise ValueError(f"must be {DEVICE_SPEC_HELP}") from None


def _check_path_not_empty(value: Path) -> Path:
    # Path("") collapses to Path("."), which would silently mean "the project root".
    if str(value) in ("", "."):
        raise ValueError("must be a file path, not empty")
    return value


DeviceSpec = Annotated[
    str,
    AfterValidator(_check_device),
    WithJsonSchema(
        {
            "anyOf": [
                {"enum": ["auto", *SIM_SPECS], "type": "string"},
                {"pattern": "^/dev/.+", "type": "string"},
            ]
        }
    ),
]
FilePath = Annotated[Path, AfterValidator(_check_path_not_empty)]


def _argv(value: object) -> object:
    if isinstance(value, str):
        raise ValueError(
            'must be an array of arguments, e.g. ["anecc", "{source}", "-o", "{out}"]; a '
            "command is never a shell string"
        )
    # Strict validation wants a tuple once a validator has seen the JSON array.
    return tuple(value) if isinstance(value, list) else value


def _tuple(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


def _check_command(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value[0]:
        raise ValueError("the program (the first argument) must not be empty")
    for arg in value:
        check_template(arg, RUN_PLACEHOLDERS)
    return value


def _check_path_template(value: str) -> str:
    if value.strip() in ("", "."):
        raise ValueError("must be a path, not empty")
    return check_template(value, PATH_PLACEHOLDERS)


def _check_env(value: dict[str, str]) -> dict[str, str]:
    for name, text in value.items():
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a variable name (letters, digits and '_')")
        check_template(text, RUN_PLACEHOLDERS)
    return value


PathTemplate = Annotated[str, AfterValidator(_check_path_template)]
Command = Annotated[tuple[str, ...], BeforeValidator(_argv), AfterValidator(_check_command)]
Tol = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class CompileConfig(BaseModel):
    """How the model's compiler runs before the container is built (the ``[compile]`` table)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="false: no compile step for this model.")
    command: Command = Field(
        min_length=1,
        description=(
            "The compiler's command line as an array (never a shell string), run in the project "
            "root. Placeholders: {source} (the source model), {out} (the folder to write), "
            "{name}, {root} (the project root), {tool} (the tool file), {python} (the Python "
            "running the build)."
        ),
    )
    tool: PathTemplate | None = Field(
        default=None,
        description=(
            "The compiler executable (or script); its content digest is an input of every model "
            "that uses it, so rebuilding the compiler recompiles them. May lie outside the "
            "project. Placeholders: {name}, {root}."
        ),
    )
    inputs: Annotated[tuple[PathTemplate, ...], BeforeValidator(_tuple)] = Field(
        default=(),
        description="Extra files the compiler reads: paths or globs (** for any depth).",
    )
    outputs: PathTemplate = Field(
        default=DEFAULT_COMPILE_OUTPUTS,
        description=(
            "The folder the compiler writes ({out} points at a fresh folder that replaces this "
            "one after a successful run); the model's artefact root unless [artifacts] says "
            "otherwise."
        ),
    )
    timeout_s: float = Field(
        default=DEFAULT_COMPILE_TIMEOUT_S,
        gt=0,
        allow_inf_nan=False,
        description="Seconds before the compiler is stopped and the compile fails.",
    )
    env: Annotated[dict[str, str], AfterValidator(_check_env)] = Field(
        default_factory=dict,
        description=(
            "Variables set for the compiler (on top of the build's environment), as literal "
            "strings with the command's placeholders; no shell expansion."
        ),
    )


class OutputTolerance(BaseModel):
    """A tolerance override for one output (``[check.outputs.NAME]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    atol: Tol | None = Field(default=None, description="Absolute tolerance of this output.")
    rtol: Tol | None = Field(default=None, description="Relative tolerance of this output.")


class CheckConfig(BaseModel):
    """How a deployed program is checked against its source graph (the ``[check]`` table)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        default=True,
        description="Check every deploy whose container has an I/O map (ane.io).",
    )
    data: FilePath | None = Field(
        default=None,
        description=(
            "Test inputs: an ONNX test data folder, .npz, .npy or .pb; inputs it lacks are "
            "seeded random values."
        ),
    )
    seed: int = Field(default=0, ge=0, description="Seed of the random inputs.")
    atol: Tol = Field(default=DEFAULT_TOLERANCE.atol, description="Absolute tolerance.")
    rtol: Tol = Field(default=DEFAULT_TOLERANCE.rtol, description="Relative tolerance.")
    outputs: dict[str, OutputTolerance] = Field(
        default_factory=dict, description="Per-output overrides, by output name."
    )


class DeployConfig(BaseModel):
    """How a built container is deployed (the ``[deploy]`` table)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: DeviceSpec = Field(
        default="auto",
        description=(
            '"auto": the real ANE node if one is found, else the simulator (said aloud); '
            '"sim": always the simulator ("sim:stock" emulates the stock driver); or a device '
            'node path such as "/dev/accel/accel0".'
        ),
    )
    submit_mode: Literal["onnx", "direct"] = Field(
        default="onnx",
        description=(
            '"onnx": submit the whole container with the ONNX flag (fork kernel); '
            '"direct": upload microcode and weights and submit them (stock kernel).'
        ),
    )


class ModelConfig(BaseModel):
    """One model's configuration file (``configs/<name>.toml``) after merging the defaults."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="ane_build model configuration",
        json_schema_extra={
            "description": (
                "One model per file: configs/<name>.toml, the file stem is the model name. "
                "Shared defaults go in configs/defaults.toml. Relative paths resolve against "
                "the project root (the folder holding configs/). Editors that read JSON schemas "
                "(taplo, Even Better TOML) pick this one up from a first line "
                "'#:schema ./schema.json'."
            ),
            "oneOf": [{"required": ["source"]}, {"required": ["llm"]}],
        },
    )

    source: FilePath | None = Field(
        default=None, description="The source ONNX model (required unless [llm] is given)."
    )
    llm: LlmConfig | None = Field(
        default=None,
        description=(
            "A LLaMA checkpoint split into chunk programs (instead of source): each program "
            "becomes a model <name>.<program> with its own compile, convert, deploy and check."
        ),
    )
    output: FilePath | None = Field(
        default=None,
        description="Where the _ane.onnx container goes; default build/<name>_ane.onnx.",
    )
    toolchain: str | None = Field(
        default=None,
        min_length=1,
        description="Free text naming the compiler, recorded in the container (ane.toolchain).",
    )
    allow_outside_root: bool = Field(
        default=False,
        description="Allow paths (after resolving symlinks) to leave the project root.",
    )
    artifacts: ArtifactSpec = Field(
        default_factory=ArtifactSpec,
        description="Where the compiler artefacts are (same rules as the converter).",
    )
    deploy: DeployConfig = Field(
        default_factory=DeployConfig, description="How the container is deployed."
    )
    compile: CompileConfig | None = Field(
        default=None, description="The compiler run that produces the artefacts (optional)."
    )
    check: CheckConfig = Field(
        default_factory=CheckConfig,
        description="The numeric check of every deploy against the source graph.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if (self.source is None) == (self.llm is None):
            which = "neither" if self.source is None else "both"
            raise ValueError(f"set exactly one of source and [llm] (got {which})")
        if self.llm is not None and self.output is not None:
            raise ValueError("output: not used with [llm] (use llm.output for the split folder)")
        return self


def config_schema() -> dict[str, Any]:
    """The JSON schema of a model configuration file (for editor completion).

    Returns:
        The schema as a dict, from `ModelConfig.model_json_schema`.
    """
    schema = _drop_null(ModelConfig.model_json_schema())
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def _drop_null(node: Any) -> Any:
    """Remove ``null`` alternatives: TOML has no null, an optional key is simply left out."""
    if isinstance(node, list):
        return [_drop_null(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _drop_null(value) for key, value in node.items()}
    options = out.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [option for option in options if option != {"type": "null"}]
        del out["anyOf"]
        if len(rest) == 1:
            out = {**rest[0], **out}
        elif rest:
            out["anyOf"] = rest
        if out.get("default", 0) is None:
            del out["default"]
    return out


def schema_text() -> str:
    """The schema as committed in ``configs/schema.json``: pretty, sorted keys, final newline."""
    return json.dumps(config_schema(), indent=2, sort_keys=True) + "\n"
