"""The tables, as SQLAlchemy 2 typed models. Migrations in ``migrations/`` create them.

``entities`` holds every thing that has a state and an audit chain (measures, cycles,
meetings, people, ...): one generic table, so that the engine needs no code per workflow.
``audit_log`` is append-only (database triggers refuse UPDATE, DELETE and TRUNCATE).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Sequence,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
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


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Entity(Base):
    __tablename__ = "entities"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ref: Mapped[str] = mapped_column(String(200), unique=True)
    workflow: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(60))
    version: Mapped[int] = mapped_column(Integer)
    scope: Mapped[str] = mapped_column(String(400), default="")
    fiscal_year: Mapped[int | None] = mapped_column(Integer)
    attrs: Mapped[str] = mapped_column(Text, default="{}")
    overdue_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    chain_len: Mapped[int] = mapped_column(Integer)
    chain_head: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index(None, "workflow", "state"),
        Index(None, "fiscal_year"),
        CheckConstraint(state_check_sql(_builtin_pairs()), name="state"),
    )


class EntityScope(Base):
    """Which municipalities an entity belongs to (none: the whole region)."""

    __tablename__ = "entity_scope"

    entity_id: Mapped[int] = mapped_column(
        ForeignKey("entities.id", ondelete="CASCADE"), primary_key=True
    )
    municipality: Mapped[str] = mapped_column(String(6), primary_key=True, index=True)


class AuditLog(Base):
    """One entry per transition, record, refusal or checkpoint. Append-only."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        Sequence("audit_seq"),
        primary_key=True,
        autoincrement=False,
    )
    ref: Mapped[str] = mapped_column(String(200))
    entity_seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    virtual_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(20))
    fiscal_year: Mapped[int | None] = mapped_column(Integer)
    trigger: Mapped[str] = mapped_column(String(60))
    from_state: Mapped[str | None] = mapped_column(String(60))
    to_state: Mapped[str | None] = mapped_column(String(60))
    note: Mapped[str | None] = mapped_column(Text)
    data: Mapped[str] = mapped_column(Text)
    workflow_version: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("ref", "entity_seq"),)


class Outbox(Base):
    """Messages to deliver after commit (transition events, notifications)."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    audit_seq: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    channel: Mapped[str] = mapped_column(String(40))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    done: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (Index(None, "done", "channel", "next_attempt_at"),)


class Evaluation(Base):
    """A measure's yearly evaluation (one per measure and fiscal year)."""

    __tablename__ = "evaluations"

    entity_id: Mapped[int] = mapped_column(
        ForeignKey("entities.id", ondelete="CASCADE"), primary_key=True
    )
    fiscal_year: Mapped[int] = mapped_column(Integer, primary_key=True)
    rating: Mapped[str] = mapped_column(String(20))
    actual: Mapped[float | None] = mapped_column(Float)
    comment: Mapped[str] = mapped_column(Text, default="")
    recorded_by: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Member(Base):
    """A member municipality of the plan, with the fiscal years of its membership."""

    __tablename__ = "members"

    code: Mapped[str] = mapped_column(String(6), primary_key=True)
    name_ja: Mapped[str] = mapped_column(String(100))
    name_en: Mapped[str] = mapped_column(String(100))
    joined: Mapped[int] = mapped_column(Integer)
    left: Mapped[int | None] = mapped_column(Integer)


class DueFiring(Base):
    """A firing the yearly schedule made due, under its idempotency key."""

    __tablename__ = "due_firings"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    fiscal_year: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(20))
    step: Mapped[str | None] = mapped_column(String(60))
    ref: Mapped[str | None] = mapped_column(String(200))
    trigger: Mapped[str | None] = mapped_column(String(60))
    states: Mapped[str] = mapped_column(String(200))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    order_no: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(10))
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index(None, "status", "due_at"),)


class Setting(Base):
    """Facts about the database itself (created when, by which version, simulation or not)."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(60), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
