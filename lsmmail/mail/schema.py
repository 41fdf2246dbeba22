"""Every key the mail layer writes, in one place (docs/schema.md describes each family).

A key is ``tag (1 byte) | user key (4 bytes, big-endian) | family fields (fixed width, big-endian)``,
except the few global families (users directory, addresses, attachments, outbox) which have no user.
All integers are big-endian and all fields fixed-width, so bytewise key order is the order we scan in:

* message lists and the unread index hold the **inverted** message id (every byte xor 0xFF). A UUIDv7
  id sorts by time, so its inversion sorts newest first and "newest first in a folder" is a *forward*
  prefix scan, which is what an LSM iterator does best (a reverse scan has to step back through blocks).
* a user's keys of one family are contiguous, so sharding by user key moves whole users.

Tags ``S`` and ``s`` are reserved for the search index (lsmmail.search) and ``K`` for the service layer
(lsmmail.service: tokens, idempotency records, relay retry state); they are never used here.
"""

from __future__ import annotations

import hashlib
import struct

from lsmmail.engine.keys import prefix_end as prefix_end  # re-exported: scans of a key family

from .ids import ID_LEN

# ---- family tags (one byte each; see docs/schema.md) -------------------------------------------------
USER = b"U"  # U | user_id (utf-8)                          -> user record (number, addresses)
ADDRESS = b"A"  # A | address (case-folded, utf-8)           -> user_id (utf-8)
GLOBAL = b"G"  # G | name (ascii)                            -> global counters (next user number)
USER_STATE = b"V"  # V | uk                                   -> change seq, oldest kept seq, next folder
FOLDER = b"F"  # F | uk | folder(4)                          -> folder record (name, total, unread)
LISTING = b"L"  # L | uk | folder(4) | ~id(16)                -> message summary
UNREAD = b"N"  # N | uk | folder(4) | ~id(16)                 -> message summary (unread messages only)
MESSAGE = b"M"  # M | uk | id(16)                             -> message record (folder, flags, parts)
RAW = b"B"  # B | uk | id(16)                                 -> the raw message, byte-exact
BODY = b"Y"  # Y | uk | id(16)                                -> decoded text and html bodies
DEDUP = b"D"  # D | uk | kind(1) | digest(16)                 -> id(16) | thread(16)
THREAD = b"T"  # T | uk | thread(16) | id(16)                 -> empty (thread membership, oldest first)
SUBJECT = b"J"  # J | uk | digest(16) of normalised subject    -> thread(16)
CHANGE = b"C"  # C | uk | seq(8)                              -> kind(1) | id(16)
ATTACHMENT = b"X"  # X | sha256(32)                           -> attachment bytes (shared by all users)
HOLDER = b"H"  # H | sha256(32) | uk(4) | id(16) | part(2)    -> empty (one per message part holding it)
OUTBOX = b"O"  # O | entry id(16)                             -> queued remote delivery

SEARCH_RESERVED = (b"S", b"s")
#: Tag of lsmmail.service's keys (``K t`` tokens, ``K i`` idempotency, ``K r`` relay state; docs/service.md).
SERVICE_RESERVED = b"K"
ALL_TAGS = (
    USER, ADDRESS, GLOBAL, USER_STATE, FOLDER, LISTING, UNREAD, MESSAGE, RAW, BODY, DEDUP, THREAD,
    SUBJECT, CHANGE, ATTACHMENT, HOLDER, OUTBOX,
)

DEDUP_MESSAGE_ID = b"m"  # dedup by Message-ID
DEDUP_CONTENT = b"h"  # dedup by the hash of the raw bytes (messages without a usable Message-ID)

CHANGE_CREATED = 1
CHANGE_UPDATED = 2
CHANGE_DELETED = 3

USER_KEY_LEN = 4
FOLDER_LEN = 4
DIGEST_LEN = 16
SHA_LEN = 32

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_INVERT = bytes(255 - i for i in range(256))


