"""Resolve a model's compiler artefacts (explicit paths, JSON bundle, ``.anec``, discovery).

Turns an `ArtifactSpec` into `ResolvedArtifacts`, recording what was discovered or inferred and
every file read. Weights stay file ranges; only microcode, descriptors and bundles are read. This
module must not write files, touch devices, or guess between ambiguous candidates.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .._fs import open_regular, os_problem
from .._typing import StrPath
from ..errors import ArtifactError, DescriptorChainError
from ..formats.anec import (
    ANEC_HEADER_SIZE,
    ANEC_PAYLOAD_OFFSET,
    MAX_TSK_SIZE,
    AnecFile,
    read_anec,
)
from ..formats.microcode import check_chain, infer_td_size, walk_chain
from ..formats.payload import IoSlot, PayloadRef
from .types import ResolvedArtifacts

logger = logging.getLogger(__name__)

BUNDLE_FILE = "bundle.json"
# Discovery never descends further than this below the root (the root itself is depth 0).
DISCOVERY_MAX_DEPTH = 4
# Kinds in priority order: a file is classified by the first kind whose pattern it matches.
DISCOVERY_PATTERNS: dict[str, tuple[str, ...]] = {
    "bundle": (BUNDLE_FILE,),
    "anec": ("*.anec", "*.ane"),
    "microcode": ("*.tsk", "*.microcode"),
    "tile_descriptors": ("*tile_desc*.bin", "*.td.bin"),
    "weights": ("*weights*.bin", "*.weights"),
}
# Editor backups and half-written files (ours and other tools') are never artefacts.
IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".swp", "~")
# How to set each value, for error messages: (command-line flag, config key).
SETTINGS: dict[str, tuple[str, str]] = {
    "root": ("--artifact-root DIR", "artifacts.root"),
    "microcode": ("--microcode FILE", "artifacts.microcode"),
    "weights": ("--weights FILE", "artifacts.weights"),
    "tile_descriptors": ("--tile-descriptors FILE", "artifacts.tile_descriptors"),
    "anec": ("--anec FILE", "artifacts.anec"),
    "bundle": ("--bundle PATH", "artifacts.bundle"),
    "td_size": ("--td-size N", "artifacts.td_size"),
    "td_count": ("--td-count N", "artifacts.td_count"),
}
# Stops us slurping a weights file that was passed as microcode by mistake.
MAX_CHAIN_BYTES = MAX_TSK_SIZE


def how_to_set(key: str) -> str:
    """Return e.g. ``"--microcode FILE (config key artifacts.microcode)"`` for a spec field."""
    flag, config_key = SETTINGS[key]
    return f"{flag} (config key {config_key})"


class ArtifactSpec(BaseModel):
    """Where a model's compiler artefacts are; the ``[artifacts]`` table of a config.

    Relative paths are resolved against the project root given to `resolve_artifacts`.

    Attributes:
        root: Folder to search for artefacts that are not given explicitly.
        anec: An ``.anec``/``.ane`` file.
        bundle: A JSON bundle file, or a folder holding ``bundle.json``.
        microcode: The microcode (``*.tsk``).
        tile_descriptors: A separate tile descriptor payload.
        weights: The weights.
        td_size: Size of the first task descriptor in bytes.
        td_count: Number of task descriptors.
        anec_payload_offset: Payload offset of ``.anec`` files (0x800 for an older library).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    root: Path | None = None
    anec: Path | None = None
    bundle: Path | None = None
    microcode: Path | None = None
    tile_descriptors: Path | None = None
    weights: Path | None = None
    td_size: int | None = Field(default=None, gt=0)
    td_count: int | None = Field(default=None, gt=0)
    anec_payload_offset: int = Field(default=ANEC_PAYLOAD_OFFSET, ge=ANEC_HEADER_SIZE)

    @field_validator("td_size", "td_count", "anec_payload_offset", mode="before")
    @classmethod
    def _no_bool(cls, value: object) -> object:
        # TOML `true` would otherwise slip through as the integer 1.
        if isinstance(value, bool):
            raise ValueError("expected an integer, found a boolean")
        return value


