"""The national benchmark runs end to end at its tiny size and reports every figure.

No timing is asserted (a shared machine makes any threshold flaky): only that each figure
and its same-run baseline are there, positive, and that the generated database verifies.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from benchmarks import bench_national, national

FIGURES = {"generated", "rollover", "status", "verify", "cold_start", "fire", "simulate"}


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert bench_national.main(argv) == 0
    report = json.loads(capsys.readouterr().out)  # exactly one JSON document on stdout
    assert isinstance(report, dict)
    return report


@pytest.mark.slow
def test_tiny_run_reports_every_figure_next_to_its_baseline(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pg = os.environ.get(bench_national.PG_ENV)
    argv = ["--size", "tiny", "--repeat", "1", "--fire-size", "4", "--fire-rounds", "1",
            "--results-dir", str(tmp_path), "--db", "both" if pg else "sqlite"]
    report = _run(argv, capsys)

    assert report["size"]["name"] == "tiny"
    saved = list(tmp_path.glob("national-tiny-*.json"))
    assert len(saved) == 1
    assert json.loads(saved[0].read_text("utf-8"))["databases"].keys() == report[
        "databases"].keys()
    kinds = ["sqlite", "postgresql"] if pg else ["sqlite"]
    assert list(report["databases"]) == kinds
    for kind in kinds:
        figures = report["databases"][kind]
        assert figures.keys() >= FIGURES
        generated = figures["generated"]
        assert generated["audit_entries"] > generated["entities"] > 0
        assert figures["verify"]["ok"] is True
        assert figures["verify"]["entries"] >= generated["audit_entries"]
        rollover = figures["rollover"]
        assert rollover["audit_entries"] > 0 and rollover["baseline_rows"] > 0
        assert rollover["peak_rss_mb"] > 0
        assert figures["status"]["members"] == 3
        for key in ("library_seconds", "baseline_seconds", "cli_seconds",
                    "cli_baseline_seconds"):
            assert figures["status"][key] > 0
        assert all(v > 0 for v in figures["cold_start"]["seconds"].values())
        assert figures["fire"]["engine_rate"] > 0 and figures["fire"]["baseline_rate"] > 0
        assert figures["simulate"]["measures"] == 18 * 100
    if pg:
        four = report["databases"]["postgresql"]["fire_4_processes"]
        assert four["processes"] == 4 and four["engine_rate"] > 0
    named = {(t["database"], t["figure"]) for t in report["targets"]}
    assert ("sqlite", "rollover_peak_rss_mb") in named
    assert all(isinstance(t["met"], bool) for t in report["targets"])


def test_generated_codes_are_valid_and_distinct() -> None:
    from pdca.types import validate_municipality_code

    codes = national.municipality_codes(national.NATIONAL)
    assert len(set(codes)) == national.NATIONAL
    assert all(validate_municipality_code(c) == c for c in codes)


def test_the_generated_plan_is_a_valid_plan_of_those_members() -> None:
    from pdca.plans import Plan

    codes = national.municipality_codes(40)
    plan = Plan.from_toml_text(national.plan_text(codes), source="national.toml")
    assert [m.code for m in plan.members] == codes
    assert plan.id == "national"
