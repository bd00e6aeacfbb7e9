"""Which ``td_size``/``td_count`` a model's artefacts state or imply, checked against its chain.

Explicit settings win, then what a bundle or ``.anec`` header states, then the tile
descriptors' chain or length, then the microcode's own chain. Reads only the small payloads it
is given; must not open files or decide where artefacts are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import ArtifactError, DescriptorChainError
from ..formats.anec import MAX_TSK_SIZE
from ..formats.microcode import check_chain, infer_td_size, walk_chain
from ..formats.payload import PayloadRef
from .spec import SETTINGS, ArtifactSpec

logger = logging.getLogger(__name__)

_SKIP_HINT = (
    f"; if the chain is right and this tool does not understand it, "
    f"{SETTINGS['skip_validation'][0]} skips this check"
)
# Stops us slurping a weights file that was passed as microcode by mistake.
MAX_CHAIN_BYTES = MAX_TSK_SIZE


@dataclass(frozen=True)
class Stated:
    """A descriptor parameter and where it came from."""

    value: int
    origin: str


@dataclass(frozen=True)
class Statement:
    """What one bundle or ``.anec`` header states about its descriptors."""

    td_size: int | None
    td_count: int | None
    origin: str


@dataclass(frozen=True)
class Labelled:
    """A payload and the words that name where it came from."""

    ref: PayloadRef
    label: str


def small_bytes(ref: PayloadRef, what: str) -> bytes:
    """Read a payload that must be a descriptor chain's size at most.

    Raises:
        ArtifactError: It is larger than any chain (most likely the weights given by mistake).
    """
    if ref.length > MAX_CHAIN_BYTES:
        raise ArtifactError(
            f"{what} {ref.label} is {ref.length} bytes, more than any descriptor chain "
            f"({MAX_CHAIN_BYTES} bytes); is it the weights file?"
        )
    return ref.read()


class DescriptorParams:
    """Works out ``td_size``/``td_count`` for one model, noting every inference."""

    def __init__(self, spec: ArtifactSpec, note: Callable[[str], None]) -> None:
        self.spec = spec
        self.note = note

    def resolve(
        self, microcode: Labelled, tds: Labelled | None, stated: Sequence[Statement]
    ) -> tuple[int, int]:
        """Return ``(td_size, td_count)``; the microcode's chain is checked against them.

        With ``spec.skip_validation`` the chain is only walked when nothing states a value.

        Raises:
            ArtifactError: Statements contradict each other.
            DescriptorChainError: The chain does not agree with the parameters.
        """
        size = self.explicit("td_size", self.spec.td_size, stated)
        count = self.explicit("td_count", self.spec.td_count, stated)
        if (size is None or count is None) and tds is not None:
            size, count = self.from_tile_descriptors(tds, size, count)
        code = small_bytes(microcode.ref, "microcode")
        if size is None or count is None:
            size, count = self.from_microcode(code, microcode.label, size, count)
        if self.spec.skip_validation:
            self.note(
                f"descriptor chain not checked (skip_validation): td_size={size.value} from "
                f"{size.origin}, td_count={count.value} from {count.origin}"
            )
        else:
            self.check_microcode(code, microcode.label, size, count)
        return size.value, count.value

    def explicit(
        self, key: str, spec_value: int | None, stated: Sequence[Statement]
    ) -> Stated | None:
        """The explicit setting of ``key``, else the first container that states one."""
        others = [
            Stated(value, s.origin)
            for s in stated
            if (value := s.td_size if key == "td_size" else s.td_count) is not None
        ]
        if spec_value is None:
            return others[0] if others else None
        chosen = Stated(spec_value, SETTINGS[key][1])
        for other in others:
            if other.value != spec_value:
                self.note(
                    f"{key}={spec_value} from {chosen.origin} overrides {key}={other.value} "
                    f"from the {other.origin}"
                )
        return chosen

    def from_microcode(
        self, code: bytes, label: str, size: Stated | None, count: Stated | None
    ) -> tuple[Stated, Stated]:
        """Fill the missing parameters from the microcode's own descriptor chain."""
        try:
            chain = walk_chain(code, size.value if size else None, source=label)
        except DescriptorChainError as exc:
            if size is None:
                raise
            raise DescriptorChainError(f"{exc} (td_size={size.value} from {size.origin})") from exc
        origin = "the microcode's descriptor chain"
        if size is None:
            size = Stated(chain.td_size, origin)
            self.note(f"inferred td_size={chain.td_size} from {origin}")
        if count is None:
            count = Stated(chain.td_count, origin)
            self.note(f"inferred td_count={chain.td_count} from {origin}")
        return size, count

    def from_tile_descriptors(
        self, tds: Labelled, size: Stated | None, count: Stated | None
    ) -> tuple[Stated | None, Stated | None]:
        """Fill the missing parameters from the separate tile descriptors (chain or length)."""
        data = small_bytes(tds.ref, "tile descriptors")
        try:
            chain = walk_chain(data, size.value if size else None, source=tds.label)
        except DescriptorChainError as exc:
            logger.debug("tile descriptors are not a walkable chain: %s", exc)
            return self.from_length(tds.label, len(data), size, count)
        origin = f"the tile descriptors' chain ({tds.label})"
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
        return Stated(chain.td_size, origin), Stated(chain.td_count, origin)

    def from_length(
        self, label: str, length: int, size: Stated | None, count: Stated | None
    ) -> tuple[Stated | None, Stated | None]:
        """Fill one missing parameter from the descriptors' length and the other parameter."""
        origin = f"the tile descriptors' length ({label}, {length} bytes)"
        if not length:
            return size, count
        if size is not None and count is None and length % size.value == 0:
            count = Stated(length // size.value, origin)
            self.note(f"inferred td_count={count.value} from {origin} / td_size={size.value}")
        elif count is not None and size is None and length % (4 * count.value) == 0:
            size = Stated(length // count.value, origin)
            self.note(f"inferred td_size={size.value} from {origin} / td_count={count.value}")
        return size, count

    def check_microcode(self, code: bytes, label: str, size: Stated, count: Stated) -> None:
        """Check the microcode's chain against the parameters; data after its end is an error."""
        try:
            chain = walk_chain(code, size.value, source=label)
            check_chain(chain, td_count=count.value, source=label)
        except DescriptorChainError as exc:
            raise DescriptorChainError(
                f"{exc} (td_size={size.value} from {size.origin}, td_count={count.value} from "
                f"{count.origin}){_SKIP_HINT}"
            ) from exc
        tail = memoryview(code)[chain.tsk_size :]
        if any(tail):
            # Data after the end-of-network descriptor is never run: the chain, hence td_size,
            # does not describe this microcode (the engine would hang or run garbage).
            raise DescriptorChainError(
                f"{label}: with td_size={size.value} (from {size.origin}) the descriptor chain "
                f"ends at byte 0x{chain.tsk_size:x}, but the microcode has non-zero data up to "
                f"0x{len(code):x}; the microcode itself suggests td_size="
                f"{infer_td_size(code, source=label)}{_SKIP_HINT}"
            )
        if len(tail):
            self.note(
                f"microcode {label} has {len(tail)} zero bytes after its descriptor chain "
                f"(chain ends at 0x{chain.tsk_size:x})"
            )
