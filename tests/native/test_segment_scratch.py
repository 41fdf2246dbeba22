"""The segment builder's kept scratch buffers (``lsm_segment_scratch_keep``, ``_segment_build.scratch_kept``)
never change a build's output: builds of random sizes in any order (a kept buffer too small, then too
large, for the next build), switching keeping on and off between builds, malformed records refused while
keeping, and builds racing on threads (one holds the kept set, the others allocate their own) all give
what the pure twin gives."""

from __future__ import annotations

import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsmmail import native
from lsmmail.search import _segment_build as B
from lsmmail.search import postings as P

if not native.BUILT or not hasattr(native._lib, "lsm_segment_scratch_keep"):  # pragma: no cover
    raise RuntimeError("lsmmail._native lacks lsm_segment_scratch_keep: run python native/build_native.py")

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_tok = st.sampled_from(["", "a", "b", "ab", "é", "日本", "x" * 64, "alice", "3", "z" * 300])
_specials = st.lists(st.sampled_from(["a", "q.txt"]), max_size=3)
_doc = st.dictionaries(st.sampled_from(["s", "b", "f", "t", "c", "a", "h"]),
                       st.tuples(st.lists(_tok, max_size=60), _specials), max_size=7)


def _records(docs: list[dict]) -> list[bytes]:
    return [P.encode_forward_raw({f: (" ".join(t).encode(), len(t), sp) for f, (t, sp) in d.items()})
            for d in docs]


def _build(records: list[bytes]) -> dict[bytes, bytes]:
    got = B.build_segment_fwd_native(records, b"P", b"S")
    assert len(got) == len(dict(got))
    return dict(got)


@FAST
@given(st.lists(st.tuples(st.lists(_doc, max_size=10), st.booleans()), min_size=1, max_size=6))
def test_kept_buffers_give_the_same_segments(builds: list[tuple[list[dict], bool]]) -> None:
    try:
        for docs, keep in builds:
            native._lib.lsm_segment_scratch_keep(int(keep))
            records = _records(docs)
            assert _build(records) == dict(B.build_segment_fwd_pure(records, b"P", b"S"))
    finally:
        native._lib.lsm_segment_scratch_keep(0)


def test_malformed_records_while_keeping_then_a_good_build() -> None:
    good = _records([{"b": (["a", "b", "a"], [])}, {"s": (["x" * 64] * 50, ["a"])}])
    with B.scratch_kept():
        big = _build(good * 40)  # grow the kept buffers first
        for bad in ([b"\x02\x05"], [b"\x01\x00"], [good[0] + b"\x00"]):
            with pytest.raises(ValueError):
                B.build_segment_fwd_native(bad, b"P", b"S")
        assert _build(good) == dict(B.build_segment_fwd_pure(good, b"P", b"S"))
        assert big == dict(B.build_segment_fwd_pure(good * 40, b"P", b"S"))


def test_nested_and_threaded_builds() -> None:
    sets = [_records([{"b": ([f"w{i}", f"w{i + k}", "common"] * (k + 1), [])} for k in range(30 + 7 * i)])
            for i in range(6)]
    want = [dict(B.build_segment_fwd_pure(r, b"P", b"S")) for r in sets]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            with B.scratch_kept():
                for _ in range(15):
                    assert _build(sets[i]) == want[i]
        except BaseException as exc:  # reported below: an assert in a thread would be lost
            errors.append(exc)

    with B.scratch_kept():
        threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert B._keep_users == 0
