"""Plan files: the TOML description of one climate action plan, and its value objects.

A plan says who the member municipalities are (and since when), how emissions are broken
down, what the reduction targets are, and the yearly schedule of the check (図表7-4). It
is loaded from TOML with :func:`load_plan` (a bundled plan by name, e.g. ``"kumamoto"``,
or a path) or :meth:`Plan.from_toml_text`. Every problem in a file is reported as ONE
:class:`~pdca.errors.InvalidInput` whose ``source`` is the file, ``line`` the line of the
offending key or value (1-based; the line of the table when a key is missing; ``None``
only when something is missing from the whole document, e.g. the ``[plan]`` table) and
``field`` its dotted path with 0-based indexes, e.g. ``members[3].code``. Unknown keys are
errors, so a typo cannot pass silently.

Schema (every key; "required" unless a default is given)::

    [plan]
    id                = "kumamoto"   # slug: lower-case letters, digits, '-', '_'
    name_ja           = "…"          # name of the plan
    name_en           = "…"
    base_year         = 2013         # default 2013: the year reductions are measured against
    statistics_lag    = 2            # default 2 (0–10): the emissions calculated during the
                                     # check of FY N (which happens in FY N+1) describe
                                     # inventory year N + 1 - statistics_lag
    first_fiscal_year = 2021         # first FY of the plan; after base_year
    last_fiscal_year  = 2030         # last FY of the plan; not before first_fiscal_year
    business_days     = true         # default true: schedule dates falling on a weekend,
                                     # public holiday or 29 Dec – 3 Jan move to the next
                                     # business day
    reminder_days     = 7            # default 7 (0–365): days before a due date to remind
    rating_scale = [                 # at least one; the progress ratings of measure
      { id = "A", label_ja = "順調", label_en = "on track" },   # evaluations; unique ids
    ]                                # ([[plan.rating_scale]] tables work too)

    [[members]]                      # at least one
    code    = "431001"   # 6-digit 全国地方公共団体コード, text, check digit verified; unique
    name_ja = "熊本市"
    name_en = "Kumamoto City"
    joined  = 2016       # first FY as a member
    left    = 2031       # optional: first FY no longer a member (after joined)

    [[sectors]]                      # at least one; unique ids
    id      = "transport_road"
    name_ja = "自動車"
    name_en = "Road vehicles"
    group   = "transport"            # optional id of the sector's group

    [[targets]]                      # optional; fiscal years increasing, after base_year
    fiscal_year = 2030
    reduction   = 0.46               # fraction of base-year emissions, 0–1 (1.0 = net zero)

    [[policy_areas]]                 # optional; unique ids
    id = "renewable_energy"
    name_ja = "…"
    name_en = "…"

    [[priority_projects]]            # optional; unique ids
    id = "priority-1"
    title_ja = "…"
    title_en = "…"

    [[schedule]]                     # at least one; the steps of the check, in order
    id       = "calculate_emissions" # unique
    actor    = "municipality"        # municipality | secretariat | liaison_council
                                     # | advisory_committee
    title_ja = "…"
    title_en = "…"
    opens    = "07-01"               # "MM-DD" in the FY after the one under review
    due      = "09-30"               # not before opens (fiscal-year order, April first)
    after    = "confirm_status"      # optional: an EARLIER step that must be complete
                                     # first; this step must not be due before it opens

    [[staff_meetings]]               # optional; the staff meetings planned in each FY
    month_day = "05-20"              # "MM-DD" in that fiscal year; unique

Ids (other than the plan's) are 1–64 letters, digits, ``_`` or ``-``. Month-days are
strictly ``"MM-DD"`` (see :func:`pdca.calendar.parse_month_day`).
"""

from __future__ import annotations

import bisect
import difflib
import hashlib
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from ..audit import canonical_json
from ..calendar import date_in_fiscal_year, fiscal_order, next_business_day, parse_month_day
from ..errors import InvalidInput
from ..types import validate_municipality_code

#: Who carries out a step of the schedule.
ACTORS = ("municipality", "secretariat", "liaison_council", "advisory_committee")

#: Fiscal and calendar years a plan may name.
MIN_YEAR = 1900
MAX_YEAR = 2999

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}")
_SLUG_RE = re.compile(r"[a-z0-9][a-z0-9_\-]{0,63}")
_PLAN_NAME_RE = _SLUG_RE

Path_ = tuple[str | int, ...]


# --------------------------------------------------------------------------- field paths


def _join(prefix: str, rel: str | None) -> str:
    if not rel:
        return prefix
    if not prefix:
        return rel
    return f"{prefix}{rel}" if rel.startswith("[") else f"{prefix}.{rel}"


