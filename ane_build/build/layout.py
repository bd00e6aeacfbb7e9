"""Where things live in an ane_build project: folder and file names, and finding the root.

One home for every project path rule; this module only stats folders.
"""

from __future__ import annotations

import os
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ..errors import ConfigError
from ..synthetic import SYNTHETIC_FILE

CONFIG_DIR = "configs"
DEFAULTS_FILE = "defaults.toml"
SCHEMA_FILE = "schema.json"
STATE_DIR = ".ane_build"
GRAPH_FILE = "graph.json"
DIGESTS_FILE = "digests.json"
RECORDS_DIR = "records"
OUTCOMES_DIR = "outcomes"
COMPILED_DIR = "compiled"
REFERENCE_DIR = "reference"
NOOP_FILE = "noop.json"
DOIT_DB = "doit.sqlite"
LOCK_FILE = "lock"
DEPLOY_DIR = "build/deploy"
LOGS_DIR = "build/logs"
REPORT_FILE = "build/report.json"
SMOKE_XML = "build/smoke.xml"
DODO_FILE = "dodo.py"

__all__ = [
    "COMPILED_DIR",
    "CONFIG_DIR",
    "DEFAULTS_FILE",
    "DEPLOY_DIR",
    "DIGESTS_FILE",
    "DODO_FILE",
    "DOIT_DB",
    "GRAPH_FILE",
    "LOCK_FILE",
    "LOGS_DIR",
    "NOOP_FILE",
    "OUTCOMES_DIR",
    "RECORDS_DIR",
    "REFERENCE_DIR",
    "REPORT_FILE",
    "SCHEMA_FILE",
    "SMOKE_XML",
    "STATE_DIR",
    "SYNTHETIC_FILE",
    "build_version",
    "find_project_root",
]


@cache
def build_version() -> str:
    """The installed ane_build version: every build record holds it, and a change rebuilds."""
    try:
        return version("ane-build")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def find_project_root(start: Path) -> Path:
    """Walk up from ``start`` to the first folder holding ``configs/``.

    Returns:
        The project root, absolute with symlinks resolved.

    Raises:
        ConfigError: No folder from ``start`` upwards holds a ``configs/`` folder.
    """
    here = Path(os.path.realpath(start))
    if not here.is_dir():
        here = here.parent
    for folder in (here, *here.parents):
        if (folder / CONFIG_DIR).is_dir():
            return folder
    raise ConfigError(
        f"{start}: no {CONFIG_DIR}/ folder here or in any parent folder; run from inside a "
        f"project (the folder holding {CONFIG_DIR}/<model>.toml) or name the project folder"
    )
