"""CSV imports of measures and emissions: all or nothing.

Bad input gets one :class:`pdca.InvalidInput` naming the file (``source``), the CSV line
(``line``; the header is line 1) and the field (``field``), and nothing is written: neither
an entity nor an audit entry. Emission values move through their statuses by repeated
imports; a final value changes only by ``revise``. Which municipalities get a cycle
depends on the plan's membership in that fiscal year.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import pdca
from tests.conftest import KIKUCHI, KUMAMOTO
from tests.test_fiscal_year import Clock

YAMAGA = "432083"  # 山鹿市: a valid code, but not a member of the bundled plan
MEASURE_HEADER = ("code,municipality,title_ja,title_en,policy_area,kind,priority_project,"
                  "leading,indicator,unit,target")
EMISSION_HEADER = "municipality,year,sector,value_t_co2,status"


@dataclass
class Imports:
    engine: pdca.Engine
    clock: Clock
    tmp: Path

    def write(self, content: str | bytes, name: str = "input.csv") -> Path:
        path = self.tmp / name
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
        return path

    def snapshot(self) -> tuple[int, list[tuple[str, str, int]]]:
        """The audit log's length and every measure and emission value with its version."""
        views = (self.engine.entities(workflow="measure")
                 + self.engine.entities(workflow="emissions"))
        return len(list(self.engine.audit_log())), [(v.ref, v.state, v.version)
                                                     for v in views]


@pytest.fixture
def imports(db_url: str, tmp_path: Path) -> Iterator[Imports]:
    clock = Clock()
    engine = pdca.Engine.open(db_url, migrate=True, clock=clock)
    engine.bootstrap_admin("admin")
    engine.load_plan("kumamoto", actor="admin")
    engine.add_person("secretariat", role="secretariat", actor="admin")
    engine.add_person("staff-kumamoto", role="staff", municipality=KUMAMOTO, actor="admin")
    try:
        yield Imports(engine, clock, tmp_path)
    finally:
        engine.close()


def _csv(header: str, *rows: str) -> str:
    return "\n".join((header, *rows)) + "\n"


def _measure(
    code: str = "M-1",
    municipality: str = KUMAMOTO,
    *,
    policy_area: str = "renewable_energy",
    kind: str = "implementation",
    priority_project: str = "priority-1",
    leading: str = "false",
    target: str = "100",
    title_ja: str = "太陽光発電の導入支援",
) -> str:
    return ",".join((code, municipality, title_ja, "Solar subsidy", policy_area, kind,
                     priority_project, leading, "導入件数", "件", target))


def _emission(
    municipality: str = KUMAMOTO,
    year: str = "2024",
    sector: str = "household",
    value: str = "1000",
    status: str = "preliminary",
) -> str:
    return ",".join((municipality, year, sector, value, status))


def _refused_whole(
    imp: Imports, path: Path, kind: str, actor: str = "secretariat"
) -> pdca.InvalidInput:
    """Import ``path``; it must raise one InvalidInput and write nothing."""
    before = imp.snapshot()
    run = imp.engine.import_measures if kind == "measures" else imp.engine.import_emissions
    with pytest.raises(pdca.InvalidInput) as info:
        run(path, actor=actor)
    assert imp.snapshot() == before
    return info.value


# ----------------------------------------------------------------------------- measures


GOOD = _measure("M-1")
LATER = _measure("M-9")  # a good row after the bad one: the whole file is still refused


