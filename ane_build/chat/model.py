"""An ONNX causal language model with a KV cache, run by onnxruntime.

Reads the cache layout (layer count, KV heads, head size, dtype) from the graph's inputs (and the
model config where the graph leaves it symbolic) and runs each step through one reusable binding
straight onto buffers we own: the KV cache lives in two sets of buffers (pasts read from one,
presents written to the other) and a decode step's logits land in one buffer, so a step allocates
and copies nothing. This module must not tokenize, sample or know about chat turns.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._deps import require
from ._ortstep import Buffers, StepBinding
from .config import GENAI_CONFIG, ModelConfig
from .errors import ChatError

log = logging.getLogger(__name__)

_DTYPES: dict[str, type[np.floating[Any]]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
}
#: File names tried, in order, when a folder is given instead of a model file.
MODEL_FILE_NAMES = (
    "model.onnx",
    "decoder_model_merged.onnx",
    "onnx/model.onnx",
    "onnx/decoder_model_merged.onnx",
)


@dataclass(frozen=True)
class CacheLayout:
    """Shape and names of the KV cache, as the graph declares them.

    Attributes:
        num_layers: Number of decoder layers (pairs of key/value inputs).
        num_kv_heads: Key/value heads per layer.
        head_dim: Size of one head.
        dtype: Element type of the cache tensors (float32 or float16).
        past_names: Input names, layer by layer, key before value.
        present_names: The matching output names, in the same order.
    """

    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: type[np.floating[Any]]
    past_names: tuple[str, ...]
    present_names: tuple[str, ...]

    @property
    def dtype_name(self) -> str:
        """``float32`` or ``float16``."""
        return np.dtype(self.dtype).name


@dataclass(frozen=True)
class ModelSignature:
    """Which of the common causal-LM inputs and outputs a graph has, and their names.

    Attributes:
        input_ids: Name of the token ids input.
        attention_mask: Name of the attention mask input; None when the graph has none.
        position_ids: Name of the position ids input; None when the graph has none.
        use_cache_branch: Whether the graph takes ``use_cache_branch`` (merged decoders).
        logits: Name of the logits output.
        logits_dtype: Element type of the logits.
        vocab_size: Last dimension of the logits when the graph fixes it.
        cache: The KV cache layout.
    """

    input_ids: str
    attention_mask: str | None
    position_ids: str | None
    use_cache_branch: bool
    logits: str
    logits_dtype: type[np.floating[Any]]
    vocab_size: int | None
    cache: CacheLayout

    @classmethod
    def from_session(cls, session: Any, config: ModelConfig | None = None) -> ModelSignature:
        """Inspect an onnxruntime session's inputs and outputs.

        Args:
            session: An ``onnxruntime.InferenceSession``.
            config: The model folder's config: input/output names (``genai_config.json`` may
                rename them), and the KV heads and head size when the graph leaves them
                symbolic.

        Raises:
            ChatError: The graph does not look like a causal LM with a KV cache.
        """
        config = config or ModelConfig()
        names = config.io
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = {o.name: o for o in session.get_outputs()}
        for required, where in ((names.input_ids, inputs), (names.logits, outputs)):
            if required not in where:
                raise ChatError(f"the model has no {required!r}; not a causal LM export")
        logits = outputs[names.logits]
        logits_dtype = _DTYPES.get(logits.type)
        if logits_dtype is None:
            raise ChatError(f"unsupported logits type {logits.type}")
        vocab = logits.shape[-1] if logits.shape else None
        return cls(
            input_ids=names.input_ids,
            attention_mask=names.attention_mask if names.attention_mask in inputs else None,
            position_ids=names.position_ids if names.position_ids in inputs else None,
            use_cache_branch="use_cache_branch" in inputs,
            logits=names.logits,
            logits_dtype=logits_dtype,
            vocab_size=vocab if isinstance(vocab, int) else None,
            cache=_cache_layout(inputs, outputs, config),
        )


def _by_layer(template: str, names: Iterable[str]) -> dict[int, str]:
    """The names matching a ``%d`` template, by layer number."""
    pattern = re.compile("^" + re.escape(template).replace("%d", r"(\d+)") + "$")
    return {int(m.group(1)): name for name in names if (m := pattern.match(name))}


def _present_names(templates: Sequence[str], outputs: Iterable[str], layers: int) -> list[str]:
    names = list(outputs)
    for template in templates:
        found = _by_layer(template, names)
        if set(found) == set(range(layers)):
            return [found[i] for i in range(layers)]
    raise ChatError(
        f"the model's outputs have no {' or '.join(templates)} for each of its {layers} layers"
    )


def _cache_layout(
    inputs: Mapping[str, Any], outputs: Mapping[str, Any], config: ModelConfig
) -> CacheLayout:
    names = config.io
    keys = _by_layer(names.past_key, inputs)
    values = _by_layer(names.past_value, inputs)
    layers = len(keys)
    if not keys or set(keys) != set(range(layers)) or set(values) != set(keys):
        raise ChatError(
            f"the model has no complete {names.past_key}/{names.past_value} inputs; "
            "export it with a KV cache (e.g. 'text-generation-with-past')"
        )
    present_keys = _present_names(names.present_key, outputs, layers)
    present_values = _present_names(names.present_value, outputs, layers)
    presents = [n for i in range(layers) for n in (present_keys[i], present_values[i])]
    pasts = [inputs[n] for i in range(layers) for n in (keys[i], values[i])]
    first = pasts[0]
    dtype = _DTYPES.get(first.type)
    if dtype is None:
        raise ChatError(f"unsupported KV cache type {first.type}; need float32 or float16")
    if any(_DTYPES.get(arg.type) is not dtype for arg in pasts):
        raise ChatError("the KV cache inputs mix element types")
    shape = list(first.shape)
    if len(shape) != 4:
        raise ChatError(f"{first.name} has shape {shape}; expected [batch, heads, seq, dim]")
    heads, head_dim = _cache_dims(shape[1], shape[3], layers, config)
    return CacheLayout(
        num_layers=layers,
        num_kv_heads=heads,
        head_dim=head_dim,
        dtype=dtype,
        past_names=tuple(arg.name for arg in pasts),
        present_names=tuple(presents),
    )


def _cache_dims(
    heads: object, head_dim: object, layers: int, config: ModelConfig
) -> tuple[int, int]:
    """KV heads and head size: the graph's when it fixes them, else the config's."""
    if isinstance(heads, int) and isinstance(head_dim, int):
        return heads, head_dim
    where = config.source or "a config.json or genai_config.json beside the model"
    dims = config.cache_dims
    if dims is None:
        raise ChatError(
            f"the KV cache shape is symbolic, and the number of KV heads and the head size are "
            f"not in {where} (num_key_value_heads, head_dim/head_size or hidden_size and "
            "num_attention_heads)"
        )
    if config.num_layers is not None and config.num_layers != layers:
        raise ChatError(
            f"{where} says {config.num_layers} layers but the graph has {layers}: "
            "it does not describe this model"
        )
    for graph_value, config_value, what in (
        (heads, dims[0], "KV heads"),
        (head_dim, dims[1], "head size"),
    ):
        if isinstance(graph_value, int) and graph_value != config_value:
            raise ChatError(f"{where} says {what} {config_value} but the graph has {graph_value}")
    return dims


def find_model_file(path: Path, named: str | None = None) -> Path:
    """The ONNX file to load: ``path`` itself, or the file ``named``, or a usual name in a folder.

    Args:
        path: A model file or the folder holding it.
        named: The file name the folder's ``genai_config.json`` gives, if any.

    Raises:
        ChatError: No model file is found.
    """
    if path.is_file():
        return path
    if not path.is_dir():
        raise ChatError(f"{path}: no such model file or folder")
    if named is not None:
        if not (path / named).is_file():
            raise ChatError(f"{path}: {GENAI_CONFIG} names the model {named}, which is missing")
        return path / named
    for name in MODEL_FILE_NAMES:
        if (path / name).is_file():
            return path / name
    candidates = sorted(p for p in path.glob("*.onnx") if not p.name.endswith("_ane.onnx"))
    if len(candidates) == 1:
        return candidates[0]
    raise ChatError(
        f"{path}: cannot tell which .onnx file is the model "
        f"({', '.join(p.name for p in candidates) or 'none found'})"
    )


class KVCache:
    """Keys and values of the tokens a model has already seen, in two sets of buffers we own.

    The graph writes its presents (the pasts plus the new positions) to other memory than it
    reads the pasts from, so each layer's key and value have two flat buffers: a step reads one
    and writes the other, which then holds the cache. A tensor of ``n`` positions is the start
    of its buffer viewed as ``[1, kv_heads, n, head_dim]``, so nothing is allocated or copied per
    step; buffers grow by doubling (up to the context window) and are copied only then.

    Args:
        layout: The graph's cache layout.
        max_positions: The context window when known: buffers never grow beyond it.

    Attributes:
        token_ids: The tokens whose keys and values the cache holds, in order.
    """

    #: Positions of the first buffers, so short chats never grow them.
    MIN_CAPACITY = 256

    def __init__(self, layout: CacheLayout, max_positions: int | None = None) -> None:
        self.layout = layout
        self.max_positions = max_positions
        self.token_ids: list[int] = []
        self._filled = 0
        self._capacity = 0
        self._sets: list[Buffers] = []
        self._current = 0

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def capacity(self) -> int:
        """Positions the buffers hold before they must grow."""
        return self._capacity

    def clear(self) -> None:
        """Forget every cached token (the buffers are kept for reuse)."""
        self.token_ids = []
        self._filled = 0

    def is_consistent(self) -> bool:
        """Whether the buffers hold exactly ``len(token_ids)`` positions.

        An interrupt between a step's update of the buffers and of the ids can leave them out of
        step; callers check before reusing the cache.
        """
        return self._filled == len(self.token_ids)

    def tensors(self) -> list[NDArray[Any]]:
        """The cached keys and values as arrays ``[1, kv_heads, len, head_dim]`` (views)."""
        if not self._sets:
            return []
        shape = self._shape(self._filled)
        size = int(np.prod(shape))
        return [buffer[:size].reshape(shape) for buffer in self._sets[self._current].arrays]

    def truncate(self, length: int) -> None:
        """Keep only the first ``length`` cached positions (copies the kept part once)."""
        if length >= len(self.token_ids):
            return
        kept = self._shape(length)
        size = int(np.prod(kept))
        target = self._sets[1 - self._current].arrays
        for source, buffer in zip(self.tensors(), target, strict=True):
            buffer[:size].reshape(kept)[...] = source[:, :, :length, :]
        self._current, self._filled = 1 - self._current, length
        self.token_ids = self.token_ids[:length]

    def reserve(self, positions: int) -> None:
        """Make the buffers hold at least ``positions`` positions, keeping the cached ones."""
        if positions <= self._capacity:
            return
        capacity = max(positions, 2 * self._capacity, self.MIN_CAPACITY)
        if self.max_positions is not None:
            capacity = min(capacity, max(self.max_positions, positions))
        layout = self.layout
        size = capacity * layout.num_kv_heads * layout.head_dim
        count = len(layout.past_names)
        # np.empty leaves the memory untouched: the pages of a large buffer only become resident
        # as positions are written, so capacity not used yet costs address space, not memory.
        sets = [Buffers.empty(count, size, layout.dtype) for _ in range(2)]
        if self._filled:
            used = int(np.prod(self._shape(self._filled)))
            for old, new in zip(self.tensors(), sets[0].arrays, strict=True):
                new[:used] = old.reshape(-1)
        self._sets, self._current, self._capacity = sets, 0, capacity

    def buffers(self) -> tuple[Buffers, Buffers]:
        """The buffers a step reads its pasts from and writes its presents to."""
        return self._sets[self._current], self._sets[1 - self._current]

    def commit(self, token_ids: Sequence[int]) -> None:
        """Record a step that wrote ``token_ids``' positions into the other buffers."""
        self._current, self._filled = 1 - self._current, self._filled + len(token_ids)
        self.token_ids.extend(token_ids)

    def _shape(self, positions: int) -> tuple[int, int, int, int]:
        return (1, self.layout.num_kv_heads, positions, self.layout.head_dim)


