"""Reliability under load, crashes and outages, at CI size by default (``pytest --long``: full).

1. Contention: eight processes fire at random at once over shared measures, emission values
   and people (the administrator deactivating and reactivating staff as they act), on
   SQLite and PostgreSQL. Afterwards every entity's state, version and attributes replay
   from its audit entries, no entry is duplicated, every success is logged once as its
   caller was told and every audited refusal is one a caller was given, every failure was a
   :class:`pdca.PdcaError` (never a driver error), and the audit log verifies.
2. Crashes: ``pdca daemon`` is started on a real (not simulated) database with a year and a
   half of due work, killed with SIGKILL at random points of that work, restarted, killed
   again...; after one clean tick every due firing has happened exactly once, every notice
   was sent, and a notice was sent twice only when a daemon died between sending it and
   marking it sent (the outbox's duplicate window), which the test detects and reports.
3. Outage (PostgreSQL): the daemon's database refuses connections and its connections are
   cut (``ALLOW CONNECTIONS false`` + ``pg_terminate_backend``; the server keeps running for
   the other tests); the daemon logs ``tick_failed`` and keeps running; once the database is
   back its next tick reconnects and finishes the work, losing and doubling nothing.

The figures of each run (calls, successes, conflicts, kills, duplicates...) are printed and
written to ``test-artifacts/reliability/*.json`` (for docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

import pdca
from pdca import schedule
from pdca.notify import Notice
from pdca.scheduler import Daemon
from pdca.storage.database import normalise_url
from pdca.storage.models import Outbox
from tests import _reliability_worker as rw
from tests._scheduler_worker import tokyo
from tests.conftest import new_postgres_database
from tests.test_scheduler import assert_every_firing_handled_once, notices

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "reliability"
_O = cast(sa.Table, Outbox.__table__)

#: How long the parent waits for anything a worker, a daemon or a thread must do.
TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Size:
    """How big a run is: CI size by default, full size with ``pytest --long``."""

    mode: str
    #: Contention: worker processes, calls per worker, measures, emission values.
    processes: int
    calls: int
    measures: int
    emissions: int
    #: Crashes: SIGKILLs per database, and the fiscal year of the first tick (the daemon
    #: catches up on everything due since then).
    kills: int
    first_tick_fy: int


CI = Size("ci", processes=8, calls=150, measures=60, emissions=10, kills=5, first_tick_fy=2025)
LONG = Size("long", processes=8, calls=2000, measures=600, emissions=20, kills=20,
            first_tick_fy=2023)


@pytest.fixture
def size(long_mode: bool) -> Size:
    return LONG if long_mode else CI


def report(name: str, figures: dict[str, Any]) -> None:
    """Print the figures of a run and keep them in ``test-artifacts/reliability/``."""
    print(f"{name}: {json.dumps(figures, sort_keys=True)}")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"{name}.json").write_text(
        json.dumps(figures, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
        encoding="utf-8")


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT_S,
               poll: float = 0.005) -> None:
    """Bounded polling: return once ``condition()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    event = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        event.wait(poll)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """An empty PostgreSQL database of the test's own."""
    yield from new_postgres_database()


# =============================================================================== 1. contention

#: The three workflows of the test, written out independently of the engine.
MOVES: dict[str, dict[tuple[str, str], str]] = {
    "measure": {
        ("study", "commercialise"): "implemented",
        ("implemented", "complete"): "completed",
        ("study", "discontinue"): "discontinued",
        ("implemented", "discontinue"): "discontinued",
    },
    "person": {("active", "deactivate"): "inactive", ("inactive", "reactivate"): "active"},
    "emissions": {
        ("preliminary", "update"): "preliminary",
        ("estimated", "update"): "estimated",
        ("preliminary", "estimate"): "estimated",
        ("preliminary", "finalise"): "final",
        ("estimated", "finalise"): "final",
        ("final", "revise"): "final",
    },
}
#: The failures contention, a deactivated actor or an outsider may cause; anything else
#: (a driver error above all) is a bug.
EXPECTED_FAILURES = frozenset({
    "ConcurrentTransition", "TransitionNotAllowed", "PermissionDenied", "UnknownActor"})
