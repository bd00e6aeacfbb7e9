#!/usr/bin/env python3
"""Embed ANE compiler artefacts into ``<model>_ane.onnx`` (same as ``convert-to-ane``).

Usage: tools/convert_to_ane.py MODEL [--bundle B] [--microcode F] [--tile-descriptors F]
       [--td-size N] [--td-count N] [--weights F] [--anec F] [--artifact-root D]
       [--toolchain TEXT] [--output O] [--verbose]
"""

import sys

from ane_build.cli import convert_main

if __name__ == "__main__":
    sys.exit(convert_main())
