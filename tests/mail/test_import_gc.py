"""The import's collector setting (delivery._import_gc): generation 0 collects every IMPORT_GC_THRESHOLD0
allocations while an import runs, and the previous thresholds come back when the last one ends; a setting
someone made meanwhile, or automatic collection switched off (threshold 0), is left alone."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from lsmmail.mail import MailOptions, MailStore, delivery


@pytest.fixture(autouse=True)
def _restore_thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def _raws(n: int, tag: str) -> list[bytes]:
    return [f"Message-ID: <{tag}{i}@x>\r\nSubject: s{i}\r\n\r\nbody {i}\r\n".encode() for i in range(n)]


def test_raised_during_an_import_and_restored_after(tmp_path: Path) -> None:
    gc.set_threshold(700, 11, 12)
    with MailStore.open(tmp_path / "db", MailOptions(sync=False)) as s:
        s.create_user("u")
        seen = []
        for _ in s.import_messages("u", _raws(5, "a"), batch_size=2, workers=1):
            seen.append(gc.get_threshold())
        assert seen == [(delivery.IMPORT_GC_THRESHOLD0, 11, 12)] * 5
        assert gc.get_threshold() == (700, 11, 12)
        # two imports interleaved: restored only when the last one ends
        a = s.import_messages("u", _raws(3, "b"), batch_size=1, workers=1)
        b = s.import_messages("u", _raws(3, "c"), batch_size=1, workers=1)
        next(a)
        next(b)
        assert list(a) and gc.get_threshold()[0] == delivery.IMPORT_GC_THRESHOLD0
        assert list(b) and gc.get_threshold() == (700, 11, 12)


def test_a_setting_made_meanwhile_or_collection_off_is_kept(tmp_path: Path) -> None:
    with MailStore.open(tmp_path / "db", MailOptions(sync=False)) as s:
        s.create_user("u")
        gc.set_threshold(700, 10, 10)
        for r in s.import_messages("u", _raws(3, "a"), batch_size=1, workers=1):
            if r.index == 0:
                gc.set_threshold(1234, 10, 10)
        assert gc.get_threshold() == (1234, 10, 10)
        gc.set_threshold(0, 10, 10)
        for _ in s.import_messages("u", _raws(3, "b"), batch_size=1, workers=1):
            assert gc.get_threshold()[0] == 0
        assert gc.get_threshold() == (0, 10, 10)
        gc.set_threshold(9000, 10, 10)  # already above ours: left as is
        assert len(list(s.import_messages("u", _raws(3, "c"), batch_size=1, workers=1))) == 3
        assert gc.get_threshold() == (9000, 10, 10)


def test_an_abandoned_import_restores_on_close(tmp_path: Path) -> None:
    gc.set_threshold(700, 10, 10)
    with MailStore.open(tmp_path / "db", MailOptions(sync=False)) as s:
        s.create_user("u")
        it = s.import_messages("u", _raws(6, "a"), batch_size=1, workers=1)
        next(it)
        assert gc.get_threshold()[0] == delivery.IMPORT_GC_THRESHOLD0
        it.close()
        assert gc.get_threshold() == (700, 10, 10)
