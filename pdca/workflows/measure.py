"""The measure (施策・事業): a study project becomes an implementation project when funded.

``study`` (検討事業) → ``implemented`` (実施事業) on ``commercialise`` (事業化);
``implemented`` → ``completed`` on ``complete``; ``study | implemented`` → ``discontinued``
on ``discontinue``, which needs a reason. Municipal staff of an owning municipality fire the
triggers; a joint measure has several owners.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

from ..types import Role, validate_municipality_code
from .base import CreateSpec, FieldSpec, StateSpec, Subject, TransitionSpec, WorkflowSpec

_TOKYO = ZoneInfo("Asia/Tokyo")

STAFF_ONLY = frozenset({Role.STAFF})

KINDS = ("study", "implementation")


def _ended(subject: Subject) -> dict[str, Any]:
    """Remember the fiscal year a measure ended: it still needs that year's evaluation."""
    assert subject.at is not None
    local = subject.at.astimezone(_TOKYO)
    return {"ended_fy": local.year if local.month >= 4 else local.year - 1}


def _initial(data: Mapping[str, Any]) -> str:
    return "study" if data["kind"] == "study" else "implemented"


def _scope(data: Mapping[str, Any]) -> tuple[str, ...]:
    codes = tuple(dict.fromkeys(data["municipalities"]))
    for code in codes:
        validate_municipality_code(code)
    return codes


MEASURE = WorkflowSpec(
    name="measure",
    label_ja="施策・事業",
    label_en="measure",
    description="A measure of the plan, from study project to implementation and beyond.",
    key_pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$",
    states=(
        StateSpec(code="study", label_ja="検討事業", label_en="study project"),
        StateSpec(code="implemented", label_ja="実施事業", label_en="implementation project"),
        StateSpec(code="completed", label_ja="完了", label_en="completed", final=True),
        StateSpec(code="discontinued", label_ja="中止", label_en="discontinued", final=True),
    ),
    transitions=(
        TransitionSpec(
            trigger="commercialise",
            sources=("study",),
            dest="implemented",
            roles=STAFF_ONLY,
            label_ja="事業化",
            label_en="commercialise",
            fields=(
                FieldSpec(name="fiscal_year", type="int", minimum=1900, maximum=2999,
                          label_ja="事業化年度",
                          label_en="fiscal year funded"),
                FieldSpec(name="budget_jpy", type="int", label_ja="予算額（円）",
                          label_en="budget (JPY)"),
            ),
        ),
        TransitionSpec(
            trigger="complete",
            sources=("implemented",),
            dest="completed",
            roles=STAFF_ONLY,
            effect=_ended,
            label_ja="完了",
            label_en="complete",
        ),
        TransitionSpec(
            trigger="discontinue",
            sources=("study", "implemented"),
            dest="discontinued",
            roles=STAFF_ONLY,
            effect=_ended,
            label_ja="中止",
            label_en="discontinue",
            fields=(
                FieldSpec(name="reason", type="str", required=True, label_ja="中止理由",
                          label_en="reason"),
            ),
        ),
    ),
    create=CreateSpec(
        roles=frozenset({Role.STAFF, Role.SECRETARIAT, Role.ADMIN}),
        fields=(
            FieldSpec(name="municipalities", type="str_list", required=True),
            FieldSpec(name="title_ja", type="str", required=True, max_length=500),
            FieldSpec(name="title_en", type="str", max_length=500),
            FieldSpec(name="policy_area", type="str"),
            FieldSpec(name="kind", type="str", required=True, choices=KINDS),
            FieldSpec(name="priority_project", type="str"),
            FieldSpec(name="leading", type="bool"),
            FieldSpec(name="indicator", type="str"),
            FieldSpec(name="unit", type="str"),
            FieldSpec(name="target", type="float"),
        ),
        initial=_initial,
        initial_states=("study", "implemented"),
        scope=_scope,
    ),
)
