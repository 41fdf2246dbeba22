"""The DB against a dict model, driven by a hypothesis state machine.

Every rule does the same thing to the DB and to the model; every read compares them. Options are tiny
(see ``_helpers.tiny_options``) so a few dozen writes exercise memtable switches, flushes, L0 -> L1 and
deeper compactions, blob files, blob GC and range tombstones in the manifest. Snapshots keep a copy of
the model taken when they were made. ``reopen`` closes and reopens the DB on the same in-memory files.

Two variants: inline maintenance (deterministic) and background threads (flush/compaction racing the
rules; a read must be right whatever the threads have done so far).
"""

from __future__ import annotations

import pytest
from _helpers import MEM_DIR, apply_entries, model_scan, tiny_options, to_batch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from lsmmail.engine.db import DB
from lsmmail.engine.errors import InvalidArgument
from lsmmail.engine.fs import MemFileSystem
from lsmmail.engine.keys import KIND_DELETE, KIND_PUT, KIND_RANGE_DEL

# A small key space so overwrites, deletes and ranges meet often; \xff keys exercise prefix ends.
KEYS = [b"a", b"ab", b"abc", b"abd", b"b", b"ba", b"bb", b"c", b"c\x00", b"c\xff", b"d", b"e\xff",
        b"e\xff\xff", b"f", b"fa", b"g"] + [b"k%02d" % i for i in range(16)]
keys = st.sampled_from(KEYS)
# Values from empty to well past min_blob_size (40), so some go to blob files.
values = st.one_of(st.binary(max_size=12), st.binary(min_size=40, max_size=120))
bounds = st.one_of(st.none(), keys)
prefixes = st.one_of(st.none(), st.sampled_from([b"", b"a", b"ab", b"c", b"e\xff", b"k0", b"k1", b"z"]))
entries = st.one_of(
    st.tuples(st.just(KIND_PUT), keys, values),
    st.tuples(st.just(KIND_DELETE), keys, st.just(b"")),
    st.tuples(keys, keys).filter(lambda p: p[0] < p[1]).map(lambda p: (KIND_RANGE_DEL, p[0], p[1])),
)


class DBModel(RuleBasedStateMachine):
    background = False
    snapshots = Bundle("snapshots")

    def __init__(self) -> None:
        super().__init__()
        self.fs = MemFileSystem()
        self.opts = tiny_options(self.fs, background=self.background)
        self.db = DB.open(MEM_DIR, self.opts)
        self.model: dict[bytes, bytes] = {}
        self.live_snaps: list = []

    def teardown(self) -> None:
        self.db.close()

    # -- writes
    @rule(k=keys, v=values, sync=st.booleans())
    def put(self, k: bytes, v: bytes, sync: bool) -> None:
        self.db.put(k, v, sync=sync)
        self.model[k] = v

    @rule(k=keys)
    def delete(self, k: bytes) -> None:
        self.db.delete(k)
        self.model.pop(k, None)

    @rule(a=keys, b=keys)
    def delete_range(self, a: bytes, b: bytes) -> None:
        if a >= b:
            with pytest.raises(InvalidArgument):
                self.db.delete_range(a, b)
            return
        self.db.delete_range(a, b)
        apply_entries(self.model, [(KIND_RANGE_DEL, a, b)])

    @rule(es=st.lists(entries, min_size=1, max_size=8))
    def write_batch(self, es: list) -> None:
        self.db.write(to_batch(es))
        apply_entries(self.model, es)

    # -- reads
    @rule(k=keys)
    def get(self, k: bytes) -> None:
        assert self.db.get(k) == self.model.get(k)

    @rule(start=bounds, end=bounds, prefix=prefixes, reverse=st.booleans())
    def scan(self, start: bytes | None, end: bytes | None, prefix: bytes | None, reverse: bool) -> None:
        got = list(self.db.scan(start, end, prefix=prefix, reverse=reverse))
        p = prefix if prefix else None
        assert got == model_scan(self.model, start, end, p, reverse)

    # -- snapshots
    @rule(target=snapshots)
    def take_snapshot(self):  # noqa: ANN201 - hypothesis bundles
        s = self.db.snapshot()
        pair = (s, dict(self.model))
        self.live_snaps.append(pair)
        return pair

    @rule(pair=snapshots, k=keys, start=bounds, reverse=st.booleans())
    def read_snapshot(self, pair, k: bytes, start: bytes | None, reverse: bool) -> None:  # noqa: ANN001
        s, frozen = pair
        if pair not in self.live_snaps:
            return  # released or from before a reopen
        assert self.db.get(k, snapshot=s) == frozen.get(k)
        got = list(self.db.scan(start, None, reverse=reverse, snapshot=s))
        assert got == model_scan(frozen, start, None, None, reverse)

    @rule(pair=consumes(snapshots))
    def release_snapshot(self, pair) -> None:  # noqa: ANN001
        s, _ = pair
        if pair in self.live_snaps:
            self.live_snaps.remove(pair)
            s.release()
            with pytest.raises(InvalidArgument):
                self.db.get(b"a", snapshot=s)

    # -- maintenance
    @rule()
    def flush(self) -> None:
        self.db.flush()

    @rule(start=bounds, end=bounds)
    def compact_range(self, start: bytes | None, end: bytes | None) -> None:
        self.db.compact_range(start, end)

    @rule()
    def reopen(self) -> None:
        for s, _ in self.live_snaps:
            s.release()
        self.live_snaps.clear()
        self.db.close()
        self.db = DB.open(MEM_DIR, self.opts)

    @invariant()
    def a_few_keys_match(self) -> None:
        # A cheap point check after every step; full scans are a rule of their own.
        for k in (b"a", b"c\xff", b"k05"):
            assert self.db.get(k) == self.model.get(k)

    @rule()
    def whole_state(self) -> None:
        assert dict(self.db.scan()) == self.model


class DBModelBackground(DBModel):
    background = True


_fast = dict(max_examples=200, stateful_step_count=50, deadline=None,
             suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
_slow = dict(max_examples=2000, stateful_step_count=80, deadline=None,
             suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

TestDBModelInline = DBModel.TestCase
TestDBModelInline.settings = settings(**_fast)
TestDBModelBackground = DBModelBackground.TestCase
TestDBModelBackground.settings = settings(**_fast)


class _SlowInline(DBModel):
    pass


class _SlowBackground(DBModelBackground):
    pass


TestDBModelInlineSlow = pytest.mark.slow(_SlowInline.TestCase)
TestDBModelInlineSlow.settings = settings(**_slow)
TestDBModelBackgroundSlow = pytest.mark.slow(_SlowBackground.TestCase)
TestDBModelBackgroundSlow.settings = settings(**_slow)
