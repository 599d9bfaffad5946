"""The two PDCA cycles of the chapter (図表7-3): one per municipality, one for the region.

**Municipal review cycle** (``cycle:MUNICIPALITY:FY``), one per member municipality and
fiscal year N, covering the measures carried out in FY N: ``plan`` → ``do`` (1 April N) →
the check, in FY N+1, in four sub-phases — ``check_status`` (confirm the measures' status)
→ ``check_emissions`` (calculate the municipality's emissions) → ``check_evaluation``
(check and evaluate progress) → ``check_report`` (internal report, 庁内報告) → ``act``
(revisions decided, the region's advice answered) → ``closed``.

**Regional review cycle** (``cycle:region:FY``), run by the secretariat: ``do`` →
``check_collect`` (collecting the members' internal reports) → ``check_aggregated`` (the
region's progress and emissions compiled, the four priority projects evaluated) →
``council_held`` (liaison council) → ``committee_held`` (advisory committee) →
``published`` (公表) → ``act`` → ``closed``.

The rules live in the guards below; the data they need comes through named queries of the
:class:`~pdca.workflows.GuardContext`.
"""

from __future__ import annotations

from collections.abc import Callable

from ..types import Role, validate_municipality_code
from .base import (
    CreateSpec,
    FieldSpec,
    Guard,
    GuardContext,
    StateSpec,
    Subject,
    TransitionSpec,
    WorkflowSpec,
)

STAFF = frozenset({Role.STAFF})
SECRETARIAT = frozenset({Role.SECRETARIAT})
SCHEDULER = frozenset({Role.SCHEDULER})
OPENERS = frozenset({Role.SCHEDULER, Role.SECRETARIAT, Role.ADMIN})
FY_FIELD = FieldSpec(name="fiscal_year", type="int", required=True, minimum=1900, maximum=2999)


def _fy(subject: Subject) -> int:
    assert subject.fiscal_year is not None
    return subject.fiscal_year


def _municipality(subject: Subject) -> str:
    return subject.scope[0]


def _count(n: int, one: str, many: str) -> str:
    """``1 sector has`` / ``3 sectors have``."""
    return f"{n} {one if n == 1 else many}"


