"""The CLI contract of ``pdca``: every command, its output, its exit status, its errors.

State is arranged through the library (two realistic databases, built once per module and
copied per test), the commands are run through click's ``CliRunner`` and the outcome is
checked through the library again. The contract in short:

* exit status 0 done, 1 refused, 2 bad input or usage; never a traceback;
* ``--json``: stdout is JSON only (JSON Lines for ``audit log``); an error is one JSON object
  ``{"error": CODE, "message": TEXT}`` on stderr;
* tables have Japanese headers with ``--lang ja``, English ones with ``--lang en``;
* ``PDCA_DATABASE_URL``, ``PDCA_ACTOR`` and ``PDCA_LANG`` stand for ``--db``, ``--actor``
  and ``--lang``.

The last tests walk the click command tree, so that a new command is covered by the
bad-usage and library-error checks without being named here.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

import pdca
from pdca.calendar import TOKYO, start_of_day
from pdca.cli import Moment, main
from pdca.demo import run_demo
from tests.conftest import KIKUCHI, KUMAMOTO
from tests.test_fiscal_year import write_emissions, write_measures

FY = 2025
STAFF = f"staff-{KUMAMOTO}"
OTHER_STAFF = f"staff-{KIKUCHI}"
CYCLE = f"cycle:{KUMAMOTO}:{FY}"
OTHER_CYCLE = f"cycle:{KIKUCHI}:{FY}"
#: The one measure of 熊本市 left without an evaluation in the mid-year database.
UNEVALUATED = f"I-{KUMAMOTO}"
#: Where the virtual clock of the mid-year database stands.
MIDYEAR_NOW = datetime(2026, 10, 2, tzinfo=TOKYO)

#: The environment the CLI reads, cleared for every invocation unless a test sets it.
CLEAN_ENV: dict[str, str | None] = {
    "PDCA_DATABASE_URL": None,
    "PDCA_ACTOR": None,
    "PDCA_LANG": None,
}


# ----------------------------------------------------------------------------- helpers


def cli(
    url: str | None,
    *args: str,
    lang: str | None = "en",
    env: Mapping[str, str] | None = None,
) -> Result:
    """``pdca [--db URL] [--lang LANG] ARGS`` in process; exceptions are not swallowed."""
    head: list[str] = []
    if url is not None:
        head += ["--db", url]
    if lang is not None:
        head += ["--lang", lang]
    full_env: dict[str, str | None] = {**CLEAN_ENV, **(env or {})}
    return CliRunner().invoke(main, [*head, *args], env=full_env, catch_exceptions=False)


def one_error_line(result: Result) -> str:
    """The single line a failed command wrote on stderr (and nothing on stdout)."""
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {result.stderr!r}"
    return lines[0]


def json_error(result: Result) -> dict[str, Any]:
    """The one JSON object a failed ``--json`` command wrote on stderr."""
    line = one_error_line(result)
    error = json.loads(line)
    assert isinstance(error, dict)
    assert {"error", "message"} <= error.keys()
    assert isinstance(error["error"], str) and isinstance(error["message"], str)
    return error


def json_out(result: Result) -> Any:
    """stdout of a successful ``--json`` command, which must be JSON and nothing else."""
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def table_headers(output: str) -> list[list[str]]:
    """The header row of every table in ``output`` (the line above a line of dashes)."""
    lines = output.splitlines()
    return [
        re.split(r"\s{2,}", lines[i - 1].strip())
        for i, line in enumerate(lines)
        if i > 0 and "-" in line and re.fullmatch(r"[- ]+", line)
    ]


def copy_db(source: Path, target: Path) -> str:
    """Copy an SQLite database (with its WAL, if any); return the copy's URL."""
    for suffix in ("", "-wal"):
        if Path(f"{source}{suffix}").exists():
            shutil.copyfile(f"{source}{suffix}", f"{target}{suffix}")
    return f"sqlite:///{target}"


def sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


def _day(y: int, m: int, d: int) -> datetime:
    return start_of_day(datetime(y, m, d).date()).astimezone(UTC)


# ----------------------------------------------------------------------------- databases


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command run without --db must not leave pdca.db in the source tree."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pdca.demo.run_demo``: FY2025 played to the end (every cycle closed), once."""
    result = run_demo(tmp_path_factory.mktemp("demo"))
    assert result.verified
    return sqlite_path(result.url)


@pytest.fixture(scope="module")
def midyear_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulation database in the middle of the check of FY2025 (2 October 2026).

    熊本市 is evaluating (one measure, ``I-431001``, still without an evaluation); every
    other member has not confirmed its measures' status and is overdue; the region is
    collecting the internal reports.
    """
    directory = tmp_path_factory.mktemp("midyear")
    url = f"sqlite:///{directory / 'midyear.db'}"
    engine = pdca.Engine.create_simulation(url, start=_day(2025, 3, 1))
    try:
        engine.bootstrap_admin("admin")
        plan = engine.load_plan("kumamoto", actor="admin")
        members = [m.code for m in plan.members_of(FY)]
        for role in ("secretariat", "clerk", "auditor"):
            engine.add_person(role, role=role, actor="admin")
        for code in (KUMAMOTO, KIKUCHI):
            engine.add_person(f"staff-{code}", role="staff", municipality=code, actor="admin")
        write_measures(directory / "measures.csv", members)
        engine.import_measures(directory / "measures.csv", actor="secretariat")
        write_emissions(directory / "emissions.csv", engine, [plan.base_year, 2024])
        engine.import_emissions(directory / "emissions.csv", actor="secretariat")
        engine.simulate(_day(2026, 5, 15))
        engine.fire(CYCLE, "confirm_status", actor=STAFF)
        engine.simulate(_day(2026, 7, 20))
        engine.fire(CYCLE, "submit_emissions", actor=STAFF)
        engine.simulate(MIDYEAR_NOW.astimezone(UTC))
        engine.evaluate(f"measure:S-{KUMAMOTO}", fiscal_year=FY, rating="B", actor=STAFF)
        engine.evaluate("measure:J-1", fiscal_year=FY, rating="C", actor=STAFF)
        assert engine.get(CYCLE).state == "check_evaluation"
    finally:
        engine.close()
    return sqlite_path(url)


@pytest.fixture
def demo(demo_db: Path, tmp_path: Path) -> str:
    """The URL of a private copy of the demo database."""
    return copy_db(demo_db, tmp_path / "demo.db")


@pytest.fixture
def mid(midyear_db: Path, tmp_path: Path) -> str:
    """The URL of a private copy of the mid-year database."""
    return copy_db(midyear_db, tmp_path / "midyear.db")


@pytest.fixture
def uninitialised(tmp_path: Path) -> str:
    """A database without pdca's schema: every command that reads it must say so."""
    return f"sqlite:///{tmp_path / 'uninitialised.db'}"


# ----------------------------------------------------------------------------- init, demo


def test_demo_builds_a_simulation_database_and_prints_the_year(tmp_path: Path) -> None:
    result = cli(None, "demo", "--dir", str(tmp_path / "play"))
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert out.startswith("[SIMULATION WITH SAMPLE DATA]\n")
    assert "Progress of FY2025" in out
    assert "region: closed" in out
    url = f"sqlite:///{tmp_path / 'play' / 'demo.db'}"
    assert f"database: {url} (" in out
    assert f"next: pdca --db {url} status" in out
    with pdca.Engine.open(url) as engine:
        assert engine.simulation
        report = engine.verify_audit()
        status = engine.status(FY)
    assert report.ok
    assert f"({report.entries} audit entries, verified: True)" in out
    assert status["region"]["state"] == "closed"
    assert {m["state"] for m in status["municipalities"]} == {"closed"}