@pytest.mark.parametrize(
    ("content", "line", "field", "message"),
    [
        pytest.param(_csv(MEASURE_HEADER + ",colour", GOOD + ",red"), 1, None,
                     "(unknown colour)", id="unknown column"),
        pytest.param(_csv(MEASURE_HEADER.replace("policy_area", "area"), GOOD), 1, None,
                     "(missing policy_area; unknown area)", id="misnamed column"),
        pytest.param(_csv(MEASURE_HEADER.replace("title_ja,title_en", "title_en,title_ja"),
                          GOOD), 1, None, "in this order", id="columns out of order"),
        pytest.param(_csv(MEASURE_HEADER, GOOD, _measure("M-2", "431002"), LATER), 3,
                     "municipality",
                     "municipality code '431002' has a wrong check digit (expected 431001)",
                     id="bad check digit"),
        pytest.param(_csv(MEASURE_HEADER, GOOD, _measure("M-2", f"{KUMAMOTO};{YAMAGA}"),
                          LATER), 3, "municipality",
                     f"{YAMAGA} is not a member of plan kumamoto", id="not a member"),
        pytest.param(_csv(MEASURE_HEADER, GOOD, _measure("M-2"), _measure("M-1"), LATER), 4,
                     "code", "measure code M-1 appears twice (first on line 2)",
                     id="duplicate code"),
        pytest.param(_csv(MEASURE_HEADER, GOOD, _measure("M 2"), LATER), 3, "code",
                     "measure code 'M 2' is not valid", id="malformed code"),
        pytest.param(_csv(MEASURE_HEADER, GOOD, _measure("M-2", policy_area="forestry"),
                          LATER), 3, "policy_area",
                     "unknown policy area 'forestry'; the plan's are awareness, "
                     "energy_saving, nature, renewable_energy, urban_circulation",
                     id="unknown policy area"),
        pytest.param(_csv(MEASURE_HEADER, GOOD, _measure("M-2", priority_project="priority-9"),
                          LATER), 3, "priority_project",
                     "unknown priority project 'priority-9'; the plan's are priority-1, "
                     "priority-2, priority-3, priority-4", id="unknown priority project"),
        pytest.param(_csv(MEASURE_HEADER, GOOD, _measure("M-2", kind="dream"), LATER), 3,
                     "kind", "kind must be one of study, implementation, not 'dream'",
                     id="bad kind"),
        pytest.param(_csv(MEASURE_HEADER, GOOD, _measure("M-2", leading="yes"), LATER), 3,
                     "leading", "leading must be true or false", id="bad leading"),
        pytest.param(_csv(MEASURE_HEADER, GOOD, _measure("M-2", target="ten"), LATER), 3,
                     "target", "target must be a number, not 'ten'", id="non-numeric target"),
        pytest.param(_csv(MEASURE_HEADER, GOOD, _measure("M-2", title_ja=""), LATER), 3,
                     "title_ja", "title_ja must not be empty", id="empty title"),
        pytest.param(_csv(MEASURE_HEADER, GOOD, "M-2,431001,太陽光", LATER), 3, None,
                     "expected 11 columns", id="short row"),
        pytest.param(_csv(MEASURE_HEADER, GOOD, "", _measure("M-2", kind="dream")), 4, "kind",
                     "kind must be one of", id="line numbers count blank lines"),
    ],
)
def test_a_bad_measures_file_is_refused_whole_naming_file_line_and_field(
    imports: Imports, content: str, line: int, field: str | None, message: str
) -> None:
    path = imports.write(content)
    err = _refused_whole(imports, path, "measures")
    assert (err.source, err.line, err.field) == (str(path), line, field)
    assert message in err.reason
    assert str(err).startswith(f"{path}:{line}")


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        pytest.param(_csv(MEASURE_HEADER, "M-1,431001,太陽光発電,Solar,,study,,,,,")
                     .encode("cp932"), None, "the file is not UTF-8 text (save it as CSV UTF-8)",
                     id="Shift_JIS file"),
        pytest.param(b"", 1, "the header must be " + MEASURE_HEADER, id="empty file"),
        pytest.param(_csv(MEASURE_HEADER).encode(), None, "the file has no rows",
                     id="header only"),
    ],
)
def test_an_unreadable_or_empty_measures_file_is_refused_naming_the_file(
    imports: Imports, content: bytes, line: int | None, message: str
) -> None:
    path = imports.write(content)
    err = _refused_whole(imports, path, "measures")
    assert (err.source, err.line, err.field) == (str(path), line, None)
    assert message in err.reason


def test_a_missing_measures_file_is_refused_naming_the_path(imports: Imports) -> None:
    path = imports.tmp / "nowhere.csv"
    err = _refused_whole(imports, path, "measures")
    assert str(path) in str(err) and "does not exist" in str(err)


def test_a_missing_file_is_named_in_err_source(imports: Imports) -> None:
    path = imports.tmp / "nowhere.csv"
    err = _refused_whole(imports, path, "emissions")
    assert err.source == str(path)