@dataclass(frozen=True)
class Bundle:
    """A decoded JSON bundle.

    Attributes:
        path: The ``bundle.json`` file.
        microcode: Decoded microcode.
        weights: Decoded weights, if any.
        tile_descriptors: Decoded tile descriptors, if any.
        td_size: Stated first-descriptor size (``td_size`` or ``tile_descriptors.entry_size``).
        td_count: Stated descriptor count (``td_count`` or ``tile_descriptors.count``).
        toolchain: Free text naming the compiler.
    """

    path: Path
    microcode: bytes
    weights: bytes | None = None
    tile_descriptors: bytes | None = None
    td_size: int | None = None
    td_count: int | None = None
    toolchain: str | None = None


_JSON_TYPES: dict[type, str] = {
    dict: "object",
    list: "array",
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    type(None): "null",
}


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


# Longest value text quoted in a message.
_SHOWN = 60
# Characters of neither base64 alphabet (whitespace is skipped, as the kernel does).
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/\-_=\s]")


def _short(text: str) -> str:
    quoted = json.dumps(text[: _SHOWN + 1], ensure_ascii=False)
    return quoted if len(quoted) <= _SHOWN else quoted[: _SHOWN - 4] + '..."'


def _found(value: object) -> str:
    """What a message says was found instead: the JSON type and the (shortened) value."""
    if isinstance(value, dict):
        return f"{_json_type(value)} with {len(value)} key(s)"
    if isinstance(value, list):
        return f"{_json_type(value)} of {len(value)} item(s)"
    text = _short(value) if isinstance(value, str) else json.dumps(value)
    return f"{_json_type(value)} {text}"


def bundle_file(path: StrPath) -> Path:
    """Return the ``bundle.json`` a bundle path names (the path itself, or the file in a folder).

    A path that does not exist yet names a folder unless it ends in ``.json``, so the answer is
    the same before and after the compiler writes its output.
    """
    path = Path(path)
    if path.is_dir() or (not path.exists() and path.suffix.lower() != ".json"):
        return path / BUNDLE_FILE
    return path


