"""Compiler artefacts (explicit files, JSON bundles, ``.anec`` files, discovery) into payloads."""

from .bundle import Bundle, bundle_file, load_bundle
from .discover import discover_candidates
from .resolve import resolve_artifacts
from .spec import ArtifactSpec, TensorSlot
from .types import ResolvedArtifacts

__all__ = [
    "ArtifactSpec",
    "Bundle",
    "ResolvedArtifacts",
    "TensorSlot",
    "bundle_file",
    "discover_candidates",
    "load_bundle",
    "resolve_artifacts",
]
