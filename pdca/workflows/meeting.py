"""Meetings, the advisory committee's advice, and the staff meeting's theme projects.

**Meeting** (``meeting:ID``) — liaison council (連絡会議), advisory committee (意見聴取委員会),
staff meeting (担当者会議), a municipality's policy meeting (政策会議): ``planned`` → ``held``
→ ``minutes_recorded``; ``planned`` → ``postponed`` → ``planned``; ``planned |
postponed`` → ``cancelled``. The secretariat runs the regional meetings, the committee
clerk also the advisory committee, a municipality's staff its policy meeting.

**Advice** (``advice:ID``, 助言) given at an advisory committee: ``open`` → ``answered``, with
the answer, so every piece of advice can be traced to what was done about it.

**Theme project** (``project:ID``) set up by the staff meeting for joint work on a theme
(テーマごとにプロジェクトを設置): ``proposed`` → ``active`` → ``concluded``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from ..types import Role, validate_municipality_code
from .base import (
    CreateSpec,
    FieldSpec,
    GuardContext,
    StateSpec,
    Subject,
    TransitionSpec,
    WorkflowSpec,
)

MEETING_KINDS = ("liaison_council", "advisory_committee", "staff_meeting", "policy_meeting")
MEETING_LABELS = {
    "liaison_council": ("連絡会議", "liaison council"),
    "advisory_committee": ("意見聴取委員会", "advisory committee"),
    "staff_meeting": ("担当者会議", "staff meeting"),
    "policy_meeting": ("政策会議", "policy meeting"),
}
_TOKYO = ZoneInfo("Asia/Tokyo")
SECRETARIAT = frozenset({Role.SECRETARIAT})
REGION_RUNNERS = frozenset({Role.SECRETARIAT, Role.CLERK, Role.STAFF})


def meeting_roles(attrs: Mapping[str, Any], spec: TransitionSpec) -> frozenset[Role]:
    """Who runs a meeting depends on its kind."""
    kind = attrs.get("kind")
    if kind == "policy_meeting":
        return frozenset({Role.STAFF})
    if kind == "advisory_committee":
        return frozenset({Role.SECRETARIAT, Role.CLERK})
    return SECRETARIAT


def _meeting_scope(data: Mapping[str, Any]) -> tuple[str, ...]:
    from ..errors import InvalidData

    municipality = data.get("municipality")
    if data["kind"] == "policy_meeting":
        if not municipality:
            raise InvalidData("a policy meeting needs its municipality", field="municipality")
        return (validate_municipality_code(municipality),)
    if municipality:
        raise InvalidData("only a policy meeting belongs to a municipality",
                          field="municipality")
    return ()


def date_has_come(subject: Subject, ctx: GuardContext) -> str | None:
    held_on = subject.data.get("date") or subject.attrs.get("date")
    today = ctx.now.astimezone(_TOKYO).date()
    if held_on and date.fromisoformat(str(held_on)) > today:
        return f"the meeting is planned for {held_on}; it cannot be held before that day"
    return None


def _held(subject: Subject) -> dict[str, Any]:
    assert subject.at is not None
    held_on = subject.data.get("date") or subject.attrs.get("date") or (
        subject.at.astimezone(_TOKYO).date().isoformat()
    )
    return {"held_on": held_on}


def _rescheduled(subject: Subject) -> dict[str, Any]:
    return {"date": subject.data["date"]}


def _minutes(subject: Subject) -> dict[str, Any]:
    return {"minutes": subject.data["minutes"]}


MEETING = WorkflowSpec(
    name="meeting",
    label_ja="会議",
    label_en="meeting",
    description="A meeting of the yearly schedule.",
    roles_for=meeting_roles,
    states=(
        StateSpec(code="planned", label_ja="予定", label_en="planned"),
        StateSpec(code="held", label_ja="開催済", label_en="held"),
        StateSpec(code="minutes_recorded", label_ja="議事録登録済", label_en="minutes recorded",
                  final=True),
        StateSpec(code="postponed", label_ja="延期", label_en="postponed"),
        StateSpec(code="cancelled", label_ja="中止", label_en="cancelled", final=True),
    ),
    transitions=(
        TransitionSpec(trigger="hold", sources=("planned",), dest="held",
                       roles=REGION_RUNNERS, guards=(date_has_come,), effect=_held,
                       label_ja="開催", label_en="hold",
                       fields=(FieldSpec(name="date", type="date", label_ja="開催日",
                                         label_en="date held"),)),
        TransitionSpec(trigger="record_minutes", sources=("held",), dest="minutes_recorded",
                       roles=REGION_RUNNERS, effect=_minutes, label_ja="議事録登録",
                       label_en="record minutes",
                       fields=(FieldSpec(name="minutes", type="str", required=True,
                                         max_length=20000),)),
        TransitionSpec(trigger="postpone", sources=("planned",), dest="postponed",
                       roles=REGION_RUNNERS, label_ja="延期", label_en="postpone",
                       fields=(FieldSpec(name="reason", type="str"),)),
        TransitionSpec(trigger="reschedule", sources=("postponed",), dest="planned",
                       roles=REGION_RUNNERS, effect=_rescheduled, label_ja="日程再設定",
                       label_en="reschedule",
                       fields=(FieldSpec(name="date", type="date", required=True),)),
        TransitionSpec(trigger="cancel", sources=("planned", "postponed"), dest="cancelled",
                       roles=REGION_RUNNERS, label_ja="中止", label_en="cancel",
                       fields=(FieldSpec(name="reason", type="str", required=True),)),
    ),
    create=CreateSpec(
        roles=frozenset({Role.SECRETARIAT, Role.CLERK, Role.STAFF, Role.SCHEDULER}),
        fields=(
            FieldSpec(name="kind", type="str", required=True, choices=MEETING_KINDS),
            FieldSpec(name="fiscal_year", type="int", required=True, minimum=1900, maximum=2999),
            FieldSpec(name="date", type="date", required=True),
            FieldSpec(name="municipality", type="str"),
            FieldSpec(name="title", type="str", max_length=500),
        ),
        initial=lambda data: "planned",
        initial_states=("planned",),
        scope=_meeting_scope,
        fiscal_year=lambda data: int(data["fiscal_year"]),
    ),
)


def _answered(subject: Subject) -> dict[str, Any]:
    assert subject.at is not None
    return {"answer": subject.data["answer"], "answered_at": subject.at.isoformat()}


ADVICE = WorkflowSpec(
    name="advice",
    label_ja="助言",
    label_en="advice",
    description="Advice given by the advisory committee, and what was done about it.",
    states=(
        StateSpec(code="open", label_ja="未対応", label_en="open"),
        StateSpec(code="answered", label_ja="対応済", label_en="answered", final=True),
    ),
    transitions=(
        TransitionSpec(trigger="answer", sources=("open",), dest="answered",
                       roles=SECRETARIAT, effect=_answered, label_ja="対応を記録",
                       label_en="answer",
                       fields=(FieldSpec(name="answer", type="str", required=True,
                                         max_length=20000),)),
    ),
    create=CreateSpec(
        roles=frozenset({Role.CLERK, Role.SECRETARIAT}),
        fields=(
            FieldSpec(name="meeting", type="str", required=True),
            FieldSpec(name="fiscal_year", type="int", required=True, minimum=1900, maximum=2999),
            FieldSpec(name="text", type="str", required=True, max_length=20000),
            FieldSpec(name="member", type="str", max_length=200),
        ),
        initial=lambda data: "open",
        initial_states=("open",),
        fiscal_year=lambda data: int(data["fiscal_year"]),
    ),
)


def _concluded(subject: Subject) -> dict[str, Any]:
    return {"outcome": subject.data.get("outcome", "")}


THEME_PROJECT = WorkflowSpec(
    name="theme_project",
    kind="project",
    label_ja="テーマ別プロジェクト",
    label_en="theme project",
    description="Joint work on a theme, set up by the staff meeting.",
    states=(
        StateSpec(code="proposed", label_ja="提案", label_en="proposed"),
        StateSpec(code="active", label_ja="実施中", label_en="active"),
        StateSpec(code="concluded", label_ja="終了", label_en="concluded", final=True),
    ),
    transitions=(
        TransitionSpec(trigger="launch", sources=("proposed",), dest="active",
                       roles=SECRETARIAT, label_ja="開始", label_en="launch"),
        TransitionSpec(trigger="conclude", sources=("active",), dest="concluded",
                       roles=SECRETARIAT, effect=_concluded, label_ja="終了",
                       label_en="conclude",
                       fields=(FieldSpec(name="outcome", type="str", max_length=20000),)),
    ),
    create=CreateSpec(
        roles=SECRETARIAT,
        fields=(
            FieldSpec(name="title_ja", type="str", required=True, max_length=500),
            FieldSpec(name="title_en", type="str", max_length=500),
            FieldSpec(name="meeting", type="str"),
            FieldSpec(name="fiscal_year", type="int", required=True, minimum=1900, maximum=2999),
        ),
        initial=lambda data: "proposed",
        initial_states=("proposed",),
        fiscal_year=lambda data: int(data["fiscal_year"]),
    ),
)