PEOPLE = frozenset({*rw.STAFF, *rw.OUTSIDERS, rw.SECRETARIAT})


@pytest.fixture(scope="module")
def contenders() -> Iterator[rw.WorkerPool]:
    pool = rw.WorkerPool(CI.processes, timeout=TIMEOUT_S * 4)
    try:
        yield pool
    finally:
        pool.close()


def check_calls_against_log(
    engine: pdca.Engine, setup: rw.Setup, calls: Sequence[rw.Call]
) -> list[pdca.AuditEntry]:
    """Every failure a pdca error of the expected kinds; every success in the log once, as
    its caller was told; every audited refusal one a caller was given; nothing else logged.
    Returns the whole log."""
    escaped = [c for c in calls if c.outcome.startswith("unexpected")]
    assert not escaped, "driver (or other) exceptions escaped:\n" + "\n".join(
        f"{c.outcome} on {c.trigger} {c.ref}:\n{c.detail}" for c in escaped[:3])
    odd = Counter(c.outcome for c in calls if c.outcome != "ok"
                  and c.outcome not in EXPECTED_FAILURES)
    assert not odd, (odd, [c.detail for c in calls if c.outcome in odd][:3])
    # Without an expected version a writer waits for the lock instead of giving up.
    assert [c for c in calls if c.outcome == "ConcurrentTransition"
            and c.expected_version is None] == []

    entries = list(engine.audit_log())
    seqs = Counter(e.seq for e in entries)
    assert [s for s, n in seqs.items() if n > 1] == [], "a seq is used twice"
    places = Counter((e.ref, e.entity_seq) for e in entries)
    assert [p for p, n in places.items() if n > 1] == [], "an entity_seq is used twice"
    run = [e for e in entries if e.seq > setup.last_seq]
    assert {e.kind for e in run} <= {"transition", "refused"}

    told = {c.seq or 0: c for c in calls if c.outcome == "ok"}
    assert len(told) == sum(1 for c in calls if c.outcome == "ok"), "a seq was told twice"
    logged = {e.seq: e for e in run if e.kind == "transition"}
    assert set(told) == set(logged), (
        f"told but not logged: {sorted(set(told) - set(logged))[:10]}; "
        f"logged but never told: {sorted(set(logged) - set(told))[:10]}")
    for seq, entry in logged.items():
        call = told[seq]
        assert (entry.ref, entry.trigger, entry.actor, entry.from_state, entry.to_state) == (
            call.ref, call.trigger, call.actor, call.from_state, call.to_state), (entry, call)
        assert json.loads(entry.data) == (call.data or {}), (entry, call)
    refused = Counter((e.ref, e.actor, e.trigger) for e in run if e.kind == "refused")
    denied = Counter((c.ref, c.actor, c.trigger) for c in calls
                     if c.outcome == "PermissionDenied")
    assert refused == denied, "the audited refusals are not those the callers were given"
    return entries


def check_entities_replay(engine: pdca.Engine, entries: Sequence[pdca.AuditEntry]) -> int:
    """Each entity's chain runs 1..n in the log's order from its creation; replaying its
    transitions (checked against :data:`MOVES`) gives its state, version and, for emission
    values, its value. Returns how many entities were replayed."""
    chains: dict[str, list[pdca.AuditEntry]] = defaultdict(list)
    for entry in entries:
        chains[entry.ref].append(entry)
    views = {
        v.ref: v for workflow in MOVES for v in engine.entities(workflow=workflow)}
    assert set(views) <= set(chains)
    for ref, view in views.items():
        chain = sorted(chains[ref], key=lambda e: e.entity_seq)
        assert [e.entity_seq for e in chain] == list(range(1, len(chain) + 1)), ref
        assert [e.seq for e in chain] == sorted(e.seq for e in chain), ref
        create, *rest = chain
        assert create.kind == "create" and create.to_state is not None, ref
        state, version = create.to_state, 1
        value = json.loads(create.data).get("value_t_co2")
        moves = MOVES[view.workflow]
        for entry in rest:
            assert entry.from_state == state, f"{ref} #{entry.entity_seq} starts elsewhere"
            if entry.kind == "refused":
                assert entry.to_state == state, f"{ref} #{entry.entity_seq} moved it"
                continue
            assert entry.kind == "transition", entry
            assert entry.trigger is not None
            assert moves.get((state, entry.trigger)) == entry.to_state, (
                f"{ref}: {entry.trigger} from {state} to {entry.to_state} is no valid move")
            state, version = moves[(state, entry.trigger)], version + 1
            value = json.loads(entry.data).get("value_t_co2", value)
        assert (view.state, view.version) == (state, version), f"{ref} is not what its log says"
        if view.workflow == "emissions":
            assert view.attrs["value_t_co2"] == value, ref
    return len(views)


