"""The workflow registry: definitions are validated; time-based triggers are the scheduler's."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import pdca
from pdca.types import Role
from pdca.workflows import Registry, StateSpec, TransitionSpec, WorkflowSpec
from pdca.workflows.measure import MEASURE
from pdca.workflows.person import PERSON
from tests.conftest import make_measure

# The measure workflow with one extra, time-based trigger (same states, so the database's
# CHECK constraint accepts it).
LAPSING_MEASURE = dataclasses.replace(
    MEASURE,
    transitions=(
        *MEASURE.transitions,
        TransitionSpec(
            trigger="lapse",
            sources=("study",),
            dest="discontinued",
            roles=frozenset({Role.SCHEDULER}),
            time_based=True,
        ),
    ),
)


def test_time_based_trigger_is_fired_by_the_scheduler_only(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with pdca.Engine.open(url, migrate=True, registry=Registry([PERSON, LAPSING_MEASURE])) as e:
        e.bootstrap_admin("admin")
        e.add_person("staff-kumamoto", role="staff", municipality="431001", actor="admin")
        ref = make_measure(e)
        with pytest.raises(pdca.PermissionDenied, match="only the scheduler fires it"):
            e.fire(ref, "lapse", actor="staff-kumamoto")
        result = e.fire(ref, "lapse", actor="scheduler")
        assert (result.actor, result.role, result.to_state) == ("scheduler", "scheduler",
                                                                "discontinued")
        assert "lapse" not in e.get(ref, actor="staff-kumamoto").allowed


def test_time_based_trigger_for_anyone_but_the_scheduler_is_a_definition_error() -> None:
    bad = dataclasses.replace(
        MEASURE,
        transitions=(
            TransitionSpec(trigger="lapse", sources=("study",), dest="discontinued",
                           roles=frozenset({Role.STAFF}), time_based=True),
        ),
    )
    with pytest.raises(pdca.DefinitionError, match="scheduler only"):
        Registry([bad])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"states": (StateSpec(code="a", label_ja="a", label_en="a"),) * 2}, "declared twice"),
        ({"transitions": (TransitionSpec(trigger="go", sources=("nowhere",), dest="study",
                                         roles=frozenset({Role.STAFF})),)}, "unknown state"),
    ],
)
def test_broken_definitions_are_refused_when_registered(
    change: dict[str, object], message: str
) -> None:
    with pytest.raises(pdca.DefinitionError, match=message):
        Registry([dataclasses.replace(MEASURE, **change)])  # type: ignore[arg-type]


def test_a_workflow_is_registered_once() -> None:
    with pytest.raises(pdca.DefinitionError, match="twice"):
        Registry([MEASURE, MEASURE])


def test_workflow_version_changes_with_the_definition() -> None:
    assert Registry([MEASURE]).get("measure").version != Registry(
        [LAPSING_MEASURE]
    ).get("measure").version


def test_one_machine_per_workflow_whatever_the_number_of_entities(
    engine: pdca.Engine,
) -> None:
    engine.bootstrap_admin("admin")
    engine.add_person("staff-kumamoto", role="staff", municipality="431001", actor="admin")
    machine = engine.registry.get("measure").machine
    for i in range(20):
        ref = make_measure(engine, f"M-{i:03d}")
        engine.fire(ref, "commercialise", actor="staff-kumamoto")
    assert engine.registry.get("measure").machine is machine
    assert machine.models == []  # no add_model: fired on plain objects


def test_unknown_workflow_kind_is_not_in_the_registry() -> None:
    assert "widget" not in Registry([WorkflowSpec(name="measure", label_ja="", label_en="",
                                                  states=MEASURE.states, transitions=())])
