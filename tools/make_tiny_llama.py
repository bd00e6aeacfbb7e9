#!/usr/bin/env python3
"""Write the tiny random-weight LLaMA demo model (ONNX, safetensors, tokenizer, configs).

Usage: tools/make_tiny_llama.py OUT_DIR [--cache-dtype float32|float16] [--no-position-ids]
       [--hidden-size N] [--intermediate-size N] [--layers N] [--heads N] [--kv-heads N]
       [--vocab-size N] [--model-vocab-size N] [--context N] [--seed N] [--external-data]

A thin command line over `ane_build.chat.tiny`; the weights are random, so the model shows the
chat plumbing working, not sensible answers. The folder is both an ONNX export (model.onnx) and a
Hugging Face checkpoint (config.json + model.safetensors, the same weights), so it can be chatted
with directly (--backend ort) and split into ANE chunks (`ane-build llm split`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ane_build.chat.errors import ChatError
from ane_build.chat.tiny import TinyLlamaConfig, write_tiny_llama


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, write the model folder, print where it went."""
    defaults = TinyLlamaConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder to write (created if missing)")
    parser.add_argument("--cache-dtype", choices=("float32", "float16"), default="float32")
    parser.add_argument(
        "--no-position-ids",
        action="store_true",
        help="derive positions inside the graph instead of taking position_ids",
    )
    parser.add_argument("--hidden-size", type=int, default=defaults.hidden_size)
    parser.add_argument("--intermediate-size", type=int, default=defaults.intermediate_size)
    parser.add_argument("--layers", type=int, default=defaults.num_layers)
    parser.add_argument("--heads", type=int, default=defaults.num_heads)
    parser.add_argument("--kv-heads", type=int, default=defaults.num_kv_heads)
    parser.add_argument("--vocab-size", type=int, default=defaults.vocab_size)
    parser.add_argument(
        "--model-vocab-size",
        type=int,
        default=None,
        help="give the model more ids than the tokenizer (e.g. 32000, LLaMA's size)",
    )
    parser.add_argument("--context", type=int, default=defaults.max_position_embeddings)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--external-data", action="store_true", help="store weights in model.onnx.data"
    )
    args = parser.parse_args(argv)
    try:
        config = TinyLlamaConfig(
            hidden_size=args.hidden_size,
            intermediate_size=args.intermediate_size,
            num_layers=args.layers,
            num_heads=args.heads,
            num_kv_heads=args.kv_heads,
            max_position_embeddings=args.context,
            vocab_size=args.vocab_size,
            model_vocab_size=args.model_vocab_size,
            cache_dtype=args.cache_dtype,
            position_ids=not args.no_position_ids,
            seed=args.seed,
        )
        out = write_tiny_llama(args.out_dir, config, external_data=args.external_data)
    except ChatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote the tiny random-weight LLaMA model (ONNX export and checkpoint) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
