"""A Hugging Face LLaMA checkpoint folder: its config, its safetensors shards, its weights by name.

Weights are looked up across the shards (``model.safetensors.index.json`` or every
``*.safetensors`` file), checked against the config's shapes, and handed out as memory-mapped
views; the digest covers the config and every shard. This module must not build graphs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .._fs import open_regular
from .._resource import Closing
from .errors import CheckpointError
from .safetensors import SafetensorsFile
from .spec import CONFIG_FILE, LlamaSpec

INDEX_FILE = "model.safetensors.index.json"
# Files a chat front end needs beside the weights; copied next to the chunks by the split.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
)
_HASH_CHUNK = 8 << 20


def shard_files(directory: Path) -> list[Path]:
    """The safetensors shards of a checkpoint folder, in a stable order.

    Raises:
        CheckpointError: The index is malformed or names a missing shard, or there is no shard.
    """
    directory = Path(directory)
    index = directory / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{index}: not a safetensors index ({exc})") from exc
        files = [directory / name for name in names]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{index}: names missing shard(s) {', '.join(missing)}")
        return files
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{directory}: no *.safetensors weights (and no {INDEX_FILE})")
    return files


def checkpoint_files(directory: Path) -> list[Path]:
    """Every file whose bytes shape the split's output: the config and the shards."""
    return [Path(directory) / CONFIG_FILE, *shard_files(directory)]


def digest_files(files: Iterable[Path]) -> str:
    """sha256 over each file's name, size and bytes, in the given order (streamed).

    Raises:
        CheckpointError: A file cannot be read.
    """
    digest = hashlib.sha256()
    for path in files:
        with open_regular(path, "checkpoint file", CheckpointError) as f:
            size = f.seek(0, 2)
            f.seek(0)
            digest.update(f"{path.name}\0{size}\0".encode())
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


class Checkpoint(Closing):
    """A LLaMA checkpoint folder, opened: its `LlamaSpec` and its weights by name.

    Args:
        directory: The folder with ``config.json`` and the safetensors shard(s).

    Raises:
        CheckpointError: The config is missing or not supported, or a shard is unreadable.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.spec = LlamaSpec.from_dir(self.directory)
        self.files = shard_files(self.directory)
        self._shards: list[SafetensorsFile] = []
        self._where: dict[str, SafetensorsFile] = {}
        try:
            for path in self.files:
                shard = SafetensorsFile(path)
                self._shards.append(shard)
                for name in shard:
                    self._where.setdefault(name, shard)
        except BaseException:
            self.close()
            raise

    def __contains__(self, name: object) -> bool:
        return name in self._where

    def tensor(self, name: str, shape: tuple[int, ...]) -> npt.NDArray[Any]:
        """The weight ``name``, checked to have ``shape`` (a memory-mapped view when it can be).

        Raises:
            CheckpointError: The weight is missing or has another shape.
        """
        shard = self._where.get(name)
        if shard is None:
            raise CheckpointError(f"{self.directory}: the checkpoint has no weight {name!r}")
        array = shard.tensor(name)
        if array.shape != shape:
            raise CheckpointError(
                f"{shard.path}: weight {name!r} has shape {list(array.shape)}; the config "
                f"implies {list(shape)}"
            )
        return array

    def linear(self, name: str, out_features: int, in_features: int) -> npt.NDArray[np.float16]:
        """A ``[out, in]`` projection as the ``[in, out]`` fp16 matrix a MatMul multiplies by."""
        return np.ascontiguousarray(
            self.tensor(name, (out_features, in_features)).T.astype(np.float16)
        )

    def vector(self, name: str, size: int) -> npt.NDArray[np.float16]:
        """A norm weight as fp16."""
        return self.tensor(name, (size,)).astype(np.float16)

    def embedding(self) -> npt.NDArray[Any]:
        """The ``[vocab, hidden]`` embedding matrix (a view; not converted)."""
        spec = self.spec
        return self.tensor("model.embed_tokens.weight", (spec.vocab_size, spec.hidden_size))

    def lm_head(self) -> npt.NDArray[Any]:
        """The ``[vocab, hidden]`` LM head (the embedding when the config ties them)."""
        spec = self.spec
        if spec.tie_embeddings or "lm_head.weight" not in self:
            if not spec.tie_embeddings:
                raise CheckpointError(
                    f"{self.directory}: no lm_head.weight and tie_word_embeddings is false"
                )
            return self.embedding()
        return self.tensor("lm_head.weight", (spec.vocab_size, spec.hidden_size))

    def close(self) -> None:
        """Unmap every shard. Idempotent."""
        for shard in self._shards:
            shard.close()
        self._shards = []
