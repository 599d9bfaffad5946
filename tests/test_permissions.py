"""The permission matrix of the measure workflow, generated from its definition.

Every cell (role x trigger x own/other municipality) is asserted allowed or refused, and
every refusal must leave an audit entry without changing the state.
"""

from __future__ import annotations

import pytest

import pdca
from pdca.types import Role
from pdca.workflows import default_registry
from tests.conftest import KIKUCHI, KUMAMOTO, Cast, make_measure

MEASURE = default_registry().get("measure")

# The actor of each (role, own municipality?) cell; non-staff roles have no municipality.
ACTORS: dict[tuple[Role, bool], str] = {
    (Role.STAFF, True): "staff-kumamoto",
    (Role.STAFF, False): "staff-kikuchi",
    (Role.SECRETARIAT, True): "secretariat",
    (Role.CLERK, True): "clerk",
    (Role.AUDITOR, True): "auditor",
    (Role.ADMIN, True): "admin",
    (Role.SCHEDULER, True): "scheduler",
}

# How to bring a fresh (study) measure into each source state.
PATH_TO = {"study": [], "implemented": ["commercialise"]}

CELLS = [
    pytest.param(spec.trigger, source, role, own, id=f"{spec.trigger}-{source}-{role}-{own}")
    for spec in MEASURE.spec.transitions
    for source in spec.sources
    for (role, own) in ACTORS
]


def _expected(trigger: str, source: str, role: Role, own: bool) -> bool:
    spec = MEASURE.spec_from(trigger, source)
    assert spec is not None
    if spec.time_based:
        return role is Role.SCHEDULER
    return role in spec.roles and (role is not Role.STAFF or own)


@pytest.mark.parametrize(("trigger", "source", "role", "own"), CELLS)
def test_measure_permission_cell(
    engine: pdca.Engine, cast: Cast, trigger: str, source: str, role: Role, own: bool
) -> None:
    ref = make_measure(engine, actor=cast.secretariat, municipalities=(KUMAMOTO,))
    for step in PATH_TO[source]:
        engine.fire(ref, step, actor=cast.staff)
    actor = ACTORS[(role, own)]
    data = {"reason": "matrix"} if trigger == "discontinue" else None
    before = engine.history(ref)

    if _expected(trigger, source, role, own):
        result = engine.fire(ref, trigger, actor=actor, data=data)
        assert result.actor == actor
        assert engine.get(ref).state == result.to_state != source
    else:
        with pytest.raises(pdca.PermissionDenied) as info:
            engine.fire(ref, trigger, actor=actor, data=data)
        assert (info.value.ref, info.value.trigger, info.value.actor) == (ref, trigger, actor)
        assert engine.get(ref).state == source
        after = engine.history(ref)
        assert len(after) == len(before) + 1
        refused = after[-1]
        assert (refused.kind, refused.actor, refused.trigger) == ("refused", actor, trigger)
        assert refused.from_state == refused.to_state == source
        assert refused.note == info.value.reason


def test_staff_of_another_municipality_is_told_whose_measure_it_is(
    engine: pdca.Engine, cast: Cast
) -> None:
    ref = make_measure(engine)
    with pytest.raises(pdca.PermissionDenied) as info:
        engine.fire(ref, "commercialise", actor=cast.other_staff)
    assert str(info.value) == (
        f"staff-kikuchi (staff) may not commercialise {ref}: "
        f"it belongs to {KUMAMOTO}, not to {KIKUCHI}"
    )


def test_staff_may_not_create_a_measure_of_another_municipality_and_it_is_audited(
    engine: pdca.Engine, cast: Cast
) -> None:
    with pytest.raises(pdca.PermissionDenied):
        make_measure(engine, actor=cast.other_staff, municipalities=(KUMAMOTO,))
    refused = engine.history(f"person:{cast.other_staff}")[-1]
    assert refused.kind == "refused"
    assert refused.note is not None and refused.note.startswith("create measure:M-001")
    with pytest.raises(pdca.UnknownReference):
        engine.get("measure:M-001")


def test_only_an_administrator_registers_people(engine: pdca.Engine, cast: Cast) -> None:
    with pytest.raises(pdca.PermissionDenied):
        engine.add_person("newcomer", role="auditor", actor=cast.secretariat)
    engine.add_person("newcomer", role="auditor", actor=cast.admin)
    assert engine.person("newcomer").role is Role.AUDITOR


def test_role_change_is_audited_and_takes_effect(engine: pdca.Engine, cast: Cast) -> None:
    ref = make_measure(engine)
    engine.change_role(cast.other_staff, role="staff", municipality=KUMAMOTO, actor=cast.admin)
    engine.fire(ref, "commercialise", actor=cast.other_staff)
    entry = engine.history(f"person:{cast.other_staff}")[-1]
    assert (entry.kind, entry.trigger, entry.actor) == ("record", "change_role", cast.admin)
    assert entry.data == '{"municipality":"431001","role":"staff"}'


def test_a_second_bootstrap_administrator_is_refused(engine: pdca.Engine, cast: Cast) -> None:
    with pytest.raises(pdca.InvalidInput, match="an administrator exists already"):
        engine.bootstrap_admin("another-admin")
