"""Transition events for host systems: delivered after commit, from the outbox."""

from __future__ import annotations

import pytest

import pdca
from tests.conftest import Cast, make_measure


def test_subscriber_is_called_after_commit_with_what_happened(
    engine: pdca.Engine, cast: Cast
) -> None:
    ref = make_measure(engine)
    seen: list[tuple[pdca.Transition, str]] = []
    # The callback reads the state through the engine: the change must be committed.
    engine.on_transition(lambda t: seen.append((t, engine.get(t.ref).state)))
    result = engine.fire(ref, "commercialise", actor=cast.staff, note="予算化")
    assert len(seen) == 1
    event, state_seen = seen[0]
    assert state_seen == "implemented"
    assert event == result


def test_failed_delivery_is_retried_and_not_lost(engine: pdca.Engine, cast: Cast) -> None:
    ref = make_measure(engine)
    calls: list[str] = []
    broken = True

    def flaky(t: pdca.Transition) -> None:
        calls.append(t.trigger)
        if broken:
            raise RuntimeError("host system down")

    engine.on_transition(flaky)
    engine.fire(ref, "commercialise", actor=cast.staff)
    assert engine.get(ref).state == "implemented"  # the transition stands
    broken = False
    # Retried deliveries wait for their back-off; make them due now.
    with engine._db.begin() as conn:
        conn.exec_driver_sql("UPDATE outbox SET next_attempt_at = created_at")
    assert engine.deliver_pending() == 1
    assert calls == ["commercialise", "commercialise"]
    assert engine.deliver_pending() == 0


def test_unsubscribed_callback_is_not_called(engine: pdca.Engine, cast: Cast) -> None:
    ref = make_measure(engine)
    seen: list[pdca.Transition] = []
    unsubscribe = engine.on_transition(seen.append)
    unsubscribe()
    engine.fire(ref, "commercialise", actor=cast.staff)
    assert seen == []


def test_refusal_produces_no_event(engine: pdca.Engine, cast: Cast) -> None:
    ref = make_measure(engine)
    seen: list[pdca.Transition] = []
    engine.on_transition(seen.append)
    with pytest.raises(pdca.PermissionDenied):
        engine.fire(ref, "commercialise", actor=cast.other_staff)
    assert seen == []
