"""Performance at national scale: every figure next to a baseline measured in the same run.

One command builds a national database (``benchmarks.national``: 1,741 municipalities, 200
measures each, ten fiscal years played through the engine's bulk paths) on SQLite and on
PostgreSQL, and measures on each, against a baseline timed in the same run on the same
machine (absolute times mean little on a shared machine; ratios do):

==========================  ==============================================  ==============
figure                      baseline (same run)                             target
==========================  ==============================================  ==============
fire, one client            raw Core UPDATE + audit INSERT per transaction  >= 0.5x rate
fire, 4 processes (PG)      the same baseline from 4 processes              >= 0.5x rate
status of a fiscal year     one hand-written aggregate SQL query            < 1 s, >= 0.3x
``pdca status --json``      the same query from a fresh ``python``          < 1 s, >= 0.3x
the 1 April rollover        executemany of the rows it wrote                >= 0.3x, < 500 MB
audit verify                SHA-256 over the same bytes in memory           >= 0.2x
``pdca --help`` cold        ``python -c pass``                              <= 10x
``pdca status`` cold        ``python -c "import sqlalchemy"``               <= 1.5x
``pdca simulate`` 10 FYs    (18 members x 100 measures)                     < 10 s
==========================  ==============================================  ==============

A ratio is always *engine speed / baseline speed* (so higher is better; a time ratio is
inverted to match), a time is the median of the repetitions. Memory is the peak resident
set size of the process that did the work (``getrusage``), never an estimate. Progress goes
to stderr; exactly one JSON object goes to stdout and to
``benchmarks/results/national-<size>-<UTC timestamp>.json`` (unless ``--no-save``)::

    .venv/bin/python -m benchmarks.bench_national --postgres-url postgresql://postgres@127.0.0.1/test
    .venv/bin/python -m benchmarks.bench_national --size tiny --db sqlite --no-save
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa

from benchmarks import bench_fire, national

#: name: (municipalities, measures per municipality, fiscal years)
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (3, 4, 2),
    "small": (18, 200, 10),
    "medium": (174, 200, 10),
    "national": (national.NATIONAL, 200, 10),
}
DATABASES = ("sqlite", "postgresql")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
PG_ENV = "PDCA_TEST_POSTGRES_URL"
TARGETS = {
    "fire_ratio": 0.5,
    "fire_4_processes_ratio": 0.5,
    "status_seconds": 1.0,
    "status_ratio": 0.3,
    "rollover_ratio": 0.3,
    "rollover_peak_rss_mb": 500.0,
    "verify_ratio": 0.2,
    "help_times_python": 10.0,
    "status_times_import_sqlalchemy": 1.5,
    "simulate_seconds": 10.0,
}


def _log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def _python() -> str:
    return sys.executable


def _pdca() -> list[str]:
    return [_python(), "-m", "pdca"]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _timed_run(argv: Sequence[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


def _child(args: Sequence[str]) -> dict[str, Any]:
    """Run a measurement in a fresh process of its own (its memory is its own) and return
    the JSON object it prints."""
    done = subprocess.run([_python(), "-m", "benchmarks.bench_national", *args],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {done.stderr[-3000:]}")
    result = json.loads(done.stdout)
    assert isinstance(result, dict)
    return result


# ----------------------------------------------------------------------------- status

#: The hand-written baseline of a fiscal year's status: every member's cycle and overdue
#: flag, the region's cycle, and the measures by state; one query.
STATUS_SQL = """
SELECT 'member' AS kind, m.code AS key, e.state AS state,
       CASE WHEN e.overdue_since IS NULL THEN 0 ELSE 1 END AS n
  FROM members m LEFT JOIN entities e ON e.ref = 'cycle:' || m.code || ':' || :fy
 WHERE m.joined <= :fyn AND (m."left" IS NULL OR m."left" > :fyn)
UNION ALL
SELECT 'region', ref, state, CASE WHEN overdue_since IS NULL THEN 0 ELSE 1 END
  FROM entities WHERE ref = 'cycle:region:' || :fy
UNION ALL
SELECT 'measures', state, state, count(*) FROM entities WHERE workflow = 'measure'
 GROUP BY state