def acts_while_inactive(entries: Sequence[pdca.AuditEntry]) -> list[pdca.AuditEntry]:
    """Entries (in log order) by someone the log shows deactivated at that point."""
    active: dict[str, bool] = {}
    found = []
    for entry in sorted(entries, key=lambda e: e.seq):
        if entry.ref.startswith("person:") and entry.to_state is not None:
            active[entry.ref.removeprefix("person:")] = entry.to_state == "active"
        if entry.actor in PEOPLE and active.get(entry.actor) is False:
            found.append(entry)
    return found


@pytest.mark.slow
def test_eight_processes_firing_at_random_lose_and_duplicate_nothing(
    contenders: rw.WorkerPool, db_url: str, backend: str, size: Size
) -> None:
    setup = rw.prepare(db_url, measures=size.measures, emissions=size.emissions)
    seed = random.randrange(1_000_000)
    print(f"seed {seed}")  # shown when the test fails
    calls, seconds = contenders.run(db_url, setup, seed=seed, calls=size.calls)

    assert len(calls) == size.processes * size.calls
    with pdca.Engine.open(db_url) as engine:
        entries = check_calls_against_log(engine, setup, calls)
        replayed = check_entities_replay(engine, entries)
        verified = engine.verify_audit()
        assert verified.ok, [str(p) for p in verified.problems]
    outcomes = rw.outcomes(calls)
    late = acts_while_inactive([e for e in entries if e.seq > setup.last_seq])
    report(f"contention-{backend}-{size.mode}", {
        "backend": backend, "mode": size.mode, "seed": seed, "processes": size.processes,
        "calls": len(calls), "successes": outcomes.get("ok", 0),
        "conflicts": outcomes.get("ConcurrentTransition", 0), "outcomes": outcomes,
        "entities_replayed": replayed, "audit_entries": verified.entries,
        "entries_by_deactivated_actors": len(late), "seconds": round(seconds, 2),
        "calls_per_second": round(len(calls) / seconds, 1),
    })
    # The workers did contend: all of them moved things, some lost to another.
    assert outcomes.get("ok", 0) > len(calls) // 10, outcomes
    assert len({c.worker for c in calls if c.outcome == "ok"}) == size.processes
    assert outcomes.get("UnknownActor", 0) > 0 and outcomes.get("PermissionDenied", 0) > 0
    # Nobody acts after their deactivation: on SQLite writers take turns; on PostgreSQL the
    # acting person's row is read FOR SHARE under the entity's lock.
    assert late == [], [(e.seq, e.actor, e.trigger, e.ref) for e in late[:5]]


