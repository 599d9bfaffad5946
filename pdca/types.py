"""Value objects of the public API: frozen, keyword-only, validated when built.

An invalid reference, role or municipality code cannot exist as one of these objects: the
constructor raises :class:`~pdca.errors.InvalidInput` instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from .errors import InvalidInput, UnknownReference


class Role(StrEnum):
    """What a person may do. ``scheduler`` is the system actor of time-based transitions."""

    STAFF = "staff"
    SECRETARIAT = "secretariat"
    CLERK = "clerk"
    AUDITOR = "auditor"
    ADMIN = "admin"
    SCHEDULER = "scheduler"

    @classmethod
    def parse(cls, value: str) -> Role:
        try:
            return cls(value)
        except ValueError:
            known = ", ".join(r.value for r in cls if r is not cls.SCHEDULER)
            raise InvalidInput(f"unknown role {value!r}; the roles are {known}") from None


ROLE_LABELS: Mapping[Role, tuple[str, str]] = {
    Role.STAFF: ("市町村担当者", "municipal staff"),
    Role.SECRETARIAT: ("事務局", "secretariat"),
    Role.CLERK: ("意見聴取委員会書記", "committee clerk"),
    Role.AUDITOR: ("監査担当", "auditor"),
    Role.ADMIN: ("管理者", "administrator"),
    Role.SCHEDULER: ("スケジューラ", "scheduler"),
}

#: The actor id of time-based transitions; no person may be registered under it.
SCHEDULER_ACTOR = "scheduler"
#: The actor id of set-up work done before any administrator exists.
SYSTEM_ACTOR = "system"

_MUNICIPALITY_RE = re.compile(r"^[0-9]{6}$")


def municipality_check_digit(first_five: str) -> int:
    """The check digit of a 全国地方公共団体コード (JIS X 0402) from its first five digits.

    >>> municipality_check_digit("43100")
    1
    """
    total = sum(int(d) * w for d, w in zip(first_five, (6, 5, 4, 3, 2), strict=True))
    return (11 - total % 11) % 10


def validate_municipality_code(code: str) -> str:
    """Return ``code`` if it is a well-formed 6-digit local government code, else raise."""
    if not _MUNICIPALITY_RE.match(code):
        raise InvalidInput(f"municipality code {code!r} must be 6 digits (全国地方公共団体コード)")
    expected = municipality_check_digit(code[:5])
    if int(code[5]) != expected:
        raise InvalidInput(
            f"municipality code {code!r} has a wrong check digit (expected {code[:5]}{expected})"
        )
    return code


_REF_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,150}$")


@dataclass(frozen=True, kw_only=True, slots=True)
class Ref:
    """A reference to an entity, ``kind:key`` (``measure:M-001``, ``cycle:431001:2025``)."""

    kind: str
    key: str

    def __post_init__(self) -> None:
        if not re.match(r"^[a-z][a-z_]{0,30}$", self.kind) or not _REF_KEY_RE.match(self.key):
            raise UnknownReference(str(self), f"malformed reference {str(self)!r}")

    @classmethod
    def parse(cls, text: str) -> Ref:
        kind, sep, key = text.strip().partition(":")
        if not sep or not key:
            raise UnknownReference(
                text, f"malformed reference {text!r}: expected KIND:KEY, e.g. measure:M-001"
            )
        return cls(kind=kind, key=key)

    def __str__(self) -> str:
        return f"{self.kind}:{self.key}"


@dataclass(frozen=True, kw_only=True, slots=True)
class Person:
    """Someone who may act: a role and, for municipal staff, their municipality."""

    id: str
    role: Role
    municipality: str | None = None
    name: str = ""
    email: str | None = None
    active: bool = True

    def __post_init__(self) -> None:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,63}$", self.id):
            raise InvalidInput(
                f"person id {self.id!r} must be 1-64 letters, digits, '.', '_', '-' or '@'",
                field="id",
            )
        if self.id in (SCHEDULER_ACTOR, SYSTEM_ACTOR):
            raise InvalidInput(f"{self.id!r} is reserved for the system", field="id")
        if self.role is Role.SCHEDULER:
            raise InvalidInput("the scheduler role belongs to the system actor", field="role")
        if self.role is Role.STAFF:
            if self.municipality is None:
                raise InvalidInput("municipal staff need a municipality", field="municipality")
            validate_municipality_code(self.municipality)
        elif self.municipality is not None:
            raise InvalidInput(
                f"only municipal staff belong to a municipality, not {self.role.value}",
                field="municipality",
            )


@dataclass(frozen=True, kw_only=True, slots=True)
class Transition:
    """What happened when a trigger fired (also what ``on_transition`` subscribers get)."""

    seq: int
    ref: str
    workflow: str
    trigger: str
    from_state: str | None
    to_state: str
    actor: str
    role: str
    at: datetime
    note: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    hash: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class EntityView:
    """An entity as one actor sees it now."""

    ref: str
    workflow: str
    state: str
    state_label: str
    version: int
    scope: tuple[str, ...]
    fiscal_year: int | None
    attrs: Mapping[str, Any]
    overdue: bool
    allowed: tuple[str, ...]
    blocked: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditEntry:
    """One line of the audit log, as stored."""

    seq: int
    ref: str
    entity_seq: int
    kind: str
    at: datetime
    virtual_at: datetime | None
    actor: str
    role: str
    fiscal_year: int | None
    trigger: str
    from_state: str | None
    to_state: str | None
    note: str | None
    data: str
    workflow_version: str
    prev_hash: str
    hash: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Problem:
    """One defect found by :func:`pdca.Engine.verify_audit`."""

    seq: int | None
    ref: str | None
    reason: str
    detail: str


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifyReport:
    """The result of verifying the audit log."""

    entries: int
    entities: int
    checkpoints: int
    problems: tuple[Problem, ...]
    last_checkpoint_seq: int | None = None
    last_checkpoint_digest: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad(self) -> Problem | None:
        return self.problems[0] if self.problems else None
