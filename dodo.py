"""doit tasks of this repository's example project (see README)."""

from ane_build.dodo import *  # noqa: F403
