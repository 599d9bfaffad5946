"""Four OS processes contending for the same entities lose nothing and duplicate nothing.

Four worker processes (``spawn``; started once for the module, since starting them costs
more than any scenario) each open a :class:`pdca.Engine` of their own on the test's fresh
database and wait at a barrier, so that they fire at the same moment. What the workers were
told is then compared with what the database holds: every transition a worker was told
happened is in the audit log exactly once, as it was told, and nothing else is (but the
audited refusals the workers were given); every other failure is one that contention may
cause; each entity's history replays from its creation to its state and version; the log's
order is each chain's order; and the audit chains verify.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.process
import multiprocessing.synchronize
import queue
import random
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import pytest

import pdca
from tests.conftest import KIKUCHI, KUMAMOTO, make_measure

WORKERS = 4
#: How long a worker waits at a barrier for the others, and the parent for the workers.
BARRIER_TIMEOUT_S = 60.0
RESULT_TIMEOUT_S = 180.0

#: The measure workflow, written out independently of the engine: (state, trigger) -> state.
MEASURE_MOVES = {
    ("study", "commercialise"): "implemented",
    ("implemented", "complete"): "completed",
    ("study", "discontinue"): "discontinued",
    ("implemented", "discontinue"): "discontinued",
}
TRIGGERS = ("commercialise", "complete", "discontinue")
TRIGGER_WEIGHTS = (5, 3, 2)
#: The refusals that contention may cause; anything else (a driver error included) is a bug.
CONTENTION_REFUSALS = frozenset({"TransitionNotAllowed", "ConcurrentTransition"})
#: How many times each worker fires at the one measure of the single-chain test.
HAMMER_FIRES = 80


class Attempt(NamedTuple):
    """One ``fire`` by one worker, and what came of it."""

    worker: int
    actor: str
    ref: str
    trigger: str
    expected_version: int | None
    #: ``"ok"``, the class name of a :class:`pdca.PdcaError`, or ``"unexpected ..."``.
    outcome: str
    #: For ``"ok"``: the returned Transition's seq, from_state and to_state.
    seq: int | None = None
    from_state: str | None = None
    to_state: str | None = None
    detail: str = ""


def staff_of(worker: int) -> str:
    """The staff member of the measures' municipality a worker acts as."""
    return f"staff-{worker}"


def outsider_of(worker: int) -> str:
    """The staff member of another municipality a worker acts as when it should be refused."""
    return f"outsider-{worker}"


def trigger_data(trigger: str, worker: int) -> dict[str, Any]:
    if trigger == "discontinue":
        return {"reason": f"discontinued by worker {worker}"}
    if trigger == "commercialise":
        return {"fiscal_year": 2025, "budget_jpy": 1_000_000 + worker}
    return {}


def attempt(
    engine: pdca.Engine,
    worker: int,
    ref: str,
    trigger: str,
    expected_version: int | None,
    *,
    actor: str | None = None,
) -> Attempt:
    """Fire once; record the outcome instead of raising."""
    actor = staff_of(worker) if actor is None else actor
    try:
        result = engine.fire(
            ref,
            trigger,
            actor=actor,
            data=trigger_data(trigger, worker),
            expected_version=expected_version,
        )
    except pdca.PdcaError as exc:
        return Attempt(
            worker, actor, ref, trigger, expected_version, type(exc).__name__, detail=str(exc)
        )
    except Exception as exc:
        return Attempt(
            worker,
            actor,
            ref,
            trigger,
            expected_version,
            f"unexpected {type(exc).__module__}.{type(exc).__name__}",
            detail=traceback.format_exc(),
        )
    return Attempt(
        worker,
        actor,
        ref,
        trigger,
        expected_version,
        "ok",
        seq=result.seq,
        from_state=result.from_state,
        to_state=result.to_state,
    )


# ----------------------------------------------------------------------------- workers
# Module-level functions: the spawn context imports this module in each worker by name.