def _listing(items: list[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


# ----------------------------------------------------------------------------- guards


def every_sector_has_emissions(subject: Subject, ctx: GuardContext) -> str | None:
    year, missing = ctx.query("missing_emissions", municipality=_municipality(subject),
                              fiscal_year=_fy(subject))
    if missing:
        return (f"{_count(len(missing), 'sector has', 'sectors have')} no emissions figure "
                f"for {year}: "
                f"{_listing(missing)}")
    return None


def every_active_measure_is_evaluated(subject: Subject, ctx: GuardContext) -> str | None:
    missing = ctx.query("missing_evaluations", municipality=_municipality(subject),
                        fiscal_year=_fy(subject))
    if missing:
        return (f"{_count(len(missing), 'measure has', 'measures have')} no evaluation for "
                f"FY{_fy(subject)}: {_listing(missing)}")
    return None


def region_has_published(subject: Subject, ctx: GuardContext) -> str | None:
    state = ctx.query("regional_state", fiscal_year=_fy(subject))
    if state not in ("published", "act", "closed"):
        return (f"the region has not yet published FY{_fy(subject)} "
                f"(its cycle is {state or 'not started'}); its advice comes first")
    return None


def every_member_reported(subject: Subject, ctx: GuardContext) -> str | None:
    missing = ctx.query("members_not_reported", fiscal_year=_fy(subject))
    if missing:
        return (f"{_count(len(missing), 'member has not made its', 'members have not made their')}"
                " internal report for "
                f"FY{_fy(subject)}: {_listing(missing)}")
    return None


def every_priority_project_evaluated(subject: Subject, ctx: GuardContext) -> str | None:
    missing = ctx.query("missing_priority_evaluations", fiscal_year=_fy(subject))
    if missing:
        return (f"{_count(len(missing), 'priority project has', 'priority projects have')} "
                f"no evaluation for FY{_fy(subject)}: "
                f"{_listing(missing)}")
    return None


def liaison_council_held(subject: Subject, ctx: GuardContext) -> str | None:
    if ctx.query("meeting_held", kind="liaison_council", fiscal_year=_fy(subject)) is None:
        return f"no liaison council for FY{_fy(subject)} has been held"
    return None


def advisory_committee_held(subject: Subject, ctx: GuardContext) -> str | None:
    committee = ctx.query("meeting_held", kind="advisory_committee", fiscal_year=_fy(subject))
    if committee is None:
        return f"no advisory committee for FY{_fy(subject)} has been held"
    council = ctx.query("meeting_held", kind="liaison_council", fiscal_year=_fy(subject))
    if council is not None and committee < council:
        return (f"the advisory committee ({committee}) was held before the liaison council "
                f"({council}); it must come after")
    return None


def every_advice_answered(subject: Subject, ctx: GuardContext) -> str | None:
    open_advice = ctx.query("open_advice", fiscal_year=_fy(subject))
    if open_advice:
        return (f"{_count(len(open_advice), 'piece of advice is', 'pieces of advice are')} "
                "not answered yet: "
                f"{_listing(open_advice)}")
    return None


def _window_open(step: str) -> Callable[[Subject, GuardContext], bool]:
    def when(subject: Subject, ctx: GuardContext) -> bool:
        return bool(ctx.query("step_open", step=step, fiscal_year=_fy(subject), at=ctx.now))

    when.__name__ = when.__qualname__ = f"window_open_{step}"
    return when


def _phase(
    trigger: str,
    source: str,
    step: str,
    dest: str,
    pending: str,
    opener: str,
    guards: tuple[Guard, ...],
    label_ja: str,
    label_en: str,
) -> tuple[TransitionSpec, ...]:
    """Finish a phase: into the next one if its window is open, else wait for it."""
    return (
        TransitionSpec(trigger=trigger, sources=(source,), dest=dest, roles=STAFF,
                       guards=guards, when=_window_open(step), label_ja=label_ja,
                       label_en=label_en),
        TransitionSpec(trigger=trigger, sources=(source,), dest=pending, roles=STAFF,
                       guards=guards, label_ja=label_ja, label_en=label_en),
        TransitionSpec(trigger=opener, sources=(pending,), dest=dest, roles=SCHEDULER,
                       time_based=True, label_ja="受付開始", label_en="window opens"),
    )


#: The schedule step (plan file) behind each phase of the municipal cycle, with the states
#: in which a cycle is "in" that step (waiting for its window, or working on it).
MUNICIPAL_STEPS: dict[str, tuple[str, ...]] = {
    "confirm_status": ("check_status",),
    "calculate_emissions": ("emissions_pending", "check_emissions"),
    "evaluate": ("evaluation_pending", "check_evaluation"),
    "internal_report": ("report_pending", "check_report"),
}
#: The time-based trigger that opens a step's window for a waiting cycle, and that state.
WINDOW_OPENERS: dict[str, tuple[str, str]] = {
    "calculate_emissions": ("open_emissions", "emissions_pending"),
    "evaluate": ("open_evaluation", "evaluation_pending"),
    "internal_report": ("open_report", "report_pending"),
}
#: The schedule steps of the regional cycle and the states in which the region is in them.
REGIONAL_STEPS: dict[str, tuple[str, ...]] = {
    "aggregate": ("check_collect",),
    "liaison_council": ("check_aggregated",),
    "advisory_committee": ("council_held",),
    "publish": ("committee_held",),
}
#: The step whose opening begins the check of the year under review.
FIRST_STEP = "confirm_status"


# ----------------------------------------------------------------------------- workflows

MUNICIPAL_CYCLE = WorkflowSpec(
    name="municipal_cycle",
    kind="cycle",
    key_pattern=r"^\d{6}:\d{4}$",
    label_ja="市町村の進捗管理サイクル",
    label_en="municipal review cycle",
    description="One per member municipality and fiscal year (図表7-3, cycle 1).",
    states=(
        StateSpec(code="plan", label_ja="計画", label_en="plan"),
        StateSpec(code="do", label_ja="実行", label_en="do"),
        StateSpec(code="check_status", label_ja="点検：実施状況の確認",
                  label_en="check: status review"),
        StateSpec(code="emissions_pending", label_ja="点検：排出量の算定 受付待ち",
                  label_en="check: waiting for the emissions window"),
        StateSpec(code="check_emissions", label_ja="点検：排出量の算定",
                  label_en="check: emissions calculation"),
        StateSpec(code="evaluation_pending", label_ja="点検：点検・評価 受付待ち",
                  label_en="check: waiting for the evaluation window"),
        StateSpec(code="check_evaluation", label_ja="点検：進捗の点検・評価",
                  label_en="check: evaluation"),
        StateSpec(code="report_pending", label_ja="点検：庁内報告 受付待ち",
                  label_en="check: waiting for the internal-report window"),
        StateSpec(code="check_report", label_ja="点検：庁内報告",
                  label_en="check: internal report"),
        StateSpec(code="act", label_ja="改善", label_en="act"),
        StateSpec(code="closed", label_ja="完了", label_en="closed", final=True),
    ),
    transitions=(
        TransitionSpec(trigger="start", sources=("plan",), dest="do", roles=SCHEDULER,
                       time_based=True, label_ja="年度開始", label_en="start of the year"),
        TransitionSpec(trigger="begin_check", sources=("do",), dest="check_status",
                       roles=SCHEDULER, time_based=True, label_ja="点検開始",
                       label_en="begin the check"),
        *_phase("confirm_status", "check_status", "calculate_emissions", "check_emissions",
                "emissions_pending", "open_emissions", (), "実施状況の確認完了",
                "confirm the measures' status"),
        *_phase("submit_emissions", "check_emissions", "evaluate", "check_evaluation",
                "evaluation_pending", "open_evaluation", (every_sector_has_emissions,),
                "排出量の算定完了", "submit the emissions"),
        *_phase("finish_evaluation", "check_evaluation", "internal_report", "check_report",
                "report_pending", "open_report", (every_active_measure_is_evaluated,),
                "点検・評価完了", "finish the evaluation"),
        TransitionSpec(trigger="report_internally", sources=("check_report",), dest="act",
                       roles=STAFF, label_ja="庁内報告", label_en="report internally",
                       fields=(FieldSpec(name="meeting", type="str",
                                         label_ja="政策会議", label_en="policy meeting"),)),
        TransitionSpec(trigger="close", sources=("act",), dest="closed", roles=STAFF,
                       guards=(region_has_published,), label_ja="改善・完了",
                       label_en="close (revisions decided)",
                       fields=(FieldSpec(name="revisions", type="str", max_length=4000,
                                         label_ja="見直し内容", label_en="revisions"),)),
    ),
    create=CreateSpec(
        roles=OPENERS,
        fields=(FieldSpec(name="municipality", type="str", required=True), FY_FIELD),
        initial=lambda data: "plan",
        initial_states=("plan",),
        scope=lambda data: (validate_municipality_code(data["municipality"]),),
        fiscal_year=lambda data: int(data["fiscal_year"]),
        key_of=lambda data: f"{data['municipality']}:{data['fiscal_year']}",
    ),
)

REGIONAL_CYCLE = WorkflowSpec(
    name="regional_cycle",
    kind="cycle",
    key_pattern=r"^region:\d{4}$",
    label_ja="圏域の進捗管理サイクル",
    label_en="regional review cycle",
    description="One per fiscal year, run by the secretariat (図表7-3, cycle 2).",
    states=(
        StateSpec(code="do", label_ja="実行", label_en="do"),
        StateSpec(code="check_collect", label_ja="点検：各市町村の報告の取りまとめ中",
                  label_en="check: collecting reports"),
        StateSpec(code="check_aggregated", label_ja="点検：圏域の取りまとめ完了",
                  label_en="check: aggregated"),
        StateSpec(code="council_held", label_ja="連絡会議 開催済", label_en="liaison council held"),
        StateSpec(code="committee_held", label_ja="意見聴取委員会 開催済",
                  label_en="advisory committee held"),
        StateSpec(code="published", label_ja="公表済", label_en="published"),
        StateSpec(code="act", label_ja="改善", label_en="act"),
        StateSpec(code="closed", label_ja="完了", label_en="closed", final=True),
    ),
    transitions=(
        TransitionSpec(trigger="begin_check", sources=("do",), dest="check_collect",
                       roles=SCHEDULER, time_based=True, label_ja="点検開始",
                       label_en="begin the check"),
        TransitionSpec(trigger="aggregate", sources=("check_collect",), dest="check_aggregated",
                       roles=SECRETARIAT,
                       guards=(every_member_reported, every_priority_project_evaluated),
                       label_ja="圏域の取りまとめ", label_en="aggregate"),
        TransitionSpec(trigger="hold_liaison_council", sources=("check_aggregated",),
                       dest="council_held", roles=SECRETARIAT, guards=(liaison_council_held,),
                       label_ja="連絡会議の開催", label_en="liaison council held"),
        TransitionSpec(trigger="hold_advisory_committee", sources=("council_held",),
                       dest="committee_held", roles=SECRETARIAT,
                       guards=(advisory_committee_held,),
                       label_ja="意見聴取委員会の開催", label_en="advisory committee held"),
        TransitionSpec(trigger="publish", sources=("committee_held",), dest="published",
                       roles=SECRETARIAT, label_ja="公表", label_en="publish",
                       fields=(FieldSpec(name="url", type="str", label_ja="公表先",
                                         label_en="where published"),
                               FieldSpec(name="report_sha256", type="str"),
                               FieldSpec(name="report_lang", type="str", choices=("ja", "en")),
                               FieldSpec(name="report_data", type="str",
                                         max_length=20_000_000))),
        TransitionSpec(trigger="begin_act", sources=("published",), dest="act",
                       roles=SECRETARIAT, label_ja="改善へ", label_en="begin act"),
        TransitionSpec(trigger="close", sources=("act",), dest="closed", roles=SECRETARIAT,
                       guards=(every_advice_answered,), label_ja="完了", label_en="close"),
    ),
    create=CreateSpec(
        roles=OPENERS,
        fields=(FY_FIELD,),
        initial=lambda data: "do",
        initial_states=("do",),
        fiscal_year=lambda data: int(data["fiscal_year"]),
        key_of=lambda data: f"region:{data['fiscal_year']}",
    ),
)
