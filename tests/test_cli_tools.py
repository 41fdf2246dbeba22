"""CLI tools beside import/export: check, stats, backup, search, user add, and the entry point itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lsmmail import DB, MailStore, Options
from lsmmail.cli import main
from lsmmail.service.auth import TokenAuth

MSG = (b"From: Bob <bob@example.org>\r\nTo: alice@example.com\r\nSubject: Quarterly report\r\n"
       b"Message-ID: <q1@example.org>\r\nDate: Mon, 2 Mar 2026 10:00:00 +0000\r\n\r\n"
       b"The numbers for the third quarter are in.\r\n")


def _make_db(path: Path, n: int = 500) -> None:
    with DB.open(path, Options(memtable_size=16 * 1024)) as db:
        for i in range(n):
            db.put(b"key%05d" % i, b"value-%d" % i * 20)
        db.flush()


def test_check_reports_ok_then_a_corrupt_table(tmp_path: Path, capsys) -> None:
    _make_db(tmp_path / "db")
    assert main(["check", str(tmp_path / "db")]) == 0
    assert "OK" in capsys.readouterr().out
    sst = sorted((tmp_path / "db").glob("*.sst"))[0]
    data = bytearray(sst.read_bytes())
    data[len(data) // 3] ^= 0xFF
    sst.write_bytes(bytes(data))
    assert main(["check", str(tmp_path / "db")]) == 1
    assert "Corruption" in capsys.readouterr().err


def test_check_of_a_missing_database_fails_without_creating_one(tmp_path: Path, capsys) -> None:
    assert main(["check", str(tmp_path / "nothing")]) == 1
    assert not (tmp_path / "nothing" / "CURRENT").exists()


def test_stats_prints_json(tmp_path: Path, capsys) -> None:
    _make_db(tmp_path / "db")
    assert main(["stats", str(tmp_path / "db")]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["sst_files"] >= 1 and len(st["levels"]) == 7


def test_backup_writes_an_openable_copy(tmp_path: Path) -> None:
    _make_db(tmp_path / "db", 200)
    assert main(["backup", str(tmp_path / "db"), str(tmp_path / "copy")]) == 0
    with DB.open(tmp_path / "copy") as db:
        assert db.get(b"key00007") == b"value-7" * 20
        assert sum(1 for _ in db.scan()) == 200


def test_search_and_user_add(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    assert main(["user", "add", "alice@example.com", "--data", str(data)]) == 0
    token = capsys.readouterr().out.strip()
    with MailStore.open(data) as store:
        assert TokenAuth(store).authenticate(token) == "alice@example.com"
        mid = store.deliver("alice@example.com", MSG)
    assert main(["search", "--user", "alice@example.com", "--data", str(data), "from:bob", "quarter"]) == 0
    out = capsys.readouterr().out
    assert mid in out and "Quarterly report" in out
    assert main(["search", "--user", "alice@example.com", "--data", str(data), "(unclosed"]) == 2
    assert "bad query" in capsys.readouterr().err


def test_console_entry_point_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "lsmmail.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for command in ("serve", "import", "export", "bench", "check", "stats", "backup", "search", "user"):
        assert command in out
