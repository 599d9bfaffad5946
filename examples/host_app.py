"""A host application embedding pdca: the shape of a municipal system that uses it.

It opens the engine, registers its own users as people (pdca only needs to know who is
acting and in which role), fires transitions on their behalf, and subscribes to
transition events to keep its own records in step. CI runs it.

    python examples/host_app.py [DATABASE_URL]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pdca


class HostSystem:
    """A stand-in for the municipality's own system (its users, its records)."""

    def __init__(self, engine: pdca.Engine) -> None:
        self.engine = engine
        self.synced: list[str] = []
        # Called after each commit, from pdca's outbox; a failure here is retried later.
        engine.on_transition(self.on_transition)

    def on_transition(self, event: pdca.Transition) -> None:
        self.synced.append(f"{event.ref} {event.from_state or '-'}→{event.to_state} "
                           f"by {event.actor}")

    def user_clicks(self, user: str, ref: str, trigger: str, **data: object) -> str:
        """What a button in the host's UI does: fire as the logged-in user, explain refusals."""
        try:
            result = self.engine.fire(ref, trigger, actor=user, data=data or None)
        except pdca.TransitionRefused as refusal:  # not allowed, guard, permission, conflict
            return f"refused ({refusal.code}): {refusal}"
        except pdca.InvalidInput as bad:
            return f"bad input: {bad}"
        return f"ok: {result.ref} is now {result.to_state}"


def main(url: str) -> int:
    engine = pdca.Engine.open(url, migrate=True)
    host = HostSystem(engine)

    # The host registers its users once (an administrator does it; audited).
    engine.bootstrap_admin("it-admin")
    engine.load_plan("kumamoto", actor="it-admin")
    engine.add_person("tanaka", role="staff", municipality="431001", name="田中",
                      actor="it-admin")
    engine.add_person("sato", role="staff", municipality="432105", name="佐藤",
                      actor="it-admin")

    engine.create("measure:H-001", actor="tanaka", data={
        "municipalities": ["431001"], "title_ja": "公用車のEV化", "title_en": "EV fleet",
        "policy_area": "energy_saving", "kind": "study"})

    print(host.user_clicks("sato", "measure:H-001", "commercialise"))
    print(host.user_clicks("tanaka", "measure:H-001", "commercialise", fiscal_year=2025))
    print(host.user_clicks("tanaka", "measure:H-001", "commercialise"))
    print(host.user_clicks("tanaka", "measure:H-001", "discontinue"))

    view = engine.get("measure:H-001", actor="tanaka")
    print(f"{view.ref}: {view.state_label}; tanaka may now {', '.join(view.allowed)}")
    print("host records:", *host.synced, sep="\n  ")
    ok = engine.verify_audit().ok
    engine.close()
    funded = "measure:H-001 study→implemented by tanaka" in host.synced
    return 0 if ok and funded else 1


if __name__ == "__main__":
    if len(sys.argv) > 1:
        sys.exit(main(sys.argv[1]))
    with tempfile.TemporaryDirectory() as folder:
        sys.exit(main(f"sqlite:///{Path(folder) / 'host.db'}"))
