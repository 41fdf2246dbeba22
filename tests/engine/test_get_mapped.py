"""Point reads from memory-mapped table files (``native_pointget.table_map``, ``lsm_block_fetch_mapped``).

A page of a mapping the kernel cannot supply raises SIGBUS in the reading thread; pointget.c's guard turns
that into a failed read (``IOFailure``), and leaves any other SIGBUS to the handler installed before it.
Both run in a child process, so a guard that failed would stop the child, not the test run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lsmmail.engine import point_reads

pytestmark = pytest.mark.skipif(point_reads._get_state is None,
                                reason="the C point-read path is not available")

ROOT = Path(__file__).resolve().parents[2]

SETUP = """
import os, random, sys
from lsmmail import native_pointget
from lsmmail.engine.db import DB
from lsmmail.engine.errors import IOFailure
from lsmmail.engine.options import Options

d = sys.argv[1]
db = DB.open(d, Options(block_size=1024, min_blob_size=None))
rnd = random.Random(1)
vals = {b"k%05d" % i: rnd.randbytes(300) for i in range(3000)}
for k, v in vals.items():
    db.put(k, v)
db.flush()
assert db.get(b"k00000") == vals[b"k00000"]
(t,) = db._tables.values()
assert native_pointget.table_map(t) is not None
"""


def _child(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(SETUP) + textwrap.dedent(body)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("LSMMAIL_PURE", None)
    return subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=str(ROOT))


def test_a_mapped_page_past_the_end_fails_the_read(tmp_path: Path) -> None:
    # The table file cut short under the mapping: the blocks past the cut raise IOFailure (every time), the
    # ones before it still read, and the process goes on.
    r = _child(tmp_path, """
        (sst,) = [os.path.join(d, n) for n in os.listdir(d) if n.endswith(".sst")]
        os.truncate(sst, 8192)
        failed = 0
        for i in range(2000, 3000, 50):
            for _ in range(2):
                try:
                    db.get(b"k%05d" % i)
                except IOFailure:
                    failed += 1
        assert failed == 40, failed
        assert db.get(b"k00001") == vals[b"k00001"]
        db.close()
        print("ok")
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_a_sigbus_outside_the_guard_still_reaches_the_previous_handler(tmp_path: Path) -> None:
    r = _child(tmp_path, """
        import signal
        os.kill(os.getpid(), signal.SIGBUS)
        print("survived")
    """)
    assert r.returncode == -signal.SIGBUS, (r.returncode, r.stdout, r.stderr)
    assert "survived" not in r.stdout
