"""Decoder backends: what token generation runs on, ``ort`` (one ONNX export) or ``ane`` (chunks).

`Decoder` is the protocol `TokenGenerator` drives: a cache object, ``forward(cache, ids) ->
logits``, and a line saying what runs where. ``ort`` is `CausalLM` (one onnxruntime session over
an export). ``ane`` is `AneDecoder`: a split folder's chunk programs through
`ane_build.llm.ChunkedDecoder`, the ones with a container on an ANE device (hardware or the
simulator), the others on onnxruntime. `open_decoder` picks and loads one. This module must not
tokenize, sample or render templates.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from numpy.typing import NDArray

from ..container import parse_ane_metadata
from ..driver.device import ANEDevice, open_device
from ..llm.errors import ContextFullError
from ..llm.manifest import MANIFEST_FILE, Manifest, read_manifest
from ..llm.runtime import ChunkedDecoder
from ..synthetic.chains import is_synthetic
from .config import ModelConfig
from .errors import ChatError
from .model import CausalLM

log = logging.getLogger(__name__)

Backend = Literal["auto", "ane", "ort"]
BACKENDS: tuple[Backend, ...] = ("auto", "ane", "ort")


class DecoderCache(Protocol):
    """The KV cache of a decoder, as generation sees it."""

    token_ids: list[int]

    def is_consistent(self) -> bool:
        """Whether the cache holds exactly the positions of ``token_ids``."""

    def truncate(self, length: int) -> None:
        """Keep only the first ``length`` positions."""

    def clear(self) -> None:
        """Forget every position."""


CacheT = TypeVar("CacheT", bound=DecoderCache)


class Decoder(Protocol[CacheT]):
    """A causal LM with a KV cache, batch size 1, as `TokenGenerator` drives it.

    Attributes:
        backend: ``"ort"`` or ``"ane"``.
    """

    backend: str

    @property
    def vocab_size(self) -> int | None:
        """Columns of the logits, once known."""

    def new_cache(self) -> CacheT:
        """An empty cache."""

    def forward(self, cache: CacheT, token_ids: Sequence[int]) -> NDArray[Any]:
        """Logits of the last of ``token_ids``, run after the cached positions."""

    def describe(self) -> str:
        """One line naming the model and its cache."""

    def where(self) -> str:
        """One line: what runs where."""


class ChunkCache:
    """The one cache of an `AneDecoder`: its token ids; the rows live in the programs' inputs.

    Args:
        decoder: The chunked decoder whose programs hold the rows.
    """

    def __init__(self, decoder: ChunkedDecoder) -> None:
        self._decoder = decoder
        self.token_ids: list[int] = []

    def __len__(self) -> int:
        return len(self.token_ids)

    def is_consistent(self) -> bool:
        """Whether the programs hold exactly ``token_ids``' positions (an interrupt can end it)."""
        return self._decoder.length == len(self.token_ids)

    def truncate(self, length: int) -> None:
        """Keep only the first ``length`` positions (nothing is copied)."""
        self._decoder.truncate(length)
        self.token_ids = self.token_ids[: self._decoder.length]

    def clear(self) -> None:
        """Forget every position."""
        self.truncate(0)