def test_init_loads_the_bundled_plan_and_registers_the_admin(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    shown = json_out(cli(url, "init", "--plan", "kumamoto", "--admin", "admin", "--json"))
    assert shown == {"database": url, "admin": "admin", "admin_created": True,
                     "plan": "kumamoto", "simulation": False}
    again = cli(url, "init", "--plan", "kumamoto", "--admin", "admin")
    assert again.exit_code == 0
    assert again.stdout == f"database ready: {url}\nplan: kumamoto\n"
    with pdca.Engine.open(url) as engine:
        assert [(p.id, p.role.value) for p in engine.people()] == [("admin", "admin")]
        assert engine.plan.id == "kumamoto"
        assert not engine.simulation


def test_init_loads_a_plan_file(tmp_path: Path) -> None:
    plan = tmp_path / "my-plan.toml"
    plan.write_text(resources.files("pdca.plans").joinpath("kumamoto.toml")
                    .read_text(encoding="utf-8"), encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'file.db'}"
    result = cli(url, "init", "--plan", str(plan), "--admin", "admin", lang="ja")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"データベースを準備しました: {url}\n計画: kumamoto\n"
    with pdca.Engine.open(url) as engine:
        assert len(engine.plan.members_of(FY)) == 18


def test_init_simulation_starts_the_virtual_clock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sim.db'}"
    shown = json_out(cli(url, "init", "--simulation", "--start", "2025-03-01",
                         "--admin", "admin", "--json"))
    assert shown["simulation"] is True
    with pdca.Engine.open(url) as engine:
        assert engine.simulation
        assert engine.now() == datetime(2025, 3, 1, tzinfo=TOKYO)


def test_init_with_a_bad_plan_file_names_the_file_and_the_line(tmp_path: Path) -> None:
    text = resources.files("pdca.plans").joinpath("kumamoto.toml").read_text(encoding="utf-8")
    lines = text.splitlines()
    line = next(n for n, s in enumerate(lines, start=1) if s.startswith("base_year ="))
    lines[line - 1] = 'base_year = "soon"'
    bad = tmp_path / "bad-plan.toml"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'bad.db'}"

    result = cli(url, "init", "--plan", str(bad), "--admin", "admin")
    assert result.exit_code == 2
    assert one_error_line(result) == (f"Error: {bad}:{line}, field 'plan.base_year': "
                                      "base_year must be a whole number, not text")

    broken = tmp_path / "broken.toml"
    broken.write_text('[plan]\nid = "x"\nname_ja = [unclosed\n', encoding="utf-8")
    result = cli(url, "init", "--plan", str(broken), "--admin", "admin", "--json")
    assert result.exit_code == 2
    error = json_error(result)
    assert error["error"] == "invalid_input"
    assert error["message"].startswith(f"{broken}:3")
    assert "TOML" in error["message"]

    missing = tmp_path / "missing.toml"
    result = cli(url, "init", "--plan", str(missing), "--admin", "admin")
    assert result.exit_code == 2
    assert one_error_line(result) == f"Error: {missing}: the plan file does not exist"


# ----------------------------------------------------------------------------- people


def test_people_add_registers_someone_and_people_list_shows_them(mid: str) -> None:
    result = cli(mid, "--actor", "admin", "people", "add", "staff-432113", "--role", "staff",
                 "--municipality", "432113", "--name", "宇土 花子", "--email", "u@example.jp")
    assert (result.exit_code, result.stdout) == (0, "person:staff-432113\n")
    with pdca.Engine.open(mid) as engine:
        person = next(p for p in engine.people() if p.id == "staff-432113")
    assert (person.role.value, person.municipality, person.name, person.active) == (
        "staff", "432113", "宇土 花子", True)

    listed = json_out(cli(mid, "people", "list", "--json"))
    assert {"id": "staff-432113", "role": "staff", "municipality": "432113",
            "name": "宇土 花子", "active": True} in listed
    text = cli(mid, "people", "list")
    assert re.search(r"^staff-432113\s+staff\s+432113\s+宇土 花子\s+✓$", text.stdout, re.M)


def test_people_add_by_someone_not_an_administrator_is_refused(mid: str) -> None:
    result = cli(mid, "--actor", STAFF, "people", "add", "x", "--role", "secretariat")
    assert result.exit_code == 1
    assert one_error_line(result) == (f"Error: {STAFF} (staff) may not create person:x: "
                                      "create is for admin, not for staff")
    result = cli(mid, "--actor", "admin", "people", "add", "x", "--role", "mayor")
    assert result.exit_code == 2
    assert one_error_line(result) == ("Error: unknown role 'mayor'; the roles are staff, "
                                      "secretariat, clerk, auditor, admin")
    with pdca.Engine.open(mid) as engine:
        assert "x" not in {p.id for p in engine.people()}


# ----------------------------------------------------------------------------- measures


MEASURE_HEADER = ("code,municipality,title_ja,title_en,policy_area,kind,priority_project,"
                  "leading,indicator,unit,target")


def test_measures_import_creates_the_measures(mid: str, tmp_path: Path) -> None:
    csv = tmp_path / "new-measures.csv"
    csv.write_text(f"{MEASURE_HEADER}\n"
                   f"N-1,{KUMAMOTO},新規事業,New project,awareness,study,,false,,,\n"
                   f"N-2,{KUMAMOTO};{KIKUCHI},共同事業,Joint,awareness,implementation,,,,,\n",
                   encoding="utf-8")
    shown = json_out(cli(mid, "--actor", "secretariat", "measures", "import", str(csv),
                         "--json"))
    assert shown == {"created": 2}
    with pdca.Engine.open(mid) as engine:
        assert engine.get("measure:N-1").state == "study"
        assert engine.get("measure:N-2").scope == (KUMAMOTO, KIKUCHI)


def test_measures_import_of_a_missing_file_names_it(mid: str, tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    result = cli(mid, "--actor", "secretariat", "measures", "import", str(missing))
    assert result.exit_code == 2
    assert one_error_line(result) == f"Error: {missing}: the file does not exist"
    result = cli(mid, "--actor", "secretariat", "measures", "import", str(missing), "--json")
    assert result.exit_code == 2
    assert json_error(result) == {"error": "invalid_input",
                                  "message": f"{missing}: the file does not exist"}


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("code,municipality\nA,431001\n", ":1: the header must be"),
        (f"{MEASURE_HEADER}\nN-1,{KUMAMOTO},t,t,awareness,study,,false,,,\n"
         f"N-2,{KUMAMOTO},t,t,awareness,study,,maybe,,,\n",
         ":3, field 'leading': leading must be true or false"),
        (f"{MEASURE_HEADER}\nN-1,431009,t,t,awareness,study,,false,,,\n",
         ":2, field 'municipality':"),
        (f"{MEASURE_HEADER}\nN-1,{KUMAMOTO},t,t,awareness,study,,false,,,,extra\n",
         ":2: expected 11 columns"),
    ],
    ids=["header", "bad-value-line-3", "bad-municipality", "too-many-columns"],
)
def test_measures_import_of_a_bad_csv_names_file_and_line_and_writes_nothing(
    mid: str, tmp_path: Path, body: str, where: str
) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(body, encoding="utf-8")
    with pdca.Engine.open(mid) as engine:
        before = len(engine.entities(workflow="measure"))
    result = cli(mid, "--actor", "secretariat", "measures", "import", str(csv))
    assert result.exit_code == 2
    assert one_error_line(result).startswith(f"Error: {csv}{where}")
    with pdca.Engine.open(mid) as engine:
        assert len(engine.entities(workflow="measure")) == before


