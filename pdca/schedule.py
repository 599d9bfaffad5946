"""What the yearly schedule makes due, and when (pure: a function of the plan and a time).

For each fiscal year N the plan's schedule (図表7-4) implies, in Asia/Tokyo:

- ``open_year`` on 1 April N: the cycles of N are opened for that year's members (and the
  plan's staff meetings of N scheduled); then ``start`` moves each member's cycle
  ``plan → do``;
- ``begin_check`` when the first step of the check of N opens (1 April N+1 in the bundled
  plan): ``do → check_status`` for every member and the region;
- a window opening for every later municipal step: a cycle that finished the previous
  step early and waits (``emissions_pending`` …) moves in;
- a reminder ``reminder_days`` before each step's due date, to whoever still has it open;
- a deadline the day after each step's due date: a cycle still in that step is marked
  overdue (audit entry ``deadline_missed``).

Every firing has an idempotency key ``plan:fy:action:step:entity``; the engine stores due
firings as rows under that key, so firing twice has the effect of firing once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from .calendar import fiscal_year_of, start_of_day
from .plans import Plan
from .workflows.cycles import FIRST_STEP, MUNICIPAL_STEPS, REGIONAL_STEPS, WINDOW_OPENERS

OPEN_YEAR = "open_year"
FIRE = "fire"
REMINDER = "reminder"
DEADLINE = "deadline"

#: Order of actions due at the same moment (deadlines before new windows, and so on).
_ACTION_ORDER = {OPEN_YEAR: 0, DEADLINE: 1, FIRE: 2, REMINDER: 3}


@dataclass(frozen=True, kw_only=True, slots=True)
class Due:
    """One firing the schedule makes due."""

    key: str
    at: datetime
    order: int
    action: str
    fiscal_year: int
    step: str | None = None
    ref: str | None = None
    trigger: str | None = None
    #: The states in which the action applies; in any other state it is skipped.
    states: tuple[str, ...] = ()


def _key(plan: Plan, fy: int, action: str, step: str, entity: str) -> str:
    return f"{plan.id}:{fy}:{action}:{step}:{entity}"


def due_for_year(plan: Plan, fy: int) -> list[Due]:
    """Every firing implied by the schedule for the cycles of fiscal year ``fy``."""
    key = ("due_for_year", fy)
    if key not in plan._memo:  # a plan never changes; a national one has 50,000 a year
        plan._memo[key] = tuple(_due_for_year(plan, fy))
    return list(plan._memo[key])


def _due_for_year(plan: Plan, fy: int) -> list[Due]:
    members = [m.code for m in plan.members_of(fy)]
    out: list[Due] = []
    year_start = start_of_day(date(fy, 4, 1))
    out.append(Due(key=_key(plan, fy, OPEN_YEAR, "-", "-"), at=year_start, order=0,
                   action=OPEN_YEAR, fiscal_year=fy))
    for n, code in enumerate(members):
        ref = f"cycle:{code}:{fy}"
        out.append(Due(key=_key(plan, fy, FIRE, "start", ref), at=year_start, order=1 + n,
                       action=FIRE, fiscal_year=fy, ref=ref, trigger="start",
                       states=("plan",)))

    steps = {s.id: s for s in plan.steps}
    if FIRST_STEP in steps:
        opens, _ = plan.step_window(FIRST_STEP, fy)
        at = start_of_day(opens)
        for n, ref in enumerate([f"cycle:{c}:{fy}" for c in members] + [f"cycle:region:{fy}"]):
            out.append(Due(key=_key(plan, fy, FIRE, "begin_check", ref), at=at, order=n,
                           action=FIRE, fiscal_year=fy, step=FIRST_STEP, ref=ref,
                           trigger="begin_check", states=("do",)))

    for index, step in enumerate(plan.steps):
        if step.id in MUNICIPAL_STEPS:
            refs = [f"cycle:{c}:{fy}" for c in members]
            states = MUNICIPAL_STEPS[step.id]
        elif step.id in REGIONAL_STEPS:
            refs = [f"cycle:region:{fy}"]
            states = REGIONAL_STEPS[step.id]
        else:
            continue
        opens, due = plan.step_window(step.id, fy)
        opener = WINDOW_OPENERS.get(step.id)
        # The moments of the step, once (not once per member).
        opens_at = start_of_day(opens)
        reminder = due - timedelta(days=plan.reminder_days)
        reminder_at = (start_of_day(reminder)
                       if plan.reminder_days > 0 and reminder > opens else None)
        deadline_at = start_of_day(due + timedelta(days=1))
        for n, ref in enumerate(refs):
            order = index * 10_000 + n
            if opener is not None:
                trigger, waiting = opener
                out.append(Due(key=_key(plan, fy, FIRE, step.id, ref), at=opens_at,
                               order=order, action=FIRE, fiscal_year=fy, step=step.id,
                               ref=ref, trigger=trigger, states=(waiting,)))
            if reminder_at is not None:
                out.append(Due(key=_key(plan, fy, REMINDER, step.id, ref),
                               at=reminder_at, order=order, action=REMINDER,
                               fiscal_year=fy, step=step.id, ref=ref, states=states))
            out.append(Due(key=_key(plan, fy, DEADLINE, step.id, ref),
                           at=deadline_at, order=order,
                           action=DEADLINE, fiscal_year=fy, step=step.id, ref=ref,
                           states=states))
    return sorted(out, key=sort_key)


def sort_key(due: Due) -> tuple[datetime, int, int, str]:
    """Schedule order: by time, then kind of action, then the schedule's own order."""
    return (due.at, _ACTION_ORDER[due.action], due.order, due.key)


def due_until(plan: Plan, first_fy: int, until: datetime) -> list[Due]:
    """Everything due at or before ``until`` for the fiscal years from ``first_fy`` on."""
    last_fy = min(plan.last_fiscal_year, fiscal_year_of(until))
    out: list[Due] = []
    for fy in range(first_fy, last_fy + 1):
        out.extend(d for d in due_for_year(plan, fy) if d.at <= until)
    return sorted(out, key=sort_key)


def _years_after(plan: Plan, first_fy: int, after: datetime | None) -> int:
    """The first fiscal year that may have firings due after ``after``: the firings of FY
    N end with the deadlines of its check, in FY N+1, at the latest on 1 April N+2."""
    if after is None:
        return first_fy
    return max(first_fy, fiscal_year_of(after) - YEARS_OF_FIRINGS + 1)


#: How many fiscal years the firings of one fiscal year span (N, its check in N+1, and
#: the last deadlines on the first day of N+2).
YEARS_OF_FIRINGS = 3


def due_between(plan: Plan, first_fy: int, after: datetime | None, until: datetime
                ) -> list[Due]:
    """Everything due after ``after`` (None: since the beginning) and at or before
    ``until``, for the fiscal years from ``first_fy`` on."""
    last_fy = min(plan.last_fiscal_year, fiscal_year_of(until))
    out: list[Due] = []
    for fy in range(_years_after(plan, first_fy, after), last_fy + 1):
        out.extend(d for d in due_for_year(plan, fy)
                   if d.at <= until and (after is None or d.at > after))
    return sorted(out, key=sort_key)


def next_due_after(plan: Plan, first_fy: int, after: datetime) -> datetime | None:
    """The first moment after ``after`` at which something becomes due (for simulations)."""
    last_fy = min(plan.last_fiscal_year, fiscal_year_of(after) + 1)
    times = [
        d.at
        for fy in range(_years_after(plan, first_fy, after), last_fy + 1)
        for d in due_for_year(plan, fy)
        if d.at > after
    ]
    return min(times, default=None)
