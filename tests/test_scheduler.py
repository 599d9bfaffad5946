"""The scheduler over simulated years: every due firing once, on its date, in schedule order,
whatever stops, restarts, runs twice at once or fails to deliver on the way.

Each test has a simulation database of its own (``Engine.create_simulation`` from 1 March
2025, the Kumamoto plan, staff for the 18 members of FY2025, every other one with an e-mail
address). What the schedule made due is read back from the ``due_firings`` table, and
checked against the audit log (one entry per firing) and the outbox (one notice per firing).
Subprocesses run ``tests/_scheduler_worker.py``.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

import pdca
from pdca import schedule
from pdca.calendar import fiscal_year_of
from pdca.engine import TickReport
from pdca.notify import LogNotifier, SmtpNotifier
from pdca.storage.database import normalise_url
from pdca.storage.models import DueFiring, Outbox
from tests._scheduler_worker import (
    FY,
    SIMULATION_START,
    new_simulation,
    staff_id,
    tick_in_step,
    tokyo,
)
from tests.conftest import new_postgres_database

ROOT = Path(__file__).resolve().parent.parent
_DUE = cast(sa.Table, DueFiring.__table__)
_O = cast(sa.Table, Outbox.__table__)
#: How long the parent waits for a subprocess or a daemon to report.
PROCESS_TIMEOUT_S = 120.0
#: How a tick that lost the race over the virtual clock (or ``schedule_from``) fails.


# ----------------------------------------------------------------------------- reading back


@dataclass(frozen=True)
class DueRow:
    """One row of ``due_firings``."""

    key: str
    action: str
    step: str | None
    ref: str | None
    trigger: str | None
    status: str
    due_at: datetime
    done_at: datetime | None
    outcome: str | None


def due_rows(engine: pdca.Engine) -> list[DueRow]:
    stmt = sa.select(_DUE).order_by(_DUE.c.due_at, _DUE.c.key)
    with engine._db.connect() as conn:
        return [
            DueRow(key=r.key, action=r.action, step=r.step, ref=r.ref, trigger=r.trigger,
                   status=r.status, due_at=r.due_at, done_at=r.done_at, outcome=r.outcome)
            for r in conn.execute(stmt)
        ]


@dataclass(frozen=True)
class Queued:
    """One notice in the outbox."""

    id: int
    notice: dict[str, Any]
    done: bool
    attempts: int
    last_error: str | None


def notices(engine: pdca.Engine) -> list[Queued]:
    stmt = sa.select(_O).where(_O.c.channel == "notification").order_by(_O.c.id)
    with engine._db.connect() as conn:
        return [Queued(r.id, json.loads(r.payload), bool(r.done), r.attempts, r.last_error)
                for r in conn.execute(stmt)]


def expected_notice_keys(rows: Sequence[DueRow]) -> set[str]:
    """The notices the done firings must have queued: a step opening for a member's cycle
    (``start`` opens no step; the region's cycle gets none), a reminder, an overdue."""
    keys = set()
    for r in rows:
        if r.status != "done":
            continue
        if r.action == schedule.FIRE and r.step is not None and ":region:" not in (r.ref or ""):
            keys.add(f"{r.key}:step_open")
        elif r.action == schedule.REMINDER:
            keys.add(f"{r.key}:reminder")
        elif r.action == schedule.DEADLINE:
            keys.add(f"{r.key}:overdue")
    return keys


def assert_every_firing_handled_once(engine: pdca.Engine) -> list[DueRow]:
    """Every due firing is done or skipped; each done one left exactly one audit entry (a
    transition by the scheduler, a ``deadline_missed``, the creations of ``open_year``) and
    queued its notice once; a skipped one left nothing; the audit log verifies."""
    rows = due_rows(engine)
    assert rows
    unfinished = [r for r in rows if r.status not in ("done", "skipped")]
    assert not unfinished, unfinished[:5]
    assert all(r.done_at is not None for r in rows)

    entries = list(engine.audit_log(actor="scheduler"))
    assert {e.kind for e in entries} <= {"create", "transition", "deadline_missed"}
    transitions: Counter[tuple[str | None, str | None]] = Counter(
        (e.ref, e.trigger) for e in entries if e.kind == "transition")
    deadlines = Counter(json.loads(e.data)["key"] for e in entries
                        if e.kind == "deadline_missed")
    created = Counter(e.ref for e in entries if e.kind == "create")
    for r in rows:
        times = 1 if r.status == "done" else 0
        if r.action == schedule.FIRE:
            assert transitions[(r.ref, r.trigger)] == times, r
        elif r.action == schedule.DEADLINE:
            assert deadlines[r.key] == times, r
    assert set(transitions) == {(r.ref, r.trigger) for r in rows
                                if r.action == schedule.FIRE and r.status == "done"}
    assert set(deadlines) == {r.key for r in rows
                              if r.action == schedule.DEADLINE and r.status == "done"}
    assert created and set(created.values()) == {1}
    opened = {int(r.key.split(":")[1]) for r in rows
              if r.action == schedule.OPEN_YEAR and r.status == "done"}
    assert {e.fiscal_year for e in entries if e.kind == "create"} == opened

    queued = Counter(q.notice["key"] for q in notices(engine))
    assert set(queued.values()) <= {1}, [k for k, n in queued.items() if n > 1][:5]
    assert set(queued) == expected_notice_keys(rows)

    report = engine.verify_audit()
    assert report.ok, report
    return rows


def year_moments(engine: pdca.Engine, until: datetime) -> list[datetime]:
    """Every distinct moment at which something of FY2025 or FY2026 falls due, to ``until``."""
    plan = engine.plan
    return sorted({d.at for fy in (FY, FY + 1) for d in schedule.due_for_year(plan, fy)
                   if d.at <= until})


@pytest.fixture
def fresh_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        Callable[[], str]]:
    """Makes URLs of further empty databases on ``backend`` (dropped afterwards)."""
    with contextlib.ExitStack() as stack:
        def make() -> str:
            if backend == "sqlite":
                return f"sqlite:///{tmp_path_factory.mktemp('db') / 'pdca.db'}"
            return stack.enter_context(contextlib.contextmanager(new_postgres_database)())

        yield make


