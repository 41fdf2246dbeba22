"""The flush's block path (lsm_mem_flush_blocks + BlockTableWriter) writes byte for byte the table that
TableBuilder writes from the same memtable's newest versions, entry by entry (its pure twin)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsmmail.engine.batch import WriteBatch
from lsmmail.engine.flush_table import BlockTableWriter
from lsmmail.engine.memtable_native import NativeMemTable
from lsmmail.engine.sstable import TableBuilder, TableOptions, TableReader


class _Buf:
    def __init__(self) -> None:
        self.data = bytearray()

    def append(self, b: bytes) -> None:
        self.data += b


class _Read:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read_at(self, offset: int, n: int) -> bytes:
        return self.data[offset : offset + n]

    def size(self) -> int:
        return len(self.data)

    def close(self) -> None:
        pass


_op = st.tuples(
    st.sampled_from(["put", "put", "put", "del"]),
    st.binary(min_size=1, max_size=12),
    st.sampled_from([0, 1, 7, 60, 300, 1500, 20_000]),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(_op, min_size=1, max_size=60), min_size=1, max_size=4),
       st.sampled_from([32, 200, 1024, 4096, 16384]), st.sampled_from([1, 2, 3, 16]),
       st.booleans(), st.sampled_from([0, 10]), st.randoms(use_true_random=False))
def test_block_path_is_byte_identical(batches, block_size, ri, compression, bloom, rnd) -> None:  # type: ignore[no-untyped-def]
    mem = NativeMemTable(1)
    seq = 1
    for ops in batches:
        wb = WriteBatch()
        for op, key, size in ops:
            if op == "del":
                wb.delete(key)
            else:
                wb.put(key, rnd.randbytes(size) if rnd.random() < 0.5 else bytes(size))
        mem.add_batch(seq, wb.entries, wb.encoded_entries())
        seq += len(wb)
    opts = TableOptions(block_size=block_size, restart_interval=ri, bloom_bits_per_key=bloom,
                        compression=compression)
    want = _Buf()
    tb = TableBuilder(want, opts)  # type: ignore[arg-type]
    for ikeys, values in mem.flush_runs():
        for k, v in zip(ikeys, values, strict=True):
            tb.add(k, v)
    p1 = tb.finish([])
    got = _Buf()
    w = BlockTableWriter(got, opts)  # type: ignore[arg-type]
    for run in mem.flush_blocks(block_size, ri):
        w.add_blocks(*run)
    p2 = w.finish()
    assert got.data == want.data
    assert p1 == p2
    # And it reads back as the newest version of every key.
    t = TableReader.open(_Read(bytes(got.data)), 1, cache=None, verify_checksums=True)  # type: ignore[arg-type]
    newest = {}
    for k, s, kind, v in mem.entries():
        newest.setdefault(k, (k, s, kind, v))
    assert list(t.entries()) == list(newest.values())
