"""``lsmmail bench --plot`` / ``--load``: a saved ``--json`` result is shown again and drawn as a PNG."""

from __future__ import annotations

import json

from lsmmail.bench import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_saved_result_is_tabled_and_plotted(capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    argv = ["--num", "300", "--batch", "50", "--seeks", "10", "--workloads", "fillrandom,readrandom,seekscan",
            "--engines", "lsmmail,sqlite", "--json", "--no-progress", "--dir", str(tmp_path / "run")]
    assert main(argv) == 0
    saved = tmp_path / "result.json"
    saved.write_text(capsys.readouterr().out)
    assert json.loads(saved.read_text())["order"]["engines"] == ["lsmmail", "sqlite"]
    chart = tmp_path / "chart.png"
    assert main(["--load", str(saved), "--plot", str(chart)]) == 0
    table = capsys.readouterr().out
    assert "lsm/sqlite" in table and "readrandom" in table and "seekscan" in table
    data = chart.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5_000  # a drawn chart, not an empty canvas


def test_plot_in_the_same_run(capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    chart = tmp_path / "run.png"
    argv = ["--num", "200", "--batch", "50", "--workloads", "fillseq,readrandom", "--no-progress",
            "--dir", str(tmp_path / "run"), "--plot", str(chart)]
    assert main(argv) == 0
    assert "fillseq" in capsys.readouterr().out
    assert chart.read_bytes().startswith(PNG_MAGIC)


def test_load_rejects_a_file_that_is_not_a_result(capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a bench result"}')
    assert main(["--load", str(bad)]) == 2
    assert "cannot read a saved bench result" in capsys.readouterr().err
    assert main(["--load", str(tmp_path / "missing.json")]) == 2
