"""Resolve a model's compiler artefacts (explicit paths, JSON bundle, ``.anec``, discovery).

Turns an `ArtifactSpec` into `ResolvedArtifacts`, recording what was discovered or inferred and
every file read. Weights stay file ranges; only microcode, descriptors and bundles are read. This
module must not write files, touch devices, or guess between ambiguous candidates.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from .._fs import open_regular
from ..errors import ArtifactError
from ..formats.anec import read_anec
from ..formats.payload import IoSlot, PayloadRef
from .bundle import bundle_file, load_bundle
from .descriptors import DescriptorParams, Labelled, Statement
from .discover import DISCOVERY_MAX_DEPTH, DISCOVERY_PATTERNS, discover_candidates, patterns
from .spec import PAYLOAD_NAMES, ArtifactSpec, how_to_set
from .types import ResolvedArtifacts

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Container:
    """A self-contained source of payloads: a bundle or an ``.anec`` file."""

    kind: str  # "bundle" or ".anec file", as messages say it
    label: str
    payloads: dict[str, Labelled]
    statement: Statement
    io: dict[int, IoSlot] = field(default_factory=dict)
    tiles: dict[int, int] = field(default_factory=dict)
    toolchain: str | None = None


def _words(key: str) -> str:
    return key.replace("_", " ")


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

    def file_ref(self, path: Path, key: str) -> Labelled:
        self.confine(path, _words(key))
        with open_regular(path, _words(key), ArtifactError) as f:
            size = os.fstat(f.fileno()).st_size
        self.read_from(path)
        return Labelled(PayloadRef.from_file(path, 0, size), self.rel(path))

    # -- sources -------------------------------------------------------------------------------

    def explicit_files(self) -> dict[str, Labelled]:
        files: dict[str, Labelled] = {}
        for key in PAYLOAD_NAMES:
            value: Path | None = getattr(self.spec, key)
            if value is not None:
                files[key] = self.file_ref(self.locate(value, key), key)
        for key in self.spec.overrides:
            if key not in files:
                raise ArtifactError(
                    f"{how_to_set('overrides')} names {key}, but no {_words(key)} file is "
                    f"given with {how_to_set(key)}"
                )
        return files

    def given_container(self) -> _Container | None:
        spec = self.spec
        if spec.bundle is not None and spec.anec is not None:
            raise ArtifactError(
                f"both a bundle ({spec.bundle}) and an .anec file ({spec.anec}) are given; "
                f"choose one: {how_to_set('bundle')} or {how_to_set('anec')}"
            )
        if spec.bundle is not None:
            return self.load_bundle(self.locate(spec.bundle, "bundle"))
        if spec.anec is not None:
            return self.load_anec(self.locate(spec.anec, "anec"))
        return None

    def load_bundle(self, path: Path) -> _Container:
        self.confine(bundle_file(path), "bundle")
        bundle = load_bundle(path)
        self.read_from(bundle.path)
        where = f"bundle {self.rel(bundle.path)}"
        payloads = {
            key: Labelled(PayloadRef.from_bytes(data), f"{where}, field '{field_name}'")
            for key, field_name, data in (
                ("microcode", "microcode_b64", bundle.microcode),
                ("weights", "weights_b64", bundle.weights),
                ("tile_descriptors", "tile_descriptors.b64", bundle.tile_descriptors),
            )
            if data is not None
        }
        slots = bundle.io or {}
        return _Container(
            kind="bundle",
            label=self.rel(bundle.path),
            payloads=payloads,
            statement=Statement(bundle.td_size, bundle.td_count, where),
            io={slot: s.io_slot() for slot, s in slots.items()},
            tiles={slot: s.buffer_size() for slot, s in slots.items()},
            toolchain=bundle.toolchain,
        )

    def load_anec(self, path: Path) -> _Container:
        self.confine(path, "anec")
        anec = read_anec(
            path,
            payload_offset=self.spec.anec_payload_offset,
            check_chain=not self.spec.skip_validation,
        )
        self.read_from(path)
        head = anec.header
        name = self.rel(path)
        self.note(
            f"read {name}: td_size={head.td_size} td_count={head.td_count} "
            f"tsk_size={head.tsk_size} krn_size={head.krn_size}, {head.src_count} input(s), "
            f"{head.dst_count} output(s)"
        )
        payloads = {"microcode": Labelled(anec.microcode, f"{name} microcode")}
        if anec.weights is not None:
            payloads["weights"] = Labelled(anec.weights, f"{name} weights")
        return _Container(
            kind=".anec file",
            label=name,
            payloads=payloads,
            statement=Statement(anec.td_size, anec.td_count, f".anec header {name}"),
            io=dict(anec.io),
            tiles=dict(anec.tiles),
        )

    def check_mixed(self, files: dict[str, Labelled], container: _Container) -> None:
        """Explicit files that a bundle or ``.anec`` also holds must be declared overrides."""
        for key in PAYLOAD_NAMES:
            if key not in files or key not in container.payloads:
                continue
            if key not in self.spec.overrides:
                raise ArtifactError(
                    f"{_words(key)} is given twice: {files[key].label} ({how_to_set(key)}) and "
                    f"the {container.kind} {container.label}; give one, or add {key!r} to "
                    f"{how_to_set('overrides')} to use the file instead of the {container.kind}'s"
                )
            self.note(f"{_words(key)} from {files[key].label} overrides the {container.kind}'s")

    # -- discovery -----------------------------------------------------------------------------

    def discover(
        self, root: Path, files: dict[str, Labelled], container: _Container | None
    ) -> tuple[_Container | None, dict[str, Labelled]]:
        """Fill what is missing from a single unambiguous candidate under the root."""
        loose: dict[str, Labelled] = {}
        need_source = "microcode" not in files and container is None
        # A bundle or .anec is self-contained: loose files are only mixed with loose microcode.
        missing = (
            [k for k in ("weights", "tile_descriptors") if k not in files]
            if container is None
            else []
        )
        if not need_source and not missing:
            return container, loose
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
                return self.load_bundle(path), loose
            if kind == "anec":
                return self.load_anec(path), loose
            loose["microcode"] = self.file_ref(path, "microcode")
        used = {
            os.path.realpath(r.ref.path) for r in (*files.values(), *loose.values()) if r.ref.path
        }
        for key in missing:
            candidates = [p for p in found[key] if os.path.realpath(p) not in used]
            if len(candidates) > 1:
                raise ArtifactError(self.ambiguous(root, [(key, p) for p in candidates]))
            if candidates:
                self.note(f"discovered {_words(key)}: {self.rel(candidates[0])}")
                loose[key] = self.file_ref(candidates[0], key)
        return container, loose

    def nothing_found(self, root: Path) -> str:
        return (
            f"no compiler artefacts found under {self.rel(root)} (searched "
            f"{DISCOVERY_MAX_DEPTH} levels deep, skipping hidden and temporary files); expected "
            f"a bundle ({patterns('bundle')}), an .anec file ({patterns('anec')}) or microcode "
            f"({patterns('microcode')}) with optional weights ({patterns('weights')}) and tile "
            f"descriptors ({patterns('tile_descriptors')}); or give {how_to_set('microcode')}, "
            f"{how_to_set('bundle')} or {how_to_set('anec')}"
        )

    def ambiguous(self, root: Path, candidates: list[tuple[str, Path]]) -> str:
        kinds = sorted({k for k, _ in candidates}, key=list(DISCOVERY_PATTERNS).index)
        listing = "; ".join(f"{self.rel(p)} ({_words(k)})" for k, p in candidates)
        choose = " or ".join(how_to_set(k) for k in kinds)
        return (
            f"ambiguous artefacts under {self.rel(root)}: {len(candidates)} candidates: {listing}; "
            f"choose one with {choose}"
        )

    # -- result --------------------------------------------------------------------------------

    def run(self, toolchain: str | None) -> ResolvedArtifacts:
        files = self.explicit_files()
        container = self.given_container()
        loose: dict[str, Labelled] = {}
        if self.spec.root is not None:
            root = self.locate(self.spec.root, "artefact root")
            container, loose = self.discover(root, files, container)
        elif "microcode" not in files and container is None:
            raise ArtifactError(
                "no compiler artefacts given: set a folder to search with "
                f"{how_to_set('root')}, or give {how_to_set('microcode')}, "
                f"{how_to_set('bundle')} or {how_to_set('anec')}"
            )
        if container is not None:
            self.check_mixed(files, container)
        return self.assemble(files, loose, container, toolchain)

    def assemble(
        self,
        files: dict[str, Labelled],
        loose: dict[str, Labelled],
        container: _Container | None,
        toolchain: str | None,
    ) -> ResolvedArtifacts:
        # Precedence: explicit files (declared overrides), the bundle or .anec, discovered files.
        layers = [files, container.payloads if container else {}, loose]
        picked = {
            key: next((layer[key] for layer in layers if key in layer), None)
            for key in PAYLOAD_NAMES
        }
        microcode = picked["microcode"]
        if microcode is None:
            raise ArtifactError(
                f"no microcode: give {how_to_set('microcode')}, {how_to_set('bundle')} or "
                f"{how_to_set('anec')}, or a folder to search with {how_to_set('root')}"
            )
        tds, weights = picked["tile_descriptors"], picked["weights"]
        stated = [container.statement] if container else []
        td_size, td_count = DescriptorParams(self.spec, self.note).resolve(microcode, tds, stated)
        io, tiles = self.io(container)
        return ResolvedArtifacts(
            microcode=microcode.ref,
            td_size=td_size,
            td_count=td_count,
            weights=weights.ref if weights else None,
            tile_descriptors=tds.ref if tds else None,
            io=io,
            tiles=tiles,
            toolchain=toolchain
            if toolchain is not None or container is None
            else container.toolchain,
            notes=tuple(self.notes),
            inputs=tuple(self.inputs),
        )

    def io(self, container: _Container | None) -> tuple[dict[int, IoSlot], dict[int, int]]:
        """Tensor slots: the spec's ``io`` table wins over what a bundle or ``.anec`` says."""
        if self.spec.io is None:
            return (dict(container.io), dict(container.tiles)) if container else ({}, {})
        if container is not None and container.io:
            self.note(f"tensor slots from {how_to_set('io')} replace the {container.kind}'s")
        io = {slot: s.io_slot() for slot, s in sorted(self.spec.io.items())}
        return io, {slot: s.buffer_size() for slot, s in sorted(self.spec.io.items())}


