"""A closed DB gives back its memory at close, not when the object is collected.

A caller may keep a closed handle alive (a bound ``db.get`` in a local, an iterator): the memtables
and the block cache must not stay with it. Nothing acknowledged may be lost by that (the WAL holds the
memtable), reads of the closed handle must raise, and a scan open across close never ends early.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import lsmmail
from lsmmail.engine.errors import DBClosed
from lsmmail.engine.options import Options


def _fill(db: lsmmail.DB, n: int) -> None:
    for s in range(0, n, 100):
        b = lsmmail.WriteBatch()
        for i in range(s, min(n, s + 100)):
            b.put(b"k%06d" % i, b"v%06d" % i * 50)
        db.write(b)


def test_close_releases_memtables_and_cache_and_keeps_the_data(tmp_path: Path) -> None:
    # Small memtables, so there are tables (and cached blocks) as well as a memtable.
    opts = Options(memtable_size=64 * 1024, background_work=False)
    db = lsmmail.DB.open(tmp_path, opts)
    _fill(db, 3000)
    for i in range(0, 3000, 7):
        assert db.get(b"k%06d" % i) == b"v%06d" % i * 50
    assert db._cache is not None and db._cache.stats.usage > 0
    assert len(db._mem) > 0
    get = db.get  # the handle a caller keeps
    db.close()
    assert len(db._mem) == 0 and not db._imms
    assert db._cache.stats.usage == 0
    with pytest.raises(DBClosed):
        get(b"k000001")
    with lsmmail.DB.open(tmp_path, opts) as again:
        assert [again.get(b"k%06d" % i) for i in range(3000)] == [b"v%06d" % i * 50 for i in range(3000)]


def test_a_scan_open_across_close_never_ends_early_or_yields_wrong_data(tmp_path: Path) -> None:
    """Dropping the memtables at close must not shorten a scan that holds them: it either yields every
    remaining entry or stops with DBClosed (the read path's choice), never ends quietly or wrongly."""
    db = lsmmail.DB.open(tmp_path, Options(background_work=False))
    _fill(db, 500)
    it = iter(db.scan())
    got = [next(it)]
    db.close()
    closed = False
    try:
        for e in it:
            got.append(e)
    except DBClosed:
        closed = True
    want = [(b"k%06d" % i, b"v%06d" % i * 50) for i in range(500)]
    assert got == want[: len(got)]
    assert closed or len(got) == 500
