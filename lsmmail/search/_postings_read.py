"""Posting lists as sorted rank arrays: the native kernels (``native/postings_read.c``) and their twins.

A *rank* is a doc's index in its user's *universe* (every flushed doc of the user, ascending by id; see
``segment_reads._Universe``), so newest first is highest rank first and a posting list over every flushed
segment is one ascending ``array('I')`` of ranks: 4 bytes a doc, read by C without a Python object per doc.

* :func:`post_ranks` -- the ordinal header of one posting block (format 1 or 2) as ranks ``base + ordinal``,
  with exactly the checks of ``postings._header`` (``Corruption`` for a malformed block).
* :func:`post_and` -- the newest ``want`` ranks ``r`` with ``lo <= r < hi`` held by every positive list
  (every rank in the range if there is none) and by no negated list, descending. The kernel walks the
  shortest positive list from the top and finds each candidate in the others by galloping down from where
  the previous probe stopped (steps 1, 2, 4, ... then a binary search), jumping the walk past runs that
  another list lacks; it stops at ``want`` hits. Inputs must be strictly ascending (the index builds them
  so); for other input the kernel still stays inside the arrays and returns at most ``want`` ranks in ``[lo,
  hi)``.

* :func:`post_phrase` -- the candidate ordinals (ascending) at which the blocks of a phrase's tokens (one
  block per token, in phrase order, of one field and segment) hold adjacent positions: some ``p`` in the
  first token's positions with ``p + i`` in the ``i``-th token's. Every block is checked whole, as
  ``postings.decode_positions_of`` checks it; only the candidates' position runs are decoded.

``tests/native/test_postings_read.py`` holds both kernels to their twins on random, adversarial and
malformed input. Dispatch honours ``LSMMAIL_PURE=1``; the ``*_native`` functions work whenever the
extension is built.
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

from .. import native
from ..engine.errors import InvalidArgument
from .postings import decode_ordinals, decode_positions_of

_lib = native._lib
_ffi = native._ffi
#: The kernels exist in extensions built since they were added; an older build falls back to the twins.
NATIVE = _lib is not None and hasattr(_lib, "lsm_post_phrase")
DISPATCH = NATIVE and not native.PURE_FORCED
#: Largest page kept in the per-thread output buffer (16 KiB); larger results get a buffer per call.
_SCRATCH_MAX = 4096
#: Lists per :func:`post_and` call the kernel takes (positive and negated each); more go to the twin.
MAX_LISTS = 64
_RANK_LIMIT = 1 << 32
#: Ranks are below this (the kernel takes ``hi`` as a uint32).
_RANK_MAX = _RANK_LIMIT - 1


class RankList:
    """An ascending ``array('I')`` of ranks and, once the kernel has read it, its cffi pointer (cached: a
    ``from_buffer`` is ~0.3 µs, as much as the walk of a short list). The array must not change."""

    __slots__ = ("ranks", "_ptr")

    def __init__(self, ranks: array) -> None:
        self.ranks = ranks
        self._ptr: Any = None

    def ptr(self) -> Any:
        p = self._ptr
        if p is None:
            p = self._ptr = _ffi.from_buffer("uint32_t[]", self.ranks)
        return p


# ----------------------------------------------------------------------------------------- block -> ranks


def post_ranks_pure(block: bytes, table_len: int, base: int) -> array:
    if not 0 <= base < _RANK_LIMIT or base + table_len > _RANK_LIMIT:
        raise InvalidArgument("ranks beyond 32 bits")
    ords = decode_ordinals(block, table_len)
    if base:
        return array("I", [base + o for o in ords])
    return array("I", ords)


def post_ranks_native(block: bytes, table_len: int, base: int) -> array:
    if not 0 <= base < _RANK_LIMIT or base + table_len > _RANK_LIMIT:
        raise InvalidArgument("ranks beyond 32 bits")
    cap = len(block) + 1  # a valid block holds at most one ordinal per byte after its first
    out = native._new("uint32_t[]", cap)
    buf = block if type(block) is bytes else _ffi.from_buffer(block)  # bytes pass as they are
    n = native._check(_lib.lsm_post_ranks(buf, len(block), table_len, base, out, cap), "posting block")
    got = array("I")
    got.frombytes(_ffi.buffer(out, 4 * n))
    return got


post_ranks = post_ranks_native if DISPATCH else post_ranks_pure


# ----------------------------------------------------------------------------------------- AND of lists


def post_and_pure(
    pos: Sequence[RankList], neg: Sequence[RankList], lo: int, hi: int, want: int
) -> list[int]:
    """The ranks of :func:`post_and`, as a list (the native version returns an ``array('I')``)."""
    lo = max(lo, 0)
    hi = min(hi, _RANK_MAX)
    if hi <= lo or want <= 0:
        return []
    out: list[int] = []
    if pos:
        lists = sorted((p.ranks for p in pos), key=len)
        first = lists[0]
        cands = reversed(first[bisect_left(first, lo) : bisect_left(first, hi)])
    else:
        cands = iter(range(hi - 1, lo - 1, -1))
    others = lists[1:] if pos else []
    negs = [n.ranks for n in neg]
    for c in cands:
        if all(_holds(r, c) for r in others) and not any(_holds(r, c) for r in negs):
            out.append(c)
            if len(out) >= want:
                break
    return out


def _holds(ranks: array, c: int) -> bool:
    i = bisect_left(ranks, c)
    return i < len(ranks) and ranks[i] == c


class _Scratch(threading.local):
    """Per-thread argument arrays of the kernel (a ``ffi.new`` per call is ~0.3-0.4 µs each)."""

    def __init__(self) -> None:
        self.pos = _ffi.new("uint32_t *[]", MAX_LISTS)
        self.pos_len = _ffi.new("size_t[]", MAX_LISTS)
        self.neg = _ffi.new("uint32_t *[]", MAX_LISTS)
        self.neg_len = _ffi.new("size_t[]", MAX_LISTS)
        self.cap = 0
        self.out = array("I")
        self.out_ptr: Any = None

    def grow(self, want: int) -> None:
        self.out_ptr = None  # the old array may be resized only once nothing exports its buffer
        self.out = array("I", bytes(4 * want))
        self.cap = want
        self.out_ptr = _ffi.from_buffer("uint32_t[]", self.out)


_scratch = _Scratch() if NATIVE else None  # a threading.local: each thread gets its own arrays


def post_and_native(
    pos: Sequence[RankList], neg: Sequence[RankList], lo: int, hi: int, want: int
) -> array:
    npos, nneg = len(pos), len(neg)
    if npos > MAX_LISTS or nneg > MAX_LISTS:
        return array("I", post_and_pure(pos, neg, lo, hi, want))
    if lo < 0:
        lo = 0
    if hi > _RANK_MAX:
        hi = _RANK_MAX
    if hi <= lo or want <= 0:
        return array("I")
    s = _scratch
    assert s is not None
    # ~1 µs of glue per call at most: the kernel's own walk of a 50-hit AND is ~0.5 µs
    pp, pl = s.pos, s.pos_len
    i = 0
    for p in pos:
        pp[i] = p._ptr or p.ptr()
        pl[i] = len(p.ranks)
        i += 1
    npp, nl = s.neg, s.neg_len
    i = 0
    for p in neg:
        npp[i] = p._ptr or p.ptr()
        nl[i] = len(p.ranks)
        i += 1
    if want > _SCRATCH_MAX:  # a large result (a phrase's candidates): a buffer of its own
        buf = array("I", bytes(4 * want))
        n = native._check(_lib.lsm_post_and(pp, pl, npos, npp, nl, nneg, lo, hi,
                                            _ffi.from_buffer("uint32_t[]", buf), want), "rank lists")
        del buf[n:]
        return buf
    if want > s.cap:
        s.grow(want)
    n = _lib.lsm_post_and(pp, pl, npos, npp, nl, nneg, lo, hi, s.out_ptr, want)
    if n < 0:
        native._check(n, "rank lists")
    return s.out[:n]


post_and = post_and_native if DISPATCH else post_and_pure


# ----------------------------------------------------------------------------------------- phrases


def post_phrase_pure(blocks: Sequence[bytes], table_len: int, cand: Sequence[int]) -> list[int]:
    wanted = set(cand)
    plists = [decode_positions_of(b, table_len, wanted) for b in blocks]  # checks every block whole
    out = []
    for o in sorted(wanted):
        if all(o in pl for pl in plists):
            rest = [set(pl[o]) for pl in plists[1:]]
            if any(all(p + i in s for i, s in enumerate(rest, 1)) for p in plists[0][o]):
                out.append(o)
    return out


_EDECLINE = -4


def post_phrase_native(blocks: Sequence[bytes], table_len: int, cand: Sequence[int]) -> list[int]:
    """Twin of :func:`post_phrase_pure`. ``cand`` need not be sorted; duplicates are ignored. A position
    beyond 64 bits (only in a damaged block that is otherwise well formed) goes to the twin."""
    k = len(blocks)
    if not 0 < k <= MAX_LISTS:
        return post_phrase_pure(blocks, table_len, cand)
    cands = sorted(set(cand))
    if not cands or cands[0] < 0 or cands[-1] >= _RANK_LIMIT:
        return post_phrase_pure(blocks, table_len, cand)
    nc = len(cands)
    # the blocks as one buffer and their end offsets: a from_buffer per block cost more than the walk
    ends = list(accumulate(map(len, blocks)))
    longest = max(e - s for s, e in zip([0, *ends], ends, strict=False))
    out = native._new("uint32_t[]", nc)
    rc = _lib.lsm_post_phrase(
        b"".join(blocks), ends, k, table_len, cands, nc, native._new("uint64_t[]", k * nc),
        native._new("uint32_t[]", longest + 1), native._new("uint64_t[]", ends[-1] + 1), out,
    )
    if rc == _EDECLINE:
        return post_phrase_pure(blocks, table_len, cand)
    return _ffi.unpack(out, native._check(rc, "posting block"))


post_phrase = post_phrase_native if DISPATCH else post_phrase_pure