_FIELD_PART_RE = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def _field_path(text: str) -> Path_:
    return tuple(
        int(index) if index else key for index, key in _FIELD_PART_RE.findall(text)
    )


# --------------------------------------------------------------------------- checks


def _check_text(value: str, name: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{name} must be non-empty text", field=name)


def _check_id(value: str, name: str, pattern: re.Pattern[str] = _ID_RE) -> None:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        what = (
            "lower-case letters, digits, '-' or '_'"
            if pattern is _SLUG_RE
            else "letters, digits, '-' or '_'"
        )
        raise InvalidInput(f"{name} {value!r} must be 1–64 {what}", field=name)


def _check_year(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be a whole number, not {value!r}", field=name)
    if not MIN_YEAR <= value <= MAX_YEAR:
        raise InvalidInput(f"{name} {value} is not a plausible year", field=name)


def _check_month_day(value: str, name: str) -> None:
    try:
        parse_month_day(value)
    except InvalidInput as exc:
        raise InvalidInput(exc.reason, field=name) from None


T = TypeVar("T")


def _unique(items: Sequence[T], key: Callable[[T], str], section: str, name: str) -> None:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        value = key(item)
        if value in seen:
            raise InvalidInput(
                f"duplicate {name} {value!r}: already given in {section}[{seen[value]}]",
                field=f"{section}[{i}].{name}",
            )
        seen[value] = i


def _prefixed(exc: InvalidInput, prefix: str) -> InvalidInput:
    return InvalidInput(exc.reason, field=_join(prefix, exc.field))


# --------------------------------------------------------------------------- value objects


@dataclass(frozen=True, kw_only=True, slots=True)
class Rating:
    """One grade of the progress rating of a measure evaluation (e.g. A = on track)."""

    id: str
    label_ja: str
    label_en: str

    def __post_init__(self) -> None:
        _check_id(self.id, "id")
        _check_text(self.label_ja, "label_ja")
        _check_text(self.label_en, "label_en")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "label_ja": self.label_ja, "label_en": self.label_en}


@dataclass(frozen=True, kw_only=True, slots=True)
class Member:
    """A member municipality, from FY ``joined`` up to (not including) FY ``left``."""

    code: str
    name_ja: str
    name_en: str
    joined: int
    left: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.code, str):
            raise InvalidInput(
                f"code must be text in quotes (leading zeros matter), not {self.code!r}",
                field="code",
            )
        if not self.code.isascii():
            raise InvalidInput(
                f"municipality code {self.code!r} must be written in ASCII digits", field="code"
            )
        try:
            validate_municipality_code(self.code)
        except InvalidInput as exc:
            raise InvalidInput(exc.reason, field="code") from None
        _check_text(self.name_ja, "name_ja")
        _check_text(self.name_en, "name_en")
        _check_year(self.joined, "joined")
        if self.left is not None:
            _check_year(self.left, "left")
            if self.left <= self.joined:
                raise InvalidInput(
                    f"left ({self.left}) must come after joined ({self.joined}): it is the "
                    "first fiscal year no longer a member",
                    field="left",
                )

    def is_member_in(self, fy: int) -> bool:
        """Whether the municipality is a member during fiscal year ``fy``."""
        return self.joined <= fy and (self.left is None or fy < self.left)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "code": self.code,
            "name_ja": self.name_ja,
            "name_en": self.name_en,
            "joined": self.joined,
        }
        if self.left is not None:
            data["left"] = self.left
        return data


@dataclass(frozen=True, kw_only=True, slots=True)
class Sector:
    """A sector of the emissions inventory (部門・分野), optionally in a group."""

    id: str
    name_ja: str
    name_en: str
    group: str | None = None

    def __post_init__(self) -> None:
        _check_id(self.id, "id")
        _check_text(self.name_ja, "name_ja")
        _check_text(self.name_en, "name_en")
        if self.group is not None:
            _check_id(self.group, "group")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "name_ja": self.name_ja, "name_en": self.name_en}
        if self.group is not None:
            data["group"] = self.group
        return data


@dataclass(frozen=True, kw_only=True, slots=True)
class Target:
    """A reduction target: by ``fiscal_year``, ``reduction`` × base-year emissions less."""

    fiscal_year: int
    reduction: float

    def __post_init__(self) -> None:
        _check_year(self.fiscal_year, "fiscal_year")
        value = self.reduction
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(f"reduction must be a number, not {value!r}", field="reduction")
        if not 0 <= value <= 1:
            raise InvalidInput(
                f"reduction {value} must be a fraction from 0 to 1 (0.46 = -46%, 1.0 = net zero)",
                field="reduction",
            )
        object.__setattr__(self, "reduction", float(value))

    def to_dict(self) -> dict[str, Any]:
        return {"fiscal_year": self.fiscal_year, "reduction": self.reduction}