def test_measures_list_filters_by_municipality_and_state(mid: str) -> None:
    shown = json_out(cli(mid, "measures", "list", "--municipality", KUMAMOTO,
                         "--state", "study", "--json"))
    with pdca.Engine.open(mid) as engine:
        expected = engine.entities(workflow="measure", municipality=KUMAMOTO, state="study")
    assert [m["ref"] for m in shown] == [v.ref for v in expected] == [f"measure:S-{KUMAMOTO}"]
    assert {"ref", "code", "state", "municipalities"} <= shown[0].keys()
    assert shown[0]["code"] == f"S-{KUMAMOTO}"
    text = cli(mid, "measures", "list", "--municipality", KUMAMOTO, lang="ja")
    assert re.search(rf"^S-{KUMAMOTO}\s+{KUMAMOTO}\s+太陽光発電の検討 {KUMAMOTO}\s+検討事業",
                     text.stdout, re.M)
    result = cli(mid, "measures", "list", "--state", "bogus")
    assert result.exit_code == 2
    assert "measure has no state 'bogus'" in one_error_line(result)


# ----------------------------------------------------------------------------- evaluate


def test_evaluate_records_the_evaluation_and_unblocks_the_cycle(mid: str) -> None:
    result = cli(mid, "--actor", STAFF, "evaluate", f"measure:{UNEVALUATED}", "--fy", "2025",
                 "--rating", "A", "--actual", "12", "--comment", "順調")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"measure:{UNEVALUATED}: FY2025 evaluated A\n"
    with pdca.Engine.open(mid) as engine:
        record = next(e for e in engine.evaluations(fiscal_year=FY, municipality=KUMAMOTO)
                      if e.measure == f"measure:{UNEVALUATED}")
    assert (record.rating, record.actual, record.comment, record.recorded_by) == (
        "A", 12.0, "順調", STAFF)

    again = json_out(cli(mid, "--actor", STAFF, "evaluate", f"measure:{UNEVALUATED}",
                         "--fy", "2025", "--rating", "B", "--json"))
    assert again["ref"] == f"measure:{UNEVALUATED}"
    assert again["data"]["rating"] == "B"

    moved = json_out(cli(mid, "--actor", STAFF, "advance", CYCLE, "finish_evaluation",
                         "--json"))
    assert (moved["from"], moved["to"]) == ("check_evaluation", "check_report")
    with pdca.Engine.open(mid) as engine:
        assert engine.get(CYCLE).state == "check_report"


def test_evaluate_with_a_rating_outside_the_plans_scale_is_bad_input(mid: str) -> None:
    result = cli(mid, "--actor", STAFF, "evaluate", f"measure:{UNEVALUATED}", "--fy", "2025",
                 "--rating", "S")
    assert result.exit_code == 2
    assert one_error_line(result) == ("Error: field 'rating': rating must be one of "
                                      "A, B, C, D, not 'S'")
    result = cli(mid, "--actor", STAFF, "evaluate", f"measure:{UNEVALUATED}", "--fy", "2025",
                 "--rating", "S", "--json")
    assert result.exit_code == 2
    assert json_error(result)["error"] == "invalid_data"
    with pdca.Engine.open(mid) as engine:
        assert f"measure:{UNEVALUATED}" not in {
            e.measure for e in engine.evaluations(fiscal_year=FY)}


def test_evaluate_a_measure_of_another_municipality_is_refused(mid: str) -> None:
    result = cli(mid, "--actor", OTHER_STAFF, "evaluate", f"measure:{UNEVALUATED}",
                 "--fy", "2025", "--rating", "A")
    assert result.exit_code == 1
    assert one_error_line(result) == (
        f"Error: {OTHER_STAFF} (staff) may not evaluate measure:{UNEVALUATED}: "
        f"it belongs to {KUMAMOTO}, not to {KIKUCHI}")


# ----------------------------------------------------------------------------- emissions


EMISSION_HEADER = "municipality,year,sector,value_t_co2,status"


def test_emissions_import_creates_and_reports(mid: str, tmp_path: Path) -> None:
    csv = tmp_path / "e.csv"
    csv.write_text(f"{EMISSION_HEADER}\n{KUMAMOTO},2025,waste,1234.5,preliminary\n",
                   encoding="utf-8")
    result = cli(mid, "--actor", "secretariat", "emissions", "import", str(csv))
    assert (result.exit_code, result.stdout) == (0, "1 created, 0 changed, 0 unchanged\n")
    shown = json_out(cli(mid, "--actor", "secretariat", "emissions", "import", str(csv),
                         "--json"))
    assert shown == {"created": 0, "changed": 0, "unchanged": 1}
    with pdca.Engine.open(mid) as engine:
        values = engine.emission_values(years=[2025])
    assert [(v.municipality, v.sector, v.value_t_co2, v.status) for v in values] == [
        (KUMAMOTO, "waste", 1234.5, "preliminary")]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (f"{EMISSION_HEADER}\n{KUMAMOTO},2025,waste,abc,final\n",
         ":2, field 'value_t_co2': value_t_co2 must be a number, not 'abc'"),
        (f"{EMISSION_HEADER}\n{KUMAMOTO},2025,waste,1,final\n{KUMAMOTO},2025,nowhere,1,final\n",
         ":3, field 'sector':"),
        ("year,municipality\n", ":1: the header must be"),
    ],
    ids=["not-a-number", "unknown-sector-line-3", "header"],
)
def test_emissions_import_of_a_bad_csv_names_file_and_line(
    mid: str, tmp_path: Path, body: str, where: str
) -> None:
    csv = tmp_path / "bad-emissions.csv"
    csv.write_text(body, encoding="utf-8")
    result = cli(mid, "--actor", "secretariat", "emissions", "import", str(csv))
    assert result.exit_code == 2
    assert one_error_line(result).startswith(f"Error: {csv}{where}")
    with pdca.Engine.open(mid) as engine:
        assert engine.emission_values(years=[2025]) == []


def test_emissions_import_of_a_missing_file_names_it(mid: str, tmp_path: Path) -> None:
    missing = tmp_path / "none.csv"
    result = cli(mid, "--actor", "secretariat", "emissions", "import", str(missing), "--json")
    assert result.exit_code == 2
    assert json_error(result)["message"] == f"{missing}: the file does not exist"