@pytest.fixture
def sim(db_url: str) -> Iterator[pdca.Engine]:
    engine = new_simulation(db_url)
    try:
        yield engine
    finally:
        engine.close()


def exists(engine: pdca.Engine, ref: str) -> bool:
    try:
        engine.get(ref)
    except pdca.UnknownReference:
        return False
    return True


def members(engine: pdca.Engine) -> list[str]:
    return [m.code for m in engine.plan.members_of(FY)]


# ----------------------------------------------------------------------------- 1. a year


def test_a_simulated_year_fires_everything_once_on_its_date(sim: pdca.Engine) -> None:
    real_before = datetime.now(UTC)
    until = tokyo(2026, 7, 1)
    reports = sim.simulate(until, notifier=LogNotifier())
    real_after = datetime.now(UTC)

    # One tick per due moment, in order; the last at ``until`` (itself a due moment).
    ticks = [r.at for r in reports]
    assert ticks == sorted(set(ticks))
    assert ticks[0] == tokyo(2025, 4, 1) and ticks[-1] == until
    assert sim.now() == until

    # Every firing the schedule made due is in due_firings, fired by exactly one tick.
    fired = [(r, f) for r in reports for f in r.firings]
    assert [n for n in Counter(f.key for _, f in fired).values() if n > 1] == []
    first_fy = fiscal_year_of(SIMULATION_START)  # FY2024: the simulation starts in it
    expected = schedule.due_until(sim.plan, first_fy, until)
    rows = assert_every_firing_handled_once(sim)
    by_key = {r.key: r for r in rows}
    assert {d.key: d.at for d in expected} == {r.key: r.due_at for r in rows}
    assert {f.key for _, f in fired} == set(by_key)

    # On its date: a firing due after the start fires in the tick at its due moment; what
    # was due before the simulation started (FY2024 opening) fires at the first tick.
    for report, firing in fired:
        due_at = by_key[firing.key].due_at
        assert firing.due_at == due_at
        expected_at = due_at if due_at >= SIMULATION_START else ticks[0]
        assert report.at == expected_at, firing
        assert by_key[firing.key].done_at == expected_at
        assert firing.status == by_key[firing.key].status

    # The scheduler's audit entries: business time = the firing's moment; real time real.
    entries = list(sim.audit_log(actor="scheduler"))
    assert entries
    open_year = {int(r.key.split(":")[1]): r for r in rows if r.action == schedule.OPEN_YEAR}
    fires = {(r.ref, r.trigger): r for r in rows if r.action == schedule.FIRE}
    for entry in entries:
        if entry.kind == "transition":
            row = fires[(entry.ref, entry.trigger)]
        elif entry.kind == "deadline_missed":
            row = by_key[json.loads(entry.data)["key"]]
        else:
            assert entry.fiscal_year is not None
            row = open_year[entry.fiscal_year]
        assert entry.virtual_at == row.done_at, entry
        if row.due_at >= SIMULATION_START:
            assert entry.virtual_at == row.due_at
        assert real_before <= entry.at <= real_after, entry

    # FY2025 starts at 0:00 on 1 April 2025 in Tokyo, for each of the 18 members.
    starts = [(r, f) for r, f in fired
              if f.trigger == "start" and f.key.startswith(f"kumamoto:{FY}:")]
    assert len(starts) == 18 == len(members(sim))
    assert {f.ref for _, f in starts} == {f"cycle:{c}:{FY}" for c in members(sim)}
    for report, firing in starts:
        assert report.at == tokyo(2025, 4, 1) == firing.due_at and firing.status == "done"
        assert firing.ref is not None
        start = [e for e in sim.history(firing.ref) if e.trigger == "start"]
        assert [e.virtual_at for e in start] == [tokyo(2025, 4, 1)]
        assert start[0].actor == "scheduler" and start[0].to_state == "do"

    # The check of FY2025 begins on 1 April 2026, for every member and the region.
    begins = [(r, f) for r, f in fired
              if f.trigger == "begin_check" and f.key.startswith(f"kumamoto:{FY}:")]
    assert len(begins) == 19
    assert all(r.at == tokyo(2026, 4, 1) and f.status == "done" for r, f in begins)
    # Nobody confirmed the status by 30 June: every member's cycle is overdue since 1 July.
    for view in sim.entities(workflow="municipal_cycle", fiscal_year=FY):
        assert (view.state, view.overdue) == ("check_status", True), view.ref

    # Ticking again fires nothing, now or at the same moment given explicitly.
    assert sim.tick(notifier=LogNotifier()).firings == ()
    assert sim.tick(at=until, notifier=LogNotifier()).firings == ()
    assert len(due_rows(sim)) == len(rows)


