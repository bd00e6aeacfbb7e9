"""The chat stack on the tiny built-in model: KV cache, generation, sessions, example, ANE step."""

from __future__ import annotations

import math
import shutil
import struct
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from ane_build.chat.ane import run_ane_step
from ane_build.chat.errors import ChatDependencyError, ChatError, ContextOverflowError
from ane_build.chat.generate import TokenGenerator
from ane_build.chat.model import CausalLM
from ane_build.chat.sampling import SamplingConfig
from ane_build.chat.session import ChatModel, ChatSession
from ane_build.chat.tiny import TinyLlamaConfig, ensure_tiny_llama, write_tiny_llama
from ane_build.chat.tokenizer import StreamDecoder

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "tinyllama_chat.py"
TOOL = REPO / "tools" / "make_tiny_llama.py"
GREEDY = SamplingConfig(temperature=0.0)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model built once per session: fp32 and fp16 caches, and without position_ids."""
    root = tmp_path_factory.mktemp("tiny-llama")
    return {
        "float32": write_tiny_llama(root / "fp32", TinyLlamaConfig()),
        "float16": write_tiny_llama(root / "fp16", TinyLlamaConfig(cache_dtype="float16")),
        "no_position_ids": write_tiny_llama(root / "nopos", TinyLlamaConfig(position_ids=False)),
    }


@pytest.fixture(scope="session")
def chat_model(tiny_dirs: dict[str, Path]) -> ChatModel:
    return ChatModel.load(tiny_dirs["float32"], threads=1)


def chat_prompt(model: ChatModel, text: str = "Why is the sky blue?") -> list[int]:
    return model.tokenizer.encode(
        model.template.render(
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]
        )
    )


# --- model and KV cache --------------------------------------------------------------------------


def test_cache_layout_is_read_from_the_graph(tiny_dirs: dict[str, Path]) -> None:
    config = TinyLlamaConfig()
    for dtype, folder in (("float32", tiny_dirs["float32"]), ("float16", tiny_dirs["float16"])):
        signature = CausalLM(folder, threads=1).signature
        cache = signature.cache
        assert (cache.num_layers, cache.num_kv_heads, cache.head_dim) == (
            config.num_layers,
            config.num_kv_heads,
            config.head_dim,
        )
        assert cache.dtype_name == dtype
        assert cache.past_names[:2] == ("past_key_values.0.key", "past_key_values.0.value")
        assert cache.present_names[-1] == f"present.{config.num_layers - 1}.value"
        assert signature.position_ids and signature.attention_mask


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_greedy_with_kv_cache_matches_full_recompute_at_every_step(
    tiny_dirs: dict[str, Path], dtype: str
) -> None:
    model = ChatModel.load(tiny_dirs[dtype], threads=1)
    prompt = chat_prompt(model)
    # No EOS ids: all 32 tokens are produced whatever the random weights prefer.
    generator = TokenGenerator(model.lm)
    tokens = list(generator.generate(prompt, max_new_tokens=32, sampling=GREEDY))
    assert len(tokens) == 32
    assert len(set(tokens)) > 8, "a degenerate sequence would make the comparison weak"
    for step, token in enumerate(tokens):
        logits = model.lm.logits_without_cache(prompt + tokens[:step])
        assert int(np.argmax(logits)) == token, f"step {step}"
    assert generator.last_stats.stop_reason == "length"
    assert len(generator.cache) == len(prompt) + 31


def test_fp32_and_fp16_caches_agree(tiny_dirs: dict[str, Path]) -> None:
    prompt = [1, 40, 41, 42, 43]
    outputs = [
        list(TokenGenerator(CausalLM(tiny_dirs[d], threads=1)).generate(prompt, max_new_tokens=12))
        for d in ("float32", "float16")
    ]
    assert outputs[0] == outputs[1]


def reference_logits(model_path: Path, config: TinyLlamaConfig, ids: list[int]) -> np.ndarray:
    """LLaMA forward pass in plain numpy from the ONNX initializers (no cache, all positions)."""
    graph = onnx.load(str(model_path)).graph
    w: dict[str, np.ndarray] = {
        init.name: numpy_helper.to_array(init).astype(np.float64) for init in graph.initializer
    }
    heads, kv_heads, dim = config.num_heads, config.num_kv_heads, config.head_dim
    n = len(ids)

    def rms(x: np.ndarray, name: str) -> np.ndarray:
        return np.asarray(
            x / np.sqrt((x * x).mean(-1, keepdims=True) + config.rms_norm_eps) * w[name]
        )

    freqs = np.arange(n)[:, None] / config.rope_theta ** (np.arange(0, dim, 2) / dim)[None, :]
    angles = np.concatenate([freqs, freqs], axis=-1)

    def rope(x: np.ndarray) -> np.ndarray:
        half = dim // 2
        turned = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        return np.asarray(x * np.cos(angles) + turned * np.sin(angles))

    x = w["model.embed_tokens.weight"][ids]
    causal = np.triu(np.full((n, n), -np.inf), k=1)
    for layer in range(config.num_layers):
        p = f"model.layers.{layer}"
        h = rms(x, f"{p}.input_layernorm.weight")
        q = (h @ w[f"{p}.self_attn.q_proj.weight"]).reshape(n, heads, dim).transpose(1, 0, 2)
        k = (h @ w[f"{p}.self_attn.k_proj.weight"]).reshape(n, kv_heads, dim).transpose(1, 0, 2)
        v = (h @ w[f"{p}.self_attn.v_proj.weight"]).reshape(n, kv_heads, dim).transpose(1, 0, 2)
        q, k = rope(q), rope(k)
        # Query head i reads KV head i // group.
        k = np.repeat(k, heads // kv_heads, axis=0)
        v = np.repeat(v, heads // kv_heads, axis=0)
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(dim) + causal
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        attended = (probs @ v).transpose(1, 0, 2).reshape(n, heads * dim)
        x = x + attended @ w[f"{p}.self_attn.o_proj.weight"]
        h = rms(x, f"{p}.post_attention_layernorm.weight")
        gate = h @ w[f"{p}.mlp.gate_proj.weight"]
        up = h @ w[f"{p}.mlp.up_proj.weight"]
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[f"{p}.mlp.down_proj.weight"]
    return np.asarray(rms(x, "model.norm.weight") @ w["lm_head.weight"])


def test_tiny_model_computes_the_llama_architecture(tiny_dirs: dict[str, Path]) -> None:
    ids = [1, 17, 300, 5, 77, 512, 9, 1000, 3, 44]
    expected = reference_logits(tiny_dirs["float32"] / "model.onnx", TinyLlamaConfig(), ids)
    lm = CausalLM(tiny_dirs["float32"], threads=1)
    cache = lm.new_cache()
    # Prefill part, then one token at a time: every position must match the reference.
    np.testing.assert_allclose(lm.forward(cache, ids[:6]), expected[5], atol=2e-4)
    for pos in range(6, len(ids)):
        np.testing.assert_allclose(lm.forward(cache, ids[pos : pos + 1]), expected[pos], atol=2e-4)


def test_graph_without_position_ids_gives_the_same_logits(tiny_dirs: dict[str, Path]) -> None:
    with_pos = CausalLM(tiny_dirs["float32"], threads=1)
    without = CausalLM(tiny_dirs["no_position_ids"], threads=1)
    assert not without.signature.position_ids
    caches = (with_pos.new_cache(), without.new_cache())
    for chunk in ([1, 2, 3, 4], [5], [6, 7]):
        a = with_pos.forward(caches[0], chunk).copy()
        b = without.forward(caches[1], chunk)
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_external_data_model_loads_from_its_folder(
    tiny_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_tiny_llama(tmp_path / "ext", TinyLlamaConfig(), external_data=True)
    assert (folder / "model.onnx.data").stat().st_size > (folder / "model.onnx").stat().st_size
    monkeypatch.chdir(tmp_path)
    ids = [1, 10, 20, 30]
    inline = CausalLM(tiny_dirs["float32"], threads=1).logits_without_cache(ids)
    external = CausalLM(Path("ext"), threads=1).logits_without_cache(ids)
    np.testing.assert_array_equal(inline, external)


def test_non_causal_lm_is_rejected(tmp_path: Path) -> None:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(onnx.helper.make_model(graph, ir_version=9), str(tmp_path / "model.onnx"))
    with pytest.raises(ChatError, match="input_ids"):
        CausalLM(tmp_path)


def test_missing_onnxruntime_is_explained(
    tiny_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ChatDependencyError, match=r"ane-build\[chat\]"):
        CausalLM(tiny_dirs["float32"])


def test_importing_the_package_loads_no_optional_dependency() -> None:
    code = (
        "import sys, ane_build, ane_build.chat\n"
        "from ane_build.chat import generate, model, sampling, session, template, tokenizer\n"
        "heavy = {'onnxruntime', 'tokenizers', 'jinja2'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- generation ----------------------------------------------------------------------------------


def test_prefix_of_the_previous_call_is_reused(chat_model: ChatModel) -> None:
    prompt = chat_prompt(chat_model)
    generator = TokenGenerator(chat_model.lm)
    first = list(generator.generate(prompt, max_new_tokens=6))
    follow_up = prompt + first + [40, 41, 42]
    second = list(generator.generate(follow_up, max_new_tokens=6))
    # The last generated token was never run, so the cache ends just before it.
    assert generator.last_stats.reused_tokens == len(prompt) + len(first) - 1
    fresh = list(TokenGenerator(chat_model.lm).generate(follow_up, max_new_tokens=6))
    assert second == fresh
    # A prompt that diverges inside the cache keeps only the common prefix.
    diverged = [*prompt[:5], 99, 98]
    third = list(generator.generate(diverged, max_new_tokens=6))
    assert generator.last_stats.reused_tokens == 5
    assert third == list(TokenGenerator(chat_model.lm).generate(diverged, max_new_tokens=6))


def test_generation_stops_at_eos_without_yielding_it(chat_model: ChatModel) -> None:
    prompt = chat_prompt(chat_model)
    first = next(iter(TokenGenerator(chat_model.lm).generate(prompt, max_new_tokens=4)))
    generator = TokenGenerator(chat_model.lm, eos_ids={first})
    assert list(generator.generate(prompt, max_new_tokens=4)) == []
    assert generator.last_stats.stop_reason == "eos"


def test_generation_stops_at_the_context_window(chat_model: ChatModel) -> None:
    prompt = chat_prompt(chat_model)
    generator = TokenGenerator(chat_model.lm, context_window=len(prompt) + 3)
    assert len(list(generator.generate(prompt, max_new_tokens=50))) == 4
    assert generator.last_stats.stop_reason == "context"
    with pytest.raises(ChatError, match="context window"):
        generator.generate(prompt + [5] * 4, max_new_tokens=1)


def test_temperature_zero_is_greedy_whatever_the_seed(chat_model: ChatModel) -> None:
    prompt = chat_prompt(chat_model)
    runs = {
        tuple(
            TokenGenerator(chat_model.lm).generate(
                prompt, max_new_tokens=10, sampling=SamplingConfig(temperature=0.0, seed=seed)
            )
        )
        for seed in (1, 2, 3)
    }
    assert len(runs) == 1
    token = int(np.argmax(chat_model.lm.logits_without_cache(prompt)))
    assert next(iter(runs))[0] == token


def answer_text(model: ChatModel, sampling: SamplingConfig, text: str = "Hello") -> str:
    session = ChatSession(model, system="Be brief.", sampling=sampling, max_new_tokens=16)
    return "".join(session.ask(text))


def test_same_seed_same_tokens(chat_model: ChatModel) -> None:
    sampling = SamplingConfig(temperature=1.0, top_k=40, top_p=0.9, seed=7)
    assert answer_text(chat_model, sampling) == answer_text(chat_model, sampling)
    assert answer_text(chat_model, sampling) != answer_text(chat_model, replace(sampling, seed=8))


# --- tokenizer and session -----------------------------------------------------------------------


def test_tokenizer_maps_template_tokens_and_eos(chat_model: ChatModel) -> None:
    tok = chat_model.tokenizer
    ids = chat_prompt(chat_model)
    assert ids[0] == tok.bos_id == 1
    assert tok.eos_ids == {2}
    assert ids.count(2) == 2  # one </s> after the system turn, one after the user turn
    assert tok.token_to_id("<|assistant|>") in ids


def test_chat_model_renders_with_the_chat_template_jinja_beside_it(
    tiny_dirs: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "with-jinja"
    shutil.copytree(tiny_dirs["float32"], folder)
    (folder / "chat_template.jinja").write_text(
        "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{{ eos_token }}{% endfor %}"
        "{% if add_generation_prompt %}[assistant] {% endif %}",
        encoding="utf-8",
    )
    model = ChatModel.load(folder, threads=1)
    assert "chat_template.jinja" in model.describe()
    session = ChatSession(model, system="Be brief.", sampling=GREEDY, max_new_tokens=4)
    ids = session.fit_prompt("Hi")
    assert model.tokenizer.decode(ids) == "[system] Be brief.[user] Hi[assistant] "


def test_stream_decoder_never_splits_characters(chat_model: ChatModel) -> None:
    tok = chat_model.tokenizer
    text = "Café, naïve façade — über 20 °C. 日本語 ✓"
    ids = tok.encode(text)[1:]
    decoder = StreamDecoder(tok)
    pieces = [decoder.push(i) for i in ids] + [decoder.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)


def test_session_keeps_history_and_reuses_the_cache(chat_model: ChatModel) -> None:
    session = ChatSession(chat_model, system="Be brief.", sampling=GREEDY, max_new_tokens=8)
    first = "".join(session.ask("Hello"))
    assert session.turns == [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": first.strip()},
    ]
    "".join(session.ask("And then?"))
    assert session.last_stats is not None
    assert session.last_stats.reused_tokens > 10
    session.reset()
    assert session.turns == []
    assert session.messages("x")[0] == {"role": "system", "content": "Be brief."}


def test_stopping_an_answer_keeps_the_partial_answer(chat_model: ChatModel) -> None:
    session = ChatSession(chat_model, sampling=GREEDY, max_new_tokens=30)
    stream = session.ask("Tell me a story")
    pieces = [next(stream) for _ in range(3)]
    stream.close()
    assert session.last_stats is not None and session.last_stats.stop_reason == "cancelled"
    assert session.turns[-1] == {"role": "assistant", "content": "".join(pieces).strip()}
    assert "".join(session.ask("Go on"))  # the cache is still usable


def test_session_drops_oldest_turns_but_keeps_the_system_prompt(chat_model: ChatModel) -> None:
    small = replace(chat_model, context_window=160)
    session = ChatSession(small, system="You are terse.", sampling=GREEDY, max_new_tokens=24)
    for i in range(8):
        for _ in session.ask(f"Question number {i} about the weather in the hills?"):
            pass
    assert session.dropped_turns > 0
    assert session.turns[0]["content"] != "Question number 0 about the weather in the hills?"
    messages = session.messages("last one")
    assert messages[0] == {"role": "system", "content": "You are terse."}
    ids = session.fit_prompt("last one")
    assert len(ids) <= 160 - 24
    assert small.tokenizer.decode(ids).startswith("<|system|>\nYou are terse.")


def test_a_message_larger_than_the_context_is_refused(chat_model: ChatModel) -> None:
    session = ChatSession(replace(chat_model, context_window=64), max_new_tokens=8)
    with pytest.raises(ContextOverflowError):
        session.ask("word " * 200)


# --- tiny model builder --------------------------------------------------------------------------


def test_tiny_model_is_deterministic_and_cached(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    assert ensure_tiny_llama(tmp_path / "m") is True
    assert ensure_tiny_llama(tmp_path / "m") is False
    for name in ("model.onnx", "tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "m" / name).read_bytes() == (tiny_dirs["float32"] / name).read_bytes()
    assert ensure_tiny_llama(tmp_path / "m", TinyLlamaConfig(seed=3)) is True


def test_make_tiny_llama_tool(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(TOOL),
            str(tmp_path / "t"),
            "--cache-dtype",
            "float16",
            "--model-vocab-size",
            "1500",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lm = CausalLM(tmp_path / "t", threads=1)
    assert lm.signature.cache.dtype_name == "float16"
    assert lm.vocab_size == 1500


# --- the example script --------------------------------------------------------------------------


def run_example(*args: str, stdin: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


@pytest.fixture(scope="session")
def ane_container(tiny_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fp16 tiny model as an ANE container with a one-descriptor synthetic program."""
    from ane_build import PayloadRef
    from ane_build.container import embed_ane_metadata

    # One 0x274-byte descriptor whose word 0 has the end-of-network bit (25) set.
    microcode = struct.pack("<I", 1 << 25) + bytes(0x270)
    out = tmp_path_factory.mktemp("ane") / "model_ane.onnx"
    embed_ane_metadata(
        tiny_dirs["float16"] / "model.onnx",
        out,
        microcode=PayloadRef.from_bytes(microcode),
        td_size=0x274,
        td_count=1,
    )
    return out


