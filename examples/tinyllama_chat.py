#!/usr/bin/env python3
"""Chat with a TinyLlama-style model: streamed answers, KV cache across turns, timings.

Usage: examples/tinyllama_chat.py [MODEL] [--backend auto|ane|ort] [--device auto|sim|PATH]
       [--system TEXT] [--prompt TEXT|-] [--max-new-tokens N] [--temperature T] [--top-k K]
       [--top-p P] [--repetition-penalty R] [--seed S] [--ane-container PATH]

Backends: ``ort`` runs one ONNX export with onnxruntime; MODEL holds model.onnx (external data
beside it is fine), tokenizer.json, config.json or an onnxruntime-genai genai_config.json, and,
ideally, the chat template (chat_template.jinja or in tokenizer_config.json; without one the
TinyLlama format is used, with a warning). ``ane`` runs a split folder (``ane-build llm split``):
chunks with a container go to the ANE (or the simulator, --device sim), the rest to onnxruntime,
and the stats line says which ran where. ``auto`` takes ane for a split folder (manifest.json) and
ort for an export; without MODEL it runs the demo on ort.

Without MODEL a tiny random-weight demo model is built once under build/tiny-llama/ in the current
directory: it answers gibberish, but exercises every part of the pipeline. With --backend ane the
demo is also split into chunks and packaged with synthetic programs (not real ANE code), which
run on the simulator, so `--backend ane` and `--backend ort` compare in one command each.

Interactive mode: /reset clears the history, /quit or Ctrl-D exits, Ctrl-C stops the current
answer. With --prompt the script answers once and exits (status 1 if the message does not fit
the context); only the answer goes to stdout (--prompt - reads the message from stdin). Status
lines and the stats line after each answer (time to first token, prefill and decode tokens per
second) go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ane_build.chat.ane import run_ane_step
from ane_build.chat.backend import BACKENDS, AneDecoder
from ane_build.chat.demo import ensure_demo
from ane_build.chat.errors import ContextOverflowError
from ane_build.chat.sampling import SamplingConfig
from ane_build.chat.session import ChatModel, ChatSession
from ane_build.errors import AneError

TINY_DIR = Path("build") / "tiny-llama"
HELP = "Type a message. /reset clears the history, /quit or Ctrl-D exits, Ctrl-C stops an answer."


def note(text: str) -> None:
    """Status for the human, kept off stdout so answers can be piped."""
    print(text, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "model_dir", nargs="?", type=Path, help="model or split folder (default: tiny demo)"
    )
    parser.add_argument(
        "--backend", choices=BACKENDS, default="auto", help="what generates tokens (see above)"
    )
    parser.add_argument("--device", default="auto", help="auto, sim or a device path (ANE)")
    parser.add_argument("--system", default="You are a friendly assistant.", help="system prompt")
    parser.add_argument("--prompt", help="answer this message once and exit ('-' reads stdin)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.7, help="0 is greedy")
    parser.add_argument("--top-k", type=int, default=50, help="0 disables")
    parser.add_argument("--top-p", type=float, default=0.95, help="1 disables")
    parser.add_argument("--repetition-penalty", type=float, default=1.0, help="1 disables")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--ane-container", type=Path, help="ANE container to verify and submit (ort backend)"
    )
    return parser.parse_args(argv)


def load_model(model_dir: Path | None, backend: str, device: str) -> ChatModel:
    """The given folder, or the tiny demo built (once) under build/tiny-llama/."""
    if model_dir is not None:
        return ChatModel.load(model_dir, backend=backend, device=device)  # type: ignore[arg-type]
    demo_backend = "ane" if backend == "ane" else "ort"
    folder, done = ensure_demo(TINY_DIR, demo_backend)
    note(
        f"Tiny demo model in {TINY_DIR}/ ({'; '.join(done)}; no MODEL given). It has RANDOM "
        "weights: its answers are gibberish; it shows the pipeline working, not a real chat."
    )
    return ChatModel.load(folder, backend=demo_backend, device=device)


def answer(session: ChatSession, text: str) -> None:
    """Stream one answer to stdout; Ctrl-C stops it. Then print the stats line.

    Raises:
        ContextOverflowError: The message does not fit the context window.
    """
    dropped = session.dropped_turns
    stream = session.ask(text)
    try:
        for piece in stream:
            sys.stdout.write(piece)
            sys.stdout.flush()
    except KeyboardInterrupt:
        stream.close()
        print(flush=True)
        note("[answer stopped]")
    else:
        print(flush=True)
    if session.dropped_turns > dropped:
        note(f"[dropped {session.dropped_turns - dropped} old turn(s) to fit the context]")
    if session.last_stats is not None:
        note(f"[{session.last_stats.summary()} | {session.model.lm.where()}]")


def read_message(interactive: bool) -> str | None:
    """The next user line, or None at end of input (Ctrl-D)."""
    if interactive:
        try:
            return input("you> ")
        except EOFError:
            print()
            return None
    line = sys.stdin.readline()
    return line if line else None


def chat_loop(session: ChatSession) -> None:
    """Read messages until /quit or end of input; prompts only when stdin is a terminal."""
    interactive = sys.stdin.isatty()
    if interactive:
        note(HELP)
    while True:
        try:
            line = read_message(interactive)
        except KeyboardInterrupt:
            print()
            continue
        if line is None:
            return
        text = line.strip()
        if not text:
            continue
        if text == "/quit":
            return
        if text == "/reset":
            session.reset()
            note("[history cleared]")
            continue
        try:
            answer(session, text)
        except ContextOverflowError as exc:
            # One message too long does not end an interactive chat; in one-shot mode it does.
            note(f"error: {exc}")


def run(model: ChatModel, args: argparse.Namespace, sampling: SamplingConfig) -> None:
    """Say what runs where, then answer one prompt or chat until the end of input."""
    note(f"Model: {model.describe()}")
    if isinstance(model.lm, AneDecoder):
        note(f"Backend ane: {model.lm.where()}")
    else:
        step = run_ane_step(model.lm.path, container=args.ane_container, device=args.device)
        if step.submitted:
            note(f"ANE step: {step.detail}")
        note(step.where(model.lm.providers))
    session = ChatSession(
        model, system=args.system or None, sampling=sampling, max_new_tokens=args.max_new_tokens
    )
    if args.prompt is not None:
        text = sys.stdin.read() if args.prompt == "-" else args.prompt
        answer(session, text.strip())
    else:
        chat_loop(session)


def main(argv: list[str] | None = None) -> int:
    """Run the chat; returns the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        sampling = SamplingConfig(
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            repetition_penalty=args.repetition_penalty,
            seed=args.seed,
        )
        model = load_model(args.model_dir, args.backend, args.device)
        try:
            run(model, args, sampling)
        finally:
            model.close()
    except AneError as exc:
        note(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        # Ctrl-C outside an answer (e.g. while the model loads) ends the program quietly.
        note("[interrupted]")
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (e.g. `| head`); nothing left to say.
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
