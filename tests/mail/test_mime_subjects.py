"""mime.subject_thread_key (one regex match) against normalise_subject and is_reply_subject, and the
import worker's memoised subject key against the same computed afresh."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lsmmail.mail import import_pool, mime, schema

_pieces = st.sampled_from(["Re: ", "RE:", "Fwd:  ", "AW :", "re[2]: ", "[USRP-users] ", "[x]", " ", "\t",
                           "hello", "Wörld", "ﬁ", "Re", ":", "[", "]", "[" + "y" * 41 + "] "])
_subjects = st.lists(_pieces, max_size=10).map("".join)


@settings(max_examples=400, deadline=None)
@given(_subjects)
def test_subject_thread_key_equals_the_two_functions(subject: str) -> None:
    expected = (mime.normalise_subject(subject), mime.is_reply_subject(subject))
    assert mime.subject_thread_key(subject) == expected


@settings(max_examples=200, deadline=None)
@given(_subjects)
def test_memoised_subject_key(subject: str) -> None:
    norm = mime.normalise_subject(subject)
    expected = (schema.digest(norm.encode("utf-8")) if norm else None, mime.is_reply_subject(subject))
    assert import_pool._subject_key(subject) == expected
    assert import_pool._subject_key(subject) == expected  # a hit


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=30))
def test_memoised_reference_tail(ref: str) -> None:
    expected = schema.dedup_tail(schema.DEDUP_MESSAGE_ID, ref.encode("utf-8", "surrogatepass"))
    assert import_pool._ref_tail(ref) == expected
    assert import_pool._ref_tail(ref) == expected  # a hit
