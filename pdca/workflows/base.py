"""How a workflow is declared, and the one shared ``transitions`` machine that runs it.

A workflow is data: its states, its transitions (trigger, sources, destination, the roles
that may fire it, the data it takes, its guards, whether it is time-based), and how an
entity of it is created. :class:`Workflow` builds one ``transitions.Machine`` per workflow,
once, and fires events on plain subject objects with ``machine.events[name].trigger(obj)``:
never a machine per row and never ``add_model``, so the cost of a transition does not grow
with the number of entities.

Nothing here touches the database: guards read what they need through the
:class:`GuardContext` the engine passes in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

from transitions import EventData, Machine

from ..audit import canonical_json
from ..errors import DefinitionError, InvalidData
from ..types import Role

FieldType = Literal["str", "int", "float", "bool", "date", "str_list"]

_PY_TYPES: Mapping[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "date": (str,),
    "str_list": (list, tuple),
}


@dataclass(frozen=True, kw_only=True, slots=True)
class FieldSpec:
    """One value a trigger or a creation takes (``reason``, ``title_ja``, ...)."""

    name: str
    type: FieldType = "str"
    required: bool = False
    choices: tuple[str, ...] = ()
    label_ja: str = ""
    label_en: str = ""
    max_length: int = 2000
    minimum: float | None = None
    maximum: float | None = None

    def validate(self, value: Any) -> Any:
        """Return the value in canonical form, or raise :class:`InvalidData`."""
        expected = _PY_TYPES[self.type]
        if isinstance(value, bool) and self.type in ("int", "float"):
            raise InvalidData(f"{self.name} must be a number, not {value!r}", field=self.name)
        if not isinstance(value, expected):
            raise InvalidData(
                f"{self.name} must be {_TYPE_WORDS[self.type]}, not {type(value).__name__} "
                f"{value!r}",
                field=self.name,
            )
        if self.type == "str":
            text = str(value).strip()
            if self.required and not text:
                raise InvalidData(f"{self.name} must not be empty", field=self.name)
            if len(text) > self.max_length:
                raise InvalidData(
                    f"{self.name} is longer than {self.max_length} characters", field=self.name
                )
            if self.choices and text not in self.choices:
                raise InvalidData(
                    f"{self.name} must be one of {', '.join(self.choices)}, not {text!r}",
                    field=self.name,
                )
            return text
        if (
            self.type in ("int", "float")
            and self.minimum is not None
            and cast(float, value) < self.minimum
        ):
            raise InvalidData(
                f"{self.name} must be at least {self.minimum:g}, not {value!r}",
                field=self.name,
            )
        if (
            self.type in ("int", "float")
            and self.maximum is not None
            and cast(float, value) > self.maximum
        ):
            raise InvalidData(
                f"{self.name} must be at most {self.maximum:g}, not {value!r}", field=self.name
            )
        if self.type == "float":
            return float(cast(float, value))
        if self.type == "date":
            try:
                return dt.date.fromisoformat(str(value)).isoformat()
            except ValueError:
                raise InvalidData(
                    f"{self.name} must be a date YYYY-MM-DD, not {value!r}", field=self.name
                ) from None
        if self.type == "str_list":
            items = [v.strip() if isinstance(v, str) else v for v in cast(list[Any], value)]
            if not all(isinstance(v, str) and v for v in items):
                raise InvalidData(f"{self.name} must be a list of texts", field=self.name)
            if self.required and not items:
                raise InvalidData(f"{self.name} must not be empty", field=self.name)
            return items
        return value

    def parse_text(self, text: str) -> Any:
        """Turn the text form of a value (``--set KEY=VALUE``) into the field's type."""
        try:
            if self.type == "int":
                return int(text)
            if self.type == "float":
                return float(text)
        except ValueError:
            raise InvalidData(
                f"{self.name} must be {_TYPE_WORDS[self.type]}, not {text!r}", field=self.name
            ) from None
        if self.type == "bool":
            lowered = text.strip().lower()
            if lowered in ("true", "yes", "1"):
                return True
            if lowered in ("false", "no", "0"):
                return False
            raise InvalidData(f"{self.name} must be true or false, not {text!r}", field=self.name)
        if self.type == "str_list":
            return [part.strip() for part in text.split(";") if part.strip()]
        return text

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "required": self.required,
            "choices": list(self.choices),
        }


