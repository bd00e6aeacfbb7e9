"""Chat decode speed (issue 13): our token generator vs a hand-written onnxruntime loop.

Gates one thing: in greedy decoding, `TokenGenerator` over `CausalLM` reaches at least 0.95x the
decode rate (tokens per second after the first token) of a hand-written loop over the same model,
both at 1 onnxruntime intra-op thread and at onnxruntime's default thread count. It exits 1 when
either ratio is below 0.95 or when the two loops produce different tokens, 0 otherwise.

The model is the random-weight LLaMA-architecture model of `ane_build.chat.tiny`, bigger than the
test model so a step takes milliseconds, with a 32,000-id vocabulary like LLaMA's (the logits of
a realistic vocabulary are part of what a step costs). The hand loop is the straightforward good
loop: ``session.run`` with numpy feeds, each step's presents fed back as the next pasts, argmax of
the last logits row. Each side has its own session. In every round both decode the same prompt,
advancing in alternating chunks of steps (which side goes first alternates too), so both pass the
same positions at nearly the same time and other load on the machine hits them alike; a rate is
the steps of all rounds over the time spent in them.

Usage: benchmarks/bench_chat_decode.py [--hidden N] [--layers N] [--heads N] [--kv-heads N]
       [--vocab N] [--prompt-tokens N] [--tokens N] [--rounds N] [--chunk N]
       [--cache-dtype float32|float16]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from ane_build.chat.generate import TokenGenerator
from ane_build.chat.model import CausalLM
from ane_build.chat.sampling import SamplingConfig
from ane_build.chat.tiny import TinyLlamaConfig, write_tiny_llama

TARGET = 0.95
#: Thread settings measured: 1 intra-op thread, and onnxruntime's own choice (None).
THREADS: tuple[int | None, ...] = (1, None)

Loop = Callable[[], Iterator[int]]


def hand_loop(model: Path, threads: int | None, prompt: list[int], tokens: int) -> Loop:
    """The loop a competent engineer writes first: numpy in, numpy out, presents become pasts."""
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    pasts = [i for i in session.get_inputs() if i.name.startswith("past_key_values.")]
    dtype = np.float16 if pasts[0].type == "tensor(float16)" else np.float32
    present_names = [o.name for o in session.get_outputs()[1:]]
    past_names = [n.replace("present.", "past_key_values.") for n in present_names]

    def decode() -> Iterator[int]:
        n = len(prompt)
        feed: dict[str, Any] = {
            "input_ids": np.array([prompt], dtype=np.int64),
            "attention_mask": np.ones((1, n), dtype=np.int64),
            "position_ids": np.arange(n, dtype=np.int64)[None],
        }
        for arg in pasts:
            feed[arg.name] = np.zeros((1, arg.shape[1], 0, arg.shape[3]), dtype=dtype)
        out = session.run(None, feed)
        token = int(np.argmax(out[0][0, -1]))
        yield token
        for _ in range(tokens - 1):
            feed = {
                "input_ids": np.array([[token]], dtype=np.int64),
                "attention_mask": np.ones((1, n + 1), dtype=np.int64),
                "position_ids": np.array([[n]], dtype=np.int64),
            }
            feed.update(zip(past_names, out[1:], strict=True))
            out = session.run(None, feed)
            n += 1
            token = int(np.argmax(out[0][0, -1]))
            yield token

    return decode


def our_loop(model: Path, threads: int | None, prompt: list[int], tokens: int) -> Loop:
    """Our generator, greedy, one fresh generator (and KV cache) per round."""
    lm = CausalLM(model, threads=threads)
    greedy = SamplingConfig(temperature=0.0)

    def decode() -> Iterator[int]:
        return TokenGenerator(lm).generate(prompt, max_new_tokens=tokens, sampling=greedy)

    return decode


def race(loops: dict[str, Loop], args: argparse.Namespace) -> dict[str, float] | None:
    """Decode rates of the loops over all rounds; None when they produce different tokens."""
    spent = dict.fromkeys(loops, 0.0)
    names = list(loops)
    for round_index in range(args.rounds):
        streams = {name: make() for name, make in loops.items()}
        # The first token comes from the prefill, which is not timed.
        produced = {name: [next(stream)] for name, stream in streams.items()}
        done, chunk_index = 1, round_index
        while done < args.tokens:
            count = min(args.chunk, args.tokens - done)
            for name in names if chunk_index % 2 == 0 else reversed(names):
                stream, start = streams[name], time.perf_counter()
                produced[name].extend(next(stream) for _ in range(count))
                spent[name] += time.perf_counter() - start
            done, chunk_index = done + count, chunk_index + 1
        if len({tuple(tokens) for tokens in produced.values()}) != 1:
            return None
    steps = args.rounds * (args.tokens - 1)
    return {name: steps / seconds for name, seconds in spent.items()}


def build_model(folder: Path, args: argparse.Namespace) -> Path:
    """Write the benchmark model into ``folder``; returns the ONNX file."""
    config = TinyLlamaConfig(
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 11 // 4,
        num_layers=args.layers,
        num_heads=args.heads,
        num_kv_heads=args.kv_heads,
        max_position_embeddings=max(2048, args.prompt_tokens + args.tokens),
        model_vocab_size=args.vocab,
        cache_dtype=args.cache_dtype,
    )
    write_tiny_llama(folder, config)
    print(
        f"model: hidden {config.hidden_size}, {config.num_layers} layers, {config.num_heads} "
        f"heads / {config.num_kv_heads} KV heads x {config.head_dim}, vocab {args.vocab}, "
        f"{config.cache_dtype} cache; prompt {args.prompt_tokens} tokens, decode {args.tokens} "
        f"tokens x {args.rounds} rounds in chunks of {args.chunk} steps per thread setting"
    )
    return folder / "model.onnx"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=32000, help="model vocabulary (logits size)")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=8, help="steps each side runs in a row")
    parser.add_argument("--cache-dtype", choices=("float32", "float16"), default="float32")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench-chat-") as tmp:
        model = build_model(Path(tmp), args)
        rng = np.random.default_rng(0)
        # Ids of real text tokens (the tokenizer has fewer ids than the model), BOS first.
        prompt = [1] + [int(t) for t in rng.integers(3, 1000, args.prompt_tokens - 1)]
        for threads in THREADS:
            label = f"{threads} thread" if threads else "default threads"
            loops = {
                "hand": hand_loop(model, threads, prompt, args.tokens),
                "ours": our_loop(model, threads, prompt, args.tokens),
            }
            rates = race(loops, args)
            if rates is None:
                print(f"FAIL ({label}): our generator and the hand loop produced different tokens")
                failed = True
                continue
            ratio = rates["ours"] / rates["hand"]
            verdict = "PASS" if ratio >= TARGET else "FAIL"
            failed |= verdict == "FAIL"
            print(
                f"{verdict} ({label}): ours {rates['ours']:7.1f} tok/s, hand loop "
                f"{rates['hand']:7.1f} tok/s: {ratio:.3f}x (target >= {TARGET:.2f}x)"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
