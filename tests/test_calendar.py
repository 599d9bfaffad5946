"""The fiscal-year calendar: Tokyo time whatever the process, April to March, 開庁日."""

from __future__ import annotations

import ast
import doctest
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pdca import calendar
from pdca.calendar import (
    TOKYO,
    date_in_fiscal_year,
    fiscal_order,
    fiscal_year_end,
    fiscal_year_of,
    fiscal_year_of_date,
    fiscal_year_start,
    fy_label,
    is_business_day,
    next_business_day,
    parse_month_day,
    review_date,
    start_of_day,
    wareki,
)
from pdca.errors import InvalidInput

NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture(params=["UTC", "America/Los_Angeles", "Pacific/Kiritimati", "Asia/Tokyo"])
def process_tz(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test with the process's local time zone set to each of these."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TZ", request.param)
        time.tzset()
        yield request.param
    time.tzset()


# --------------------------------------------------------------------------- fiscal years


@pytest.mark.parametrize(
    ("moment", "fy"),
    [
        (datetime(2026, 3, 31, 23, 59, 59, tzinfo=TOKYO), 2025),
        (datetime(2026, 3, 31, 23, 59, 59, 999999, tzinfo=TOKYO), 2025),
        (datetime(2026, 4, 1, 0, 0, 0, tzinfo=TOKYO), 2026),
        (datetime(2026, 3, 31, 14, 59, 59, tzinfo=UTC), 2025),
        (datetime(2026, 3, 31, 15, 0, 0, tzinfo=UTC), 2026),
        # Still 31 March in New York, already 1 April in Tokyo.
        (datetime(2026, 3, 31, 11, 0, 0, tzinfo=NEW_YORK), 2026),
        (datetime(2026, 1, 1, 0, 0, 0, tzinfo=TOKYO), 2025),
        (datetime(2025, 12, 31, 15, 0, 0, tzinfo=UTC), 2025),
    ],
)
def test_the_fiscal_year_of_a_moment_is_decided_in_tokyo_time(moment: datetime, fy: int) -> None:
    assert fiscal_year_of(moment) == fy


def test_the_fiscal_year_boundary_does_not_depend_on_the_process_time_zone(
    process_tz: str,
) -> None:
    last_second = datetime(2026, 3, 31, 14, 59, 59, tzinfo=UTC)
    first_second = last_second + timedelta(seconds=1)
    assert time.localtime(0).tm_zone  # the process time zone really is switched
    assert fiscal_year_of(last_second) == 2025
    assert fiscal_year_of(first_second) == 2026
    assert fiscal_year_start(2026).timestamp() == first_second.timestamp()
    assert fiscal_year_end(2025) == first_second
    assert start_of_day(date(2026, 4, 1)).astimezone(UTC) == first_second


def test_a_naive_datetime_is_refused_because_its_fiscal_year_is_ambiguous() -> None:
    with pytest.raises(InvalidInput, match="has no time zone"):
        fiscal_year_of(datetime(2026, 3, 31, 23, 59, 59))


def test_a_datetime_is_refused_where_a_date_is_expected() -> None:
    with pytest.raises(InvalidInput, match=r"astimezone\(TOKYO\)"):
        fiscal_year_of_date(datetime(2026, 4, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("day", "fy"),
    [(date(2025, 4, 1), 2025), (date(2026, 3, 31), 2025), (date(2026, 4, 1), 2026),
     (date(2025, 3, 31), 2024)],
)
def test_a_date_belongs_to_the_fiscal_year_that_began_the_previous_april(
    day: date, fy: int
) -> None:
    assert fiscal_year_of_date(day) == fy


def test_a_fiscal_year_starts_at_midnight_tokyo_time_on_1_april() -> None:
    start = fiscal_year_start(2025)
    assert start == datetime(2025, 4, 1, tzinfo=TOKYO)
    assert start.astimezone(UTC) == datetime(2025, 3, 31, 15, 0, tzinfo=UTC)
    assert start.utcoffset() == timedelta(hours=9)


def test_a_fiscal_year_ends_where_the_next_one_starts() -> None:
    assert fiscal_year_end(2025) == fiscal_year_start(2026)
    assert fiscal_year_of(fiscal_year_end(2025) - timedelta(microseconds=1)) == 2025


@given(
    st.datetimes(
        min_value=datetime(1990, 1, 1),
        max_value=datetime(2100, 12, 31),
        timezones=st.sampled_from([UTC, TOKYO, NEW_YORK]),
    )
)
def test_every_moment_lies_between_the_start_and_end_of_its_fiscal_year(
    moment: datetime,
) -> None:
    fy = fiscal_year_of(moment)
    assert fiscal_year_start(fy) <= moment < fiscal_year_end(fy)


@pytest.mark.parametrize("fy", [True, "2025", 0, 10_000])
def test_a_fiscal_year_that_is_not_a_plausible_whole_number_is_refused(fy: object) -> None:
    with pytest.raises(InvalidInput, match="fiscal year"):
        fiscal_year_start(fy)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- schedule dates


@pytest.mark.parametrize(
    ("month_day", "expected"),
    [
        ("04-01", date(2026, 4, 1)),
        ("06-30", date(2026, 6, 30)),
        ("12-31", date(2026, 12, 31)),
        ("01-31", date(2027, 1, 31)),
        ("03-31", date(2027, 3, 31)),
    ],
)
def test_the_check_of_a_fiscal_year_is_scheduled_in_the_following_fiscal_year(
    month_day: str, expected: date
) -> None:
    assert review_date(2025, month_day) == expected


def test_a_month_day_of_a_fiscal_year_falls_in_the_next_calendar_year_from_january() -> None:
    assert date_in_fiscal_year(2025, "05-20") == date(2025, 5, 20)
    assert date_in_fiscal_year(2025, "02-10") == date(2026, 2, 10)


def test_the_start_of_a_day_is_midnight_tokyo_time() -> None:
    start = start_of_day(date(2026, 6, 30))
    assert start == datetime(2026, 6, 30, tzinfo=TOKYO)
    assert start.astimezone(UTC) == datetime(2026, 6, 29, 15, 0, tzinfo=UTC)


# --------------------------------------------------------------------------- business days


@pytest.mark.parametrize(
    ("day", "open_"),
    [
        (date(2026, 5, 1), True),  # Friday
        (date(2026, 5, 2), False),  # Saturday
        (date(2026, 5, 4), False),  # みどりの日
        (date(2026, 5, 5), False),  # こどもの日
        (date(2026, 5, 6), False),  # 振替休日 for 憲法記念日 on a Sunday
        (date(2026, 5, 7), True),
        (date(2025, 11, 24), False),  # 振替休日 for 勤労感謝の日 on a Sunday
        (date(2025, 11, 25), True),
        (date(2025, 12, 26), True),  # Friday
        (date(2025, 12, 29), False),  # Monday, year-end closing
        (date(2025, 12, 31), False),
        (date(2026, 1, 2), False),  # Friday, new-year closing
        (date(2026, 1, 5), True),
    ],
)
def test_offices_are_closed_on_weekends_public_holidays_and_over_the_new_year(
    day: date, open_: bool
) -> None:
    assert is_business_day(day) is open_


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2026, 5, 7), date(2026, 5, 7)),  # already a business day
        (date(2026, 5, 2), date(2026, 5, 7)),  # through Golden Week
        (date(2025, 11, 22), date(2025, 11, 25)),  # through the substitute holiday
        (date(2025, 12, 27), date(2026, 1, 5)),  # through the year-end closing
    ],
)
def test_the_next_business_day_skips_closed_days(day: date, expected: date) -> None:
    assert next_business_day(day) == expected