@pytest.mark.postgres
def test_a_person_deactivated_while_their_fire_waits_never_acts_after_it(
    pg_url: str,
) -> None:
    """Either the fire goes first and the deactivation waits for it, or the fire sees the
    deactivation; the log never shows someone acting after being deactivated."""
    with pdca.Engine.open(pg_url, migrate=True) as engine:
        engine.bootstrap_admin(rw.ADMIN)
        engine.add_person("staff-0", role="staff", municipality=rw.KUMAMOTO, actor=rw.ADMIN)
        ref = "measure:R-0001"
        engine.create(ref, actor="staff-0", data={
            "municipalities": [rw.KUMAMOTO], "title_ja": "施策", "kind": "study"})
        outcome: list[BaseException | pdca.Transition] = []
        deactivated: list[BaseException | pdca.Transition] = []

        def fire() -> None:
            try:
                outcome.append(engine.fire(ref, "commercialise", actor="staff-0"))
            except BaseException as exc:
                outcome.append(exc)

        def deactivate() -> None:
            try:
                deactivated.append(engine.fire("person:staff-0", "deactivate", actor=rw.ADMIN))
            except BaseException as exc:
                deactivated.append(exc)

        other = sa.create_engine(normalise_url(pg_url))
        firing = threading.Thread(target=fire)
        deactivating = threading.Thread(target=deactivate)
        waiting = sa.text("SELECT count(*) FROM pg_stat_activity WHERE "
                          "datname = current_database() AND wait_event_type = 'Lock'")
        try:
            with other.connect() as writer, other.connect() as watcher:
                # Another writer holds the measure's row while staff-0 fires at it...
                writer.execute(sa.text("SELECT id FROM entities WHERE ref = :ref FOR UPDATE"),
                               {"ref": ref})
                firing.start()
                wait_until(lambda: bool(watcher.execute(waiting).scalar_one()),
                           "the fire to wait for the row lock", timeout=30)
                # ... and the administrator deactivates staff-0 meanwhile.
                deactivating.start()
                deactivating.join(timeout=2)  # it may finish, or wait for the fire
                writer.rollback()
            firing.join(TIMEOUT_S)
            deactivating.join(TIMEOUT_S)
        finally:
            other.dispose()
        assert not firing.is_alive() and not deactivating.is_alive()
        assert len(outcome) == 1 and len(deactivated) == 1
        assert isinstance(deactivated[0], pdca.Transition), deactivated[0]
        late = acts_while_inactive(list(engine.audit_log()))
        assert late == [], f"staff-0 acted after the log shows them deactivated: {late}"
        if isinstance(outcome[0], pdca.Transition):
            assert outcome[0].seq < deactivated[0].seq
        else:
            assert isinstance(outcome[0], pdca.UnknownActor), outcome[0]


# =============================================================================== 2. crashes


class Recorder:
    """A notifier that keeps the key of every notice it is given."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._lock = threading.Lock()

    def send(self, notice: Notice) -> None:
        with self._lock:
            self.keys.append(notice.key)


def prepare_real_database(url: str, first_tick_fy: int, notifier: Recorder) -> int:
    """A real database: the Kumamoto plan, the secretariat and a staff member per member of
    FY2025 (every other one with an address), whose first tick ran on 1 April of
    ``first_tick_fy`` (from cron, say) and none since: everything due after it awaits.
    Returns how many due firings await."""
    with pdca.Engine.open(url, migrate=True) as engine:
        assert not engine.simulation
        engine.bootstrap_admin("admin")
        plan = engine.load_plan("kumamoto", actor="admin")
        engine.add_person("secretariat", role="secretariat", actor="admin",
                          email="jimukyoku@pref.example.jp")
        for n, member in enumerate(plan.members_of(2025)):
            engine.add_person(f"staff-{member.code}", role="staff", municipality=member.code,
                              actor="admin",
                              email=f"ondanka-{member.code}@city.example.jp" if n % 2 else None)
        first = engine.tick(at=tokyo(first_tick_fy, 4, 1), notifier=notifier)
        due = schedule.due_until(plan, first_tick_fy, datetime.now(UTC))
        assert {d.key for d in first.firings} < {d.key for d in due}
        return len(due) - len(first.firings)


def daemon_env() -> dict[str, str]:
    """The environment of a daemon: no SMTP (its notifier then logs each notice)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDCA_SMTP")}
    env["PYTHONPATH"] = str(ROOT)
    return env