def user_key(number: int) -> bytes:
    """The fixed-width key of a user (its number, assigned at create_user, as 4 big-endian bytes)."""
    return _U32.pack(number)


def invert(mid: bytes) -> bytes:
    """Every byte xor 0xFF: newer ids (larger) become smaller keys. Its own inverse."""
    return mid.translate(_INVERT)


def digest(data: bytes) -> bytes:
    """A 16-byte BLAKE2b digest, used to give variable-length strings (Message-IDs, subjects) a fixed
    width. 128 bits: the chance of any collision among 10^12 strings is below 10^-14."""
    return hashlib.blake2b(data, digest_size=DIGEST_LEN).digest()


def user_record_key(user_id: str) -> bytes:
    return USER + user_id.encode("utf-8")


def address_key(address: str) -> bytes:
    return ADDRESS + address.casefold().encode("utf-8")


def global_key(name: bytes) -> bytes:
    return GLOBAL + name


def user_state_key(uk: bytes) -> bytes:
    return USER_STATE + uk


def folder_key(uk: bytes, folder: int) -> bytes:
    return FOLDER + uk + _U32.pack(folder)


def folder_prefix(uk: bytes) -> bytes:
    return FOLDER + uk


def folder_of_key(key: bytes) -> int:
    return _U32.unpack_from(key, 1 + USER_KEY_LEN)[0]


def listing_key(uk: bytes, folder: int, mid: bytes) -> bytes:
    return LISTING + uk + _U32.pack(folder) + invert(mid)


def unread_key(uk: bytes, folder: int, mid: bytes) -> bytes:
    return UNREAD + uk + _U32.pack(folder) + invert(mid)


def list_prefix(tag: bytes, uk: bytes, folder: int) -> bytes:
    """Prefix of one folder's LISTING or UNREAD entries."""
    return tag + uk + _U32.pack(folder)


def id_of_list_key(key: bytes) -> bytes:
    """The message id at the end of a LISTING / UNREAD key."""
    return invert(key[-ID_LEN:])


def message_key(uk: bytes, mid: bytes) -> bytes:
    return MESSAGE + uk + mid


def raw_key(uk: bytes, mid: bytes) -> bytes:
    return RAW + uk + mid


def body_key(uk: bytes, mid: bytes) -> bytes:
    return BODY + uk + mid


def dedup_key(uk: bytes, kind: bytes, text: bytes) -> bytes:
    return DEDUP + uk + kind + digest(text)


def dedup_tail(kind: bytes, text: bytes) -> bytes:
    """The part of ``dedup_key(uk, kind, text)`` after the user key (import workers compute it)."""
    return kind + digest(text)


def thread_key(uk: bytes, thread: bytes, mid: bytes) -> bytes:
    return THREAD + uk + thread + mid


def thread_prefix(uk: bytes, thread: bytes) -> bytes:
    return THREAD + uk + thread


def subject_key(uk: bytes, normalised_subject: str) -> bytes:
    return SUBJECT + uk + digest(normalised_subject.encode("utf-8"))


def change_key(uk: bytes, seq: int) -> bytes:
    return CHANGE + uk + _U64.pack(seq)


def change_prefix(uk: bytes) -> bytes:
    return CHANGE + uk


def seq_of_change_key(key: bytes) -> int:
    return _U64.unpack_from(key, 1 + USER_KEY_LEN)[0]


def attachment_key(sha: bytes) -> bytes:
    return ATTACHMENT + sha


def holder_key(sha: bytes, uk: bytes, mid: bytes, part: int) -> bytes:
    return HOLDER + sha + uk + mid + struct.pack(">H", part)


def holder_prefix(sha: bytes) -> bytes:
    return HOLDER + sha


def outbox_key(entry: bytes) -> bytes:
    return OUTBOX + entry


def pack_u64s(*values: int) -> bytes:
    return b"".join(_U64.pack(v) for v in values)


def unpack_u64s(data: bytes) -> tuple[int, ...]:
    return struct.unpack(f">{len(data) // 8}Q", data)
