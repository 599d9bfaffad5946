"""The engine: the core (state changes, audit, people) plus the plan's operations.

:class:`Engine` is what a host system, the scheduler and the CLI use. On top of
:class:`~pdca.core.EngineCore` it knows the plan: it loads the plan file, opens a fiscal
year's cycles for that year's members, records evaluations, imports measures and
emissions from CSV (all or nothing), schedules meetings, records advice and theme
projects, and computes the region's emissions. Every write still goes through the core's
transactions, with its audit entry.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import audit, log
from .calendar import TOKYO
from .core import Clock, EngineCore, permission_problem
from .errors import (
    DuplicateEntity,
    InvalidData,
    InvalidInput,
    PdcaError,
    PermissionDenied,
    UnknownReference,
)
from .plans import Plan
from .storage import database, queries
from .storage.models import DueFiring, Entity, EntityScope, Evaluation, Member, Outbox, Setting
from .types import EntityView, Role, Transition, validate_municipality_code
from .workflows import Registry
from .workflows.cycles import FIRST_STEP
from .workflows.emissions import STATUSES
from .workflows.meeting import MEETING_KINDS

if TYPE_CHECKING:
    # Loaded where they are used: reading commands (`pdca status`) need none of them.
    from .ledger import EmissionValue, RegionYear
    from .notify import NoticeKind, Notifier
    from .schedule import Due

_E = cast(sa.Table, Entity.__table__)
_S = cast(sa.Table, EntityScope.__table__)
_V = cast(sa.Table, Evaluation.__table__)
_M = cast(sa.Table, Member.__table__)
_SET = cast(sa.Table, Setting.__table__)
_DUE = cast(sa.Table, DueFiring.__table__)
_O = cast(sa.Table, Outbox.__table__)

#: Outbox channel of the notices (reminders, overdue, step open).
CHANNEL_NOTICE = "notification"

MEASURE_COLUMNS = (
    "code", "municipality", "title_ja", "title_en", "policy_area", "kind",
    "priority_project", "leading", "indicator", "unit", "target",
)
EMISSION_COLUMNS = ("municipality", "year", "sector", "value_t_co2", "status")
STAFF = frozenset({Role.STAFF})
#: How many due firings one transaction of a tick carries out: the 1 April rollover of a
#: national plan makes thousands due at once, and a commit per firing would dominate; a
#: killed scheduler loses at most one batch of work (redone at its restart).
DUE_BATCH = 50
#: A large backlog (a national rollover) is cut into this many batches at most, so that
#: the commits do not dominate; a crash then loses at most this share of it (redone).
DUE_BATCHES = 20
#: The settings key of the moment up to which the schedule's firings are stored as rows.
DUES_STORED_UNTIL = "dues_stored_until"


def _evaluation(plan: Plan, fiscal_year: int, rating: Any, actual: Any, comment: Any,
                *, where: str = "") -> dict[str, Any]:
    """The data of an evaluation, checked (``where`` prefixes the messages)."""
    if rating not in plan.rating_ids:
        raise InvalidData(
            f"{where}rating must be one of {', '.join(plan.rating_ids)}, not {rating!r}",
            field="rating",
        )
    if actual is not None and (isinstance(actual, bool) or not isinstance(actual, (int, float))):
        raise InvalidData(f"{where}actual must be a number, not {actual!r}", field="actual")
    if not isinstance(comment, str):
        raise InvalidData(f"{where}comment must be text", field="comment")
    return {"fiscal_year": fiscal_year, "rating": rating, "actual": actual,
            "comment": comment.strip()}


def _check_evaluable(ref: str, workflow: str, attrs: Mapping[str, Any], fiscal_year: int
                     ) -> None:
    """A measure that has not ended before ``fiscal_year`` (else why not)."""
    if workflow != "measure":
        raise UnknownReference(ref, f"{ref} is not a measure")
    ended = attrs.get("ended_fy")
    if ended is not None and ended < fiscal_year:
        raise InvalidInput(
            f"{ref} ended in FY{ended}; it has no evaluation for FY{fiscal_year}",
            field="fiscal_year",
        )


def _due_of(row: Any) -> Due:
    """A stored due firing as the schedule made it."""
    from .schedule import Due

    return Due(key=row.key, at=row.due_at, order=row.order_no, action=row.action,
               fiscal_year=row.fiscal_year, step=row.step, ref=row.ref, trigger=row.trigger,
               states=tuple(s for s in row.states.split(";") if s))
SECRETARIAT = frozenset({Role.SECRETARIAT})
_CODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


@dataclass(frozen=True, kw_only=True, slots=True)
class EvaluationRecord:
    """A measure's evaluation for one fiscal year."""

    measure: str
    fiscal_year: int
    rating: str
    actual: float | None
    comment: str
    recorded_by: str
    recorded_at: datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class ImportResult:
    """What an import did: entities created and transitions fired (all in one transaction)."""

    created: int
    changed: int
    unchanged: int


