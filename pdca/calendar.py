"""The fiscal-year calendar of Japanese municipalities (pure functions, no database).

* The time zone is Asia/Tokyo (:data:`TOKYO`), whatever the time zone of the process. Every
  function that takes a moment wants an *aware* datetime and refuses a naive one; every
  function that returns a moment returns an aware one.
* Fiscal year (年度) N runs from 1 April N, 00:00 Tokyo time, up to (not including)
  1 April N+1: FY2025 = 2025-04-01 … 2026-03-31. As an interval it is half-open:
  ``fiscal_year_start(n) <= moment < fiscal_year_end(n)``.
* The check (点検・評価) of FY N happens during FY N+1: a schedule date ``"MM-DD"`` of the
  review of FY N falls in calendar year N+1 for April–December and in N+2 for
  January–March (:func:`review_date`).
* A business day (開庁日) is a weekday that is neither a Japanese public holiday (by
  ``jpholiday``, substitute and citizens' holidays included) nor one of the usual closing
  days of municipal offices, 29 December – 3 January.
* A month-day is written strictly ``"MM-DD"``, zero-padded ASCII digits: ``"04-01"``, not
  ``"4-1"`` (one spelling per date keeps plan files and their digests canonical; the error
  message says how to write it). ``"02-29"`` is refused because it does not exist every
  year: a yearly schedule must name a date that does.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from .errors import InvalidInput

#: The time zone of every municipality of the plan.
TOKYO = ZoneInfo("Asia/Tokyo")

#: The first month of a fiscal year.
FISCAL_YEAR_FIRST_MONTH = 4

#: The smallest and largest fiscal years the calendar handles (the review of the largest
#: one still ends inside the range of :class:`datetime.date`).
MIN_FISCAL_YEAR = 1
MAX_FISCAL_YEAR = 9997

#: Languages of :func:`fy_label`.
LANGUAGES = ("ja", "en")

_MONTH_DAY_RE = re.compile(r"([0-9]{2})-([0-9]{2})")
_LOOSE_MONTH_DAY_RE = re.compile(r"([0-9]{1,2})-([0-9]{1,2})")
_MONTH_NAMES = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)
#: Days of each month in a leap year (02-29 is refused separately).
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

#: Japanese eras a fiscal year can be named in: (name, first fiscal year), newest first.
#: FY2019 began in Heisei 31 but is called 令和元年度, as the government names it.
ERAS = (("令和", 2019), ("平成", 1989))

# The year-end and new-year closing days of municipal offices (年末年始の休日).
_YEAR_END_CLOSING = frozenset({(12, 29), (12, 30), (12, 31), (1, 1), (1, 2), (1, 3)})
# Longest possible run of closed days is far below this (year end + weekend ≈ 9 days).
_MAX_CLOSED_RUN = 31


# --------------------------------------------------------------------------- checks


def _check_fiscal_year(fy: int) -> int:
    if isinstance(fy, bool) or not isinstance(fy, int):
        raise InvalidInput(f"a fiscal year must be a whole number, not {fy!r}")
    if not MIN_FISCAL_YEAR <= fy <= MAX_FISCAL_YEAR:
        raise InvalidInput(
            f"fiscal year {fy} is out of range ({MIN_FISCAL_YEAR}–{MAX_FISCAL_YEAR})"
        )
    return fy


def _check_date(d: date) -> date:
    # A datetime is a date too; taking its naive date part would silently ignore its time
    # zone, so it is refused: use fiscal_year_of() or convert with .astimezone(TOKYO).date().
    if isinstance(d, datetime):
        raise InvalidInput(
            f"expected a date, got the datetime {d.isoformat()}; "
            "convert it with .astimezone(TOKYO).date() first"
        )
    if not isinstance(d, date):
        raise InvalidInput(f"expected a date, got {d!r}")
    return d


# --------------------------------------------------------------------------- fiscal years


def fiscal_year_of(moment: datetime) -> int:
    """The fiscal year of an aware moment, taken in Tokyo time.

    >>> from datetime import UTC
    >>> fiscal_year_of(datetime(2026, 3, 31, 14, 59, 59, tzinfo=UTC))  # 23:59:59 Tokyo
    2025
    >>> fiscal_year_of(datetime(2026, 3, 31, 15, 0, 0, tzinfo=UTC))  # 00:00:00 Tokyo
    2026
    """
    if not isinstance(moment, datetime):
        raise InvalidInput(f"expected an aware datetime, got {moment!r}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidInput(
            f"the datetime {moment.isoformat()} has no time zone; "
            "give an aware datetime (e.g. tzinfo=TOKYO or UTC)"
        )
    return fiscal_year_of_date(moment.astimezone(TOKYO).date())


def fiscal_year_of_date(d: date) -> int:
    """The fiscal year a calendar date belongs to (April–March).

    >>> fiscal_year_of_date(date(2026, 3, 31)), fiscal_year_of_date(date(2026, 4, 1))
    (2025, 2026)
    """
    d = _check_date(d)
    return d.year if d.month >= FISCAL_YEAR_FIRST_MONTH else d.year - 1


def fiscal_year_start(fy: int) -> datetime:
    """The first moment of fiscal year ``fy``: 1 April ``fy``, 00:00 Tokyo time (aware)."""
    _check_fiscal_year(fy)
    return datetime(fy, FISCAL_YEAR_FIRST_MONTH, 1, tzinfo=TOKYO)


def fiscal_year_end(fy: int) -> datetime:
    """The first moment after fiscal year ``fy``: 1 April ``fy + 1``, 00:00 Tokyo time.

    The end is exclusive, so a moment belongs to FY ``fy`` exactly when
    ``fiscal_year_start(fy) <= moment < fiscal_year_end(fy)``; the last calendar day of
    the fiscal year is ``date(fy + 1, 3, 31)``.
    """
    _check_fiscal_year(fy)
    return datetime(fy + 1, FISCAL_YEAR_FIRST_MONTH, 1, tzinfo=TOKYO)


def date_in_fiscal_year(fy: int, month_day: str) -> date:
    """The date of ``"MM-DD"`` inside fiscal year ``fy`` (January–March fall in ``fy + 1``).

    >>> date_in_fiscal_year(2025, "05-20"), date_in_fiscal_year(2025, "02-10")
    (datetime.date(2025, 5, 20), datetime.date(2026, 2, 10))
    """
    _check_fiscal_year(fy)
    return _date_in_fiscal_year(fy, month_day)


def _date_in_fiscal_year(fy: int, month_day: str) -> date:
    month, day = parse_month_day(month_day)
    return date(fy if month >= FISCAL_YEAR_FIRST_MONTH else fy + 1, month, day)


def review_date(fy_under_review: int, month_day: str) -> date:
    """The date of ``"MM-DD"`` in the schedule of the check of FY ``fy_under_review``.

    The check of FY N happens in FY N+1: April–December fall in calendar year N+1,
    January–March in N+2.

    >>> review_date(2025, "06-30"), review_date(2025, "03-31")
    (datetime.date(2026, 6, 30), datetime.date(2027, 3, 31))
    """
    _check_fiscal_year(fy_under_review)
    return _date_in_fiscal_year(fy_under_review + 1, month_day)


def start_of_day(d: date) -> datetime:
    """00:00 Tokyo time on ``d``, as an aware datetime."""
    return datetime.combine(_check_date(d), time(0, 0), tzinfo=TOKYO)


# --------------------------------------------------------------------------- business days


def is_business_day(d: date) -> bool:
    """Whether municipal offices are open on ``d``.

    Not on Saturdays and Sundays, not on Japanese public holidays (substitute holidays
    included), not from 29 December to 3 January.
    """
    d = _check_date(d)
    if d.weekday() >= 5:
        return False
    if (d.month, d.day) in _YEAR_END_CLOSING:
        return False
    import jpholiday  # here, not at the top: a command that needs no business day skips it

    return not jpholiday.is_holiday(d)


def next_business_day(d: date) -> date:
    """``d`` if it is a business day, else the first business day after it."""
    d = _check_date(d)
    for offset in range(_MAX_CLOSED_RUN):
        candidate = d + timedelta(days=offset)
        if is_business_day(candidate):
            return candidate
    # pragma: no cover - the longest run of closed days is about nine
    raise AssertionError(f"no business day within {_MAX_CLOSED_RUN} days of {d}")


# --------------------------------------------------------------------------- month-days


def parse_month_day(text: str) -> tuple[int, int]:
    """``(month, day)`` of a month-day written ``"MM-DD"``; InvalidInput otherwise.

    Only zero-padded ASCII digits are accepted (``"04-01"``, not ``"4-1"``), only dates
    that exist, and not ``"02-29"``, which does not exist every year.

    >>> parse_month_day("04-01")
    (4, 1)
    """
    if not isinstance(text, str):
        raise InvalidInput(f"a month-day must be text written MM-DD (e.g. '04-01'), not {text!r}")
    match = _MONTH_DAY_RE.fullmatch(text)
    if match is None:
        loose = _LOOSE_MONTH_DAY_RE.fullmatch(text)
        if loose is not None:
            padded = f"{int(loose[1]):02d}-{int(loose[2]):02d}"
            parse_month_day(padded)  # a date that does not exist is named as such first
            raise InvalidInput(
                f"month-day {text!r} must be written with two digits each: {padded!r}"
            )
        raise InvalidInput(f"{text!r} is not a month-day written MM-DD (e.g. '04-01')")
    month, day = int(match[1]), int(match[2])
    if not 1 <= month <= 12:
        raise InvalidInput(f"month-day {text!r} does not exist: there is no month {month}")
    if month == 2 and day == 29:
        raise InvalidInput(
            "month-day '02-29' does not exist every year (only in leap years); "
            "use '02-28' or '03-01'"
        )
    if not 1 <= day <= _MONTH_DAYS[month - 1]:
        longest = 28 if month == 2 else _MONTH_DAYS[month - 1]
        raise InvalidInput(
            f"month-day {text!r} does not exist: {_MONTH_NAMES[month - 1]} has {longest} days"
        )
    return month, day


def fiscal_order(month_day: str) -> tuple[int, int]:
    """A sort key of ``"MM-DD"`` in fiscal-year order: April first, March last.

    >>> sorted(["01-15", "04-01", "12-20"], key=fiscal_order)
    ['04-01', '12-20', '01-15']
    """
    month, day = parse_month_day(month_day)
    return ((month - FISCAL_YEAR_FIRST_MONTH) % 12, day)


# --------------------------------------------------------------------------- labels


def fy_label(fy: int, lang: str = "en") -> str:
    """The fiscal year as people write it: ``"FY2025"`` (``en``) or ``"2025年度"`` (``ja``)."""
    _check_fiscal_year(fy)
    if lang == "ja":
        return f"{fy}年度"
    if lang == "en":
        return f"FY{fy}"
    raise InvalidInput(f"unknown language {lang!r}; the languages are {', '.join(LANGUAGES)}")


def wareki(fy: int, *, gannen: bool = True) -> str:
    """The fiscal year in the Japanese era calendar: ``wareki(2025) == "令和7年度"``.

    Reiwa 1 = FY2019 and Heisei 1 = FY1989; the first year of an era is written 元
    (``"令和元年度"``) unless ``gannen=False`` (``"令和1年度"``). Fiscal years before
    1989 (Shōwa) are refused.
    """
    _check_fiscal_year(fy)
    for era, first in ERAS:
        if fy >= first:
            year = fy - first + 1
            number = "元" if year == 1 and gannen else str(year)
            return f"{era}{number}年度"
    raise InvalidInput(
        f"fiscal year {fy} is before Heisei (1989); only 令和 and 平成 are supported"
    )


__all__ = [
    "ERAS",
    "FISCAL_YEAR_FIRST_MONTH",
    "LANGUAGES",
    "MAX_FISCAL_YEAR",
    "MIN_FISCAL_YEAR",
    "TOKYO",
    "date_in_fiscal_year",
    "fiscal_order",
    "fiscal_year_end",
    "fiscal_year_of",
    "fiscal_year_of_date",
    "fiscal_year_start",
    "fy_label",
    "is_business_day",
    "next_business_day",
    "parse_month_day",
    "review_date",
    "start_of_day",
    "wareki",
]


def parse_moment(text: str) -> datetime:
    """A point in time from ``YYYY-MM-DD`` (00:00 that day) or an ISO date-time.

    Without an offset the time is Tokyo time. Anything else raises :class:`InvalidInput`.

    >>> parse_moment("2026-04-01").isoformat()
    '2026-04-01T00:00:00+09:00'
    """
    value = text.strip() if isinstance(text, str) else ""
    try:
        if len(value) == 10:
            return start_of_day(date.fromisoformat(value))
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"not a time: {text!r}; write YYYY-MM-DD or YYYY-MM-DDTHH:MM (Tokyo time) or "
            "with an offset, e.g. 2026-04-01T09:00+09:00"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=TOKYO)