def load_bundle(path: StrPath) -> Bundle:
    """Load and decode a JSON bundle.

    Keys: ``microcode`` (base64, required), ``weights`` (base64), ``tile_descriptors`` (base64, or
    ``{"b64": ..., "entry_size": N, "count": N}``), ``td_size``, ``td_count``, ``toolchain``.
    Base64 may use the standard or the URL-safe alphabet; whitespace is ignored.

    Args:
        path: The bundle file, or a folder holding ``bundle.json``.

    Raises:
        ArtifactError: The file cannot be read, is not JSON, has a field of the wrong type or
            invalid base64, or states contradicting descriptor parameters (the message names the
            file and the field).
    """
    path = Path(path)
    file = bundle_file(path)
    if file != path and not file.exists():
        if not path.is_dir():
            # Not a folder at all (missing, a dangling symlink, a loop): open says which.
            open_regular(path, "bundle", ArtifactError).close()
        raise ArtifactError(f"bundle {path}: folder has no {BUNDLE_FILE}")
    with open_regular(file, "bundle", ArtifactError) as f:
        try:
            raw = f.read()
        except OSError as exc:
            raise ArtifactError(f"bundle {file}: cannot read: {exc.strerror or exc}") from exc
    try:
        doc = json.loads(raw)
    except RecursionError as exc:
        raise ArtifactError(f"bundle {file}: invalid JSON: nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise ArtifactError(f"bundle {file}: invalid JSON: {exc}") from exc
    where = f"bundle {file}"
    if not isinstance(doc, dict):
        raise ArtifactError(f"{where}: the top level must be a JSON object, found {_found(doc)}")
    if doc.get("microcode") is None:
        raise ArtifactError(f"{where}: missing field 'microcode' (base64 microcode)")
    microcode = _b64_field(doc, "microcode", where)
    if not microcode:
        raise ArtifactError(f"{where}: field 'microcode' is empty")
    weights = _b64_field(doc, "weights", where) if doc.get("weights") is not None else None
    td_size = _int_field(doc, "td_size", where)
    td_count = _int_field(doc, "td_count", where)
    tds_value = doc.get("tile_descriptors")
    tile_descriptors = None
    if isinstance(tds_value, dict):
        if tds_value.get("b64") is None:
            raise ArtifactError(f"{where}: field 'tile_descriptors' has no 'b64' key")
        tile_descriptors = _b64_field(tds_value, "b64", where, "tile_descriptors.b64")
        for key, name, top in (("entry_size", "td_size", td_size), ("count", "td_count", td_count)):
            stated = _int_field(tds_value, key, where, f"tile_descriptors.{key}")
            if stated is not None and top is not None and stated != top:
                raise ArtifactError(
                    f"{where}: field '{name}' is {top} but 'tile_descriptors.{key}' is {stated}"
                )
            if name == "td_size":
                td_size = td_size if stated is None else stated
            else:
                td_count = td_count if stated is None else stated
    elif tds_value is not None:
        if not isinstance(tds_value, str):
            raise ArtifactError(
                f"{where}: field 'tile_descriptors' must be a base64 string or an object "
                f'{{"b64", "entry_size", "count"}}, found {_found(tds_value)}'
            )
        tile_descriptors = _b64_field(doc, "tile_descriptors", where)
    toolchain = doc.get("toolchain")
    if toolchain is not None and not isinstance(toolchain, str):
        raise ArtifactError(
            f"{where}: field 'toolchain' must be a string, found {_found(toolchain)}"
        )
    unknown = sorted(
        set(doc) - {"microcode", "weights", "tile_descriptors", "td_size", "td_count", "toolchain"}
    )
    if unknown:
        logger.debug("%s: ignoring unknown fields %s", where, ", ".join(unknown))
    return Bundle(
        path=file,
        microcode=microcode,
        weights=weights or None,
        tile_descriptors=tile_descriptors or None,
        td_size=td_size,
        td_count=td_count,
        toolchain=toolchain,
    )


def _b64_field(obj: dict[str, Any], key: str, where: str, label: str | None = None) -> bytes:
    label = label or key
    value = obj[key]
    if not isinstance(value, str):
        raise ArtifactError(
            f"{where}: field '{label}' must be a base64 string, found {_found(value)}"
        )
    # Accept what the kernel accepts: either alphabet, whitespace anywhere.
    text = "".join(value.split()).replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        bad = _NOT_BASE64.search(value)
        shown = (
            f"character {bad.group()!r} at offset {bad.start()}"
            if bad
            else f"value {_short(value)}"
        )
        raise ArtifactError(
            f"{where}: field '{label}' is not valid base64 ({shown}: {exc})"
        ) from exc


def _int_field(obj: dict[str, Any], key: str, where: str, label: str | None = None) -> int | None:
    label = label or key
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArtifactError(
            f"{where}: field '{label}' must be a positive integer, found {_found(value)}"
        )
    if value <= 0:
        raise ArtifactError(f"{where}: field '{label}' must be a positive integer, found {value}")
    return value


def _ignored(name: str) -> bool:
    return name.startswith((".", "~")) or name.endswith(IGNORED_SUFFIXES) or ".tmp." in name


def _classify(name: str) -> str | None:
    lowered = name.lower()
    for kind, patterns in DISCOVERY_PATTERNS.items():
        if any(fnmatch.fnmatchcase(lowered, p) for p in patterns):
            return kind
    return None


def _walk(root: Path, visited: list[Path] | None = None) -> Iterator[Path]:
    def on_error(exc: OSError) -> None:
        logger.warning("artefact discovery skips %s: %s", exc.filename, exc.strerror)

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        if visited is not None:
            visited.append(Path(dirpath))
        depth = len(Path(dirpath).relative_to(root).parts)
        # Pruning in place keeps os.walk out of hidden folders and below the depth limit;
        # os.walk does not follow symlinked folders, so loops cannot trap it.
        dirnames[:] = (
            []
            if depth >= DISCOVERY_MAX_DEPTH
            else sorted(d for d in dirnames if not _ignored(d) and d != "__pycache__")
        )
        for name in filenames:
            if not _ignored(name):
                yield Path(dirpath) / name


def discover_candidates(
    root: StrPath, *, visited: list[Path] | None = None
) -> dict[str, list[Path]]:
    """List artefact candidates under ``root``, per kind, sorted.

    Kinds and patterns are `DISCOVERY_PATTERNS`; the search goes `DISCOVERY_MAX_DEPTH` levels
    deep and skips hidden and temporary files. Every kind is present in the result. Folders
    searched are appended to ``visited`` when given (a change to any of them can change the
    result).

    Raises:
        ArtifactError: ``root`` is missing or not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        try:
            os.stat(root)
        except OSError as exc:
            # Missing, a dangling symlink or a symlink loop: say which.
            raise ArtifactError(f"artefact root {root}: {os_problem(root, exc)}") from exc
        raise ArtifactError(f"artefact root {root}: is not a folder")
    found: dict[str, list[Path]] = {kind: [] for kind in DISCOVERY_PATTERNS}
    for path in _walk(root, visited):
        kind = _classify(path.name)
        if kind is not None:
            found[kind].append(path)
    return {kind: sorted(paths) for kind, paths in found.items()}


def _patterns(kind: str) -> str:
    return ", ".join(DISCOVERY_PATTERNS[kind])


@dataclass(frozen=True)
class _Stated:
    """A descriptor parameter and where it came from."""

    value: int
    origin: str


class _Resolver:
    def __init__(self, spec: ArtifactSpec, base_dir: Path | None, allow_outside: bool) -> None:
        self.spec = spec
        self.base = Path(base_dir) if base_dir is not None else Path.cwd()
        self.base = self.base if self.base.is_absolute() else Path.cwd() / self.base
        self.base_real = Path(os.path.realpath(self.base))
        self.allow_outside = allow_outside
        self.notes: list[str] = []
        self.inputs: list[Path] = []

    def note(self, line: str) -> None:
        logger.info("%s", line)
        self.notes.append(line)

    def read_from(self, path: Path) -> None:
        if path not in self.inputs:
            self.inputs.append(path)

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.base))
        except ValueError:
            return str(path)

    def confine(self, path: Path, what: str) -> None:
        if self.allow_outside:
            return
        real = Path(os.path.realpath(path))
        if not real.is_relative_to(self.base_real):
            raise ArtifactError(
                f"{what} {path} resolves to {real}, outside the project root {self.base_real}; "
                "artefacts must stay inside the project unless the config allows outside paths"
            )

    def locate(self, value: Path, key: str) -> Path:
        path = value if value.is_absolute() else self.base / value
        self.confine(path, key)
        return path

    def file_ref(self, path: Path, what: str) -> PayloadRef:
        self.confine(path, what)
        with open_regular(path, what, ArtifactError) as f:
            size = os.fstat(f.fileno()).st_size
        self.read_from(path)
        return PayloadRef.from_file(path, 0, size)

    def small_bytes(self, ref: PayloadRef, what: str) -> bytes:
        if ref.length > MAX_CHAIN_BYTES:
            raise ArtifactError(
                f"{what} {ref.label} is {ref.length} bytes, more than any descriptor chain "
                f"({MAX_CHAIN_BYTES} bytes); is it the weights file?"
            )
        return ref.read()

    def run(self, toolchain: str | None) -> ResolvedArtifacts:
        spec = self.spec
        files: dict[str, PayloadRef] = {}
        for key in ("microcode", "weights", "tile_descriptors"):
            value: Path | None = getattr(spec, key)
            if value is not None:
                files[key] = self.file_ref(self.locate(value, key), key.replace("_", " "))
        if spec.bundle is not None and spec.anec is not None:
            raise ArtifactError(
                f"both a bundle ({spec.bundle}) and an .anec file ({spec.anec}) are given; "
                f"choose one: {how_to_set('bundle')} or {how_to_set('anec')}"
            )
        bundle = self.load_bundle(self.locate(spec.bundle, "bundle")) if spec.bundle else None
        anec = self.load_anec(self.locate(spec.anec, "anec")) if spec.anec else None
        loose: dict[str, PayloadRef] = {}
        if spec.root is not None:
            root = self.locate(spec.root, "artefact root")
            bundle, anec, loose = self.discover(root, files, bundle, anec)
        elif "microcode" not in files and bundle is None and anec is None:
            raise ArtifactError(
                "no compiler artefacts given: set a folder to search with "
                f"{how_to_set('root')}, or give {how_to_set('microcode')}, "
                f"{how_to_set('bundle')} or {how_to_set('anec')}"
            )
        return self.assemble(files, loose, bundle, anec, toolchain)

    def load_bundle(self, path: Path) -> Bundle:
        file = bundle_file(path)
        self.confine(file, "bundle")
        bundle = load_bundle(path)
        self.read_from(bundle.path)
        return bundle

    def load_anec(self, path: Path) -> AnecFile:
        self.confine(path, "anec")
        anec = read_anec(path, payload_offset=self.spec.anec_payload_offset)
        self.read_from(path)
        head = anec.header
        self.note(
            f"read {self.rel(path)}: td_size={head.td_size} td_count={head.td_count} "
            f"tsk_size={head.tsk_size} krn_size={head.krn_size}, {head.src_count} input(s), "
            f"{head.dst_count} output(s)"
        )
        return anec

    def discover(
        self,
        root: Path,
        files: dict[str, PayloadRef],
        bundle: Bundle | None,
        anec: AnecFile | None,
    ) -> tuple[Bundle | None, AnecFile | None, dict[str, PayloadRef]]:
        """Fill what is missing from a single unambiguous candidate under the root."""
        loose: dict[str, PayloadRef] = {}
        need_source = "microcode" not in files and bundle is None and anec is None
        # A bundle or .anec is self-contained: loose files are only mixed with loose microcode.
        from_loose = need_source or ("microcode" in files and bundle is None and anec is None)
        missing = [k for k in ("weights", "tile_descriptors") if k not in files and from_loose]
        if not need_source and not missing:
            return bundle, anec, loose
        found = discover_candidates(root)
        if need_source:
            sources = [(k, p) for k in ("bundle", "anec", "microcode") for p in found[k]]
            if not sources:
                raise ArtifactError(self.nothing_found(root))
            if len(sources) > 1:
                raise ArtifactError(self.ambiguous(root, sources))
            kind, path = sources[0]
            self.note(f"discovered {kind}: {self.rel(path)}")
            if kind == "bundle":
                return self.load_bundle(path), anec, loose
            if kind == "anec":
                return bundle, self.load_anec(path), loose
            loose["microcode"] = self.file_ref(path, "microcode")
        used = {os.path.realpath(r.path) for r in (*files.values(), *loose.values()) if r.path}
        for key in missing:
            candidates = [p for p in found[key] if os.path.realpath(p) not in used]
            if len(candidates) > 1:
                raise ArtifactError(self.ambiguous(root, [(key, p) for p in candidates]))
            if candidates:
                self.note(f"discovered {key.replace('_', ' ')}: {self.rel(candidates[0])}")
                loose[key] = self.file_ref(candidates[0], key.replace("_", " "))
        return bundle, anec, loose

    def nothing_found(self, root: Path) -> str:
        return (
            f"no compiler artefacts found under {self.rel(root)} (searched "
            f"{DISCOVERY_MAX_DEPTH} levels deep, skipping hidden and temporary files); expected "
            f"a bundle ({_patterns('bundle')}), an .anec file ({_patterns('anec')}) or microcode "
            f"({_patterns('microcode')}) with optional weights ({_patterns('weights')}) and tile "
            f"descriptors ({_patterns('tile_descriptors')}); or give {how_to_set('microcode')}, "
            f"{how_to_set('bundle')} or {how_to_set('anec')}"
        )

    def ambiguous(self, root: Path, candidates: list[tuple[str, Path]]) -> str:
        kinds = sorted({k for k, _ in candidates}, key=list(DISCOVERY_PATTERNS).index)
        listing = "; ".join(f"{self.rel(p)} ({k.replace('_', ' ')})" for k, p in candidates)
        choose = " or ".join(how_to_set(k) for k in kinds)
        return (
            f"ambiguous artefacts under {self.rel(root)}: {len(candidates)} candidates: {listing}; "
            f"choose one with {choose}"
        )

    def assemble(
        self,
        files: dict[str, PayloadRef],
        loose: dict[str, PayloadRef],
        bundle: Bundle | None,
        anec: AnecFile | None,
        toolchain: str | None,
    ) -> ResolvedArtifacts:
        # Precedence: explicit files, then the bundle or .anec, then discovered loose files.
        layers: list[dict[str, tuple[PayloadRef, str]]] = [
            {k: (ref, self.rel(ref.path) if ref.path else ref.label) for k, ref in files.items()}
        ]
        stated: list[tuple[int | None, int | None, str]] = []
        if bundle is not None:
            where = f"bundle {self.rel(bundle.path)}"
            layers.append(
                {
                    k: (PayloadRef.from_bytes(v), f"{where}, field '{k}'")
                    for k, v in (
                        ("microcode", bundle.microcode),
                        ("weights", bundle.weights),
                        ("tile_descriptors", bundle.tile_descriptors),
                    )
                    if v is not None
                }
            )
            stated.append((bundle.td_size, bundle.td_count, where))
        io: dict[int, IoSlot] = {}
        tiles: dict[int, int] = {}
        if anec is not None:
            where = f".anec header {self.rel(anec.path)}"
            layer = {"microcode": (anec.microcode, f"{self.rel(anec.path)} microcode")}
            if anec.weights is not None:
                layer["weights"] = (anec.weights, f"{self.rel(anec.path)} weights")
            layers.append(layer)
            stated.append((anec.td_size, anec.td_count, where))
            io, tiles = dict(anec.io), dict(anec.tiles)
        layers.append({k: (ref, self.rel(ref.path or Path())) for k, ref in loose.items()})

        def pick(key: str) -> tuple[PayloadRef, str] | None:
            return next((layer[key] for layer in layers if key in layer), None)

        microcode = pick("microcode")
        if microcode is None:
            raise ArtifactError(
                f"no microcode: give {how_to_set('microcode')}, {how_to_set('bundle')} or "
                f"{how_to_set('anec')}, or a folder to search with {how_to_set('root')}"
            )
        tds = pick("tile_descriptors")
        weights = pick("weights")
        td_size, td_count = self.descriptor_params(microcode, tds, stated)
        if toolchain is None and bundle is not None:
            toolchain = bundle.toolchain
        return ResolvedArtifacts(
            microcode=microcode[0],
            td_size=td_size,
            td_count=td_count,
            weights=weights[0] if weights else None,
            tile_descriptors=tds[0] if tds else None,
            io=io,
            tiles=tiles,
            toolchain=toolchain,
            notes=tuple(self.notes),
            inputs=tuple(self.inputs),
        )

    def explicit(self, key: str, spec_value: int | None, stated: list[_Stated]) -> _Stated | None:
        """The explicit setting of ``key``, else the first container that states one."""
        if spec_value is not None:
            chosen = _Stated(spec_value, SETTINGS[key][1])
            for other in stated:
                if other.value != spec_value:
                    self.note(
                        f"{key}={spec_value} from {chosen.origin} overrides {key}={other.value} "
                        f"from the {other.origin}"
                    )
            return chosen
        return stated[0] if stated else None

    def descriptor_params(
        self,
        microcode: tuple[PayloadRef, str],
        tds: tuple[PayloadRef, str] | None,
        stated: list[tuple[int | None, int | None, str]],
    ) -> tuple[int, int]:
        size = self.explicit(
            "td_size", self.spec.td_size, [_Stated(s, o) for s, _, o in stated if s is not None]
        )
        count = self.explicit(
            "td_count", self.spec.td_count, [_Stated(c, o) for _, c, o in stated if c is not None]
        )
        if (size is None or count is None) and tds is not None:
            size, count = self.from_tile_descriptors(tds, size, count)
        code = self.small_bytes(microcode[0], "microcode")
        label = microcode[1]
        if size is None or count is None:
            try:
                chain = walk_chain(code, size.value if size else None, source=label)
            except DescriptorChainError as exc:
                if size is None:
                    raise
                raise DescriptorChainError(
                    f"{exc} (td_size={size.value} from {size.origin})"
                ) from exc
            origin = "the microcode's descriptor chain"
            if size is None:
                size = _Stated(chain.td_size, origin)
                self.note(f"inferred td_size={chain.td_size} from {origin}")
            if count is None:
                count = _Stated(chain.td_count, origin)
                self.note(f"inferred td_count={chain.td_count} from {origin}")
        self.check_microcode(code, label, size, count)
        return size.value, count.value

    def from_tile_descriptors(
        self, tds: tuple[PayloadRef, str], size: _Stated | None, count: _Stated | None
    ) -> tuple[_Stated | None, _Stated | None]:
        data = self.small_bytes(tds[0], "tile descriptors")
        label = tds[1]
        try:
            chain = walk_chain(data, size.value if size else None, source=label)
        except DescriptorChainError as exc:
            logger.debug("tile descriptors are not a walkable chain: %s", exc)
        else:
            origin = f"the tile descriptors' chain ({label})"
            for name, have, got in (
                ("td_size", size, chain.td_size),
                ("td_count", count, chain.td_count),
            ):
                if have is not None and have.value != got:
                    raise ArtifactError(
                        f"{name}={have.value} from {have.origin} contradicts {origin}, which "
                        f"gives {name}={got}"
                    )
            if size is None:
                self.note(f"inferred td_size={chain.td_size} from {origin}")
            if count is None:
                self.note(f"inferred td_count={chain.td_count} from {origin}")
            return _Stated(chain.td_size, origin), _Stated(chain.td_count, origin)
        length = len(data)
        origin = f"the tile descriptors' length ({label}, {length} bytes)"
        if not length:
            return size, count
        if size is not None and count is None and length % size.value == 0:
            count = _Stated(length // size.value, origin)
            self.note(f"inferred td_count={count.value} from {origin} / td_size={size.value}")
        elif count is not None and size is None and length % (4 * count.value) == 0:
            size = _Stated(length // count.value, origin)
            self.note(f"inferred td_size={size.value} from {origin} / td_count={count.value}")
        return size, count

    def check_microcode(self, code: bytes, label: str, size: _Stated, count: _Stated) -> None:
        try:
            chain = walk_chain(code, size.value, source=label)
            check_chain(chain, td_count=count.value, source=label)
        except DescriptorChainError as exc:
            raise DescriptorChainError(
                f"{exc} (td_size={size.value} from {size.origin}, td_count={count.value} from "
                f"{count.origin})"
            ) from exc
        tail = memoryview(code)[chain.tsk_size :]
        if any(tail):
            # Data after the end-of-network descriptor is never run: the chain, hence td_size,
            # does not describe this microcode (the engine would hang or run garbage).
            raise DescriptorChainError(
                f"{label}: with td_size={size.value} (from {size.origin}) the descriptor chain "
                f"ends at byte 0x{chain.tsk_size:x}, but the microcode has non-zero data up to "
                f"0x{len(code):x}; the microcode itself suggests td_size="
                f"{infer_td_size(code, source=label)}"
            )
        if len(tail):
            self.note(
                f"microcode {label} has {len(tail)} zero bytes after its descriptor chain "
                f"(chain ends at 0x{chain.tsk_size:x})"
            )


def resolve_artifacts(
    spec: ArtifactSpec,
    *,
    base_dir: Path | None = None,
    toolchain: str | None = None,
    allow_outside: bool = True,
) -> ResolvedArtifacts:
    """Resolve a model's compiler artefacts into `ResolvedArtifacts`.

    Explicit values win; a bundle or ``.anec`` supplies what is not explicit; discovery under
    ``spec.root`` fills only what is still missing, from a single unambiguous candidate. The
    descriptor parameters come from explicit values (the spec, then the bundle or ``.anec``
    header), else the tile descriptors' chain or length, else the microcode's chain; the
    microcode's chain is always checked against the result.

    Args:
        spec: Where the artefacts are.
        base_dir: Project root that relative paths resolve against (default: the working folder).
        toolchain: Free text naming the compiler; overrides the bundle's.
        allow_outside: When False, every path (after resolving symlinks) must lie inside
            ``base_dir``.

    Returns:
        The artefacts, with notes on what was discovered or inferred and every file read.

    Raises:
        ArtifactError: Missing, unreadable, ambiguous, escaping or contradicting artefacts.
        AneFormatError: A malformed ``.anec`` file or descriptor chain (`AnecFormatError`,
            `DescriptorChainError`).
    """
    return _Resolver(spec, base_dir, allow_outside).run(toolchain)
