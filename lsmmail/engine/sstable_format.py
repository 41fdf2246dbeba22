"""The SSTable format v1 pieces shared by the writers and the reader (docs/format.md, "SSTable").

``data blocks | filter block | properties block | index block | footer (52 bytes)``; every block is
``payload || u8 compression || u32 checksum(payload || compression)``.

This module holds the footer layout and its constants, the properties block (:class:`TableProperties`,
:func:`encode_properties`, and :func:`decode_properties`, which raises ``Corruption`` on a malformed
block) and block handles. :class:`lsmmail.engine.sstable_builder.TableBuilder` and
:class:`lsmmail.engine.flush_table.BlockTableWriter` write with it;
:class:`lsmmail.engine.sstable.TableReader` reads with it. Pure functions, no I/O. The public names are
also importable from :mod:`lsmmail.engine.sstable`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .block import BlockBuilder, decode_block
from .coding import checksum, get_varint, put_varint, u32
from .errors import Corruption

FORMAT_VERSION = 1
MAGIC = b"lsmmSST\x01"
FOOTER_SIZE = 52
#: filter, properties, index handles (u64 offset, u32 size each), format version, footer checksum.
_FOOTER = struct.Struct("<QIQIQIII")
_FOOTER_CHECKED = 40  # the footer checksum covers the 40 bytes before it

#: Property names in the order they are stored (sorted bytewise, as the block format requires).
_PROP_NAMES = (
    b"blob_files",
    b"largest_seq",
    b"num_data_blocks",
    b"num_deletions",
    b"num_entries",
    b"raw_key_bytes",
    b"raw_value_bytes",
    b"smallest_seq",
)


@dataclass
class TableProperties:
    num_entries: int = 0
    num_data_blocks: int = 0
    num_deletions: int = 0
    raw_key_bytes: int = 0
    raw_value_bytes: int = 0
    smallest_seq: int = 0
    largest_seq: int = 0
    blob_files: list[int] = field(default_factory=list)
    #: Not stored in the properties block: the builder knows them; a reader takes the file size from
    #: the file, the largest key from the index and the smallest from the first data block.
    file_size: int = 0
    smallest_key: bytes = b""
    largest_key: bytes = b""


def encode_properties(props: TableProperties) -> bytes:
    """The raw properties block: sorted names, varint values, restart interval 1."""
    blob = bytearray()
    for number in sorted(set(props.blob_files)):
        put_varint(blob, number)
    values = {b"blob_files": bytes(blob)}
    for name in _PROP_NAMES[1:]:
        out = bytearray()
        put_varint(out, getattr(props, name.decode()))
        values[name] = bytes(out)
    builder = BlockBuilder(1)
    for name in _PROP_NAMES:
        builder.add(name, values[name])
    return builder.finish()


def _whole_varint(data: bytes, what: str) -> int:
    value, pos = get_varint(data, 0)
    if pos != len(data):
        raise Corruption(f"{what} is not exactly one varint")
    return value


def decode_properties(raw: bytes) -> TableProperties:
    """Parse a raw properties block; ``Corruption`` if a name is missing, unknown or repeated."""
    names, values = decode_block(raw)
    if tuple(names) != _PROP_NAMES:
        raise Corruption(f"properties block holds names {names!r}, expected the v1 set")
    props = TableProperties()
    blob_files: list[int] = []
    data, pos = values[0], 0
    while pos < len(data):
        number, pos = get_varint(data, pos)
        blob_files.append(number)
    props.blob_files = blob_files
    for name, value in zip(_PROP_NAMES[1:], values[1:], strict=True):
        text = name.decode()
        setattr(props, text, _whole_varint(value, f"property {text}"))
    return props


def encode_footer(filter_h: tuple[int, int], props_h: tuple[int, int], index_h: tuple[int, int]) -> bytes:
    head = _FOOTER.pack(*filter_h, *props_h, *index_h, FORMAT_VERSION, 0)[:_FOOTER_CHECKED]
    return head + u32.pack(checksum(head)) + MAGIC


def encode_handle(offset: int, size: int) -> bytes:
    out = bytearray()
    put_varint(out, offset)
    put_varint(out, size)
    return bytes(out)


def _trailer_of(ikey: bytes) -> int:
    return int.from_bytes(ikey[-8:], "little")
