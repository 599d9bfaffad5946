"""A person who may act: registered, deactivated, reactivated by an administrator.

People are entities like any other so that registering someone, changing their role and
deactivating them each leave an entry in the audit log.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..types import Role
from .base import CreateSpec, FieldSpec, StateSpec, TransitionSpec, WorkflowSpec

ADMIN_ONLY = frozenset({Role.ADMIN})
ASSIGNABLE_ROLES = tuple(r.value for r in Role if r is not Role.SCHEDULER)


def _scope(data: Mapping[str, Any]) -> tuple[str, ...]:
    municipality = data.get("municipality")
    return (municipality,) if municipality else ()


PERSON = WorkflowSpec(
    name="person",
    label_ja="利用者",
    label_en="person",
    description="Someone who may act, with a role and (for staff) a municipality.",
    key_pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,63}$",
    states=(
        StateSpec(code="active", label_ja="有効", label_en="active"),
        StateSpec(code="inactive", label_ja="無効", label_en="inactive"),
    ),
    transitions=(
        TransitionSpec(
            trigger="deactivate",
            sources=("active",),
            dest="inactive",
            roles=ADMIN_ONLY,
            label_ja="無効化",
            label_en="deactivate",
        ),
        TransitionSpec(
            trigger="reactivate",
            sources=("inactive",),
            dest="active",
            roles=ADMIN_ONLY,
            label_ja="再有効化",
            label_en="reactivate",
        ),
    ),
    create=CreateSpec(
        roles=ADMIN_ONLY,
        fields=(
            FieldSpec(name="role", type="str", required=True, choices=ASSIGNABLE_ROLES),
            FieldSpec(name="municipality", type="str"),
            FieldSpec(name="name", type="str", max_length=200),
            FieldSpec(name="email", type="str", max_length=320),
        ),
        initial=lambda data: "active",
        initial_states=("active",),
        scope=_scope,
    ),
)
