"""`verify_container`'s kernel check against the real kernel's 922 verdicts (../shared).

The check must accept exactly what the fork kernel accepts in a page-rounded BO, and say which
errno it refuses with. Skipped in a checkout without ../shared.
"""

from __future__ import annotations

from typing import Any

import pytest

from ane_build.container import verify_container
from tests.conftest import load_kernel_vectors

IDS = [f"{index}-{vector['name']}" for index, vector in enumerate(load_kernel_vectors())]


@pytest.mark.parametrize("index", range(len(IDS) or 1), ids=IDS or ["absent"])
def test_kernel_check_agrees(kernel_vectors: tuple[dict[str, Any], ...], index: int) -> None:
    vector = kernel_vectors[index]
    container = bytes.fromhex(vector["container_hex"])
    report = verify_container(container, strict=False)
    checks = {check.name: check for check in report.checks}
    if "kernel" not in checks:
        # Our own scanner refused the bytes before the kernel check could run: only containers
        # the kernel refuses may stop there (field 0 and wire types 3/4 are not protobuf).
        assert vector["submit"] != "OK", report.summary()
        assert not checks["wire format"].ok
        return
    kernel = checks["kernel"]
    assert kernel.ok == (vector["submit"] == "OK"), (vector["submit"], kernel.detail)
    if not kernel.ok:
        assert f"with {vector['submit']}" in kernel.detail, kernel.detail