@dataclass(frozen=True, kw_only=True, slots=True)
class PolicyArea:
    """A basic policy (基本方針) of the plan."""

    id: str
    name_ja: str
    name_en: str

    def __post_init__(self) -> None:
        _check_id(self.id, "id")
        _check_text(self.name_ja, "name_ja")
        _check_text(self.name_en, "name_en")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name_ja": self.name_ja, "name_en": self.name_en}


@dataclass(frozen=True, kw_only=True, slots=True)
class PriorityProject:
    """A priority project (重点事業) verified across the whole area every year."""

    id: str
    title_ja: str
    title_en: str

    def __post_init__(self) -> None:
        _check_id(self.id, "id")
        _check_text(self.title_ja, "title_ja")
        _check_text(self.title_en, "title_en")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title_ja": self.title_ja, "title_en": self.title_en}


@dataclass(frozen=True, kw_only=True, slots=True)
class Step:
    """A step of the yearly check; ``opens``/``due`` are "MM-DD" of the following FY."""

    id: str
    actor: str
    title_ja: str
    title_en: str
    opens: str
    due: str
    after: str | None = None

    def __post_init__(self) -> None:
        _check_id(self.id, "id")
        if self.actor not in ACTORS:
            raise InvalidInput(
                f"unknown actor {self.actor!r}; the actors are {', '.join(ACTORS)}",
                field="actor",
            )
        _check_text(self.title_ja, "title_ja")
        _check_text(self.title_en, "title_en")
        _check_month_day(self.opens, "opens")
        _check_month_day(self.due, "due")
        if self.after is not None:
            _check_id(self.after, "after")
        if fiscal_order(self.opens) > fiscal_order(self.due):
            raise InvalidInput(
                f"opens {self.opens} is after due {self.due} "
                "(in fiscal-year order, April first)",
                field="opens",
            )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "actor": self.actor,
            "title_ja": self.title_ja,
            "title_en": self.title_en,
            "opens": self.opens,
            "due": self.due,
        }
        if self.after is not None:
            data["after"] = self.after
        return data