def fire_at_random(
    engine: pdca.Engine,
    worker: int,
    barrier: multiprocessing.synchronize.Barrier,
    refs: Sequence[str],
    seed: int,
    passes: int,
    *,
    actor: str | None = None,
) -> list[Attempt]:
    """Pass over ``refs`` (all workers in the same order, for the most contention), firing a
    random trigger at each, half of the time with the version read just before."""
    rng = random.Random(seed * 1000 + worker)
    order_rng = random.Random(seed)  # the same order in every worker
    attempts: list[Attempt] = []
    for _ in range(passes):
        barrier.wait(BARRIER_TIMEOUT_S)  # line the workers up again at each pass
        order = list(refs)
        order_rng.shuffle(order)
        for ref in order:
            trigger = rng.choices(TRIGGERS, TRIGGER_WEIGHTS)[0]
            expected = engine.get(ref).version if rng.random() < 0.5 else None
            attempts.append(attempt(engine, worker, ref, trigger, expected, actor=actor))
    return attempts


def fire_at_random_half_outsiders(
    engine: pdca.Engine,
    worker: int,
    barrier: multiprocessing.synchronize.Barrier,
    refs: Sequence[str],
    seed: int,
    passes: int,
) -> list[Attempt]:
    """:func:`fire_at_random`, the odd-numbered workers acting for another municipality (so
    that their fires are refused, and the refusals audited on the same chains)."""
    actor = outsider_of(worker) if worker % 2 else staff_of(worker)
    return fire_at_random(engine, worker, barrier, refs, seed, passes, actor=actor)


def hammer_one_chain(
    engine: pdca.Engine,
    worker: int,
    barrier: multiprocessing.synchronize.Barrier,
    refs: Sequence[str],
    seed: int,
    passes: int,
) -> list[Attempt]:
    """Fire ``passes`` random triggers at ``refs[0]`` as fast as possible, without an
    expected version: worker 0 as the measure's staff, the others as outsiders, whose
    refusals are audited, so that every worker keeps appending to the one chain."""
    rng = random.Random(seed * 1000 + worker)
    actor = staff_of(worker) if worker == 0 else outsider_of(worker)
    attempts: list[Attempt] = []
    barrier.wait(BARRIER_TIMEOUT_S)
    for _ in range(passes):
        trigger = rng.choices(TRIGGERS, TRIGGER_WEIGHTS)[0]
        attempts.append(attempt(engine, worker, refs[0], trigger, None, actor=actor))
    return attempts


def race_to_commercialise(
    engine: pdca.Engine,
    worker: int,
    barrier: multiprocessing.synchronize.Barrier,
    refs: Sequence[str],
    seed: int,
    passes: int,
) -> list[Attempt]:
    """For each of ``refs`` in turn, every worker fires ``commercialise`` at the same instant:
    on even-numbered refs with the version read before the barrier, on odd ones without."""
    del seed, passes
    attempts: list[Attempt] = []
    for i, ref in enumerate(refs):
        expected = engine.get(ref).version if i % 2 == 0 else None
        barrier.wait(BARRIER_TIMEOUT_S)
        attempts.append(attempt(engine, worker, ref, "commercialise", expected))
    return attempts


Scenario = Callable[
    [pdca.Engine, int, multiprocessing.synchronize.Barrier, Sequence[str], int, int],
    list[Attempt],
]


Task = tuple[int, Scenario, str, list[str], int, int]
Report = tuple[int, int, list[Attempt] | str]


def worker_loop(
    worker: int,
    barrier: multiprocessing.synchronize.Barrier,
    tasks: multiprocessing.Queue[Task | None],
    results: multiprocessing.Queue[Report],
) -> None:
    """Run scenarios until told to stop. For each one, open an engine of this process's own
    on the task's database, run the scenario and send back what it saw (or the traceback of
    whatever stopped it), tagged with the task's number."""
    while (task := tasks.get()) is not None:
        number, scenario, url, refs, seed, passes = task
        try:
            with pdca.Engine.open(url) as engine:
                engine.get(refs[0])  # connect before the barrier, not inside the contention
                outcome: list[Attempt] | str = scenario(
                    engine, worker, barrier, refs, seed, passes
                )
        except BaseException:
            barrier.abort()  # so that the others do not wait for this one
            outcome = traceback.format_exc()
        results.put((number, worker, outcome))