def test_emissions_show_for_a_fiscal_year_shows_its_inventory_year_and_reduction(
    demo: str,
) -> None:
    with pdca.Engine.open(demo) as engine:
        inventory = engine.plan.inventory_year(FY)
        totals = engine.region_emissions(inventory)
    assert inventory == 2024
    assert totals.total is not None and totals.base_total is not None
    assert totals.reduction is not None

    shown = json_out(cli(demo, "emissions", "show", "--fy", "2025", "--json"))
    assert (shown["fiscal_year"], shown["inventory_year"], shown["base_year"]) == (
        2025, 2024, 2013)
    assert len(shown["members"]) == 18
    assert shown["total_t_co2"] == pytest.approx(totals.total)
    assert shown["base_total_t_co2"] == pytest.approx(totals.base_total)
    assert shown["reduction"] == pytest.approx(1 - totals.total / totals.base_total)
    assert shown["missing"] == []

    text = cli(demo, "emissions", "show", "--fy", "2025")
    assert text.exit_code == 0
    assert text.stdout.startswith("Emissions of 2024 (18 members)\n")
    assert re.search(rf"^total \(t-CO2\)\s+{totals.total:,.0f}$", text.stdout, re.M)
    assert re.search(rf"^base year 2013 \(same members\)\s+{totals.base_total:,.0f}$",
                     text.stdout, re.M)
    assert re.search(rf"^reduction\s+{totals.reduction * 100:.1f}%$", text.stdout, re.M)
    by_year = json_out(cli(demo, "emissions", "show", "--year", "2024", "--json"))
    assert (by_year["inventory_year"], by_year["fiscal_year"]) == (2024, None)
    assert by_year["total_t_co2"] == pytest.approx(totals.total)


def test_emissions_show_for_one_municipality_lists_its_sectors(demo: str) -> None:
    with pdca.Engine.open(demo) as engine:
        sectors = engine.plan.sector_ids
        values = {v.sector: v for v in engine.emission_values(years=[2024])
                  if v.municipality == KUMAMOTO}
    shown = json_out(cli(demo, "emissions", "show", "--fy", "2025", "--municipality",
                         KUMAMOTO, "--json"))
    assert list(shown["municipality"]) == list(sectors)
    for sector in sectors:
        assert shown["municipality"][sector] == {
            "value_t_co2": pytest.approx(values[sector].value_t_co2),
            "status": values[sector].status}
    text = cli(demo, "emissions", "show", "--fy", "2025", "--municipality", KUMAMOTO)
    first = sectors[0]
    assert re.search(rf"^{first}\s+{values[first].value_t_co2:,.0f}\s+preliminary$",
                     text.stdout, re.M)
    result = cli(demo, "emissions", "show", "--fy", "2025", "--municipality", "431002")
    assert result.exit_code == 2
    assert "431002" in one_error_line(result)
    result = cli(demo, "emissions", "show", "--json")
    assert result.exit_code == 2
    assert json_error(result)["error"] == "usage"


# ----------------------------------------------------------------------------- meetings, advice


def test_meetings_schedule_prints_the_reference_that_show_then_finds(mid: str) -> None:
    result = cli(mid, "--actor", "secretariat", "meetings", "schedule", "liaison_council",
                 "--fy", "2025", "--date", "2026-12-10")
    assert result.exit_code == 0, result.stderr
    ref = result.stdout.strip()
    assert re.fullmatch(r"meeting:2025-liaison_council-\d+", ref)
    shown = json_out(cli(mid, "--actor", "secretariat", "show", ref, "--json"))
    assert (shown["ref"], shown["state"]) == (ref, "planned")
    with pdca.Engine.open(mid) as engine:
        view = engine.get(ref, actor="secretariat")
    assert shown["allowed"] == list(view.allowed)
    assert (view.attrs["kind"], view.attrs["date"]) == ("liaison_council", "2026-12-10")
    listed = json_out(cli(mid, "meetings", "list", "--fy", "2025", "--json"))
    assert {"ref": ref, "state": "planned"}.items() <= next(
        m for m in listed if m["ref"] == ref).items()
    text = cli(mid, "meetings", "list", "--fy", "2025")
    assert re.search(rf"^{ref}\s+liaison council\s+2026-12-10\s+planned$", text.stdout, re.M)
    bad = cli(mid, "--actor", "secretariat", "meetings", "schedule", "liaison_council",
              "--fy", "2025", "--date", "tomorrow")
    assert bad.exit_code == 2
    assert "date must be a date YYYY-MM-DD, not 'tomorrow'" in one_error_line(bad)


def test_advice_add_and_answer(demo: str) -> None:
    committee = "meeting:2025-advisory_committee-1"
    added = cli(demo, "--actor", "clerk", "advice", "add", committee, "運輸部門の対策を強化",
                "--member", "学識経験者")
    assert added.exit_code == 0, added.stderr
    ref = added.stdout.strip()
    assert re.fullmatch(r"advice:2025-\d+", ref)
    with pdca.Engine.open(demo) as engine:
        view = engine.get(ref)
    assert view.state == "open"
    assert (view.attrs["text"], view.attrs["meeting"], view.attrs["member"]) == (
        "運輸部門の対策を強化", committee, "学識経験者")

    answered = cli(demo, "--actor", "secretariat", "advice", "answer", ref, "令和8年度に反映")
    assert (answered.exit_code, answered.stdout) == (0, f"{ref}: open → answered\n")
    with pdca.Engine.open(demo) as engine:
        view = engine.get(ref)
        last = engine.history(ref)[-1]
    assert view.state == "answered"
    assert (last.trigger, last.actor, json.loads(last.data)) == (
        "answer", "secretariat", {"answer": "令和8年度に反映"})

    again = cli(demo, "--actor", "secretariat", "advice", "answer", ref, "もう一度")
    assert again.exit_code == 1
    assert one_error_line(again) == (f"Error: cannot answer {ref}: it is answered; "
                                     "no trigger is allowed in this state")
    council = cli(demo, "--actor", "clerk", "advice", "add", "meeting:2025-liaison_council-1",
                  "text")
    assert council.exit_code == 2
    assert one_error_line(council) == ("Error: meeting:2025-liaison_council-1 is not an "
                                       "advisory committee meeting")


# ----------------------------------------------------------------------------- advance, show


def test_advance_fires_and_json_has_the_transition(mid: str) -> None:
    shown = json_out(cli(mid, "--actor", STAFF, "advance", f"measure:S-{KUMAMOTO}",
                         "commercialise", "--set", "fiscal_year=2025",
                         "--set", "budget_jpy=1000000", "--note", "予算化", "--json"))
    assert {"ref", "trigger", "from", "to", "seq", "hash"} <= shown.keys()
    assert (shown["from"], shown["to"]) == ("study", "implemented")
    with pdca.Engine.open(mid) as engine:
        last = engine.history(f"measure:S-{KUMAMOTO}")[-1]
    assert (last.seq, last.hash, last.note) == (shown["seq"], shown["hash"], "予算化")
    assert json.loads(last.data) == {"fiscal_year": 2025, "budget_jpy": 1000000}


