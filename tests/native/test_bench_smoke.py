"""``lsmmail bench`` end to end on a tiny workload (lives here because tests/native owns the bench)."""

from __future__ import annotations

import json

from lsmmail.bench import WORKLOADS, format_table, main


def test_bench_runs_every_workload_and_reports_json(capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    argv = ["--num", "300", "--batch", "50", "--sync-num", "16", "--threads", "2", "--seeks", "20",
            "--json", "--no-progress", "--dir", str(tmp_path)]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    eng = out["engines"]["lsmmail"]
    # ``space`` is a measurement (space_ratio), not an ops/s workload.
    assert set(eng["workloads"]) == set(WORKLOADS) - {"space"}
    assert eng["workloads"]["readrandom"]["found"] == 300  # every probed key was present
    assert eng["workloads"]["seekscan"]["entries"] > 0
    assert eng["workloads"]["fillsync1"]["ops"] == 16
    assert eng["workloads"]["fillsyncN"]["ops"] == 32  # --sync-num puts in each of the 2 threads
    assert eng["write_amp"] is None or eng["write_amp"] > 0
    # Every key was written twice and then compacted: half the versions are gone, so the directory
    # cannot hold both copies uncompressed.
    assert 0 < eng["space_ratio"] < 2.0
    assert eng["workloads"]["mailmix"]["ops"] > 0
    assert eng["mailmix_write_amp"] is None or eng["mailmix_write_amp"] > 0
    assert eng["fsync_p50_us"] > 0
    table = format_table(out, ["lsmmail"], list(WORKLOADS))
    assert "readmissing" in table and "write amp" in table
    assert "space ÷ live" in table and "mailmix write amp" in table and "syncN ÷ sync1" in table


def test_bench_rejects_unknown_workload(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["--workloads", "nosuch"]) == 2
    assert "unknown workload" in capsys.readouterr().err