class AneDecoder:
    """The ``ane`` backend: a split folder's chunk programs, loaded once.

    Args:
        directory: The split folder.
        device: Where chunks with a container run (closed with this decoder); None runs every
            chunk on onnxruntime.
        threads: onnxruntime intra-op threads for chunks on the CPU.
    """

    backend = "ane"

    def __init__(
        self, directory: Path, *, device: ANEDevice | None, threads: int | None = None
    ) -> None:
        self.device = device
        try:
            self.chunks = ChunkedDecoder(directory, device=device, threads=threads)
        except BaseException:
            if device is not None:
                device.close()
            raise
        self.path = Path(directory)
        self._cache: ChunkCache | None = None

    @property
    def vocab_size(self) -> int:
        """Columns of the logits."""
        return self.chunks.spec.vocab_size

    def new_cache(self) -> ChunkCache:
        """The decoder's cache, emptied: the programs hold one cache, so an older one ends here."""
        self.chunks.truncate(0)
        self._cache = ChunkCache(self.chunks)
        return self._cache

    def forward(self, cache: ChunkCache, token_ids: Sequence[int]) -> NDArray[Any]:
        """Run ``token_ids`` after the cached positions; the logits of the last one.

        Raises:
            ChatError: ``cache`` is not this decoder's current cache, or the chunks' context is
                full.
            LlmError: A chunk failed (the cache is unchanged).
        """
        if cache is not self._cache:
            raise ChatError("this cache belongs to an earlier new_cache() of the decoder")
        try:
            logits = self.chunks.forward(token_ids)
        except ContextFullError as exc:
            raise ChatError(str(exc)) from exc
        cache.token_ids.extend(token_ids)
        return logits

    def describe(self) -> str:
        """One line: the split's layers, chunks, cache and context."""
        spec, manifest = self.chunks.spec, self.chunks.manifest
        return (
            f"{self.path.name}: {spec.num_layers} layers in {manifest.plan.blocks} block chunk(s), "
            f"{spec.num_kv_heads} KV heads x {spec.head_dim}, float16 KV cache in the programs' "
            f"inputs, static context {self.chunks.context}, prefill blocks of "
            f"{manifest.plan.settings.prefill}"
        )

    def where(self) -> str:
        """One line: which chunks run where."""
        return f"chunks: {self.chunks.describe_placement()}"

    def close(self) -> None:
        """Free the programs and close the device. Idempotent."""
        self.chunks.close()
        if self.device is not None:
            self.device.close()


def containers_of(directory: Path, manifest: Manifest) -> list[Path]:
    """The containers of a split's ANE chunks that exist."""
    names = (c.container for c in manifest.ane_programs() if c.container)
    return [p for p in (Path(directory) / n for n in names) if p.is_file()]


def choose_backend(path: Path, backend: Backend = "auto") -> Literal["ane", "ort"]:
    """``ane`` for a split folder, ``ort`` for anything else (with ``auto``).

    A split folder has no export for onnxruntime to run whole; its chunks without a container
    run on onnxruntime one by one, and the decoder says so.
    """
    if backend != "auto":
        return backend
    return "ane" if (Path(path) / MANIFEST_FILE).is_file() else "ort"


def open_decoder(
    path: Path,
    *,
    backend: Backend = "auto",
    device: str = "auto",
    threads: int | None = None,
    config: ModelConfig | None = None,
) -> CausalLM | AneDecoder:
    """Load the decoder of ``path`` with the chosen backend.

    Args:
        path: An export (``ort``) or a split folder (``ane``).
        backend: ``ane``, ``ort``, or ``auto`` (see `choose_backend`).
        device: For ``ane``: ``auto``, ``sim`` or a device path; synthetic containers (not real
            ANE code) go to the simulator under ``auto``.
        threads: onnxruntime intra-op threads.
        config: The folder's config, when already read (``ort``).

    Raises:
        ChatError: ``ane`` on a folder without a manifest.
        AneError: The model or a chunk cannot be loaded, or the device cannot be opened.
    """
    chosen = choose_backend(path, backend)
    if chosen == "ort":
        return CausalLM(path, threads=threads, config=config)
    directory = Path(path)
    if not (directory / MANIFEST_FILE).is_file():
        raise ChatError(
            f"{directory}: --backend ane needs a split folder with {MANIFEST_FILE} "
            "(make one with `ane-build llm split`)"
        )
    containers = containers_of(directory, read_manifest(directory))
    dev = None
    if containers:
        synthetic = any(is_synthetic(parse_ane_metadata(c).toolchain) for c in containers)
        if synthetic and device == "auto":
            log.info("%s: synthetic containers (not real ANE code): using the simulator", path)
        dev = open_device("sim" if synthetic and device == "auto" else device)
    return AneDecoder(directory, device=dev, threads=threads)
