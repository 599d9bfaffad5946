"""How many transitions per second ``pdca.Engine.fire`` sustains, against a raw baseline.

The engine's number means little alone, so every run also measures, in the same process,
on the same machine and in the same database, the least work a persisted transition can
do: a raw SQLAlchemy Core baseline, one transaction per transition with one UPDATE of an
entity row and one INSERT of an audit row (tables ``bench_entities`` and ``bench_audit``,
created by this script, with the columns and widths of ``entities`` and ``audit_log`` but
no index beyond the primary keys). The engine does everything ``fire`` does: it locks the
entity's row, reads the actor, checks permission and the workflow, hash-chains the audit
entry and writes it.

Each round prepares ``--size`` fresh measures for both sides (not timed), then times
``commercialise`` (study -> implemented) and ``complete`` (implemented -> completed) on
every measure: 2 transitions per measure, each in its own transaction. The two sides take
turns on chunks of ``--chunk`` measures (commercialise on each measure of the chunk, then
complete on each), who goes first alternating chunk by chunk, so that load from elsewhere
on the machine hits both alike. The rate of each side is the median over the rounds, after
one untimed warm-up round; ``ratio`` is engine / baseline of those medians, and the target
is ``ratio >= 0.5``.

SQLite runs on a file in a temporary folder, with the durability settings the engine uses
(WAL, ``synchronous=NORMAL``) on the baseline's connections too. PostgreSQL runs in a fresh
database ``pdca_bench_*`` created on the server of ``--postgres-url`` (or
``PDCA_TEST_POSTGRES_URL``) and dropped afterwards; without either it is skipped, and the
output says so.

Exactly one JSON object goes to stdout (progress goes to stderr); it is also written to
``benchmarks/results/fire-<UTC timestamp>.json`` unless ``--no-save``::

    .venv/bin/python -m benchmarks.bench_fire --postgres-url postgresql://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import platform
import pstats
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy import event

import pdca

TARGET_RATIO = 0.5
DEFAULT_SIZE = 200
DEFAULT_ROUNDS = 7
DEFAULT_CHUNK = 25
WARMUP_SIZE = 20
MUNICIPALITY = "431001"
ADMIN = "admin"
STAFF = "staff"
#: The two timed steps of every measure: (trigger, state before, state after).
STEPS = (("commercialise", "study", "implemented"), ("complete", "implemented", "completed"))
PG_ENV = "PDCA_TEST_POSTGRES_URL"
DATABASES = ("sqlite", "postgresql")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent


def sa_url(url: str) -> sa.URL:
    """``url`` for SQLAlchemy, ``postgresql://`` and ``postgres://`` on psycopg 3 (the driver
    pdca uses for them)."""
    parsed = sa.make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


# ----------------------------------------------------------------------------- baseline

_BASELINE_META = sa.MetaData()
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

BENCH_ENTITIES = sa.Table(
    "bench_entities",
    _BASELINE_META,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("ref", sa.String(200), nullable=False),
    sa.Column("workflow", sa.String(40), nullable=False),
    sa.Column("state", sa.String(60), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("scope", sa.String(400), nullable=False),
    sa.Column("fiscal_year", sa.Integer(), nullable=True),
    sa.Column("attrs", sa.Text(), nullable=False),
    sa.Column("overdue_since", sa.DateTime(timezone=True), nullable=True),
    sa.Column("chain_len", sa.Integer(), nullable=False),
    sa.Column("chain_head", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

BENCH_AUDIT = sa.Table(
    "bench_audit",
    _BASELINE_META,
    sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
    sa.Column("ref", sa.String(200), nullable=False),
    sa.Column("entity_seq", sa.Integer(), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("virtual_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("fiscal_year", sa.Integer(), nullable=True),
    sa.Column("trigger", sa.String(60), nullable=False),
    sa.Column("from_state", sa.String(60), nullable=True),
    sa.Column("to_state", sa.String(60), nullable=True),
    sa.Column("note", sa.Text(), nullable=True),
    sa.Column("data", sa.Text(), nullable=False),
    sa.Column("workflow_version", sa.String(64), nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

#: Stand-ins of the same width as the engine's hashes and measure attributes.
_HASH = "ab" * 32
_VERSION = "cd" * 32
_ATTRS = '{"kind":"study","municipalities":["431001"],"title_ja":"x"}'


class Side(Protocol):
    """One contender: prepares ``count`` fresh entities, then times their transitions."""

    name: str

    def prepare(self, count: int) -> list[Any]: ...

    def run(self, items: Sequence[Any]) -> float:
        """Fire both steps on every item (commercialise on all, then complete); seconds."""
        ...

    def check(self, items: Sequence[Any]) -> None: ...

    def close(self) -> None: ...


class BaselineSide:
    """Raw SQLAlchemy Core: per transition, one transaction with one UPDATE and one INSERT."""

    name = "baseline"

    def __init__(self, url: str) -> None:
        self._db = sa.create_engine(sa_url(url))
        if self._db.dialect.name == "sqlite":
            # The same durability as the engine's connections (see pdca.storage.database).
            @event.listens_for(self._db, "connect")
            def _on_connect(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA busy_timeout=10000")
                cursor.close()

        _BASELINE_META.create_all(self._db)
        self._next_id = 0
        self._update = BENCH_ENTITIES.update().where(BENCH_ENTITIES.c.id == sa.bindparam("b_id"))
        self._insert = BENCH_AUDIT.insert()

    def prepare(self, count: int) -> list[tuple[int, str]]:
        now = datetime.now(UTC)
        items = []
        for _ in range(count):
            self._next_id += 1
            items.append((self._next_id, f"measure:M-{self._next_id:05d}"))
        with self._db.begin() as conn:
            conn.execute(
                BENCH_ENTITIES.insert(),
                [
                    {
                        "id": entity_id,
                        "ref": ref,
                        "workflow": "measure",
                        "state": "study",
                        "version": 1,
                        "scope": MUNICIPALITY,
                        "fiscal_year": None,
                        "attrs": _ATTRS,
                        "overdue_since": None,
                        "chain_len": 1,
                        "chain_head": _HASH,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for entity_id, ref in items
                ],
            )
        return items

    def run(self, items: Sequence[tuple[int, str]]) -> float:
        db, update, insert = self._db, self._update, self._insert
        start = time.perf_counter()
        for step, (trigger, from_state, to_state) in enumerate(STEPS, start=1):
            for entity_id, ref in items:
                now = datetime.now(UTC)
                with db.begin() as conn:
                    conn.execute(
                        update,
                        {
                            "b_id": entity_id,
                            "state": to_state,
                            "version": step + 1,
                            "chain_len": step + 1,
                            "chain_head": _HASH,
                            "overdue_since": None,
                            "updated_at": now,
                        },
                    )
                    conn.execute(
                        insert,
                        {
                            "ref": ref,
                            "entity_seq": step + 1,
                            "kind": "transition",
                            "at": now,
                            "virtual_at": None,
                            "actor": STAFF,
                            "role": "staff",
                            "fiscal_year": None,
                            "trigger": trigger,
                            "from_state": from_state,
                            "to_state": to_state,
                            "note": None,
                            "data": "{}",
                            "workflow_version": _VERSION,
                            "prev_hash": _HASH,
                            "hash": _HASH,
                        },
                    )
        return time.perf_counter() - start

    def check(self, items: Sequence[tuple[int, str]]) -> None:
        ids = [entity_id for entity_id, _ in items]
        with self._db.connect() as conn:
            done = conn.execute(
                sa.select(sa.func.count())
                .select_from(BENCH_ENTITIES)
                .where(BENCH_ENTITIES.c.id.in_(ids), BENCH_ENTITIES.c.state == "completed")
            ).scalar_one()
        if done != len(ids):
            raise RuntimeError(f"baseline: {done} of {len(ids)} rows reached 'completed'")

    def close(self) -> None:
        self._db.dispose()


class EngineSide:
    """``pdca.Engine.fire``: persisted, audited and permission-checked."""

    name = "engine"

    def __init__(self, url: str) -> None:
        self.engine = pdca.Engine.open(url, migrate=True)
        self.engine.bootstrap_admin(ADMIN)
        self.engine.add_person(STAFF, role="staff", municipality=MUNICIPALITY, actor=ADMIN)
        self._next = 0

    def prepare(self, count: int) -> list[str]:
        refs = []
        for _ in range(count):
            self._next += 1
            ref = f"measure:M-{self._next:05d}"
            self.engine.create(
                ref,
                actor=STAFF,
                data={"municipalities": [MUNICIPALITY], "title_ja": "x", "kind": "study"},
            )
            refs.append(ref)
        return refs

    def run(self, items: Sequence[str]) -> float:
        fire = self.engine.fire
        start = time.perf_counter()
        for trigger, _, _ in STEPS:
            for ref in items:
                fire(ref, trigger, actor=STAFF)
        return time.perf_counter() - start

    def check(self, items: Sequence[str]) -> None:
        for ref in (items[0], items[-1]):
            state = self.engine.get(ref).state
            if state != "completed":
                raise RuntimeError(f"engine: {ref} is {state}, not completed")

    def close(self) -> None:
        self.engine.close()


# ----------------------------------------------------------------------------- databases


@contextmanager
def sqlite_database() -> Iterator[str]:
    """A URL of a new SQLite file in a temporary folder, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="pdca_bench_") as folder:
        yield f"sqlite:///{Path(folder) / 'bench.db'}"