def resolve_artifacts(
    spec: ArtifactSpec,
    *,
    base_dir: Path | None = None,
    toolchain: str | None = None,
    allow_outside: bool = True,
) -> ResolvedArtifacts:
    """Resolve a model's compiler artefacts into `ResolvedArtifacts`.

    Explicit files win where the spec declares them overrides (without that, a payload given
    both as a file and in a bundle or ``.anec`` is an error naming both); a bundle or ``.anec``
    supplies the rest; discovery under ``spec.root`` fills only what is still missing, from a
    single unambiguous candidate. The descriptor parameters come from explicit values (the spec,
    then the bundle or ``.anec`` header), else the tile descriptors' chain or length, else the
    microcode's chain; the microcode's chain is checked against the result unless
    ``spec.skip_validation``.

    Args:
        spec: Where the artefacts are.
        base_dir: Project root that relative paths resolve against (default: the working folder).
        toolchain: Free text naming the compiler; overrides the bundle's.
        allow_outside: When False, every path (after resolving symlinks) must lie inside
            ``base_dir``.

    Returns:
        The artefacts, with notes on what was discovered or inferred and every file read.

    Raises:
        ArtifactError: Missing, unreadable, ambiguous, escaping, mixed or contradicting
            artefacts.
        AneFormatError: A malformed ``.anec`` file or descriptor chain (`AnecFormatError`,
            `DescriptorChainError`).
    """
    return _Resolver(spec, base_dir, allow_outside).run(toolchain)
