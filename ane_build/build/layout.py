"""Where things live in an ane_build project: folder and file names, and finding the root.

One home for every project path rule; this module only stats folders.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError
from ..synthetic.example import SYNTHETIC_FILE

CONFIG_DIR = "configs"
DEFAULTS_FILE = "defaults.toml"
SCHEMA_FILE = "schema.json"
STATE_DIR = ".ane_build"
GRAPH_FILE = "graph.json"
DIGESTS_FILE = "digests.json"
RECORDS_DIR = "records"
LOCK_FILE = "lock"
DEPLOY_DIR = "build/deploy"
SMOKE_XML = "build/smoke.xml"

__all__ = [
    "CONFIG_DIR",
    "DEFAULTS_FILE",
    "DEPLOY_DIR",
    "DIGESTS_FILE",
    "GRAPH_FILE",
    "LOCK_FILE",
    "RECORDS_DIR",
    "SCHEMA_FILE",
    "SMOKE_XML",
    "STATE_DIR",
    "SYNTHETIC_FILE",
    "find_project_root",
]


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
