"""Real kill -9 of a process delivering mail: after reopen, every acknowledged delivery is present and
byte-exact, and no partial message is visible (listed <=> gettable <=> counted)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lsmmail.mail import MailStore
from lsmmail.mail.formats import write_mbox_message

from .helpers import check_attachments, check_user, read_mbox_file

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("crash_worker.py")


def sample_mbox(tmp_path: Path) -> tuple[Path, list[bytes]]:
    sa = read_mbox_file("spamassassin.mbox.xz")
    raws = sa[:400:2] + read_mbox_file("usrp-users-attachments.mbox.xz")[:40] + sa[4150:4350:2]
    path = tmp_path / "src.mbox"
    with open(path, "wb") as f:
        for r in raws:
            write_mbox_message(f, r, "x@y", 0)
    return path, raws


def run_cycles(tmp_path: Path, cycles: int, seed: int) -> None:
    rng = random.Random(seed)
    src, raws = sample_mbox(tmp_path)
    db = tmp_path / "db"
    acked: dict[int, str] = {}
    env = dict(os.environ, PYTHONPATH=str(REPO))
    killed = 0
    for cycle in range(cycles):
        mode = "deliver" if cycle % 3 else "import"
        # Resume a little before the last acknowledged message (re-deliveries must dedup to the same id);
        # start over once everything is in.
        start = max(acked) - 3 if acked else 0
        start = 0 if start >= len(raws) - 10 else max(start, 0)
        proc = subprocess.Popen([sys.executable, str(WORKER), str(db), str(src), mode, str(start)],
                                cwd=REPO, env=env, bufsize=0,  # unbuffered: communicate() sees the rest
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # The random kill counts from the moment the user exists: on a loaded machine the start-up alone
        # can take longer than the sleep, and a store without the user tests nothing.
        ready = proc.stdout.readline() if proc.stdout is not None else b""
        if ready != b"READY\n":
            proc.kill()
            _, err = proc.communicate()
            raise AssertionError(f"worker did not start: {ready!r} {err.decode()}")
        time.sleep(rng.uniform(0.2, 2.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        out, err = proc.communicate()
        assert proc.returncode in (0, -signal.SIGKILL), err.decode()
        for line in out.decode().splitlines():
            if line.startswith("ACK "):
                _, i, mid = line.split()
                if mid != "None":
                    assert acked.setdefault(int(i), mid) == mid  # redelivery after a crash: same id
        with MailStore.open(db) as store:
            for i, mid in acked.items():
                assert store.get_raw("crash", mid) == raws[i]
            check_user(store, "crash")
            check_attachments(store)
    assert killed == cycles and acked


def test_kill9_during_delivery(tmp_path: Path) -> None:
    run_cycles(tmp_path, cycles=4, seed=1)


@pytest.mark.slow
def test_kill9_during_delivery_many(tmp_path: Path) -> None:
    run_cycles(tmp_path, cycles=40, seed=2)