# --------------------------------------------------------------------------- month-days


def test_a_month_day_is_read_as_month_and_day() -> None:
    assert parse_month_day("04-01") == (4, 1)
    assert parse_month_day("12-31") == (12, 31)
    assert parse_month_day("02-28") == (2, 28)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("02-30", "'02-30' does not exist: February has 28 days"),
        ("04-31", "'04-31' does not exist: April has 30 days"),
        ("13-01", "there is no month 13"),
        ("00-10", "there is no month 0"),
        ("04-00", "'04-00' does not exist"),
        ("02-29", "'02-29' does not exist every year"),
        ("4-1", "two digits each: '04-01'"),
        ("13-1", "there is no month 13"),
        ("０４-０１", "is not a month-day written MM-DD"),
        ("04/01", "is not a month-day written MM-DD"),
        ("04-01\n", "is not a month-day written MM-DD"),
        ("", "is not a month-day written MM-DD"),
    ],
)
def test_a_month_day_that_is_not_a_real_zero_padded_mm_dd_is_refused(
    text: str, message: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_month_day(text)
    assert message in info.value.reason


def test_a_month_day_that_is_not_text_is_refused() -> None:
    with pytest.raises(InvalidInput, match="must be text"):
        parse_month_day(401)  # type: ignore[arg-type]


def test_month_days_sort_in_fiscal_year_order_april_first() -> None:
    days = ["03-31", "01-15", "12-20", "04-01", "07-01"]
    assert sorted(days, key=fiscal_order) == ["04-01", "07-01", "12-20", "01-15", "03-31"]


# --------------------------------------------------------------------------- labels


def test_a_fiscal_year_is_labelled_in_english_and_japanese() -> None:
    assert fy_label(2025, "en") == "FY2025"
    assert fy_label(2025, "ja") == "2025年度"
    with pytest.raises(InvalidInput, match="unknown language 'fr'"):
        fy_label(2025, "fr")


@pytest.mark.parametrize(
    ("fy", "label"),
    [
        (2025, "令和7年度"),
        (2020, "令和2年度"),
        (2019, "令和元年度"),
        (2018, "平成30年度"),
        (1990, "平成2年度"),
        (1989, "平成元年度"),
    ],
)
def test_a_fiscal_year_is_named_in_the_japanese_era_calendar(fy: int, label: str) -> None:
    assert wareki(fy) == label


def test_the_first_year_of_an_era_can_be_written_as_1() -> None:
    assert wareki(2019, gannen=False) == "令和1年度"


def test_a_fiscal_year_before_heisei_has_no_era_label() -> None:
    with pytest.raises(InvalidInput, match="before Heisei"):
        wareki(1988)


# --------------------------------------------------------------------------- the module


def test_the_examples_in_the_calendar_docstrings_hold() -> None:
    result = doctest.testmod(calendar)
    assert result.attempted > 0 and result.failed == 0


def test_the_calendar_imports_nothing_from_storage_engine_or_cli() -> None:
    tree = ast.parse(Path(calendar.__file__).read_text(encoding="utf-8"))
    imported = {
        (node.module or "") for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    } | {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert not {m for m in imported if m.split(".")[0] in ("storage", "engine", "cli")}
    assert not {m for m in imported if m.startswith(("pdca.storage", "pdca.engine", "pdca.cli"))}
