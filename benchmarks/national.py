"""A national-scale database, played through the engine's own bulk paths.

Every Japanese municipality (1,741 of them, with valid 全国地方公共団体コード) managing one
plan together, ``--measures`` measures each, and ``--years`` fiscal years of the full
yearly cycle: the scheduler opens every year on 1 April and moves every cycle on; each
municipality's staff confirm the status of their measures, submit emissions, evaluate every
active measure and report internally; the secretariat aggregates, holds the liaison council
and the advisory committee, and publishes; every cycle is closed.

Measures arrive in waves: each fiscal year brings ``measures / years`` new measures per
municipality, half of them study projects and half implementation projects. The next
April the study projects are commercialised (事業化) and every measure of the wave is
completed, so two waves are active (and evaluated) in the check of any year.

Everything goes through :class:`pdca.Engine` (``create_many``, ``fire_many``,
``evaluate_many``, ``tick``); nothing is written to the database by hand, so the audit log
verifies. A database holds one plan: the national database is one plan of every member
(see ``docs/performance.md``).

Run on its own (prints one JSON object with counts and timings)::

    .venv/bin/python -m benchmarks.national --db sqlite:///national.db
    .venv/bin/python -m benchmarks.national --municipalities 87 --measures 20 --years 3
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from pdca import Engine
from pdca.calendar import start_of_day
from pdca.types import municipality_check_digit

#: The number of municipalities of Japan (市町村 and 特別区, 2026).
NATIONAL = 1741
FIRST_FY = 2021
ADMIN, SECRETARIAT, CLERK = "admin", "secretariat", "clerk"
#: How many items one bulk call carries (one transaction each).
CHUNK = 5000


def municipality_codes(count: int) -> list[str]:
    """``count`` distinct, valid municipality codes: prefectures 01-47, then numbers
    within each, with their check digits."""
    codes: list[str] = []
    per_prefecture = -(-count // 47)
    for number in range(per_prefecture):
        for prefecture in range(1, 48):
            if len(codes) == count:
                break
            first_five = f"{prefecture:02d}{201 + number:03d}"
            codes.append(f"{first_five}{municipality_check_digit(first_five)}")
    return sorted(codes)


def plan_text(codes: Sequence[str]) -> str:
    """The bundled Kumamoto plan with its members replaced by ``codes``."""
    source = resources.files("pdca.plans").joinpath("kumamoto.toml").read_text("utf-8")
    body = re.sub(r"\[\[members\]\]\n(?:[^\[\n][^\n]*\n|\n)*", "", source)
    body = body.replace('id = "kumamoto"', 'id = "national"', 1)
    members = "".join(
        f'[[members]]\ncode = "{c}"\nname_ja = "自治体{c}"\nname_en = "Municipality {c}"\n'
        f"joined = 2016\n\n"
        for c in codes
    )
    return body.rstrip("\n") + "\n\n" + members


def _kind(ref: str) -> str:
    return "study" if int(ref[-1]) % 2 else "implementation"


def counts(url: str) -> tuple[int, int]:
    """How many audit entries and entities the database at ``url`` holds (read only)."""
    from pdca.storage import database

    db = database.create_engine(url)
    try:
        with db.connect() as conn:
            entries = conn.execute(sa.text("SELECT count(*) FROM audit_log")).scalar_one()
            entities = conn.execute(sa.text("SELECT count(*) FROM entities")).scalar_one()
    finally:
        db.dispose()
    return int(entries), int(entities)


def _analyze(engine: Engine) -> None:
    """Refresh PostgreSQL's planner statistics once a year, as autovacuum does on a server
    that runs it (a test server may not: without statistics, lookups by a list of
    references become scans of the whole table as it grows)."""
    if engine.dialect != "postgresql":
        return
    with engine._db.connect() as conn:
        conn.execute(sa.text("ANALYZE"))
        conn.commit()


def _moment(y: int, m: int, d: int) -> datetime:
    return start_of_day(date(y, m, d)).astimezone(UTC)


@dataclass
class Generated:
    """What the generator built and how long each part took (seconds)."""

    url: str
    municipalities: int
    measures_per_municipality: int
    years: int
    measures: int = 0
    audit_entries: int = 0
    entities: int = 0
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Timer:
    def __init__(self, phases: dict[str, float]) -> None:
        self.phases = phases

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - start


def _chunks(items: Sequence[Any], size: int = CHUNK) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def generate(
    url: str,
    *,
    municipalities: int = NATIONAL,
    measures: int = 200,
    years: int = 10,
    say: Callable[[str], None] = lambda text: None,
    rollover: Callable[[datetime], None] | None = None,
) -> Generated:
    """Build the database at ``url`` (which must be empty) and return what it holds.

    ``rollover(at)``, if given, is called at the last 1 April that opens a fiscal year,
    instead of the generator's own tick of that moment (the benchmark times it there, at
    full size, in a process of its own)."""
    if not 1 <= years <= 10:
        raise ValueError("years must be 1-10 (the plan runs FY2021-FY2030)")
    per_year = max(1, measures // years)
    out = Generated(url=url, municipalities=municipalities,
                    measures_per_municipality=per_year * years, years=years)
    timer = _Timer(out.phases)
    started = time.perf_counter()
    codes = municipality_codes(municipalities)
    staff = {c: f"staff-{c}" for c in codes}
    engine = Engine.create_simulation(url, start=_moment(FIRST_FY, 3, 1))
    try:
        def setup() -> None:
            engine.bootstrap_admin(ADMIN)
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "national.toml"
                path.write_text(plan_text(codes), encoding="utf-8")
                engine.load_plan(path, actor=ADMIN)
            people = [(f"person:{SECRETARIAT}", {"role": "secretariat"}),
                      (f"person:{CLERK}", {"role": "clerk"})]
            people += [(f"person:{staff[c]}", {"role": "staff", "municipality": c})
                       for c in codes]
            for chunk in _chunks(people):
                engine.create_many(chunk, actor=ADMIN)

        with timer("setup"):
            setup()
        plan = engine.plan
        sectors = plan.sector_ids
        waves: dict[int, dict[str, list[str]]] = {}

        def create_wave(fy: int) -> None:
            wave = {c: [f"measure:N{c}-{fy}-{k:03d}" for k in range(per_year)] for c in codes}
            items = [
                (ref, {"municipalities": [c], "title_ja": f"施策 {ref[8:]}",
                       "title_en": f"Measure {ref[8:]}", "kind": _kind(ref),
                       "policy_area": "energy_saving", "indicator": "件数", "unit": "件",
                       "target": 10.0})
                for c in codes for ref in wave[c]
            ]
            for chunk in _chunks(items):
                engine.create_many(chunk, actor=SECRETARIAT)
            waves[fy] = wave
            out.measures += len(items)

        last_fy = FIRST_FY + years - 1
        for year in range(FIRST_FY, last_fy + 2):
            check = year - 1  # the fiscal year whose check runs during ``year``
            say(f"FY{year}")
            if rollover is not None and year == last_fy:
                rollover(_moment(year, 4, 1))
            with timer("scheduler"):
                engine.tick(_moment(year, 4, 10))
            if year <= last_fy:
                with timer("measures"):
                    create_wave(year)
                with timer("analyze"):
                    _analyze(engine)

            def confirm(year: int = year, check: int = check) -> None:
                for c in codes:
                    requests: list[tuple[str, str, dict[str, Any] | None]] = []
                    for ref in waves.get(year - 1, {}).get(c, []):
                        if _kind(ref) == "study":
                            requests.append((ref, "commercialise", {"fiscal_year": year}))
                        requests.append((ref, "complete", None))
                    if check >= FIRST_FY:
                        requests.append((f"cycle:{c}:{check}", "confirm_status", None))
                    if requests:
                        engine.fire_many(requests, actor=staff[c])

            with timer("staff"):
                confirm()
            if check < FIRST_FY:
                with timer("scheduler"):
                    engine.tick(_moment(year + 1, 3, 1))
                continue

            with timer("scheduler"):
                engine.tick(_moment(year, 7, 10))
            inventory = plan.inventory_year(check)

            def emissions(inventory: int = inventory, check: int = check) -> None:
                items = [
                    (f"emissions:{c}:{inventory}:{s}",
                     {"municipality": c, "year": inventory, "sector": s,
                      "value_t_co2": float(100 + n % 97 + k), "status": "estimated"})
                    for n, c in enumerate(codes) for k, s in enumerate(sectors)
                ]
                for chunk in _chunks(items):
                    engine.create_many(chunk, actor=SECRETARIAT)
                for c in codes:
                    engine.fire(f"cycle:{c}:{check}", "submit_emissions", actor=staff[c])

            with timer("emissions"):
                emissions()
            with timer("scheduler"):
                engine.tick(_moment(year, 8, 10))

            def evaluate(check: int = check) -> None:
                for c in codes:
                    active = [ref for fy in (check, check - 1)
                              for ref in waves.get(fy, {}).get(c, [])]
                    if active:
                        engine.evaluate_many(
                            [{"measure": ref, "rating": "AB"[len(ref) % 2], "actual": 5.0}
                             for ref in active],
                            fiscal_year=check, actor=staff[c])
                    engine.fire(f"cycle:{c}:{check}", "finish_evaluation", actor=staff[c])

            with timer("evaluations"):
                evaluate()
            with timer("scheduler"):
                engine.tick(_moment(year, 10, 10))

            def report(check: int = check) -> None:
                for c in codes:
                    engine.fire(f"cycle:{c}:{check}", "report_internally", actor=staff[c])

            with timer("staff"):
                report()

            def region(year: int = year, check: int = check) -> None:
                engine.tick(_moment(year, 11, 10))
                for p in plan.priority_projects:
                    engine.evaluate_priority_project(p.id, fiscal_year=check, rating="B",
                                                     actor=SECRETARIAT)
                ref = f"cycle:region:{check}"
                engine.fire(ref, "aggregate", actor=SECRETARIAT)
                council = engine.schedule_meeting("liaison_council", fiscal_year=check,
                                                  on=date(year, 12, 3), actor=SECRETARIAT)
                committee = engine.schedule_meeting("advisory_committee", fiscal_year=check,
                                                    on=date(year + 1, 1, 20), actor=CLERK)
                engine.tick(_moment(year, 12, 3))
                engine.fire(council, "hold", actor=SECRETARIAT)
                engine.fire(ref, "hold_liaison_council", actor=SECRETARIAT)
                engine.tick(_moment(year + 1, 1, 20))
                engine.fire(committee, "hold", actor=CLERK)
                engine.fire(ref, "hold_advisory_committee", actor=SECRETARIAT)
                engine.tick(_moment(year + 1, 2, 20))
                engine.fire(ref, "publish", actor=SECRETARIAT,
                            data={"url": f"https://example.jp/pdca/{check}"})
                engine.fire(ref, "begin_act", actor=SECRETARIAT)
                engine.fire(ref, "close", actor=SECRETARIAT)
                engine.tick(_moment(year + 1, 3, 1))

            with timer("region"):
                region()

            def close(check: int = check) -> None:
                for c in codes:
                    engine.fire(f"cycle:{c}:{check}", "close", actor=staff[c])

            with timer("staff"):
                close()
            with timer("analyze"):
                _analyze(engine)
        with timer("checkpoint"):
            engine.checkpoint(actor=ADMIN)
    finally:
        engine.close()
    out.audit_entries, out.entities = counts(url)
    out.seconds = time.perf_counter() - started
    out.phases = {k: round(v, 3) for k, v in out.phases.items()}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.national",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite:///national.db", help="an empty database")
    parser.add_argument("--municipalities", type=int, default=NATIONAL)
    parser.add_argument("--measures", type=int, default=200,
                        help="measures per municipality over all the years")
    parser.add_argument("--years", type=int, default=10)
    args = parser.parse_args(argv)
    result = generate(args.db, municipalities=args.municipalities, measures=args.measures,
                      years=args.years, say=lambda text: print(text, file=sys.stderr))
    print(json.dumps(result.as_dict(), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
