"""``lsmmail bench``: db_bench-style workloads on lsmmail, optionally side by side with its peers.

``main(argv)`` is the CLI entry (``lsmmail bench ...`` or ``python -m lsmmail.bench ...``)::

    lsmmail bench mail [--compare] [--messages N] [--json]     (the mail workload: see bench/mail.py)
    lsmmail bench [--num N] [--value-size B] [--batch N] [--threads T] [--sync-num N] [--rounds R]
                  [--workloads a,b,...] [--compare] [--engines a,b] [--dir D] [--json] [--no-progress]
                  [--plot FILE.png]
    lsmmail bench --load RESULT.json [--plot FILE.png]     (table and chart of a run saved with --json)

Each engine runs in its own subprocess (its own peak RSS and I/O counters); with ``--rounds`` > 1 the
engines take turns round by round (the order rotates), and each workload reports the median across
rounds, so drifting machine load hits every engine alike. Peers (``--compare``): RocksDB (rocksdict),
LevelDB (plyvel), LMDB (lmdb), SQLite (stdlib, WAL mode) -- whichever are installed. They are benchmark
extras, never runtime dependencies.

Write amplification = bytes the process wrote to storage (``/proc/self/io`` ``write_bytes``, all threads,
from opening the database to closing it after fillrandom + overwrite) / logical bytes written
(keys + values). Bytes on disk = size of the database directory after that close. Space = bytes on
disk after reopening and compacting everything (``compact_range``; VACUUM for SQLite; LMDB has no such
operation) ÷ the live key + value bytes. Mail-mix write amplification: the same counter over the
``mailmix`` workload (see bench/worker.py). ``fsync p50``: fdatasync latency of the scratch directory's
device, measured by each worker (synced-write rows depend on it more than on the engine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict

from .engines import ENGINES, installed_engines
from .plot import PlotUnavailable, plot_summary, require_matplotlib
from .workloads import Config

WORKLOADS = (
    "fillseq",
    "fillrandom",
    "fillrandom1",
    "fillsync1",
    "fillsyncN",
    "readrandom",
    "readmissing",
    "seekscan",
    "seekscanrev",
    "overwrite",
    "space",
    "deleterandom",
    "mailmix",
)

#: Workloads that report a measurement row of their own instead of an ops/s row.
_NO_RATE = ("space",)

_DESCRIPTION = {
    "fillseq": "sequential keys, batched",
    "fillrandom": "random keys, batched",
    "fillrandom1": "random keys, single puts",
    "fillsync1": "sync=True puts, 1 thread",
    "fillsyncN": "sync=True puts, N threads",
    "readrandom": "get of present keys",
    "readmissing": "get of absent keys",
    "seekscan": "seek + next 50 (scans/s)",
    "seekscanrev": "seek + prev 50 (scans/s)",
    "overwrite": "random overwrites, batched",
    "space": "compact_range after overwrite; disk ÷ live",
    "deleterandom": "random deletes, batched",
    "mailmix": "1 KiB records + 20 KiB bodies (msgs/s)",
}


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = 0.0
    from .. import native

    return (
        f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} cores, {mem:.1f} GiB RAM, "
        f"Python {platform.python_version()}, lsmmail native={'on' if native.AVAILABLE else 'off'}"
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lsmmail bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--num", type=int, default=200_000, help="keys per workload (default 200000)")
    p.add_argument("--value-size", type=int, default=1024, help="value bytes (default 1024)")
    p.add_argument("--batch", type=int, default=1000, help="entries per batch in batched workloads")
    p.add_argument("--threads", type=int, default=8, help="writer threads of fillsyncN (default 8)")
    p.add_argument("--reads", type=int, default=0, help="gets in readrandom/readmissing (default --num)")
    p.add_argument("--seeks", type=int, default=0, help="scans in seekscan(rev) (default --num/20)")
    p.add_argument("--sync-num", type=int, default=2000,
                   help="synced puts per thread of each fillsync run (default 2000)")
    p.add_argument("--rounds", type=int, default=1, help="rounds; engines interleave; medians reported")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated subset")
    p.add_argument("--compare", action="store_true", help="also run every installed peer engine")
    p.add_argument("--engines", default="", help="comma-separated engines (overrides --compare)")
    p.add_argument("--dir", default="", help="scratch directory (default: a temporary directory)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    p.add_argument("--plot", default="", metavar="FILE.png",
                   help="also draw the table as a chart (needs matplotlib: the bench extra)")
    p.add_argument("--load", default="", metavar="FILE.json",
                   help="do not run: print (and --plot) a result saved earlier with --json")
    return p


def main(argv: list[str]) -> int:
    if argv[:1] == ["mail"]:  # ``lsmmail bench mail ...``: the mail workload (lsmmail/bench/mail.py)
        from .mail import main as mail_main

        return mail_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.plot:
        try:
            require_matplotlib()
        except PlotUnavailable as exc:  # fail before a run of many minutes, not after it
            sys.stderr.write(f"{exc}\n")
            return 2
    if args.load:
        return _show_saved(args)
    wanted = [w.strip() for w in args.workloads.split(",") if w.strip()]
    bad = [w for w in wanted if w not in WORKLOADS]
    if bad:
        sys.stderr.write(f"unknown workload(s): {', '.join(bad)}; choose from {', '.join(WORKLOADS)}\n")
        return 2
    if args.engines:
        engines = [e.strip() for e in args.engines.split(",") if e.strip()]
        missing = [e for e in engines if e not in ENGINES or e not in installed_engines()]
        if missing:
            sys.stderr.write(f"engine(s) not available: {', '.join(missing)}\n")
            return 2
    else:
        engines = installed_engines() if args.compare else ["lsmmail"]
    cfg = Config(num=args.num, value_size=args.value_size, batch=args.batch, threads=args.threads,
                 reads=args.reads, seeks=args.seeks, sync_num=args.sync_num, progress=not args.no_progress)
    base = args.dir or tempfile.mkdtemp(prefix="lsmmail-bench-")
    os.makedirs(base, exist_ok=True)
    runs: dict[str, list[dict]] = {e: [] for e in engines}
    try:
        for r in range(args.rounds):
            turn = engines[r % len(engines):] + engines[: r % len(engines)]
            for e in turn:
                if not args.no_progress:
                    sys.stderr.write(f"round {r + 1}/{args.rounds}: {e}\n")
                out = _run_worker(e, base, cfg, wanted)
                if out is None:
                    return 1
                runs[e].append(out)
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)
    summary = summarise(runs, wanted)
    summary["machine"] = machine_line()
    summary["config"] = asdict(cfg)
    summary["config"]["sync_num_per_thread"] = True  # runs saved before the ninth session split it
    summary["order"] = {"engines": engines, "workloads": wanted}
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        sys.stdout.write(format_table(summary, engines, wanted) + "\n")
    if args.plot:
        plot_summary(summary, engines, wanted, args.plot)
        sys.stderr.write(f"chart written to {args.plot}\n")
    return 0


def _show_saved(args: argparse.Namespace) -> int:
    """``--load FILE.json``: the table (and chart) of a run saved with ``--json``, without running."""
    try:
        with open(args.load, encoding="utf-8") as f:
            summary = json.load(f)
        order = summary.get("order") or {}
        engines = order.get("engines") or list(summary["engines"])
        wanted = order.get("workloads") or [w for w in WORKLOADS if any(
            w in e.get("workloads", {}) for e in summary["engines"].values())]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        sys.stderr.write(f"cannot read a saved bench result from {args.load}: {exc}\n")
        return 2
    sys.stdout.write(format_table(summary, engines, wanted) + "\n")
    if args.plot:
        plot_summary(summary, engines, wanted, args.plot)
        sys.stderr.write(f"chart written to {args.plot}\n")
    return 0


def _run_worker(engine: str, base: str, cfg: Config, wanted: list[str]) -> dict | None:
    cfg_json = json.dumps(asdict(cfg))
    cmd = [sys.executable, "-m", "lsmmail.bench.worker", engine, base, cfg_json, ",".join(wanted)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.stderr.write(f"{engine}: worker failed with exit code {proc.returncode}\n")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(runs: dict[str, list[dict]], wanted: list[str]) -> dict:
    """Median of each metric across rounds, per engine."""
    out: dict = {"engines": {}}
    for e, rs in runs.items():
        eng: dict = {"workloads": {}}
        for w in wanted:
            vals = [r["results"][w] for r in rs if w in r["results"]]
            if vals:
                eng["workloads"][w] = {
                    k: statistics.median(v[k] for v in vals)
                    for k in vals[0]
                    if isinstance(vals[0][k], (int, float))
                }
        for k in ("write_amp", "disk_bytes", "logical_bytes", "peak_rss_kib", "space_ratio",
                  "mailmix_write_amp", "fsync_p50_us", "settle_s"):
            vals = [r[k] for r in rs if r.get(k) is not None]
            if vals:
                eng[k] = statistics.median(vals)
        if rs and "write_amp_source" in rs[0]:
            eng["write_amp_source"] = rs[0]["write_amp_source"]
            eng["write_amp_workload"] = rs[0]["write_amp_workload"]
        out["engines"][e] = eng
    return out


def _fmt_rate(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def _sync_ratio(d: dict) -> str:
    w = d["workloads"]
    a = w.get("fillsyncN", {}).get("ops_per_sec")
    b = w.get("fillsync1", {}).get("ops_per_sec")
    return f"{a / b:.2f}x" if a and b else "-"


def format_table(summary: dict, engines: list[str], wanted: list[str]) -> str:
    """ops/s per engine; for each peer also lsmmail's ops/s divided by the peer's (> 1: lsmmail faster)."""
    E = summary["engines"]
    peers = [e for e in engines if e != "lsmmail"]
    head = ["workload", *engines] + [f"lsm/{p}" for p in peers if "lsmmail" in engines]
    rows = [head]
    for w in wanted:
        if w in _NO_RATE:
            continue
        row = [w]
        rates = {e: E[e]["workloads"].get(w, {}).get("ops_per_sec") for e in engines}
        row += [_fmt_rate(rates[e]) if rates[e] else "-" for e in engines]
        if "lsmmail" in engines:
            for p in peers:
                a, b = rates.get("lsmmail"), rates.get(p)
                row.append(f"{a / b:.2f}x" if a and b else "-")
        rows.append(row)
    extra = [
        ("write amp", lambda d: f"{d['write_amp']:.2f}" if d.get("write_amp") is not None else "-"),
        ("disk MiB", lambda d: f"{d['disk_bytes'] / 2**20:.1f}" if "disk_bytes" in d else "-"),
        ("space ÷ live", lambda d: f"{d['space_ratio']:.2f}" if d.get("space_ratio") is not None else "-"),
        ("mailmix write amp",
         lambda d: f"{d['mailmix_write_amp']:.2f}" if d.get("mailmix_write_amp") is not None else "-"),
        ("syncN ÷ sync1", lambda d: _sync_ratio(d)),
        ("fsync p50 µs", lambda d: f"{d['fsync_p50_us']:.0f}" if d.get("fsync_p50_us") is not None else "-"),
        ("settle s", lambda d: f"{d['settle_s']:.1f}" if d.get("settle_s") is not None else "-"),
        ("peak RSS MiB", lambda d: f"{d['peak_rss_kib'] / 1024:.0f}" if "peak_rss_kib" in d else "-"),
    ]
    for name, fn in extra:
        rows.append([name, *[fn(E[e]) for e in engines]] + [""] * (len(head) - 1 - len(engines)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(c.rjust(widths[i]) if i else c.ljust(widths[i]) for i, c in enumerate(r)) for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    cfg = summary.get("config", {})
    notes = [
        "",
        f"machine: {summary.get('machine', '')}",
        f"num={cfg.get('num')} value_size={cfg.get('value_size')} batch={cfg.get('batch')} "
        f"sync_num={cfg.get('sync_num')}{' per thread' if cfg.get('sync_num_per_thread') else ''} "
        f"threads(fillsyncN)={cfg.get('threads')}; ops/s (seek rows: scans/s)",
        "write amp = /proc/self/io write_bytes (all threads) from open to close over fillrandom+overwrite "
        "÷ logical key+value bytes",
    ]
    return "\n".join(lines + notes)
