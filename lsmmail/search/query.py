"""The Gmail-style query language: text -> AST.

Grammar (``OR`` and ``AND`` are operators only in capitals; juxtaposition means AND)::

    query   := or_expr EOF
    or_expr := and_expr ( "OR" and_expr )*
    and_expr:= unary ( ["AND"] unary )*
    unary   := "-" unary | primary
    primary := "(" or_expr ")" | FIELD ":" value | FIELD ":(" or_expr ")" | value
    value   := WORD | '"' phrase '"'
    FIELD   := from | to | cc | subject | filename | has | is | in | before | after   (any case)

* A word or phrase matches where its word tokens (see :mod:`.tokenizer`) occur at *adjacent* positions of
  one field, so ``foo-bar`` and ``"foo bar"`` mean the same, and ``"quarterly report"`` demands adjacency.
* Without a field a term searches subject, body, from, to, cc and attachment names (any of them).
* In from/to/cc/filename a term also matches the field's whole-value *special* terms (the whole address,
  its local part, its domain, the whole file name). In from/to/cc a value containing ``@`` matches *only*
  a whole address, exactly (``from:bob@x.org`` never matches ``bob@x.org.evil.com``).
* A word or phrase with no word characters (``&``, ``--``, ``""``) matches everything (it is ignored,
  as Gmail does), so ``a & b`` is ``a b``.
* ``has:attachment``, ``is:read``, ``is:unread``, ``in:FOLDER`` (compared case-insensitively with the
  mail layer's folder id), ``before:DATE`` (received before 00:00 UTC of DATE), ``after:DATE`` (received
  at or after 00:00 UTC of DATE); DATE is ``YYYY-MM-DD`` or ``YYYY/MM/DD``.
* ``name:value`` with an unknown name is an ordinary word (``foo:bar`` = the phrase ``foo bar``).

Every malformed query raises :class:`QuerySyntaxError` (a ``ValueError``) whose ``position`` is the
0-based character offset of the problem and whose message says what is wrong there. Nothing else is ever
raised for any input string (a hypothesis test feeds arbitrary text).
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass

from .tokenizer import normalize, special_term, tokenize

#: Nesting limit for parentheses and negations: deeper input is rejected instead of recursing without bound.
MAX_DEPTH = 100
#: Longest accepted query, in characters (a search box never needs more; bounds parse time).
MAX_QUERY_CHARS = 10_000

TEXT_FIELD_NAMES = {"from": "f", "to": "t", "cc": "c", "subject": "s", "filename": "a"}
OTHER_FIELD_NAMES = frozenset(("has", "is", "in", "before", "after"))


class QuerySyntaxError(ValueError):
    """A malformed query. ``position`` is the 0-based character offset where the problem is."""

    def __init__(self, message: str, position: int, query: str = "") -> None:
        self.position = position
        self.query = query
        self.reason = message
        super().__init__(f"{message} (at position {position})")


# --------------------------------------------------------------------------- AST


@dataclass(frozen=True)
class Term:
    """A word or phrase. ``field`` is a field code (tokenizer.SUBJECT, ...) or None for all text fields."""

    field: str | None
    text: str
    tokens: tuple[str, ...]
    special: str | None


@dataclass(frozen=True)
class HasAttachment:
    pass


@dataclass(frozen=True)
class IsRead:
    read: bool


@dataclass(frozen=True)
class InFolder:
    folder: str  # normalised (case-folded)


@dataclass(frozen=True)
class DateBound:
    """``before`` True: received strictly before ``ms``; False: at or after ``ms`` (Unix ms, UTC)."""

    before: bool
    ms: int


@dataclass(frozen=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    child: Node


@dataclass(frozen=True)
class All:
    """Matches every document (an ignored, token-less word)."""


Node = Term | HasAttachment | IsRead | InFolder | DateBound | And | Or | Not | All


# --------------------------------------------------------------------------- lexer

_WORD_END = re.compile(r'[\s()"]')


@dataclass
class _Tok:
    kind: str  # WORD PHRASE LP RP OR AND NEG FIELD FIELDGROUP EOF
    pos: int
    text: str = ""
    field: str = ""
    value_pos: int = 0
    quoted: bool = False


def _lex(q: str) -> list[_Tok]:
    out: list[_Tok] = []
    i, n = 0, len(q)
    while i < n:
        c = q[i]
        if c.isspace():
            i += 1
        elif c == "(":
            out.append(_Tok("LP", i))
            i += 1
        elif c == ")":
            out.append(_Tok("RP", i))
            i += 1
        elif c == '"':
            end = q.find('"', i + 1)
            if end < 0:
                raise QuerySyntaxError('unterminated phrase: this " has no closing "', i, q)
            out.append(_Tok("PHRASE", i, q[i + 1 : end]))
            i = end + 1
        elif c == "-" and i + 1 < n and not q[i + 1].isspace() and q[i + 1] != ")":
            out.append(_Tok("NEG", i))
            i += 1
        else:
            m = _WORD_END.search(q, i)
            end = m.start() if m else n
            word = q[i:end]
            name, colon, value = word.partition(":")
            lname = name.lower()
            if colon and (lname in TEXT_FIELD_NAMES or lname in OTHER_FIELD_NAMES):
                vpos = i + len(name) + 1
                if value:
                    out.append(_Tok("FIELD", i, value, lname, vpos))
                elif end < n and q[end] == '"':
                    close = q.find('"', end + 1)
                    if close < 0:
                        raise QuerySyntaxError('unterminated phrase: this " has no closing "', end, q)
                    out.append(_Tok("FIELD", i, q[end + 1 : close], lname, end, quoted=True))
                    end = close + 1
                elif end < n and q[end] == "(":
                    out.append(_Tok("FIELDGROUP", i, "", lname, end))
                    end += 1
                else:
                    raise QuerySyntaxError(f"{name}: needs a value right after the colon", vpos, q)
            elif word == "OR":
                out.append(_Tok("OR", i))
            elif word == "AND":
                out.append(_Tok("AND", i))
            else:
                out.append(_Tok("WORD", i, word))
            i = end
    out.append(_Tok("EOF", n))
    return out


# --------------------------------------------------------------------------- parser


def _date_ms(value: str, pos: int, q: str) -> int:
    m = re.fullmatch(r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})", value)
    if not m:
        raise QuerySyntaxError(f"expected a date YYYY-MM-DD, got {value!r}", pos, q)
    try:
        d = _dt.datetime(int(m[1]), int(m[2]), int(m[3]), tzinfo=_dt.UTC)
    except ValueError as e:
        raise QuerySyntaxError(f"invalid date {value!r}: {e}", pos, q) from None
    return int(d.timestamp()) * 1000


def make_term(field: str | None, text: str) -> Node:
    """The AST leaf for a word or phrase (``All`` when it has no word tokens: pure punctuation is ignored)."""
    tokens = tuple(tokenize(text))
    if not tokens:
        return All()
    return Term(field, text, tokens, special_term(text))


class _Parser:
    def __init__(self, q: str) -> None:
        self.q = q
        self.toks = _lex(q)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def error(self, msg: str, pos: int) -> QuerySyntaxError:
        return QuerySyntaxError(msg, pos, self.q)

    def enter(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"query nested deeper than {MAX_DEPTH} levels", pos)

    def parse(self) -> Node:
        node = self.or_expr(None)
        t = self.peek()
        if t.kind == "RP":
            raise self.error("unbalanced ')': no '(' to close", t.pos)
        assert t.kind == "EOF"
        return node

    def or_expr(self, scope: str | None) -> Node:
        parts = [self.and_expr(scope)]
        while self.peek().kind == "OR":
            self.take()
            parts.append(self.and_expr(scope))
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def and_expr(self, scope: str | None) -> Node:
        parts: list[Node] = []
        while True:
            t = self.peek()
            if t.kind == "AND":
                if not parts:
                    raise self.error("AND needs a search term before it", t.pos)
                self.take()
                nxt = self.peek()
                if nxt.kind in ("EOF", "RP", "OR", "AND"):
                    raise self.error("AND needs a search term after it", nxt.pos)
                continue
            if t.kind in ("EOF", "RP", "OR"):
                break
            parts.append(self.unary(scope))
        if not parts:
            t = self.peek()
            what = {"EOF": "end of query", "RP": "')'", "OR": "OR"}[t.kind]
            raise self.error(f"expected a search term, found {what}", t.pos)
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def unary(self, scope: str | None) -> Node:
        t = self.peek()
        if t.kind == "NEG":
            self.take()
            self.enter(t.pos)
            child = self.unary(scope)
            self.depth -= 1
            return Not(child)
        return self.primary(scope)

    def group(self, scope: str | None, open_pos: int) -> Node:
        self.enter(open_pos)
        node = self.or_expr(scope)
        self.depth -= 1
        t = self.peek()
        if t.kind != "RP":
            raise self.error("this '(' is never closed", open_pos)
        self.take()
        return node

    def primary(self, scope: str | None) -> Node:
        t = self.take()
        if t.kind == "LP":
            return self.group(scope, t.pos)
        if t.kind in ("WORD", "PHRASE"):
            return make_term(scope, t.text)
        if t.kind == "FIELDGROUP":
            if t.field not in TEXT_FIELD_NAMES:
                raise self.error(f"{t.field}: cannot be followed by a group", t.value_pos)
            return self.group(TEXT_FIELD_NAMES[t.field], t.value_pos)
        if t.kind == "FIELD":
            return self.field(t)
        raise self.error(f"unexpected {t.kind}", t.pos)  # pragma: no cover - and_expr filters these

    def field(self, t: _Tok) -> Node:
        name, value, vpos = t.field, t.text, t.value_pos
        if name in TEXT_FIELD_NAMES:
            return make_term(TEXT_FIELD_NAMES[name], value)
        low = normalize(value).strip()
        if name == "has":
            if low != "attachment":
                raise self.error(f"has: supports only 'attachment', got {value!r}", vpos)
            return HasAttachment()
        if name == "is":
            if low not in ("read", "unread"):
                raise self.error(f"is: supports 'read' or 'unread', got {value!r}", vpos)
            return IsRead(low == "read")
        if name == "in":
            if not low:
                raise self.error("in: needs a folder name", vpos)
            return InFolder(low)
        return DateBound(name == "before", _date_ms(value.strip(), vpos, self.q))


def parse(query: str) -> Node:
    """Parse ``query`` into an AST. Raises :class:`QuerySyntaxError` (and nothing else) if malformed."""
    if not isinstance(query, str):
        raise QuerySyntaxError("a query must be a string", 0, "")
    if len(query) > MAX_QUERY_CHARS:
        raise QuerySyntaxError(f"query longer than {MAX_QUERY_CHARS} characters", MAX_QUERY_CHARS, "")
    if not query.strip():
        raise QuerySyntaxError("empty query", 0, query)
    return _Parser(query).parse()
