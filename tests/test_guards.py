"""Every guard of the review cycles and of meetings: it refuses, saying what is missing, and
it lets the transition through once the data is there.

A refusal by a guard is audited (an entry of kind ``refused`` whose note holds the reasons)
and leaves the entity's state and version as they were; :func:`_refused` checks that for
every refusal below. The set-up is the bundled 18-member Kumamoto plan in FY2025, with a few
measures of 熊本市 and 菊池市; the other members only need their emissions to report.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import pdca
from tests.conftest import KIKUCHI, KUMAMOTO
from tests.test_fiscal_year import Clock, write_emissions, write_measures

FY = 2025
REGION = f"cycle:region:{FY}"
SECTORS = (
    "industry_manufacturing", "industry_construction_mining", "industry_agriculture",
    "commercial", "household", "transport_road", "transport_rail", "transport_ship",
    "energy_conversion", "waste",
)
PRIORITY_PROJECTS = ("priority-1", "priority-2", "priority-3", "priority-4")


@dataclass
class World:
    engine: pdca.Engine
    clock: Clock
    members: list[str]
    tmp: Path

    @staticmethod
    def staff(code: str) -> str:
        return f"staff-{code}"

    @staticmethod
    def cycle(code: str) -> str:
        return f"cycle:{code}:{FY}"


def _always_open_plan(tmp_path: Path) -> Path:
    """The Kumamoto plan with every municipal step open from 1 April: these tests are about
    the guards, not about waiting for a step's window (test_scheduler.py is)."""
    text = (Path(pdca.__file__).parent / "plans" / "kumamoto.toml").read_text(encoding="utf-8")
    for later in ('"07-01"', '"08-01"', '"10-01"'):
        text = text.replace(f"opens = {later}", 'opens = "04-01"')
    path = tmp_path / "kumamoto.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    """FY2025 under way: every cycle started, measures of 熊本市 and 菊池市 imported.

    熊本市 also has U-OLD, discontinued in the last hour of FY2024 (before the year under
    review), and three more measures the tests end during or after FY2025.
    """
    clock = Clock()  # 1 March 2025: still FY2024
    engine = pdca.Engine.open(db_url, migrate=True, clock=clock)
    engine.bootstrap_admin("admin")
    plan = engine.load_plan(_always_open_plan(tmp_path), actor="admin")
    members = [m.code for m in plan.members_of(FY)]
    for role in ("secretariat", "clerk"):
        engine.add_person(role, role=role, actor="admin")
    for code in members:
        engine.add_person(World.staff(code), role="staff", municipality=code, actor="admin")
    path = tmp_path / "measures.csv"
    write_measures(path, [KUMAMOTO, KIKUCHI])
    with path.open("a", encoding="utf-8") as f:
        f.write(f"U-OLD,{KUMAMOTO},旧事業,Old,awareness,study,,false,,,\n"
                f"V-MID,{KUMAMOTO},中止事業,Stopped,awareness,study,,false,,,\n"
                f"W-DONE,{KUMAMOTO},完了事業,Done,awareness,implementation,,false,,,\n"
                f"X-LATE,{KUMAMOTO},継続事業,Late,awareness,implementation,,false,,,\n")
    engine.import_measures(path, actor="secretariat")
    clock.set(2025, 3, 31, 23)  # 23:00 in Tokyo: still FY2024
    engine.fire("measure:U-OLD", "discontinue", actor=World.staff(KUMAMOTO),
                data={"reason": "前年度で終了"})
    engine.open_fiscal_year(FY)
    clock.set(2025, 4, 1, 0)
    engine.fire_many([(World.cycle(c), "start", None) for c in members], actor="scheduler")
    try:
        yield World(engine, clock, members, tmp_path)
    finally:
        engine.close()


# ----------------------------------------------------------------------------- helpers


def _log_size(engine: pdca.Engine) -> int:
    return len(list(engine.audit_log()))


def _refused(
    w: World, ref: str, trigger: str, actor: str, data: Mapping[str, Any] | None = None
) -> list[str]:
    """Fire a transition that a guard must refuse; check the refusal is audited and
    changes nothing; return the reasons."""
    engine = w.engine
    before = engine.get(ref)
    size = _log_size(engine)
    with pytest.raises(pdca.GuardFailed) as info:
        engine.fire(ref, trigger, actor=actor, data=data)
    error = info.value
    assert (error.ref, error.trigger, error.state) == (ref, trigger, before.state)
    assert str(error) == f"cannot {trigger} {ref}: " + "; ".join(error.reasons)
    after = engine.get(ref)
    assert (after.state, after.version) == (before.state, before.version)
    assert _log_size(engine) == size + 1
    entry = engine.history(ref)[-1]
    assert (entry.kind, entry.trigger, entry.actor) == ("refused", trigger, actor)
    assert entry.from_state == entry.to_state == before.state
    assert entry.note == "; ".join(error.reasons)
    return list(error.reasons)


def _write_emissions(path: Path, code: str, year: int, sectors: tuple[str, ...]) -> Path:
    lines = ["municipality,year,sector,value_t_co2,status"]
    lines += [f"{code},{year},{s},{1000 + n},preliminary" for n, s in enumerate(sectors)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _begin_check(w: World) -> None:
    """1 April 2026: the check of FY2025 begins for every member and the region."""
    w.clock.set(2026, 4, 1, 0)
    w.engine.fire_many(
        [(World.cycle(c), "begin_check", None) for c in w.members] + [(REGION, "begin_check",
                                                                       None)],
        actor="scheduler",
    )


def _evaluate_due(w: World, code: str) -> None:
    """Evaluate the measures of ``code`` that are due for FY2025."""
    for measure in w.engine.entities(workflow="measure", municipality=code):
        ended = measure.attrs.get("ended_fy")
        if ended is None or ended >= FY:
            w.engine.evaluate(measure.ref, fiscal_year=FY, rating="B", actor=World.staff(code))


def _report(w: World, codes: list[str]) -> None:
    """Take the cycles of ``codes`` from check_status to act (emissions must be in)."""
    for code in codes:
        _evaluate_due(w, code)
        w.engine.fire_many(
            [(World.cycle(code), t, None) for t in ("confirm_status", "submit_emissions",
                                                    "finish_evaluation",
                                                    "report_internally")],
            actor=World.staff(code),
        )


def _all_emissions(w: World) -> None:
    write_emissions(w.tmp / "emissions.csv", w.engine, [2024])
    w.engine.import_emissions(w.tmp / "emissions.csv", actor="secretariat")


def _to_check_collect_with_reports(w: World, but: tuple[str, ...] = ()) -> None:
    """The check begun, every member but ``but`` reported (June 2026)."""
    _begin_check(w)
    w.clock.set(2026, 6, 1)
    _all_emissions(w)
    _report(w, [c for c in w.members if c not in but])


def _evaluate_projects(w: World, projects: tuple[str, ...] = PRIORITY_PROJECTS) -> None:
    for project in projects:
        w.engine.evaluate_priority_project(project, fiscal_year=FY, rating="B",
                                           actor="secretariat")


def _to_aggregated(w: World, *, reported: bool = False) -> None:
    """Every member reported, priority projects evaluated, aggregated (10 Nov 2026)."""
    if not reported:
        _to_check_collect_with_reports(w)
    w.clock.set(2026, 11, 10)
    _evaluate_projects(w)
    w.engine.fire(REGION, "aggregate", actor="secretariat")


def _hold(w: World, kind: str, on: tuple[int, int, int], fiscal_year: int = FY) -> str:
    """Schedule a meeting of ``kind`` on ``on``, move the clock there and hold it."""
    y, m, d = on
    actor = "clerk" if kind == "advisory_committee" else "secretariat"
    ref = w.engine.schedule_meeting(kind, fiscal_year=fiscal_year, on=f"{y}-{m:02}-{d:02}",
                                    actor=actor)
    w.clock.set(y, m, d)
    w.engine.fire(ref, "hold", actor=actor)
    return ref


def _to_committee_held(w: World, *, reported: bool = False) -> str:
    """Aggregated, council held 10 Dec 2026, committee held 20 Jan 2027; the committee."""
    _to_aggregated(w, reported=reported)
    _hold(w, "liaison_council", (2026, 12, 10))
    w.engine.fire(REGION, "hold_liaison_council", actor="secretariat")
    committee = _hold(w, "advisory_committee", (2027, 1, 20))
    w.engine.fire(REGION, "hold_advisory_committee", actor="secretariat")
    return committee


# ----------------------------------------------------------------------------- municipal cycle


def test_submit_emissions_needs_a_figure_for_every_sector_of_the_inventory_year(
    world: World,
) -> None:
    w, engine, ref = world, world.engine, World.cycle(KUMAMOTO)
    _begin_check(w)
    engine.fire(ref, "confirm_status", actor=w.staff(KUMAMOTO))
    # Figures of another year or another member do not count for 熊本市's FY2025 check.
    engine.import_emissions(_write_emissions(w.tmp / "a.csv", KUMAMOTO, 2023, SECTORS),
                            actor="secretariat")
    engine.import_emissions(_write_emissions(w.tmp / "b.csv", KIKUCHI, 2024, SECTORS),
                            actor="secretariat")

    assert _refused(w, ref, "submit_emissions", w.staff(KUMAMOTO)) == [
        "10 sectors have no emissions figure for 2024: " + ", ".join(SECTORS)]

    engine.import_emissions(_write_emissions(w.tmp / "c.csv", KUMAMOTO, 2024, SECTORS[:8]),
                            actor="secretariat")
    assert _refused(w, ref, "submit_emissions", w.staff(KUMAMOTO)) == [
        "2 sectors have no emissions figure for 2024: energy_conversion, waste"]

    engine.import_emissions(_write_emissions(w.tmp / "d.csv", KUMAMOTO, 2024, SECTORS[8:]),
                            actor="secretariat")
    result = engine.fire(ref, "submit_emissions", actor=w.staff(KUMAMOTO))
    assert (result.from_state, result.to_state) == ("check_emissions", "check_evaluation")


def test_finish_evaluation_needs_every_measure_active_in_the_year_evaluated(
    world: World,
) -> None:
    w, engine, ref = world, world.engine, World.cycle(KUMAMOTO)
    staff = w.staff(KUMAMOTO)
    # V-MID is discontinued and W-DONE completed during FY2025 (the latter in its last
    # hour), X-LATE completed during the check (FY2026): all three still need FY2025's
    # evaluation; U-OLD ended in FY2024 and does not.
    w.clock.set(2025, 10, 1)
    engine.fire("measure:V-MID", "discontinue", actor=staff, data={"reason": "予算削減"})
    w.clock.set(2026, 3, 31, 23)
    engine.fire("measure:W-DONE", "complete", actor=staff)
    _begin_check(w)
    w.clock.set(2026, 6, 1)
    engine.fire("measure:X-LATE", "complete", actor=staff)
    ended = {code: engine.get(f"measure:{code}").attrs["ended_fy"]
             for code in ("U-OLD", "V-MID", "W-DONE", "X-LATE")}
    assert ended == {"U-OLD": FY - 1, "V-MID": FY, "W-DONE": FY, "X-LATE": FY + 1}
    engine.import_emissions(_write_emissions(w.tmp / "e.csv", KUMAMOTO, 2024, SECTORS),
                            actor="secretariat")
    engine.fire_many([(ref, "confirm_status", None), (ref, "submit_emissions", None)],
                     actor=staff)
    # An evaluation for another fiscal year does not count.
    engine.evaluate("measure:S-431001", fiscal_year=FY - 1, rating="A", actor=staff)

    assert _refused(w, ref, "finish_evaluation", staff) == [
        "6 measures have no evaluation for FY2025: "
        "I-431001, J-1, S-431001, V-MID, W-DONE, X-LATE"]

    for code in ("I-431001", "J-1", "S-431001", "W-DONE", "X-LATE"):
        engine.evaluate(f"measure:{code}", fiscal_year=FY, rating="B", actor=staff)
    assert _refused(w, ref, "finish_evaluation", staff) == [
        "1 measure has no evaluation for FY2025: V-MID"]

    with pytest.raises(pdca.InvalidInput, match="U-OLD ended in FY2024; it has no evaluation"):
        engine.evaluate("measure:U-OLD", fiscal_year=FY, rating="C", actor=staff)
    engine.evaluate("measure:V-MID", fiscal_year=FY, rating="C", actor=staff)
    result = engine.fire(ref, "finish_evaluation", actor=staff)
    assert (result.from_state, result.to_state) == ("check_evaluation", "check_report")


def test_a_joint_measure_evaluated_by_one_owner_counts_for_every_owner(world: World) -> None:
    w, engine, ref = world, world.engine, World.cycle(KIKUCHI)
    staff = w.staff(KIKUCHI)
    _begin_check(w)
    engine.import_emissions(_write_emissions(w.tmp / "e.csv", KIKUCHI, 2024, SECTORS),
                            actor="secretariat")
    engine.fire_many([(ref, "confirm_status", None), (ref, "submit_emissions", None)],
                     actor=staff)
    assert _refused(w, ref, "finish_evaluation", staff) == [
        "3 measures have no evaluation for FY2025: I-432105, J-1, S-432105"]
    engine.evaluate("measure:J-1", fiscal_year=FY, rating="B", actor=w.staff(KUMAMOTO))
    for code in ("I-432105", "S-432105"):
        engine.evaluate(f"measure:{code}", fiscal_year=FY, rating="B", actor=staff)
    assert engine.fire(ref, "finish_evaluation", actor=staff).to_state == "check_report"


def test_municipal_close_waits_until_the_region_has_published(world: World) -> None:
    w, engine, ref = world, world.engine, World.cycle(KUMAMOTO)
    staff = w.staff(KUMAMOTO)
    _to_check_collect_with_reports(w)
    assert engine.get(ref).state == "act"
    assert _refused(w, ref, "close", staff) == [
        "the region has not yet published FY2025 (its cycle is check_collect); "
        "its advice comes first"]

    _to_committee_held(w, reported=True)
    assert _refused(w, ref, "close", staff) == [
        "the region has not yet published FY2025 (its cycle is committee_held); "
        "its advice comes first"]

    w.clock.set(2027, 2, 20)
    engine.fire(REGION, "publish", actor="secretariat", data={"url": "https://example.jp/r"})
    result = engine.fire(ref, "close", actor=staff, data={"revisions": "啓発を強化"})
    assert (result.from_state, result.to_state) == ("act", "closed")


def test_municipal_close_is_refused_when_the_region_has_no_cycle_that_year(
    world: World,
) -> None:
    w, engine = world, world.engine
    code, fy = "432113", 2024  # 宇土市 has no measures: only its emissions are needed
    ref = f"cycle:{code}:{fy}"
    engine.create(ref, actor="scheduler", data={"municipality": code, "fiscal_year": fy})
    engine.import_emissions(_write_emissions(w.tmp / "e.csv", code, 2023, SECTORS),
                            actor="secretariat")
    engine.fire_many([(ref, "start", None), (ref, "begin_check", None)], actor="scheduler")
    engine.fire_many([(ref, t, None) for t in ("confirm_status", "submit_emissions",
                                               "finish_evaluation", "report_internally")],
                     actor=w.staff(code))
    assert _refused(w, ref, "close", w.staff(code)) == [
        "the region has not yet published FY2024 (its cycle is not started); "
        "its advice comes first"]


# ----------------------------------------------------------------------------- regional cycle


def test_aggregate_is_refused_naming_the_members_that_have_not_reported(world: World) -> None:
    w, engine = world, world.engine
    _begin_check(w)
    names = [f"{m.name_ja} ({m.code})" for m in engine.plan.members_of(FY)]
    assert names[:2] == ["熊本市 (431001)", "菊池市 (432105)"]
    assert _refused(w, REGION, "aggregate", "secretariat") == [
        "18 members have not made their internal report for FY2025: "
        + ", ".join(names[:10]) + " and 8 more",
        "4 priority projects have no evaluation for FY2025: "
        "priority-1, priority-2, priority-3, priority-4",
    ]

    w.clock.set(2026, 6, 1)
    _all_emissions(w)
    _report(w, [c for c in w.members if c not in (KUMAMOTO, KIKUCHI)])
    _evaluate_projects(w)
    assert _refused(w, REGION, "aggregate", "secretariat") == [
        "2 members have not made their internal report for FY2025: "
        "熊本市 (431001), 菊池市 (432105)"]

    _report(w, [KUMAMOTO, KIKUCHI])
    result = engine.fire(REGION, "aggregate", actor="secretariat")
    assert (result.from_state, result.to_state) == ("check_collect", "check_aggregated")


def test_aggregate_is_refused_until_every_priority_project_is_evaluated(world: World) -> None:
    w, engine = world, world.engine
    _to_check_collect_with_reports(w)
    _evaluate_projects(w, ("priority-1", "priority-2"))
    assert _refused(w, REGION, "aggregate", "secretariat") == [
        "2 priority projects have no evaluation for FY2025: priority-3, priority-4"]
    _evaluate_projects(w, ("priority-3", "priority-4"))
    assert engine.fire(REGION, "aggregate", actor="secretariat").to_state == "check_aggregated"


def test_guard_messages_use_the_singular_for_one_missing_item(world: World) -> None:
    w = world
    _to_check_collect_with_reports(w, but=(KIKUCHI,))
    _evaluate_projects(w, PRIORITY_PROJECTS[:3])
    assert _refused(w, REGION, "aggregate", "secretariat") == [
        "1 member has not made its internal report for FY2025: 菊池市 (432105)",
        "1 priority project has no evaluation for FY2025: priority-4",
    ]


def test_the_liaison_council_must_have_been_held_before_the_region_records_it(
    world: World,
) -> None:
    w, engine = world, world.engine
    _to_aggregated(w)
    # Neither a planned council, a cancelled one, nor a council of another year counts.
    planned = engine.schedule_meeting("liaison_council", fiscal_year=FY, on="2026-12-10",
                                      actor="secretariat")
    cancelled = engine.schedule_meeting("liaison_council", fiscal_year=FY, on="2026-11-20",
                                        actor="secretariat")
    engine.fire(cancelled, "cancel", actor="secretariat", data={"reason": "台風"})
    _hold(w, "liaison_council", (2026, 11, 25), fiscal_year=FY - 1)
    assert _refused(w, REGION, "hold_liaison_council", "secretariat") == [
        "no liaison council for FY2025 has been held"]

    w.clock.set(2026, 12, 10)
    engine.fire(planned, "hold", actor="secretariat")
    result = engine.fire(REGION, "hold_liaison_council", actor="secretariat")
    assert (result.from_state, result.to_state) == ("check_aggregated", "council_held")


def test_the_advisory_committee_must_have_been_held_before_the_region_records_it(
    world: World,
) -> None:
    w, engine = world, world.engine
    _to_aggregated(w)
    _hold(w, "liaison_council", (2026, 12, 10))
    engine.fire(REGION, "hold_liaison_council", actor="secretariat")
    engine.schedule_meeting("advisory_committee", fiscal_year=FY, on="2027-01-20",
                            actor="clerk")
    assert _refused(w, REGION, "hold_advisory_committee", "secretariat") == [
        "no advisory committee for FY2025 has been held"]

    # The same day as the council is not "before" it.
    _hold(w, "advisory_committee", (2026, 12, 10))
    result = engine.fire(REGION, "hold_advisory_committee", actor="secretariat")
    assert (result.from_state, result.to_state) == ("council_held", "committee_held")


def test_an_advisory_committee_held_before_the_liaison_council_is_refused(
    world: World,
) -> None:
    w, engine = world, world.engine
    _to_aggregated(w)
    _hold(w, "advisory_committee", (2026, 12, 1))
    _hold(w, "liaison_council", (2026, 12, 10))
    engine.fire(REGION, "hold_liaison_council", actor="secretariat")
    assert _refused(w, REGION, "hold_advisory_committee", "secretariat") == [
        "the advisory committee (2026-12-01) was held before the liaison council "
        "(2026-12-10); it must come after"]

    _hold(w, "advisory_committee", (2027, 1, 20))
    assert engine.fire(REGION, "hold_advisory_committee",
                       actor="secretariat").to_state == "committee_held"


def test_the_region_closes_only_when_every_piece_of_advice_is_answered(world: World) -> None:
    w, engine = world, world.engine
    committee = _to_committee_held(w)
    advice = [engine.add_advice(committee, "家庭部門の削減を強化すること", actor="clerk"),
              engine.add_advice(committee, "分かりやすい公表", actor="clerk")]
    w.clock.set(2027, 2, 20)
    engine.fire_many([(REGION, "publish", None), (REGION, "begin_act", None)],
                     actor="secretariat")
    assert _refused(w, REGION, "close", "secretariat") == [
        f"2 pieces of advice are not answered yet: {advice[0]}, {advice[1]}"]

    engine.fire(advice[0], "answer", actor="secretariat", data={"answer": "施策に反映"})
    reasons = _refused(w, REGION, "close", "secretariat")
    assert len(reasons) == 1 and reasons[0].endswith(f"not answered yet: {advice[1]}")

    engine.fire(advice[1], "answer", actor="secretariat", data={"answer": "公表方法を改善"})
    result = engine.fire(REGION, "close", actor="secretariat")
    assert (result.from_state, result.to_state) == ("act", "closed")


# ----------------------------------------------------------------------------- meetings


def test_a_meeting_cannot_be_held_before_its_date_in_japan(world: World) -> None:
    w, engine = world, world.engine
    meeting = engine.schedule_meeting("liaison_council", fiscal_year=FY, on="2026-12-10",
                                      actor="secretariat")
    w.clock.set(2026, 12, 9, 23)  # 23:00 in Tokyo: still the day before
    assert _refused(w, meeting, "hold", "secretariat") == [
        "the meeting is planned for 2026-12-10; it cannot be held before that day"]

    w.clock.set(2026, 12, 10, 0)  # midnight in Tokyo, still 9 December in UTC
    assert w.clock.now.day == 9
    result = engine.fire(meeting, "hold", actor="secretariat")
    assert (result.from_state, result.to_state) == ("planned", "held")
    assert engine.get(meeting).attrs["held_on"] == "2026-12-10"


def test_a_rescheduled_meeting_waits_for_its_new_date(world: World) -> None:
    w, engine = world, world.engine
    meeting = engine.schedule_meeting("staff_meeting", fiscal_year=FY, on="2025-05-20",
                                      actor="secretariat")
    engine.fire(meeting, "postpone", actor="secretariat", data={"reason": "災害対応"})
    engine.fire(meeting, "reschedule", actor="secretariat", data={"date": "2025-06-03"})
    w.clock.set(2025, 5, 20)
    assert _refused(w, meeting, "hold", "secretariat") == [
        "the meeting is planned for 2025-06-03; it cannot be held before that day"]
    w.clock.set(2025, 6, 3)
    assert engine.fire(meeting, "hold", actor="secretariat").to_state == "held"
