"""The stores ``lsmmail bench mail`` measures, as adapters of one shape (see bench/mail.py).

* ``lsmmail``: ``MailStore`` with default options (``sync=True``).
* ``sqlite``: ``benchmarks/mail_sqlite.py`` of the checkout (not packaged: a benchmark extra).
* ``tantivy``: a search-only peer (``pip install tantivy``) that indexes the same fields.

Every adapter: ``create_user()``, ``bulk(raws)`` -> ids, ``deliver(raw)``, ``list(cursor, unread,
limit)``, ``get(id)``, ``mark_read(id)``, ``query(kind, args)``, ``search(q, limit)`` / ``search_ids(q,
limit)`` -> hit count, ``index_bytes()``, ``close()`` (a search-only peer: the search calls only).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

USER = "bench"


class _Lsmmail:
    search_only = False

    def __init__(self, path: str) -> None:
        from lsmmail.mail import MailOptions, MailStore

        self.s = MailStore.open(path, MailOptions())

    def create_user(self) -> None:
        self.s.create_user(USER, ["bench@example.com"])

    def bulk(self, raws: list[bytes], workers: int | None = None) -> list[Any]:
        """``workers=None``: the store's default (automatic: worker processes for large imports when
        there is more than one CPU); 1: everything in this process."""
        return [r.id for r in self.s.import_messages(USER, raws, workers=workers)]

    def bulk_one_process(self, path: str, raws: list[bytes]) -> tuple[float, int]:
        """Seconds to import ``raws`` into a fresh store at ``path`` with ``workers=1``, and the number of
        messages that store then holds (its folder totals: what the import really stored)."""
        other = type(self)(path)
        other.create_user()
        t0 = time.perf_counter()
        stored = list(other.s.import_messages(USER, raws, workers=1))  # the results are lazy: consume them
        dt = time.perf_counter() - t0
        if len(stored) != len(raws):
            raise RuntimeError(f"one-process import stored {len(stored)} of {len(raws)} messages")
        held = sum(f.total for f in other.s.folders(USER))
        other.close()
        shutil.rmtree(path, ignore_errors=True)
        return dt, held

    def deliver(self, raw: bytes) -> Any:
        return self.s.deliver(USER, raw)

    def list(self, cursor: Any, unread: bool, limit: int) -> tuple[int, Any]:
        p = self.s.list_messages(USER, "INBOX", limit=limit, cursor=cursor, unread_only=unread)
        return len(p.items), p.next_cursor

    def get(self, mid: Any) -> None:
        self.s.get_message(USER, mid)

    def mark_read(self, mid: Any) -> None:
        self.s.mark_read(USER, mid)

    @staticmethod
    def query(kind: str, args: list[str]) -> str:
        return {"word": args[0], "body": args[0], "from": f"from:{args[0]}", "and": " ".join(args)}[kind]

    def search(self, q: Any, limit: int) -> int:
        return len(self.s.search(USER, q, limit=limit).items)

    def search_ids(self, q: Any, limit: int) -> int:
        return len(self.s.search_ids(USER, q, limit=limit).items)

    def settle(self) -> None:
        """Wait until the engine's background work (flushes, compactions) has caught up."""
        if not self.s.db.wait_until_idle(timeout=300):
            raise RuntimeError("lsmmail did not become idle within 300 s")

    def index_bytes(self) -> dict[str, int]:
        """Logical key + value bytes of the search keys (``s`` forward records, ``S`` segments): the
        engine compresses blocks, so on disk they take less; there is no per-key on-disk attribution."""
        total = 0
        for prefix in (b"s", b"S"):
            for k, v in self.s.db.scan(prefix=prefix):
                total += len(k) + len(v)
        return {"index_logical": total}

    def close(self) -> None:
        self.s.close()


def _load_sqlite_module() -> Any:
    """benchmarks/mail_sqlite.py of the checkout (a benchmark extra, not part of the package)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "mail_sqlite.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("lsmmail_bench_mail_sqlite", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


class _Sqlite(_Lsmmail):
    def __init__(self, path: str) -> None:  # noqa: D107 - same shape as _Lsmmail
        self.s = _load_sqlite_module().SqliteMailStore.open(path)

    def bulk(self, raws: list[bytes]) -> list[Any]:
        return [mid for mid, _ in self.s.import_messages(USER, raws)]

    def list(self, cursor: Any, unread: bool, limit: int) -> tuple[int, Any]:
        p = self.s.list_messages(USER, 1, limit=limit, cursor=cursor, unread_only=unread)
        return len(p.items), p.next_cursor

    @staticmethod
    def query(kind: str, args: list[str]) -> str:
        q = ['"' + a.replace('"', '""') + '"' for a in args]
        return {"word": q[0], "body": q[0], "from": f"sender : {q[0]}", "and": " AND ".join(q)}[kind]

    def settle(self) -> None:
        """Nothing runs in the background of an SQLite connection (checkpoints happen in commits)."""

    def index_bytes(self) -> dict[str, int]:
        sp = self.s.space()
        return {"index_pages": sp["fts_pages"], "index_logical": sp["fts_payload"]}


class _Tantivy:
    """Search-only peer: subject, sender, recipients (to + cc) and body (text, stripped html, attachment
    names) as text fields, plus a fast ``ts`` field (arrival order) so results come newest first."""

    search_only = True
    FIELDS = ["subject", "sender", "recipients", "body"]

    def __init__(self, path: str) -> None:
        import tantivy

        self.t = tantivy
        sb = tantivy.SchemaBuilder()
        for f in self.FIELDS:
            sb.add_text_field(f, stored=False)
        sb.add_unsigned_field("ts", stored=False, indexed=True, fast=True)
        os.makedirs(path, exist_ok=True)
        self.ix = tantivy.Index(sb.build(), path=path)
        self.n = 0

    def create_user(self) -> None:
        pass

    def bulk(self, raws: list[bytes]) -> list[Any]:
        from lsmmail.mail import mime

        w = self.ix.writer(heap_size=128 * 2**20)
        for raw in raws:
            p = mime.parse(raw)
            doc = self.t.Document()
            doc.add_text("subject", p.subject)
            doc.add_text("sender", " ".join(f"{a} {b}" for a, b in p.from_))
            doc.add_text("recipients", " ".join(f"{a} {b}" for a, b in p.to + p.cc))
            names = " ".join(a.filename for a in p.attachments if a.filename)
            doc.add_text("body", "\n".join((p.text, mime.html_to_text(p.html), names)))
            doc.add_unsigned("ts", self.n)
            self.n += 1
            w.add_document(doc)
        w.commit()
        w.wait_merging_threads()
        self.ix.reload()
        self.searcher = self.ix.searcher()
        return list(range(self.n - len(raws), self.n))

    def query(self, kind: str, args: list[str]) -> Any:
        text = {"word": args[0], "body": args[0], "from": f'sender:"{args[0]}"',
                "and": " ".join("+" + a for a in args)}[kind]
        return self.ix.parse_query(text, self.FIELDS)

    def search_ids(self, q: Any, limit: int) -> int:
        return len(self.searcher.search(q, limit, order_by_field="ts", order=self.t.Order.Desc).hits)

    def index_bytes(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


STORES: dict[str, Callable[[str], Any]] = {"lsmmail": _Lsmmail, "sqlite": _Sqlite, "tantivy": _Tantivy}


def installed_stores() -> list[str]:
    out = ["lsmmail"]
    if (Path(__file__).resolve().parents[2] / "benchmarks" / "mail_sqlite.py").exists():
        out.append("sqlite")
    if importlib.util.find_spec("tantivy") is not None:
        out.append("tantivy")
    return out
