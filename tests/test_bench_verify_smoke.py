"""The verify benchmark runs on a small log and reports what it promises.

No timing is asserted: on a shared or loaded machine any threshold would be flaky.
"""

from __future__ import annotations

import pytest

import pdca
from benchmarks import bench_verify
from tests.conftest import Cast, make_measure

KEYS = {"entries", "verify_seconds", "baseline_seconds", "ratio", "target", "target_met", "ok"}


def test_verify_figures_on_a_small_log(engine: pdca.Engine, cast: Cast, db_url: str) -> None:
    for number in range(1, 4):
        ref = make_measure(engine, f"M-00{number}")
        engine.fire(ref, "commercialise", actor=cast.staff, note="令和7年度予算で事業化")
    with pytest.raises(pdca.PermissionDenied):
        engine.fire(make_measure(engine, "M-009"), "commercialise", actor=cast.other_staff)
    engine.checkpoint()
    entries = len(list(engine.audit_log()))

    figures = bench_verify.verify_figures(db_url, repeat=1)

    assert set(figures) == KEYS
    assert figures["ok"] is True
    assert figures["entries"] == entries
    assert figures["target"] == bench_verify.TARGET
    assert figures["verify_seconds"] > 0
    assert figures["baseline_seconds"] > 0
    assert figures["target_met"] == (figures["ratio"] >= figures["target"])
