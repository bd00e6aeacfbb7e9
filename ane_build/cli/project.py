"""Commands on a project: ``why``, ``watch`` and ``schema``.

The same handlers serve ``python -m ane_build`` and the ``doit why|watch`` commands.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from .common import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE


def _project_root(args: argparse.Namespace) -> Path:
    from ..build.layout import find_project_root

    return find_project_root(args.project or Path.cwd())


def cmd_why(args: argparse.Namespace) -> int:
    """``why``: the reasons each model would be rebuilt or redeployed; builds nothing."""
    from ..build.context import BuildContext
    from ..build.orphans import find_orphans
    from ..build.reasons import why

    ctx = BuildContext.load(_project_root(args))
    names = ctx.graph.names
    unknown = sorted(set(args.models) - set(names))
    if unknown:
        print(f"unknown model(s): {', '.join(unknown)}", file=sys.stderr)
        return EXIT_USAGE
    stale = 0
    for name, reasons in why(ctx, args.models or None).items():
        if not reasons:
            print(f"{name}: up to date")
        for reason in reasons:
            print(f"{name}: {reason}")
        stale += bool(reasons)
    print(f"{stale} of {len(names)} model(s) would be rebuilt or redeployed")
    for name, paths in find_orphans(ctx).items():
        gone = "config removed or renamed" if name not in names else "no longer written"
        for path in paths:
            print(f"{name}: {gone}: {ctx.rel(path)} would be removed by `doit clean`")
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    """``watch``: rebuild affected models whenever their inputs change, until Ctrl-C."""
    from ..build.runner import watch_project

    root = _project_root(args)
    if not args.verbose:
        # Say what triggered each build and how it went; the rest of the package stays quiet.
        logging.getLogger("ane_build.build.watch").setLevel(logging.INFO)
        logging.getLogger("ane_build.build.runner").setLevel(logging.INFO)
    print(f"watching {root} (Ctrl-C to stop)", file=sys.stderr)
    if watch_project(root, poll=args.poll, build_first=not args.no_initial_build):
        print("ane-build watch: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    """``schema``: the JSON schema of ``configs/*.toml``."""
    from ..build.config import schema_text

    sys.stdout.write(schema_text())
    return EXIT_OK


PROJECT_HELP = "project root (default: found from the working folder)"
# The watch flags, once for ``python -m ane_build watch`` and ``doit watch``: (flag, help).
WATCH_FLAGS = (
    ("poll", "poll the file system instead of inotify (network file systems)"),
    ("no-initial-build", "do not build every model at start"),
)


def add_watch_args(parser: argparse.ArgumentParser) -> None:
    """Add `WATCH_FLAGS` to ``parser``."""
    for flag, text in WATCH_FLAGS:
        parser.add_argument(f"--{flag}", action="store_true", help=text)


def add_parsers(sub: Any) -> None:
    """Register the project commands on ``sub`` (an argparse subparsers object)."""
    why = sub.add_parser("why", help="say why models would be rebuilt (builds nothing)")
    why.add_argument("models", nargs="*", help="model names (default: all)")
    why.add_argument("--project", type=Path, help=PROJECT_HELP)
    why.set_defaults(func=cmd_why)

    watch = sub.add_parser("watch", help="rebuild affected models whenever inputs change")
    add_watch_args(watch)
    watch.add_argument("--project", type=Path, help=PROJECT_HELP)
    watch.set_defaults(func=cmd_watch)

    schema = sub.add_parser("schema", help="print the JSON schema of configs/*.toml")
    schema.set_defaults(func=cmd_schema)