@pytest.mark.parametrize(
    ("actor", "trigger", "code", "message"),
    [
        (OTHER_STAFF, "close", "permission_denied",
         f"{OTHER_STAFF} (staff) may not close {CYCLE}: it belongs to {KUMAMOTO}, "
         f"not to {KIKUCHI}"),
        (STAFF, "finish_evaluation", "guard_failed",
         f"cannot finish_evaluation {CYCLE}: 1 measure has no evaluation for FY2025: "
         f"{UNEVALUATED}"),
        (STAFF, "close", "not_allowed",
         f"cannot close {CYCLE}: it is check_evaluation; the triggers allowed now are "
         "finish_evaluation"),
        (STAFF, "start", "permission_denied", f"{STAFF} (staff) may not start {CYCLE}"),
    ],
    ids=["wrong-staff", "guard", "wrong-state", "scheduler-only"],
)
def test_refusals_exit_1_and_say_why(
    mid: str, actor: str, trigger: str, code: str, message: str
) -> None:
    """Refused: exit 1, the reason in one line; nothing changes. Permission and guard
    refusals are audited on the entity; a trigger the state does not allow is not."""
    with pdca.Engine.open(mid) as engine:
        before = engine.get(CYCLE)
        logged = len(engine.history(CYCLE))
    result = cli(mid, "--actor", actor, "advance", CYCLE, trigger)
    assert result.exit_code == 1
    line = one_error_line(result)
    assert line.startswith(f"Error: {message}")
    result = cli(mid, "--actor", actor, "advance", CYCLE, trigger, "--json")
    assert result.exit_code == 1
    error = json_error(result)
    assert error["error"] == code
    assert error["message"] == line.removeprefix("Error: ")
    with pdca.Engine.open(mid) as engine:
        after = engine.get(CYCLE)
        history = engine.history(CYCLE)
    assert (after.state, after.version) == (before.state, before.version)
    if code == "not_allowed":
        assert len(history) == logged
    else:
        # once for the plain run, once for --json
        assert len(history) == logged + 2
        assert (history[-1].kind, history[-1].trigger, history[-1].actor) == (
            "refused", trigger, actor)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--actor", STAFF, "advance", f"cycle:{KUMAMOTO}:1999", "close"],
         "unknown_reference", f"no such entity: cycle:{KUMAMOTO}:1999"),
        (["--actor", STAFF, "advance", "cycle-431001-2025", "close"],
         "unknown_reference",
         "malformed reference 'cycle-431001-2025': expected KIND:KEY"),
        (["--actor", STAFF, "advance", CYCLE, "fly"],
         "unknown_trigger", f"{CYCLE}: unknown trigger 'fly'; the triggers of this workflow"),
        (["--actor", "mallory", "advance", CYCLE, "finish_evaluation"],
         "unknown_actor", "unknown actor 'mallory': register the person first"),
        (["advance", CYCLE, "finish_evaluation"],
         "usage", "who is acting? give --actor ID or set PDCA_ACTOR"),
        (["--actor", STAFF, "advance", CYCLE, "finish_evaluation", "--set", "oops"],
         "invalid_input", "--set takes KEY=VALUE, not 'oops'"),
        (["--actor", STAFF, "show", "advice:2025-99"],
         "unknown_reference", "no such entity: advice:2025-99"),
        (["status", "--municipality", "999999"],
         "invalid_input", "municipality '999999' is not a member of plan 'kumamoto'"),
        (["--actor", "mallory", "show", CYCLE], "unknown_actor", "unknown actor 'mallory'"),
    ],
    ids=["unknown-ref", "malformed-ref", "unknown-trigger", "unregistered-actor",
         "no-actor", "bad-set", "unknown-advice", "unknown-municipality", "show-unregistered"],
)
def test_bad_input_exits_2_with_one_line_naming_the_problem(
    mid: str, args: list[str], code: str, message: str
) -> None:
    result = cli(mid, *args)
    assert result.exit_code == 2
    assert one_error_line(result).startswith(f"Error: {message}")
    result = cli(mid, *args, "--json")
    assert result.exit_code == 2
    error = json_error(result)
    assert error["error"] == code
    assert error["message"].startswith(message)


def test_show_json_has_the_contract_keys_and_agrees_with_the_library(mid: str) -> None:
    shown = json_out(cli(mid, "--actor", OTHER_STAFF, "show", OTHER_CYCLE, "--json"))
    assert {"ref", "state", "allowed", "overdue", "history"} <= shown.keys()
    with pdca.Engine.open(mid) as engine:
        view = engine.get(OTHER_CYCLE, actor=OTHER_STAFF)
        history = engine.history(OTHER_CYCLE)
    assert (shown["ref"], shown["state"], shown["overdue"]) == (OTHER_CYCLE, "check_status",
                                                               True)
    assert shown["allowed"] == list(view.allowed) == ["confirm_status"]
    assert [h["seq"] for h in shown["history"]] == [e.seq for e in history]
    assert {"seq", "at", "actor", "trigger", "from", "to", "note", "hash"} <= (
        shown["history"][0].keys())
    assert datetime.fromisoformat(shown["history"][0]["at"]) == history[0].at

    blocked = json_out(cli(mid, "--actor", STAFF, "show", CYCLE, "--json"))
    assert blocked["allowed"] == []
    assert blocked["blocked"] == {"finish_evaluation": [
        f"1 measure has no evaluation for FY2025: {UNEVALUATED}"]}


def test_show_prints_state_overdue_and_history_in_either_language(mid: str) -> None:
    ja = cli(mid, "--actor", OTHER_STAFF, "show", OTHER_CYCLE, lang="ja")
    assert ja.exit_code == 0
    assert ja.stdout.startswith(f"{OTHER_CYCLE}  状態: 点検：実施状況の確認 (check_status)\n"
                                "期限超過\n実行可能な操作: confirm_status\n")
    en = cli(mid, "--actor", OTHER_STAFF, "show", OTHER_CYCLE)
    assert en.stdout.startswith(f"{OTHER_CYCLE}  state: check: status review (check_status)\n"
                                "OVERDUE\nallowed now: confirm_status\n")
    blocked = cli(mid, "--actor", STAFF, "show", CYCLE)
    assert (f"  finish_evaluation: 1 measure has no evaluation for FY2025: {UNEVALUATED}\n"
            in blocked.stdout)


# ----------------------------------------------------------------------------- status, schedule


def test_status_json_has_the_contract_shape_and_agrees_with_the_library(mid: str) -> None:
    shown = json_out(cli(mid, "status", "--fy", "2025", "--json"))
    with pdca.Engine.open(mid) as engine:
        expected = engine.status(FY)
    assert shown["fiscal_year"] == 2025
    assert {"state", "overdue"} <= shown["region"].keys()
    assert (shown["region"]["state"], shown["region"]["overdue"]) == (
        expected["region"]["state"], expected["region"]["overdue"])
    assert isinstance(shown["municipalities"], list) and len(shown["municipalities"]) == 18
    for row, lib in zip(shown["municipalities"], expected["municipalities"], strict=True):
        assert {"code", "name", "state", "overdue"} <= row.keys()
        assert (row["code"], row["name"], row["state"], row["overdue"]) == (
            lib["code"], lib["name"], lib["state"], lib["overdue"])
    by_code = {m["code"]: m for m in shown["municipalities"]}
    assert (by_code[KUMAMOTO]["state"], by_code[KUMAMOTO]["overdue"]) == (
        "check_evaluation", False)
    assert (by_code[KIKUCHI]["state"], by_code[KIKUCHI]["overdue"]) == ("check_status", True)
    assert shown["measures"] == expected["measures"]
    assert sum(shown["measures"].values()) == 37

    default = json_out(cli(mid, "status", "--json"))
    assert default["fiscal_year"] == 2025  # the year whose check is under way
    one = json_out(cli(mid, "status", "--municipality", KIKUCHI, "--json"))
    assert [m["code"] for m in one["municipalities"]] == [KIKUCHI]


