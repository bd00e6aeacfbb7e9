"""Chat with ONNX causal language models: KV-cache generation, sampling, chat templates.

Needs the ``[chat]`` extra (onnxruntime, tokenizers, jinja2), imported only when used, so importing
this package is cheap and has no side effects; the names below load their module on first access.
Nothing outside ``ane_build.chat`` imports it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .ane import AneStepReport, run_ane_step
    from .config import IoNames, ModelConfig
    from .errors import ChatDependencyError, ChatError, ContextOverflowError
    from .generate import GenerationStats, TokenGenerator
    from .model import CacheLayout, CausalLM, KVCache, ModelSignature
    from .sampling import Sampler, SamplingConfig, token_probabilities
    from .session import ChatModel, ChatSession
    from .template import ChatTemplate, Message, render_tinyllama, truncate_history
    from .tiny import TinyLlamaConfig, ensure_tiny_llama, write_tiny_llama
    from .tokenizer import ChatTokenizer, StreamDecoder

_EXPORTS = {
    "AneStepReport": "ane",
    "run_ane_step": "ane",
    "IoNames": "config",
    "ModelConfig": "config",
    "ChatDependencyError": "errors",
    "ChatError": "errors",
    "ContextOverflowError": "errors",
    "GenerationStats": "generate",
    "TokenGenerator": "generate",
    "CacheLayout": "model",
    "CausalLM": "model",
    "KVCache": "model",
    "ModelSignature": "model",
    "Sampler": "sampling",
    "SamplingConfig": "sampling",
    "token_probabilities": "sampling",
    "ChatModel": "session",
    "ChatSession": "session",
    "ChatTemplate": "template",
    "Message": "template",
    "render_tinyllama": "template",
    "truncate_history": "template",
    "TinyLlamaConfig": "tiny",
    "ensure_tiny_llama": "tiny",
    "write_tiny_llama": "tiny",
    "ChatTokenizer": "tokenizer",
    "StreamDecoder": "tokenizer",
}

__all__ = [
    "AneStepReport",
    "CacheLayout",
    "CausalLM",
    "ChatDependencyError",
    "ChatError",
    "ChatModel",
    "ChatSession",
    "ChatTemplate",
    "ChatTokenizer",
    "ContextOverflowError",
    "GenerationStats",
    "IoNames",
    "KVCache",
    "Message",
    "ModelConfig",
    "ModelSignature",
    "Sampler",
    "SamplingConfig",
    "StreamDecoder",
    "TinyLlamaConfig",
    "TokenGenerator",
    "ensure_tiny_llama",
    "render_tinyllama",
    "run_ane_step",
    "token_probabilities",
    "truncate_history",
    "write_tiny_llama",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ane_build.chat' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
