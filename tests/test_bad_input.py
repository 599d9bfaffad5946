"""Bad input: one clear InvalidInput-family error naming what was wrong; nothing written."""

from __future__ import annotations

from typing import Any

import pytest

import pdca
from tests.conftest import Cast, make_measure


def _log_size(engine: pdca.Engine) -> int:
    return len(list(engine.audit_log()))


@pytest.mark.parametrize(
    ("ref", "error", "message"),
    [
        ("measure:NOPE", pdca.UnknownReference, "no such entity: measure:NOPE"),
        ("nonsense", pdca.UnknownReference, "expected KIND:KEY"),
        ("widget:1", pdca.UnknownReference, "unknown kind of entity 'widget'"),
        ("measure:", pdca.UnknownReference, "expected KIND:KEY"),
        ("measure:a b", pdca.UnknownReference, "malformed"),
    ],
)
def test_unknown_or_malformed_reference_is_named(
    engine: pdca.Engine, cast: Cast, ref: str, error: type[Exception], message: str
) -> None:
    before = _log_size(engine)
    with pytest.raises(error, match=message):
        engine.fire(ref, "commercialise", actor=cast.staff)
    assert _log_size(engine) == before


def test_unknown_trigger_lists_the_workflows_triggers(engine: pdca.Engine, cast: Cast) -> None:
    ref = make_measure(engine)
    before = _log_size(engine)
    with pytest.raises(pdca.UnknownTrigger) as info:
        engine.fire(ref, "fund", actor=cast.staff)
    assert info.value.trigger == "fund"
    assert "commercialise, complete, discontinue" in str(info.value)
    assert _log_size(engine) == before


def test_unknown_actor_is_refused_before_anything_is_written(
    engine: pdca.Engine, cast: Cast
) -> None:
    ref = make_measure(engine)
    before = _log_size(engine)
    with pytest.raises(pdca.UnknownActor, match="unknown actor 'mallory'"):
        engine.fire(ref, "commercialise", actor="mallory")
    assert _log_size(engine) == before
    assert engine.get(ref).state == "study"


def test_deactivated_person_may_not_act(engine: pdca.Engine, cast: Cast) -> None:
    ref = make_measure(engine)
    engine.fire(f"person:{cast.staff}", "deactivate", actor=cast.admin)
    with pytest.raises(pdca.UnknownActor, match="deactivated"):
        engine.fire(ref, "commercialise", actor=cast.staff)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"fiscal_year": "2025"}, "fiscal_year"),
        ({"fiscal_year": True}, "fiscal_year"),
        ({"budget_jpy": 1.5}, "budget_jpy"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_data_of_the_wrong_type_or_unknown_key_names_the_field(
    engine: pdca.Engine, cast: Cast, data: dict[str, Any], field: str
) -> None:
    ref = make_measure(engine)
    before = _log_size(engine)
    with pytest.raises(pdca.InvalidData) as info:
        engine.fire(ref, "commercialise", actor=cast.staff, data=data)
    assert info.value.field == field
    assert _log_size(engine) == before


def test_unknown_role_is_invalid(engine: pdca.Engine, cast: Cast) -> None:
    with pytest.raises(pdca.InvalidInput, match="unknown role 'mayor'"):
        engine.add_person("x", role="mayor", actor=cast.admin)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"role": "staff"}, "need a municipality"),
        ({"role": "staff", "municipality": "431002"}, "wrong check digit"),
        ({"role": "staff", "municipality": "43100"}, "must be 6 digits"),
        ({"role": "secretariat", "municipality": "431001"}, "only municipal staff"),
    ],
)
def test_person_with_inconsistent_role_and_municipality_is_invalid(
    engine: pdca.Engine, cast: Cast, kwargs: dict[str, str], message: str
) -> None:
    before = _log_size(engine)
    with pytest.raises(pdca.InvalidInput, match=message):
        engine.add_person("newcomer", actor=cast.admin, **kwargs)
    assert _log_size(engine) == before


def test_measure_with_a_bad_municipality_code_is_invalid(engine: pdca.Engine, cast: Cast) -> None:
    before = _log_size(engine)
    with pytest.raises(pdca.InvalidInput, match="wrong check digit"):
        make_measure(engine, actor=cast.secretariat, municipalities=("431009",))
    with pytest.raises(pdca.InvalidData, match="kind must be one of study, implementation"):
        engine.create(
            "measure:M-9",
            actor=cast.secretariat,
            data={"municipalities": ["431001"], "title_ja": "x", "kind": "dream"},
        )
    assert _log_size(engine) == before


def test_nan_in_data_is_refused(engine: pdca.Engine, cast: Cast) -> None:
    with pytest.raises(pdca.InvalidData, match="finite"):
        engine.create(
            "measure:M-9",
            actor=cast.secretariat,
            data={
                "municipalities": ["431001"],
                "title_ja": "x",
                "kind": "study",
                "target": float("nan"),
            },
        )
