"""Chat decode speed (issue 5): our generator vs a minimal hand-written onnxruntime loop.

Both run greedy decoding over the same random-weight LLaMA-architecture model (bigger than the
test model so a step takes milliseconds), with the same session options, interleaved round by
round; the figure is the ratio of the best decode rates (target >= 0.9x). The baseline is the
loop anyone would write first: ``session.run`` with numpy feeds, presents fed back as pasts.

Usage: benchmarks/bench_chat_decode.py [--hidden N] [--layers N] [--heads N] [--kv-heads N]
       [--prompt-tokens N] [--tokens N] [--rounds N] [--threads N] [--cache-dtype float32|float16]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ane_build.chat.generate import TokenGenerator
from ane_build.chat.model import CausalLM
from ane_build.chat.sampling import SamplingConfig
from ane_build.chat.session import ChatModel
from ane_build.chat.tiny import TinyLlamaConfig, write_tiny_llama
from ane_build.chat.tokenizer import StreamDecoder

TARGET = 0.9


def baseline_decode(
    model: Path, threads: int, prompt: list[int], tokens: int
) -> tuple[float, list[int]]:
    """The minimal loop: numpy in, numpy out, presents become the next pasts."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    pasts = [i for i in session.get_inputs() if i.name.startswith("past_key_values.")]
    dtype = np.float16 if pasts[0].type == "tensor(float16)" else np.float32
    present_names = [o.name for o in session.get_outputs()[1:]]
    past_names = [n.replace("present.", "past_key_values.") for n in present_names]
    n = len(prompt)
    feed = {
        "input_ids": np.array([prompt], dtype=np.int64),
        "attention_mask": np.ones((1, n), dtype=np.int64),
        "position_ids": np.arange(n, dtype=np.int64)[None],
    }
    for arg in pasts:
        feed[arg.name] = np.zeros((1, arg.shape[1], 0, arg.shape[3]), dtype=dtype)
    out = session.run(None, feed)
    token = int(np.argmax(out[0][0, -1]))
    produced = [token]
    start = time.perf_counter()
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
        produced.append(token)
    return (tokens - 1) / (time.perf_counter() - start), produced


def ours_decode(
    model: Path, threads: int, prompt: list[int], tokens: int, stream: ChatModel | None
) -> tuple[float, list[int]]:
    """Our generator (and, with ``stream``, its text streaming), timed from the first token."""
    generator = TokenGenerator(CausalLM(model, threads=threads))
    decoder = StreamDecoder(stream.tokenizer) if stream is not None else None
    produced: list[int] = []
    start = 0.0
    for token in generator.generate(
        prompt, max_new_tokens=tokens, sampling=SamplingConfig(temperature=0.0)
    ):
        if not produced:
            start = time.perf_counter()
        produced.append(token)
        if decoder is not None:
            decoder.push(token)
    return (tokens - 1) / (time.perf_counter() - start), produced


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--cache-dtype", choices=("float32", "float16"), default="float32")
    args = parser.parse_args()
    config = TinyLlamaConfig(
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 11 // 4,
        num_layers=args.layers,
        num_heads=args.heads,
        num_kv_heads=args.kv_heads,
        max_position_embeddings=max(2048, args.prompt_tokens + args.tokens),
        vocab_size=2048,
        cache_dtype=args.cache_dtype,
    )
    with tempfile.TemporaryDirectory(prefix="bench-chat-") as tmp:
        folder = write_tiny_llama(Path(tmp), config)
        model = folder / "model.onnx"
        chat = ChatModel.load(folder, threads=args.threads)
        vocab = chat.tokenizer.vocab_size
        prompt = [1] + [
            int(t) for t in np.random.default_rng(0).integers(3, vocab, args.prompt_tokens - 1)
        ]
        print(
            f"model: hidden {config.hidden_size}, {config.num_layers} layers, {config.num_heads} "
            f"heads / {config.num_kv_heads} KV heads x {config.head_dim}, vocab {vocab}, "
            f"{config.cache_dtype} cache; prompt {len(prompt)} tokens, decode {args.tokens} "
            f"tokens, {args.threads} thread(s), {args.rounds} interleaved rounds"
        )
        base, ours, streamed = [], [], []
        for r in range(args.rounds):
            runs: list[tuple[str, Callable[[], tuple[float, list[int]]]]] = [
                ("base", lambda: baseline_decode(model, args.threads, prompt, args.tokens)),
                ("ours", lambda: ours_decode(model, args.threads, prompt, args.tokens, None)),
                ("stream", lambda: ours_decode(model, args.threads, prompt, args.tokens, chat)),
            ]
            if r % 2:
                runs.reverse()  # alternate the order so drift in machine load hits both sides
            results = {name: fn() for name, fn in runs}
            if not results["base"][1] == results["ours"][1] == results["stream"][1]:
                print("FAIL: the generator and the baseline produced different tokens")
                return 1
            base.append(results["base"][0])
            ours.append(results["ours"][0])
            streamed.append(results["stream"][0])
    ratio = max(ours) / max(base)
    stream_ratio = max(streamed) / max(base)
    for label, rates in (
        ("baseline loop (session.run, numpy)", base),
        ("our generator (IOBinding, OrtValue)", ours),
        ("our generator + text streaming", streamed),
    ):
        print(f"{label:37s} best {max(rates):8.1f} tok/s, median {statistics.median(rates):8.1f}")
    verdict = "PASS" if ratio >= TARGET else "FAIL"
    print(
        f"{verdict}: generator decode {ratio:.2f}x of the baseline (target >= {TARGET:.2f}x); "
        f"with text streaming {stream_ratio:.2f}x"
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
