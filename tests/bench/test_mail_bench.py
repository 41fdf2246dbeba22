"""``lsmmail bench mail`` end to end on ~50 corpus messages: every store runs, numbers are sane."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lsmmail.bench import main as bench_main
from lsmmail.bench.mail import ROWS, SEARCH_KINDS, format_table, installed_stores

CORPUS = (Path(__file__).parents[2] / ".." / "shared" / "corpus").resolve()

pytestmark = pytest.mark.skipif(not (CORPUS / "usrp-users.mbox.xz").exists(),
                                reason="corpus ../shared/corpus not present")


def test_mail_bench_compares_stores_on_corpus(capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    argv = ["mail", "--compare", "--messages", "40", "--attachment-messages", "10", "--single", "8",
            "--reads", "20", "--marks", "10", "--pages", "10", "--queries", "4", "--limit", "10",
            "--rounds", "1",
            "--json", "--no-progress", "--dir", str(tmp_path), "--corpus", str(CORPUS)]
    assert bench_main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    stores = out["stores"]
    assert {"lsmmail", "sqlite"} <= set(stores)
    for name in ("lsmmail", "sqlite"):
        st = stores[name]
        assert st["messages"] == 50
        res = st["results"]
        # the one-process import row is lsmmail's (its default import may use worker processes)
        assert set(res) == {row for row, _ in ROWS} - ({"import_1proc"} if name == "sqlite" else set())
        assert res["import"]["n"] == 42 and res["deliver"]["n"] == 8
        if name == "lsmmail":  # a real import, not a lazy generator left unconsumed: the store holds them
            assert res["import_1proc"]["stored"] == 42
        assert res["mark_read"]["n"] == 10 and res["get"]["n"] == 20
        # the paired stage: both stores in one process, call by call, the same calls
        assert res["mark_read_paired"]["n"] == 10 and res["deliver_paired"]["n"] == 8
        for row, m in res.items():
            assert m["ops_per_sec"] > 0, (name, row)
            if "p50_us" in m:
                assert 0 < m["p50_us"] <= m["p99_us"], (name, row)
        # every message body is stored: more than 1 KB per corpus message on disk, less than 1 MB
        assert 1_000 < st["disk_bytes"] / st["messages"] < 1_000_000
        assert st["index_logical"] > 0
    # the stores index the same text: the same number of hits per query kind
    hits = {name: stores[name]["search_hits"] for name in stores}
    assert set(hits["lsmmail"]) == set(SEARCH_KINDS)
    assert sum(hits["lsmmail"].values()) > 0
    for name in stores:
        assert hits[name] == hits["lsmmail"], hits
        if name != "tantivy":  # a page of summaries holds the same messages as the ids-only page
            assert stores[name]["search_page_hits"] == hits[name]
    if "tantivy" in installed_stores():
        assert set(stores["tantivy"]["results"]) == {f"search_ids_{k}" for k in SEARCH_KINDS}
    table = format_table(out, list(stores))
    assert "bulk import" in table and "lsm vs sqlite" in table and "search from:sender" in table


def test_mail_bench_rejects_unknown_store(capsys) -> None:  # type: ignore[no-untyped-def]
    assert bench_main(["mail", "--stores", "nosuch"]) == 2
    assert "not available" in capsys.readouterr().err