_TYPE_WORDS = {
    "str": "text",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "date": "a date YYYY-MM-DD",
    "str_list": "a list of texts",
}


def parse_text_fields(
    fields: Sequence[FieldSpec], pairs: Mapping[str, str], *, what: str
) -> dict[str, Any]:
    """Typed data from ``KEY=VALUE`` texts; unknown keys are refused by name."""
    by_name = {f.name: f for f in fields}
    result: dict[str, Any] = {}
    for key, text in pairs.items():
        spec = by_name.get(key)
        if spec is None:
            known = ", ".join(by_name) or "none"
            raise InvalidData(f"{what} takes no value {key!r}; it takes: {known}", field=key)
        result[key] = spec.parse_text(text)
    return result


def validate_fields(
    fields: Sequence[FieldSpec], data: Mapping[str, Any] | None, *, what: str
) -> dict[str, Any]:
    """Check ``data`` against ``fields``: unknown keys, missing required values, types."""
    data = dict(data or {})
    by_name = {f.name: f for f in fields}
    unknown = sorted(set(data) - set(by_name))
    if unknown:
        known = ", ".join(by_name) or "none"
        raise InvalidData(
            f"{what} takes no value {unknown[0]!r}; it takes: {known}", field=unknown[0]
        )
    clean: dict[str, Any] = {}
    for spec in fields:
        value = data.get(spec.name)
        if value is None:
            if spec.required:
                raise InvalidData(f"{what} needs {spec.name}", field=spec.name)
            continue
        clean[spec.name] = spec.validate(value)
    return clean


class Subject:
    """The plain object a shared machine fires on: one entity, for one transition."""

    __slots__ = ("at", "attrs", "data", "fiscal_year", "ref", "scope", "state")

    def __init__(
        self,
        *,
        ref: str,
        state: str,
        attrs: Mapping[str, Any],
        scope: tuple[str, ...],
        fiscal_year: int | None,
        data: Mapping[str, Any] | None = None,
        at: dt.datetime | None = None,
    ) -> None:
        self.at = at
        self.ref = ref
        self.state = state
        self.attrs = attrs
        self.scope = scope
        self.fiscal_year = fiscal_year
        self.data: Mapping[str, Any] = data or {}


class GuardContext(Protocol):
    """What a guard may read: the time of the transition and read-only queries."""

    @property
    def now(self) -> dt.datetime: ...

    def query(self, name: str, **params: Any) -> Any:
        """Run a named read-only query that the storage layer provides."""
        ...


#: A guard returns ``None`` when the transition may happen, else a sentence saying why not.
Guard = Callable[[Subject, GuardContext], str | None]
#: An effect returns attribute updates to store on the entity with the new state.
Effect = Callable[[Subject], Mapping[str, Any]]


@dataclass(frozen=True, kw_only=True, slots=True)
class StateSpec:
    code: str
    label_ja: str
    label_en: str
    final: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class TransitionSpec:
    trigger: str
    sources: tuple[str, ...]
    dest: str
    roles: frozenset[Role]
    fields: tuple[FieldSpec, ...] = ()
    guards: tuple[Guard, ...] = ()
    effect: Effect | None = None
    time_based: bool = False
    #: A branch condition, not a refusal: when it is false this transition is skipped and
    #: the next one of the same trigger and source is tried (e.g. go to the next phase if
    #: its window is open, else wait in a ``*_pending`` state).
    when: Callable[[Subject, GuardContext], bool] | None = None
    label_ja: str = ""
    label_en: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class CreateSpec:
    """Who may create an entity of the workflow, with what data, in which state."""

    roles: frozenset[Role]
    fields: tuple[FieldSpec, ...]
    initial: Callable[[Mapping[str, Any]], str]
    #: The states ``initial`` may return (for diagrams and documentation).
    initial_states: tuple[str, ...] = ()
    scope: Callable[[Mapping[str, Any]], tuple[str, ...]] = lambda data: ()
    fiscal_year: Callable[[Mapping[str, Any]], int | None] = lambda data: None
    #: The reference key the data implies, when the key is derived from the data
    #: (``431001:2025`` for a cycle); the engine refuses a reference that disagrees.
    key_of: Callable[[Mapping[str, Any]], str] | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkflowSpec:
    name: str
    label_ja: str
    label_en: str
    states: tuple[StateSpec, ...]
    transitions: tuple[TransitionSpec, ...]
    create: CreateSpec | None = None
    key_pattern: str = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
    #: The reference prefix (``cycle`` in ``cycle:431001:2025``); defaults to ``name``.
    #: Several workflows may share a kind when their key patterns tell them apart.
    kind: str = ""
    #: Roles allowed to fire a transition on a given entity, when they depend on the
    #: entity's data (e.g. who runs a meeting depends on its kind); default: the spec's.
    roles_for: Callable[[Mapping[str, Any], TransitionSpec], frozenset[Role]] | None = None
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


