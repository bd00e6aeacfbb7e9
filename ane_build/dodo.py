"""A project's ``dodo.py`` is ``from ane_build.dodo import *``: the tasks of `build.dodo`."""

from .build.dodo import *  # noqa: F403
