"""The plan itself, as an entity: loading or changing the plan file is audited on its chain."""

from __future__ import annotations

from ..types import Role
from .base import CreateSpec, FieldSpec, StateSpec, WorkflowSpec

PLAN = WorkflowSpec(
    name="plan",
    label_ja="計画",
    label_en="plan",
    description="The plan file in force; each load is an audit entry with its digest.",
    key_pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$",
    states=(StateSpec(code="active", label_ja="有効", label_en="active"),),
    transitions=(),
    create=CreateSpec(
        roles=frozenset({Role.ADMIN}),
        fields=(
            FieldSpec(name="digest", type="str", required=True),
            FieldSpec(name="source", type="str", required=True),
            FieldSpec(name="name_ja", type="str"),
            FieldSpec(name="name_en", type="str"),
        ),
        initial=lambda data: "active",
        initial_states=("active",),
    ),
)