class CausalLM:
    """An ONNX causal LM session with a KV cache, batch size 1.

    Each step binds the cache's buffers directly (pasts from one set, presents into the other,
    see `KVCache`), and a decode step's logits are written straight into one buffer this object
    owns: no per-step allocation, concatenation or copy outside the graph. Not thread-safe, as
    the binding and that buffer are shared by every call.

    Args:
        path: The ``.onnx`` file or a folder holding it (external data is read from beside it).
        threads: onnxruntime intra-op threads; None lets onnxruntime decide.
        config: The model's config, for the graph's names, a symbolic cache shape and the
            context window; read from the folder (``genai_config.json``, ``config.json``) when
            not given.
        providers: onnxruntime execution providers; the CPU provider by default.

    Raises:
        ChatError: The file cannot be loaded or is not a causal LM with a KV cache.
    """

    backend = "ort"

    def __init__(
        self,
        path: Path,
        *,
        threads: int | None = None,
        config: ModelConfig | None = None,
        providers: Sequence[str] | None = None,
    ) -> None:
        ort = require("onnxruntime")
        path = Path(path)
        if config is None:
            config = ModelConfig.from_dir(path if path.is_dir() else path.parent)
        self.path = find_model_file(path, config.model_file)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                str(self.path),
                sess_options=options,
                providers=list(providers or ["CPUExecutionProvider"]),
            )
        except Exception as exc:  # onnxruntime raises its own untyped exception classes
            raise ChatError(f"{self.path}: onnxruntime cannot load the model: {exc}") from exc
        self.signature = ModelSignature.from_session(self.session, config)
        self._max_positions = config.context_length
        self._ones = np.ones((1, 256), dtype=np.int64)
        self._flags = (np.array([False]), np.array([True]))
        # A decode step writes its token and position here instead of allocating new arrays.
        self._step_ids = np.zeros((1, 1), dtype=np.int64)
        self._step_positions = np.zeros((1, 1), dtype=np.int64)
        self._step = StepBinding(self.session)
        self._logits: Buffers | None = None
        if self.signature.vocab_size is not None:
            self._logits = Buffers.empty(1, self.signature.vocab_size, self.signature.logits_dtype)
        log.debug("loaded %s: %s", self.path, self.signature)

    @property
    def providers(self) -> list[str]:
        """The execution providers onnxruntime uses for this session."""
        providers: list[str] = self.session.get_providers()
        return providers

    @property
    def vocab_size(self) -> int | None:
        """Vocabulary size, once known (from the graph or the first step)."""
        return None if self._logits is None else self._logits.arrays[0].size

    def describe(self) -> str:
        """One line naming the model file and its cache layout."""
        cache = self.signature.cache
        return (
            f"{self.path.name}: {cache.num_layers} layers, {cache.num_kv_heads} KV heads x "
            f"{cache.head_dim}, {cache.dtype_name} KV cache"
        )

    def where(self) -> str:
        """One line: the whole model runs in onnxruntime, on which provider."""
        engine = self.providers[0] if self.providers else "CPUExecutionProvider"
        place = "the CPU" if engine == "CPUExecutionProvider" else engine
        return f"all layers on {place} (onnxruntime)"

    def new_cache(self) -> KVCache:
        """An empty KV cache for this model."""
        return KVCache(self.signature.cache, self._max_positions)

    def forward(self, cache: KVCache, token_ids: Sequence[int]) -> NDArray[Any]:
        """Run ``token_ids`` after the cached tokens and extend the cache with them.

        Args:
            cache: The cache from `new_cache`, updated in place.
            token_ids: At least one new token.

        Returns:
            Logits of the last new position, shape ``[vocab]``. The array is a view of a buffer
            reused by the next call: copy it to keep it.

        Raises:
            ChatError: No tokens were given, or onnxruntime failed (the cache is unchanged).
        """
        count = len(token_ids)
        if count == 0:
            raise ChatError("forward needs at least one new token")
        past = len(cache.token_ids)
        try:
            self._bind(cache, token_ids, past)
            self._run(past, count)
        finally:
            # Nothing bound outlives the step: the binding holds no buffer or tensor of ours.
            self._step.clear()
        cache.commit(token_ids)
        assert self._logits is not None  # set by _keep_last_logits at the latest
        return self._logits.arrays[0]

    def _bind(self, cache: KVCache, token_ids: Sequence[int], past: int) -> None:
        sig, step = self.signature, self._step
        count = len(token_ids)
        total = past + count
        if count == 1:
            self._step_ids[0, 0] = token_ids[0]
            self._step_positions[0, 0] = past
            ids, positions = self._step_ids, self._step_positions
        else:
            ids = np.array([token_ids], dtype=np.int64)
            positions = np.arange(past, total, dtype=np.int64).reshape(1, count)
        step.input_array(sig.input_ids, ids)
        if sig.position_ids:
            step.input_array(sig.position_ids, positions)
        if sig.attention_mask:
            if self._ones.shape[1] < total:
                self._ones = np.ones((1, max(total, 2 * self._ones.shape[1])), dtype=np.int64)
            # A one-row slice of a C-ordered array is contiguous: no copy.
            step.input_array(sig.attention_mask, self._ones[:, :total])
        if sig.use_cache_branch:
            step.input_array("use_cache_branch", self._flags[past > 0])
        # Logits first: `StepBinding.output(0)` is then the logits. A prefill computes logits
        # for every position, so onnxruntime allocates them and only the last row is kept.
        if count == 1 and self._logits is not None:
            step.outputs_at((sig.logits,), self._logits, (1, 1, self._logits.arrays[0].size))
        else:
            step.output_to_cpu(sig.logits)
        cache.reserve(total)
        pasts, presents = cache.buffers()
        layout = sig.cache
        step.inputs_at(layout.past_names, pasts, (1, layout.num_kv_heads, past, layout.head_dim))
        step.outputs_at(
            layout.present_names, presents, (1, layout.num_kv_heads, total, layout.head_dim)
        )

    def _run(self, past: int, count: int) -> None:
        try:
            self._step.run()
            if count > 1 or self._logits is None:
                self._keep_last_logits(self._step.output(0))
        except Exception as exc:  # onnxruntime raises its own untyped exception classes
            raise ChatError(
                f"{self.path.name}: onnxruntime failed at position {past}: {exc}"
            ) from exc

    def _keep_last_logits(self, logits: Any) -> None:
        """Copy the last row of onnxruntime's logits into our buffer (made on first use)."""
        rows = logits.numpy()
        if self._logits is None:
            self._logits = Buffers.empty(1, rows.shape[-1], self.signature.logits_dtype)
        self._logits.arrays[0][:] = rows[0, -1]

    def logits_without_cache(self, token_ids: Sequence[int]) -> NDArray[Any]:
        """Logits of the last position computed from scratch (for checks and tests)."""
        return self.forward(self.new_cache(), token_ids).copy()
