"""Bounded load test (slow): 16 concurrent clients for 20 s against a real server process.

Each client loops over a mix: an SMTP delivery (1 in 4), a folder listing, a message get, a search.
Afterwards: zero errors, every acknowledged delivery is listed exactly once and counted in the folder
total. Prints throughput and latency percentiles (copied into docs/service.md)."""

from __future__ import annotations

import smtplib
import threading
import time
from pathlib import Path

import httpx
import pytest

from .helpers import ServerProc, make_users, rfc822

CLIENTS = 16
DURATION = 20.0


@pytest.mark.slow
def test_load_mixed_16_clients(tmp_path: Path) -> None:
    data = tmp_path / "data"
    tokens = make_users(data, *(f"u{i}@example.com" for i in range(4)))
    srv = ServerProc(data).start()
    lat: dict[str, list[float]] = {"deliver": [], "list": [], "get": [], "search": []}
    errors: list[str] = []
    delivered: dict[str, set[str]] = {u: set() for u in tokens}
    lock = threading.Lock()
    stop_at = time.monotonic() + DURATION

    def client(n: int) -> None:
        user = f"u{n % 4}"
        headers = {"Authorization": f"Bearer {tokens[user]}"}
        smtp = smtplib.SMTP("127.0.0.1", srv.smtp_port, timeout=30)
        with httpx.Client(base_url=srv.url, headers=headers, timeout=30) as c:
            i = 0
            last_id = None
            while time.monotonic() < stop_at:
                op = ("deliver", "list", "get", "search")[i % 4]
                t0 = time.perf_counter()
                try:
                    if op == "deliver":
                        subj = f"load {n} {i}"
                        smtp.sendmail("x@remote.test", [f"{user}@example.com"],
                                      rfc822("x@remote.test", f"{user}@example.com", subj,
                                             body=f"load test body {n} {i}", msgid=f"ld{n}.{i}@remote"))
                        with lock:
                            delivered[user].add(subj)
                    elif op == "list":
                        r = c.get("/v1/folders/INBOX/messages", params={"limit": 50})
                        r.raise_for_status()
                        items = r.json()["items"]
                        last_id = items[0]["id"] if items else None
                    elif op == "get" and last_id:
                        c.get(f"/v1/messages/{last_id}").raise_for_status()
                    elif op == "search":
                        c.get("/v1/search", params={"q": f"body {n}", "limit": 20}).raise_for_status()
                except Exception as exc:  # noqa: BLE001 - collected and asserted empty below
                    errors.append(f"{op}: {exc!r}")
                with lock:
                    lat[op].append(time.perf_counter() - t0)
                i += 1
        smtp.quit()

    try:
        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        t_start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(DURATION + 120)
        elapsed = time.monotonic() - t_start
        assert errors == []
        for user, subjects in delivered.items():
            with srv.client(tokens[user]) as c:
                listed: list[str] = []
                cursor = None
                for _ in range(10_000):
                    params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
                    page = c.get("/v1/folders/INBOX/messages", params=params).json()
                    listed += [m["subject"] for m in page["items"]]
                    cursor = page["next_cursor"]
                    if cursor is None:
                        break
                assert sorted(listed) == sorted(subjects)
                inbox = next(f for f in c.get("/v1/folders").json()["folders"] if f["id"] == "INBOX")
                assert inbox["total"] == len(subjects)
        total = sum(len(v) for v in lat.values())
        print(f"\nload: {CLIENTS} clients, {elapsed:.1f}s, {total} ops, {total / elapsed:.0f} ops/s")
        for op, xs in lat.items():
            xs.sort()
            if xs:
                p50, p99 = xs[len(xs) // 2], xs[min(len(xs) - 1, int(len(xs) * 0.99))]
                print(f"  {op:8s} n={len(xs):6d}  {len(xs) / elapsed:7.1f}/s  p50={p50 * 1000:6.1f} ms  "
                      f"p99={p99 * 1000:6.1f} ms")
    finally:
        assert srv.stop() == 0
