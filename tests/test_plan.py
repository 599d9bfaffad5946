"""Plan files: the bundled Kumamoto plan, and one located InvalidInput for every bad file."""

from __future__ import annotations

import ast
import textwrap
from datetime import date
from pathlib import Path

import pytest

import pdca.plans
from pdca.errors import InvalidInput
from pdca.plans import (
    ACTORS,
    Member,
    Plan,
    Step,
    Target,
    bundled_plans,
    load_plan,
)

# Line numbers matter: the tests below name the exact lines of this text.
VALID = textwrap.dedent(
    """\
    [plan]
    id = "demo"
    name_ja = "テスト計画"
    name_en = "Test plan"
    first_fiscal_year = 2021
    last_fiscal_year = 2030
    rating_scale = [
      { id = "A", label_ja = "順調", label_en = "on track" },
      { id = "B", label_ja = "遅れ", label_en = "behind" },
    ]

    [[members]]
    code = "431001"
    name_ja = "熊本市"
    name_en = "Kumamoto City"
    joined = 2016

    [[members]]
    code = "432105"
    name_ja = "菊池市"
    name_en = "Kikuchi City"
    joined = 2019

    [[sectors]]
    id = "household"
    name_ja = "家庭部門"
    name_en = "Households"

    [[schedule]]
    id = "calculate"
    actor = "municipality"
    title_ja = "排出量の算定"
    title_en = "Calculate emissions"
    opens = "07-01"
    due = "09-30"

    [[schedule]]
    id = "evaluate"
    actor = "municipality"
    title_ja = "点検・評価"
    title_en = "Evaluate"
    opens = "08-01"
    due = "10-31"
    after = "calculate"
    """
)


def _edit(old: str, new: str, text: str = VALID) -> str:
    assert text.count(old) == 1, f"{old!r} must occur exactly once"
    return text.replace(old, new)


