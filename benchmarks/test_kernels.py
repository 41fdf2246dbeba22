"""pytest-benchmark suite: each native kernel against its pure-Python twin on the same input.

Not part of the default test run (``testpaths = tests``). Run::

    pytest benchmarks/test_kernels.py --benchmark-group-by=param:kernel

Inputs are shaped like the engine's: 16 KiB data blocks of 16-byte user keys (24-byte internal keys)
with 100-byte values, a 10,000-key bloom filter, four runs of 2,500 versions to merge, WAL records of a
1 KiB single put and of a 1,000-entry batch.
"""

from __future__ import annotations

import os
import random
import struct

import pytest
import xxhash

from lsmmail import native
from lsmmail.engine.block import BlockBuilder, decode_block, decode_data_block
from lsmmail.engine.bloom import BloomBuilder, bloom_may_contain
from lsmmail.engine.wal import LogWriter

if not native.BUILT:  # pragma: no cover
    raise RuntimeError("lsmmail._native is not built: run `pip install -e .`")

rnd = random.Random(7)
KEYS = [b"%016d" % i + struct.pack("<Q", (i << 8) | 1) for i in range(0, 130 * 7, 7)]
VALUES = [rnd.randbytes(100) for _ in KEYS]


def _builder_block() -> bytes:
    b = BlockBuilder(16)
    for k, v in zip(KEYS, VALUES, strict=True):
        b.add(k, v)
    return b.finish()


BLOCK = _builder_block()
TARGET = KEYS[77]
BLOOM_KEYS = [b"%016d" % i for i in range(10_000)]
BLOOM_HASHES = [xxhash.xxh3_64_intdigest(k) for k in BLOOM_KEYS]


def _bloom_pure() -> bytes:
    b = BloomBuilder(10)
    for k in BLOOM_KEYS:
        b.add_key(k)
    return b.finish()


FILTER = _bloom_pure()
PROBES = [b"%015d." % i for i in range(1000)]
RUNS = [(sorted(rnd.randbytes(16) for _ in range(2500)), [r + 1] * 2500) for r in range(4)]
VARINTS = [rnd.randrange(1 << rnd.randrange(1, 40)) for _ in range(10_000)]
VARINT_BYTES = native.encode_varints_pure(VARINTS)
PUT_RECORD = os.urandom(1100)
BATCH_RECORD = os.urandom(1000 * 1060)
GROUP = [os.urandom(1100) for _ in range(8)]


def _wal(payloads: list[bytes]) -> bytes:
    w = LogWriter(None, 100)  # type: ignore[arg-type]
    return b"".join(w.encode_record(p) for p in payloads)


CASES = {
    "block_encode": (_builder_block, lambda: native.encode_block_native(KEYS, VALUES, 16)),
    "block_decode": (lambda: decode_block(BLOCK), lambda: native.decode_block_native(BLOCK)),
    "data_block_decode": (lambda: decode_data_block(BLOCK), lambda: native.decode_data_block_native(BLOCK)),
    "block_seek": (
        lambda: native.block_seek_pure(BLOCK, TARGET),
        lambda: native.block_seek_native(BLOCK, TARGET),
    ),
    "bloom_build_10k": (_bloom_pure, lambda: native.bloom_build_native(BLOOM_HASHES, 10)),
    "bloom_probe_1": (
        lambda: bloom_may_contain(FILTER, PROBES[0]),
        lambda: native.bloom_may_contain_native(FILTER, xxhash.xxh3_64_intdigest(PROBES[0])),
    ),
    "bloom_probe_1000": (
        lambda: [bloom_may_contain(FILTER, k) for k in PROBES],
        lambda: native.bloom_probe_native(FILTER, [xxhash.xxh3_64_intdigest(k) for k in PROBES]),
    ),
    "merge_4x2500": (lambda: native.merge_runs_pure(RUNS), lambda: native.merge_runs_native(RUNS)),
    "varint_encode_10k": (
        lambda: native.encode_varints_pure(VARINTS),
        lambda: native.encode_varints_native(VARINTS),
    ),
    "varint_decode_10k": (
        lambda: native.decode_varints_pure(VARINT_BYTES),
        lambda: native.decode_varints_native(VARINT_BYTES),
    ),
    "wal_frame_put": (lambda: _wal([PUT_RECORD]), lambda: native.frame_records_native([PUT_RECORD], 100)),
    "wal_frame_batch_1MiB": (
        lambda: _wal([BATCH_RECORD]),
        lambda: native.frame_records_native([BATCH_RECORD], 100),
    ),
    "wal_frame_group_8": (lambda: _wal(GROUP), lambda: native.frame_records_native(GROUP, 100)),
}


@pytest.mark.parametrize("side", ["pure", "native"])
@pytest.mark.parametrize("kernel", sorted(CASES))
def test_kernel(benchmark, kernel: str, side: str) -> None:  # type: ignore[no-untyped-def]
    pure, nat = CASES[kernel]
    assert pure() == nat()  # both sides give the same answer
    benchmark.group = kernel
    benchmark(pure if side == "pure" else nat)
