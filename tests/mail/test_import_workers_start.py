"""Import workers that cannot start: the import prepares every chunk in the storing process and gives the
same results; nothing is left behind."""

from __future__ import annotations

import sys

import pytest

from lsmmail.mail import file_pool, import_pool
from lsmmail.mail.import_pool import prepare, prepared_chunks


def _raws(n: int) -> list[bytes]:
    return [f"From: a{i}@x.org\r\nSubject: s {i}\r\nMessage-ID: <m{i}@x>\r\n\r\nbody {i}\r\n".encode()
            for i in range(n)]


@pytest.mark.parametrize("executable", ["", "/bin/false"])
def test_workers_that_cannot_start_leave_the_work_here(
    monkeypatch: pytest.MonkeyPatch, executable: str
) -> None:
    """No interpreter to start ("": OSError at start, no pool), or a process that exits before it is ready
    (/bin/false: PoolBroken, the pool is dropped): either way every chunk is prepared here, in order."""
    raws = _raws(40)
    monkeypatch.setattr(sys, "executable", executable)
    monkeypatch.setattr(import_pool, "PREPARE_WHILE_STARTING", False)  # wait for the workers: they must fail
    got = list(prepared_chunks(iter(raws), 8, 1 << 20, True, 2))
    assert [start for start, _, _ in got] == [0, 8, 16, 24, 32]
    assert [p for _, _, preps in got for p in preps] == [prepare(r, 1 << 20, True) for r in raws]
    assert file_pool.live_workers() == 0