def _write(tmp_path: Path, text: str, name: str = "plan.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(tmp_path: Path, text: str) -> InvalidInput:
    path = _write(tmp_path, text)
    with pytest.raises(InvalidInput) as info:
        load_plan(path)
    return info.value


# --------------------------------------------------------------------------- the bundled plan


@pytest.fixture(scope="module")
def kumamoto() -> Plan:
    return load_plan("kumamoto")


def test_the_kumamoto_plan_is_bundled() -> None:
    assert "kumamoto" in bundled_plans()


def test_the_bundled_plan_has_18_members_from_fy2021(kumamoto: Plan) -> None:
    assert kumamoto.id == "kumamoto"
    assert kumamoto.name_ja == "熊本連携中枢都市圏地球温暖化対策実行計画"
    assert len(kumamoto.members) == 18
    assert len(kumamoto.members_of(2021)) == 18
    assert kumamoto.members_of(2021)[0].name_ja == "熊本市"


def test_kikuchi_city_is_missing_before_it_joined_in_fy2019(kumamoto: Plan) -> None:
    fy2018 = kumamoto.members_of(2018)
    assert len(fy2018) == 17
    assert "432105" not in {m.code for m in fy2018}
    assert kumamoto.member("432105").name_ja == "菊池市"
    assert kumamoto.member("432105").joined == 2019
    assert len(kumamoto.members_of(2019)) == 18
    assert kumamoto.members_of(2015) == []


def test_the_check_of_fy2025_calculates_the_emissions_of_fy2024(kumamoto: Plan) -> None:
    assert kumamoto.base_year == 2013
    assert kumamoto.statistics_lag == 2
    assert kumamoto.inventory_year(2025) == 2024


def test_the_bundled_plan_has_the_ministrys_sectors(kumamoto: Plan) -> None:
    assert kumamoto.sector_ids == (
        "industry_manufacturing",
        "industry_construction_mining",
        "industry_agriculture",
        "commercial",
        "household",
        "transport_road",
        "transport_rail",
        "transport_ship",
        "energy_conversion",
        "waste",
    )
    groups = {s.id: s.group for s in kumamoto.sectors}
    assert groups["industry_agriculture"] == "industry"
    assert groups["transport_ship"] == "transport"
    assert groups["household"] is None


def test_the_bundled_plan_aims_at_net_zero_by_2050(kumamoto: Plan) -> None:
    assert [(t.fiscal_year, t.reduction) for t in kumamoto.targets] == [
        (2030, 0.46), (2035, 0.60), (2040, 0.73), (2050, 1.0)
    ]
    assert kumamoto.target_for(2025) == Target(fiscal_year=2030, reduction=0.46)
    assert kumamoto.target_for(2030) == Target(fiscal_year=2030, reduction=0.46)
    assert kumamoto.target_for(2031) == Target(fiscal_year=2035, reduction=0.60)
    assert kumamoto.target_for(2051) is None


def test_the_bundled_plan_has_five_policy_areas_four_priority_projects_and_a_rating_scale(
    kumamoto: Plan,
) -> None:
    assert [p.id for p in kumamoto.policy_areas] == [
        "renewable_energy", "energy_saving", "urban_circulation", "nature", "awareness"
    ]
    assert [p.id for p in kumamoto.priority_projects] == [
        "priority-1", "priority-2", "priority-3", "priority-4"
    ]
    assert kumamoto.rating_ids == ("A", "B", "C", "D")
    assert kumamoto.rating_scale[0].label_ja == "順調"


def test_the_bundled_schedule_follows_figure_7_4_in_order(kumamoto: Plan) -> None:
    assert [(s.id, s.actor, s.after) for s in kumamoto.steps] == [
        ("confirm_status", "municipality", None),
        ("calculate_emissions", "municipality", "confirm_status"),
        ("evaluate", "municipality", "calculate_emissions"),
        ("internal_report", "municipality", "evaluate"),
        ("aggregate", "secretariat", "internal_report"),
        ("liaison_council", "liaison_council", "aggregate"),
        ("advisory_committee", "advisory_committee", "liaison_council"),
        ("publish", "secretariat", "advisory_committee"),
    ]
    assert {s.actor for s in kumamoto.steps} == set(ACTORS)
    assert kumamoto.step("liaison_council").opens == "12-01"
    assert kumamoto.step("liaison_council").due == "01-31"
    assert [m.month_day for m in kumamoto.staff_meetings] == ["05-20", "08-20", "11-20", "02-10"]


def test_schedule_dates_of_a_check_fall_in_the_following_fiscal_year_on_business_days(
    kumamoto: Plan,
) -> None:
    assert kumamoto.business_days
    # The check of FY2025: 2027-01-31 is a Sunday, so the council is due on Monday 1 February.
    assert kumamoto.step_window("liaison_council", 2025) == (date(2026, 12, 1), date(2027, 2, 1))
    assert kumamoto.step_window("confirm_status", 2025) == (date(2026, 4, 1), date(2026, 6, 30))


def test_without_business_days_schedule_dates_stay_where_they_fall(kumamoto: Plan) -> None:
    data = kumamoto.to_dict()
    data["plan"]["business_days"] = False
    plan = Plan.from_dict(data)
    assert plan.step_window("liaison_council", 2025) == (date(2026, 12, 1), date(2027, 1, 31))


def test_staff_meetings_are_dated_in_the_fiscal_year_itself(kumamoto: Plan) -> None:
    assert kumamoto.staff_meeting_dates(2025) == [
        date(2025, 5, 20), date(2025, 8, 20), date(2025, 11, 20), date(2026, 2, 10)
    ]


def test_an_unknown_member_or_step_is_refused_by_name(kumamoto: Plan) -> None:
    with pytest.raises(InvalidInput, match="'432016' is not a member of plan 'kumamoto'"):
        kumamoto.member("432016")
    with pytest.raises(InvalidInput, match="unknown step 'publication'; the steps are"):
        kumamoto.step("publication")


def test_a_plan_survives_a_round_trip_through_its_dict(kumamoto: Plan) -> None:
    again = Plan.from_dict(kumamoto.to_dict())
    assert again == kumamoto
    assert again.digest == kumamoto.digest


# --------------------------------------------------------------------------- loading


def test_a_plan_file_is_loaded_from_a_path_or_its_name_as_text(tmp_path: Path) -> None:
    path = _write(tmp_path, VALID)
    plan = load_plan(path)
    assert plan == load_plan(str(path))
    assert plan.source == str(path)
    assert plan.base_year == 2013 and plan.statistics_lag == 2  # the defaults
    assert plan.business_days is True and plan.reminder_days == 7
    assert plan.targets == () and plan.staff_meetings == ()
    assert [m.code for m in plan.members_of(2018)] == ["431001"]
    assert plan.inventory_year(2025) == 2024


def test_a_plan_file_with_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(VALID.encode("utf-8-sig"))
    assert load_plan(path).id == "demo"


def test_a_plan_file_that_is_not_utf8_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "sjis.toml"
    path.write_bytes(VALID.encode("shift_jis"))
    with pytest.raises(InvalidInput) as info:
        load_plan(path)
    assert info.value.source == str(path)
    assert info.value.line == 3  # name_ja = "テスト計画"
    assert "not UTF-8" in info.value.reason


def test_a_missing_plan_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot read the plan file") as info:
        load_plan(tmp_path / "nope.toml")
    assert info.value.source == str(tmp_path / "nope.toml")


def test_an_unknown_bundled_plan_name_lists_the_bundled_plans() -> None:
    with pytest.raises(InvalidInput, match=r"no bundled plan 'kumamotto'.*kumamoto"):
        load_plan("kumamotto")


def test_the_rating_scale_may_be_written_as_an_array_of_tables(tmp_path: Path) -> None:
    tables = _edit(
        """\
rating_scale = [
  { id = "A", label_ja = "順調", label_en = "on track" },
  { id = "B", label_ja = "遅れ", label_en = "behind" },
]
""",
        """\

[[plan.rating_scale]]
id = "A"
label_ja = "順調"
label_en = "on track"

[[plan.rating_scale]]
id = "A"
label_ja = "遅れ"
label_en = "behind"
""",
    )
    err = _error(tmp_path, tables)
    assert (err.line, err.field) == (14, "plan.rating_scale[1].id")
    assert "duplicate id 'A'" in err.reason


def test_the_digest_follows_the_content_not_the_formatting(tmp_path: Path) -> None:
    plan = Plan.from_toml_text(VALID)
    reformatted = "# a comment\n" + VALID.replace(" = ", "   =   ")
    assert Plan.from_toml_text(reformatted, source="other").digest == plan.digest
    changed = Plan.from_toml_text(_edit('name_en = "Test plan"', 'name_en = "Test"'))
    assert changed.digest != plan.digest
    assert len(plan.digest) == 64


def test_a_plan_file_is_a_frozen_value() -> None:
    plan = Plan.from_toml_text(VALID)
    with pytest.raises(AttributeError):
        plan.id = "other"  # type: ignore[misc]


def test_plan_values_are_validated_when_built_directly() -> None:
    with pytest.raises(InvalidInput) as info:
        Member(code="431002", name_ja="熊本市", name_en="Kumamoto City", joined=2016)
    assert info.value.field == "code"
    with pytest.raises(InvalidInput) as info:
        Step(id="x", actor="mayor", title_ja="x", title_en="x", opens="04-01", due="05-01")
    assert info.value.field == "actor"


def test_a_member_leaves_from_the_fiscal_year_named_left() -> None:
    member = Member(code="431001", name_ja="熊本市", name_en="Kumamoto", joined=2016, left=2025)
    assert member.is_member_in(2024)
    assert not member.is_member_in(2025)


# --------------------------------------------------------------------------- bad files


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "message"),
    [
        pytest.param(
            'code = "432105"', 'code = "432106"', 19, "members[1].code",
            "municipality code '432106' has a wrong check digit (expected 432105)",
            id="bad-check-digit",
        ),
        pytest.param(
            'code = "432105"', 'code = "４３２１０５"', 19, "members[1].code",
            "must be written in ASCII digits",
            id="full-width-code",
        ),
        pytest.param(
            'code = "432105"', "code = 432105", 19, "members[1].code",
            "code must be text in quotes (leading zeros matter), not a whole number",
            id="code-not-in-quotes",
        ),
        pytest.param(
            'name_en = "Households"', 'nmae_en = "Households"', 27, "sectors[0].nmae_en",
            "unknown key 'nmae_en' in [[sectors]]; did you mean 'name_en'?",
            id="unknown-sector-key",
        ),
        pytest.param(
            'code = "432105"', 'code = "431001"', 19, "members[1].code",
            "duplicate code '431001': already given in members[0]",
            id="duplicate-member-code",
        ),
        pytest.param(
            'opens = "07-01"', 'opens = "02-30"', 34, "schedule[0].opens",
            "month-day '02-30' does not exist: February has 28 days",
            id="date-that-does-not-exist",
        ),
        pytest.param(
            'opens = "07-01"', 'opens = "02-29"', 34, "schedule[0].opens",
            "does not exist every year",
            id="leap-day",
        ),
        pytest.param(
            'opens = "07-01"', 'opens = "7-1"', 34, "schedule[0].opens",
            "must be written with two digits each: '07-01'",
            id="month-day-not-zero-padded",
        ),
        pytest.param(
            'after = "calculate"', 'after = "calculation"', 44, "schedule[1].after",
            "step 'evaluate' comes after unknown step 'calculation'; the steps are "
            "calculate, evaluate",
            id="step-after-unknown-step",
        ),
        pytest.param(
            'due = "09-30"\n', 'due = "09-30"\nafter = "evaluate"\n', 36, "schedule[0].after",
            "step 'calculate' comes after 'evaluate', which is not an earlier step",
            id="step-after-later-step",
        ),
        pytest.param(
            'opens = "08-01"', 'opens = "11-01"', 42, "schedule[1].opens",
            "opens 11-01 is after due 10-31 (in fiscal-year order, April first)",
            id="opens-after-due",
        ),
        pytest.param(
            'opens = "07-01"\ndue = "09-30"', 'opens = "03-01"\ndue = "04-30"', 34,
            "schedule[0].opens", "opens 03-01 is after due 04-30",
            id="opens-after-due-across-the-new-fiscal-year",
        ),
        pytest.param(
            'opens = "08-01"\ndue = "10-31"', 'opens = "05-01"\ndue = "06-30"', 43,
            "schedule[1].due",
            "step 'evaluate' is due 06-30, before step 'calculate' which it comes after "
            "opens (07-01)",
            id="due-before-the-previous-step-opens",
        ),
        pytest.param(
            'actor = "municipality"\ntitle_ja = "点検', 'actor = "mayor"\ntitle_ja = "点検', 39,
            "schedule[1].actor",
            "unknown actor 'mayor'; the actors are municipality, secretariat, "
            "liaison_council, advisory_committee",
            id="unknown-actor",
        ),
        pytest.param(
            'name_ja = "家庭部門"', "name_ja = 家庭部門", 26, "sectors[0].name_ja",
            "TOML syntax error: Invalid value (column 11)",
            id="toml-syntax-error",
        ),
        pytest.param(
            "last_fiscal_year = 2030\n", "last_fiscal_year = 2030\nreminder_day = 3\n", 7,
            "plan.reminder_day",
            "unknown key 'reminder_day' in [plan]; did you mean 'reminder_days'?",
            id="unknown-plan-key",
        ),
        pytest.param(
            "[[sectors]]", "[[sector]]", 24, "sector",
            "unknown key 'sector' in the plan file; did you mean 'sectors'?",
            id="unknown-table",
        ),
        pytest.param(
            'label_en = "behind"', 'label_en = "behind", colour = "red"', 9,
            "plan.rating_scale[1].colour", "unknown key 'colour' in a rating",
            id="unknown-key-in-an-inline-table",
        ),
        pytest.param(
            '{ id = "B", label_ja', '{ id = "A", label_ja', 9, "plan.rating_scale[1].id",
            "duplicate id 'A': already given in plan.rating_scale[0]",
            id="duplicate-rating",
        ),
        pytest.param(
            'name_en = "Kumamoto City"\n', "", 12, "members[0].name_en",
            "[[members]] lacks the required key 'name_en'",
            id="missing-key",
        ),
        pytest.param(
            "first_fiscal_year = 2021", 'first_fiscal_year = "2021"', 5,
            "plan.first_fiscal_year", "first_fiscal_year must be a whole number, not text",
            id="year-as-text",
        ),
        pytest.param(
            "first_fiscal_year = 2021", "first_fiscal_year = 2012", 5,
            "plan.first_fiscal_year",
            "first_fiscal_year (2012) must come after base_year (2013)",
            id="plan-starting-before-its-base-year",
        ),
        pytest.param(
            "joined = 2019", "joined = 2019\nleft = 2019", 23, "members[1].left",
            "left (2019) must come after joined (2019)",
            id="member-leaving-before-joining",
        ),
        pytest.param(
            'id = "demo"', 'id = "Demo Plan"', 2, "plan.id",
            "must be 1–64 lower-case letters, digits",
            id="plan-id-not-a-slug",
        ),
    ],
)
def test_a_bad_plan_file_gives_one_invalid_input_naming_file_line_and_field(
    tmp_path: Path, old: str, new: str, line: int, field: str, message: str
) -> None:
    err = _error(tmp_path, _edit(old, new))
    assert err.source == str(tmp_path / "plan.toml")
    assert err.line == line
    assert err.field == field
    assert message in err.reason
    assert str(err).startswith(f"{tmp_path / 'plan.toml'}:{line}, field {field!r}: ")


