"""One whole fiscal year of the 18-member Kumamoto plan, carried out through the library.

Every municipal cycle goes from ``plan`` to ``closed``, the regional cycle to ``closed``,
meetings are held, advice answered; then the audit log is checked to tell that story in
order. The clock is a test clock that the scenario moves through the year.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import pdca
from pdca.notify import LogNotifier

TOKYO = ZoneInfo("Asia/Tokyo")
FY = 2025


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime(2025, 3, 1, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def set(self, y: int, m: int, d: int, hour: int = 10) -> None:
        moment = datetime(y, m, d, hour, tzinfo=TOKYO).astimezone(UTC)
        assert moment >= self.now, "the test clock only moves forward"
        self.now = moment


@dataclass
class Year:
    engine: pdca.Engine
    clock: Clock
    members: list[str]
    tmp: Path
    notifier: LogNotifier = field(default_factory=LogNotifier)

    def staff(self, code: str) -> str:
        return f"staff-{code}"


def write_measures(path: Path, members: list[str]) -> None:
    lines = ["code,municipality,title_ja,title_en,policy_area,kind,priority_project,leading,"
             "indicator,unit,target"]
    for i, code in enumerate(members):
        lines.append(f"S-{code},{code},太陽光発電の検討 {code},Solar study,renewable_energy,study,"
                     f"priority-1,false,導入件数,件,10")
        lines.append(f"I-{code},{code},省エネ診断 {code},Energy audits,energy_saving,"
                     f"implementation,priority-{2 + i % 3},{'true' if i == 0 else 'false'},"
                     "診断件数,件,100")
    lines.append(f"J-1,{members[0]};{members[1]},共同啓発事業,Joint awareness,awareness,"
                 "implementation,,false,,,")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_emissions(path: Path, engine: pdca.Engine, years: list[int]) -> None:
    plan = engine.plan
    lines = ["municipality,year,sector,value_t_co2,status"]
    for year in years:
        for m in plan.members_of(2024):
            for n, sector in enumerate(plan.sector_ids):
                value = 1000 + 10 * n + int(m.code[3:5]) + (0 if year == plan.base_year else -100)
                lines.append(f"{m.code},{year},{sector},{value},"
                             f"{'final' if year == plan.base_year else 'preliminary'}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def year(db_url: str, tmp_path: Path) -> Iterator[Year]:
    clock = Clock()
    engine = pdca.Engine.open(db_url, migrate=True, clock=clock)
    engine.bootstrap_admin("admin")
    plan = engine.load_plan("kumamoto", actor="admin")
    members = [m.code for m in plan.members_of(FY)]
    for role in ("secretariat", "clerk"):
        engine.add_person(role, role=role, actor="admin")
    for code in members:
        engine.add_person(f"staff-{code}", role="staff", municipality=code, actor="admin")
    write_measures(tmp_path / "measures.csv", members)
    engine.import_measures(tmp_path / "measures.csv", actor="secretariat")
    try:
        yield Year(engine, clock, members, tmp_path)
    finally:
        engine.close()


def test_the_kumamoto_plan_has_eighteen_members_in_fy2025(year: Year) -> None:
    assert len(year.members) == 18
    assert "432105" in year.members  # 菊池市, joined in FY2019


def test_a_whole_fiscal_year_runs_through_the_library(year: Year) -> None:
    engine, clock, members = year.engine, year.clock, year.members

    # Before the year: the cycles of FY2025 exist for that year's members.
    created = engine.open_fiscal_year(FY)
    assert len(created) == 19
    assert engine.open_fiscal_year(FY) == []  # safe to run again
    assert {v.state for v in engine.entities(workflow="municipal_cycle", fiscal_year=FY)} == {
        "plan"}

    # 1 April 2025: the year starts (a time-based transition: the scheduler's).
    clock.set(2025, 4, 1, 0)
    with pytest.raises(pdca.PermissionDenied, match="only the scheduler"):
        engine.fire(f"cycle:{members[0]}:{FY}", "start", actor=year.staff(members[0]))
    report = engine.tick(notifier=year.notifier)
    assert report.done == 1 + 18  # the year opened (cycles existed), 18 cycles started
    assert engine.tick(notifier=year.notifier).firings == ()  # ticking again fires nothing

    # During the year a study project is funded; staff meetings and a theme project.
    clock.set(2025, 6, 10)
    engine.fire(f"measure:S-{members[0]}", "commercialise", actor=year.staff(members[0]),
                data={"fiscal_year": FY, "budget_jpy": 12_000_000})
    staff_meeting = engine.schedule_meeting("staff_meeting", fiscal_year=FY, on="2025-05-20",
                                            actor="secretariat")
    engine.fire(staff_meeting, "hold", actor="secretariat")
    project = engine.propose_project("EV共同利用プロジェクト", fiscal_year=FY, actor="secretariat",
                                     meeting=staff_meeting)
    engine.fire(project, "launch", actor="secretariat")

    # 1 April 2026: the check of FY2025 begins, for every member and the region (and
    # FY2026 opens).
    clock.set(2026, 4, 1, 0)
    engine.tick(notifier=year.notifier)
    assert {v.state for v in engine.cycles(FY)} == {"check_status", "check_collect"}

    # Each municipality: status review, emissions, evaluation, internal report. Finished
    # early, a cycle waits for the next step's window; the scheduler moves it in.
    clock.set(2026, 6, 1)
    for code in members:
        engine.fire(f"cycle:{code}:{FY}", "confirm_status", actor=year.staff(code))
    assert engine.get(f"cycle:{members[0]}:{FY}").state == "emissions_pending"
    clock.set(2026, 7, 15)
    engine.tick(notifier=year.notifier)
    write_emissions(year.tmp / "emissions.csv", engine, [2013, 2024])
    result = engine.import_emissions(year.tmp / "emissions.csv", actor="secretariat")
    assert result.created == 18 * 10 * 2
    for code in members:
        engine.fire(f"cycle:{code}:{FY}", "submit_emissions", actor=year.staff(code))
    clock.set(2026, 9, 1)
    engine.tick(notifier=year.notifier)
    for code in members:
        for measure in engine.entities(workflow="measure", municipality=code):
            engine.evaluate(measure.ref, fiscal_year=FY, rating="B", actual=5,
                            comment="概ね順調", actor=year.staff(code))
        engine.fire(f"cycle:{code}:{FY}", "finish_evaluation", actor=year.staff(code))
    clock.set(2026, 10, 20)
    engine.tick(notifier=year.notifier)
    for code in members:
        engine.fire(f"cycle:{code}:{FY}", "report_internally", actor=year.staff(code))

    # The region: priority projects evaluated, aggregated, council, committee, publication.
    clock.set(2026, 11, 10)
    region = f"cycle:region:{FY}"
    for project_id in [p.id for p in engine.plan.priority_projects]:
        engine.evaluate_priority_project(project_id, fiscal_year=FY, rating="B",
                                         actor="secretariat")
    engine.fire(region, "aggregate", actor="secretariat")
    council = engine.schedule_meeting("liaison_council", fiscal_year=FY, on="2026-12-10",
                                      actor="secretariat")
    committee = engine.schedule_meeting("advisory_committee", fiscal_year=FY, on="2027-01-20",
                                        actor="clerk")
    clock.set(2026, 12, 10)
    engine.fire(council, "hold", actor="secretariat")
    engine.fire(council, "record_minutes", actor="secretariat",
                data={"minutes": "全体の進捗を確認した"})
    engine.fire(region, "hold_liaison_council", actor="secretariat")
    clock.set(2027, 1, 20)
    engine.fire(committee, "hold", actor="clerk")
    advice = [
        engine.add_advice(committee, "家庭部門の削減を強化すること", actor="clerk",
                          member="学識経験者"),
        engine.add_advice(committee, "市民への分かりやすい公表", actor="clerk"),
    ]
    engine.fire(region, "hold_advisory_committee", actor="secretariat")
    clock.set(2027, 2, 20)
    engine.fire(region, "publish", actor="secretariat",
                data={"url": "https://example.jp/kumamoto/2025"})
    engine.fire(region, "begin_act", actor="secretariat")
    with pytest.raises(pdca.GuardFailed, match="2 pieces of advice are not answered yet"):
        engine.fire(region, "close", actor="secretariat")
    for ref in advice:
        engine.fire(ref, "answer", actor="secretariat",
                    data={"answer": "令和8年度の施策に反映した"})
    engine.fire(region, "close", actor="secretariat")

    # Each municipality decides its revisions and closes its cycle.
    clock.set(2027, 3, 10)
    for code in members:
        engine.fire(f"cycle:{code}:{FY}", "close", actor=year.staff(code),
                    data={"revisions": "助言を踏まえ啓発を強化"})

    # Every cycle is closed.
    assert {v.state for v in engine.cycles(FY)} == {"closed"}

    # The audit log tells the story, in order.
    expected = ["create", "start", "begin_check", "confirm_status", "open_emissions",
                "submit_emissions", "open_evaluation", "finish_evaluation", "open_report",
                "report_internally", "close"]
    for code in members:
        history = [e.trigger for e in engine.history(f"cycle:{code}:{FY}")
                   if e.kind in ("create", "transition")]
        assert history == expected, code
    region_history = engine.history(region)
    assert [e.trigger for e in region_history if e.kind in ("create", "transition")] == [
        "create", "begin_check", "aggregate", "hold_liaison_council",
        "hold_advisory_committee", "publish", "begin_act", "close"]
    seq = {(e.ref, e.trigger): e.seq for e in engine.audit_log() if e.kind == "transition"}
    last_report = max(seq[(f"cycle:{c}:{FY}", "report_internally")] for c in members)
    assert last_report < seq[(region, "aggregate")]
    assert seq[(council, "hold")] < seq[(region, "hold_liaison_council")]
    assert seq[(region, "hold_liaison_council")] < seq[(committee, "hold")]
    assert seq[(committee, "hold")] < seq[(region, "hold_advisory_committee")]
    assert seq[(region, "hold_advisory_committee")] < seq[(region, "publish")]
    assert max(seq[(a, "answer")] for a in advice) < seq[(region, "close")]
    assert seq[(region, "publish")] < min(seq[(f"cycle:{c}:{FY}", "close")] for c in members)
    assert all(e.actor == "scheduler" for e in engine.audit_log()
               if e.kind == "transition" and e.trigger in ("start", "begin_check",
                                                            "open_emissions", "open_report"))
    assert not any(e.kind == "deadline_missed" for e in engine.audit_log())
    assert engine.verify_audit().ok


def test_the_region_total_uses_that_years_members(year: Year) -> None:
    engine = year.engine
    write_emissions(year.tmp / "emissions.csv", engine, [2013, 2024])
    engine.import_emissions(year.tmp / "emissions.csv", actor="secretariat")
    totals = engine.region_emissions(2024)
    assert totals.complete
    assert len(totals.members) == 18
    assert totals.total is not None and totals.base_total is not None
    assert totals.total == pytest.approx(totals.base_total - 18 * 10 * 100)
    assert totals.statuses == {"preliminary": 180}
