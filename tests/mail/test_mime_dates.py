"""mime.parse_date's fast path for the usual RFC 5322 date against the stdlib's parsedate_tz + mktime_tz
(``_parse_date_stdlib``), on generated dates near and off the usual form."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lsmmail.mail import mime

_days = st.sampled_from(["Mon, ", "Tue,", "Fri,  ", "fri, ", "Xyz, ", "", "Sun ", "1,"])
_months = st.sampled_from(["Jan", "Feb", "Dec", "jan", "JUN", "June", "Foo"])
_years = st.sampled_from(["1969", "1970", "2019", "2038", "9999", "0099", "19", "02019"])
_zones = st.sampled_from(["+0000", "-0000", "+0530", "-0400", "+9999", "-9959", "GMT", "EST", "+00", "0400",
                          "+0000 (UTC)", "+0000(UTC)", "-0800\xa0x", "+0100\x1c", "", "+0000 extra tokens"])
_num = st.integers(0, 99).map(lambda n: f"{n:02d}")


@settings(max_examples=600, deadline=None)
@given(_days, st.integers(0, 40), _months, _years, _num, _num, st.one_of(st.none(), _num), _zones,
       st.sampled_from(["", " ", "\t", "\n "]))
def test_parse_date_equals_stdlib(day: str, dd: int, mon: str, yy: str, hh: str, mi: str, ss: str | None,
                                  zone: str, lead: str) -> None:
    value = f"{lead}{day}{dd} {mon} {yy} {hh}:{mi}{'' if ss is None else ':' + ss} {zone}"
    assert mime.parse_date(value) == mime._parse_date_stdlib(value), value


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789 :+-,JanFebMonTue()\t", max_size=40))
def test_parse_date_on_noise_equals_stdlib(value: str) -> None:
    assert mime.parse_date(value) == mime._parse_date_stdlib(value)


def test_usual_dates_take_the_fast_path() -> None:
    assert mime._RFC5322_DATE.match("Fri, 7 Jun 2019 11:10:09 -0400") is not None
    assert mime.parse_date("Fri, 7 Jun 2019 11:10:09 -0400") == 1559920209.0
    assert mime.parse_date("Thu, 1 Jan 1970 00:00:00 +0100") is None  # before 1970
