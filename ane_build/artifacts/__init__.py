"""Compiler artefacts (explicit files, JSON bundles, ``.anec`` files, discovery) into payloads."""

from .resolve import ArtifactSpec, bundle_file, discover_candidates, load_bundle, resolve_artifacts
from .types import ResolvedArtifacts

__all__ = [
    "ArtifactSpec",
    "ResolvedArtifacts",
    "bundle_file",
    "discover_candidates",
    "load_bundle",
    "resolve_artifacts",
]
