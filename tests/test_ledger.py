"""Emissions arithmetic against numbers computed by hand, with a member joining mid-plan."""

from __future__ import annotations

import pytest

from pdca.ledger import EmissionValue, Key, region_year, target_reduction
from pdca.plans import Plan

# Three members: 431001 and 432105 from FY2016, 432113 joins in FY2020. Two sectors.
PLAN_TOML = """
[plan]
id = "tiny"
name_ja = "小さな計画"
name_en = "Tiny plan"
base_year = 2013
first_fiscal_year = 2016
last_fiscal_year = 2030
rating_scale = [{ id = "A", label_ja = "順調", label_en = "on track" }]

[[members]]
code = "431001"
name_ja = "熊本市"
name_en = "Kumamoto City"
joined = 2016

[[members]]
code = "432105"
name_ja = "菊池市"
name_en = "Kikuchi City"
joined = 2016

[[members]]
code = "432113"
name_ja = "宇土市"
name_en = "Uto City"
joined = 2020

[[sectors]]
id = "household"
name_ja = "家庭部門"
name_en = "Household"

[[sectors]]
id = "transport_road"
name_ja = "自動車"
name_en = "Road"

[[targets]]
fiscal_year = 2030
reduction = 0.46

[[targets]]
fiscal_year = 2050
reduction = 1.0

[[schedule]]
id = "confirm_status"
actor = "municipality"
title_ja = "実施状況の確認"
title_en = "Confirm status"
opens = "04-01"
due = "06-30"
"""

PLAN = Plan.from_toml_text(PLAN_TOML, source="tiny.toml")

# (municipality, year, household, transport_road)
TABLE = [
    ("431001", 2013, 100.0, 200.0),
    ("432105", 2013, 50.0, 50.0),
    ("432113", 2013, 40.0, 60.0),
    ("431001", 2019, 90.0, 180.0),
    ("432105", 2019, 45.0, 40.0),
    ("431001", 2022, 80.0, 150.0),
    ("432105", 2022, 40.0, 30.0),
    ("432113", 2022, 30.0, 50.0),
]


def values(rows: list[tuple[str, int, float, float]] = TABLE) -> dict[Key, EmissionValue]:
    out: dict[Key, EmissionValue] = {}
    for code, year, household, road in rows:
        for sector, value in (("household", household), ("transport_road", road)):
            out[(code, year, sector)] = EmissionValue(
                municipality=code, year=year, sector=sector, value_t_co2=value,
                status="final" if year == 2013 else "preliminary",
            )
    return out


def test_region_total_before_the_new_member_joined_uses_two_members() -> None:
    result = region_year(PLAN, values(), 2019)
    assert result.members == ("431001", "432105")
    # 90 + 180 + 45 + 40 = 355; base over the same two: 100 + 200 + 50 + 50 = 400
    assert result.total == 355.0
    assert result.base_total == 400.0
    assert result.reduction == pytest.approx(1 - 355 / 400)  # 11.25 %
    assert result.by_sector == {"household": 135.0, "transport_road": 220.0}
    assert result.by_member == {"431001": 270.0, "432105": 85.0}


def test_new_member_counts_in_both_the_year_and_its_base_year() -> None:
    result = region_year(PLAN, values(), 2022)
    assert result.members == ("431001", "432105", "432113")
    # 80 + 150 + 40 + 30 + 30 + 50 = 380; base over the same three: 400 + 40 + 60 = 500
    assert result.total == 380.0
    assert result.base_total == 500.0
    assert result.reduction == pytest.approx(0.24)
    # Comparing 380 with the two founders' 400 would show only 5 %: like-for-like matters.


def test_target_path_is_a_straight_line_between_targets() -> None:
    assert target_reduction(PLAN, 2012) is None
    assert target_reduction(PLAN, 2013) == 0.0
    assert target_reduction(PLAN, 2022) == pytest.approx(0.46 * 9 / 17)
    assert target_reduction(PLAN, 2030) == pytest.approx(0.46)
    assert target_reduction(PLAN, 2040) == pytest.approx(0.46 + 0.54 * 10 / 20)
    assert target_reduction(PLAN, 2060) == 1.0
    result = region_year(PLAN, values(), 2022)
    assert result.target_total == pytest.approx(500 * (1 - 0.46 * 9 / 17))


def test_missing_value_is_reported_missing_never_zero() -> None:
    rows = [r for r in TABLE if not (r[0] == "432113" and r[1] == 2022)]
    result = region_year(PLAN, values(rows), 2022)
    assert result.total is None
    assert result.reduction is None
    assert not result.complete
    assert result.missing == (("432113", "household"), ("432113", "transport_road"))
    assert result.by_sector == {"household": None, "transport_road": None}
    assert result.by_member["432113"] is None
    assert result.by_member["431001"] == 230.0


def test_missing_base_year_value_leaves_the_reduction_missing() -> None:
    rows = [r for r in TABLE if not (r[0] == "432113" and r[1] == 2013)]
    result = region_year(PLAN, values(rows), 2022)
    assert result.total == 380.0
    assert result.base_total is None
    assert result.reduction is None
    assert result.base_missing == (("432113", "household"), ("432113", "transport_road"))


def test_statuses_are_counted_for_the_note_on_preliminary_values() -> None:
    assert region_year(PLAN, values(), 2022).statuses == {"preliminary": 6}