@contextmanager
def postgres_database(server_url: str) -> Iterator[str]:
    """A URL of a new database ``pdca_bench_*`` on ``server_url``, dropped afterwards."""
    server = sa_url(server_url)
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    name = f"pdca_bench_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def database_settings(url: str) -> dict[str, Any]:
    """The settings that decide what a commit costs, as the server or file reports them."""
    db = sa.create_engine(sa_url(url))
    try:
        with db.connect() as conn:
            if db.dialect.name == "sqlite":
                return {
                    "sqlite_version": sqlite3.sqlite_version,
                    "journal_mode": conn.exec_driver_sql("PRAGMA journal_mode").scalar(),
                    "synchronous": "NORMAL (set on every connection of both sides)",
                }
            settings: dict[str, Any] = {
                "server_version": conn.exec_driver_sql("SHOW server_version").scalar(),
            }
            for name in ("synchronous_commit", "fsync", "wal_sync_method"):
                settings[name] = conn.exec_driver_sql(f"SHOW {name}").scalar()
            return settings
    finally:
        db.dispose()


# ----------------------------------------------------------------------------- measuring


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _round(sides: Sequence[Side], size: int, chunk: int, number: int) -> dict[str, float]:
    """One timed round: fresh entities for every side, run in alternating chunks.

    Chunk by chunk the sides take turns (and the first turn alternates), so that a burst of
    load from elsewhere on the machine slows both sides alike instead of one of them.
    Returns the seconds each side spent in its runs.
    """
    prepared = {side.name: side.prepare(size) for side in sides}
    spent = dict.fromkeys(prepared, 0.0)
    gc.collect()
    for index, start in enumerate(range(0, size, chunk)):
        order = sides if (number + index) % 2 == 0 else sides[::-1]
        for side in order:
            spent[side.name] += side.run(prepared[side.name][start : start + chunk])
    for side in sides:
        side.check(prepared[side.name])
    return spent


