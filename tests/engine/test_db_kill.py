"""Real crashes: a writer subprocess (``kill_writer.py``) on the real file system, killed with SIGKILL
at random moments — during start-up and recovery, between writes, in the middle of a write, a flush or a
compaction on its background threads.

The writer prints each operation's index after the DB acknowledged it. Its operations are a pure function
of (cycle, index), so the test rebuilds the model exactly. A process kill loses no acknowledged write
(even ``sync=False`` ones: the OS has the bytes), so after each kill the DB must equal the model after
operations ``0..M`` of that cycle with ``M`` = the last printed index, or one more (a write that returned
but was not yet printed). That checks both directions: every acknowledged write is present with its exact
value, and nothing is invented.

Each cycle's check opens a copy of the directory, so the next writer recovers from exactly what the killed
one left behind.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kill_writer import kill_op, options

from lsmmail.engine.db import DB

WRITER = Path(__file__).with_name("kill_writer.py")
REPO = Path(__file__).resolve().parents[2]


def apply_op(model: dict[bytes, bytes], cycle: int, i: int) -> None:
    kind, key, val, _ = kill_op(cycle, i)
    if kind == "put":
        model[key] = val
    elif kind == "delete":
        model.pop(key, None)
    else:
        for k in [k for k in model if key <= k < val]:
            del model[k]


def run_kill_cycles(tmp_path: Path, cycles: int, seed: int) -> None:
    rng = random.Random(seed)
    dbdir = tmp_path / "db"
    dbdir.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    model: dict[bytes, bytes] = {}
    total_acked = 0
    for cycle in range(cycles):
        proc = subprocess.Popen([sys.executable, str(WRITER), str(dbdir), str(cycle)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        # Mostly while writing; sometimes during start-up and recovery. "While writing" waits for a random
        # number of acknowledgements rather than a fixed time, so the kills land among writes however slow
        # the machine (or its fsyncs) is at the moment; then a little more random time.
        head: list[bytes] = []
        if rng.random() < 0.2:
            time.sleep(rng.uniform(0.0, 0.12))
        else:
            assert proc.stdout is not None
            want = 1 + rng.randint(20, 400)  # "ready" + that many acknowledged operations
            while len(head) < want:
                line = proc.stdout.readline()
                if not line:  # the writer died by itself: reported below
                    break
                head.append(line)
            time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate()
        out = b"".join(head) + out
        assert proc.returncode == -signal.SIGKILL, f"writer exited by itself: {err.decode()[-2000:]}"
        lines = out.decode().split("\n")[:-1]  # complete lines only
        ready = bool(lines) and lines[0] == "ready"
        last = int(lines[-1]) if ready and len(lines) > 1 else -1
        total_acked += last + 1

        check = tmp_path / f"check{cycle}"
        shutil.copytree(dbdir, check)
        with DB.open(str(check), options(str(check))) as db:
            got = dict(db.scan())
            db.verify()
        shutil.rmtree(check)

        for i in range(last + 1):
            apply_op(model, cycle, i)
        if got != model and ready:
            apply_op(model, cycle, last + 1)  # returned, killed before it was printed
        if got != model:
            missing = sorted(k for k in model if got.get(k) != model[k])[:5]
            extra = sorted(k for k in got if k not in model)[:5]
            raise AssertionError(f"cycle {cycle}: after kill (last acknowledged op {last}) the DB differs "
                                 f"from the model: wrong/missing {missing}, invented {extra}")
    # The kills must have landed among writes most of the time, or this test tests little.
    assert total_acked > cycles * 20


def test_sigkill_writer(tmp_path: Path) -> None:
    run_kill_cycles(tmp_path, 50, seed=1)


@pytest.mark.slow
def test_sigkill_writer_long(tmp_path: Path) -> None:
    run_kill_cycles(tmp_path, 200, seed=2)
