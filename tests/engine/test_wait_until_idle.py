"""``DB.wait_until_idle``: returns once flushes and compactions have caught up, and the tree is then in
shape (no frozen memtable, level 0 below its compaction trigger, every level under its score)."""

from __future__ import annotations

import random
from pathlib import Path

from lsmmail.engine.compaction import level_scores
from lsmmail.engine.db import DB
from lsmmail.engine.options import Options


def _opts(**kw: object) -> Options:
    # Tiny memtables and tables so a few hundred KiB of writes make many L0 files and compactions.
    return Options(memtable_size=64 * 1024, target_file_size=64 * 1024, **kw)  # type: ignore[arg-type]


def _fill(db: DB, n: int, seed: int) -> dict[bytes, bytes]:
    rnd = random.Random(seed)
    model: dict[bytes, bytes] = {}
    for _ in range(n):
        k = b"k%08d" % rnd.randrange(5_000)
        v = rnd.randbytes(rnd.randrange(50, 400))
        db.put(k, v)
        model[k] = v
    return model


def test_idle_means_no_pending_flush_or_compaction(tmp_path: Path) -> None:
    with DB.open(str(tmp_path / "db"), _opts()) as db:
        model = _fill(db, 6_000, seed=1)
        assert db.wait_until_idle(timeout=60)
        st = db.stats()
        assert st["levels"][0]["files"] < db.options.l0_compaction_trigger
        with db._mu:
            assert not db._imms
            assert max(level_scores(db._current, db.options)) < 1.0
        assert dict(db.scan()) == model  # idle or not, reads are exact


def test_idle_times_out_while_work_is_blocked(tmp_path: Path) -> None:
    with DB.open(str(tmp_path / "db"), _opts()) as db:
        with db._compaction_lock:  # a compaction "running": not idle until it ends
            assert db.wait_until_idle(timeout=0.2) is False
        assert db.wait_until_idle(timeout=60)


def test_idle_inline_mode_does_the_work(tmp_path: Path) -> None:
    with DB.open(str(tmp_path / "db"), _opts(background_work=False)) as db:
        _fill(db, 3_000, seed=2)
        assert db.wait_until_idle()
        with db._mu:
            assert not db._imms
