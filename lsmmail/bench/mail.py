"""``lsmmail bench mail``: the mail workload on the corpus, MailStore vs an SQLite+FTS5 store (and tantivy).

    lsmmail bench mail [--compare] [--messages N] [--attachment-messages N] [--rounds R] [--json]

Sample (deterministic): the first ``--messages`` (3,000) messages of ``usrp-users.mbox.xz`` plus the first
``--attachment-messages`` (default: all) of ``usrp-users-attachments.mbox.xz``, streamed through lzma. Every
``len/--single``-th message is held back for the single-delivery row; the rest are bulk-imported first.

Each store runs in its own subprocess (its own peak RSS and ``/proc/self/io``); with ``--rounds`` > 1 the
stores take turns round by round (the order rotates) and every metric is the median across rounds, so
drifting load on a shared machine hits every store alike. Stores:

* ``lsmmail``: ``MailStore`` with default options (``sync=True``: every write fdatasync'ed).
* ``sqlite`` (``--compare``): ``benchmarks/mail_sqlite.py`` (WAL, ``synchronous=FULL``, a transaction per
  delivery or per 64-message import batch, FTS5). Needs the repository checkout (it is not packaged).
* ``tantivy`` (``--compare``, if ``import tantivy`` works): a search-only peer that indexes the same
  fields; only the ids-only search rows are measured for it.

Sequence per store: bulk import (durable, batches of 64) -> single durable deliveries -> list first page,
next pages (walking the folder), get_message, mark_read (durable), unread first page -> searches (one
word, ``from:`` a sender, a body-only word, two words AND; newest 50), each kind twice: ``(ids)`` returns
the page's ids only (``MailStore.search_ids``, the SQLite store's ``search_ids``, tantivy's hits: the
like-for-like row for a search-only index) and ``(page)`` the page of 50 summaries (mail stores only) ->
close -> bytes on disk. Before the read rows each store settles (``settle``: lsmmail waits for
``DB.wait_until_idle``, i.e. the import's flushes and compactions; SQLite has no background work), so
the read rows are steady-state reads; reads that race a compaction are slower (docs/benchmarks.md).
When both mail stores run, a paired stage follows (bench/mail_paired.py: both
stores in one process, single deliveries and ``mark_read`` call by call) for the ``paired`` rows: the
durable rows are mostly one fdatasync, whose latency drifts too much on a shared device for stores
measured one after the other.
Latency rows report p50 and p99 of single calls; the ratio column is peer time / lsmmail time (or lsmmail
rate / peer rate): > 1 means lsmmail is faster.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .mail_stores import STORES, installed_stores
from .workloads import dir_bytes

MAIN_MBOX = "usrp-users.mbox.xz"
ATTACHMENT_MBOX = "usrp-users-attachments.mbox.xz"
SEARCH_KINDS = ("word", "from", "body", "and")
#: Row order of the table: (metric, label).
ROWS = (
    ("import", "bulk import (msgs/s, durable, 64/batch)"),
    ("import_1proc", "bulk import, one process (msgs/s)"),
    ("deliver", "single deliver (msgs/s, durable)"),
    ("deliver_paired", "single deliver, paired (msgs/s, durable)"),
    ("list_first", "list first page (50)"),
    ("list_next", "list next page (50)"),
    ("get", "get_message"),
    ("mark_read", "mark_read (durable)"),
    ("mark_read_paired", "mark_read, paired (durable)"),
    ("unread", "unread first page (50)"),
    ("search_ids_word", "search one word (ids)"),
    ("search_ids_from", "search from:sender (ids)"),
    ("search_ids_body", "search body word (ids)"),
    ("search_ids_and", "search two words AND (ids)"),
    ("search_word", "search one word (page)"),
    ("search_from", "search from:sender (page)"),
    ("search_body", "search body word (page)"),
    ("search_and", "search two words AND (page)"),
)
RATE_ROWS = ("import", "import_1proc", "deliver", "deliver_paired")
#: Rows measured by the paired stage (bench/mail_paired.py: both stores in one process, call by call).
PAIRED_ROWS = ("deliver_paired", "mark_read_paired")
SEARCH_ONLY = ("tantivy",)
_WORD = re.compile(r"[a-z]{4,12}")


@dataclass
class MailConfig:
    messages: int = 3000
    attachment_messages: int = -1  # -1: all of them
    single: int = 200  # held back for the single-delivery row
    reads: int = 400  # get_message calls
    marks: int = 200  # mark_read calls
    page_repeats: int = 200  # first-page calls (list and unread)
    next_pages: int = 200  # next-page calls (the folder is walked, restarting at the top)
    queries: int = 40  # distinct queries per search kind
    query_repeats: int = 3
    limit: int = 50
    seed: int = 20240601
    corpus: str = ""
    search_queries: dict = field(default_factory=dict)  # kind -> list of args; filled by the parent


def default_corpus() -> Path:
    """``../shared/corpus`` relative to the repository root (this file is lsmmail/bench/mail.py)."""
    return (Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus").resolve()


def load_sample(cfg: MailConfig) -> list[bytes]:
    """The deterministic corpus sample (streamed from the .xz files; nothing is written to disk)."""
    from lsmmail.mail.formats import open_maybe_xz, read_mbox

    corpus = Path(cfg.corpus) if cfg.corpus else default_corpus()
    with open_maybe_xz(corpus / MAIN_MBOX) as f:
        raws = list(itertools.islice(read_mbox(f), cfg.messages))
    if cfg.attachment_messages != 0:
        n = None if cfg.attachment_messages < 0 else cfg.attachment_messages
        with open_maybe_xz(corpus / ATTACHMENT_MBOX) as f:
            raws += list(itertools.islice(read_mbox(f), n))
    return raws


def split_sample(raws: list[bytes], single: int) -> tuple[list[bytes], list[bytes]]:
    """(bulk, single): every k-th message is held back for single deliveries, spread over the sample."""
    single = max(1, min(single, len(raws) // 2))
    step = len(raws) // single
    held = set(range(step - 1, step * single, step))
    return [r for i, r in enumerate(raws) if i not in held], [raws[i] for i in sorted(held)]


def pick_queries(raws: list[bytes], cfg: MailConfig) -> dict[str, list[list[str]]]:
    """Deterministic queries drawn from the sample: ASCII words of 4-12 letters (every tokenizer in the
    comparison cuts them the same way). word: in subjects, in 1-10% of messages; body: never in a subject,
    in 0.2-2%; from: senders of >= 3 messages; and: two words of 2-20% df that co-occur in a message."""
    from lsmmail.mail import mime

    rnd = random.Random(cfg.seed)
    subj_df: Counter[str] = Counter()
    body_df: Counter[str] = Counter()
    senders: Counter[str] = Counter()
    docs: list[set[str]] = []
    for raw in raws:
        p = mime.parse(raw)
        sw = set(_WORD.findall(p.subject.lower()))
        bw = set(_WORD.findall((p.text + " " + mime.html_to_text(p.html)).lower()))
        subj_df.update(sw)
        body_df.update(bw)
        docs.append(sw | bw)
        for _, addr in p.from_[:1]:
            if "@" in addr and '"' not in addr:
                senders[addr.lower()] += 1
    n = max(1, len(raws))
    all_df = Counter[str]()
    for d in docs:
        all_df.update(d)

    def sample(xs: list, k: int) -> list:
        xs = sorted(xs)
        return rnd.sample(xs, min(k, len(xs)))

    k = cfg.queries
    word = sample([w for w in subj_df if 0.01 <= all_df[w] / n <= 0.10], k)
    body = sample([w for w, c in body_df.items() if w not in subj_df and 0.002 <= c / n <= 0.02], k)
    frm = sample([a for a, c in senders.items() if c >= 3], k)
    common = {w for w, c in all_df.items() if 0.02 <= c / n <= 0.20}
    pairs: set[tuple[str, str]] = set()
    for d in rnd.sample(docs, len(docs)):
        cand = sorted(d & common)
        if len(cand) >= 2:
            a, b = rnd.sample(cand, 2)
            pairs.add((min(a, b), max(a, b)))
        if len(pairs) >= k:
            break
    return {
        "word": [[w] for w in word], "body": [[w] for w in body], "from": [[a] for a in frm],
        "and": [list(p) for p in sorted(pairs)],
    }


# ---- one store's run (in its own process) -----------------------------------------------------------------


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _latencies(fn: Callable[[Any], Any], args: list[Any]) -> dict[str, float]:
    lat = []
    clock = time.perf_counter
    for a in args:
        t0 = clock()
        fn(a)
        lat.append(clock() - t0)
    total = sum(lat)
    return {"n": len(lat), "p50_us": _pct(lat, 0.5) * 1e6, "p99_us": _pct(lat, 0.99) * 1e6,
            "ops_per_sec": len(lat) / total if total > 0 else 0.0}


def run_store(name: str, base: str, cfg: MailConfig) -> dict:
    """Run the whole sequence on store ``name`` in directory ``base``/``name`` and return its metrics."""
    from .worker import write_bytes

    raws = load_sample(cfg)
    bulk, single = split_sample(raws, cfg.single)
    path = os.path.join(base, f"mail-{name}")
    shutil.rmtree(path, ignore_errors=True)
    out: dict[str, Any] = {"store": name, "messages": len(raws), "results": {}}
    res = out["results"]
    io0, _ = write_bytes()
    st = STORES[name](path)
    st.create_user()
    t0 = time.perf_counter()
    ids = st.bulk(raws if st.search_only else bulk)  # a search-only peer indexes the single ones too
    dt = time.perf_counter() - t0
    if not st.search_only:
        res["import"] = {"n": len(bulk), "seconds": dt, "ops_per_sec": len(bulk) / dt}
        res["deliver"] = _latencies(lambda r: ids.append(st.deliver(r)), single)
        io1, _ = write_bytes()
        logical = sum(len(r) for r in raws)
        out["write_amp"] = (io1 - io0) / logical if io0 >= 0 else None
        t0 = time.perf_counter()
        st.settle()  # steady state: the reads below do not race the import's flushes and compactions
        out["settle_seconds"] = time.perf_counter() - t0
        rnd = random.Random(cfg.seed)
        limit = cfg.limit
        res["list_first"] = _latencies(lambda _: st.list(None, False, limit), range(cfg.page_repeats))
        cursors: list[Any] = []
        cur = None
        while len(cursors) < cfg.next_pages:  # the cursors of a folder walk, restarted at the top
            _, cur = st.list(cur, False, limit)
            if cur is None:
                if not cursors:
                    break
                continue
            cursors.append(cur)
        if cursors:  # none when the whole folder fits on one page
            res["list_next"] = _latencies(lambda c: st.list(c, False, limit), cursors)
        res["get"] = _latencies(st.get, [rnd.choice(ids) for _ in range(cfg.reads)])
        marks = rnd.sample(ids, min(cfg.marks, len(ids)))
        res["mark_read"] = _latencies(st.mark_read, marks)
        res["unread"] = _latencies(lambda _: st.list(None, True, limit), range(cfg.page_repeats))
    hits: dict[str, int] = {}  # per kind, ids calls (every store)
    page_hits: dict[str, int] = {}  # per kind, page calls (mail stores)
    calls = [("search_ids", st.search_ids)] + ([] if st.search_only else [("search", st.search)])
    for kind in SEARCH_KINDS:
        qs = [st.query(kind, a) for a in cfg.search_queries.get(kind, [])]
        if not qs:
            continue
        for row, call in calls:
            count = [0]

            def one(q: Any, count: list[int] = count, call: Callable[[Any, int], int] = call) -> None:
                count[0] += call(q, cfg.limit)

            res[f"{row}_{kind}"] = _latencies(one, qs * cfg.query_repeats)
            (page_hits if row == "search" else hits)[kind] = count[0] // cfg.query_repeats
    out["search_hits"] = hits
    if page_hits:
        out["search_page_hits"] = page_hits
    out.update(st.index_bytes())
    st.close()
    out["disk_bytes"] = dir_bytes(path)
    out["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if name == "lsmmail" and bulk:
        # The same import without worker processes (SQLite's is one process), into a second fresh store,
        # last: after the write-amplification and peak-RSS readings, which it would otherwise inflate.
        from lsmmail.mail.import_pool import auto_workers

        out["import_processes"] = auto_workers(len(bulk))
        dt1, held = st.bulk_one_process(path + "-1p", bulk)
        res["import_1proc"] = {"n": len(bulk), "seconds": dt1, "ops_per_sec": len(bulk) / dt1, "stored": held}
    shutil.rmtree(path, ignore_errors=True)
    return out


# ---- the parent: rounds, medians, table -------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lsmmail bench mail", description=__doc__.split("\n\n")[0])
    d = MailConfig()
    p.add_argument("--messages", type=int, default=d.messages, help=f"from {MAIN_MBOX} (default 3000)")
    p.add_argument("--attachment-messages", type=int, default=-1, help=f"from {ATTACHMENT_MBOX} (-1: all)")
    p.add_argument("--single", type=int, default=d.single, help="single durable deliveries (default 200)")
    p.add_argument("--reads", type=int, default=d.reads, help="get_message calls (default 400)")
    p.add_argument("--marks", type=int, default=d.marks, help="mark_read calls (default 200)")
    p.add_argument("--pages", type=int, default=d.page_repeats, help="list/unread page calls (default 200)")
    p.add_argument("--queries", type=int, default=d.queries, help="queries per search kind (default 40)")
    p.add_argument("--limit", type=int, default=d.limit, help="page size of lists and searches (default 50)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; stores interleave; medians reported")
    p.add_argument("--compare", action="store_true", help="also run SQLite+FTS5 and tantivy (if installed)")
    p.add_argument("--stores", default="", help="comma-separated stores (overrides --compare)")
    p.add_argument("--corpus", default="", help="corpus directory (default ../shared/corpus of the repo)")
    p.add_argument("--dir", default="", help="scratch directory (default: a temporary directory)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    return p


def main(argv: list[str]) -> int:
    if argv[:1] == ["--worker"]:
        name, base, cfg_json = argv[1:4]
        sys.stdout.write(json.dumps(run_store(name, base, MailConfig(**json.loads(cfg_json)))) + "\n")
        return 0
    args = _parser().parse_args(argv)
    available = installed_stores()
    if args.stores:
        stores = [s.strip() for s in args.stores.split(",") if s.strip()]
        missing = [s for s in stores if s not in available]
        if missing:
            sys.stderr.write(f"store(s) not available: {', '.join(missing)}\n")
            return 2
    else:
        stores = available if args.compare else ["lsmmail"]
    cfg = MailConfig(messages=args.messages, attachment_messages=args.attachment_messages, single=args.single,
                     reads=args.reads, marks=args.marks, page_repeats=args.pages, next_pages=args.pages,
                     queries=args.queries, limit=args.limit, corpus=args.corpus)
    corpus = Path(cfg.corpus) if cfg.corpus else default_corpus()
    if not (corpus / MAIN_MBOX).exists():
        sys.stderr.write(f"corpus not found: {corpus / MAIN_MBOX}\n")
        return 2
    cfg.search_queries = pick_queries(load_sample(cfg), cfg)
    base = args.dir or tempfile.mkdtemp(prefix="lsmmail-bench-mail-")
    os.makedirs(base, exist_ok=True)
    runs: dict[str, list[dict]] = {s: [] for s in stores}
    try:
        for r in range(args.rounds):
            for s in stores[r % len(stores):] + stores[: r % len(stores)]:
                if not args.no_progress:
                    sys.stderr.write(f"mail round {r + 1}/{args.rounds}: {s}\n")
                cmd = [sys.executable, "-m", "lsmmail.bench.mail", "--worker", s, base,
                       json.dumps(asdict(cfg))]
                proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
                if proc.returncode != 0:
                    sys.stderr.write(f"{s}: mail worker failed with exit code {proc.returncode}\n")
                    return 1
                runs[s].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        paired = _run_paired(base, cfg, stores, args.no_progress)
        if paired is False:
            return 1
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)
    from . import machine_line

    summary = summarise(runs)
    for name, rows in (paired or {}).items():
        summary["stores"][name]["results"].update(rows)
    summary["machine"] = machine_line()
    summary["config"] = {k: v for k, v in asdict(cfg).items() if k != "search_queries"}
    summary["rounds"] = args.rounds
    summary["queries"] = cfg.search_queries
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        sys.stdout.write(format_table(summary, stores) + "\n")
    return 0


def _run_paired(base: str, cfg: MailConfig, stores: list[str], quiet: bool) -> dict | None | bool:
    """The paired durable rows (bench/mail_paired.py) when both mail stores run; False if it failed."""
    if not {"lsmmail", "sqlite"} <= set(stores):
        return None
    from .mail_paired import command

    if not quiet:
        sys.stderr.write("mail paired stage: lsmmail and sqlite call by call\n")
    proc = subprocess.run(command(base, cfg), stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.stderr.write(f"paired stage failed with exit code {proc.returncode}\n")
        return False
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(runs: dict[str, list[dict]]) -> dict:
    """Median of every metric across rounds, per store."""
    out: dict = {"stores": {}}
    for s, rs in runs.items():
        st: dict = {"results": {}}
        for row, _ in ROWS:
            vals = [r["results"][row] for r in rs if row in r["results"]]
            if vals:
                st["results"][row] = {k: statistics.median(v[k] for v in vals) for k in vals[0]}
        for k in ("messages", "write_amp", "disk_bytes", "index_logical", "index_pages", "peak_rss_kib"):
            vals = [r[k] for r in rs if r.get(k) is not None]
            if vals:
                st[k] = statistics.median(vals)
        if rs:
            if "import_processes" in rs[0]:
                st["import_processes"] = rs[0]["import_processes"]
            st["search_hits"] = rs[0].get("search_hits", {})
            if "search_page_hits" in rs[0]:
                st["search_page_hits"] = rs[0]["search_page_hits"]
        out["stores"][s] = st
    return out


def _rate(x: float) -> str:
    return f"{x / 1e3:.2f}k" if x >= 1e3 else f"{x:.0f}"


def _us(x: float) -> str:
    return f"{x / 1e3:.1f}ms" if x >= 1e4 else f"{x:.0f}"


def format_table(summary: dict, stores: list[str]) -> str:
    """One row per metric; latency cells are ``p50 / p99`` in µs; ratio = peer / lsmmail time (> 1:
    lsmmail faster), or lsmmail / peer rate for the msgs/s rows."""
    S = summary["stores"]
    peers = [s for s in stores if s != "lsmmail"] if "lsmmail" in stores else []
    rows = [["metric", *stores, *[f"lsm vs {p} (p50)" for p in peers]]]
    for row, label in ROWS:
        line = [label]
        for s in stores:
            m = S[s]["results"].get(row)
            if m is None:
                line.append("-")
            elif row in RATE_ROWS:
                extra = f" (p50 {_us(m['p50_us'])} p99 {_us(m['p99_us'])})" if "p50_us" in m else ""
                line.append(_rate(m["ops_per_sec"]) + extra)
            else:
                line.append(f"{_us(m['p50_us'])} / {_us(m['p99_us'])}")
        for p in peers:
            a, b = S["lsmmail"]["results"].get(row), S[p]["results"].get(row)
            if row == "import_1proc" and b is None:  # a single-process peer: its import row
                b = S[p]["results"].get("import")
            if a is None or b is None:
                line.append("-")
            elif row in RATE_ROWS:
                line.append(f"{a['ops_per_sec'] / b['ops_per_sec']:.2f}x")
            else:
                line.append(f"{b['p50_us'] / a['p50_us']:.2f}x")
        rows.append(line)

    def per_msg(key: str) -> Callable[[dict], str]:
        return lambda d: f"{d[key] / d['messages']:,.0f}" if d.get(key) is not None else "-"

    extra: list[tuple[str, Callable[[dict], str]]] = [
        ("disk bytes / message", per_msg("disk_bytes")),
        ("search index bytes / msg (logical)", per_msg("index_logical")),
        ("search index bytes / msg (pages)", per_msg("index_pages")),
        ("write amp (import + deliver)", lambda d: f"{d['write_amp']:.2f}" if d.get("write_amp") else "-"),
        ("peak RSS MiB (incl. sample)", lambda d: f"{d['peak_rss_kib'] / 1024:.0f}" if "peak_rss_kib" in d
         else "-"),
    ]
    for label, fn in extra:
        rows.append([label, *[fn(S[s]) for s in stores], *[""] * len(peers)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(widths[i]) if i else c.ljust(widths[i]) for i, c in enumerate(r))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    cfg = summary.get("config", {})
    hits = {s: S[s].get("search_hits", {}) for s in stores}
    lines += [
        "",
        f"machine: {summary.get('machine', '')}",
        f"sample: {next(iter(S.values())).get('messages', '?'):.0f} messages ({cfg.get('messages')} of "
        f"{MAIN_MBOX} + {'all' if cfg.get('attachment_messages', -1) < 0 else cfg.get('attachment_messages')}"
        f" of {ATTACHMENT_MBOX}); {cfg.get('single')} single deliveries; rounds={summary.get('rounds')} "
        "(medians); latencies p50 / p99 in µs",
        f"search hits per pass (sum over queries, capped at {cfg.get('limit')} each): {hits}",
        f"lsmmail bulk import processes (automatic, incl. the main one): "
        f"{S.get('lsmmail', {}).get('import_processes', '-')}; the 'one process' row imports the same "
        "messages into a second fresh store with workers=1",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