def test_example_prompt_mode_with_piped_input(
    tiny_dirs: dict[str, Path], ane_container: Path, tmp_path: Path
) -> None:
    model_dir = tiny_dirs["float16"]
    args = ["--prompt", "-", "--temperature", "0", "--max-new-tokens", "12"]
    result = run_example(
        str(model_dir),
        *args,
        "--device",
        "sim",
        "--ane-container",
        str(ane_container),
        stdin="What is a cache?\n",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    session = ChatSession(
        ChatModel.load(model_dir),
        system="You are a friendly assistant.",
        sampling=GREEDY,
        max_new_tokens=12,
    )
    expected = "".join(session.ask("What is a cache?"))
    assert result.stdout == expected + "\n"  # the answer only: no prompts, no status
    assert "TTFT" in result.stderr and "decode" in result.stderr and "prefill" in result.stderr
    assert "submitted to the simulator (no ANE hardware results)" in result.stderr
    assert "tokens generated by onnxruntime on the CPU" in result.stderr


def test_example_prompt_text_ignores_piped_stdin_and_rejects_bad_settings(
    tiny_dirs: dict[str, Path], tmp_path: Path
) -> None:
    model_dir = str(tiny_dirs["float32"])
    args = ["--prompt", "Hi", "--temperature", "0", "--max-new-tokens", "3"]
    result = run_example(model_dir, *args, stdin="not a message\n/quit\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1
    assert result.stderr.count("TTFT") == 1
    bad = run_example(model_dir, "--prompt", "Hi", "--top-p", "0", stdin="", cwd=tmp_path)
    assert bad.returncode == 1
    assert "error: top_p must be in (0, 1]" in bad.stderr
    assert bad.stdout == ""


@pytest.fixture(scope="session")
def small_context_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a 48-token context window."""
    root = tmp_path_factory.mktemp("ctx48")
    return write_tiny_llama(root / "m", TinyLlamaConfig(max_position_embeddings=48))


def test_example_prompt_too_long_exits_1_with_one_error_line(
    small_context_dir: Path, tmp_path: Path
) -> None:
    long_message = "Tell me about the weather in the hills and the valleys " * 4
    args = ["--prompt", long_message, "--temperature", "0"]
    result = run_example(str(small_context_dir), *args, stdin="", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("error: the prompt needs") == 1
    assert "context window is 48" in result.stderr
    assert "Traceback" not in result.stderr
    assert "TTFT" not in result.stderr
    assert result.stdout == ""


def test_example_interactive_goes_on_after_a_message_too_long(
    small_context_dir: Path, tmp_path: Path
) -> None:
    lines = "Tell me about the weather in the hills and the valleys " * 4 + "\nHi\n"
    args = ["--temperature", "0", "--max-new-tokens", "4", "--system", ""]
    result = run_example(str(small_context_dir), *args, stdin=lines, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("error: the prompt needs") == 1
    assert result.stderr.count("TTFT") == 1


def test_example_interactive_with_piped_lines_builds_the_demo_model(tmp_path: Path) -> None:
    lines = "Hello there\n/reset\nSecond question\n/quit\nnever read\n"
    result = run_example("--seed", "3", "--max-new-tokens", "6", stdin=lines, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "build" / "tiny-llama" / "model.onnx").is_file()
    assert "RANDOM weights" in result.stderr
    assert "ANE: skipped" in result.stderr
    assert "[history cleared]" in result.stderr
    assert result.stderr.count("TTFT") == 2
    assert "you>" not in result.stdout
    assert len(result.stdout.splitlines()) >= 2


# --- the ANE step --------------------------------------------------------------------------------


def test_ane_step_submits_the_container_to_the_simulator(
    tiny_dirs: dict[str, Path], ane_container: Path
) -> None:
    report = run_ane_step(
        tiny_dirs["float16"] / "model.onnx", container=ane_container, device="sim"
    )
    assert report.submitted and report.simulated is True
    assert report.container == ane_container
    where = report.where(["CPUExecutionProvider"])
    assert where.startswith(f"ANE: container {ane_container.name} verified and submitted to the")
    assert "simulator (no ANE hardware results)" in where
    assert where.endswith("tokens generated by onnxruntime on the CPU")


def test_model_carrying_ane_metadata_is_submitted_and_still_chats(
    tiny_dirs: dict[str, Path], ane_container: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "with-ane"
    shutil.copytree(tiny_dirs["float16"], folder)
    shutil.copyfile(ane_container, folder / "model.onnx")
    model = ChatModel.load(folder, threads=1)
    report = run_ane_step(model.lm.path, device="sim")
    assert report.submitted and report.simulated
    session = ChatSession(model, sampling=GREEDY, max_new_tokens=4)
    assert "".join(session.ask("Hi"))


def test_ane_step_is_skipped_without_metadata(tiny_dirs: dict[str, Path]) -> None:
    report = run_ane_step(tiny_dirs["float32"] / "model.onnx", device="sim")
    assert not report.submitted and report.simulated is None
    assert report.where().startswith("ANE: skipped (model.onnx carries no ane.* metadata")


def test_named_container_without_metadata_is_an_error(tiny_dirs: dict[str, Path]) -> None:
    model = tiny_dirs["float32"] / "model.onnx"
    with pytest.raises(ChatError, match="not an ANE container"):
        run_ane_step(model, container=model, device="sim")
