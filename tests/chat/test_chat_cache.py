"""The decode loop's own buffers: KV cache growth and truncation, failed steps, logits sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from ane_build.chat.errors import ChatError
from ane_build.chat.generate import TokenGenerator
from ane_build.chat.model import CausalLM, KVCache
from ane_build.chat.sampling import SamplingConfig
from ane_build.chat.session import ChatModel, ChatSession
from ane_build.chat.tiny import TinyLlamaConfig, write_tiny_llama

GREEDY = SamplingConfig(temperature=0.0)


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model with an fp32 and an fp16 cache."""
    root = tmp_path_factory.mktemp("tiny-cache")
    return {
        "float32": write_tiny_llama(root / "fp32", TinyLlamaConfig()),
        "float16": write_tiny_llama(root / "fp16", TinyLlamaConfig(cache_dtype="float16")),
    }


def fresh_tensors(lm: CausalLM, ids: list[int]) -> list[np.ndarray]:
    cache = lm.new_cache()
    lm.forward(cache, ids)
    return [t.copy() for t in cache.tensors()]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cache_buffers_grow_and_truncate_without_changing_results(
    tiny_dirs: dict[str, Path], dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small first buffers, so this generation grows them several times (8, 16, 32, 64).
    monkeypatch.setattr(KVCache, "MIN_CAPACITY", 8)
    lm = CausalLM(tiny_dirs[dtype], threads=1)
    prompt = [1, 40, 41, 42, 43]
    generator = TokenGenerator(lm)
    tokens = list(generator.generate(prompt, max_new_tokens=40, sampling=GREEDY))
    cache = generator.cache
    assert cache.capacity == 64
    seen = prompt + tokens[:-1]
    for cached, fresh in zip(cache.tensors(), fresh_tensors(lm, seen), strict=True):
        assert cached.shape == fresh.shape == (1, 2, len(seen), TinyLlamaConfig().head_dim)
        np.testing.assert_allclose(cached, fresh, atol=1e-3 if dtype == "float16" else 1e-5)
    for step in (0, 7, 20, 39):
        logits = lm.logits_without_cache(prompt + tokens[:step])
        assert int(np.argmax(logits)) == tokens[step], f"step {step}"
    cache.truncate(10)
    assert len(cache) == 10 and cache.is_consistent()
    for cached, fresh in zip(cache.tensors(), fresh_tensors(lm, seen[:10]), strict=True):
        np.testing.assert_allclose(cached, fresh, atol=1e-3 if dtype == "float16" else 1e-5)
    np.testing.assert_allclose(
        lm.forward(cache, seen[10:12]), lm.logits_without_cache(seen[:12]), atol=1e-4
    )


def test_cache_buffers_never_grow_past_the_context_window(tiny_dirs: dict[str, Path]) -> None:
    layout = CausalLM(tiny_dirs["float32"], threads=1).signature.cache
    cache = KVCache(layout, max_positions=40)
    cache.reserve(30)
    assert cache.capacity == 40
    cache.reserve(50)  # a caller past the window still gets room for what it runs
    assert cache.capacity == 50
    unbounded = KVCache(layout)
    unbounded.reserve(30)
    assert unbounded.capacity == KVCache.MIN_CAPACITY


def test_failed_step_leaves_the_cache_as_it_was(tiny_dirs: dict[str, Path]) -> None:
    lm = CausalLM(tiny_dirs["float32"], threads=1)
    cache = lm.new_cache()
    lm.forward(cache, [1, 40, 41])
    before = [t.copy() for t in cache.tensors()]
    with pytest.raises(ChatError, match="position 3"):
        lm.forward(cache, [10**6])  # no such token: the embedding Gather fails
    assert len(cache) == 3 and cache.is_consistent()
    for kept, old in zip(cache.tensors(), before, strict=True):
        np.testing.assert_array_equal(kept, old)
    np.testing.assert_allclose(
        lm.forward(cache, [42]), lm.logits_without_cache([1, 40, 41, 42]), atol=1e-5
    )


def test_graph_with_a_symbolic_vocabulary_gives_the_same_logits(
    tiny_dirs: dict[str, Path], tmp_path: Path
) -> None:
    model = onnx.load(str(tiny_dirs["float32"] / "model.onnx"))
    # Declared as an input too, the LM head may be overridden at run time, so not even shape
    # inference knows the vocabulary.
    config = TinyLlamaConfig()
    model.graph.input.append(
        onnx.helper.make_tensor_value_info(
            "lm_head.weight", onnx.TensorProto.FLOAT, [config.hidden_size, "vocab_size"]
        )
    )
    logits = next(o for o in model.graph.output if o.name == "logits")
    logits.type.tensor_type.shape.dim[2].dim_param = "vocab_size"
    onnx.save_model(model, str(tmp_path / "model.onnx"))
    symbolic = CausalLM(tmp_path / "model.onnx", threads=1)
    fixed = CausalLM(tiny_dirs["float32"], threads=1)
    assert symbolic.signature.vocab_size is None and symbolic.vocab_size is None
    caches = (symbolic.new_cache(), fixed.new_cache())
    # A single token first: the vocabulary is learnt from a decode step, then a prefill.
    for chunk in ([1], [2], [3, 4, 5], [6]):
        a = symbolic.forward(caches[0], chunk).copy()
        # Without a constant head onnxruntime packs the weight differently: last-bit changes.
        np.testing.assert_allclose(a, fixed.forward(caches[1], chunk), atol=1e-5)
    assert symbolic.vocab_size == fixed.vocab_size


def test_model_vocabulary_larger_than_the_tokenizer(tmp_path: Path) -> None:
    folder = write_tiny_llama(tmp_path / "wide", TinyLlamaConfig(model_vocab_size=2000))
    model = ChatModel.load(folder, threads=1)
    assert model.lm.vocab_size == 2000
    assert model.tokenizer.vocab_size == 1024
    session = ChatSession(model, sampling=SamplingConfig(temperature=0.0), max_new_tokens=6)
    "".join(session.ask("Hi"))
    assert session.last_stats is not None and session.last_stats.new_tokens == 6
    with pytest.raises(ChatError, match="model_vocab_size"):
        TinyLlamaConfig(model_vocab_size=1000)
