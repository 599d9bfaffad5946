"""The measure workflow, end to end through the engine."""

from __future__ import annotations

import pytest

import pdca
from tests.conftest import KIKUCHI, KUMAMOTO, Cast, make_measure


def test_study_project_moves_to_implemented_when_commercialised(
    engine: pdca.Engine, cast: Cast
) -> None:
    ref = make_measure(engine)
    result = engine.fire(ref, "commercialise", actor=cast.staff, data={"fiscal_year": 2025})
    assert (result.from_state, result.to_state) == ("study", "implemented")
    assert engine.get(ref).state == "implemented"
    assert engine.get(ref).state_label == "実施事業"


def test_implementation_project_completes(engine: pdca.Engine, cast: Cast) -> None:
    ref = make_measure(engine, kind="implementation")
    assert engine.get(ref).state == "implemented"
    engine.fire(ref, "complete", actor=cast.staff)
    assert engine.get(ref).state == "completed"


@pytest.mark.parametrize("kind", ["study", "implementation"])
def test_study_or_implementation_is_discontinued_with_a_reason(
    engine: pdca.Engine, cast: Cast, kind: str
) -> None:
    ref = make_measure(engine, kind=kind)
    result = engine.fire(ref, "discontinue", actor=cast.staff, data={"reason": "予算削減"})
    assert result.to_state == "discontinued"
    assert engine.history(ref)[-1].data == '{"reason":"予算削減"}'


def test_discontinue_without_a_reason_is_invalid_and_writes_nothing(
    engine: pdca.Engine, cast: Cast
) -> None:
    ref = make_measure(engine)
    before = len(list(engine.audit_log()))
    with pytest.raises(pdca.InvalidData) as info:
        engine.fire(ref, "discontinue", actor=cast.staff)
    assert info.value.field == "reason"
    with pytest.raises(pdca.InvalidData, match="must not be empty"):
        engine.fire(ref, "discontinue", actor=cast.staff, data={"reason": "   "})
    assert len(list(engine.audit_log())) == before
    assert engine.get(ref).state == "study"


@pytest.mark.parametrize(
    ("setup", "trigger", "state"),
    [
        ([], "complete", "study"),
        (["commercialise"], "commercialise", "implemented"),
        (["commercialise", "complete"], "discontinue", "completed"),
        (["commercialise", "complete"], "complete", "completed"),
    ],
)
def test_trigger_not_allowed_in_the_current_state_is_refused_with_the_allowed_ones(
    engine: pdca.Engine, cast: Cast, setup: list[str], trigger: str, state: str
) -> None:
    ref = make_measure(engine)
    for step in setup:
        engine.fire(ref, step, actor=cast.staff)
    data = {"reason": "x"} if trigger == "discontinue" else None
    with pytest.raises(pdca.TransitionNotAllowed) as info:
        engine.fire(ref, trigger, actor=cast.staff, data=data)
    err = info.value
    assert (err.ref, err.trigger, err.state) == (ref, trigger, state)
    assert f"it is {state}" in str(err)


def test_discontinued_measure_allows_nothing(engine: pdca.Engine, cast: Cast) -> None:
    ref = make_measure(engine)
    engine.fire(ref, "discontinue", actor=cast.staff, data={"reason": "x"})
    assert engine.get(ref, actor=cast.staff).allowed == ()
    with pytest.raises(pdca.TransitionNotAllowed, match="no trigger is allowed"):
        engine.fire(ref, "commercialise", actor=cast.staff)


def test_get_lists_the_triggers_this_actor_may_fire_now(engine: pdca.Engine, cast: Cast) -> None:
    ref = make_measure(engine)
    assert engine.get(ref, actor=cast.staff).allowed == ("commercialise", "discontinue")
    assert engine.get(ref, actor=cast.other_staff).allowed == ()
    assert engine.get(ref, actor=cast.secretariat).allowed == ()
    assert engine.get(ref).allowed == ("commercialise", "discontinue")


def test_joint_measure_may_be_advanced_by_staff_of_any_owner(
    engine: pdca.Engine, cast: Cast
) -> None:
    ref = make_measure(engine, actor=cast.secretariat, municipalities=(KUMAMOTO, KIKUCHI))
    engine.fire(ref, "commercialise", actor=cast.other_staff)
    engine.fire(ref, "complete", actor=cast.staff)
    assert engine.get(ref).scope == (KUMAMOTO, KIKUCHI)


def test_history_tells_the_story_in_order(engine: pdca.Engine, cast: Cast) -> None:
    ref = make_measure(engine)
    engine.fire(ref, "commercialise", actor=cast.staff, note="令和7年度予算")
    engine.fire(ref, "complete", actor=cast.staff)
    history = engine.history(ref)
    assert [(h.kind, h.trigger, h.from_state, h.to_state) for h in history] == [
        ("create", "create", None, "study"),
        ("transition", "commercialise", "study", "implemented"),
        ("transition", "complete", "implemented", "completed"),
    ]
    assert [h.entity_seq for h in history] == [1, 2, 3]
    assert history[1].note == "令和7年度予算"
    assert history[1].prev_hash == history[0].hash
    assert all(h.workflow_version == engine.registry.get("measure").version for h in history)


def test_expected_version_that_is_no_longer_current_is_a_conflict(
    engine: pdca.Engine, cast: Cast
) -> None:
    ref = make_measure(engine)
    seen = engine.get(ref).version
    engine.fire(ref, "commercialise", actor=cast.staff, expected_version=seen)
    with pytest.raises(pdca.ConcurrentTransition) as info:
        engine.fire(ref, "discontinue", actor=cast.staff, data={"reason": "x"},
                    expected_version=seen)
    assert info.value.state == "implemented"
    assert engine.get(ref).state == "implemented"


def test_duplicate_measure_code_is_refused(engine: pdca.Engine, cast: Cast) -> None:
    make_measure(engine)
    with pytest.raises(pdca.DuplicateEntity, match="measure:M-001 already exists"):
        make_measure(engine)
