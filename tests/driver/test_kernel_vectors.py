"""The fork kernel's own verdicts on 922 containers (../shared/kernel-vectors): errno of both
stages, written-back sizes, payload digests and the whole BO after the in-place rewrite.

Skipped, not failed, in a checkout without ../shared (read in place; see tests/conftest.py).
"""

from __future__ import annotations

import errno
import hashlib
from typing import Any

import pytest

from ane_build.driver.kernel_onnx import KernelVerdict, check_bo, prepare_submit
from tests.conftest import load_kernel_vectors

VECTOR_COUNT = 922
# Read at collection only to name each case after its vector; the fixture does the skipping.
IDS = [f"{index}-{vector['name']}" for index, vector in enumerate(load_kernel_vectors())]


def errnos(verdict: KernelVerdict) -> tuple[str, str]:
    """(translate, submit) as the vectors spell them: a submit-stage refusal passed translation."""
    name = errno.errorcode[verdict.errno] if verdict.errno else "OK"
    return ("OK" if verdict.stage == "submit" else name), name


def test_the_whole_vector_file_is_there(kernel_vectors: tuple[dict[str, Any], ...]) -> None:
    assert len(kernel_vectors) == VECTOR_COUNT
    assert {v["translate"] for v in kernel_vectors} == {"OK", "EINVAL", "ERANGE"}


@pytest.mark.parametrize("index", range(len(IDS) or 1), ids=IDS or ["absent"])
def test_vector(kernel_vectors: tuple[dict[str, Any], ...], index: int) -> None:
    vector = kernel_vectors[index]
    container = bytes.fromhex(vector["container_hex"])
    bo = bytearray(vector["bo_size"])
    bo[: len(container)] = container
    before = hashlib.sha256(bo).hexdigest()

    checked = check_bo(container, vector["bo_size"])
    submitted = prepare_submit(memoryview(bo))

    assert checked == submitted
    assert errnos(submitted) == (vector["translate"], vector["submit"]), submitted.detail
    after = hashlib.sha256(bo).hexdigest()
    if not submitted.ok:
        assert after == before, "a refused BO must be left as it was"
        return
    written_back = (submitted.tsk_size, submitted.td_size, submitted.td_count)
    assert written_back == (vector["tsk_size"], vector["td_size"], vector["td_count"])
    assert (submitted.tsk_size, submitted.microcode_sha256) == (
        vector["microcode_len"],
        vector["microcode_sha256"],
    )
    assert (submitted.weights_len, submitted.weights_sha256) == (
        vector["weights_len"],
        vector["weights_sha256"],
    )
    assert after == vector["bo_sha256_after"]