def _profile(side: EngineSide, size: int, database: str) -> None:
    items = side.prepare(size)
    profiler = cProfile.Profile()
    profiler.enable()
    side.run(items)
    profiler.disable()
    _log(f"\n===== cProfile of one engine run on {database} ({2 * size} fires) =====")
    stats = pstats.Stats(profiler, stream=sys.stderr)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)


def bench_database(
    database: str, url: str, *, size: int, rounds: int, chunk: int, profile: bool
) -> dict[str, Any]:
    """Alternate baseline and engine runs on the database at ``url``; return the figures."""
    transitions = len(STEPS) * size
    engine_side = EngineSide(url)
    baseline_side = BaselineSide(url)
    sides: tuple[Side, Side] = (baseline_side, engine_side)
    try:
        # Warm-up, not reported: pools, statement caches, the database's page cache.
        _round(sides, min(size, WARMUP_SIZE), chunk, 0)
        seconds: dict[str, list[float]] = {"engine": [], "baseline": []}
        for number in range(rounds):
            spent = _round(sides, size, chunk, number)
            for name, value in spent.items():
                seconds[name].append(value)
            _log(
                f"{database} round {number + 1}/{rounds}: "
                f"engine {transitions / spent['engine']:.0f}/s, "
                f"baseline {transitions / spent['baseline']:.0f}/s"
            )
        if profile:
            _profile(engine_side, size, database)
    finally:
        engine_side.close()
        baseline_side.close()
    engine_rates = [transitions / s for s in seconds["engine"]]
    baseline_rates = [transitions / s for s in seconds["baseline"]]
    engine_rate = statistics.median(engine_rates)
    baseline_rate = statistics.median(baseline_rates)
    ratio = engine_rate / baseline_rate
    # A round's two sides ran interleaved; their ratio shrugs off load drifting between rounds.
    round_ratios = [e / b for e, b in zip(engine_rates, baseline_rates, strict=True)]
    return {
        "status": "ok",
        "engine_rate": round(engine_rate, 1),
        "baseline_rate": round(baseline_rate, 1),
        "ratio": round(ratio, 3),
        "target": TARGET_RATIO,
        "target_met": ratio >= TARGET_RATIO,
        "engine_rates": [round(r, 1) for r in engine_rates],
        "baseline_rates": [round(r, 1) for r in baseline_rates],
        "round_ratios": [round(r, 3) for r in round_ratios],
        "median_round_ratio": round(statistics.median(round_ratios), 3),
        "engine_seconds": [round(s, 4) for s in seconds["engine"]],
        "baseline_seconds": [round(s, 4) for s in seconds["baseline"]],
        "settings": database_settings(url),
    }


