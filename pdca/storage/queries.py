"""The read-only queries the workflows' guards use, by name.

A guard asks ``ctx.query("missing_evaluations", municipality=..., fiscal_year=...)``; the
engine passes the open connection of the transition, so a guard sees exactly what the
transition will commit against.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..calendar import start_of_day
from .models import Entity, EntityScope, Evaluation

if TYPE_CHECKING:
    from ..plans import Plan

_E = cast(sa.Table, Entity.__table__)
_S = cast(sa.Table, EntityScope.__table__)
_V = cast(sa.Table, Evaluation.__table__)

REPORTED_STATES = ("act", "closed")


def ref_prefix(column: Any, prefix: str) -> Any:
    """``column`` starts with ``prefix``, as a range the ``ref`` index serves (a LIKE is a
    full scan on SQLite, and on PostgreSQL outside the C collation); the LIKE stays, so
    that a collation that orders punctuation its own way cannot widen the range."""
    return sa.and_(column >= prefix, column < prefix + "\U0010ffff", column.startswith(prefix))


def _scoped_ids(conn: Connection, municipality: str) -> list[int]:
    """Ids of the entities that belong to ``municipality``, from ``entity_scope`` alone.

    Read first and on their own so that no planner starts from the ``workflow`` index
    and walks every measure of the country (SQLite without statistics does).
    """
    return [int(i) for i in conn.execute(
        sa.select(_S.c.entity_id).where(_S.c.municipality == municipality)).scalars()]


def _chunks(ids: list[int], size: int = 500) -> list[list[int]]:
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def _measures_of(conn: Connection, municipality: str, fiscal_year: int
                 ) -> list[tuple[int, str, str]]:
    year_end = start_of_day(date(fiscal_year + 1, 4, 1))
    rows: list[tuple[int, str, str]] = []
    for chunk in _chunks(_scoped_ids(conn, municipality)):
        # Looked up by id alone, the workflow checked here: with `workflow = 'measure'` in
        # the query SQLite walks every measure of the country through that index instead.
        rows.extend(
            (r.id, r.ref, r.attrs)
            for r in conn.execute(
                sa.select(_E.c.id, _E.c.ref, _E.c.attrs, _E.c.workflow, _E.c.created_at)
                .where(_E.c.id.in_(chunk))
            )
            if r.workflow == "measure" and r.created_at < year_end
        )
    return sorted(rows, key=lambda r: r[1])


def _active(rows: list[tuple[int, str, str]], fiscal_year: int) -> list[tuple[int, str]]:
    active = []
    for entity_id, ref, attrs in rows:
        ended = json.loads(attrs).get("ended_fy")
        if ended is None or ended >= fiscal_year:
            active.append((entity_id, ref.split(":", 1)[1]))
    return active


def active_measures(conn: Connection, municipality: str, fiscal_year: int) -> list[str]:
    """Codes of the municipality's measures that were active in ``fiscal_year``.

    A measure is active in a year if it was created before the year ended (31 March,
    Asia/Tokyo) and was not completed or discontinued before the year began.
    """
    return [code for _, code in _active(_measures_of(conn, municipality, fiscal_year),
                                        fiscal_year)]


def missing_evaluations(conn: Connection, *, municipality: str, fiscal_year: int) -> list[str]:
    active = _active(_measures_of(conn, municipality, fiscal_year), fiscal_year)
    evaluated: set[int] = set()
    for chunk in _chunks([entity_id for entity_id, _ in active]):
        evaluated.update(int(i) for i in conn.execute(
            sa.select(_V.c.entity_id).where(_V.c.entity_id.in_(chunk),
                                            _V.c.fiscal_year == fiscal_year)).scalars())
    return [code for entity_id, code in active if entity_id not in evaluated]


def build(plan_of: Callable[[Connection], Plan]) -> dict[str, Callable[..., Any]]:
    """The named queries, given a way to read the plan on a connection."""

    def missing_emissions(
        conn: Connection, *, municipality: str, fiscal_year: int
    ) -> tuple[int, list[str]]:
        plan = plan_of(conn)
        year = plan.inventory_year(fiscal_year)
        prefix = f"emissions:{municipality}:{year}:"
        present = {
            r.ref[len(prefix):]
            for r in conn.execute(sa.select(_E.c.ref).where(ref_prefix(_E.c.ref, prefix)))
        }
        return year, [s for s in plan.sector_ids if s not in present]

    def members_not_reported(conn: Connection, *, fiscal_year: int) -> list[str]:
        plan = plan_of(conn)
        states = {
            r.ref: r.state
            for r in conn.execute(
                sa.select(_E.c.ref, _E.c.state).where(
                    _E.c.workflow == "municipal_cycle", _E.c.fiscal_year == fiscal_year
                )
            )
        }
        return [
            f"{m.name_ja} ({m.code})"
            for m in plan.members_of(fiscal_year)
            if states.get(f"cycle:{m.code}:{fiscal_year}") not in REPORTED_STATES
        ]

    def missing_priority_evaluations(conn: Connection, *, fiscal_year: int) -> list[str]:
        plan = plan_of(conn)
        row = conn.execute(
            sa.select(_E.c.attrs).where(_E.c.ref == f"cycle:region:{fiscal_year}")
        ).one_or_none()
        done = json.loads(row.attrs).get("priority_evaluations", {}) if row else {}
        return [p.id for p in plan.priority_projects if p.id not in done]

    def meeting_held(conn: Connection, *, kind: str, fiscal_year: int) -> date | None:
        held = []
        for row in conn.execute(
            sa.select(_E.c.attrs).where(
                _E.c.workflow == "meeting",
                _E.c.fiscal_year == fiscal_year,
                _E.c.state.in_(("held", "minutes_recorded")),
            )
        ):
            attrs = json.loads(row.attrs)
            if attrs.get("kind") == kind and attrs.get("held_on"):
                held.append(date.fromisoformat(attrs["held_on"]))
        return max(held) if held else None

    def open_advice(conn: Connection, *, fiscal_year: int) -> list[str]:
        return [
            r.ref
            for r in conn.execute(
                sa.select(_E.c.ref)
                .where(
                    _E.c.workflow == "advice",
                    _E.c.fiscal_year == fiscal_year,
                    _E.c.state == "open",
                )
                .order_by(_E.c.id)
            )
        ]

    def step_open(conn: Connection, *, step: str, fiscal_year: int, at: datetime) -> bool:
        """Whether the window of ``step`` for the check of ``fiscal_year`` has opened."""
        plan = plan_of(conn)
        opens, _ = plan.step_window(step, fiscal_year)
        return at >= start_of_day(opens)

    def regional_state(conn: Connection, *, fiscal_year: int) -> str | None:
        value = conn.execute(
            sa.select(_E.c.state).where(_E.c.ref == f"cycle:region:{fiscal_year}")
        ).scalar_one_or_none()
        return None if value is None else str(value)

    return {
        "missing_evaluations": missing_evaluations,
        "missing_emissions": missing_emissions,
        "members_not_reported": members_not_reported,
        "missing_priority_evaluations": missing_priority_evaluations,
        "meeting_held": meeting_held,
        "open_advice": open_advice,
        "regional_state": regional_state,
        "step_open": step_open,
    }
