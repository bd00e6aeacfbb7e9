"""The model configuration files (``configs/*.toml``) as pydantic models, and their JSON schema.

One TOML file per model (the file stem is the model name), optionally merged over
``configs/defaults.toml``; `project` loads and resolves them. This module defines the shape only:
it must not read files, import doit or watchdog.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from ..artifacts import ArtifactSpec
from ..driver.device import DEVICE_SPEC_HELP, SIM_SPECS, check_device_spec
from ..errors import InvalidArgumentError

__all__ = ["DeployConfig", "ModelConfig", "config_schema", "schema_text"]


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
            )
        },
    )

    source: FilePath = Field(description="The source ONNX model (required).")
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