# ----------------------------------------------------------------------------- report


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # pragma: no cover - not on every platform
        return None


def environment(load_before: list[float] | None) -> dict[str, Any]:
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "pdca": pdca.__version__,
        "sqlalchemy": sa.__version__,
        "sqlite": sqlite3.sqlite_version,
        "psycopg": _version("psycopg"),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        # Other work on the machine skews both sides; a high load means noisy figures.
        "load_average_before": load_before,
        "load_average_after": _load(),
    }


def save(report: dict[str, Any], folder: Path, stamp: str) -> Path:
    """Write ``report`` to ``folder/fire-<stamp>.json`` (never over an existing file)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"fire-{stamp}.json"
    number = 1
    while path.exists():
        number += 1
        path = folder / f"fire-{stamp}-{number}.json"
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", "utf-8")
    os.replace(temporary, path)
    return path


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_fire",
        description="Transitions per second through pdca.Engine.fire against a raw "
        "SQLAlchemy Core baseline (one UPDATE and one INSERT per transaction).",
    )
    parser.add_argument(
        "--size",
        type=_positive,
        default=DEFAULT_SIZE,
        help=f"measures per round; each is fired twice (default {DEFAULT_SIZE})",
    )
    parser.add_argument(
        "--rounds",
        type=_positive,
        default=DEFAULT_ROUNDS,
        help=f"timed rounds per database; the median is reported (default {DEFAULT_ROUNDS})",
    )
    parser.add_argument(
        "--chunk",
        type=_positive,
        default=DEFAULT_CHUNK,
        help="measures per turn: within a round, baseline and engine take turns on chunks "
        f"of this many measures (default {DEFAULT_CHUNK})",
    )
    parser.add_argument(
        "--postgres-url",
        default=None,
        help=f"a PostgreSQL server URL (default: ${PG_ENV}); a database pdca_bench_* is "
        "created on it and dropped afterwards",
    )
    parser.add_argument(
        "--db",
        choices=("all", *DATABASES),
        default="all",
        help="which databases to measure (default all; PostgreSQL needs a URL)",
    )
    parser.add_argument(
        "--no-save", action="store_true", help="do not write the JSON to --results-dir"
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS_DIR,
        help="where fire-<UTC timestamp>.json goes (default benchmarks/results)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after measuring, run the engine once more under cProfile; stats go to stderr",
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.postgres_url is None:
        args.postgres_url = os.environ.get(PG_ENV) or None
    if args.db == "postgresql" and args.postgres_url is None:
        parser.error(f"--db postgresql needs --postgres-url or ${PG_ENV}")
    return args


def _redacted(argv: Sequence[str]) -> list[str]:
    """``argv`` without the password of a ``--postgres-url`` (the report may be shared)."""
    result: list[str] = []
    for arg in argv:
        if arg.startswith("--postgres-url="):
            arg = "--postgres-url=" + _hide_password(arg.partition("=")[2])
        elif result and result[-1] == "--postgres-url":
            arg = _hide_password(arg)
        result.append(arg)
    return result


def _hide_password(url: str) -> str:
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "***"


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every database ``args`` asks for; return the report."""
    started = datetime.now(UTC)
    load_before = _load()
    results: dict[str, dict[str, Any]] = {}
    for database in DATABASES:
        if args.db not in ("all", database):
            results[database] = {"status": "skipped", "note": f"not requested (--db {args.db})"}
            continue
        if database == "postgresql" and args.postgres_url is None:
            note = f"skipped: no --postgres-url given and ${PG_ENV} is not set"
            _log(f"postgresql {note}")
            results[database] = {"status": "skipped", "note": note}
            continue
        _log(f"{database}: {args.rounds} rounds of {len(STEPS) * args.size} transitions per side")
        databases = (
            sqlite_database() if database == "sqlite" else postgres_database(args.postgres_url)
        )
        try:
            with databases as url:
                results[database] = bench_database(
                    database,
                    url,
                    size=args.size,
                    rounds=args.rounds,
                    chunk=args.chunk,
                    profile=args.profile,
                )
        except (sa.exc.SQLAlchemyError, pdca.PdcaError, RuntimeError) as exc:
            # Still one JSON report (and a non-zero exit status), with the other database.
            _log(f"{database} failed:\n{traceback.format_exc()}")
            results[database] = {"status": "error", "note": f"{type(exc).__name__}: {exc}"}
    measured = [r for r in results.values() if r["status"] == "ok"]
    return {
        "benchmark": "pdca.Engine.fire",
        "started_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": round((datetime.now(UTC) - started).total_seconds(), 1),
        "command": ["python", "-m", "benchmarks.bench_fire", *_redacted(args.argv)],
        "size": args.size,
        "rounds": args.rounds,
        "transitions_per_round": len(STEPS) * args.size,
        "unit": "transitions/s",
        "chunk": args.chunk,
        "statistic": "median over rounds of each side's rate; within a round baseline and "
        "engine take turns on chunks of measures (who goes first alternates), after one "
        "untimed warm-up round",
        "engine": "pdca.Engine.fire(ref, trigger, actor='staff'): commercialise then "
        "complete on every measure, one transaction per fire",
        "baseline": "SQLAlchemy Core, one transaction per transition: UPDATE bench_entities "
        "by primary key + INSERT bench_audit (primary keys only, no hashing, no reads)",
        "target_ratio": TARGET_RATIO,
        "targets_met": bool(measured) and all(r["target_met"] for r in measured),
        "databases": results,
        "environment": environment(load_before),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    failed = any(r["status"] == "error" for r in report["databases"].values())
    if not args.no_save:
        stamp = datetime.strptime(report["started_at"], "%Y-%m-%dT%H:%M:%SZ")
        path = save(report, args.results_dir, stamp.strftime("%Y%m%dT%H%M%SZ"))
        _log(f"saved {path}")
    print(json.dumps(report, ensure_ascii=False))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