def test_a_measure_code_already_in_the_database_is_refused_with_its_line(
    imports: Imports,
) -> None:
    engine = imports.engine
    engine.import_measures(imports.write(_csv(MEASURE_HEADER, GOOD), "first.csv"),
                           actor="secretariat")
    path = imports.write(_csv(MEASURE_HEADER, _measure("M-2"), _measure("M-1")), "second.csv")
    err = _refused_whole(imports, path, "measures")
    assert (err.source, err.line, err.field) == (str(path), 3, "code")
    assert err.reason == "measure M-1 exists already"
    assert [v.ref for v in engine.entities(workflow="measure")] == ["measure:M-1"]


def test_a_good_measures_file_with_a_bom_imports_every_row_in_one_go(imports: Imports) -> None:
    engine = imports.engine
    content = _csv(MEASURE_HEADER, GOOD, _measure("M-2", f"{KUMAMOTO};{KIKUCHI}", kind="study",
                                                  leading="TRUE", target="", priority_project=""))
    before = len(list(engine.audit_log()))
    result = engine.import_measures(imports.write("\ufeff" + content), actor="secretariat")
    assert (result.created, result.changed, result.unchanged) == (2, 0, 0)
    assert len(list(engine.audit_log())) == before + 2
    joint = engine.get("measure:M-2")
    assert (joint.state, joint.scope) == ("study", (KUMAMOTO, KIKUCHI))
    assert joint.attrs["leading"] is True and "target" not in joint.attrs
    assert engine.get("measure:M-1").attrs["target"] == 100.0


# ----------------------------------------------------------------------------- emissions


E_GOOD = _emission()


@pytest.mark.parametrize(
    ("rows", "line", "field", "message"),
    [
        pytest.param((E_GOOD, _emission(sector="households")), 3, "sector",
                     "unknown sector 'households'; the plan's sectors are "
                     "industry_manufacturing, ", id="unknown sector"),
        pytest.param((E_GOOD, _emission(value="-5")), 3, "value_t_co2",
                     "value_t_co2 must be a finite number >= 0, not -5.0", id="negative value"),
        pytest.param((E_GOOD, _emission(value="1,000")), 3, None, "expected 5 columns",
                     id="thousands separator"),
        pytest.param((E_GOOD, _emission(value="約1000")), 3, "value_t_co2",
                     "value_t_co2 must be a number, not '約1000'", id="non-numeric value"),
        pytest.param((E_GOOD, _emission(value="")), 3, "value_t_co2",
                     "value_t_co2 must be a number, not ''", id="empty value"),
        pytest.param((E_GOOD, _emission(value="nan")), 3, "value_t_co2",
                     "must be a finite number >= 0, not nan", id="nan value"),
        pytest.param((E_GOOD, _emission(status="draft")), 3, "status",
                     "status must be one of preliminary, estimated, final, not 'draft'",
                     id="bad status"),
        pytest.param((E_GOOD, _emission(sector="waste"), _emission(value="1200")), 4,
                     "sector", f"emissions:{KUMAMOTO}:2024:household appears twice "
                     "(first on line 2)", id="duplicate row"),
        pytest.param((E_GOOD, _emission(year="FY2024")), 3, "year",
                     "year must be a whole number, not 'FY2024'", id="year not a number"),
        pytest.param((E_GOOD, _emission(year="1985")), 3, "year",
                     "year must be at least 1990, not 1985", id="year too early"),
        pytest.param((E_GOOD, _emission(municipality="431002")), 3, "municipality",
                     "wrong check digit", id="bad check digit"),
        pytest.param((E_GOOD, _emission(municipality=YAMAGA)), 3, "municipality",
                     f"{YAMAGA} is not a member of plan kumamoto", id="not a member"),
    ],
)
def test_a_bad_emissions_file_is_refused_whole_naming_file_line_and_field(
    imports: Imports, rows: tuple[str, ...], line: int, field: str | None, message: str
) -> None:
    path = imports.write(_csv(EMISSION_HEADER, *rows))
    err = _refused_whole(imports, path, "emissions")
    assert (err.source, err.line, err.field) == (str(path), line, field)
    assert message in err.reason


def test_an_emissions_file_with_an_unknown_column_is_refused_at_the_header(
    imports: Imports,
) -> None:
    path = imports.write(_csv(EMISSION_HEADER + ",note", E_GOOD + ",速報"))
    err = _refused_whole(imports, path, "emissions")
    assert (err.source, err.line, err.field) == (str(path), 1, None)
    assert "(unknown note)" in err.reason


