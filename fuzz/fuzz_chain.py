"""Fuzz the task descriptor chain walker and the bootstrap builder.

Run: ``python fuzz/fuzz_chain.py -max_total_time=600 corpus/chain/``
"""

from __future__ import annotations

import itertools

import _fuzz_common as common

with common.instrumented(__name__ == "__main__"):
    from ane_build.formats.microcode import (
        DescriptorChain,
        build_bootstrap,
        infer_td_size,
        walk_chain,
    )
    from ane_build.synthetic.chains import M1_TD_SIZE, make_chain


def TestOneInput(data: bytes) -> None:
    """``data[0:2]``: td_size / 4 (0 = infer it); the rest is the microcode."""
    source = common.Input(data)
    words = source.uint(2)
    td_size = None if words == 0 else 4 * words + (source.byte() & 3 if words == 0xFFFF else 0)
    microcode = source.rest()
    common.guarded(lambda: infer_td_size(microcode), len(microcode))
    chain = common.guarded(lambda: walk_chain(microcode, td_size), len(microcode))
    if not isinstance(chain, DescriptorChain):
        return
    ds = chain.descriptors
    if ds[0].offset != 0 or not ds[-1].last or any(d.last for d in ds[:-1]):
        raise AssertionError(f"accepted a chain with misplaced ends: {ds}")
    if any(a.offset + a.size > b.offset for a, b in itertools.pairwise(ds)):
        raise AssertionError("accepted overlapping or backward descriptors")
    if chain.tsk_size > len(microcode) or (td_size is not None and chain.td_size != td_size):
        raise AssertionError("accepted a chain that does not fit its parameters")
    if walk_chain(microcode[: chain.tsk_size], chain.td_size) != chain:
        raise AssertionError("the chain depends on bytes past its end")
    if len(build_bootstrap(microcode, chain.td_size)) != chain.td_size:
        raise AssertionError("bootstrap size differs from td_size")


def seeds() -> list[bytes]:
    """Chains of one to four descriptors, with and without a stated td_size."""
    stated = (M1_TD_SIZE // 4).to_bytes(2, "little")
    return [prefix + make_chain(n) for n in (1, 2, 4) for prefix in (b"\x00\x00", stated)]


def main() -> None:
    """Fuzz with atheris (libFuzzer flags and corpus folders come from the command line)."""
    common.run(TestOneInput, seeds())


if __name__ == "__main__":
    main()
