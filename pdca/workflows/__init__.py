"""The workflows: one module per state machine, gathered in a registry.

A :class:`Registry` maps an entity kind (the part of a reference before the colon) to its
:class:`Workflow`. The engine only ever asks the registry; adding a workflow means
declaring it in a module and registering it here, never touching the engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import cache

from ..errors import DefinitionError, UnknownReference
from .base import (
    CreateSpec,
    FieldSpec,
    Guard,
    GuardContext,
    StateSpec,
    Subject,
    TransitionSpec,
    Workflow,
    WorkflowSpec,
    validate_fields,
)
from .cycles import MUNICIPAL_CYCLE, REGIONAL_CYCLE
from .emissions import EMISSIONS
from .measure import MEASURE
from .meeting import ADVICE, MEETING, THEME_PROJECT
from .person import PERSON
from .plan import PLAN

BUILTIN_SPECS: tuple[WorkflowSpec, ...] = (
    PERSON,
    PLAN,
    MEASURE,
    MUNICIPAL_CYCLE,
    REGIONAL_CYCLE,
    MEETING,
    ADVICE,
    THEME_PROJECT,
    EMISSIONS,
)


class Registry:
    """The workflows an engine knows, by entity kind."""

    def __init__(self, specs: Iterable[WorkflowSpec] = ()) -> None:
        self._workflows: dict[str, Workflow] = {}
        self._by_kind: dict[str, list[Workflow]] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: WorkflowSpec) -> Workflow:
        if spec.name in self._workflows:
            raise DefinitionError(f"workflow {spec.name!r} is registered twice")
        workflow = Workflow(spec)
        self._workflows[spec.name] = workflow
        self._by_kind.setdefault(workflow.kind, []).append(workflow)
        return workflow

    def get(self, name: str) -> Workflow:
        """The workflow called ``name``."""
        try:
            return self._workflows[name]
        except KeyError:
            known = ", ".join(sorted(self._workflows))
            raise UnknownReference(
                name, f"unknown workflow {name!r}; the workflows are {known}"
            ) from None

    def resolve(self, kind: str, key: str) -> Workflow:
        """The workflow of the reference ``kind:key``."""
        candidates = self._by_kind.get(kind)
        if not candidates:
            known = ", ".join(sorted(self._by_kind))
            raise UnknownReference(
                f"{kind}:{key}", f"unknown kind of entity {kind!r}; the kinds are {known}"
            )
        for workflow in candidates:
            if workflow.check_key(key):
                return workflow
        ref = f"{kind}:{key}"
        raise UnknownReference(ref, f"malformed {kind} reference {ref!r}")

    def __contains__(self, kind: object) -> bool:
        return kind in self._workflows

    def __iter__(self) -> Iterator[Workflow]:
        return iter(self._workflows.values())

    def state_pairs(self) -> list[tuple[str, str]]:
        """Every (workflow, state) pair: what the database's CHECK constraint allows."""
        return [(w.name, s) for w in self for s in w.states]


@cache
def default_registry() -> Registry:
    """The built-in workflows; built once per process so each machine is built once."""
    return Registry(BUILTIN_SPECS)


__all__ = [
    "BUILTIN_SPECS",
    "CreateSpec",
    "FieldSpec",
    "Guard",
    "GuardContext",
    "Registry",
    "StateSpec",
    "Subject",
    "TransitionSpec",
    "Workflow",
    "WorkflowSpec",
    "default_registry",
    "validate_fields",
]