class WorkerPool:
    """:data:`WORKERS` spawned processes, started once for the module (starting them costs
    far more than any scenario) and started afresh after a run that went wrong."""

    def __init__(self) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._processes: list[multiprocessing.process.BaseProcess] = []
        self._tasks: list[multiprocessing.Queue[Task | None]] = []
        self._runs = 0
        self._start()

    def _start(self) -> None:
        self._barrier = self._ctx.Barrier(WORKERS)
        self._results: multiprocessing.Queue[Report] = self._ctx.Queue()
        self._tasks = [self._ctx.Queue() for _ in range(WORKERS)]
        self._processes = [
            self._ctx.Process(
                target=worker_loop,
                args=(worker, self._barrier, self._tasks[worker], self._results),
                name=f"pdca-worker-{worker}",
                daemon=True,
            )
            for worker in range(WORKERS)
        ]
        for process in self._processes:
            process.start()

    def close(self) -> None:
        self._barrier.abort()
        for tasks in self._tasks:
            tasks.put(None)
        for process in self._processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
                process.join()
        for tasks in self._tasks:
            tasks.close()
        self._results.close()

    def run(
        self, scenario: Scenario, url: str, refs: Sequence[str], *, seed: int = 0, passes: int = 1
    ) -> list[Attempt]:
        """Run ``scenario`` in every worker at once; return every attempt."""
        self._runs += 1
        number = self._runs
        self._barrier.reset()
        for tasks in self._tasks:
            tasks.put((number, scenario, url, list(refs), seed, passes))
        collected: dict[int, list[Attempt] | str] = {}
        deadline = time.monotonic() + RESULT_TIMEOUT_S
        try:
            while len(collected) < WORKERS:
                try:
                    run, worker, outcome = self._results.get(timeout=1.0)
                except queue.Empty:
                    # A worker that died (or a hang) fails the test now, not at the deadline.
                    dead = [p.name for p in self._processes if not p.is_alive()]
                    if dead or time.monotonic() > deadline:
                        missing = sorted(set(range(WORKERS)) - set(collected))
                        pytest.fail(f"workers {missing} never reported (dead: {dead})")
                    continue
                if run == number:
                    collected[worker] = outcome
        except BaseException:
            self.close()
            self._start()
            raise
        attempts: list[Attempt] = []
        crashed: list[str] = []
        for worker in sorted(collected):
            outcome = collected[worker]
            if isinstance(outcome, str):
                crashed.append(f"worker {worker} crashed:\n{outcome}")
            else:
                attempts += outcome
        assert not crashed, "\n".join(crashed)
        return attempts


@pytest.fixture(scope="module")
def workers() -> Iterator[WorkerPool]:
    pool = WorkerPool()
    try:
        yield pool
    finally:
        pool.close()


# ----------------------------------------------------------------------------- setup


def prepare(url: str, *, study: int, implementation: int = 0) -> list[str]:
    """A migrated database with, per worker, a staff member of the measures' municipality
    and one of another municipality, and the measures; their refs."""
    with pdca.Engine.open(url, migrate=True) as engine:
        engine.bootstrap_admin("admin")
        for worker in range(WORKERS):
            engine.add_person(
                staff_of(worker), role="staff", municipality=KUMAMOTO, actor="admin"
            )
            engine.add_person(
                outsider_of(worker), role="staff", municipality=KIKUCHI, actor="admin"
            )
        refs = [
            make_measure(engine, f"M-{i:03d}", actor=staff_of(0), kind="study")
            for i in range(study)
        ]
        refs += [
            make_measure(engine, f"M-{i:03d}", actor=staff_of(0), kind="implementation")
            for i in range(study, study + implementation)
        ]
    return refs


# ----------------------------------------------------------------------------- checks


def assert_only_expected_refusals(
    attempts: Sequence[Attempt], expected: frozenset[str] = CONTENTION_REFUSALS
) -> None:
    bad = [a for a in attempts if a.outcome != "ok" and a.outcome not in expected]
    assert not bad, (
        f"failures other than the expected refusals: {dict(Counter(a.outcome for a in bad))}"
        "; the first ones:\n"
        + "\n".join(
            f"{a.outcome} on {a.trigger} {a.ref} (worker {a.worker}): {a.detail}"
            for a in bad[:3]
        )
    )


def assert_no_conflict_without_expected_version(attempts: Sequence[Attempt]) -> None:
    """Without an expected version a writer waits for the lock instead of giving up."""
    conflicts = [
        a for a in attempts if a.outcome == "ConcurrentTransition" and a.expected_version is None
    ]
    assert conflicts == []