# ----------------------------------------------------------------------------- 2. catching up


def write_emissions(path: Path, engine: pdca.Engine, codes: Sequence[str]) -> None:
    plan = engine.plan
    year = plan.inventory_year(FY)
    lines = ["municipality,year,sector,value_t_co2,status"]
    lines += [f"{code},{year},{sector},{1000 + n},preliminary"
              for code in codes for n, sector in enumerate(plan.sector_ids)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_a_tick_after_months_idle_catches_up_in_schedule_order(
    sim: pdca.Engine, tmp_path: Path
) -> None:
    sim.simulate(tokyo(2026, 4, 2), notifier=LogNotifier())
    codes = members(sim)
    early, late, idle = codes[:2], codes[2], codes[3]
    cycle = {code: f"cycle:{code}:{FY}" for code in codes}
    for code in early:  # status confirmed before the emissions window opens
        sim.fire(cycle[code], "confirm_status", actor=staff_id(code))
        assert sim.get(cycle[code]).state == "emissions_pending"

    # Nothing ticks until 5 October; then one tick does everything, in schedule order.
    before = sim.now()
    at = tokyo(2026, 10, 5)
    report = sim.tick(at=at, notifier=LogNotifier())
    keys = [f.key for f in report.firings]
    pending = [d for d in schedule.due_until(sim.plan, fiscal_year_of(SIMULATION_START), at)
               if d.at > before]
    assert keys == [d.key for d in pending]
    assert [f.due_at for f in report.firings] == sorted(f.due_at for f in report.firings)
    assert report.firings[0].due_at == tokyo(2026, 6, 23)  # the first: a reminder

    def position(action: str, step: str, code: str) -> int:
        return keys.index(f"kumamoto:{FY}:{action}:{step}:{cycle[code]}")

    status = {f.key: f.status for f in report.firings}
    for code in early:
        opened = position("fire", "calculate_emissions", code)
        reminded = position("reminder", "calculate_emissions", code)
        missed = position("deadline", "calculate_emissions", code)
        assert position("reminder", "confirm_status", code) < opened < reminded < missed
        assert {status[keys[i]] for i in (opened, reminded, missed)} == {"done"}
        assert report.firings[opened].trigger == "open_emissions"
        assert report.firings[opened].due_at == tokyo(2026, 7, 1)
        assert report.firings[missed].due_at == tokyo(2026, 10, 1)
        view = sim.get(cycle[code])
        assert (view.state, view.overdue) == ("check_emissions", True)
        missed_entries = [e for e in sim.history(cycle[code]) if e.kind == "deadline_missed"]
        assert [(e.trigger, e.actor, e.to_state, e.virtual_at) for e in missed_entries] == [
            ("calculate_emissions", "scheduler", "check_emissions", at)]
        assert missed_entries[0].note == "due 2026-09-30"
    for code in codes[2:]:  # still confirming the status: overdue for that step only
        assert status[f"kumamoto:{FY}:deadline:confirm_status:{cycle[code]}"] == "done"
        assert status[f"kumamoto:{FY}:fire:calculate_emissions:{cycle[code]}"] == "skipped"
        assert status[f"kumamoto:{FY}:deadline:calculate_emissions:{cycle[code]}"] == "skipped"
        assert sim.get(cycle[code]).overdue
    assert sim.tick(at=at, notifier=LogNotifier()).firings == ()

    # Moving on out of the state clears the overdue mark (and only for that cycle).
    sim.fire(cycle[late], "confirm_status", actor=staff_id(late))
    assert (sim.get(cycle[late]).state, sim.get(cycle[late]).overdue) == (
        "check_emissions", False)
    write_emissions(tmp_path / "emissions.csv", sim, [early[0]])
    sim.import_emissions(tmp_path / "emissions.csv", actor="secretariat")
    sim.fire(cycle[early[0]], "submit_emissions", actor=staff_id(early[0]))
    assert (sim.get(cycle[early[0]]).state, sim.get(cycle[early[0]]).overdue) == (
        "check_evaluation", False)
    assert sim.get(cycle[early[1]]).overdue and sim.get(cycle[idle]).overdue
    assert_every_firing_handled_once(sim)


# ----------------------------------------------------------------------------- 3. the clock


def test_tick_at_a_future_time_is_refused_on_a_normal_database(db_url: str) -> None:
    with pdca.Engine.open(db_url, migrate=True) as engine:
        engine.bootstrap_admin("admin")
        engine.load_plan("kumamoto", actor="admin")
        assert not engine.simulation
        with pytest.raises(pdca.InvalidInput) as refused:
            engine.tick(at=datetime.now(UTC) + timedelta(days=1), notifier=LogNotifier())
        assert refused.value.field == "at"
        assert "later than now" in str(refused.value)
        with pytest.raises(pdca.InvalidInput) as naive:
            engine.tick(at=datetime(2025, 4, 1), notifier=LogNotifier())
        assert naive.value.field == "at"
        assert due_rows(engine) == []  # nothing was done
        with pytest.raises(pdca.InvalidInput, match="only on a simulation database"):
            engine.simulate(datetime.now(UTC) + timedelta(days=30))
        past = datetime.now(UTC) - timedelta(minutes=5)
        report = engine.tick(at=past, notifier=LogNotifier())
        assert report.at == past and not report.simulation and report.firings
        assert {r.status for r in due_rows(engine)} <= {"done", "skipped"}


def test_the_virtual_clock_never_goes_back(sim: pdca.Engine, db_url: str) -> None:
    sim.tick(at=tokyo(2025, 5, 1), notifier=LogNotifier())
    with pytest.raises(pdca.InvalidInput) as refused:
        sim.tick(at=tokyo(2025, 4, 30), notifier=LogNotifier())
    assert refused.value.field == "at"
    assert "never goes back" in str(refused.value)
    assert sim.now() == tokyo(2025, 5, 1)
    with pdca.Engine.open(db_url) as again:
        assert again.simulation and again.now() == tokyo(2025, 5, 1)
        with pytest.raises(pdca.InvalidInput):
            again.tick(at=tokyo(2025, 4, 1), notifier=LogNotifier())
        # simulating to a time already past has nothing to do (and does not go back)
        assert again.simulate(tokyo(2025, 4, 1), notifier=LogNotifier()) == []
        assert again.now() == tokyo(2025, 5, 1)
    assert sim.tick(at=tokyo(2025, 5, 1), notifier=LogNotifier()).firings == ()


def test_an_engine_opened_before_another_ticked_acts_at_the_moved_virtual_time(
    sim: pdca.Engine, db_url: str
) -> None:
    with pdca.Engine.open(db_url) as daemon:
        daemon.tick(at=tokyo(2025, 4, 1), notifier=LogNotifier())
    assert sim.now() == tokyo(2025, 4, 1)


# ----------------------------------------------------------------------------- 4. two daemons


@pytest.mark.slow
def test_two_daemons_ticking_together_fire_everything_exactly_once(
    sim: pdca.Engine, db_url: str
) -> None:
    until = tokyo(2026, 12, 31)
    moments = year_moments(sim, until)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results: multiprocessing.Queue[tuple[list[str], list[str]]] = ctx.Queue()
    daemons = [ctx.Process(target=tick_in_step, args=(db_url, moments, barrier, results))
               for _ in range(2)]
    for daemon in daemons:
        daemon.start()
    try:
        reported = [results.get(timeout=PROCESS_TIMEOUT_S) for _ in daemons]
    finally:
        for daemon in daemons:
            daemon.join(PROCESS_TIMEOUT_S)
            if daemon.is_alive():
                daemon.kill()
    assert [d.exitcode for d in daemons] == [0, 0]
    errors = [e for _, daemon_errors in reported for e in daemon_errors]
    assert errors == []

    fired = Counter(key for keys, _ in reported for key in keys)
    assert [k for k, n in fired.items() if n > 1] == []
    rows = assert_every_firing_handled_once(sim)
    assert set(fired) == {r.key for r in rows}
    assert {r.key for r in rows} == {d.key for d in schedule.due_until(sim.plan, FY, until)}
    lost = [r.key for r in rows if r.status == "skipped" and r.ref is not None
            and (r.outcome or "").endswith("does not exist") and exists(sim, r.ref)]
    assert lost == []
    # The same story as one scheduler tells: every member started on 1 April 2025, began
    # its check on 1 April 2026, and is overdue in it; so is the region, for its first step.
    entries = list(sim.audit_log(actor="scheduler"))
    for trigger, moment in (("start", tokyo(2025, 4, 1)), ("begin_check", tokyo(2026, 4, 1))):
        done = [e for e in entries if e.trigger == trigger and e.fiscal_year == FY]
        assert len(done) == (18 if trigger == "start" else 19)
        assert {e.virtual_at for e in done} == {moment}
    for view in sim.entities(workflow="municipal_cycle", fiscal_year=FY):
        assert (view.state, view.overdue) == ("check_status", True), view.ref
    region = sim.get(f"cycle:region:{FY}")
    assert (region.state, region.overdue) == ("check_collect", True)


@pytest.fixture
def pg_sim() -> Iterator[tuple[pdca.Engine, str]]:
    """A simulation database on PostgreSQL (where SKIP LOCKED and row locks are real)."""
    for url in new_postgres_database():
        engine = new_simulation(url)
        try:
            yield engine, url
        finally:
            engine.close()


@pytest.mark.postgres
def test_a_daemon_finding_the_years_opening_in_progress_does_not_lose_the_starts(
    pg_sim: tuple[pdca.Engine, str],
) -> None:
    """It waits for the other daemon's open_year, then finds it done and starts nothing
    twice; the starts are not skipped for lack of cycles."""
    engine, url = pg_sim
    at = tokyo(2025, 4, 1)
    engine._store_due(schedule.due_until(engine.plan, FY, at), at)  # as a daemon's tick does
    other = sa.create_engine(normalise_url(url))
    outcome: list[BaseException | TickReport] = []

    def tick() -> None:
        try:
            outcome.append(engine.tick(at=at, notifier=LogNotifier()))
        except BaseException as exc:  # reported below
            outcome.append(exc)

    try:
        with other.connect() as daemon:  # the other daemon, carrying out open_year
            daemon.execute(sa.select(_DUE.c.status).where(
                _DUE.c.key == f"kumamoto:{FY}:open_year:-:-").with_for_update())
            thread = threading.Thread(target=tick)
            thread.start()
            for _ in range(500):  # bounded: until the tick waits for the row lock
                waiting = daemon.execute(sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND pid <> pg_backend_pid()")).scalar_one()
                if waiting:
                    break
                thread.join(timeout=0.01)
            daemon.rollback()  # the other daemon gives up; this one goes on
            thread.join(timeout=60)
    finally:
        other.dispose()
    assert len(outcome) == 1 and isinstance(outcome[0], TickReport), outcome
    states = {v.ref: v.state for v in engine.entities(workflow="municipal_cycle",
                                                      fiscal_year=FY)}
    assert len(states) == 18
    assert set(states.values()) == {"do"}, [
        (r.key, r.outcome) for r in due_rows(engine) if r.status == "skipped"][:3]


@pytest.mark.postgres
def test_a_tick_waiting_for_another_to_move_the_virtual_clock_then_ticks(
    pg_sim: tuple[pdca.Engine, str],
) -> None:
    engine, url = pg_sim
    engine.tick(at=tokyo(2025, 4, 1), notifier=LogNotifier())
    moment = tokyo(2025, 5, 1)
    outcome: list[BaseException | TickReport] = []

    def tick() -> None:
        try:
            outcome.append(engine.tick(at=moment, notifier=LogNotifier()))
        except BaseException as exc:
            outcome.append(exc)

    other = sa.create_engine(normalise_url(url))
    thread = threading.Thread(target=tick)
    try:
        with other.connect() as daemon:  # the other daemon, moving the clock to the moment
            settings = sa.table("settings", sa.column("key"), sa.column("value"))
            daemon.execute(settings.delete().where(settings.c.key == "virtual_now"))
            daemon.execute(settings.insert().values(
                key="virtual_now", value=moment.astimezone(UTC).isoformat()))
            thread.start()
            with other.connect() as watcher:
                waiting = sa.text("SELECT count(*) FROM pg_stat_activity WHERE "
                                  "datname = current_database() AND wait_event_type = 'Lock'")
                for _ in range(500):  # until the tick waits for the row (5 s at most)
                    if watcher.execute(waiting).scalar_one():
                        break
                    time.sleep(0.01)
                else:
                    pytest.fail("the tick never waited for the other daemon's clock move")
            daemon.commit()
        thread.join(PROCESS_TIMEOUT_S)
    finally:
        other.dispose()
    assert not thread.is_alive()
    assert len(outcome) == 1
    result = outcome[0]
    if isinstance(result, BaseException):
        pytest.fail(f"the tick failed: {result!r}, caused by {result.__cause__!r}")
    assert engine.now() == moment


# ----------------------------------------------------------------------------- 5. SIGKILL


def start_ticking(url: str, moments: Sequence[datetime]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests._scheduler_worker", "tick", url,
         *(m.isoformat() for m in moments)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def run_until_killed(url: str, moments: Sequence[datetime], after_firings: int) -> bool:
    """Tick in a subprocess; SIGKILL it once it has reported ``after_firings`` firings.
    False if it finished first."""
    proc = start_ticking(url, moments)
    assert proc.stdout is not None
    seen = 0
    try:
        for line in proc.stdout:
            if line.startswith("firing "):
                seen += 1
                if seen == after_firings:
                    proc.send_signal(signal.SIGKILL)
                    break
            elif line.strip() == "finished":
                break
        proc.wait(PROCESS_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        stderr = proc.stderr.read() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
    if proc.returncode == -signal.SIGKILL:
        return True
    assert proc.returncode == 0, stderr
    return False


@pytest.mark.slow
def test_a_tick_killed_mid_run_and_restarted_loses_and_doubles_nothing(
    sim: pdca.Engine, db_url: str
) -> None:
    until = tokyo(2026, 12, 31)
    moments = year_moments(sim, until)
    # Killed at various points of its work (counted from each restart), five times.
    kills = [run_until_killed(db_url, moments, n) for n in (1, 17, 40, 3, 60)]
    assert kills == [True] * 5
    with pdca.Engine.open(db_url) as fresh:
        assert fresh.now() < until  # work was left over by the killed runs
    assert not run_until_killed(db_url, moments, 10**6)  # the last run finishes

    rows = assert_every_firing_handled_once(sim)
    assert {r.key for r in rows} == {d.key for d in schedule.due_until(sim.plan, FY, until)}
    for view in sim.entities(workflow="municipal_cycle", fiscal_year=FY):
        assert (view.state, view.overdue) == ("check_status", True), view.ref
    assert sim.tick(at=until, notifier=LogNotifier()).firings == ()


# ----------------------------------------------------------------------------- 6. SMTP


@dataclass(frozen=True)
class Received:
    rcpt_tos: tuple[str, ...]
    message: EmailMessage


class Inbox:
    """An aiosmtpd handler refusing (451) the first ``refuse`` messages, keeping the rest."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.refuse = 0
        self.refused = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refuse > 0:
            self.refuse -= 1
            self.refused += 1
            return "451 4.3.0 try again later"
        message = email.message_from_bytes(envelope.original_content or b"",
                                           policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(Received(tuple(envelope.rcpt_tos), message))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, SmtpNotifier]]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port,
                            server_hostname="localhost", ready_timeout=5.0)
    controller.start()
    try:
        yield inbox, SmtpNotifier("127.0.0.1", port, "pdca@pref.example.jp",
                                  local_hostname="localhost", timeout=5.0)
    finally:
        controller.stop()


def make_retries_due(engine: pdca.Engine) -> None:
    """Move the retry of every undelivered notice to the past (it waits otherwise)."""
    with engine._db.begin() as conn:
        conn.execute(_O.update().where(_O.c.channel == "notification",
                                       _O.c.done.is_(False)).values(
            next_attempt_at=engine.now() - timedelta(minutes=1)))


def test_notices_wait_in_the_outbox_while_smtp_refuses_then_go_once_each(
    sim: pdca.Engine, smtp: tuple[Inbox, SmtpNotifier]
) -> None:
    inbox, mailer = smtp
    sim.simulate(tokyo(2026, 3, 31), notifier=LogNotifier())
    assert all(q.done for q in notices(sim))
    already = {q.id for q in notices(sim)}

    # 1 April 2026: the check of FY2025 opens (a notice per member) while the server is down.
    inbox.refuse = 10**6
    report = sim.tick(at=tokyo(2026, 4, 1), notifier=mailer)
    new = [q for q in notices(sim) if q.id not in already]
    addressed = [q for q in new if q.notice["recipients"]]
    assert len(addressed) >= 9 and len(new) > len(addressed)
    assert {q.notice["kind"] for q in addressed} >= {"step_open"}
    assert report.notices_queued == len(addressed)
    assert report.notices_sent == len(new) - len(addressed)  # nobody to mail: settled
    assert inbox.received == [] and inbox.refused == len(addressed)
    assert all(not q.done and q.attempts == 1 and "451" in (q.last_error or "")
               for q in addressed)

    # The retry waits; made due while the server still refuses, nothing is lost.
    assert sim.deliver_notifications(mailer) == (0, len(addressed))
    assert inbox.refused == len(addressed)
    make_retries_due(sim)
    assert sim.deliver_notifications(mailer) == (0, len(addressed))
    assert inbox.refused == 2 * len(addressed) and inbox.received == []

    # The server recovers after three more refusals: two rounds deliver everything, once.
    inbox.refuse = 3
    make_retries_due(sim)
    assert sim.deliver_notifications(mailer) == (len(addressed) - 3, 3)
    make_retries_due(sim)
    assert sim.deliver_notifications(mailer) == (3, 0)
    make_retries_due(sim)
    assert sim.deliver_notifications(mailer) == (0, 0)
    assert sim.tick(notifier=mailer).notices_sent == 0

    by_key = Counter(r.message["X-Pdca-Key"] for r in inbox.received)
    assert by_key == Counter(q.notice["key"] for q in addressed)
    assert set(by_key.values()) == {1}
    assert len({r.message["Message-ID"] for r in inbox.received}) == len(addressed)
    for received in inbox.received:
        notice = next(q.notice for q in addressed
                      if q.notice["key"] == received.message["X-Pdca-Key"])
        assert sorted(received.rcpt_tos) == sorted(notice["recipients"])
    assert all(q.done for q in notices(sim))


# ----------------------------------------------------------------------------- 7. time zones


def start_scenario(url: str, tz: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests._scheduler_worker", "scenario", url],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TZ": tz, "PYTHONPATH": str(ROOT)},
    )


def scenario_outcome(proc: subprocess.Popen[str]) -> dict[str, Any]:
    try:
        stdout, stderr = proc.communicate(timeout=PROCESS_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    data: dict[str, Any] = json.loads(stdout)
    return data


@pytest.mark.slow
def test_the_schedule_does_the_same_whatever_the_hosts_time_zone(
    fresh_url: Callable[[], str],
) -> None:
    zones = ("UTC", "America/New_York", "Asia/Tokyo")
    running = {tz: start_scenario(fresh_url(), tz) for tz in zones}  # side by side
    outcomes = {tz: scenario_outcome(proc) for tz, proc in running.items()}
    reference = outcomes["UTC"]
    offsets = {outcome["host_utc_offset"] for outcome in outcomes.values()}
    assert len(offsets) == 3, offsets  # the hosts' clocks did differ
    assert reference["due_firings"] and reference["notices"] and reference["audit"]
    assert reference["cycles"][str(FY)]
    for tz in zones[1:]:
        for part in ("due_firings", "cycles", "audit", "notices", "now"):
            assert outcomes[tz][part] == reference[part], (tz, part)
    # and the days are Tokyo's: FY2025 began at 0:00 on 1 April in Tokyo
    start = [r for r in reference["due_firings"] if r[0] == f"kumamoto:{FY}:open_year:-:-"]
    assert start[0][2] == tokyo(2025, 4, 1).astimezone(UTC).isoformat()
