"""``python -m ane_build``: hands over to the command line in `ane_build.cli`."""

import sys

from .cli import main

sys.exit(main())