def test_status_text_marks_overdue_members(mid: str) -> None:
    en = cli(mid, "status", "--fy", "2025")
    assert en.exit_code == 0
    assert en.stdout.startswith("Progress of FY2025\nregion: ")
    assert re.search(rf"^{KIKUCHI}\s+Kikuchi City\s+check: status review\s+!$", en.stdout,
                     re.M)
    assert re.search(rf"^{KUMAMOTO}\s+Kumamoto City\s+check: evaluation$", en.stdout, re.M)
    assert "[SIMULATION] virtual time 2026-10-02 00:00 JST" in en.stderr
    ja = cli(mid, "status", "--fy", "2025", lang="ja")
    assert ja.stdout.startswith("2025年度（令和7年度）の進捗\n圏域: ")
    assert re.search(rf"^{KIKUCHI}\s+菊池市\s+点検：実施状況の確認\s+!$", ja.stdout, re.M)


def test_schedule_show_gives_the_real_dates_of_the_check(demo: str) -> None:
    shown = json_out(cli(demo, "schedule", "show", "--fy", "2025", "--json"))
    with pdca.Engine.open(demo) as engine:
        expected = engine.schedule_of(FY)
    assert shown == {"fiscal_year": 2025, "steps": expected}
    steps = {s["step"]: s for s in shown["steps"]}
    assert (steps["confirm_status"]["opens"], steps["confirm_status"]["due"]) == (
        "2026-04-01", "2026-06-30")
    assert (steps["publish"]["opens"], steps["publish"]["due"]) == ("2027-02-15", "2027-03-31")
    text = cli(demo, "schedule", "show", "--fy", "2025")
    assert text.stdout.startswith("Schedule of the check of FY2025\n")
    assert re.search(r"^confirm_status\s+municipality\s+.+\s+2026-04-01\s+2026-06-30$",
                     text.stdout, re.M)
    ja = cli(demo, "schedule", "show", "--fy", "2025", lang="ja")
    assert ja.stdout.startswith("2025年度の点検の日程\n")
    assert re.search(r"^publish\s+secretariat\s+進捗状況の公表\s+2027-02-15\s+2027-03-31$",
                     ja.stdout, re.M)


# ----------------------------------------------------------------------------- the clock


def test_tick_at_moves_the_virtual_clock_and_reports(mid: str) -> None:
    shown = json_out(cli(mid, "tick", "--at", "2026-10-05", "--json"))
    assert {"at", "simulation", "done", "skipped", "notices_sent", "notices_queued",
            "firings"} <= shown.keys()
    assert shown["simulation"] is True
    assert datetime.fromisoformat(shown["at"]) == datetime(2026, 10, 5, tzinfo=TOKYO)
    with pdca.Engine.open(mid) as engine:
        assert engine.now() == datetime(2026, 10, 5, tzinfo=TOKYO)
    text = cli(mid, "tick")
    assert text.exit_code == 0
    assert text.stdout.endswith("0 done, 0 skipped, 0 notices sent\n")
    assert "[SIMULATION] virtual time 2026-10-05 00:00 JST" in text.stderr
    back = cli(mid, "tick", "--at", "2026-10-01", "--json")
    assert back.exit_code == 2
    assert "never goes back" in json_error(back)["message"]


def test_simulate_runs_the_schedule_until_a_date(mid: str) -> None:
    shown = json_out(cli(mid, "simulate", "--until", "2026-11-04", "--json"))
    assert shown["simulation"] is True
    assert shown["ticks"]
    assert datetime.fromisoformat(shown["until"]) == datetime(2026, 11, 4, tzinfo=TOKYO)
    with pdca.Engine.open(mid) as engine:
        assert engine.now() == datetime(2026, 11, 4, tzinfo=TOKYO)
        # the evaluation was due on 2 November: 熊本市 is now overdue too
        assert engine.get(CYCLE).overdue
    status = json_out(cli(mid, "status", "--json"))
    assert {m["code"]: m["overdue"] for m in status["municipalities"]}[KUMAMOTO] is True
    text = cli(mid, "simulate", "--until", "2026-11-10")
    assert text.exit_code == 0
    assert re.fullmatch(r"\d+ firings in \d+ ticks\n", text.stdout)


def test_daemon_on_a_simulation_database_is_refused_in_one_line(mid: str) -> None:
    result = cli(mid, "daemon")
    assert result.exit_code == 2
    assert "pdca simulate" in one_error_line(result)


# ----------------------------------------------------------------------------- audit


def test_audit_log_json_lines_agree_with_the_library(mid: str) -> None:
    result = cli(mid, "audit", "log", "--ref", CYCLE, "--json")
    assert result.exit_code == 0
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    with pdca.Engine.open(mid) as engine:
        expected = list(engine.audit_log(ref=CYCLE))
        by_staff = list(engine.audit_log(actor=STAFF))
    assert [line["seq"] for line in lines] == [e.seq for e in expected]
    for line, entry in zip(lines, expected, strict=True):
        assert {"seq", "at", "actor", "ref", "trigger", "from", "to", "note", "hash"} <= (
            line.keys())
        assert (line["actor"], line["ref"], line["trigger"], line["from"], line["to"],
                line["note"], line["hash"]) == (entry.actor, entry.ref, entry.trigger,
                                                entry.from_state, entry.to_state, entry.note,
                                                entry.hash)
    assert [line["trigger"] for line in lines][:3] == ["create", "start", "begin_check"]

    staff = cli(mid, "audit", "log", "--actor", STAFF, "--json")
    assert [json.loads(x)["seq"] for x in staff.stdout.splitlines()] == [
        e.seq for e in by_staff]
    none = cli(mid, "audit", "log", "--since", "2999-01-01", "--json")
    assert (none.exit_code, none.stdout) == (0, "")
    everything = cli(mid, "audit", "log", "--until", "2999-01-01", "--json")
    assert len(everything.stdout.splitlines()) > len(lines)

    text = cli(mid, "audit", "log", "--ref", CYCLE)
    assert len(text.stdout.splitlines()) == 2 + len(expected)


@pytest.mark.parametrize("ref", ["cycle-431001-2025", "measure:NOPE"])
def test_audit_log_of_a_bad_reference_is_bad_input(mid: str, ref: str) -> None:
    result = cli(mid, "audit", "log", "--ref", ref, "--json")
    assert result.exit_code == 2
    assert json_error(result)["error"] == "unknown_reference"


def test_audit_checkpoint_and_verify(mid: str) -> None:
    sealed = json_out(cli(mid, "--actor", "auditor", "audit", "checkpoint", "--json"))
    assert {"seq", "digest", "count"} <= sealed.keys()
    with pdca.Engine.open(mid) as engine:
        assert engine.verify_audit(expect_digest=sealed["digest"]).ok
        entries = engine.verify_audit().entries
    text = cli(mid, "--actor", "auditor", "audit", "checkpoint")
    assert re.fullmatch(r"#\d+ digest [0-9a-f]{64} \(\d+ entries\)\n", text.stdout)

    verified = json_out(cli(mid, "audit", "verify", "--json", "--expect", sealed["digest"]))
    assert {"ok", "entries"} <= verified.keys()
    assert verified["ok"] is True
    assert "first_bad" not in verified
    ok = cli(mid, "audit", "verify")
    assert (ok.exit_code, ok.stdout) == (0, f"ok: {entries + 1} entries verified\n")
    ja = cli(mid, "audit", "verify", lang="ja")
    assert ja.stdout == f"正常: {entries + 1} 件の記録を検証しました\n"


