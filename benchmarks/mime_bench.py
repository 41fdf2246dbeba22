"""Parse time per message of ``mime.parse`` (fast path + fallback) against ``mime.parse_reference``.

    python benchmarks/mime_bench.py [--corpus DIR] [--rounds R] [--limit N]

For each corpus file: messages, how many the fast path declines (they take the reference parser), and the
mean time per message of each parser (the best of ``--rounds`` passes over the file, parsers alternating
pass by pass so that drifting load on a shared machine hits both alike). Messages are read into memory
first; only the parse calls are timed. Also checks that both parsers agree on every message parsed.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lsmmail.mail import mime  # noqa: E402
from lsmmail.mail.formats import open_maybe_xz, read_maildir, read_mbox  # noqa: E402

FILES = ("spamassassin.mbox.xz", "usrp-users.mbox.xz", "usrp-users-attachments.mbox.xz", "edge-cases.tar.gz")


def read_file(corpus: Path, name: str) -> list[bytes]:
    if name.endswith(".tar.gz"):
        with tempfile.TemporaryDirectory() as d, tarfile.open(corpus / name) as tf:
            tf.extractall(d, filter="data")
            return [raw for _, raw in read_maildir(Path(d) / "edge-cases")]
    with open_maybe_xz(corpus / name) as f:
        return list(read_mbox(f))


def time_pass(fn: Callable[[bytes], object], msgs: list[bytes]) -> float:
    t0 = time.perf_counter()
    for raw in msgs:
        fn(raw)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, default=(ROOT / ".." / "shared" / "corpus").resolve())
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--limit", type=int, default=0, help="first N messages per file (0: all)")
    args = ap.parse_args(argv)
    print(f"# {platform.system()} {platform.release()}, {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    print(f"{'file':34} {'msgs':>6} {'KB/msg':>7} {'declined':>8} {'reference ms':>12} {'parse ms':>9} "
          f"{'speedup':>7}")
    totals = [0, 0, 0.0, 0.0, 0]
    for name in FILES:
        msgs = read_file(args.corpus, name)
        if args.limit:
            msgs = msgs[: args.limit]
        declined = sum(1 for raw in msgs if mime.parse_fast(raw) is None)
        mismatches = sum(1 for raw in msgs if mime.parse(raw) != mime.parse_reference(raw))
        if mismatches:
            raise SystemExit(f"{name}: {mismatches} messages differ between parse and parse_reference")
        ref = fast = float("inf")
        for _ in range(args.rounds):
            ref = min(ref, time_pass(mime.parse_reference, msgs))
            fast = min(fast, time_pass(mime.parse, msgs))
        size = sum(map(len, msgs))
        print(
            f"{name:34} {len(msgs):>6} {size / len(msgs) / 1000:>7.1f} {declined:>8} "
            f"{ref / len(msgs) * 1e3:>12.3f} {fast / len(msgs) * 1e3:>9.3f} {ref / fast:>6.1f}x"
        )
        totals[0] += len(msgs)
        totals[1] += declined
        totals[2] += ref
        totals[3] += fast
        totals[4] += size
    n = totals[0]
    print(
        f"{'all':34} {n:>6} {totals[4] / n / 1000:>7.1f} {totals[1]:>8} {totals[2] / n * 1e3:>12.3f} "
        f"{totals[3] / n * 1e3:>9.3f} {totals[2] / totals[3]:>6.1f}x"
    )


if __name__ == "__main__":
    main()
