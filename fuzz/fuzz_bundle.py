"""Fuzz the JSON bundle loader and artefact resolution from a bundle.

Run: ``python fuzz/fuzz_bundle.py -max_total_time=600 -dict=fuzz/json.dict corpus/bundle/``
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import _fuzz_common as common

with common.instrumented(__name__ == "__main__"):
    from ane_build.artifacts import ArtifactSpec, Bundle, load_bundle, resolve_artifacts
    from ane_build.artifacts.types import ResolvedArtifacts
    from ane_build.errors import AneError
    from ane_build.formats.microcode import walk_chain
    from ane_build.synthetic.chains import M1_TD_SIZE, make_chain


def TestOneInput(data: bytes) -> None:
    """``data`` is the bundle.json file."""
    path = common.scratch_file("bundle.json", data)
    bundle = common.guarded(lambda: load_bundle(path), len(data))
    spec = ArtifactSpec(bundle=Path("bundle.json"))
    resolved = common.guarded(
        lambda: resolve_artifacts(spec, base_dir=path.parent, allow_outside=False), len(data)
    )
    if isinstance(bundle, AneError):
        if not isinstance(resolved, AneError):
            raise AssertionError("resolve accepted a bundle that load_bundle refuses")
        return
    assert isinstance(bundle, Bundle)
    if not bundle.microcode or not all(
        v is None or (type(v) is int and v > 0) for v in (bundle.td_size, bundle.td_count)
    ):
        raise AssertionError(f"accepted a bundle with bad values: {bundle}")
    if isinstance(resolved, ResolvedArtifacts):
        chain = walk_chain(resolved.microcode.read(), resolved.td_size)
        if chain.td_count != resolved.td_count:
            raise AssertionError("resolved td_count disagrees with the microcode's chain")


def seeds() -> list[bytes]:
    """Valid bundles: plain, with a tile descriptor object, URL-safe and wrapped base64."""
    chain = make_chain(2)
    text = base64.b64encode(chain).decode()
    docs = [
        {"microcode_b64": text, "td_size": M1_TD_SIZE, "td_count": "2", "toolchain": "anecc"},
        {
            "microcode_b64": base64.urlsafe_b64encode(chain).decode(),
            "weights_b64": base64.b64encode(bytes(30)).decode(),
            "tile_descriptors": {"b64": text, "entry_size": M1_TD_SIZE, "count": 2},
        },
        {"microcode_b64": "\n".join(text[i : i + 76] for i in range(0, len(text), 76))},
    ]
    return [json.dumps(doc).encode() for doc in docs]


def main() -> None:
    """Fuzz with atheris (libFuzzer flags and corpus folders come from the command line)."""
    common.run(TestOneInput, seeds())


if __name__ == "__main__":
    main()