TARGETS = """
[[targets]]
fiscal_year = 2030
reduction = 0.46

[[targets]]
fiscal_year = 2050
reduction = 1.0
"""


def test_targets_are_read_with_their_years_and_fractions(tmp_path: Path) -> None:
    plan = load_plan(_write(tmp_path, VALID + TARGETS))
    assert plan.targets == (
        Target(fiscal_year=2030, reduction=0.46),
        Target(fiscal_year=2050, reduction=1.0),
    )


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "message"),
    [
        pytest.param(
            "reduction = 1.0", "reduction = 1.2", 52, "targets[1].reduction",
            "reduction 1.2 must be a fraction from 0 to 1", id="reduction-above-one",
        ),
        pytest.param(
            "reduction = 0.46", "reduction = -0.1", 48, "targets[0].reduction",
            "must be a fraction from 0 to 1", id="negative-reduction",
        ),
        pytest.param(
            "\nfiscal_year = 2050", "\nfiscal_year = 2030", 51, "targets[1].fiscal_year",
            "target years must increase: 2030 follows 2030", id="target-years-not-increasing",
        ),
        pytest.param(
            "\nfiscal_year = 2030", "\nfiscal_year = 2013", 47, "targets[0].fiscal_year",
            "target year 2013 must come after base_year (2013)", id="target-in-the-base-year",
        ),
    ],
)
def test_a_bad_target_is_located(
    tmp_path: Path, old: str, new: str, line: int, field: str, message: str
) -> None:
    err = _error(tmp_path, _edit(old, new, VALID + TARGETS))
    assert (err.line, err.field) == (line, field)
    assert message in err.reason


