"""onnxruntime-genai layout: ``genai_config.json`` instead of ``config.json``, symbolic cache dims.

The fixture re-exports the tiny model the way onnxruntime-genai exports look: the head size (and
optionally the KV head count) symbolic in the graph, the numbers and names in
``genai_config.json`` only. It must load and generate exactly what the ``config.json`` layout does.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import pytest

from ane_build.chat.config import IoNames, ModelConfig
from ane_build.chat.errors import ChatError
from ane_build.chat.generate import TokenGenerator
from ane_build.chat.model import CausalLM
from ane_build.chat.sampling import SamplingConfig
from ane_build.chat.session import ChatModel, ChatSession
from ane_build.chat.tiny import TinyLlamaConfig, write_tiny_llama

TINY = TinyLlamaConfig()
GREEDY = SamplingConfig(temperature=0.0)
CONTEXT = 384  # differs from the tokenizer's model_max_length (512), so its source shows


@dataclass(frozen=True)
class Export:
    """How the genai-style copy differs from the tiny model's own layout."""

    symbolic_kv_heads: bool = False
    renamed: bool = False
    filename: str = "model.onnx"


def names(export: Export) -> dict[str, str]:
    if export.renamed:
        return {
            "past_key": "past_key_%d",
            "past_value": "past_value_%d",
            "present_key": "present_key_%d",
            "present_value": "present_value_%d",
            "logits": "lm_logits",
        }
    return {
        "past_key": "past_key_values.%d.key",
        "past_value": "past_key_values.%d.value",
        "present_key": "present.%d.key",
        "present_value": "present.%d.value",
        "logits": "logits",
    }


def rename_map(export: Export) -> dict[str, str]:
    templates = names(export)
    mapping = {"logits": templates["logits"]}
    for layer in range(TINY.num_layers):
        for kind in ("key", "value"):
            mapping[f"past_key_values.{layer}.{kind}"] = templates[f"past_{kind}"] % layer
            mapping[f"present.{layer}.{kind}"] = templates[f"present_{kind}"] % layer
    return mapping


def reexport_graph(source: Path, target: Path, export: Export) -> None:
    """The tiny graph with symbolic cache dims and, optionally, genai-style renamed tensors."""
    model = onnx.load(str(source))
    graph = model.graph
    mapping = rename_map(export)
    for value in [*graph.input, *graph.output]:
        if value.name.startswith(("past_key_values.", "present.")):
            dims = value.type.tensor_type.shape.dim
            dims[3].dim_param = "head_size"
            if export.symbolic_kv_heads:
                dims[1].dim_param = "num_key_value_heads"
        value.name = mapping.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
    onnx.checker.check_model(model)
    onnx.save_model(model, str(target))


def genai_config(vocab: int, export: Export, eos: Any) -> dict[str, Any]:
    """A ``genai_config.json`` in the schema onnxruntime-genai's model builder writes."""
    templates = names(export)
    return {
        "model": {
            "bos_token_id": 1,
            "context_length": CONTEXT,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": export.filename,
                "head_size": TINY.head_dim,
                "hidden_size": TINY.hidden_size,
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "position_ids": "position_ids",
                    "past_key_names": templates["past_key"],
                    "past_value_names": templates["past_value"],
                },
                "outputs": {
                    "logits": templates["logits"],
                    "present_key_names": templates["present_key"],
                    "present_value_names": templates["present_value"],
                },
                "num_attention_heads": TINY.num_heads,
                "num_hidden_layers": TINY.num_layers,
                "num_key_value_heads": TINY.num_kv_heads,
            },
            "eos_token_id": eos,
            "pad_token_id": 0,
            "type": "llama",
            "vocab_size": vocab,
        },
        "search": {"do_sample": False, "max_length": CONTEXT, "past_present_share_buffer": False},
    }


