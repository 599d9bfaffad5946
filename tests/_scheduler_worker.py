"""Processes for tests/test_scheduler.py: scheduler daemons, a tick to be killed, a scenario.

Imported by the tests (the set-up of a simulation database and the spawned daemon) and run
as a program in subprocesses::

    python -m tests._scheduler_worker tick URL MOMENT...
        open URL and tick at each MOMENT (ISO 8601) not earlier than the virtual clock,
        printing ``tick MOMENT`` before each tick and ``firing N/TOTAL`` after each due
        firing handled, then ``finished``; every line flushed at once.

    python -m tests._scheduler_worker scenario URL
        create a simulation database at URL, simulate it to 2 April 2026 and print, as one
        JSON document, what the schedule did (rows of ``due_firings``, the cycles' states,
        the scheduler's audit entries and the notices queued), to compare across hosts.
"""

from __future__ import annotations

import json
import multiprocessing.queues
import multiprocessing.synchronize
import sys
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

import sqlalchemy as sa

import pdca
from pdca.notify import LogNotifier
from pdca.storage.models import DueFiring, Outbox

_DUE = cast(sa.Table, DueFiring.__table__)
_O = cast(sa.Table, Outbox.__table__)
TOKYO = ZoneInfo("Asia/Tokyo")
#: Where every simulation of these tests starts (FY2024, a month before FY2025).
SIMULATION_START = datetime(2025, 3, 1, tzinfo=UTC)
#: The fiscal year the tests follow.
FY = 2025
BARRIER_TIMEOUT_S = 60.0


def tokyo(year: int, month: int, day: int, hour: int = 0) -> datetime:
    """A moment on the Tokyo wall clock (where the schedule's days begin)."""
    return datetime(year, month, day, hour, tzinfo=TOKYO)


def staff_id(code: str) -> str:
    return f"staff-{code}"


def staff_email(n: int, code: str) -> str | None:
    """Staff of every other member (in plan order) have an e-mail address."""
    return f"ondanka-{code}@city.example.jp" if n % 2 == 0 else None


def new_simulation(url: str) -> pdca.Engine:
    """A simulation database at ``url`` from :data:`SIMULATION_START`: an administrator, the
    Kumamoto plan, the secretariat (with an address) and one staff member per member of
    FY2025, every other one with an address."""
    engine = pdca.Engine.create_simulation(url, start=SIMULATION_START)
    try:
        engine.bootstrap_admin("admin")
        plan = engine.load_plan("kumamoto", actor="admin")
        engine.add_person("secretariat", role="secretariat", actor="admin",
                          email="jimukyoku@pref.example.jp")
        for n, member in enumerate(plan.members_of(FY)):
            engine.add_person(staff_id(member.code), role="staff", municipality=member.code,
                              actor="admin", email=staff_email(n, member.code))
    except BaseException:
        engine.close()
        raise
    return engine


# ----------------------------------------------------------------------------- a daemon


def tick_in_step(
    url: str,
    moments: Sequence[datetime],
    barrier: multiprocessing.synchronize.Barrier,
    results: multiprocessing.queues.Queue[tuple[list[str], list[str]]],
) -> None:
    """A scheduler daemon (run in a spawned process): at each moment, wait for the other
    daemon at ``barrier``, then tick. Sends back the keys of the firings this process
    carried out and every error a tick raised."""
    fired: list[str] = []
    errors: list[str] = []
    try:
        with pdca.Engine.open(url) as engine:
            for moment in moments:
                barrier.wait(BARRIER_TIMEOUT_S)
                try:
                    report = engine.tick(at=moment, notifier=LogNotifier())
                except pdca.PdcaError as exc:
                    errors.append(f"tick at {moment.isoformat()}: {type(exc).__name__}: {exc}")
                    continue
                fired.extend(f.key for f in report.firings)
    except BaseException:
        barrier.abort()  # so that the other daemon does not wait for this one
        errors.append(traceback.format_exc())
    results.put((fired, errors))


# ----------------------------------------------------------------------------- programs


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run_ticks(url: str, moments: Sequence[datetime]) -> None:
    with pdca.Engine.open(url) as engine:
        for moment in moments:
            if moment < engine.now():
                continue  # done by an earlier run
            _say(f"tick {moment.isoformat()}")
            engine.tick(at=moment, notifier=LogNotifier(),
                        progress=lambda n, total: _say(f"firing {n}/{total}"))
    _say("finished")


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def scenario(url: str) -> dict[str, Any]:
    """Simulate to 2 April 2026 and describe what the schedule did (no real times)."""
    with new_simulation(url) as engine:
        engine.simulate(tokyo(2026, 4, 2), notifier=LogNotifier())
        due = sa.select(_DUE).order_by(_DUE.c.key)
        notices = sa.select(_O.c.payload, _O.c.created_at).order_by(_O.c.payload)
        with engine._db.connect() as conn:
            rows = [[r.key, r.status, _iso(r.due_at), _iso(r.done_at), r.outcome]
                    for r in conn.execute(due)]
            queued = [[r.payload, _iso(r.created_at)] for r in conn.execute(notices)]
        cycles = {
            str(fy): sorted([v.ref, v.state, v.overdue] for v in engine.cycles(fy))
            for fy in (FY - 1, FY, FY + 1)
        }
        entries = [[e.ref, e.kind, e.trigger, e.from_state, e.to_state, _iso(e.virtual_at),
                    e.note, e.data]
                   for e in engine.audit_log(actor="scheduler")]
        host = datetime.now().astimezone()  # the host's own zone, which must not matter
        return {"due_firings": rows, "cycles": cycles, "audit": entries, "notices": queued,
                "now": _iso(engine.now()), "host_utc_offset": str(host.utcoffset())}


def main(argv: Sequence[str]) -> int:
    command, url, *rest = argv
    if command == "tick":
        run_ticks(url, [datetime.fromisoformat(m) for m in rest])
        return 0
    if command == "scenario":
        _say(json.dumps(scenario(url), ensure_ascii=False, sort_keys=True))
        return 0
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