def assert_log_holds_exactly_the_successes(
    engine: pdca.Engine, attempts: Sequence[Attempt]
) -> list[pdca.AuditEntry]:
    """Each success is in the log once, as the worker was told; each audited refusal
    (PermissionDenied) is in it once too; the log holds nothing else.

    Returns the whole log.
    """
    entries = list(engine.audit_log())
    seqs = Counter(e.seq for e in entries)
    assert [s for s, n in seqs.items() if n > 1] == [], "a seq is used twice"
    positions = Counter((e.ref, e.entity_seq) for e in entries)
    assert [p for p, n in positions.items() if n > 1] == [], "an entity_seq is used twice"
    assert {e.kind for e in entries} <= {"create", "transition", "refused"}
    refused = Counter((e.ref, e.actor, e.trigger) for e in entries if e.kind == "refused")
    denied = Counter(
        (a.ref, a.actor, a.trigger) for a in attempts if a.outcome == "PermissionDenied"
    )
    assert refused == denied, "the audited refusals are not those the workers were given"

    successes = [a for a in attempts if a.outcome == "ok"]
    transitions = {e.seq: e for e in entries if e.kind == "transition"}
    assert len(successes) == len(transitions)
    by_seq: dict[int, Attempt] = {}
    for a in successes:
        assert a.seq is not None
        assert a.seq not in by_seq, f"two fires were told seq {a.seq}"
        by_seq[a.seq] = a
    assert set(by_seq) == set(transitions), (
        f"told but not logged: {sorted(set(by_seq) - set(transitions))}; "
        f"logged but never told: {sorted(set(transitions) - set(by_seq))}"
    )
    for seq, entry in transitions.items():
        told = by_seq[seq]
        assert (entry.ref, entry.trigger, entry.actor) == (told.ref, told.trigger, told.actor)
        assert (entry.from_state, entry.to_state) == (told.from_state, told.to_state)
    return entries


def assert_histories_replay_to_states(
    engine: pdca.Engine, refs: Sequence[str], attempts: Sequence[Attempt]
) -> None:
    """Replaying each measure's log from its creation gives its state and version; a fire
    made with ``expected_version`` succeeded only from that very version; a stale version
    was refused only when the entity had indeed moved on."""
    ok_with_version = {a.seq: a.expected_version for a in attempts if a.outcome == "ok"}
    for ref in refs:
        history = engine.history(ref)
        assert [e.entity_seq for e in history] == list(range(1, len(history) + 1))
        create, *moves = history
        assert create.kind == "create"
        assert create.to_state is not None
        state, version = create.to_state, 1
        for entry in moves:
            assert entry.from_state == state, f"{ref} entry {entry.entity_seq} starts elsewhere"
            if entry.kind == "refused":
                assert entry.to_state == state, f"{ref} entry {entry.entity_seq} moved it"
                continue
            assert entry.kind == "transition"
            assert entry.trigger is not None
            dest = MEASURE_MOVES.get((state, entry.trigger))
            assert dest is not None, f"{ref}: {entry.trigger} from {state} is no valid move"
            assert entry.to_state == dest, f"{ref}: {entry.trigger} led to {entry.to_state}"
            expected = ok_with_version[entry.seq]
            assert expected in (None, version), (
                f"{ref} entry {entry.entity_seq} fired at version {version} though the "
                f"worker expected version {expected}"
            )
            state, version = dest, version + 1
        now = engine.get(ref)
        assert (now.state, now.version) == (state, version), f"{ref} is not what its log says"
    for a in attempts:
        if a.outcome == "ConcurrentTransition":
            assert a.expected_version is not None, a
            assert a.expected_version < engine.get(a.ref).version, a


def assert_audit_verifies(engine: pdca.Engine) -> None:
    report = engine.verify_audit()
    assert report.ok, [str(p) for p in report.problems]
    assert report.problems == ()


# ----------------------------------------------------------------------------- tests


@pytest.mark.slow
def test_four_processes_contending_lose_and_duplicate_nothing(
    workers: WorkerPool, db_url: str
) -> None:
    refs = prepare(db_url, study=16, implementation=4)
    seed = random.randrange(1_000_000)
    print(f"seed {seed}")  # shown when the test fails
    attempts = workers.run(fire_at_random, db_url, refs, seed=seed, passes=3)

    assert len(attempts) == WORKERS * 3 * len(refs)
    assert_only_expected_refusals(attempts)
    assert_no_conflict_without_expected_version(attempts)
    with pdca.Engine.open(db_url) as engine:
        assert_log_holds_exactly_the_successes(engine, attempts)
        assert_histories_replay_to_states(engine, refs, attempts)
        assert_audit_verifies(engine)
    # The workers did contend: several of them moved measures.
    outcomes = Counter(a.outcome for a in attempts)
    assert outcomes["ok"] >= len(refs), outcomes
    assert len({a.worker for a in attempts if a.outcome == "ok"}) > 1, outcomes


