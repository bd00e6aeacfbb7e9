"""``junit-merge``: one JUnit file from the smoke files of every shard of a CI run.

Parses, calls `ane_build.build.junit`, writes the merged file and prints; nothing else lives here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .common import EXIT_OK


def cmd_junit_merge(args: argparse.Namespace) -> int:
    """``junit-merge OUT IN...``: merge shard files; a tally on stderr, markdown on request."""
    from .._fs import write_atomic
    from ..build.junit import markdown_summary, merge_junit, tally, to_bytes

    suite = merge_junit(args.inputs)
    write_atomic(args.output, to_bytes(suite))
    print(f"{args.output}: {tally(suite)} from {len(args.inputs)} file(s)", file=sys.stderr)
    if args.markdown:
        sys.stdout.write(markdown_summary(suite))
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    """Register ``junit-merge`` on ``sub`` (an argparse subparsers object)."""
    merge = sub.add_parser(
        "junit-merge",
        help="merge the smoke JUnit files of every shard into one (cases sorted, counts summed)",
    )
    merge.add_argument("output", type=Path, help="the merged JUnit file to write")
    merge.add_argument("inputs", type=Path, nargs="+", help="JUnit files, one per shard")
    merge.add_argument(
        "--markdown",
        action="store_true",
        help="print a markdown table of the merged cases (for $GITHUB_STEP_SUMMARY)",
    )
    merge.set_defaults(func=cmd_junit_merge)