def make_genai_folder(tiny: Path, target: Path, export: Export, eos: Any = 2) -> Path:
    target.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tiny / name, target / name)
    reexport_graph(tiny / "model.onnx", target / export.filename, export)
    vocab = json.loads((tiny / "config.json").read_text())["vocab_size"]
    (target / "genai_config.json").write_text(json.dumps(genai_config(vocab, export, eos)))
    return target


def input_shapes(path: Path) -> dict[str, list[str | int]]:
    graph = onnx.load(str(path)).graph
    return {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
        for i in graph.input
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("tiny") / "fp32", TINY)


@pytest.fixture(scope="module")
def reference(tiny: Path) -> ChatModel:
    return ChatModel.load(tiny, threads=1)


def prompt_of(model: ChatModel) -> list[int]:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why?"}]
    return model.tokenizer.encode(model.template.render(messages))  # type: ignore[arg-type]


EXPORTS = {
    "symbolic-head-size": Export(),
    "symbolic-kv-renamed-file": Export(symbolic_kv_heads=True, renamed=True, filename="dec.onnx"),
}


@pytest.mark.parametrize("export", EXPORTS.values(), ids=EXPORTS.keys())
def test_genai_layout_loads_and_generates_the_same_tokens(
    tiny: Path, reference: ChatModel, tmp_path: Path, export: Export
) -> None:
    folder = make_genai_folder(tiny, tmp_path / "genai", export, eos=[2, 7])
    if export.filename != "model.onnx":
        # A second graph beside it: only the name in genai_config.json tells them apart.
        shutil.copyfile(folder / export.filename, folder / "other.onnx")
    assert not (folder / "config.json").exists()
    _, heads, _, head_size = input_shapes(folder / export.filename)[names(export)["past_key"] % 0]
    assert head_size == "head_size"
    assert heads == ("num_key_value_heads" if export.symbolic_kv_heads else TINY.num_kv_heads)

    model = ChatModel.load(folder, threads=1)
    assert model.lm.path.name == export.filename
    cache, expected = model.lm.signature.cache, reference.lm.signature.cache
    assert (cache.num_layers, cache.num_kv_heads, cache.head_dim) == (
        expected.num_layers,
        expected.num_kv_heads,
        expected.head_dim,
    )
    assert cache.past_names[0] == names(export)["past_key"] % 0
    assert model.context_window == CONTEXT
    assert model.tokenizer.eos_ids == {2, 7}

    prompt = prompt_of(reference)
    assert prompt_of(model) == prompt
    ours = list(TokenGenerator(model.lm).generate(prompt, max_new_tokens=24, sampling=GREEDY))
    theirs = list(TokenGenerator(reference.lm).generate(prompt, max_new_tokens=24, sampling=GREEDY))
    assert len(ours) == 24
    assert ours == theirs


def test_genai_chat_answers_like_the_config_json_layout(
    tiny: Path, reference: ChatModel, tmp_path: Path
) -> None:
    folder = make_genai_folder(tiny, tmp_path / "genai", Export())
    model = ChatModel.load(folder, threads=1)
    answers = [
        "".join(ChatSession(m, system="Be brief.", sampling=GREEDY, max_new_tokens=12).ask("Hi"))
        for m in (model, reference)
    ]
    assert answers[0] == answers[1]


def test_symbolic_cache_without_a_config_is_explained(tiny: Path, tmp_path: Path) -> None:
    folder = make_genai_folder(tiny, tmp_path / "genai", Export())
    (folder / "genai_config.json").unlink()
    with pytest.raises(ChatError, match="symbolic"):
        CausalLM(folder, threads=1)


def test_genai_config_that_contradicts_the_graph_is_refused(tiny: Path, tmp_path: Path) -> None:
    folder = make_genai_folder(tiny, tmp_path / "genai", Export())
    data = json.loads((folder / "genai_config.json").read_text())
    data["model"]["decoder"]["num_hidden_layers"] = 3
    (folder / "genai_config.json").write_text(json.dumps(data))
    with pytest.raises(ChatError, match="3 layers but the graph has 2"):
        CausalLM(folder, threads=1)
    data["model"]["decoder"]["num_hidden_layers"] = 2
    data["model"]["decoder"]["num_key_value_heads"] = 4
    (folder / "genai_config.json").write_text(json.dumps(data))
    with pytest.raises(ChatError, match="KV heads 4 but the graph has 2"):
        CausalLM(folder, threads=1)


