"""Reading and writing mailbox formats for import/export: mbox (mboxrd quoting), Maildir, .eml.

mbox quoting: we read and write **mboxrd** — a body line matching ``>*From `` gets one more ``>`` on
export and loses one on import — which is the only mbox variant that round-trips every message body
exactly (mboxo cannot tell a quoted ``>From`` from a real one). Reading an mboxo file (like the corpus)
with mboxrd rules gives back the original message for every ``From `` line the writer quoted.

One thing mbox cannot carry: whether a message's last line ended with a newline (the separator blank
line is indistinguishable). Export adds a newline to a message that lacks one; Maildir export is exact
for every message.
"""

from __future__ import annotations

import lzma
import os
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

_QUOTED_FROM = re.compile(rb"^>+From ")
_NEEDS_QUOTE = re.compile(rb"^>*From ")


def open_maybe_xz(path: Path) -> BinaryIO:
    """Open a file for reading bytes, decompressing ``.xz`` on the fly (streamed, not loaded whole)."""
    if path.name.endswith(".xz"):
        return lzma.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def read_mbox(stream: BinaryIO) -> Iterator[bytes]:
    """Yield each message of an mbox stream, without its ``From `` line, mboxrd-unquoted, and without
    the blank separator line that precedes the next ``From `` line."""
    lines: list[bytes] | None = None
    for line in stream:
        if line.startswith(b"From "):
            if lines is not None:
                yield _finish(lines)
            lines = []
            continue
        if lines is None:  # bytes before the first From_ line: not an mbox message
            lines = []
        if line.startswith(b">") and _QUOTED_FROM.match(line):
            line = line[1:]
        lines.append(line)
    if lines is not None:
        yield _finish(lines)


def _finish(lines: list[bytes]) -> bytes:
    data = b"".join(lines)
    if data.endswith(b"\n\n") or data.endswith(b"\r\n\n"):
        data = data[:-1]
    elif data.endswith(b"\n") and data.count(b"\n") == 1 and data.strip() == b"":
        data = b""
    return data


def mbox_from_line(sender: str, when: float) -> bytes:
    """``From sender asctime`` separator line."""
    sender = "".join(c for c in sender if c.isascii() and not c.isspace()) or "MAILER-DAEMON"
    return f"From {sender} {time.asctime(time.gmtime(when))}\n".encode("ascii")


def write_mbox_message(out: BinaryIO, raw: bytes, sender: str, when: float) -> None:
    """Append one message: From_ line, mboxrd-quoted body, newline if missing, blank separator."""
    out.write(mbox_from_line(sender, when))
    for line in raw.splitlines(keepends=True):
        if _NEEDS_QUOTE.match(line):
            out.write(b">")
        out.write(line)
    if not raw.endswith(b"\n"):
        out.write(b"\n")
    out.write(b"\n")


def is_maildir(path: Path) -> bool:
    return path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir()


def read_maildir(path: Path) -> Iterator[tuple[str, bytes]]:
    """Yield (file name, bytes) of every message in ``new`` then ``cur``, sorted by name."""
    for sub in ("new", "cur"):
        for name in sorted(os.listdir(path / sub)):
            p = path / sub / name
            if p.is_file():
                yield name, p.read_bytes()


def write_maildir_message(path: Path, name: str, raw: bytes, seen: bool) -> None:
    """Write one message into ``cur`` (flag ``S`` when seen) via ``tmp`` + rename, as Maildir requires."""
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    tmp = path / "tmp" / name
    tmp.write_bytes(raw)
    os.replace(tmp, path / "cur" / f"{name}:2,{'S' if seen else ''}")


def iter_sources(paths: Iterable[Path]) -> Iterator[tuple[str, bytes]]:
    """Yield (label, raw) for every message under the given paths: mbox files (``.xz`` too), Maildirs,
    single message files and directories of them (recursively, sorted). A file is an mbox when it
    starts with ``From `` and is not named ``*.eml``; otherwise it is one message, kept byte for byte."""
    for path in paths:
        if is_maildir(path):
            for name, raw in read_maildir(path):
                yield f"{path}/{name}", raw
        elif path.is_dir():
            children = sorted(p for p in path.rglob("*") if p.is_file())
            yield from iter_sources(children)
        else:
            with open_maybe_xz(path) as f:
                head = f.read(5)
            # A .eml file is one message even when it starts with a "From " envelope line.
            if head == b"From " and not path.name.removesuffix(".xz").endswith(".eml"):
                with open_maybe_xz(path) as f:
                    for i, raw in enumerate(read_mbox(f)):
                        yield f"{path}#{i}", raw
            else:
                with open_maybe_xz(path) as f:
                    yield str(path), f.read()