def test_audit_verify_names_the_first_damaged_entry_and_exits_1(mid: str) -> None:
    with pdca.Engine.open(mid) as engine:
        target = engine.history(CYCLE)[3]
    conn = sqlite3.connect(sqlite_path(mid))
    try:
        for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' "
                "AND tbl_name = 'audit_log'").fetchall():
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute("UPDATE audit_log SET note = 'tampered' WHERE seq = ?", (target.seq,))
        conn.commit()
    finally:
        conn.close()

    result = cli(mid, "audit", "verify", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert {"ok", "entries", "first_bad", "reason"} <= report.keys()
    assert (report["ok"], report["first_bad"], report["reason"]) == (False, target.seq,
                                                                      "edited")
    text = cli(mid, "audit", "verify")
    assert text.exit_code == 1
    assert text.stdout.startswith(f"#{target.seq} {CYCLE} edited: ")
    with pdca.Engine.open(mid) as engine:
        assert engine.verify_audit().first_bad is not None


# ----------------------------------------------------------------------------- diagram


def test_diagram_prints_mermaid_in_either_language(mid: str) -> None:
    en = cli(mid, "diagram", "municipal_cycle")
    assert en.exit_code == 0
    assert en.stdout.startswith("stateDiagram-v2\n")
    assert "check_evaluation --> check_report: finish_evaluation" in en.stdout
    ja = cli(mid, "diagram", "municipal_cycle", lang="ja")
    assert 'state "点検：進捗の点検・評価 (check_evaluation)" as check_evaluation' in ja.stdout
    bad = cli(mid, "diagram", "nothing")
    assert bad.exit_code == 2
    assert one_error_line(bad).startswith("Error: unknown workflow 'nothing'; the workflows are")


# ----------------------------------------------------------------------------- tables, languages


@pytest.mark.parametrize(
    ("args", "ja", "en"),
    [
        (["status", "--fy", "2025"],
         [["コード", "市町村", "段階", "期限超過"]],
         [["code", "municipality", "phase", "overdue"]]),
        (["measures", "list"],
         [["コード", "市町村", "名称", "状態", "重点事業"]],
         [["code", "municipality", "title", "state", "priority project"]]),
        (["people", "list"],
         [["ID", "役割", "市町村", "氏名", "有効"]],
         [["id", "role", "municipality", "name", "active"]]),
        (["meetings", "list"],
         [["参照", "会議", "日付", "状態"]],
         [["ref", "meeting", "date", "state"]]),
        (["schedule", "show", "--fy", "2025"],
         [["手順", "担当", "内容", "開始", "期限"]],
         [["step", "who", "what", "opens", "due"]]),
        (["emissions", "show", "--fy", "2025", "--municipality", KUMAMOTO],
         [["項目", "値"], ["部門", "t-CO2", "状態"]],
         [["item", "value"], ["sector", "t-CO2", "status"]]),
        (["audit", "log", "--ref", CYCLE],
         [["番号", "日時 (JST)", "実行者", "対象", "操作", "変更前", "変更後", "ハッシュ"]],
         [["seq", "time (JST)", "actor", "ref", "trigger", "from", "to", "hash"]]),
        (["show", CYCLE],
         [["番号", "日時 (JST)", "実行者", "操作", "変更前", "変更後", "備考"]],
         [["seq", "time (JST)", "actor", "trigger", "from", "to", "note"]]),
    ],
    ids=["status", "measures-list", "people-list", "meetings-list", "schedule-show",
         "emissions-show", "audit-log", "show"],
)
def test_tables_have_japanese_or_english_headers(
    demo: str, args: list[str], ja: list[list[str]], en: list[list[str]]
) -> None:
    for lang, headers in (("ja", ja), ("en", en)):
        result = cli(demo, *args, lang=lang)
        assert result.exit_code == 0, result.stderr
        assert table_headers(result.stdout) == headers, lang


def test_environment_variables_stand_for_the_global_options(mid: str) -> None:
    env = {"PDCA_DATABASE_URL": mid, "PDCA_ACTOR": STAFF, "PDCA_LANG": "ja"}
    result = cli(None, "evaluate", f"measure:{UNEVALUATED}", "--fy", "2025", "--rating", "C",
                 lang=None, env=env)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"measure:{UNEVALUATED}: 2025年度の評価 C を記録しました\n"
    with pdca.Engine.open(mid) as engine:
        record = next(e for e in engine.evaluations(fiscal_year=FY)
                      if e.measure == f"measure:{UNEVALUATED}")
    assert (record.rating, record.recorded_by) == ("C", STAFF)

    status = cli(None, "status", "--fy", "2025", lang=None, env=env)
    assert table_headers(status.stdout) == [["コード", "市町村", "段階", "期限超過"]]
    english = cli(None, "--lang", "en", "status", "--fy", "2025", lang=None, env=env)
    assert table_headers(english.stdout) == [["code", "municipality", "phase", "overdue"]]

    # the options win over the environment
    other = cli(None, "--actor", OTHER_STAFF, "advance", CYCLE, "finish_evaluation",
                lang=None, env={**env, "PDCA_LANG": "en"})
    assert other.exit_code == 1
    assert one_error_line(other).startswith(f"Error: {OTHER_STAFF} (staff) may not")
    elsewhere = cli(None, "--db", f"sqlite:///{Path.cwd() / 'empty.db'}", "people", "list",
                    lang=None, env=env)
    assert elsewhere.exit_code == 2
    assert "pdca init" in one_error_line(elsewhere)


@pytest.mark.parametrize("url", ["not a url", "mysql://x@y/z"])
def test_a_bad_database_url_is_bad_input(url: str) -> None:
    result = cli(url, "status", "--json")
    assert result.exit_code == 2
    assert json_error(result)["error"]


def test_demo_in_a_directory_that_cannot_be_made_is_bad_input(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    result = cli(None, "demo", "--dir", str(blocker / "demo"))
    assert result.exit_code == 2
    assert "a-file" in one_error_line(result)


# ----------------------------------------------------------------------------- every command


def _tree(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], click.Command]]:
    """Every command of the CLI, groups included (the root is the empty path)."""
    yield path, group
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _tree(command, (*path, name))
        else:
            yield (*path, name), command


COMMANDS: dict[tuple[str, ...], click.Command] = dict(_tree(main))
#: The commands that do something: the leaves, and groups that act on their own.
ACTING = {path: c for path, c in COMMANDS.items()
          if path and (not isinstance(c, click.Group) or c.invoke_without_command)}


def _has_json(command: click.Command) -> bool:
    return any(isinstance(p, click.Option) and "--json" in p.opts for p in command.params)


def _good_value(param: click.Parameter, tmp: Path) -> str:
    """A value click accepts for ``param`` (it need not make sense to the library)."""
    kind = param.type
    if isinstance(kind, click.Choice):
        return str(kind.choices[0])
    if isinstance(kind, click.types.IntParamType):
        return "2025"
    if isinstance(kind, click.types.FloatParamType):
        return "5"
    if isinstance(kind, click.DateTime | Moment):
        return "2026-04-01"
    if isinstance(kind, click.Path):
        return str(tmp / ("no-such-dir" if not kind.file_okay else "no-such-file.csv"))
    return "x"