def test_genai_config_naming_a_missing_file_is_an_error(tiny: Path, tmp_path: Path) -> None:
    folder = make_genai_folder(tiny, tmp_path / "genai", Export(filename="dec.onnx"))
    (folder / "dec.onnx").rename(folder / "model.onnx")
    with pytest.raises(ChatError, match=r"dec\.onnx"):
        CausalLM(folder, threads=1)


# --- parsing -------------------------------------------------------------------------------------

# The example of onnxruntime-genai's configuration reference (phi-2), abridged.
PHI2 = {
    "model": {
        "bos_token_id": 50256,
        "context_length": 2048,
        "decoder": {
            "filename": "model.onnx",
            "head_size": 80,
            "hidden_size": 2560,
            "inputs": {
                "input_ids": "input_ids",
                "attention_mask": "attention_mask",
                "position_ids": "position_ids",
                "past_key_names": "past_key_values.%d.key",
                "past_value_names": "past_key_values.%d.value",
            },
            "outputs": {
                "logits": "logits",
                "present_key_names": "present.%d.key",
                "present_value_names": "present.%d.value",
            },
            "num_attention_heads": 32,
            "num_hidden_layers": 32,
            "num_key_value_heads": 32,
        },
        "eos_token_id": 50256,
        "pad_token_id": 50256,
        "type": "phi",
        "vocab_size": 51200,
    },
}


def test_genai_config_numbers_are_read() -> None:
    config = ModelConfig.from_genai(PHI2)
    assert (config.num_layers, config.num_heads, config.num_kv_heads) == (32, 32, 32)
    assert (config.head_dim, config.hidden_size, config.vocab_size) == (80, 2560, 51200)
    assert config.context_length == 2048
    assert (config.eos_token_ids, config.bos_token_id, config.pad_token_id) == (
        (50256,),
        50256,
        50256,
    )
    assert config.model_file == "model.onnx"
    assert config.cache_dims == (32, 80)
    assert config.io.past_key == "past_key_values.%d.key"
    assert config.io.present_value == ("present.%d.value",)


def test_genai_config_wins_over_config_json_and_config_json_fills_gaps(tmp_path: Path) -> None:
    genai = json.loads(json.dumps(PHI2))
    del genai["model"]["context_length"]
    (tmp_path / "genai_config.json").write_text(json.dumps(genai))
    hf = {"num_hidden_layers": 30, "max_position_embeddings": 4096, "eos_token_id": [1, 2]}
    (tmp_path / "config.json").write_text(json.dumps(hf))
    config = ModelConfig.from_dir(tmp_path)
    assert config.num_layers == 32
    assert config.context_length == 4096
    assert config.eos_token_ids == (50256,)
    assert config.source == "genai_config.json + config.json"


def test_config_json_alone_derives_the_head_size() -> None:
    config = ModelConfig.from_hf(
        {"num_attention_heads": 32, "num_key_value_heads": 4, "hidden_size": 2048}
    )
    assert config.cache_dims == (4, 64)
    assert config.io == IoNames()
    assert ModelConfig.from_hf({"num_attention_heads": 8}).cache_dims is None


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("model",), [], "model is not an object"),
        (("model", "decoder", "inputs"), "x", "inputs is not an object"),
        (("model", "decoder", "inputs", "past_key_names"), "past_key", "one %d"),
        (("model", "decoder", "outputs", "present_key_names"), "p.%d.%d", "one %d"),
    ],
)
def test_malformed_genai_config_is_a_chat_error(
    path: tuple[str, ...], value: object, message: str
) -> None:
    data: Any = json.loads(json.dumps(PHI2))
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ChatError, match=message):
        ModelConfig.from_genai(data)