@pytest.mark.slow
def test_simultaneous_commercialise_succeeds_exactly_once(
    workers: WorkerPool, db_url: str
) -> None:
    refs = prepare(db_url, study=6)
    attempts = workers.run(race_to_commercialise, db_url, refs)

    assert len(attempts) == WORKERS * len(refs)
    assert_only_expected_refusals(attempts)
    by_ref: dict[str, list[Attempt]] = defaultdict(list)
    for a in attempts:
        by_ref[a.ref].append(a)
    for i, ref in enumerate(refs):
        outcomes = sorted(a.outcome for a in by_ref[ref])
        assert outcomes.count("ok") == 1, (ref, outcomes)
        losers = [o for o in outcomes if o != "ok"]
        if i % 2 == 0:
            # Every worker read version 1: the winner moved it on, the others are stale.
            assert losers == ["ConcurrentTransition"] * (WORKERS - 1), (ref, outcomes)
        else:
            # No expected version: the others wait their turn and find it implemented.
            assert losers == ["TransitionNotAllowed"] * (WORKERS - 1), (ref, outcomes)
    with pdca.Engine.open(db_url) as engine:
        entries = assert_log_holds_exactly_the_successes(engine, attempts)
        assert_histories_replay_to_states(engine, refs, attempts)
        for ref in refs:
            assert engine.get(ref).state == "implemented"
            commercialised = [
                e for e in entries if e.ref == ref and e.trigger == "commercialise"
            ]
            assert len(commercialised) == 1, ref
        assert_audit_verifies(engine)


@pytest.mark.slow
def test_refusals_audited_by_contending_processes_interleave_on_the_chains(
    workers: WorkerPool, db_url: str
) -> None:
    refs = prepare(db_url, study=8, implementation=2)
    seed = random.randrange(1_000_000)
    print(f"seed {seed}")  # shown when the test fails
    attempts = workers.run(fire_at_random_half_outsiders, db_url, refs, seed=seed, passes=2)

    assert len(attempts) == WORKERS * 2 * len(refs)
    assert_only_expected_refusals(attempts, CONTENTION_REFUSALS | {"PermissionDenied"})
    assert_no_conflict_without_expected_version(attempts)
    outsiders = {a.actor for a in attempts if a.worker % 2}
    assert {a.outcome for a in attempts if a.actor in outsiders} <= {
        "PermissionDenied",
        "ConcurrentTransition",
    }
    with pdca.Engine.open(db_url) as engine:
        entries = assert_log_holds_exactly_the_successes(engine, attempts)
        assert_histories_replay_to_states(engine, refs, attempts)
        assert_audit_verifies(engine)
    kinds = Counter(e.kind for e in entries)
    assert kinds["refused"] > 0
    assert kinds["transition"] > 0


@pytest.mark.slow
def test_one_chain_appended_by_four_processes_stays_in_sequence_order(
    workers: WorkerPool, db_url: str
) -> None:
    refs = prepare(db_url, study=1)
    seed = random.randrange(1_000_000)
    print(f"seed {seed}")  # shown when the test fails
    attempts = workers.run(hammer_one_chain, db_url, refs, seed=seed, passes=HAMMER_FIRES)

    assert len(attempts) == WORKERS * HAMMER_FIRES
    assert_only_expected_refusals(attempts, CONTENTION_REFUSALS | {"PermissionDenied"})
    assert_no_conflict_without_expected_version(attempts)
    with pdca.Engine.open(db_url) as engine:
        assert_log_holds_exactly_the_successes(engine, attempts)
        assert_histories_replay_to_states(engine, refs, attempts)
        history = engine.history(refs[0])
        # The chain's order (entity_seq) and the log's order (seq) are the same order.
        assert [e.seq for e in history] == sorted(e.seq for e in history)
        assert_audit_verifies(engine)
    assert len(history) > WORKERS * HAMMER_FIRES // 2
