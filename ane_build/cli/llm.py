"""``llm`` commands: ``llm split`` (a checkpoint into chunk graphs and a manifest).

The handler parses nothing itself: it gets argparse's namespace, calls the library, prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .common import EXIT_OK, positive


def chunks(text: str) -> int | str:
    """An argparse type: ``auto`` or a positive number of layer groups."""
    if text == "auto":
        return text
    try:
        return positive(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not auto or a positive integer") from None


def cmd_split(args: argparse.Namespace) -> int:
    """``llm split``: plan (always printed), then write the graphs unless ``--dry-run``."""
    from ..llm.plan import SplitSettings, plan_split
    from ..llm.spec import LlamaSpec
    from ..llm.split import split_checkpoint

    settings = SplitSettings.of(chunks=args.chunks, context=args.context, prefill=args.prefill)
    if args.dry_run:
        plan = plan_split(LlamaSpec.from_dir(args.model_dir), settings)
        print("\n".join(plan.report()))
        print("dry run: nothing written")
        return EXIT_OK

    def progress(name: str) -> None:
        print(f"writing {args.output / name}", file=sys.stderr, flush=True)

    result = split_checkpoint(
        args.model_dir, args.output, settings, force=args.force, progress=progress
    )
    print("\n".join(result.summary()))
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    """Register the ``llm`` commands on ``sub`` (an argparse subparsers object)."""
    llm = sub.add_parser("llm", help="LLM checkpoints as chunked ANE programs")
    commands = llm.add_subparsers(dest="llm_command", required=True, metavar="COMMAND")
    split = commands.add_parser(
        "split",
        help="split a Hugging Face LLaMA checkpoint into static-shape chunk graphs",
        description="Write the chunk graphs (embed on the CPU; block_i per layer group, each for "
        "decode and prefill; head over the vocabulary) and manifest.json, after checking that "
        "every chunk and all of them together fit the ANE's limits.",
    )
    split.add_argument("model_dir", type=Path, help="checkpoint folder (config.json, safetensors)")
    split.add_argument("--output", "-o", type=Path, required=True, help="split folder to write")
    split.add_argument(
        "--chunks", type=chunks, default="auto", help="layer groups, or auto (fewest that fit)"
    )
    split.add_argument("--context", type=positive, default=512, help="static context N")
    split.add_argument(
        "--prefill", type=positive, default=64, help="prefill block S (1: no prefill programs)"
    )
    split.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    split.add_argument("--force", action="store_true", help="rewrite an up-to-date split")
    split.set_defaults(func=cmd_split)