@pytest.mark.parametrize("year", ["12345", "999"])
def test_an_emissions_year_out_of_range_names_the_year_field(
    imports: Imports, year: str
) -> None:
    path = imports.write(_csv(EMISSION_HEADER, E_GOOD, _emission(year=year)))
    err = _refused_whole(imports, path, "emissions")
    assert (err.line, err.field) == (3, "year")
    assert "malformed" not in err.reason


def _history_values(engine: pdca.Engine, ref: str) -> list[tuple[str, str, float]]:
    """(trigger, state after, value) of every entry of ``ref`` that set a value."""
    return [(e.trigger, str(e.to_state), json.loads(e.data)["value_t_co2"])
            for e in engine.history(ref) if e.kind in ("create", "transition")]


def test_repeated_imports_move_an_emission_value_through_its_statuses(
    imports: Imports,
) -> None:
    engine = imports.engine
    ref = f"emissions:{KUMAMOTO}:2024:household"

    def run(value: str, status: str) -> tuple[int, int, int]:
        path = imports.write(_csv(EMISSION_HEADER, _emission(value=value, status=status)))
        result = engine.import_emissions(path, actor="secretariat")
        return result.created, result.changed, result.unchanged

    assert run("1000", "preliminary") == (1, 0, 0)
    assert run("1000", "preliminary") == (0, 0, 1)  # the same again changes nothing
    assert run("1010", "preliminary") == (0, 1, 0)  # corrected while preliminary
    assert run("1020", "estimated") == (0, 1, 0)
    assert run("1020", "estimated") == (0, 0, 1)
    assert run("1030", "final") == (0, 1, 0)
    size = len(list(engine.audit_log()))
    assert run("1030", "final") == (0, 0, 1)
    assert len(list(engine.audit_log())) == size
    assert _history_values(engine, ref) == [
        ("create", "preliminary", 1000.0), ("update", "preliminary", 1010.0),
        ("estimate", "estimated", 1020.0), ("finalise", "final", 1030.0)]
    view = engine.get(ref)
    assert (view.state, view.attrs["value_t_co2"]) == ("final", 1030.0)


def test_an_import_may_finalise_a_preliminary_value_directly(imports: Imports) -> None:
    engine = imports.engine
    engine.import_emissions(imports.write(_csv(EMISSION_HEADER, E_GOOD)), actor="secretariat")
    engine.import_emissions(imports.write(_csv(EMISSION_HEADER, _emission(value="990",
                                                                          status="final"))),
                            actor="secretariat")
    assert _history_values(engine, f"emissions:{KUMAMOTO}:2024:household")[-1] == (
        "finalise", "final", 990.0)


def test_an_import_cannot_change_a_final_value_and_points_to_revise(imports: Imports) -> None:
    engine = imports.engine
    engine.import_emissions(imports.write(_csv(EMISSION_HEADER, _emission(status="final"))),
                            actor="secretariat")
    path = imports.write(_csv(EMISSION_HEADER, _emission(sector="waste"),
                              _emission(value="1100", status="final")))
    err = _refused_whole(imports, path, "emissions")
    assert (err.source, err.line, err.field) == (str(path), 3, "value_t_co2")
    assert err.reason.startswith(f"emissions:{KUMAMOTO}:2024:household is final (1000.0 t); "
                                 "a final value changes only by revision")
    assert "revise --set value_t_co2=1100.0 --set reason=" in err.reason
    assert [v.ref for v in engine.entities(workflow="emissions")] == [
        f"emissions:{KUMAMOTO}:2024:household"]


@pytest.mark.parametrize(("first", "again"), [("final", "preliminary"), ("final", "estimated"),
                                              ("estimated", "preliminary")])
def test_an_import_cannot_move_a_value_back_to_an_earlier_status(
    imports: Imports, first: str, again: str
) -> None:
    engine = imports.engine
    engine.import_emissions(imports.write(_csv(EMISSION_HEADER, _emission(status=first))),
                            actor="secretariat")
    path = imports.write(_csv(EMISSION_HEADER, _emission(status=again)))
    err = _refused_whole(imports, path, "emissions")
    assert (err.source, err.line, err.field) == (str(path), 2, "status")
    assert err.reason == (f"emissions:{KUMAMOTO}:2024:household is {first} already; "
                          f"it cannot go back to {again}")


