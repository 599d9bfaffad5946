"""Worker processes for tests/test_reliability.py: many processes firing at random at once.

Imported by the test (the set-up of a contention database, the pool of worker processes)
and, by name, by each worker process the test spawns: the functions the workers run must
live in an importable module, and this one does not import the test module (nor pytest).

A worker opens an :class:`pdca.Engine` of its own on the test's database, waits at a barrier
for the others, then makes its calls at random and sends back what each call told it.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.process
import multiprocessing.synchronize
import queue
import random
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import pdca

KUMAMOTO = "431001"
KIKUCHI = "432105"
#: The staff of the measures' municipality: any worker may act as any of them (and the
#: administrator may deactivate and reactivate them in the middle of it all).
STAFF = tuple(f"staff-{n}" for n in range(6))
#: Staff of another municipality: their fires at the measures are refused (and audited).
OUTSIDERS = ("outsider-0", "outsider-1")
SECRETARIAT = "secretariat"
ADMIN = "admin"
#: The inventory year of the emission values the workers correct.
EMISSIONS_YEAR = 2023
BARRIER_TIMEOUT_S = 60.0

MEASURE_TRIGGERS = ("commercialise", "complete", "discontinue")
MEASURE_WEIGHTS = (6, 3, 1)
EMISSION_TRIGGERS = ("update", "estimate", "finalise", "revise")
EMISSION_WEIGHTS = (6, 2, 1, 2)


class Call(NamedTuple):
    """One ``fire`` by one worker, and what came of it."""

    worker: int
    actor: str
    ref: str
    trigger: str
    expected_version: int | None
    #: ``"ok"``, the class name of a :class:`pdca.PdcaError`, or ``"unexpected ..."``.
    outcome: str
    seq: int | None = None
    from_state: str | None = None
    to_state: str | None = None
    #: The data the call sent (for ``ok`` emission calls: the value it set).
    data: dict[str, Any] | None = None
    detail: str = ""


@dataclass(frozen=True)
class Setup:
    """What the workers act on, and the last audit entry written before they start."""

    measures: tuple[str, ...]
    emissions: tuple[str, ...]
    people: tuple[str, ...]
    last_seq: int


def prepare(url: str, *, measures: int, emissions: int) -> Setup:
    """A migrated database with the administrator, the secretariat, :data:`STAFF` and
    :data:`OUTSIDERS`, ``measures`` measures of Kumamoto (a quarter of them already being
    implemented) and ``emissions`` preliminary emission values of Kumamoto."""
    with pdca.Engine.open(url, migrate=True) as engine:
        engine.bootstrap_admin(ADMIN)
        engine.load_plan("kumamoto", actor=ADMIN)
        engine.add_person(SECRETARIAT, role="secretariat", actor=ADMIN)
        for person in STAFF:
            engine.add_person(person, role="staff", municipality=KUMAMOTO, actor=ADMIN)
        for person in OUTSIDERS:
            engine.add_person(person, role="staff", municipality=KIKUCHI, actor=ADMIN)
        refs = []
        for n in range(measures):
            ref = f"measure:R-{n:04d}"
            engine.create(ref, actor=STAFF[0], data={
                "municipalities": [KUMAMOTO], "title_ja": f"施策 {n}",
                "kind": "implementation" if n % 4 == 3 else "study"})
            refs.append(ref)
        sectors = engine.plan.sector_ids
        values = []
        for n in range(emissions):
            sector = sectors[n % len(sectors)]
            ref = f"emissions:{KUMAMOTO}:{EMISSIONS_YEAR - n // len(sectors)}:{sector}"
            engine.create(ref, actor=SECRETARIAT, data={
                "municipality": KUMAMOTO, "year": EMISSIONS_YEAR - n // len(sectors),
                "sector": sector, "value_t_co2": 1000.0 + n, "status": "preliminary"})
            values.append(ref)
        last_seq = max(entry.seq for entry in engine.audit_log())
    return Setup(measures=tuple(refs), emissions=tuple(values),
                 people=tuple(f"person:{p}" for p in STAFF), last_seq=last_seq)


# ----------------------------------------------------------------------------- a worker


def _fire(
    engine: pdca.Engine,
    worker: int,
    ref: str,
    trigger: str,
    actor: str,
    data: dict[str, Any] | None,
    expected_version: int | None,
) -> Call:
    """Fire once; record the outcome instead of raising."""
    try:
        result = engine.fire(ref, trigger, actor=actor, data=data,
                             expected_version=expected_version)
    except pdca.PdcaError as exc:
        return Call(worker, actor, ref, trigger, expected_version, type(exc).__name__,
                    data=data, detail=str(exc))
    except Exception as exc:  # a driver error, or any other escape: the test fails on it
        return Call(worker, actor, ref, trigger, expected_version,
                    f"unexpected {type(exc).__module__}.{type(exc).__name__}", data=data,
                    detail=traceback.format_exc())
    return Call(worker, actor, ref, trigger, expected_version, "ok", seq=result.seq,
                from_state=result.from_state, to_state=result.to_state, data=data)


def contend(
    engine: pdca.Engine,
    worker: int,
    barrier: multiprocessing.synchronize.Barrier,
    setup: Setup,
    seed: int,
    calls: int,
) -> list[Call]:
    """``calls`` random fires: mostly staff moving measures on (half of the time with the
    version read just before), some outsiders refused, the secretariat or staff correcting
    emission values, and the administrator deactivating and reactivating staff."""
    rng = random.Random(seed * 1000 + worker)
    out: list[Call] = []
    barrier.wait(BARRIER_TIMEOUT_S)
    for _ in range(calls):
        draw = rng.random()
        expected: int | None = None
        data: dict[str, Any] | None = None
        if draw < 0.74:
            ref = rng.choice(setup.measures)
            trigger = rng.choices(MEASURE_TRIGGERS, MEASURE_WEIGHTS)[0]
            actor = rng.choice(STAFF)
            if trigger == "discontinue":
                data = {"reason": f"worker {worker}"}
            elif trigger == "commercialise":
                data = {"fiscal_year": 2026, "budget_jpy": 1000 * worker}
        elif draw < 0.80:
            ref = rng.choice(setup.measures)
            trigger = rng.choices(MEASURE_TRIGGERS, MEASURE_WEIGHTS)[0]
            actor = rng.choice(OUTSIDERS)
            data = {"reason": "not ours"} if trigger == "discontinue" else None
        elif draw < 0.96:
            ref = rng.choice(setup.emissions)
            trigger = rng.choices(EMISSION_TRIGGERS, EMISSION_WEIGHTS)[0]
            actor = rng.choice((SECRETARIAT, *STAFF))
            data = {"value_t_co2": float(rng.randrange(100, 100_000))}
            if trigger == "revise":
                data["reason"] = f"recalculated by worker {worker}"
        else:
            ref = rng.choice(setup.people)
            # reactivating more often than deactivating: staff are away a quarter of the time
            trigger = rng.choices(("deactivate", "reactivate"), (1, 3))[0]
            actor = ADMIN
        if rng.random() < 0.5:
            try:
                expected = engine.get(ref).version
            except pdca.PdcaError as exc:  # reading must not fail either
                out.append(Call(worker, actor, ref, "get", None, type(exc).__name__,
                                detail=str(exc)))
                continue
        out.append(_fire(engine, worker, ref, trigger, actor, data, expected))
    return out


Task = tuple[int, str, Setup, int, int]
Report = tuple[int, int, float, list[Call] | str]


def worker_loop(
    worker: int,
    barrier: multiprocessing.synchronize.Barrier,
    tasks: multiprocessing.Queue[Task | None],
    results: multiprocessing.Queue[Report],
) -> None:
    """Run tasks until told to stop; for each, open an engine of this process's own on the
    task's database, contend, and send back every call (or the traceback that stopped it)
    with the seconds the calls took."""
    while (task := tasks.get()) is not None:
        number, url, setup, seed, calls = task
        started = time.monotonic()
        try:
            with pdca.Engine.open(url) as engine:
                engine.get(setup.measures[0])  # connect before the barrier
                started = time.monotonic()
                outcome: list[Call] | str = contend(engine, worker, barrier, setup, seed,
                                                    calls)
        except BaseException:
            barrier.abort()  # so that the others do not wait for this one
            outcome = traceback.format_exc()
        results.put((number, worker, time.monotonic() - started, outcome))


class WorkerPool:
    """``size`` spawned worker processes, started once and reused (starting them costs more
    than a CI-size run of the calls)."""

    def __init__(self, size: int, *, timeout: float) -> None:
        self.size = size
        self.timeout = timeout
        self._ctx = multiprocessing.get_context("spawn")
        self._runs = 0
        self._start()

    def _start(self) -> None:
        self._barrier = self._ctx.Barrier(self.size)
        self._results: multiprocessing.Queue[Report] = self._ctx.Queue()
        self._tasks: list[multiprocessing.Queue[Task | None]] = [
            self._ctx.Queue() for _ in range(self.size)]
        self._processes: list[multiprocessing.process.BaseProcess] = [
            self._ctx.Process(target=worker_loop,
                              args=(n, self._barrier, self._tasks[n], self._results),
                              name=f"pdca-reliability-{n}", daemon=True)
            for n in range(self.size)
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
                process.kill()
                process.join()
        for tasks in self._tasks:
            tasks.close()
        self._results.close()

    def run(self, url: str, setup: Setup, *, seed: int, calls: int) -> tuple[list[Call], float]:
        """Every worker makes ``calls`` calls at once; every call, and the longest time a
        worker took. Raises ``RuntimeError`` naming the workers that crashed or never
        reported."""
        self._runs += 1
        number = self._runs
        self._barrier.reset()
        for tasks in self._tasks:
            tasks.put((number, url, setup, seed, calls))
        collected: dict[int, tuple[float, list[Call] | str]] = {}
        deadline = time.monotonic() + self.timeout
        try:
            while len(collected) < self.size:
                try:
                    run, worker, seconds, outcome = self._results.get(timeout=1.0)
                except queue.Empty:
                    dead = [p.name for p in self._processes if not p.is_alive()]
                    if dead or time.monotonic() > deadline:
                        missing = sorted(set(range(self.size)) - set(collected))
                        raise RuntimeError(
                            f"workers {missing} never reported (dead: {dead})") from None
                    continue
                if run == number:
                    collected[worker] = (seconds, outcome)
        except BaseException:
            self.close()
            self._start()
            raise
        crashed = [f"worker {w} crashed:\n{o}" for w, (_, o) in sorted(collected.items())
                   if isinstance(o, str)]
        if crashed:
            raise RuntimeError("\n".join(crashed))
        calls_made: list[Call] = []
        for _, outcome in (collected[w] for w in sorted(collected)):
            assert not isinstance(outcome, str)
            calls_made += outcome
        return calls_made, max(seconds for seconds, _ in collected.values())


def outcomes(calls: Sequence[Call]) -> dict[str, int]:
    """How many calls ended each way."""
    counts: dict[str, int] = {}
    for call in calls:
        counts[call.outcome] = counts.get(call.outcome, 0) + 1
    return dict(sorted(counts.items()))
