"""The tables, as SQLAlchemy Core tables. Migrations in ``migrations/`` create them.

``entities`` holds every thing that has a state and an audit chain (measures, cycles,
meetings, people, ...): one generic table, so that the engine needs no code per workflow.
``audit_log`` is append-only (database triggers refuse UPDATE, DELETE and TRUNCATE).

The tables are plain :class:`sqlalchemy.Table` objects on one :class:`~sqlalchemy.MetaData`
(no ORM: the code only ever runs Core statements, and importing ``sqlalchemy.orm`` and
building mapped classes took a large share of the CLI's cold start). Each table is also
reachable as ``<Class>.__table__`` (``Entity.__table__``, ...) and the classes can stand
where SQLAlchemy expects a FROM clause (``select_from(Evaluation)``); ``Base.metadata`` is
the metadata the migrations are checked against.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Sequence,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.sql import FromClause
from sqlalchemy.types import TypeDecorator

from ..workflows import BUILTIN_SPECS

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: The schema revision this code expects (``alembic heads``; a test keeps them equal).
SCHEMA_REVISION = "0003"


class UTCDateTime(TypeDecorator[datetime]):
    """A point in time, stored in UTC and always returned timezone-aware (UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where a UTC time is required")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # pragma: no cover - sqlite returns datetime via SQLAlchemy
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def state_check_sql(pairs: list[tuple[str, str]]) -> str:
    """The CHECK constraint that only lets known (workflow, state) pairs into ``entities``."""
    allowed = ", ".join(f"'{w}:{s}'" for w, s in sorted(pairs))
    return f"(workflow || ':' || state) IN ({allowed})"


def _builtin_pairs() -> list[tuple[str, str]]:
    return [(w.name, s.code) for w in BUILTIN_SPECS for s in w.states]


class Base:
    """Holder of the schema's :class:`~sqlalchemy.MetaData` (tables, indexes, ``audit_seq``)."""

    metadata: ClassVar[MetaData] = MetaData(naming_convention=NAMING)


class _TableClass:
    """A name for one table, kept from the ORM models: ``__table__`` is the table.

    ``__table__`` is typed as :class:`~sqlalchemy.sql.FromClause`, as the ORM typed it, so
    the callers' ``cast(sa.Table, X.__table__)`` stays as it is.
    """

    __table__: ClassVar[FromClause]

    @classmethod
    def __clause_element__(cls) -> FromClause:
        return cls.__table__


def _big_id() -> BigInteger:
    """A 64-bit id (a plain INTEGER on SQLite, where only that is the rowid)."""
    return BigInteger().with_variant(Integer, "sqlite")


# Columns are NOT NULL unless ``nullable=True`` is given (as the typed models had them).


class Entity(_TableClass):
    """Anything with a state and an audit chain (measure, cycle, meeting, person, ...)."""

    __table__: ClassVar[FromClause] = Table(
        "entities",
        Base.metadata,
        Column("id", Integer, primary_key=True),
        Column("ref", String(200), nullable=False, unique=True),
        Column("workflow", String(40), nullable=False),
        Column("state", String(60), nullable=False),
        Column("version", Integer, nullable=False),
        Column("scope", String(400), nullable=False, default=""),
        Column("fiscal_year", Integer, nullable=True),
        Column("attrs", Text, nullable=False, default="{}"),
        Column("overdue_since", UTCDateTime, nullable=True),
        Column("chain_len", Integer, nullable=False),
        Column("chain_head", String(64), nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
        Index(None, "workflow", "state"),
        Index(None, "fiscal_year"),
        CheckConstraint(state_check_sql(_builtin_pairs()), name="state"),
    )


class EntityScope(_TableClass):
    """Which municipalities an entity belongs to (none: the whole region)."""

    __table__: ClassVar[FromClause] = Table(
        "entity_scope",
        Base.metadata,
        Column(
            "entity_id",
            Integer,
            ForeignKey("entities.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        Column("municipality", String(6), primary_key=True, index=True),
    )


class AuditLog(_TableClass):
    """One entry per transition, record, refusal or checkpoint. Append-only."""

    __table__: ClassVar[FromClause] = Table(
        "audit_log",
        Base.metadata,
        Column("seq", _big_id(), Sequence("audit_seq"), primary_key=True, autoincrement=False),
        Column("ref", String(200), nullable=False),
        Column("entity_seq", Integer, nullable=False),
        Column("kind", String(20), nullable=False),
        Column("at", UTCDateTime, nullable=False, index=True),
        Column("virtual_at", UTCDateTime, nullable=True),
        Column("actor", String(64), nullable=False, index=True),
        Column("role", String(20), nullable=False),
        Column("fiscal_year", Integer, nullable=True),
        Column("trigger", String(60), nullable=False),
        Column("from_state", String(60), nullable=True),
        Column("to_state", String(60), nullable=True),
        Column("note", Text, nullable=True),
        Column("data", Text, nullable=False),
        Column("workflow_version", String(64), nullable=False),
        Column("prev_hash", String(64), nullable=False),
        Column("hash", String(64), nullable=False),
        UniqueConstraint("ref", "entity_seq"),
    )


class Outbox(_TableClass):
    """Messages to deliver after commit (transition events, notifications)."""

    __table__: ClassVar[FromClause] = Table(
        "outbox",
        Base.metadata,
        Column("id", _big_id(), primary_key=True, autoincrement=True),
        Column("audit_seq", _big_id(), nullable=True),
        Column("channel", String(40), nullable=False),
        Column("payload", Text, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("attempts", Integer, nullable=False, default=0),
        Column("next_attempt_at", UTCDateTime, nullable=False),
        Column("delivered_at", UTCDateTime, nullable=True),
        Column("last_error", Text, nullable=True),
        Column("done", Boolean, nullable=False, default=False),
        Index(None, "done", "channel", "next_attempt_at"),
    )


class Evaluation(_TableClass):
    """A measure's yearly evaluation (one per measure and fiscal year)."""

    __table__: ClassVar[FromClause] = Table(
        "evaluations",
        Base.metadata,
        Column(
            "entity_id",
            Integer,
            ForeignKey("entities.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        Column("fiscal_year", Integer, primary_key=True),
        Column("rating", String(20), nullable=False),
        Column("actual", Float, nullable=True),
        Column("comment", Text, nullable=False, default=""),
        Column("recorded_by", String(64), nullable=False),
        Column("recorded_at", UTCDateTime, nullable=False),
    )


class Member(_TableClass):
    """A member municipality of the plan, with the fiscal years of its membership."""

    __table__: ClassVar[FromClause] = Table(
        "members",
        Base.metadata,
        Column("code", String(6), primary_key=True),
        Column("name_ja", String(100), nullable=False),
        Column("name_en", String(100), nullable=False),
        Column("joined", Integer, nullable=False),
        Column("left", Integer, nullable=True),
    )


class DueFiring(_TableClass):
    """A firing the yearly schedule made due, under its idempotency key."""

    __table__: ClassVar[FromClause] = Table(
        "due_firings",
        Base.metadata,
        Column("key", String(300), primary_key=True),
        Column("fiscal_year", Integer, nullable=False),
        Column("action", String(20), nullable=False),
        Column("step", String(60), nullable=True),
        Column("ref", String(200), nullable=True),
        Column("trigger", String(60), nullable=True),
        Column("states", String(200), nullable=False),
        Column("due_at", UTCDateTime, nullable=False),
        Column("order_no", Integer, nullable=False),
        Column("status", String(10), nullable=False),
        Column("done_at", UTCDateTime, nullable=True),
        Column("outcome", Text, nullable=True),
        Index(None, "status", "due_at"),
    )


class Setting(_TableClass):
    """Facts about the database itself (created when, by which version, simulation or not)."""

    __table__: ClassVar[FromClause] = Table(
        "settings",
        Base.metadata,
        Column("key", String(60), primary_key=True),
        Column("value", Text, nullable=False),
    )