def test_a_duplicate_toml_key_is_a_syntax_error_with_its_line(tmp_path: Path) -> None:
    err = _error(tmp_path, _edit('name_ja = "家庭部門"\n', 'name_ja = "家庭部門"\nname_ja = "x"\n'))
    assert err.line == 27
    assert err.field == "sectors[0].name_ja"
    assert "TOML syntax error: Cannot overwrite a value" in err.reason


def test_a_plan_file_without_a_plan_table_names_the_missing_table(tmp_path: Path) -> None:
    text = VALID.split("\n[[members]]", 1)[1]
    err = _error(tmp_path, "[[members]]" + text)
    assert err.field == "plan"
    assert err.line is None
    assert "no [plan] table" in err.reason


def test_a_plan_file_without_steps_is_refused(tmp_path: Path) -> None:
    err = _error(tmp_path, VALID.split("[[schedule]]", 1)[0])
    assert err.field == "schedule"
    assert "no [[schedule]] tables" in err.reason


def test_a_plan_from_data_names_the_field_but_no_line() -> None:
    data = Plan.from_toml_text(VALID).to_dict()
    data["members"][1]["code"] = "432106"
    with pytest.raises(InvalidInput) as info:
        Plan.from_dict(data, source="db")
    assert (info.value.source, info.value.line, info.value.field) == ("db", None, "members[1].code")


def test_the_plan_module_imports_nothing_from_storage_engine_or_cli() -> None:
    tree = ast.parse(Path(pdca.plans.__file__).read_text(encoding="utf-8"))
    modules = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {m for m in modules if m.lstrip(".").split(".")[0] in ("storage", "engine", "cli")}