@dataclass
class DaemonRun:
    """One run of ``pdca daemon``: its log events, and how it ended."""

    number: int
    target: str
    events: list[dict[str, Any]] = field(default_factory=list)
    killed: bool = False

    @property
    def phase(self) -> str:
        """What the daemon was doing when it was killed, from its last log event."""
        if not self.events:
            return "starting"
        last = str(self.events[-1]["event"])
        return {"firing": "firing", "transition": "firing", "notice": "sending notices",
                "tick": "logging its firings", "fired": "logging its firings",
                "daemon_started": "idle"}.get(last, last)


def read_events(path: Path) -> list[dict[str, Any]]:
    """The JSON log events of a daemon's stderr (a last line cut short is left out)."""
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict):
                events.append(event)
    return events


def run_daemon_until_killed(
    url: str, log_path: Path, number: int, event: str | None, count: int
) -> DaemonRun:
    """Start ``pdca daemon``; SIGKILL it as soon as its log holds ``count`` events named
    ``event`` (any event if None), or once it has caught up and idles."""
    run = DaemonRun(number, f"after {count} {event or 'log'} events")
    with log_path.open("w", encoding="utf-8") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pdca", "--db", url, "daemon", "--heartbeat", "0.1"],
            cwd=ROOT, env=daemon_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=log_file)
    try:
        def reached() -> bool:
            events = read_events(log_path)
            if proc.poll() is not None:
                return True
            seen = sum(1 for e in events if event is None or e["event"] == event)
            return seen >= count or any(e["event"] == "daemon_started" for e in events)

        wait_until(reached, f"daemon run {number} to reach its kill point", poll=0.002)
        exited = proc.poll()
        assert exited is None, (
            f"daemon run {number} exited by itself ({exited}):\n{log_path.read_text()}")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(TIMEOUT_S) == -signal.SIGKILL
        run.killed = True
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    run.events = read_events(log_path)
    return run


