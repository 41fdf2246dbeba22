"""The single-put fast paths: ``encode_single_put`` (DB.put without a WriteBatch) and the WAL's
one-fragment framing, against the general code they shortcut."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lsmmail.engine.batch import WriteBatch, encode_single_put
from lsmmail.engine.wal import LogReader, LogWriter

_sizes = st.sampled_from([0, 1, 127, 128, 16383, 16384, 70_000])


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=200), _sizes, st.sampled_from([bytes, bytearray, str]))
def test_single_put_matches_write_batch(key: bytes, vsize: int, vtype: type) -> None:
    value = vtype(vsize) if vtype is not str else "x" * vsize
    rep = encode_single_put(key, value)
    if rep is None:
        # Only the shapes the fast path leaves to WriteBatch.
        assert type(value) is not bytes or not 0 < len(key) < 0x80
        return
    b = WriteBatch()
    b.put(key, value)
    assert rep == b.encoded_entries()


class _Buf:
    def __init__(self) -> None:
        self.data = bytearray()

    def append(self, b: bytes) -> None:
        self.data += b


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3000), st.sampled_from([bytes, bytearray])), min_size=1,
                max_size=40), st.sampled_from([64, 1000, 32768]))
def test_one_fragment_framing_matches_general(records, block_size) -> None:  # type: ignore[no-untyped-def]
    # bytearray payloads take the general loop, bytes ones the fast path where they fit: the log reads
    # back record for record either way, and equals the log of the same records all framed by the loop.
    fast, slow = _Buf(), _Buf()
    wf = LogWriter(fast, block_size=block_size)  # type: ignore[arg-type]
    ws = LogWriter(slow, block_size=block_size)  # type: ignore[arg-type]
    payloads = []
    for i, (n, kind) in enumerate(records):
        p = bytes([i % 251]) * n
        payloads.append(p)
        wf.add_record(kind(p))
        ws.add_record(bytearray(p))
    assert fast.data == slow.data
    assert list(LogReader(bytes(fast.data), block_size=block_size)) == payloads