def _read_plan_text(source: str | Path) -> tuple[str, str]:
    """The TOML text of a bundled plan (by name) or a plan file, and how to name it."""
    name = str(source)
    if not name.endswith(".toml") and re.match(r"^[a-z0-9][a-z0-9_\-]*$", name):
        resource = resources.files("pdca.plans").joinpath(f"{name}.toml")
        if resource.is_file():
            return resource.read_text(encoding="utf-8"), f"{name}.toml"
        bundled = sorted(
            p.name.removesuffix(".toml")
            for p in resources.files("pdca.plans").iterdir()
            if p.name.endswith(".toml")
        )
        raise InvalidInput(f"no bundled plan {name!r}; bundled plans: {', '.join(bundled)}")
    path = Path(source)
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except FileNotFoundError:
        raise InvalidInput("the plan file does not exist", source=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read the plan file: {exc}", source=str(path)) from None
    except ValueError:  # a NUL byte, or characters no file name can hold
        raise InvalidInput("not a usable file name", source=repr(str(source))) from None


def _read_csv(
    path: str | Path, columns: Sequence[str]
) -> tuple[str, list[tuple[int, dict[str, str]]]]:
    """Rows of a UTF-8 (BOM allowed) CSV file with exactly ``columns``, with line numbers."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InvalidInput("the file does not exist", source=source) from None
    except UnicodeDecodeError:
        raise InvalidInput("the file is not UTF-8 text (save it as CSV UTF-8)",
                           source=source) from None
    except OSError as exc:
        raise InvalidInput(f"cannot read the file: {exc.strerror or exc}",
                           source=source) from None
    except ValueError:  # a NUL byte, or characters no file name can hold
        raise InvalidInput("not a usable file name", source=repr(source)) from None
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if header != list(columns):
        missing = [c for c in columns if c not in header]
        extra = [c for c in header if c not in columns]
        detail = []
        if missing:
            detail.append(f"missing {', '.join(missing)}")
        if extra:
            detail.append(f"unknown {', '.join(extra)}")
        raise InvalidInput(
            f"the header must be {','.join(columns)}" + (f" ({'; '.join(detail)})"
                                                        if detail else " in this order"),
            source=source,
            line=1,
        )
    reader.fieldnames = header
    rows = []
    try:
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                raise InvalidInput(f"expected {len(columns)} columns", source=source,
                                   line=reader.line_num)
            rows.append((reader.line_num, {k: (v or "").strip() for k, v in row.items()}))
    except csv.Error as exc:
        raise InvalidInput(f"not valid CSV: {exc}", source=source, line=reader.line_num) from None
    if not rows:
        raise InvalidInput("the file has no rows", source=source)
    return source, rows


def check_year(value: int, field: str = "fiscal_year") -> int:
    """A fiscal (or inventory) year pdca can store: 1900-2999."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1900 <= value <= 2999:
        raise InvalidData(f"{field} must be a year between 1900 and 2999, not {value!r}",
                          field=field)
    return value


def _aware(moment: datetime, name: str) -> None:
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise InvalidInput(f"{name} must be a time with a time zone, not {moment!r}",
                           field=name)


def _tokyo(moment: datetime) -> str:
    return moment.astimezone(TOKYO).strftime("%Y-%m-%d %H:%M %Z")


def audit_table() -> Any:
    from .storage.models import AuditLog

    return AuditLog.__table__


def _at(source: str, line: int, exc: InvalidInput) -> InvalidInput:
    """The same error, located at ``source:line``."""
    return InvalidInput(exc.reason, source=source, line=line, field=exc.field)


class Engine(EngineCore):
    """A pdca database, opened: the one public way to read and change it.

    Create one per process and share it between threads.

    >>> engine = Engine.open("sqlite:///pdca.db", migrate=True)  # doctest: +SKIP
    >>> engine.fire("measure:M-001", "commercialise", actor="staff-kumamoto")  # doctest: +SKIP
    """

    def __init__(
        self,
        db: sa.Engine,
        *,
        registry: Registry | None = None,
        clock: Clock | None = None,
        simulation: bool = False,
        virtual_now: datetime | None = None,
    ) -> None:
        self._plan_cache: tuple[str, Plan] | None = None
        self._schedule_from: int | None = None
        self._tick_people: dict[str | None, list[tuple[str, str | None]]] | None = None
        super().__init__(
            db,
            registry=registry,
            clock=clock,
            queries=queries.build(self._plan_on),
            simulation=simulation,
            virtual_now=virtual_now,
        )

    # ------------------------------------------------------------------ the plan

    def _plan_on(self, conn: Connection) -> Plan:
        digest_now = conn.execute(
            sa.select(_SET.c.value).where(_SET.c.key == "plan_digest")
        ).scalar_one_or_none()
        if self._plan_cache is not None and digest_now == self._plan_cache[0]:
            return self._plan_cache[1]  # the plan text (large for a national plan) unread
        rows = dict(
            conn.execute(
                sa.select(_SET.c.key, _SET.c.value).where(
                    _SET.c.key.in_(("plan_digest", "plan_toml", "plan_source"))
                )
            ).all()
        )
        if "plan_toml" not in rows:
            raise InvalidInput("no plan is loaded: run `pdca init --plan kumamoto` "
                               "(or engine.load_plan)")
        digest = rows["plan_digest"]
        if self._plan_cache is None or self._plan_cache[0] != digest:
            plan = Plan.from_toml_text(rows["plan_toml"], source=rows["plan_source"])
            self._plan_cache = (digest, plan)
        return self._plan_cache[1]

    @property
    def plan(self) -> Plan:
        """The plan in force (raises :class:`InvalidInput` when none is loaded)."""
        with database.storage_errors("reading the plan"), database.read_transaction(
            self._db
        ) as conn:
            return self._plan_on(conn)

    def load_plan(self, source: str | Path = "kumamoto", *, actor: str) -> Plan:
        """Load (or reload) the plan file ``source`` — a bundled name or a path — audited.

        The plan's members are stored with the fiscal years of their membership. Loading
        the same content again changes nothing; a database holds one plan.
        """
        text, label = _read_plan_text(source)
        plan = Plan.from_toml_text(text, source=label)
        digest = plan.digest
        ref = f"plan:{plan.id}"

        with database.storage_errors("reading the plan"), database.read_transaction(
            self._db
        ) as conn:
            current = dict(
                conn.execute(
                    sa.select(_SET.c.key, _SET.c.value).where(
                        _SET.c.key.in_(("plan_id", "plan_digest"))
                    )
                ).all()
            )
        if current.get("plan_id") not in (None, plan.id):
            raise InvalidInput(
                f"this database holds plan {current['plan_id']!r}, not {plan.id!r}"
            )
        if current.get("plan_digest") == digest:
            return plan

        def store(conn: Connection, _entity_id: int) -> None:
            for key, value in (("plan_id", plan.id), ("plan_digest", digest),
                               ("plan_toml", text), ("plan_source", label)):
                conn.execute(_SET.delete().where(_SET.c.key == key))
                conn.execute(_SET.insert(), {"key": key, "value": value})
            # Another plan may make other firings due in the past: the next tick computes
            # the whole schedule again.
            conn.execute(_SET.delete().where(_SET.c.key == DUES_STORED_UNTIL))
            conn.execute(_M.delete())
            conn.execute(
                _M.insert(),
                [
                    {"code": m.code, "name_ja": m.name_ja, "name_en": m.name_en,
                     "joined": m.joined, "left": m.left}
                    for m in plan.members
                ],
            )

        data = {"digest": digest, "source": label, "name_ja": plan.name_ja,
                "name_en": plan.name_en}
        if "plan_id" not in current:
            self.create(ref, actor=actor, data=data, write=store)
        else:
            self.record(ref, "load_plan", actor=actor, data=data,
                        roles=frozenset({Role.ADMIN}), attrs=data, write=store)
        self._plan_cache = (digest, plan)
        return plan

    # ------------------------------------------------------------------ cycles

    def open_fiscal_year(self, fiscal_year: int, *, actor: str = "scheduler") -> list[Transition]:
        """Create the cycles of ``fiscal_year``: one per member of that year, and the region's.

        Safe to run again: cycles that exist are left alone. Returns the creations.
        """
        plan = self.plan
        if not isinstance(fiscal_year, int) or not 1990 <= fiscal_year <= 2999:
            raise InvalidInput(f"not a fiscal year: {fiscal_year!r}", field="fiscal_year")
        items: list[tuple[str, Mapping[str, Any]]] = [
            (f"cycle:{m.code}:{fiscal_year}", {"municipality": m.code, "fiscal_year": fiscal_year})
            for m in plan.members_of(fiscal_year)
        ]
        items.append((f"cycle:region:{fiscal_year}", {"fiscal_year": fiscal_year}))
        return self.create_many(items, actor=actor, skip_existing=True)

    def cycles(self, fiscal_year: int) -> list[EntityView]:
        """The cycles of ``fiscal_year``: the region's first, then the members' by code."""
        views = self.entities(workflow="regional_cycle", fiscal_year=fiscal_year)
        return views + self.entities(workflow="municipal_cycle", fiscal_year=fiscal_year)

    # ------------------------------------------------------------------ listing

    def entities(
        self,
        *,
        workflow: str,
        fiscal_year: int | None = None,
        municipality: str | None = None,
        state: str | None = None,
    ) -> list[EntityView]:
        """Entities of ``workflow``, filtered, by reference (no ``allowed`` computed)."""
        wf = self._registry.get(workflow)
        if fiscal_year is not None:
            check_year(fiscal_year)
        if state is not None and state not in wf.states:
            raise InvalidInput(
                f"{workflow} has no state {state!r}; its states are {', '.join(wf.states)}",
                field="state",
            )
        stmt = sa.select(_E).where(_E.c.workflow == workflow).order_by(_E.c.ref)
        if fiscal_year is not None:
            stmt = stmt.where(_E.c.fiscal_year == fiscal_year)
        if state is not None:
            stmt = stmt.where(_E.c.state == state)
        if municipality is not None:
            stmt = stmt.where(
                _E.c.id.in_(sa.select(_S.c.entity_id).where(_S.c.municipality == municipality))
            )
        with database.storage_errors(f"listing {workflow}"), database.read_transaction(
            self._db
        ) as conn:
            rows = conn.execute(stmt).all()
        return [
            EntityView(
                ref=r.ref,
                workflow=workflow,
                state=r.state,
                state_label=wf.state_label(r.state),
                version=r.version,
                scope=tuple(s for s in r.scope.split(";") if s),
                fiscal_year=r.fiscal_year,
                attrs=json.loads(r.attrs),
                overdue=r.overdue_since is not None,
                allowed=(),
                blocked={},
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ measures

    def import_measures(self, path: str | Path, *, actor: str) -> ImportResult:
        """Import measures from CSV (columns ``code,municipality,title_ja,...,target``).

        All or nothing: one bad row (named by line and field) and nothing is written.
        """
        plan = self.plan
        source, rows = _read_csv(path, MEASURE_COLUMNS)
        members = {m.code for m in plan.members}
        areas = {a.id for a in plan.policy_areas}
        projects = {p.id for p in plan.priority_projects}
        items: list[tuple[str, Mapping[str, Any]]] = []
        lines: dict[str, int] = {}
        for line, row in rows:
            try:
                code = row["code"]
                if not _CODE_RE.match(code):
                    raise InvalidData(f"measure code {code!r} is not valid", field="code")
                if code in lines:
                    raise InvalidData(
                        f"measure code {code} appears twice (first on line {lines[code]})",
                        field="code",
                    )
                lines[code] = line
                owners = [c.strip() for c in row["municipality"].split(";") if c.strip()]
                if not owners:
                    raise InvalidData("a measure needs its municipality", field="municipality")
                for owner in owners:
                    try:
                        validate_municipality_code(owner)
                    except InvalidInput as exc:
                        raise InvalidData(exc.reason, field="municipality") from None
                    if owner not in members:
                        raise InvalidData(f"{owner} is not a member of plan {plan.id}",
                                          field="municipality")
                if row["policy_area"] and areas and row["policy_area"] not in areas:
                    raise InvalidData(
                        f"unknown policy area {row['policy_area']!r}; the plan's are "
                        + ", ".join(sorted(areas)),
                        field="policy_area",
                    )
                if row["priority_project"] and row["priority_project"] not in projects:
                    raise InvalidData(
                        f"unknown priority project {row['priority_project']!r}; the plan's are "
                        + ", ".join(sorted(projects)),
                        field="priority_project",
                    )
                if row["leading"].lower() not in ("", "true", "false"):
                    raise InvalidData("leading must be true or false", field="leading")
                data: dict[str, Any] = {
                    "municipalities": owners,
                    "title_ja": row["title_ja"],
                    "kind": row["kind"],
                    "leading": row["leading"].lower() == "true",
                }
                for key in ("title_en", "policy_area", "priority_project", "indicator", "unit"):
                    if row[key]:
                        data[key] = row[key]
                if row["target"]:
                    try:
                        data["target"] = float(row["target"])
                    except ValueError:
                        raise InvalidData(f"target must be a number, not {row['target']!r}",
                                          field="target") from None
                ref = f"measure:{code}"
                self._prepare_creation(ref, data, None)  # validate now, with the line
            except InvalidInput as exc:
                raise _at(source, line, exc) from None
            items.append((ref, data))
        with database.storage_errors("checking measures"), database.read_transaction(
            self._db
        ) as conn:
            existing = self._existing_refs(conn, [ref for ref, _ in items])
        if existing:
            ref = sorted(existing, key=lambda r: lines[r.split(":", 1)[1]])[0]
            code = ref.split(":", 1)[1]
            raise InvalidInput(f"measure {code} exists already", source=source,
                               line=lines[code], field="code")
        created = self.create_many(items, actor=actor, note=f"imported from {Path(source).name}")
        return ImportResult(created=len(created), changed=0, unchanged=0)

    # ------------------------------------------------------------------ evaluations

    def evaluate(
        self,
        measure: str,
        *,
        fiscal_year: int,
        rating: str,
        actor: str,
        actual: float | None = None,
        comment: str = "",
    ) -> Transition:
        """Record (or correct) a measure's evaluation for ``fiscal_year``, audited."""
        data = _evaluation(self.plan, fiscal_year, rating, actual, comment)
        view = self.get(measure)
        _check_evaluable(measure, view.workflow, view.attrs, fiscal_year)

        def write(conn: Connection, entity_id: int) -> None:
            conn.execute(sa.delete(_V).where(_V.c.entity_id == entity_id,
                                            _V.c.fiscal_year == fiscal_year))
            conn.execute(
                _V.insert(),
                {"entity_id": entity_id, "fiscal_year": fiscal_year, "rating": rating,
                 "actual": None if actual is None else float(actual),
                 "comment": data["comment"], "recorded_by": actor,
                 "recorded_at": self._clock()},
            )

        return self.record(measure, "evaluate", actor=actor, data=data, roles=STAFF,
                           write=write)

    def evaluate_many(
        self,
        evaluations: Sequence[Mapping[str, Any]],
        *,
        fiscal_year: int,
        actor: str,
    ) -> list[Transition]:
        """Record many measures' evaluations for ``fiscal_year`` in one transaction: all of
        them or none (each as :meth:`evaluate` would, audited on its measure).

        Each item is a mapping with ``measure`` and ``rating``, and optionally ``actual``
        and ``comment``. Every item is checked before anything is written.
        """
        plan = self.plan
        check_year(fiscal_year)
        items: list[tuple[str, dict[str, Any]]] = []
        seen: set[str] = set()
        for n, item in enumerate(evaluations, start=1):
            where = f"evaluation {n}"
            measure = item.get("measure")
            if not isinstance(measure, str):
                raise InvalidData(f"{where}: measure must be a reference such as "
                                  "measure:M-001", field="measure")
            ref = str(self._parse(measure)[0])
            if ref in seen:
                raise InvalidData(f"{where}: {ref} appears twice", field="measure")
            seen.add(ref)
            items.append((ref, _evaluation(plan, fiscal_year, item.get("rating"),
                                           item.get("actual"), item.get("comment", ""),
                                           where=f"{where}: ")))

        def check(row: Any) -> None:
            _check_evaluable(row.ref, row.workflow.name, row.attrs, fiscal_year)

        def write(conn: Connection, rows: Sequence[tuple[int, Mapping[str, Any]]]) -> None:
            ids = [entity_id for entity_id, _ in rows]
            for start in range(0, len(ids), 500):
                conn.execute(sa.delete(_V).where(_V.c.entity_id.in_(ids[start:start + 500]),
                                                _V.c.fiscal_year == fiscal_year))
            now = self._clock()
            conn.execute(_V.insert(), [
                {"entity_id": entity_id, "fiscal_year": fiscal_year, "rating": data["rating"],
                 "actual": None if data["actual"] is None else float(data["actual"]),
                 "comment": data["comment"], "recorded_by": actor, "recorded_at": now}
                for entity_id, data in rows
            ])

        return self.record_many(items, "evaluate", actor=actor, roles=STAFF, check=check,
                                write=write)

    def evaluations(
        self, *, fiscal_year: int, municipality: str | None = None
    ) -> list[EvaluationRecord]:
        """The evaluations of ``fiscal_year`` (of one municipality's measures, if given)."""
        stmt = (
            sa.select(_E.c.ref, _V)
            .join(_V, _V.c.entity_id == _E.c.id)
            .where(_V.c.fiscal_year == fiscal_year)
            .order_by(_E.c.ref)
        )
        if municipality is not None:
            stmt = stmt.where(
                _E.c.id.in_(sa.select(_S.c.entity_id).where(_S.c.municipality == municipality))
            )
        with database.storage_errors("reading evaluations"), database.read_transaction(
            self._db
        ) as conn:
            rows = conn.execute(stmt).all()
        return [
            EvaluationRecord(measure=r.ref, fiscal_year=r.fiscal_year, rating=r.rating,
                             actual=r.actual, comment=r.comment, recorded_by=r.recorded_by,
                             recorded_at=r.recorded_at)
            for r in rows
        ]

    def evaluate_priority_project(
        self,
        project: str,
        *,
        fiscal_year: int,
        rating: str,
        actor: str,
        comment: str = "",
    ) -> Transition:
        """Record the region's evaluation of a priority project (重点事業) for ``fiscal_year``."""
        plan = self.plan
        ids = [p.id for p in plan.priority_projects]
        if project not in ids:
            raise InvalidData(f"unknown priority project {project!r}; the plan's are "
                              + ", ".join(ids), field="project")
        if rating not in plan.rating_ids:
            raise InvalidData(
                f"rating must be one of {', '.join(plan.rating_ids)}, not {rating!r}",
                field="rating",
            )
        entry = {"rating": rating, "comment": comment.strip()}

        def merge(attrs: Mapping[str, Any]) -> Mapping[str, Any]:
            done = dict(attrs.get("priority_evaluations", {}))
            done[project] = entry
            return {"priority_evaluations": done}

        return self.record(
            f"cycle:region:{fiscal_year}",
            "evaluate_priority_project",
            actor=actor,
            data={"project": project, **entry},
            roles=SECRETARIAT,
            attrs=merge,
        )

    # ------------------------------------------------------------------ meetings

    def _next_key(self, prefix: str) -> int:
        with database.storage_errors("numbering"), database.read_transaction(self._db) as conn:
            refs = conn.execute(
                sa.select(_E.c.ref).where(queries.ref_prefix(_E.c.ref, prefix))).all()
        numbers = [int(n) for (r,) in refs if (n := r[len(prefix):]).isdigit()]
        return max(numbers, default=0) + 1

    def _create_numbered(
        self, prefix: str, data: Mapping[str, Any], actor: str, note: str | None = None
    ) -> str:
        for _ in range(5):  # another writer may take the same number: take the next
            ref = f"{prefix}{self._next_key(prefix)}"
            try:
                self.create(ref, actor=actor, data=data, note=note)
            except DuplicateEntity:
                continue
            return ref
        raise PdcaError(f"could not number a new {prefix.split(':')[0]}; try again")

    def schedule_meeting(
        self,
        kind: str,
        *,
        fiscal_year: int,
        on: date | str,
        actor: str,
        municipality: str | None = None,
        title: str | None = None,
    ) -> str:
        """Plan a meeting; returns its new reference, e.g. ``meeting:2025-liaison_council-1``."""
        if kind not in MEETING_KINDS:
            raise InvalidData(f"unknown meeting kind {kind!r}; the kinds are "
                              + ", ".join(MEETING_KINDS), field="kind")
        data: dict[str, Any] = {"kind": kind, "fiscal_year": fiscal_year,
                                "date": on.isoformat() if isinstance(on, date) else on}
        if municipality:
            data["municipality"] = municipality
        if title:
            data["title"] = title
        return self._create_numbered(f"meeting:{fiscal_year}-{kind}-", data, actor)

    def add_advice(
        self, meeting: str, text: str, *, actor: str, member: str | None = None
    ) -> str:
        """Record advice (助言) given at a held advisory committee; returns ``advice:ID``."""
        view = self.get(meeting)
        if view.workflow != "meeting" or view.attrs.get("kind") != "advisory_committee":
            raise InvalidInput(f"{meeting} is not an advisory committee meeting")
        if view.state not in ("held", "minutes_recorded"):
            raise InvalidInput(f"{meeting} has not been held; advice comes from a held meeting")
        fy = int(view.attrs["fiscal_year"])
        data: dict[str, Any] = {"meeting": view.ref, "fiscal_year": fy, "text": text}
        if member:
            data["member"] = member
        return self._create_numbered(f"advice:{fy}-", data, actor)

    def propose_project(
        self,
        title_ja: str,
        *,
        fiscal_year: int,
        actor: str,
        title_en: str | None = None,
        meeting: str | None = None,
    ) -> str:
        """Set up a theme project (テーマ別プロジェクト) of the staff meeting; returns its ref."""
        data: dict[str, Any] = {"title_ja": title_ja, "fiscal_year": fiscal_year}
        if title_en:
            data["title_en"] = title_en
        if meeting:
            view = self.get(meeting)
            if view.workflow != "meeting" or view.attrs.get("kind") != "staff_meeting":
                raise InvalidInput(f"{meeting} is not a staff meeting")
            data["meeting"] = view.ref
        return self._create_numbered(f"project:{fiscal_year}-", data, actor)

    # ------------------------------------------------------------------ emissions

    def import_emissions(self, path: str | Path, *, actor: str) -> ImportResult:
        """Import emission values from CSV (``municipality,year,sector,value_t_co2,status``).

        New values are created; a value whose status moves on (preliminary → estimated →
        final) or that is corrected before it is final fires the matching transition. A
        final value is changed only by ``revise`` (with a reason), never by an import.
        All or nothing.
        """
        plan = self.plan
        source, rows = _read_csv(path, EMISSION_COLUMNS)
        members = {m.code for m in plan.members}
        sectors = set(plan.sector_ids)
        parsed: list[tuple[int, str, dict[str, Any]]] = []
        seen: dict[str, int] = {}
        for line, row in rows:
            try:
                code = row["municipality"]
                try:
                    validate_municipality_code(code)
                except InvalidInput as exc:
                    raise InvalidData(exc.reason, field="municipality") from None
                if code not in members:
                    raise InvalidData(f"{code} is not a member of plan {plan.id}",
                                      field="municipality")
                try:
                    year = int(row["year"])
                except ValueError:
                    raise InvalidData(f"year must be a whole number, not {row['year']!r}",
                                      field="year") from None
                if len(row["year"]) != 4:
                    raise InvalidData(
                        f"year must be a four-digit year such as 2023, not {row['year']!r}",
                        field="year",
                    )
                if row["sector"] not in sectors:
                    raise InvalidData(
                        f"unknown sector {row['sector']!r}; the plan's sectors are "
                        + ", ".join(plan.sector_ids),
                        field="sector",
                    )
                try:
                    value = float(row["value_t_co2"])
                except ValueError:
                    raise InvalidData(
                        f"value_t_co2 must be a number, not {row['value_t_co2']!r}",
                        field="value_t_co2",
                    ) from None
                if not value >= 0 or value == float("inf"):
                    raise InvalidData(f"value_t_co2 must be a finite number >= 0, not {value}",
                                      field="value_t_co2")
                if row["status"] not in STATUSES:
                    raise InvalidData(f"status must be one of {', '.join(STATUSES)}, not "
                                      f"{row['status']!r}", field="status")
                ref = f"emissions:{code}:{year}:{row['sector']}"
                if ref in seen:
                    raise InvalidData(f"{ref} appears twice (first on line {seen[ref]})",
                                      field="sector")
                seen[ref] = line
                data: dict[str, Any] = {"municipality": code, "year": year,
                                        "sector": row["sector"], "value_t_co2": value,
                                        "status": row["status"]}
                self._prepare_creation(ref, data, None)
            except InvalidInput as exc:
                raise _at(source, line, exc) from None
            parsed.append((line, ref, data))

        with database.storage_errors("reading emissions"), database.read_transaction(
            self._db
        ) as conn:
            current = {
                r.ref: (r.state, json.loads(r.attrs).get("value_t_co2"))
                for start in range(0, len(parsed), 500)
                for r in conn.execute(
                    sa.select(_E.c.ref, _E.c.state, _E.c.attrs).where(
                        _E.c.ref.in_([ref for _, ref, _ in parsed[start:start + 500]])
                    )
                )
            }
        creations: list[tuple[str, Mapping[str, Any]]] = []
        changes: list[tuple[str, str, Mapping[str, Any] | None]] = []
        unchanged = 0
        order = {s: i for i, s in enumerate(STATUSES)}
        for line, ref, data in parsed:
            if ref not in current:
                creations.append((ref, data))
                continue
            state, old = current[ref]
            new_state, value = str(data["status"]), data["value_t_co2"]
            if state == new_state and old == value:
                unchanged += 1
            elif order[new_state] < order[state]:
                raise InvalidInput(f"{ref} is {state} already; it cannot go back to {new_state}",
                                   source=source, line=line, field="status")
            elif state == "final":
                raise InvalidInput(
                    f"{ref} is final ({old} t); a final value changes only by revision: "
                    f"pdca advance {ref} revise --set value_t_co2={value} --set reason=...",
                    source=source, line=line, field="value_t_co2")
            else:
                trigger = {"preliminary": "update", "estimated": "estimate",
                           "final": "finalise"}[new_state]
                if new_state == state:
                    trigger = "update"
                changes.append((ref, trigger, {"value_t_co2": value}))
        note = f"imported from {Path(source).name}"
        if creations and changes:
            # One transaction for both: create first, then move the existing values on.
            created = self._create_and_fire(creations, changes, actor=actor, note=note)
            return ImportResult(created=created, changed=len(changes), unchanged=unchanged)
        if creations:
            self.create_many(creations, actor=actor, note=note)
        if changes:
            self.fire_many(changes, actor=actor, note=note)
        return ImportResult(created=len(creations), changed=len(changes), unchanged=unchanged)

    def _create_and_fire(
        self,
        creations: Sequence[tuple[str, Mapping[str, Any]]],
        changes: Sequence[tuple[str, str, Mapping[str, Any] | None]],
        *,
        actor: str,
        note: str,
    ) -> int:
        prepared = [self._prepare_creation(ref, data, note) for ref, data in creations]
        requests = [self._prepare_fire(ref, trigger, note, data) for ref, trigger, data in changes]
        with self._writing("(import)", "import") as conn:
            who = self._creator(conn, actor)
            now = self._clock()
            for item in prepared:
                problem = permission_problem(item.roles, trigger="create", time_based=False,
                                             actor=who, scope=item.scope)
                if problem is not None:
                    raise PermissionDenied(ref=item.ref, trigger="create", state="none",
                                           actor=who.id, role=who.role.value, reason=problem)
                self._insert_entity(conn, item, who, self._next_seq(conn), now)
            for request in requests:
                _, refusal = self._fire_in(conn, request, who, None)
                if refusal is not None:
                    raise refusal
        if self._subscribers:
            self.deliver_pending()
        return len(prepared)

    def emission_values(self, *, years: Iterable[int] | None = None) -> list[EmissionValue]:
        """Every emission value (of the given inventory years)."""
        from .ledger import EmissionValue

        stmt = sa.select(_E.c.ref, _E.c.state, _E.c.attrs).where(_E.c.workflow == "emissions")
        if years is not None:
            stmt = stmt.where(_E.c.fiscal_year.in_(list(years)))
        with database.storage_errors("reading emissions"), database.read_transaction(
            self._db
        ) as conn:
            rows = conn.execute(stmt).all()
        values = []
        for r in rows:
            _, code, year, sector = r.ref.split(":")
            values.append(EmissionValue(municipality=code, year=int(year), sector=sector,
                                        value_t_co2=float(json.loads(r.attrs)["value_t_co2"]),
                                        status=r.state))
        return values

    def region_emissions(self, year: int) -> RegionYear:
        """The region's emissions in inventory ``year``, over that year's members, with the
        like-for-like reduction from the base year and the target path."""
        from .ledger import region_year

        plan = self.plan
        values = {(v.municipality, v.year, v.sector): v
                  for v in self.emission_values(years=(year, plan.base_year))}
        return region_year(plan, values, year)

    # ------------------------------------------------------------------ the scheduler

    @classmethod
    def create_simulation(
        cls, url: str, *, start: datetime, registry: Registry | None = None
    ) -> Engine:
        """Create a training or simulation database whose clock is virtual, from ``start``.

        The database is marked as a simulation for good: every command then acts at the
        virtual time, which only ``tick`` and ``simulate`` move (forward), and every audit
        entry carries both the real and the virtual time. Refused for a database that
        already holds a real audit log.
        """
        _aware(start, "start")
        engine = cls.open(url, migrate=True, registry=registry)
        try:
            if not engine.simulation:
                with engine._writing("settings", "simulation") as conn:
                    if conn.execute(sa.select(sa.func.count()).select_from(
                            cast(sa.Table, audit_table()))).scalar_one():
                        raise InvalidInput(
                            "this database already holds a real audit log; a simulation "
                            "needs a database of its own")
                    for key, value in (("simulation", "true"),
                                       ("virtual_now", start.astimezone(UTC).isoformat())):
                        conn.execute(_SET.delete().where(_SET.c.key == key))
                        conn.execute(_SET.insert(), {"key": key, "value": value})
                engine.simulation = True
                engine._virtual_now = start.astimezone(UTC)
                engine._clock = engine._virtual_clock
        except BaseException:
            engine.close()
            raise
        return engine

    def _move_virtual_clock(self, to: datetime) -> None:
        with self._writing("settings", "tick") as conn:
            stored = conn.execute(
                sa.select(_SET.c.value).where(_SET.c.key == "virtual_now").with_for_update()
            ).scalar_one_or_none()
            current = datetime.fromisoformat(stored) if stored else None
            if current is not None and to < current:
                raise InvalidInput(
                    f"the virtual clock never goes back: it is at {_tokyo(current)}, "
                    f"not {_tokyo(to)}", field="at")
            conn.execute(_SET.update().where(_SET.c.key == "virtual_now").values(
                value=to.astimezone(UTC).isoformat()))
        self._virtual_now = to.astimezone(UTC)

    def _schedule_start(self, at: datetime) -> int:
        """The first fiscal year the scheduler looks after (fixed by its first tick)."""
        from .calendar import fiscal_year_of

        if self._schedule_from is not None:
            return self._schedule_from  # stored once, never changed
        with self._writing("settings", "tick") as conn:
            first = fiscal_year_of(at)
            conn.execute(self._insert_or_ignore(_SET),
                         {"key": "schedule_from", "value": str(first)})
            self._schedule_from = int(conn.execute(
                sa.select(_SET.c.value).where(_SET.c.key == "schedule_from")
            ).scalar_one())
            return self._schedule_from

    def _tick_time(self, at: datetime | None) -> datetime:
        now = self.now()
        if at is None:
            return now
        _aware(at, "at")
        if self.simulation:
            self._move_virtual_clock(at)
            return at
        if at > now + timedelta(seconds=1):
            raise InvalidInput(
                f"--at {_tokyo(at)} is later than now ({_tokyo(now)}): an audit log is "
                "never run ahead; only a simulation database has a virtual clock",
                field="at",
            )
        return at

    def due(self, until: datetime) -> list[Due]:
        """What the schedule makes due up to ``until`` (pure; for `pdca schedule show`)."""
        from . import schedule

        return schedule.due_until(self.plan, self.plan.first_fiscal_year, until)

    def tick(
        self,
        at: datetime | None = None,
        *,
        notifier: Notifier | None = None,
        progress: Callable[[int, int], None] | None = None,
        deliver: bool = True,
    ) -> TickReport:
        """Carry out everything the schedule made due up to ``at`` (default: now), in
        schedule order, each exactly once however often and from however many processes
        this runs. Then send the queued notices (unless ``deliver`` is false: they stay
        queued for :meth:`deliver_notifications`, e.g. on a job of their own).

        On a normal database ``at`` may not be later than now; on a simulation database it
        moves the virtual clock forward (never back).
        """
        from . import schedule

        at = self._tick_time(at)
        plan = self.plan
        first = self._schedule_start(at)
        # Only what became due since the last tick stored its firings is computed and
        # stored (the rows are the memory of the rest); the pending rows are then done.
        self._store_due_since(plan, first, at)
        with database.storage_errors("reading due firings"), database.read_transaction(
            self._db
        ) as conn:
            todo = sorted(
                (_due_of(r) for r in conn.execute(
                    sa.select(_DUE).where(_DUE.c.status == "pending", _DUE.c.due_at <= at))),
                key=schedule.sort_key,
            )
        firings: list[Firing] = []
        self._tick_people = None
        try:
            size = max(DUE_BATCH, len(todo) // DUE_BATCHES)
            for start in range(0, len(todo), size):
                batch = todo[start:start + size]
                firings.extend(self._run_due_batch(plan, batch))
                if progress is not None:  # once per firing, after its batch committed
                    for n in range(start, start + len(batch)):
                        progress(n + 1, len(todo))
        finally:
            self._tick_people = None
        if deliver:
            sent, queued = self.deliver_notifications(notifier)
        else:
            sent, queued = 0, self._queued_notices()
        if log.enabled():
            self._log.info("tick", at=at.isoformat(), fired=len(firings), notices=sent,
                           simulation=self.simulation)
        return TickReport(at=at, simulation=self.simulation, firings=tuple(firings),
                          notices_sent=sent, notices_queued=queued)

    def simulate(
        self,
        until: datetime,
        *,
        notifier: Notifier | None = None,
        progress: Callable[[datetime, int], None] | None = None,
    ) -> list[TickReport]:
        """Run the schedule on the virtual clock up to ``until``, one tick per due moment.

        Only on a simulation database (see :meth:`create_simulation`).
        """
        from . import schedule

        if not self.simulation:
            raise InvalidInput("simulate runs only on a simulation database "
                               "(pdca init --simulation, or pdca demo)")
        _aware(until, "until")
        plan = self.plan
        reports = []
        first = self._schedule_start(self.now())
        while True:
            nxt = schedule.next_due_after(plan, first, self.now())
            if nxt is None or nxt > until:
                break
            reports.append(self.tick(nxt, notifier=notifier))
            if progress is not None:
                progress(nxt, len(reports[-1].firings))
        if until > self.now():
            reports.append(self.tick(until, notifier=notifier))
        return reports

    def _insert_or_ignore(self, table: sa.Table) -> sa.Insert:
        """An INSERT that leaves a row whose ``key`` is already there alone."""
        if self._pg:
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table).on_conflict_do_nothing(index_elements=["key"])
        return table.insert().prefix_with("OR IGNORE")

    def _store_due_since(self, plan: Plan, first: int, until: datetime) -> None:
        """Store what became due after the moment up to which firings are stored, and up
        to ``until``, and move that moment to ``until``: one transaction."""
        from . import schedule

        with self._writing("due_firings", "tick") as conn:
            read = sa.select(_SET.c.value).where(_SET.c.key == DUES_STORED_UNTIL)
            if self._pg:
                read = read.with_for_update()
            stored = conn.execute(read).scalar_one_or_none()
            since = None if stored is None else datetime.fromisoformat(stored)
            if since is not None and since >= until:
                return
            self._store_due_in(conn, schedule.due_between(plan, first, since, until), until)

    def _store_due(self, dues: Sequence[Due], until: datetime) -> None:
        with self._writing("due_firings", "tick") as conn:
            self._store_due_in(conn, dues, until)

    def _store_due_in(self, conn: Connection, dues: Sequence[Due], until: datetime) -> None:
        # Two schedulers may store at once: the setting is created if missing, then read
        # under lock and only ever moved forward; due rows already there are left alone.
        conn.execute(self._insert_or_ignore(_SET),
                     {"key": DUES_STORED_UNTIL, "value": until.astimezone(UTC).isoformat()})
        read = sa.select(_SET.c.value).where(_SET.c.key == DUES_STORED_UNTIL)
        if self._pg:
            read = read.with_for_update()
        stored = conn.execute(read).scalar_one()
        if datetime.fromisoformat(stored) < until:
            conn.execute(_SET.update().where(_SET.c.key == DUES_STORED_UNTIL).values(
                value=until.astimezone(UTC).isoformat()))
        if dues:
            conn.execute(self._insert_or_ignore(_DUE), [
                {"key": d.key, "fiscal_year": d.fiscal_year, "action": d.action,
                 "step": d.step, "ref": d.ref, "trigger": d.trigger,
                 "states": ";".join(d.states), "due_at": d.at, "order_no": d.order,
                 "status": "pending", "done_at": None, "outcome": None}
                for d in dues
            ])

    def _run_due_batch(self, plan: Plan, dues: Sequence[Due]) -> list[Firing]:
        """Due firings, in schedule order, each claimed and carried out exactly once; a
        batch of them in one transaction (all of the batch or none of it is done), their
        entries and row moves written with executemany."""
        from .core import _Bulk

        committed: list[Transition] = []
        firings: list[Firing] = []
        label = dues[0].ref or dues[0].key if len(dues) == 1 else f"{len(dues)} due firings"
        claim = (sa.select(_DUE.c.key, _DUE.c.status)
                 .where(_DUE.c.key.in_(sa.bindparam("keys", expanding=True)))
                 .order_by(_DUE.c.key))
        if self._pg:
            claim = claim.with_for_update()
        with self._writing(label, dues[0].action) as conn:
            now = self._clock()
            who = self._actor(conn, "scheduler")
            # Wait for another process working on any of these firings, then see which
            # are done (do not skip ahead: later firings may depend on earlier ones, as a
            # year's starts on its opening). Every process claims in key order, so two
            # schedulers never wait on each other in a cycle.
            status = dict(conn.execute(claim, {"keys": [d.key for d in dues]}).all())
            todo = [d for d in dues if status.get(d.key) == "pending"]
            bulk = _Bulk(self, conn, len(todo))
            rows = self._lock_many(conn, [d.ref for d in todo if d.ref is not None])
            settled = []
            for n, due in enumerate(todo):
                if due.ref is not None and due.ref not in rows:
                    # Created earlier in this batch (a year's cycles, then their starts).
                    bulk.flush()
                    rows.update(self._lock_many(
                        conn, [d.ref for d in todo[n:] if d.ref is not None]))
                outcome_status, outcome, result = self._perform(
                    conn, plan, due, who, now, rows.get(due.ref or ""), bulk)
                if result is not None:
                    committed.append(result)
                settled.append({"due_key": due.key, "status": outcome_status,
                                "done_at": now, "outcome": outcome})
                firings.append(Firing(key=due.key, action=due.action, due_at=due.at,
                                      ref=due.ref, trigger=due.trigger, status=outcome_status,
                                      outcome=outcome))
            bulk.flush()
            if settled:
                conn.execute(
                    _DUE.update().where(_DUE.c.key == sa.bindparam("due_key")).values(
                        status=sa.bindparam("status"), done_at=sa.bindparam("done_at"),
                        outcome=sa.bindparam("outcome")),
                    settled,
                )
        for result in committed:
            self._after_commit(result)
        if log.enabled():
            for firing in firings:
                self._log.info("firing", key=firing.key, action=firing.action, ref=firing.ref,
                               trigger=firing.trigger, status=firing.status,
                               outcome=firing.outcome)
        return firings

    def _perform(
        self, conn: Connection, plan: Plan, due: Due, who: Any, now: datetime,
        row: Any, bulk: Any,
    ) -> tuple[str, str, Transition | None]:
        """One due firing inside a batch; ``row`` is its entity locked (None: there is
        none), ``bulk`` collects the writes."""
        from . import schedule

        if due.action == schedule.OPEN_YEAR:
            items = [
                self._prepare_creation(f"cycle:{m.code}:{due.fiscal_year}",
                                       {"municipality": m.code,
                                        "fiscal_year": due.fiscal_year}, None)
                for m in plan.members_of(due.fiscal_year)
            ]
            items.append(self._prepare_creation(f"cycle:region:{due.fiscal_year}",
                                                {"fiscal_year": due.fiscal_year}, None))
            for n, day in enumerate(plan.staff_meeting_dates(due.fiscal_year), start=1):
                items.append(self._prepare_creation(
                    f"meeting:{due.fiscal_year}-staff_meeting-{n}",
                    {"kind": "staff_meeting", "fiscal_year": due.fiscal_year,
                     "date": day.isoformat()}, None))
            bulk.flush()
            created = self._create_many_in(conn, items, who, skip_existing=True)
            bulk.recount()  # the creations took numbers of their own
            return "done", f"opened FY{due.fiscal_year}: {len(created)} created", None

        assert due.ref is not None
        if row is None:
            return "skipped", f"{due.ref} does not exist", None
        if row.state not in due.states:
            return "skipped", f"{due.ref} is {row.state}", None

        if due.action == schedule.FIRE:
            assert due.trigger is not None
            request = self._prepare_fire(due.ref, due.trigger, None, {})
            row.next_seq = bulk.take_seq()
            result, refusal = self._fire_in(conn, request, who, None, row, bulk)
            if refusal is not None or result is None:
                return "skipped", str(refusal), None
            step = FIRST_STEP if due.trigger == "begin_check" else due.step
            if step is not None and due.ref.split(":")[1] != "region":
                self._queue_notice(conn, plan, due, "step_open", step, row.scope, now,
                                   bulk)
            return "done", f"{result.from_state} → {result.to_state}", result

        assert due.step is not None
        if due.action == schedule.DEADLINE:
            _, day = plan.step_window(due.step, due.fiscal_year)
            row.next_seq = bulk.take_seq()
            self._append_to(
                conn, row, kind=audit.KIND_DEADLINE, at=now, actor=who, trigger=due.step,
                to_state=row.state, note=f"due {day.isoformat()}",
                data=audit.canonical_json({"step": due.step, "due": day.isoformat(),
                                           "key": due.key}),
                bulk=bulk,
            )
            bulk.flush()  # the mark below must come after every move of this row so far
            conn.execute(_E.update().where(_E.c.id == row.id).values(overdue_since=now))
            self._queue_notice(conn, plan, due, "overdue", due.step, row.scope, now, bulk)
            return "done", f"{due.ref} is overdue for {due.step}", None
        # a reminder
        self._queue_notice(conn, plan, due, "reminder", due.step, row.scope, now, bulk)
        return "done", f"reminded {due.ref} of {due.step}", None

    def _queue_notice(
        self,
        conn: Connection,
        plan: Plan,
        due: Due,
        kind: NoticeKind,
        step_id: str,
        scope: tuple[str, ...],
        now: datetime,
        bulk: Any = None,
    ) -> None:
        from .notify import Notice

        step = plan.step(step_id)
        _, day = plan.step_window(step_id, due.fiscal_year)
        if self._tick_people is None:  # read once per tick, not once per notice
            # Who is told: a municipality's staff (by municipality), or the secretariat
            # (under None) for what belongs to the whole region.
            by_place: dict[str | None, list[tuple[str, str | None]]] = {}
            for r in conn.execute(
                sa.select(_E.c.ref, _E.c.attrs).where(_E.c.workflow == "person",
                                                      _E.c.state == "active")
                .order_by(_E.c.id)
            ):
                attrs = json.loads(r.attrs)
                person = (r.ref.split(":", 1)[1], attrs.get("email"))
                if attrs.get("role") == "staff":
                    by_place.setdefault(attrs.get("municipality"), []).append(person)
                elif attrs.get("role") == "secretariat":
                    by_place.setdefault(None, []).append(person)
            self._tick_people = by_place
        if scope:
            people = [p for place in scope for p in self._tick_people.get(place, [])]
        else:
            people = list(self._tick_people.get(None, []))
        notice = Notice(
            kind=kind, ref=due.ref or "", step=step_id, step_title_ja=step.title_ja,
            step_title_en=step.title_en, fiscal_year=due.fiscal_year, due=day.isoformat(),
            recipients=tuple(e for _, e in people if e), people=tuple(p for p, _ in people),
            key=f"{due.key}:{kind}",
        )
        message = {
            "audit_seq": None, "channel": CHANNEL_NOTICE, "payload": notice.to_json(),
            "created_at": now, "attempts": 0, "next_attempt_at": now,
            "delivered_at": None, "last_error": None, "done": False,
        }
        if bulk is not None:
            bulk.outbox.append(message)
        else:
            conn.execute(_O.insert(), message)

    def deliver_notifications(self, notifier: Notifier | None = None) -> tuple[int, int]:
        """Send the queued notices; return (sent, still queued). A notice that cannot be
        sent stays queued and is retried later, with a growing delay."""
        from .notify import Notice, NotificationFailed, notifier_from_settings

        notifier = notifier or notifier_from_settings()
        sent = 0
        while True:
            claimed = self._claim(100, CHANNEL_NOTICE)
            if not claimed:
                break
            for message_id, payload in claimed:
                try:
                    notifier.send(Notice.from_json(payload))
                except NotificationFailed as exc:
                    self._settle(message_id, str(exc))
                    self._log.warning("notice_failed", error=str(exc))
                    continue
                self._settle(message_id, None)
                sent += 1
            if len(claimed) < 100:
                break
        return sent, self._queued_notices()

    def _queued_notices(self) -> int:
        with database.storage_errors("counting notices"), database.read_transaction(
            self._db
        ) as conn:
            queued = conn.execute(
                sa.select(sa.func.count()).select_from(_O).where(
                    _O.c.channel == CHANNEL_NOTICE, _O.c.done.is_(False))
            ).scalar_one()
        return int(queued)

    # ------------------------------------------------------------------ the dashboard

    def status(self, fiscal_year: int | None = None, *, municipality: str | None = None
               ) -> dict[str, Any]:
        """Where the year stands: every member's cycle phase and overdue flag, the
        region's phase, and the measures by state (of one municipality, if given).

        ``fiscal_year`` defaults to the year whose check is under way (the previous
        fiscal year) once its cycles exist, else the current one.
        """
        from .calendar import fiscal_year_of

        now = self.now()
        cycle_workflows = ("municipal_cycle", "regional_cycle")
        # One read transaction, three statements: the plan's digest, the year's cycles
        # (no attributes decoded), the measures counted by state.
        with database.storage_errors("reading the status"), database.read_transaction(
            self._db
        ) as conn:
            plan = self._plan_on(conn)
            if municipality is not None:
                plan.member(municipality)
            if fiscal_year is None:
                current = fiscal_year_of(now)
                fiscal_year = current if conn.execute(
                    sa.select(_E.c.id).where(_E.c.ref == f"cycle:region:{current - 1}")
                ).first() is None else current - 1
            check_year(fiscal_year)
            cycles = {
                r.ref: r for r in conn.execute(
                    sa.select(_E.c.ref, _E.c.state, _E.c.overdue_since).where(
                        _E.c.fiscal_year == fiscal_year, _E.c.workflow.in_(cycle_workflows)))
            }
            counts = self._measure_counts_on(conn, municipality)
        region = cycles.get(f"cycle:region:{fiscal_year}")
        wf = self._registry.get("municipal_cycle")
        members = []
        for m in plan.members_of(fiscal_year):
            if municipality is not None and m.code != municipality:
                continue
            row = cycles.get(f"cycle:{m.code}:{fiscal_year}")
            members.append({
                "code": m.code, "name": m.name_ja, "name_en": m.name_en,
                "state": row.state if row else None,
                "state_label": wf.state_label(row.state) if row else None,
                "overdue": bool(row is not None and row.overdue_since is not None),
            })
        return {
            "fiscal_year": fiscal_year,
            "simulation": self.simulation,
            "now": now.isoformat(),
            "region": {"state": region.state if region else None,
                       "state_label": self._registry.get("regional_cycle").state_label(
                           region.state) if region else None,
                       "overdue": bool(region is not None and region.overdue_since is not None)},
            "municipalities": members,
            "measures": counts,
        }

    def measure_counts(self, *, municipality: str | None = None) -> dict[str, int]:
        """How many measures are in each state (of one municipality, if given), counted
        by the database."""
        with database.storage_errors("counting measures"), database.read_transaction(
            self._db
        ) as conn:
            return self._measure_counts_on(conn, municipality)

    @staticmethod
    def _measure_counts_on(conn: Connection, municipality: str | None) -> dict[str, int]:
        stmt = (sa.select(_E.c.state, sa.func.count()).where(_E.c.workflow == "measure")
                .group_by(_E.c.state).order_by(_E.c.state))
        if municipality is not None:
            stmt = stmt.where(
                _E.c.id.in_(sa.select(_S.c.entity_id).where(_S.c.municipality == municipality))
            )
        return {str(state): int(n) for state, n in conn.execute(stmt)}

    def schedule_of(self, fiscal_year: int) -> list[dict[str, Any]]:
        """The yearly schedule with its real dates for the check of ``fiscal_year`` (which
        happens in the following fiscal year), with that year's staff meetings."""
        plan = self.plan
        out = []
        for step in plan.steps:
            opens, due = plan.step_window(step.id, fiscal_year)
            out.append({"step": step.id, "actor": step.actor, "title_ja": step.title_ja,
                        "title_en": step.title_en, "opens": opens.isoformat(),
                        "due": due.isoformat(), "after": step.after})
        for n, day in enumerate(plan.staff_meeting_dates(fiscal_year + 1), start=1):
            out.append({"step": f"staff_meeting-{n}", "actor": "secretariat",
                        "title_ja": "担当者会議", "title_en": "staff meeting",
                        "opens": day.isoformat(), "due": day.isoformat(), "after": None})
        return out


# ----------------------------------------------------------------------------- scheduler


@dataclass(frozen=True, kw_only=True, slots=True)
class Firing:
    """What one due firing did."""

    key: str
    action: str
    due_at: datetime
    ref: str | None
    trigger: str | None
    status: str  # done | skipped
    outcome: str


@dataclass(frozen=True, kw_only=True, slots=True)
class TickReport:
    """What a tick did: every due firing it carried out, in schedule order."""

    at: datetime
    simulation: bool
    firings: tuple[Firing, ...]
    notices_sent: int
    notices_queued: int

    @property
    def done(self) -> int:
        return sum(1 for f in self.firings if f.status == "done")

    @property
    def skipped(self) -> int:
        return sum(1 for f in self.firings if f.status == "skipped")
