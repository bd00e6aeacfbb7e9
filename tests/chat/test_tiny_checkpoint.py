"""The tiny model folder is also a Hugging Face checkpoint of the same weights as its export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from ane_build.chat.tiny import TinyLlamaConfig, write_tiny_llama
from ane_build.llm.spec import LlamaSpec

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def test_safetensors_hold_the_exports_weights_in_hf_layout(tmp_path: Path) -> None:
    config = TinyLlamaConfig(num_layers=3, num_kv_heads=1)
    folder = write_tiny_llama(tmp_path / "m", config)
    exported = {
        t.name: numpy_helper.to_array(t)
        for t in onnx.load(str(folder / "model.onnx")).graph.initializer
    }
    saved = safetensors_numpy.load_file(str(folder / "model.safetensors"))
    spec = LlamaSpec.from_dir(folder)
    h, d = spec.hidden_size, spec.head_dim
    assert (spec.num_layers, spec.num_kv_heads, spec.vocab_size) == (
        3,
        1,
        exported["lm_head.weight"].shape[1],
    )
    assert saved["model.layers.2.self_attn.k_proj.weight"].shape == (d, h)  # [out, in]
    assert saved["lm_head.weight"].shape == (spec.vocab_size, h)
    assert saved["model.embed_tokens.weight"].shape == (spec.vocab_size, h)
    expected = {n for n in exported if n.startswith("model.") or n == "lm_head.weight"}
    assert set(saved) == expected
    for name, array in saved.items():
        source = exported[name]
        linear = name.endswith("_proj.weight") or name == "lm_head.weight"
        assert np.array_equal(array, source.T if linear else source), name
        # Every weight is a float16 number, so a float16 engine holds exactly these values.
        assert np.array_equal(array.astype(np.float16).astype(np.float32), array), name