def kill_plan(rng: random.Random, kills: int, pending: int) -> list[tuple[str, int]]:
    """Where to kill each run: the first three fifths after random numbers of due firings
    (counted from each run's start), the rest after a few notices sent (notices go out
    once every due firing is done).

    A tick carries out due firings in batches of :data:`pdca.engine.DUE_BATCH`, one
    transaction each, and logs a batch once it committed: a run killed after its n-th
    logged firing has done every firing of the batch that held it, and dies in the next
    one. The counts are kept small enough that three quarters of the ``pending`` firings
    at most are done by the runs killed while firing, so that notices are left for the
    others."""
    from pdca.engine import DUE_BATCH

    notice_kills = max(1, kills * 2 // 5)
    firing_kills = kills - notice_kills
    budget = pending * 3 // 4 // max(1, firing_kills)  # firings each such run may do
    batches = max(1, budget // DUE_BATCH)
    plan = [("firing", rng.randint(1, max(1, batches * DUE_BATCH - DUE_BATCH // 2)))
            for _ in range(firing_kills)]
    return plan + [("notice", rng.randint(1, 12)) for _ in range(notice_kills)]


def expire_leases(db: sa.Engine) -> int:
    """Let the outbox leases of dead daemons run out (as if :data:`pdca.core.OUTBOX_LEASE`
    had passed): make every undelivered message due now. Returns how many were leased."""
    now = datetime.now(UTC)
    with db.begin() as conn:
        leased = conn.execute(sa.select(sa.func.count()).select_from(_O).where(
            _O.c.done.is_(False), _O.c.next_attempt_at > now)).scalar_one()
        conn.execute(_O.update().where(_O.c.done.is_(False)).values(
            next_attempt_at=now - timedelta(seconds=1)))
    return int(leased)


@dataclass(frozen=True)
class Send:
    """A notice sent: by which run (None: an in-process tick), and whether it is the last
    thing that run logged (it may then have died before marking the notice sent)."""

    key: str
    run: int | None
    last_of_killed_run: bool


def sends_of(runs: Sequence[DaemonRun], recorders: Sequence[Recorder]) -> list[Send]:
    out = []
    for run in runs:
        for n, event in enumerate(run.events):
            if event["event"] == "notice":
                last = run.killed and n == len(run.events) - 1
                out.append(Send(str(event["key"]), run.number, last))
    out += [Send(key, None, False) for recorder in recorders for key in recorder.keys]
    return out


def check_sends(engine: pdca.Engine, sends: Sequence[Send]) -> tuple[int, list[str]]:
    """No notice lost (each queued one sent, every outbox message done); a notice sent more
    than once only when each send but the last was the last act of a killed daemon.
    Returns (notices queued, keys sent twice within the duplicate window)."""
    queued = notices(engine)
    assert all(q.done for q in queued), [q.notice["key"] for q in queued if not q.done][:5]
    by_key: dict[str, list[Send]] = defaultdict(list)
    for send in sends:
        by_key[send.key].append(send)
    lost = {q.notice["key"] for q in queued} - set(by_key)
    assert not lost, f"notices never sent: {sorted(lost)[:5]}"
    assert set(by_key) <= {q.notice["key"] for q in queued}
    doubled = []
    for key, made in by_key.items():
        if len(made) == 1:
            continue
        unexplained = [s for s in made[:-1] if not s.last_of_killed_run]
        assert not unexplained, (
            f"notice {key} was sent {len(made)} times, though the daemon that sent it "
            f"went on after marking it sent: {made}")
        doubled.append(key)
    return len(queued), doubled


@pytest.mark.slow
def test_a_daemon_killed_at_random_points_and_restarted_loses_and_doubles_nothing(
    db_url: str, backend: str, size: Size, tmp_path: Path
) -> None:
    first = Recorder()
    pending = prepare_real_database(db_url, size.first_tick_fy, first)
    seed = random.randrange(1_000_000)
    print(f"seed {seed}")  # shown when the test fails
    started = time.monotonic()
    runs: list[DaemonRun] = []
    leased: list[int] = []
    db = sa.create_engine(normalise_url(db_url))
    try:
        for n, (event, count) in enumerate(kill_plan(random.Random(seed), size.kills, pending)):
            # Each restart comes after the lease of the notices the dead daemon had claimed
            # ran out; until then they wait (counted, and documented).
            leased.append(expire_leases(db))
            runs.append(run_daemon_until_killed(db_url, tmp_path / f"daemon-{n}.log", n,
                                                event, count))
        leased.append(expire_leases(db))
    finally:
        db.dispose()
    errors = [e for run in runs for e in run.events if e.get("level") in ("error", "critical")]
    assert errors == [], errors[:3]

    last = Recorder()
    with pdca.Engine.open(db_url) as engine:
        clean = engine.tick(notifier=last)
        rows = assert_every_firing_handled_once(engine)
        # The logs agree: no due firing was logged as carried out by two runs.
        logged = Counter(str(e["key"]) for run in runs for e in run.events
                         if e["event"] == "firing")
        logged.update(f.key for f in clean.firings)
        assert [k for k, n in logged.items() if n > 1] == []
        assert set(logged) <= {r.key for r in rows}
        queued, doubled = check_sends(engine, sends_of(runs, [first, last]))
    seconds = time.monotonic() - started
    phases = Counter(run.phase for run in runs)
    report(f"daemon-kills-{backend}-{size.mode}", {
        "backend": backend, "mode": size.mode, "seed": seed, "kills": len(runs),
        "kill_phases": dict(phases), "kill_targets": [run.target for run in runs],
        "due_firings": len(rows), "awaiting_at_start": pending,
        "done": sum(r.status == "done" for r in rows),
        "skipped": sum(r.status == "skipped" for r in rows),
        "left_for_the_clean_tick": len(clean.firings), "notices": queued,
        "notice_leases_left_by_killed_daemons": sum(leased),
        "notices_sent_twice_in_the_duplicate_window": len(doubled),
        "seconds": round(seconds, 1),
    })
    # The kills did land in the middle of the work, due firings and notices both.
    assert phases["firing"] > 0 and phases["sending notices"] > 0, phases


# =============================================================================== 3. outage


@contextlib.contextmanager
def admin_connection(url: str) -> Iterator[sa.Connection]:
    """A connection to the server's maintenance database (not to the one cut off)."""
    admin = sa.create_engine(
        sa.make_url(normalise_url(url)).set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            yield conn
    finally:
        admin.dispose()


def cut_off(conn: sa.Connection, name: str) -> int:
    """Refuse new connections to ``name`` and end the open ones; how many were ended."""
    conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
    ended = conn.execute(sa.text(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name}).scalar_one()
    return int(ended)


def reconnect(conn: sa.Connection, name: str) -> None:
    conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))


class DaemonThread:
    """A :class:`pdca.scheduler.Daemon` running in a thread; whatever ends it is kept."""

    def __init__(self, target: Callable[[], None]) -> None:
        self.error: BaseException | None = None
        self._target = target
        self.thread = threading.Thread(target=self._run, name="pdca-daemon", daemon=True)

    def _run(self) -> None:
        try:
            self._target()
        except BaseException as exc:  # kept for the test, not lost in the thread
            self.error = exc

    def start(self) -> None:
        self.thread.start()


def stop(daemon: Daemon, runner: DaemonThread) -> None:
    """Stop the daemon as SIGTERM does, then wait for a tick in progress to end.

    (Not ``scheduler.shutdown(wait=True)``: APScheduler holds its job-store lock while it
    waits for running jobs, and a job that re-plans the daemon's jobs needs that lock.)
    """
    daemon.stop()  # also when its scheduler has not started yet
    runner.thread.join(TIMEOUT_S)
    with daemon._lock:  # a tick in progress has ended
        pass


def events_named(events: Sequence[Mapping[str, Any]], name: str, since: int = 0) -> int:
    return sum(1 for e in events[since:] if e.get("event") == name)


@pytest.mark.postgres
@pytest.mark.slow
def test_a_running_daemon_rides_out_a_database_outage(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    first = Recorder()
    pending = prepare_real_database(pg_url, CI.first_tick_fy, first)
    name = sa.make_url(pg_url).database
    assert name is not None
    caplog.set_level(logging.INFO, logger="pdca")
    sent = Recorder()
    with capture_logs() as events, pdca.Engine.open(pg_url) as engine, \
            admin_connection(pg_url) as admin:
        # The daemon's scheduler with its jobs as planned (a heartbeat every 0.3 s); its
        # catch-up falls to the heartbeat, which the outage cuts in the middle.
        daemon = Daemon(engine, notifier=sent, heartbeat_minutes=0.005)
        daemon.plan_jobs()
        runner = DaemonThread(daemon.scheduler.start)
        runner.start()
        try:
            wait_until(lambda: events_named(events, "firing") >= 20, "the catch-up to begin")
            ended = cut_off(admin, name)
            cut_at = len(events)
            fired_before = events_named(events[:cut_at], "firing")
            try:
                wait_until(lambda: events_named(events, "tick_failed", cut_at) >= 3,
                           "three ticks to fail during the outage")
                assert runner.thread.is_alive() and runner.error is None
                failed_during = events_named(events, "tick_failed", cut_at)
                ticks_before = daemon.ticks
                # Between two ticks (holding the daemon's tick lock), so that every tick
                # counted from here on began once the database was back.
                with daemon._lock:
                    reconnect(admin, name)
                    back_at = len(events)
            finally:
                reconnect(admin, name)  # (again, if the test failed before: harmless)
            wait_until(lambda: events_named(events, "tick", back_at) >= 1,
                       "a tick to succeed once the database is back")
            failed_after = events_named(events, "tick_failed", back_at)
            assert runner.thread.is_alive() and runner.error is None
        finally:
            stop(daemon, runner)
        assert not runner.thread.is_alive() and runner.error is None
        assert ended >= 1  # the daemon's connections were cut
        # Every failure was a pdca error the daemon logged, none a job APScheduler saw fail.
        assert [r.getMessage() for r in caplog.records
                if r.name.startswith("apscheduler") and r.levelno >= logging.ERROR] == []
        assert failed_after == 0, "the first tick after the outage failed too"

        rows = assert_every_firing_handled_once(engine)
        # The outage came in the middle of the work; every due firing was carried out (and
        # logged) once, some before it, the others after.
        fired = Counter(str(e["key"]) for e in events if e.get("event") == "firing")
        assert fired_before < pending == len(fired), (fired_before, pending, len(fired))
        assert set(fired.values()) == {1}
        queued, doubled = check_sends(engine, sends_of([], [first, sent]))
        assert doubled == []
        errors = [str(e.get("error")) for e in events if e.get("event") == "tick_failed"]
    report("outage-postgresql", {
        "backend": "postgresql", "connections_ended": ended,
        "ticks_failed_during_outage": failed_during, "ticks_failed_after": failed_after,
        "ticks_before_recovery": ticks_before, "due_firings": len(rows),
        "firings_before_the_outage": fired_before, "firings_after": pending - fired_before,
        "notices": queued,
        "first_error": errors[0] if errors else None,
    })


@pytest.mark.postgres
@pytest.mark.slow
def test_a_daemon_whose_start_up_catch_up_is_cut_by_an_outage_keeps_running(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    prepare_real_database(pg_url, CI.first_tick_fy, Recorder())
    name = sa.make_url(pg_url).database
    assert name is not None
    caplog.set_level(logging.INFO, logger="pdca")
    with capture_logs() as events, pdca.Engine.open(pg_url) as engine, \
            admin_connection(pg_url) as admin:
        daemon = Daemon(engine, notifier=Recorder(), heartbeat_minutes=0.005)
        runner = DaemonThread(lambda: daemon.run(install_signals=False))
        runner.start()
        try:
            wait_until(lambda: events_named(events, "firing") >= 5, "the catch-up to begin")
            cut_off(admin, name)
            try:
                # The database stays out until the daemon has exited, or has gone on to its
                # scheduler loop, or has failed a second time (a daemon retrying at start).
                wait_until(lambda: not runner.thread.is_alive() or daemon.scheduler.running
                           or events_named(events, "tick_failed") >= 2,
                           "the daemon to go on after its catch-up failed")
            finally:
                reconnect(admin, name)
            assert runner.thread.is_alive(), f"the daemon exited: {runner.error!r}"
            back_at = len(events)
            wait_until(lambda: events_named(events, "tick", back_at) >= 1,
                       "a tick to succeed once the database is back")
        finally:
            stop(daemon, runner)
        assert runner.error is None
        assert_every_firing_handled_once(engine)



@pytest.mark.postgres
def test_a_fire_committed_just_before_an_outage_is_reported_as_done(pg_url: str) -> None:
    name = sa.make_url(pg_url).database
    assert name is not None
    with pdca.Engine.open(pg_url, migrate=True) as engine, admin_connection(pg_url) as admin:
        engine.bootstrap_admin(rw.ADMIN)
        engine.add_person("staff-0", role="staff", municipality=rw.KUMAMOTO, actor=rw.ADMIN)
        ref = "measure:R-0001"
        engine.create(ref, actor="staff-0", data={
            "municipalities": [rw.KUMAMOTO], "title_ja": "施策", "kind": "study"})
        delivered: list[int] = []

        def host(event: pdca.Transition) -> None:
            delivered.append(event.seq)
            if len(delivered) == 1:
                cut_off(admin, name)  # the database goes away right after the commit

        engine.on_transition(host)
        outcome: BaseException | pdca.Transition
        try:
            outcome = engine.fire(ref, "commercialise", actor="staff-0")
        except pdca.PdcaError as exc:
            outcome = exc
        finally:
            reconnect(admin, name)
        # The transition was committed, and its event is delivered again once the lease of
        # the message (claimed, never marked done) has run out: at least once.
        assert engine.get(ref).state == "implemented"
        assert expire_leases(engine._db) == 1
        assert engine.deliver_pending() == 1
        assert len(delivered) == 2 and delivered[0] == delivered[1]
        assert isinstance(outcome, pdca.Transition), (
            f"fire raised {outcome!r} though its transition was committed")