"""


def _status_baseline(db: sa.Engine, fy: int) -> int:
    with db.connect() as conn:
        return len(conn.execute(sa.text(STATUS_SQL), {"fy": str(fy), "fyn": fy}).all())


def measure_status(url: str, fy: int, repeat: int) -> dict[str, Any]:
    import pdca

    db = sa.create_engine(bench_fire.sa_url(url))
    engine = pdca.Engine.open(url)
    try:
        engine.status(fy)  # warm-up of both: the plan is read once per process
        _status_baseline(db, fy)
        lib, base = [], []
        for _ in range(repeat):
            start = time.perf_counter()
            result = engine.status(fy)
            lib.append(time.perf_counter() - start)
            start = time.perf_counter()
            rows = _status_baseline(db, fy)
            base.append(time.perf_counter() - start)
        members = len(result["municipalities"])
    finally:
        engine.close()
        db.dispose()
    # The same query from a fresh process that imports only SQLAlchemy.
    target = bench_fire.sa_url(url).render_as_string(hide_password=False)
    query = (f"import sqlalchemy as sa\n"
             f"db = sa.create_engine({target!r})\n"
             f"with db.connect() as c:\n"
             f"    print(len(c.execute(sa.text({STATUS_SQL!r}), "
             f"{{'fy': '{fy}', 'fyn': {fy}}}).all()))\n")
    cli, cli_base = [], []
    env = {**os.environ, "PYTHONPATH": str(bench_fire.REPO_ROOT)}
    for _ in range(repeat):
        cli.append(_timed_run([*_pdca(), "--db", url, "status", "--fy", str(fy),
                               "--json"], env))
        cli_base.append(_timed_run([_python(), "-c", query], env))
    lib_s, base_s = statistics.median(lib), statistics.median(base)
    cli_s, cli_base_s = statistics.median(cli), statistics.median(cli_base)
    return {
        "fiscal_year": fy, "members": members, "baseline_rows": rows,
        "library_seconds": round(lib_s, 4), "baseline_seconds": round(base_s, 4),
        "library_ratio": round(base_s / lib_s, 3),
        "cli_seconds": round(cli_s, 4), "cli_baseline_seconds": round(cli_base_s, 4),
        "cli_ratio": round(cli_base_s / cli_s, 3),
        "targets_met": lib_s < TARGETS["status_seconds"] and cli_s < TARGETS["status_seconds"]
        and base_s / lib_s >= TARGETS["status_ratio"]
        and cli_base_s / cli_s >= TARGETS["status_ratio"],
    }


# ----------------------------------------------------------------------------- rollover


def rollover_child(url: str, at: str) -> dict[str, Any]:
    """(In a process of its own.) The tick of 1 April, as the daemon makes it: the engine
    open and the plan's schedule loaded first (a daemon has them), then the due firings
    carried out with their notices queued (``deliver=False``), then the notices sent, each
    timed; what it wrote; the peak memory of the process."""
    import pdca

    moment = datetime.fromisoformat(at)
    engine = pdca.Engine.open(url)
    try:
        started = time.perf_counter()
        engine.due(moment)  # the plan read and its schedule computed, as a daemon has them
        warm = time.perf_counter() - started
        with engine._db.connect() as conn:
            before = int(conn.execute(sa.text("SELECT coalesce(max(seq), 0) FROM audit_log"))
                         .scalar_one())
            outbox_before = int(conn.execute(sa.text("SELECT coalesce(max(id), 0) FROM outbox"))
                                .scalar_one())
        start = time.perf_counter()
        report = engine.tick(moment, deliver=False)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        sent, _ = engine.deliver_notifications()
        delivery = time.perf_counter() - start
        with engine._db.connect() as conn:
            entries = int(conn.execute(sa.text("SELECT count(*) FROM audit_log WHERE seq > :s"),
                                       {"s": before}).scalar_one())
    finally:
        engine.close()
    return {"seconds": seconds, "firings": len(report.firings), "entries": entries,
            "seq_before": before, "outbox_before": outbox_before,
            "keys": [f.key for f in report.firings], "load_seconds": warm,
            "notices": sent, "delivery_seconds": delivery,
            "peak_rss_mb": round(_peak_rss_mb(), 1)}


def rollover_baseline_child(url: str, seq_before: int, outbox_before: int = 0,
                            keys_file: str | None = None) -> dict[str, Any]:
    """(In a process of its own.) executemany of the rows the rollover wrote: its audit
    entries, the entity rows it created or moved, the notices it queued and the due rows it
    marked done, into copies of those tables with no trigger and no index beyond the
    primary key, in one transaction."""
    from pdca.storage.models import AuditLog, DueFiring, Entity, Outbox

    db = sa.create_engine(bench_fire.sa_url(url))
    log, entity, outbox, due = (cast(sa.Table, m.__table__)
                                for m in (AuditLog, Entity, Outbox, DueFiring))
    meta = sa.MetaData()
    copies = {
        source.name: sa.Table(f"rollover_{source.name}", meta, *(
            sa.Column(c.name, c.type, primary_key=c.primary_key, autoincrement=False,
                      nullable=c.nullable) for c in source.c))
        for source in (log, entity, outbox, due)
    }
    keys = json.loads(Path(keys_file).read_text()) if keys_file else []

    def by_chunks(table: Any, column: Any, values: list[Any]) -> list[dict[str, Any]]:
        return [dict(r._mapping) for i in range(0, len(values), 500)
                for r in conn.execute(sa.select(table).where(column.in_(values[i:i + 500])))]

    try:
        meta.drop_all(db)
        meta.create_all(db)
        with db.connect() as conn:  # read through the models: values as the engine wrote
            rows = {"audit_log": [dict(r._mapping) for r in conn.execute(
                sa.select(log).where(log.c.seq > seq_before).order_by(log.c.seq))]}
            rows["entities"] = by_chunks(entity, entity.c.ref,
                                         sorted({e["ref"] for e in rows["audit_log"]}))
            rows["outbox"] = [dict(r._mapping) for r in conn.execute(
                sa.select(outbox).where(outbox.c.id > outbox_before))]
            rows["due_firings"] = by_chunks(due, due.c.key, keys)
        start = time.perf_counter()
        with db.begin() as conn:
            for name, values in rows.items():
                if values:
                    conn.execute(copies[name].insert(), values)
        seconds = time.perf_counter() - start
        meta.drop_all(db)
    finally:
        db.dispose()
    return {"seconds": seconds, "audit_rows": len(rows["audit_log"]),
            "entity_rows": len(rows["entities"]), "notice_rows": len(rows["outbox"]),
            "due_rows": len(rows["due_firings"]), "peak_rss_mb": round(_peak_rss_mb(), 1)}


def _size_mb(url: str) -> float:
    """The size of the database (file, or PostgreSQL's own count), in MB."""
    if url.startswith("sqlite"):
        path = Path(url.split("///", 1)[1])
        return round(sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 1e6, 1)
    db = sa.create_engine(bench_fire.sa_url(url))
    try:
        with db.connect() as conn:
            size = conn.execute(sa.text("SELECT pg_database_size(current_database())"))
            return round(int(size.scalar_one()) / 1e6, 1)
    finally:
        db.dispose()


# ----------------------------------------------------------------------------- fire x 4


def _fire_worker(url: str, mode: str, items: list[Any], barrier: Any, out: Any) -> None:
    if mode == "engine":
        import pdca

        engine = pdca.Engine.open(url)
        engine.fire(items[0], "commercialise", actor=bench_fire.STAFF)  # warm-up, untimed
        engine.fire(items[0], "complete", actor=bench_fire.STAFF)
        barrier.wait()
        start = time.perf_counter()
        for trigger, _, _ in bench_fire.STEPS:
            for ref in items[1:]:
                engine.fire(ref, trigger, actor=bench_fire.STAFF)
        out.put(time.perf_counter() - start)
        engine.close()
    else:
        side = bench_fire.BaselineSide.__new__(bench_fire.BaselineSide)
        bench_fire.BaselineSide.__init__(side, url)
        side.run(items[:1])
        barrier.wait()
        out.put(side.run(items[1:]))
        side.close()


def measure_fire_processes(url: str, *, processes: int, per_process: int, rounds: int
                           ) -> dict[str, Any]:
    """Engine and baseline each from ``processes`` processes at once (different entities),
    alternating, ``rounds`` times; rate = all transitions / the slowest process's time."""
    engine_side = bench_fire.EngineSide(url)
    baseline_side = bench_fire.BaselineSide(url)
    context = multiprocessing.get_context("spawn")
    rates: dict[str, list[float]] = {"engine": [], "baseline": []}
    try:
        for number in range(rounds):
            order = ("engine", "baseline") if number % 2 else ("baseline", "engine")
            for mode in order:
                side: Any = engine_side if mode == "engine" else baseline_side
                shares = [side.prepare(per_process + 1) for _ in range(processes)]
                barrier = context.Barrier(processes)
                out = context.Queue()
                workers = [context.Process(target=_fire_worker,
                                           args=(url, mode, share, barrier, out))
                           for share in shares]
                for w in workers:
                    w.start()
                times = [out.get(timeout=600) for _ in workers]
                for w in workers:
                    w.join(60)
                    if w.exitcode != 0:
                        raise RuntimeError(f"a {mode} worker failed ({w.exitcode})")
                transitions = processes * per_process * len(bench_fire.STEPS)
                rates[mode].append(transitions / max(times))
                _log(f"fire x{processes} round {number + 1}/{rounds} {mode}: "
                     f"{rates[mode][-1]:.0f}/s")
    finally:
        engine_side.close()
        baseline_side.close()
    engine_rate = statistics.median(rates["engine"])
    baseline_rate = statistics.median(rates["baseline"])
    return {"processes": processes, "per_process": per_process,
            "engine_rate": round(engine_rate, 1), "baseline_rate": round(baseline_rate, 1),
            "ratio": round(engine_rate / baseline_rate, 3),
            "engine_rates": [round(r, 1) for r in rates["engine"]],
            "baseline_rates": [round(r, 1) for r in rates["baseline"]],
            "target_met": engine_rate / baseline_rate >= TARGETS["fire_4_processes_ratio"]}


# ----------------------------------------------------------------------------- cold start


def measure_cold_start(url: str, fy: int, repeat: int) -> dict[str, Any]:
    """Interleaved repetitions of four fresh processes; medians."""
    env = {**os.environ}
    runs: dict[str, list[float]] = {"python_pass": [], "pdca_help": [],
                                    "import_sqlalchemy": [], "pdca_status": []}
    commands = {
        "python_pass": [_python(), "-c", "pass"],
        "pdca_help": [*_pdca(), "--help"],
        "import_sqlalchemy": [_python(), "-c", "import sqlalchemy"],
        "pdca_status": [*_pdca(), "--db", url, "status", "--fy", str(fy), "--json"],
    }
    for argv in commands.values():  # warm the file cache, untimed
        _timed_run(argv, env)
    for _ in range(repeat):
        for name, argv in commands.items():
            runs[name].append(_timed_run(argv, env))
    med = {k: statistics.median(v) for k, v in runs.items()}
    help_x = med["pdca_help"] / med["python_pass"]
    status_x = med["pdca_status"] / med["import_sqlalchemy"]
    return {
        "seconds": {k: round(v, 4) for k, v in med.items()},
        "help_times_python": round(help_x, 2),
        "status_times_import_sqlalchemy": round(status_x, 2),
        "targets_met": help_x <= TARGETS["help_times_python"]
        and status_x <= TARGETS["status_times_import_sqlalchemy"],
    }


# ----------------------------------------------------------------------------- simulate


def measure_simulate(url: str, *, members: int = 18, measures: int = 100) -> dict[str, Any]:
    """``pdca simulate`` over ten fiscal years of the Kumamoto plan with ``measures``
    measures per member (created untimed), as the CLI runs it."""
    import pdca

    engine = pdca.Engine.create_simulation(url, start=datetime(2021, 3, 1, tzinfo=UTC))
    try:
        engine.bootstrap_admin("admin")
        plan = engine.load_plan("kumamoto", actor="admin")
        codes = [m.code for m in plan.members][:members]
        items = [(f"measure:S{c}-{k:03d}", {"municipalities": [c], "title_ja": f"施策{k}",
                                            "kind": "study"})
                 for c in codes for k in range(measures)]
        engine.create_many(items, actor="admin")
    finally:
        engine.close()
    seconds = _timed_run([*_pdca(), "--db", url, "simulate", "--until", "2031-03-31"])
    return {"members": len(codes), "measures": len(items), "fiscal_years": 10,
            "seconds": round(seconds, 3),
            "target_met": seconds < TARGETS["simulate_seconds"]}


# ----------------------------------------------------------------------------- one database


@contextmanager
def fresh_database(kind: str, server_url: str | None) -> Iterator[str]:
    if kind == "sqlite":
        with bench_fire.sqlite_database() as url:
            yield url
    else:
        assert server_url is not None
        with bench_fire.postgres_database(server_url) as url:
            yield url.replace("postgresql://", "postgresql+psycopg://", 1) \
                if url.startswith("postgresql://") else url


def bench_database(kind: str, size: str, server_url: str | None, *, repeat: int,
                   fire_size: int, fire_rounds: int) -> dict[str, Any]:
    from benchmarks import bench_verify

    municipalities, measures, years = SIZES[size]
    out: dict[str, Any] = {}
    with fresh_database(kind, server_url) as url:
        rollover: dict[str, Any] = {}

        def at_rollover(at: datetime) -> None:
            _log(f"{kind}: the 1 April rollover of FY{at.year}")
            rollover["engine"] = engine = _child(["_rollover", url, at.isoformat()])
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as keys:
                json.dump(engine.pop("keys"), keys)
            try:
                rollover["baseline"] = _child(["_rollover_baseline", url,
                                               str(engine["seq_before"]),
                                               str(engine["outbox_before"]), keys.name])
            finally:
                os.unlink(keys.name)

        _log(f"{kind}: generating {municipalities} x {measures} x {years}")
        # The generator alone writes without waiting for each commit to reach the disk
        # (PostgreSQL's synchronous_commit=off, for its session only); every figure below
        # is measured with the server's settings.
        gen_url = url if kind == "sqlite" else \
            f"{url}{'&' if '?' in url else '?'}options=-c%20synchronous_commit%3Doff"
        generated = national.generate(gen_url, municipalities=municipalities, measures=measures,
                                      years=years, say=lambda t: _log(f"{kind}: {t}"),
                                      rollover=at_rollover)
        out["generated"] = generated.as_dict() | {"url": kind, "database_mb": _size_mb(url)}
        if rollover:
            e, b = rollover["engine"], rollover["baseline"]
            ratio = b["seconds"] / e["seconds"]
            out["rollover"] = {
                "fiscal_year": national.FIRST_FY + years - 1,
                "engine_seconds": round(e["seconds"], 4),
                "baseline_seconds": round(b["seconds"], 4), "ratio": round(ratio, 3),
                "firings": e["firings"], "audit_entries": e["entries"],
                "baseline_rows": b["audit_rows"] + b["entity_rows"] + b["notice_rows"]
                + b["due_rows"],
                "schedule_load_seconds": round(e["load_seconds"], 4),
                "notices": e["notices"], "delivery_seconds": round(e["delivery_seconds"], 4),
                "peak_rss_mb": e["peak_rss_mb"],
                "targets_met": ratio >= TARGETS["rollover_ratio"]
                and e["peak_rss_mb"] < TARGETS["rollover_peak_rss_mb"],
            }
        fy = national.FIRST_FY + years - 1
        _log(f"{kind}: status of FY{fy}")
        out["status"] = measure_status(url, fy, repeat)
        _log(f"{kind}: audit verify")
        out["verify"] = bench_verify.verify_figures(url, repeat=max(1, repeat // 2))
        _log(f"{kind}: cold start")
        out["cold_start"] = measure_cold_start(url, fy, repeat)
    _log(f"{kind}: fire, one client")
    with fresh_database(kind, server_url) as url:
        out["fire"] = bench_fire.bench_database(kind, url, size=fire_size, rounds=fire_rounds,
                                                chunk=bench_fire.DEFAULT_CHUNK, profile=False)
    if kind == "postgresql":
        _log(f"{kind}: fire, 4 processes")
        with fresh_database(kind, server_url) as url:
            out["fire_4_processes"] = measure_fire_processes(
                url, processes=4, per_process=fire_size, rounds=max(3, fire_rounds // 2))
    _log(f"{kind}: simulate")
    with fresh_database(kind, server_url) as url:
        out["simulate"] = measure_simulate(url)
    return out


def summary(databases: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every target, its value and whether it is met, one line each."""
    rows = []

    def add(db: str, figure: str, value: float, target: float, higher: bool) -> None:
        rows.append({"database": db, "figure": figure, "value": value,
                     "target": (">= " if higher else "< " if "seconds" in figure
                                else "<= ") + str(target),
                     "met": value >= target if higher else value <= target})

    for db, d in databases.items():
        if "skipped" in d:
            continue
        add(db, "fire_ratio", d["fire"]["ratio"], TARGETS["fire_ratio"], True)
        if "fire_4_processes" in d:
            add(db, "fire_4_processes_ratio", d["fire_4_processes"]["ratio"],
                TARGETS["fire_4_processes_ratio"], True)
        s = d["status"]
        add(db, "status_library_seconds", s["library_seconds"], TARGETS["status_seconds"], False)
        add(db, "status_library_ratio", s["library_ratio"], TARGETS["status_ratio"], True)
        add(db, "status_cli_seconds", s["cli_seconds"], TARGETS["status_seconds"], False)
        add(db, "status_cli_ratio", s["cli_ratio"], TARGETS["status_ratio"], True)
        if "rollover" in d:
            add(db, "rollover_ratio", d["rollover"]["ratio"], TARGETS["rollover_ratio"], True)
            add(db, "rollover_peak_rss_mb", d["rollover"]["peak_rss_mb"],
                TARGETS["rollover_peak_rss_mb"], False)
        add(db, "verify_ratio", d["verify"]["ratio"], TARGETS["verify_ratio"], True)
        c = d["cold_start"]
        add(db, "help_times_python", c["help_times_python"], TARGETS["help_times_python"], False)
        add(db, "status_times_import_sqlalchemy", c["status_times_import_sqlalchemy"],
            TARGETS["status_times_import_sqlalchemy"], False)
        add(db, "simulate_seconds", d["simulate"]["seconds"], TARGETS["simulate_seconds"], False)
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_national",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default="national",
                        help="national: 1,741 x 200 x 10 (default); medium: 174; small: 18; "
                             "tiny: a smoke run")
    parser.add_argument("--db", choices=[*DATABASES, "both"], default="both")
    parser.add_argument("--postgres-url", default=os.environ.get(PG_ENV),
                        help=f"a PostgreSQL server to create a scratch database on "
                             f"(default ${PG_ENV})")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions of each timing")
    parser.add_argument("--fire-size", type=int, default=200)
    parser.add_argument("--fire-rounds", type=int, default=5)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--no-save", action="store_true")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = bench_fire._load()
    started = datetime.now(UTC)
    wanted = DATABASES if args.db == "both" else (args.db,)
    databases: dict[str, dict[str, Any]] = {}
    for kind in wanted:
        if kind == "postgresql" and not args.postgres_url:
            databases[kind] = {"skipped": f"no --postgres-url and no ${PG_ENV}"}
            continue
        start = time.perf_counter()
        databases[kind] = bench_database(kind, args.size, args.postgres_url,
                                         repeat=args.repeat, fire_size=args.fire_size,
                                         fire_rounds=args.fire_rounds)
        databases[kind]["seconds"] = round(time.perf_counter() - start, 1)
    targets = summary(databases)
    municipalities, measures, years = SIZES[args.size]
    return {
        "benchmark": "national",
        "started_at": started.isoformat(),
        "command": ["python", "-m", "benchmarks.bench_national",
                    *bench_fire._redacted(sys.argv[1:])],
        "size": {"name": args.size, "municipalities": municipalities,
                 "measures_per_municipality": measures, "fiscal_years": years},
        "targets": targets,
        "targets_met": all(t["met"] for t in targets) if targets else None,
        "databases": databases,
        "environment": bench_fire.environment(load_before),
    }


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw and raw[0] == "_rollover":
        print(json.dumps(rollover_child(raw[1], raw[2])))
        return 0
    if raw and raw[0] == "_rollover_baseline":
        print(json.dumps(rollover_baseline_child(raw[1], int(raw[2]), int(raw[3]), raw[4])))
        return 0
    args = parse_args(raw)
    report = run(args)
    text = json.dumps(report, indent=2, ensure_ascii=False)
    if not args.no_save:
        args.results_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = args.results_dir / f"national-{args.size}-{stamp}.json"
        with tempfile.NamedTemporaryFile("w", dir=args.results_dir, delete=False,
                                         suffix=".tmp", encoding="utf-8") as tmp:
            tmp.write(text + "\n")
        os.replace(tmp.name, path)
        _log(f"written to {path}")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

