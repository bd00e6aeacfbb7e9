#!/usr/bin/env python3
"""Chat with a TinyLlama-style ONNX model: streamed answers, KV cache across turns, timings.

Usage: examples/tinyllama_chat.py [MODEL_DIR] [--device auto|sim|PATH] [--system TEXT]
       [--prompt TEXT|-] [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P]
       [--repetition-penalty R] [--seed S] [--ane-container PATH]

MODEL_DIR holds model.onnx (external data beside it is fine), tokenizer.json, config.json or an
onnxruntime-genai genai_config.json, and, ideally, the model's chat template (chat_template.jinja or
in tokenizer_config.json; without one the TinyLlama format is used, with a warning). Without
MODEL_DIR a tiny random-weight demo model is built once under build/tiny-llama/ in the current
directory: it answers gibberish, but exercises every part of the pipeline.

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
from ane_build.chat.errors import ContextOverflowError
from ane_build.chat.sampling import SamplingConfig
from ane_build.chat.session import ChatModel, ChatSession
from ane_build.chat.tiny import ensure_tiny_llama
from ane_build.errors import AneError

TINY_DIR = Path("build") / "tiny-llama"
HELP = "Type a message. /reset clears the history, /quit or Ctrl-D exits, Ctrl-C stops an answer."


def note(text: str) -> None:
    """Status for the human, kept off stdout so answers can be piped."""
    print(text, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", nargs="?", type=Path, help="model folder (default: tiny demo)")
    parser.add_argument("--device", default="auto", help="auto, sim or a device path (ANE step)")
    parser.add_argument("--system", default="You are a friendly assistant.", help="system prompt")
    parser.add_argument("--prompt", help="answer this message once and exit ('-' reads stdin)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.7, help="0 is greedy")
    parser.add_argument("--top-k", type=int, default=50, help="0 disables")
    parser.add_argument("--top-p", type=float, default=0.95, help="1 disables")
    parser.add_argument("--repetition-penalty", type=float, default=1.0, help="1 disables")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--ane-container", type=Path, help="ANE container to verify and submit")
    return parser.parse_args(argv)


def load_model(model_dir: Path | None) -> ChatModel:
    """The given model folder, or the tiny demo model built (once) under build/tiny-llama/."""
    if model_dir is not None:
        return ChatModel.load(model_dir)
    built = ensure_tiny_llama(TINY_DIR)
    action = "Built" if built else "Using cached"
    note(
        f"{action} tiny demo model in {TINY_DIR}/ (no MODEL_DIR given). It has RANDOM weights: "
        "its answers are gibberish; it shows the pipeline working, not a real chat."
    )
    return ChatModel.load(TINY_DIR)


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
        note(f"[{session.last_stats.summary()}]")


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
        model = load_model(args.model_dir)
        note(f"Model: {model.describe()}")
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
