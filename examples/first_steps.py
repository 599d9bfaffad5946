"""A first tour of pdca: a measure from study project to implementation, audited.

Run it from the repository (it creates ``first_steps.db`` in the current folder afresh, or
uses the empty database whose URL is the first argument):

    python examples/first_steps.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import pdca


def main(url: str) -> int:
    engine = pdca.Engine.open(url, migrate=True)
    events: list[pdca.Transition] = []
    engine.on_transition(events.append)  # a host system would sync its own records here

    engine.bootstrap_admin("admin")
    engine.add_person("staff-kumamoto", role="staff", municipality="431001", actor="admin")
    engine.add_person("staff-kikuchi", role="staff", municipality="432105", actor="admin")

    ref = "measure:R-001"
    engine.create(
        ref,
        actor="staff-kumamoto",
        data={
            "municipalities": ["431001"],
            "title_ja": "公共施設への太陽光発電設備の導入",
            "title_en": "Solar panels on public buildings",
            "policy_area": "renewable_energy",
            "kind": "study",
        },
    )
    print(f"{ref} is {engine.get(ref).state_label}")

    try:  # staff of another municipality may not advance Kumamoto's measure
        engine.fire(ref, "commercialise", actor="staff-kikuchi")
    except pdca.PermissionDenied as refusal:
        print(f"refused (and audited): {refusal}")

    engine.fire(ref, "commercialise", actor="staff-kumamoto", data={"fiscal_year": 2025},
                note="令和7年度予算で事業化")
    view = engine.get(ref, actor="staff-kumamoto")
    print(f"{ref} is now {view.state_label}; staff may now: {', '.join(view.allowed)}")

    print("history:")
    for entry in engine.history(ref):
        outcome = "refused" if entry.kind == "refused" else f"-> {entry.to_state}"
        print(f"  #{entry.seq} {entry.actor:15} {entry.trigger:14} "
              f"{entry.from_state or '-':>11} {outcome}")

    checkpoint = engine.checkpoint()
    report = engine.verify_audit()
    print(f"audit log: {report.entries} entries, verified: {report.ok}; "
          f"checkpoint #{checkpoint.seq} sealed it")
    print(f"host system received {len(events)} events")
    engine.close()
    return 0 if report.ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1:
        target = sys.argv[1]
    else:  # the tour's own database: start afresh each time
        for suffix in ("", "-wal", "-shm"):
            Path(f"first_steps.db{suffix}").unlink(missing_ok=True)
        target = "sqlite:///first_steps.db"
    sys.exit(main(target))