def _bad_value(param: click.Parameter, tmp: Path) -> str | None:
    """A value click must reject for ``param``; None if it takes any text."""
    kind = param.type
    if isinstance(kind, click.Choice):
        return "bogus-choice"
    if isinstance(kind, click.types.IntParamType | click.types.FloatParamType):
        return "not-a-number"
    if isinstance(kind, click.DateTime | Moment):
        return "not-a-time"
    if isinstance(kind, click.Path):
        if not kind.dir_okay:
            return str(tmp)  # a directory where a file is wanted
        if not kind.file_okay:
            afile = tmp / "a-file"
            afile.write_text("", encoding="utf-8")
            return str(afile)
    return None


def _required(command: click.Command, tmp: Path, *, skip: str | None = None) -> list[str]:
    """Arguments and options that the command cannot do without, with acceptable values."""
    out: list[str] = []
    for param in command.params:
        if not param.required or param.name == skip:
            continue
        if isinstance(param, click.Argument):
            out.append(_good_value(param, tmp))
        elif isinstance(param, click.Option):
            out += [param.opts[0], _good_value(param, tmp)]
    return out


@dataclass(frozen=True)
class Misuse:
    """One wrong way of calling one command."""

    path: tuple[str, ...]
    variant: str  # unknown-option | extra-argument | bad-value:PARAM

    @property
    def id(self) -> str:
        return f"{' '.join(self.path) or 'pdca'}::{self.variant}"

    def args(self, tmp: Path) -> list[str]:
        command = COMMANDS[self.path]
        json_flag = ["--json"] if _has_json(command) else []
        if isinstance(command, click.Group):
            tail = {"unknown-option": ["--no-such-option"],
                    "extra-argument": ["bogus-extra"]}.get(self.variant)
            if tail is None:
                param = next(p for p in command.params if f"bad-value:{p.name}" == self.variant)
                assert isinstance(param, click.Option)
                bad = _bad_value(param, tmp)
                assert bad is not None
                tail = [param.opts[0], bad, "status"]
            return [*self.path, *tail]
        if self.variant == "unknown-option":
            return [*self.path, *json_flag, *_required(command, tmp), "--no-such-option"]
        if self.variant == "extra-argument":
            return [*self.path, *json_flag, *_required(command, tmp), "bogus-extra"]
        name = self.variant.removeprefix("bad-value:")
        param = next(p for p in command.params if p.name == name)
        bad = _bad_value(param, tmp)
        assert bad is not None
        if isinstance(param, click.Option):
            return [*self.path, *json_flag, *_required(command, tmp, skip=name),
                    param.opts[0], bad]
        # an argument: every argument in its place, the bad one among them
        values = [bad if p is param else _good_value(p, tmp)
                  for p in command.params if isinstance(p, click.Argument)]
        options = [x for p in command.params if isinstance(p, click.Option) and p.required
                   for x in (p.opts[0], _good_value(p, tmp))]
        return [*self.path, *json_flag, *values, *options]


def _rejectable(param: click.Parameter) -> bool:
    """Whether click itself rejects some value of ``param`` (a typed, non-flag parameter)."""
    if isinstance(param, click.Option) and param.is_flag:
        return False
    kind = param.type
    if isinstance(kind, click.Path):
        return not kind.dir_okay or not kind.file_okay
    return isinstance(kind, click.Choice | click.types.IntParamType
                      | click.types.FloatParamType | click.DateTime | Moment)


def _misuses() -> list[Misuse]:
    out = []
    for path, command in COMMANDS.items():
        out += [Misuse(path, "unknown-option"), Misuse(path, "extra-argument")]
        out += [Misuse(path, f"bad-value:{p.name}") for p in command.params if _rejectable(p)]
    return out


MISUSES = _misuses()


def test_the_command_tree_is_what_the_contract_names() -> None:
    names = {" ".join(path) for path in ACTING}
    assert {"init", "people add", "people list", "measures import", "measures list",
            "evaluate", "emissions import", "emissions show", "meetings schedule",
            "meetings list", "advice add", "advice answer", "advance", "show", "status",
            "schedule show", "tick", "daemon", "simulate", "audit log", "audit verify",
            "audit checkpoint", "diagram", "demo"} <= names
    json_commands = {" ".join(path) for path, c in ACTING.items() if _has_json(c)}
    assert {"show", "status", "audit log", "audit verify", "people list", "measures list",
            "emissions show", "meetings list", "schedule show", "tick", "simulate"} <= (
        json_commands)


@pytest.mark.parametrize("misuse", MISUSES, ids=[m.id for m in MISUSES])
def test_every_command_called_wrongly_exits_2_with_one_error_line(
    misuse: Misuse, uninitialised: str, tmp_path: Path
) -> None:
    """Usage errors: exit 2, no traceback, stderr ends with one error line.

    click's own usage errors stay plain text (``Usage: …`` / ``Try …`` / ``Error: …``)
    even under ``--json``: the option has not been acted on when click rejects the
    command line. A JSON object is accepted too, should they become JSON.
    """
    result = cli(uninitialised, *misuse.args(tmp_path))
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    last = lines[-1]
    errors = [line for line in lines if line.startswith(("Error", "{"))]
    assert errors == [last], result.stderr
    if last.startswith("{"):
        error = json.loads(last)
        assert {"error", "message"} <= error.keys()
    else:
        assert last.startswith("Error: ")
        assert len(last) > len("Error: ")


#: What a leaf command is given so that it reaches the library (and fails there) rather
#: than succeeding on an empty database or doing something else entirely.
LIBRARY_ERROR_ARGS: dict[tuple[str, ...], list[str]] = {
    ("init",): ["--plan", "{tmp}/missing-plan.toml", "--admin", "admin"],
    ("demo",): ["--dir", "{tmp}/a-file/demo"],
    ("report",): ["--fy", "2025", "--out", "{tmp}/site"],
}


def _library_error_params() -> list[Any]:
    params: list[Any] = []
    for path in ACTING:
        marks: list[pytest.MarkDecorator] = []
        params.append(pytest.param(path, marks=marks, id=" ".join(path)))
    return params


@pytest.mark.parametrize("path", _library_error_params())
def test_every_command_reports_a_library_error_in_one_line_or_one_json_object(
    path: tuple[str, ...], uninitialised: str, tmp_path: Path
) -> None:
    """On a database without schema (or with an input the library rejects) every command
    exits 2 with one line on stderr, one JSON object under ``--json``, nothing on stdout."""
    (tmp_path / "a-file").write_text("", encoding="utf-8")
    command = ACTING[path]
    args = [a.replace("{tmp}", str(tmp_path))
            for a in LIBRARY_ERROR_ARGS.get(path, _required(command, tmp_path))]
    as_json = _has_json(command)
    result = cli(uninitialised, "--actor", "admin", *path, *args,
                 *(["--json"] if as_json else []))
    assert result.exit_code == 2, (result.stdout, result.stderr)
    if as_json:
        assert json_error(result)["error"]
    else:
        assert one_error_line(result).startswith("Error: ")