def _qualname(func: Callable[..., Any]) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


class Workflow:
    """A validated workflow definition and its one shared machine."""

    def __init__(self, spec: WorkflowSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.kind = spec.kind or spec.name
        self._check(spec)
        self.states: Mapping[str, StateSpec] = {s.code: s for s in spec.states}
        self.triggers: tuple[str, ...] = tuple(dict.fromkeys(t.trigger for t in spec.transitions))
        self._by_trigger: dict[str, list[TransitionSpec]] = {}
        for t in spec.transitions:
            self._by_trigger.setdefault(t.trigger, []).append(t)
        self._key_re = re.compile(spec.key_pattern)
        self.version = hashlib.sha256(canonical_json(self.describe()).encode()).hexdigest()
        self.machine = self._build_machine()
        # (trigger, source) -> destination, where the machine's first transition for them
        # has no condition: it always takes that one, so firing needs no machine run.
        self._direct: dict[tuple[str, str], str] = {}
        first: set[tuple[str, str]] = set()
        for t in spec.transitions:
            for source in t.sources:
                if (t.trigger, source) in first:
                    continue
                first.add((t.trigger, source))
                if t.when is None and not t.guards:
                    self._direct[(t.trigger, source)] = t.dest

    @staticmethod
    def _check(spec: WorkflowSpec) -> None:
        codes = [s.code for s in spec.states]
        if len(set(codes)) != len(codes):
            raise DefinitionError(f"workflow {spec.name}: a state is declared twice")
        for s in codes:
            if not re.match(r"^[a-z][a-z0-9_]*$", s):
                raise DefinitionError(f"workflow {spec.name}: bad state code {s!r}")
        for t in spec.transitions:
            for s in (*t.sources, t.dest):
                if s not in codes:
                    raise DefinitionError(
                        f"workflow {spec.name}: transition {t.trigger} names unknown state {s!r}"
                    )
            if not re.match(r"^[a-z][a-z0-9_]*$", t.trigger):
                raise DefinitionError(f"workflow {spec.name}: bad trigger {t.trigger!r}")
            if t.time_based and t.roles != frozenset({Role.SCHEDULER}):
                raise DefinitionError(
                    f"workflow {spec.name}: time-based trigger {t.trigger} must be fired by "
                    "the scheduler only"
                )
            if not t.roles:
                raise DefinitionError(f"workflow {spec.name}: {t.trigger} has no role")

    def _build_machine(self) -> Machine:
        transitions = []
        for t in self.spec.transitions:
            entry: dict[str, Any] = {
                "trigger": t.trigger,
                "source": list(t.sources),
                "dest": t.dest,
            }
            conditions: list[Any] = []
            if t.when is not None:
                conditions.append(_WhenCondition(t.when))
            if t.guards:
                conditions.append(_GuardCondition(t.guards))
            if conditions:
                entry["conditions"] = conditions
            transitions.append(entry)
        return Machine(
            model=[],
            states=[s.code for s in self.spec.states],
            transitions=transitions,
            initial=self.spec.states[0].code,
            send_event=True,
            auto_transitions=False,
            ignore_invalid_triggers=False,
        )

    # ------------------------------------------------------------------ introspection

    def describe(self) -> dict[str, Any]:
        """The definition as plain data; its hash is the workflow's version."""
        spec = self.spec
        return {
            "name": spec.name,
            "states": [{"code": s.code, "final": s.final} for s in spec.states],
            "transitions": [
                {
                    "trigger": t.trigger,
                    "sources": list(t.sources),
                    "dest": t.dest,
                    "roles": sorted(r.value for r in t.roles),
                    "fields": [f.describe() for f in t.fields],
                    "guards": [_qualname(g) for g in t.guards],
                    "effect": _qualname(t.effect) if t.effect else None,
                    "when": _qualname(t.when) if t.when else None,
                    "time_based": t.time_based,
                }
                for t in spec.transitions
            ],
            "create": None
            if spec.create is None
            else {
                "roles": sorted(r.value for r in spec.create.roles),
                "fields": [f.describe() for f in spec.create.fields],
            },
        }

    def check_key(self, key: str) -> bool:
        return bool(self._key_re.match(key))

    def roles(self, attrs: Mapping[str, Any], spec: TransitionSpec) -> frozenset[Role]:
        """Who may fire ``spec`` on an entity with these attributes."""
        if self.spec.roles_for is None:
            return spec.roles
        return self.spec.roles_for(attrs, spec)

    def specs_for(self, trigger: str) -> list[TransitionSpec]:
        return self._by_trigger.get(trigger, [])

    def spec_from(self, trigger: str, state: str) -> TransitionSpec | None:
        """The first transition of ``trigger`` whose sources include ``state``."""
        for spec in self._by_trigger.get(trigger, ()):
            if state in spec.sources:
                return spec
        return None

    def triggers_from(self, state: str) -> tuple[str, ...]:
        return tuple(
            trig
            for trig in self.triggers
            if any(state in s.sources for s in self._by_trigger[trig])
        )

    def state_label(self, state: str, lang: str = "ja") -> str:
        spec = self.states.get(state)
        if spec is None:
            return state
        return spec.label_ja if lang == "ja" else spec.label_en

    # ------------------------------------------------------------------ running

    def fire(self, subject: Subject, trigger: str, context: GuardContext) -> list[str]:
        """Run ``trigger`` on ``subject``; return the guards' reasons if it was refused.

        The caller has checked that ``trigger`` is valid from ``subject.state``. On success
        ``subject.state`` holds the destination and the list is empty.
        """
        dest = self._direct.get((trigger, subject.state))
        if dest is not None:
            subject.state = dest  # what the machine would do: no condition to check
            return []
        failures: list[str] = []
        done = self.machine.events[trigger].trigger(subject, context=context, failures=failures)
        if not done and not failures:
            failures.append("a guard refused it")
        # Two branches of one trigger share their guards: say each reason once.
        return [] if done else list(dict.fromkeys(failures))

    def check_guards(self, subject: Subject, trigger: str, context: GuardContext) -> list[str]:
        """The reasons the guards of ``trigger`` would give now, without firing."""
        spec = self.spec_from(trigger, subject.state)
        if spec is None:
            return []
        return [r for g in spec.guards if (r := g(subject, context)) is not None]


class _WhenCondition:
    """A ``transitions`` condition that chooses a branch without giving a reason."""

    def __init__(self, when: Callable[[Subject, GuardContext], bool]) -> None:
        self.when = when
        self.__name__ = "when"

    def __call__(self, event: EventData) -> bool:
        return bool(self.when(cast(Subject, event.model), event.kwargs["context"]))


class _GuardCondition:
    """A ``transitions`` condition that runs every guard and keeps their reasons."""

    def __init__(self, guards: tuple[Guard, ...]) -> None:
        self.guards = guards
        self.__name__ = "guards"

    def __call__(self, event: EventData) -> bool:
        context: GuardContext = event.kwargs["context"]
        failures: list[str] = event.kwargs["failures"]
        subject = cast(Subject, event.model)
        reasons = [r for g in self.guards if (r := g(subject, context)) is not None]
        failures.extend(reasons)
        return not reasons