@dataclass(frozen=True, kw_only=True, slots=True)
class StaffMeeting:
    """A staff meeting planned every fiscal year on ``month_day`` ("MM-DD")."""

    month_day: str

    def __post_init__(self) -> None:
        _check_month_day(self.month_day, "month_day")

    def to_dict(self) -> dict[str, Any]:
        return {"month_day": self.month_day}


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    """A whole plan, validated when built. Field errors name the plan file's paths."""

    id: str
    name_ja: str
    name_en: str
    first_fiscal_year: int
    last_fiscal_year: int
    rating_scale: tuple[Rating, ...]
    members: tuple[Member, ...]
    sectors: tuple[Sector, ...]
    schedule: tuple[Step, ...]
    base_year: int = 2013
    statistics_lag: int = 2
    business_days: bool = True
    reminder_days: int = 7
    targets: tuple[Target, ...] = ()
    policy_areas: tuple[PolicyArea, ...] = ()
    priority_projects: tuple[PriorityProject, ...] = ()
    staff_meetings: tuple[StaffMeeting, ...] = ()
    #: Where the plan was read from (not part of its content, equality or digest).
    source: str = field(default="<plan>", compare=False)
    #: Answers already computed (a plan never changes): schedule dates need the holiday
    #: calendar, and a national plan has 1,741 members to filter.
    _memo: dict[Any, Any] = field(default_factory=dict, init=False, compare=False, repr=False,
                                  hash=False)

    def __post_init__(self) -> None:
        for name in ("rating_scale", "members", "sectors", "schedule", "targets",
                     "policy_areas", "priority_projects", "staff_meetings"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
            elif not isinstance(value, tuple):
                raise InvalidInput(f"{name} must be a sequence", field=name)
        self._check_header()
        self._check_sections()
        self._check_schedule()

    def _check_header(self) -> None:
        _check_id(self.id, "plan.id", _SLUG_RE)
        _check_text(self.name_ja, "plan.name_ja")
        _check_text(self.name_en, "plan.name_en")
        for name in ("base_year", "first_fiscal_year", "last_fiscal_year"):
            _check_year(getattr(self, name), f"plan.{name}")
        if self.first_fiscal_year <= self.base_year:
            raise InvalidInput(
                f"first_fiscal_year ({self.first_fiscal_year}) must come after base_year "
                f"({self.base_year})",
                field="plan.first_fiscal_year",
            )
        if self.last_fiscal_year < self.first_fiscal_year:
            raise InvalidInput(
                f"last_fiscal_year ({self.last_fiscal_year}) is before first_fiscal_year "
                f"({self.first_fiscal_year})",
                field="plan.last_fiscal_year",
            )
        for name, low, high in (("statistics_lag", 0, 10), ("reminder_days", 0, 365)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInput(
                    f"{name} must be a whole number, not {value!r}", field=f"plan.{name}"
                )
            if not low <= value <= high:
                raise InvalidInput(
                    f"{name} {value} must be from {low} to {high}", field=f"plan.{name}"
                )
        if not isinstance(self.business_days, bool):
            raise InvalidInput(
                f"business_days must be true or false, not {self.business_days!r}",
                field="plan.business_days",
            )

    def _check_sections(self) -> None:
        for name, kind in (
            ("rating_scale", Rating),
            ("members", Member),
            ("sectors", Sector),
            ("schedule", Step),
            ("targets", Target),
            ("policy_areas", PolicyArea),
            ("priority_projects", PriorityProject),
            ("staff_meetings", StaffMeeting),
        ):
            section = "plan.rating_scale" if name == "rating_scale" else name
            items = getattr(self, name)
            for i, item in enumerate(items):
                if not isinstance(item, kind):
                    raise InvalidInput(
                        f"expected a {kind.__name__}, not {type(item).__name__}",
                        field=f"{section}[{i}]",
                    )
            if not items and name in ("rating_scale", "members", "sectors", "schedule"):
                raise InvalidInput(f"the plan needs at least one entry in {section}",
                                   field=section)
        _unique(self.rating_scale, lambda r: r.id, "plan.rating_scale", "id")
        _unique(self.members, lambda m: m.code, "members", "code")
        _unique(self.sectors, lambda s: s.id, "sectors", "id")
        _unique(self.policy_areas, lambda p: p.id, "policy_areas", "id")
        _unique(self.priority_projects, lambda p: p.id, "priority_projects", "id")
        _unique(self.staff_meetings, lambda s: s.month_day, "staff_meetings", "month_day")
        previous: Target | None = None
        for i, target in enumerate(self.targets):
            if target.fiscal_year <= self.base_year:
                raise InvalidInput(
                    f"target year {target.fiscal_year} must come after base_year "
                    f"({self.base_year})",
                    field=f"targets[{i}].fiscal_year",
                )
            if previous is not None and target.fiscal_year <= previous.fiscal_year:
                raise InvalidInput(
                    f"target years must increase: {target.fiscal_year} follows "
                    f"{previous.fiscal_year}",
                    field=f"targets[{i}].fiscal_year",
                )
            previous = target

    def _check_schedule(self) -> None:
        _unique(self.schedule, lambda s: s.id, "schedule", "id")
        position = {step.id: i for i, step in enumerate(self.schedule)}
        for i, step in enumerate(self.schedule):
            if step.after is None:
                continue
            where = f"schedule[{i}].after"
            if step.after not in position:
                raise InvalidInput(
                    f"step {step.id!r} comes after unknown step {step.after!r}; the steps are "
                    + ", ".join(position),
                    field=where,
                )
            if position[step.after] >= i:
                raise InvalidInput(
                    f"step {step.id!r} comes after {step.after!r}, which is not an earlier "
                    "step of the schedule",
                    field=where,
                )
            before = self.schedule[position[step.after]]
            if fiscal_order(step.due) < fiscal_order(before.opens):
                raise InvalidInput(
                    f"step {step.id!r} is due {step.due}, before step {before.id!r} "
                    f"which it comes after opens ({before.opens})",
                    field=f"schedule[{i}].due",
                )

    # ----------------------------------------------------------------------- queries

    @property
    def fiscal_years(self) -> range:
        """The fiscal years of the plan, first to last."""
        return range(self.first_fiscal_year, self.last_fiscal_year + 1)

    @property
    def sector_ids(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.sectors)

    @property
    def rating_ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.rating_scale)

    @property
    def steps(self) -> tuple[Step, ...]:
        """The steps of the yearly check, in order (the ``[[schedule]]`` tables)."""
        return self.schedule

    def members_of(self, fy: int) -> list[Member]:
        """The members during fiscal year ``fy``, in file order."""
        key = ("members_of", fy)
        if key not in self._memo:
            self._memo[key] = tuple(m for m in self.members if m.is_member_in(fy))
        return list(self._memo[key])

    def member(self, code: str) -> Member:
        """The member with this municipality code; InvalidInput if there is none."""
        by_code = self._memo.get("by_code")
        if by_code is None:
            by_code = self._memo["by_code"] = {m.code: m for m in self.members}
        if code in by_code:
            return by_code[code]  # type: ignore[no-any-return]
        raise InvalidInput(f"municipality {code!r} is not a member of plan {self.id!r}")

    def step(self, step_id: str) -> Step:
        """The step with this id; InvalidInput naming the known steps if there is none."""
        for s in self.schedule:
            if s.id == step_id:
                return s
        raise InvalidInput(
            f"unknown step {step_id!r}; the steps are " + ", ".join(s.id for s in self.schedule)
        )

    def inventory_year(self, fy: int) -> int:
        """The year whose emissions are calculated during the check of FY ``fy``.

        The check of FY N happens in FY N+1, when statistics reach back ``statistics_lag``
        years: N + 1 - lag (FY2024 for FY2025 with the usual lag of 2).
        """
        return fy + 1 - self.statistics_lag

    def target_for(self, fy: int) -> Target | None:
        """The target FY ``fy`` works towards: the first one of that year or later.

        ``None`` once the last target year has passed.
        """
        for target in self.targets:
            if target.fiscal_year >= fy:
                return target
        return None

    def schedule_date(self, month_day: str, fy_under_review: int) -> date:
        """The date of ``month_day`` in the check of ``fy_under_review``, moved to the next
        business day when the plan says ``business_days = true``."""
        day = date_in_fiscal_year(fy_under_review + 1, month_day)
        return next_business_day(day) if self.business_days else day

    def step_window(self, step_id: str, fy_under_review: int) -> tuple[date, date]:
        """``(opens, due)`` of a step in the check of FY ``fy_under_review``."""
        key = ("step_window", step_id, fy_under_review)
        if key not in self._memo:
            s = self.step(step_id)
            self._memo[key] = (
                self.schedule_date(s.opens, fy_under_review),
                self.schedule_date(s.due, fy_under_review),
            )
        return self._memo[key]  # type: ignore[no-any-return]

    def staff_meeting_dates(self, fy: int) -> list[date]:
        """The planned staff meetings of fiscal year ``fy`` itself, in date order."""
        days = (date_in_fiscal_year(fy, m.month_day) for m in self.staff_meetings)
        return sorted(next_business_day(d) if self.business_days else d for d in days)

    # ----------------------------------------------------------------------- serialisation

    def to_dict(self) -> dict[str, Any]:
        """The plan's content as JSON-ready data in the shape of the file (defaults filled,
        absent optional keys left out). ``Plan.from_dict(p.to_dict()) == p``."""
        data: dict[str, Any] = {
            "plan": {
                "id": self.id,
                "name_ja": self.name_ja,
                "name_en": self.name_en,
                "base_year": self.base_year,
                "statistics_lag": self.statistics_lag,
                "first_fiscal_year": self.first_fiscal_year,
                "last_fiscal_year": self.last_fiscal_year,
                "rating_scale": [r.to_dict() for r in self.rating_scale],
                "business_days": self.business_days,
                "reminder_days": self.reminder_days,
            },
            "members": [m.to_dict() for m in self.members],
            "sectors": [s.to_dict() for s in self.sectors],
            "targets": [t.to_dict() for t in self.targets],
            "policy_areas": [p.to_dict() for p in self.policy_areas],
            "priority_projects": [p.to_dict() for p in self.priority_projects],
            "schedule": [s.to_dict() for s in self.schedule],
            "staff_meetings": [s.to_dict() for s in self.staff_meetings],
        }
        return data

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the canonical JSON of :meth:`to_dict`: changes with the content,
        not with formatting, comments or key order of the file."""
        return hashlib.sha256(canonical_json(self.to_dict()).encode("utf-8")).hexdigest()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<plan>") -> Plan:
        """Build a plan from data shaped like the file (e.g. :meth:`to_dict`). Errors name
        ``source`` and the field, but no line."""
        try:
            return _build(data, source)
        except InvalidInput as exc:
            raise InvalidInput(exc.reason, source=source, field=exc.field) from None

    @classmethod
    def from_toml_text(cls, text: str, *, source: str = "<string>") -> Plan:
        """Parse and validate a plan file's text; ``source`` names it in errors."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise _syntax_error(text, exc, source) from exc
        except RecursionError:
            raise InvalidInput("the plan file nests too deeply to be a plan",
                               source=source) from None
        try:
            return _build(data, source)
        except InvalidInput as exc:
            line = _line_of(text, exc.field)
            raise InvalidInput(exc.reason, source=source, line=line, field=exc.field) from None


# --------------------------------------------------------------------------- building


_PLAN_KEYS = (
    "id", "name_ja", "name_en", "base_year", "statistics_lag", "first_fiscal_year",
    "last_fiscal_year", "rating_scale", "business_days", "reminder_days",
)
_SECTIONS: dict[str, tuple[type[Any], tuple[str, ...], tuple[str, ...]]] = {
    # name: (class, required keys, optional keys)
    "members": (Member, ("code", "name_ja", "name_en", "joined"), ("left",)),
    "sectors": (Sector, ("id", "name_ja", "name_en"), ("group",)),
    "targets": (Target, ("fiscal_year", "reduction"), ()),
    "policy_areas": (PolicyArea, ("id", "name_ja", "name_en"), ()),
    "priority_projects": (PriorityProject, ("id", "title_ja", "title_en"), ()),
    "schedule": (Step, ("id", "actor", "title_ja", "title_en", "opens", "due"), ("after",)),
    "staff_meetings": (StaffMeeting, ("month_day",), ()),
}
_RATING_KEYS = ("id", "label_ja", "label_en")
_TOP_KEYS = ("plan", *_SECTIONS)
_TOML_TYPES: dict[type[Any], str] = {
    str: "text",
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    list: "an array",
    dict: "a table",
}


def _type_name(value: object) -> str:
    for kind, name in _TOML_TYPES.items():
        if type(value) is kind:
            return name
    return f"a {type(value).__name__}"


def _check_keys(table: Mapping[str, Any], allowed: Sequence[str], where: str, what: str) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InvalidInput(
                f"unknown key {key!r} in {what}{hint} (the keys are {', '.join(allowed)})",
                field=_join(where, key),
            )


def _table(value: object, where: str, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{what} must be a table, not {_type_name(value)}", field=where)
    return value


def _tables(value: object, where: str, what: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        raise InvalidInput(
            f"{what} must be an array of tables ([[{where}]]), not {_type_name(value)}",
            field=where,
        )
    return [_table(item, f"{where}[{i}]", f"each entry of {what}") for i, item in enumerate(value)]


_EXPECTED: dict[str, tuple[type[Any], ...]] = {
    "base_year": (int,), "statistics_lag": (int,), "first_fiscal_year": (int,),
    "last_fiscal_year": (int,), "reminder_days": (int,), "joined": (int,), "left": (int,),
    "fiscal_year": (int,), "reduction": (int, float), "business_days": (bool,),
}


def _value(table: Mapping[str, Any], key: str, where: str) -> Any:
    """The value of ``key`` checked against its TOML type (text unless listed above)."""
    value = table[key]
    expected = _EXPECTED.get(key, (str,))
    ok = isinstance(value, expected) and (bool in expected or not isinstance(value, bool))
    if not ok:
        want = " or ".join(dict.fromkeys(_TOML_TYPES[k] for k in expected))
        if key == "code" and isinstance(value, int):
            want += " in quotes (leading zeros matter)"
        raise InvalidInput(f"{key} must be {want}, not {_type_name(value)}",
                           field=_join(where, key))
    return value


def _fields(
    table: Mapping[str, Any],
    required: Sequence[str],
    optional: Sequence[str],
    where: str,
    what: str,
) -> dict[str, Any]:
    _check_keys(table, (*required, *optional), where, what)
    for key in required:
        if key not in table:
            raise InvalidInput(f"{what} lacks the required key {key!r}", field=_join(where, key))
    return {key: _value(table, key, where) for key in (*required, *optional) if key in table}


def _build(data: Mapping[str, Any], source: str) -> Plan:
    if not isinstance(data, Mapping):
        raise InvalidInput(f"a plan must be a mapping, not {type(data).__name__}")
    _check_keys(data, _TOP_KEYS, "", "the plan file")
    if "plan" not in data:
        raise InvalidInput("the plan file has no [plan] table", field="plan")
    head = _table(data["plan"], "plan", "[plan]")
    required = ("id", "name_ja", "name_en", "first_fiscal_year", "last_fiscal_year",
                "rating_scale")
    optional = tuple(k for k in _PLAN_KEYS if k not in required)
    _check_keys(head, _PLAN_KEYS, "plan", "[plan]")
    for key in required:
        if key not in head:
            raise InvalidInput(f"[plan] lacks the required key {key!r}", field=f"plan.{key}")
    kwargs: dict[str, Any] = {
        key: _value(head, key, "plan") for key in (*required, *optional)
        if key in head and key != "rating_scale"
    }
    ratings = []
    for i, item in enumerate(_tables(head["rating_scale"], "plan.rating_scale", "rating_scale")):
        where = f"plan.rating_scale[{i}]"
        ratings.append(_make(Rating, _fields(item, _RATING_KEYS, (), where, "a rating"), where))
    kwargs["rating_scale"] = tuple(ratings)
    for name, (kind, req, opt) in _SECTIONS.items():
        if name not in data:
            continue
        items = []
        for i, item in enumerate(_tables(data[name], name, f"[[{name}]]")):
            where = f"{name}[{i}]"
            items.append(_make(kind, _fields(item, req, opt, where, f"[[{name}]]"), where))
        kwargs[name] = tuple(items)
    for name in ("members", "sectors", "schedule"):
        if name not in data:
            raise InvalidInput(f"the plan file has no [[{name}]] tables", field=name)
    return Plan(**kwargs, source=source)


def _make(kind: type[T], kwargs: dict[str, Any], where: str) -> T:
    try:
        return kind(**kwargs)
    except InvalidInput as exc:
        raise _prefixed(exc, where) from None


# --------------------------------------------------------------------------- TOML errors

_TOML_POSITION_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_HEADER_RE = re.compile(r"\s*(\[\[?)\s*([A-Za-z0-9_\-]+(?:\s*\.\s*[A-Za-z0-9_\-]+)*)\s*\]")
_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_\-]+")
_KEY_LINE_RE = re.compile(r"\s*([A-Za-z0-9_\-]+(?:\s*\.\s*[A-Za-z0-9_\-]+)*)\s*=")


def _syntax_error(text: str, exc: tomllib.TOMLDecodeError, source: str) -> InvalidInput:
    message = str(exc)
    match = _TOML_POSITION_RE.search(message)
    if match is None:
        if message.endswith("(at end of document)"):
            message = message.removesuffix("(at end of document)").rstrip()
            line = len(text.splitlines()) or 1
            return InvalidInput(f"TOML syntax error at the end: {message}", source=source,
                                line=line)
        return InvalidInput(f"TOML syntax error: {message}", source=source)
    line, column = int(match[1]), int(match[2])
    message = message[: match.start()]
    return InvalidInput(
        f"TOML syntax error: {message} (column {column})",
        source=source,
        line=line,
        field=_guess_field(text, line),
    )


def _guess_field(text: str, line: int) -> str | None:
    """Best effort: the dotted path of the ``key =`` on ``line`` of a text that does not
    parse (bare keys only; ``None`` when unsure)."""
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return None
    match = _KEY_LINE_RE.match(lines[line - 1])
    if match is None:
        return None
    counts: dict[str, int] = {}
    table = ""
    for previous in lines[: line - 1]:
        header = _HEADER_RE.match(previous)
        if header is None:
            continue
        name = re.sub(r"\s+", "", header[2])
        if header[1] == "[[":
            counts[name] = counts.get(name, 0) + 1
            table = f"{name}[{counts[name] - 1}]"
        else:
            table = name
    key = re.sub(r"\s+", "", match[1])
    return _join(table, key)


# --------------------------------------------------------------------------- line locator


def _line_of(text: str, field: str | None) -> int | None:
    if not field:
        return None
    try:
        return _Locator(text).line_of(_field_path(field))
    except Exception:  # pragma: no cover - a locator bug must not hide the real error
        return None


class _Locator:
    """The lines of the keys, tables and array items of a TOML text tomllib accepted.

    A small scanner: it follows headers, keys, strings, arrays and inline tables only far
    enough to know where each value starts; the values themselves come from tomllib.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.lines: dict[Path_, int] = {}
        self.arrays: dict[Path_, int] = {}  # arrays of tables: how many so far
        self._newlines = [i for i, c in enumerate(text) if c == "\n"]
        self._scan()

    def line_of(self, path: Path_) -> int | None:
        """The line of ``path``, or of the nearest enclosing item that has one."""
        for end in range(len(path), 0, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None

    # scanning ----------------------------------------------------------------

    def _line(self, pos: int) -> int:
        return bisect.bisect_left(self._newlines, pos) + 1

    def _record(self, path: Path_, pos: int) -> None:
        self.lines.setdefault(path, self._line(pos))

    def _peek(self, n: int = 1) -> str:
        return self.text[self.pos : self.pos + n]

    def _skip(self, newlines: bool) -> None:
        text = self.text
        while self.pos < len(text):
            c = text[self.pos]
            if c in " \t" or (newlines and c in "\r\n"):
                self.pos += 1
            elif c == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            else:
                break

    def _skip_string(self) -> None:
        text = self.text
        for quote in ('"""', "'''"):
            if text.startswith(quote, self.pos):
                self.pos += 3
                while True:
                    if quote == '"""' and text[self.pos] == "\\":
                        self.pos += 2
                    elif text.startswith(quote, self.pos):
                        self.pos += 3
                        while self.pos < len(text) and text[self.pos] == quote[0]:
                            self.pos += 1  # up to two quotes may end the content
                        return
                    else:
                        self.pos += 1
        quote = text[self.pos]
        self.pos += 1
        while text[self.pos] != quote:
            self.pos += 2 if quote == '"' and text[self.pos] == "\\" else 1
        self.pos += 1

    def _key(self) -> tuple[str, ...]:
        start = self.pos
        while True:
            self._skip(newlines=False)
            if self._peek() in ('"', "'"):
                self._skip_string()
            else:
                match = _BARE_KEY_RE.match(self.text, self.pos)
                assert match is not None
                self.pos = match.end()
            self._skip(newlines=False)
            if self._peek() != ".":
                break
            self.pos += 1
        # Let tomllib decode the key, quotes and escapes included.
        decoded: Any = tomllib.loads(self.text[start : self.pos] + " = 0")
        parts: list[str] = []
        while isinstance(decoded, dict):
            key = next(iter(decoded))
            parts.append(key)
            decoded = decoded[key]
        return tuple(parts)

    def _resolve(self, parts: tuple[str, ...]) -> Path_:
        path: Path_ = ()
        for part in parts:
            path = (*path, part)
            if path in self.arrays:
                path = (*path, self.arrays[path] - 1)
        return path

    def _scan(self) -> None:
        table: Path_ = ()
        while True:
            self._skip(newlines=True)
            if self.pos >= len(self.text):
                return
            start = self.pos
            if self._peek(2) == "[[":
                self.pos += 2
                parts = self._key()
                self.pos += 2  # ]]
                array = (*self._resolve(parts[:-1]), parts[-1])
                index = self.arrays.get(array, 0)
                self.arrays[array] = index + 1
                table = (*array, index)
                self._record(array, start)
                self._record(table, start)
            elif self._peek() == "[":
                self.pos += 1
                parts = self._key()
                self.pos += 1  # ]
                table = (*self._resolve(parts[:-1]), parts[-1])
                self._record(table, start)
            else:
                self._pair(table)

    def _pair(self, table: Path_) -> None:
        start = self.pos
        path = (*table, *self._key())
        self._skip(newlines=False)
        self.pos += 1  # =
        self._skip(newlines=False)
        for end in range(len(table) + 1, len(path) + 1):
            self._record(path[:end], start)
        self._value(path)

    def _value(self, path: Path_) -> None:
        c = self._peek()
        if c == "{":
            self.pos += 1
            self._skip(newlines=True)
            while self._peek() != "}":
                self._pair(path)
                self._skip(newlines=True)
                if self._peek() == ",":
                    self.pos += 1
                    self._skip(newlines=True)
            self.pos += 1
        elif c == "[":
            self.pos += 1
            index = 0
            while True:
                self._skip(newlines=True)
                if self._peek() == "]":
                    self.pos += 1
                    return
                self._record((*path, index), self.pos)
                self._value((*path, index))
                index += 1
                self._skip(newlines=True)
                if self._peek() == ",":
                    self.pos += 1
        elif c in ('"', "'"):
            self._skip_string()
        else:
            while self.pos < len(self.text) and self.text[self.pos] not in ",]}#\r\n":
                self.pos += 1


# --------------------------------------------------------------------------- loading


def bundled_plans() -> list[str]:
    """The names of the plans shipped with pdca (``load_plan(name)`` loads one)."""
    folder = resources.files(__name__)
    return sorted(
        entry.name.removesuffix(".toml")
        for entry in folder.iterdir()
        if entry.name.endswith(".toml") and entry.is_file()
    )


def load_plan(source: str | Path) -> Plan:
    """Load a plan: a bundled plan by name (``"kumamoto"``) or a ``.toml`` file.

    A ``str`` without a path separator and without the ``.toml`` suffix is a bundled plan
    name; anything else (and every :class:`~pathlib.Path`) is a file path.
    """
    if isinstance(source, str) and _PLAN_NAME_RE.fullmatch(source):
        names = bundled_plans()
        if source not in names:
            raise InvalidInput(
                f"no bundled plan {source!r}; the bundled plans are {', '.join(names)} "
                "(or give the path of a .toml file)"
            )
        text = resources.files(__name__).joinpath(f"{source}.toml").read_text(encoding="utf-8")
        return Plan.from_toml_text(text, source=f"pdca/plans/{source}.toml")
    path = Path(source)
    name = str(source)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read the plan file: {exc.strerror or exc}",
                           source=name) from None
    except ValueError:  # a NUL byte, or characters no file name can hold
        raise InvalidInput("not a usable file name", source=repr(name)) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            "the plan file is not UTF-8 text", source=name, line=raw.count(b"\n", 0, exc.start) + 1
        ) from None
    return Plan.from_toml_text(text, source=name)


__all__ = [
    "ACTORS",
    "Member",
    "Plan",
    "PolicyArea",
    "PriorityProject",
    "Rating",
    "Sector",
    "StaffMeeting",
    "Step",
    "Target",
    "bundled_plans",
    "load_plan",
]