def test_revise_changes_a_final_value_and_the_audit_log_keeps_the_old_one(
    imports: Imports,
) -> None:
    engine = imports.engine
    ref = f"emissions:{KUMAMOTO}:2024:household"
    engine.import_emissions(imports.write(_csv(EMISSION_HEADER, _emission(status="final"))),
                            actor="secretariat")
    before = len(list(engine.audit_log()))
    with pytest.raises(pdca.InvalidData) as info:
        engine.fire(ref, "revise", actor="secretariat", data={"value_t_co2": 950.0})
    assert info.value.field == "reason"
    assert len(list(engine.audit_log())) == before

    result = engine.fire(ref, "revise", actor="secretariat",
                         data={"value_t_co2": 950.0, "reason": "統計の改定"})
    assert (result.from_state, result.to_state) == ("final", "final")
    assert engine.get(ref).attrs["value_t_co2"] == 950.0
    assert _history_values(engine, ref) == [("create", "final", 1000.0),
                                            ("revise", "final", 950.0)]
    assert json.loads(engine.history(ref)[-1].data)["reason"] == "統計の改定"
    # An import of the revised value is then "unchanged".
    again = engine.import_emissions(imports.write(_csv(EMISSION_HEADER,
                                                       _emission(value="950", status="final"))),
                                    actor="secretariat")
    assert (again.created, again.changed, again.unchanged) == (0, 0, 1)


def test_an_import_creating_and_changing_values_does_both_in_one_go(imports: Imports) -> None:
    engine = imports.engine
    engine.import_emissions(imports.write(_csv(EMISSION_HEADER, E_GOOD)), actor="secretariat")
    result = engine.import_emissions(
        imports.write(_csv(EMISSION_HEADER, _emission(value="1050", status="estimated"),
                           _emission(sector="waste", value="300"))),
        actor="secretariat",
    )
    assert (result.created, result.changed, result.unchanged) == (1, 1, 0)
    assert engine.get(f"emissions:{KUMAMOTO}:2024:household").state == "estimated"
    assert engine.get(f"emissions:{KUMAMOTO}:2024:waste").attrs["value_t_co2"] == 300.0


def test_staff_importing_another_municipalitys_values_writes_nothing(imports: Imports) -> None:
    engine = imports.engine
    engine.import_emissions(imports.write(_csv(EMISSION_HEADER, _emission(KIKUCHI))),
                            actor="secretariat")
    for rows in ((_emission(), _emission(KIKUCHI, sector="waste")),
                 (_emission(), _emission(KIKUCHI, value="1100"))):
        before = imports.snapshot()
        with pytest.raises(pdca.PermissionDenied, match=f"not to {KUMAMOTO}"):
            engine.import_emissions(imports.write(_csv(EMISSION_HEADER, *rows)),
                                    actor="staff-kumamoto")
        assert imports.snapshot() == before


# ----------------------------------------------------------------------------- membership


def test_fiscal_year_cycles_follow_the_membership_of_that_year(imports: Imports) -> None:
    engine = imports.engine
    created = engine.open_fiscal_year(2018)
    refs = {t.ref for t in created}
    assert len(created) == 18 and "cycle:region:2018" in refs
    assert f"cycle:{KIKUCHI}:2018" not in refs  # 菊池市 joined in FY2019
    assert len(engine.entities(workflow="municipal_cycle", fiscal_year=2018)) == 17

    created = engine.open_fiscal_year(2019)
    refs = {t.ref for t in created}
    assert len(created) == 19 and {f"cycle:{KIKUCHI}:2019", "cycle:region:2019"} <= refs
    assert len(engine.entities(workflow="municipal_cycle", fiscal_year=2019)) == 18
    assert engine.open_fiscal_year(2019) == []


def test_a_measure_of_a_municipality_outside_the_plan_is_refused(imports: Imports) -> None:
    path = imports.write(_csv(MEASURE_HEADER, _measure("M-1", YAMAGA)))
    err = _refused_whole(imports, path, "measures")
    assert (err.line, err.field) == (2, "municipality")
    assert err.reason == f"{YAMAGA} is not a member of plan kumamoto"
