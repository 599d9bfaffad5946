"""The fire benchmark runs end to end at a tiny size and reports what it promises.

No timing is asserted: on a shared or loaded machine any threshold would be flaky. Only the
shape of the report and that both sides made progress.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import bench_fire

TINY = ["--size", "5", "--rounds", "1", "--db", "sqlite"]

TOP_KEYS = {
    "benchmark",
    "started_at",
    "command",
    "size",
    "rounds",
    "transitions_per_round",
    "unit",
    "target_ratio",
    "targets_met",
    "databases",
    "environment",
}
DATABASE_KEYS = {
    "status",
    "engine_rate",
    "baseline_rate",
    "ratio",
    "target",
    "target_met",
    "engine_rates",
    "baseline_rates",
    "round_ratios",
    "settings",
}


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert bench_fire.main(argv) == 0
    out = capsys.readouterr().out
    report = json.loads(out)  # exactly one JSON document: anything else would not parse
    assert isinstance(report, dict)
    return report


def test_tiny_sqlite_run_reports_rates_and_ratio(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    report = _run([*TINY, "--no-save", "--results-dir", str(tmp_path)], capsys)

    assert report.keys() >= TOP_KEYS
    assert report["size"] == 5
    assert report["rounds"] == 1
    assert report["transitions_per_round"] == 10
    assert report["target_ratio"] == 0.5
    sqlite = report["databases"]["sqlite"]
    assert sqlite["status"] == "ok"
    assert sqlite.keys() >= DATABASE_KEYS
    assert sqlite["engine_rate"] > 0
    assert sqlite["baseline_rate"] > 0
    assert sqlite["ratio"] > 0
    assert sqlite["target"] == 0.5
    assert isinstance(sqlite["target_met"], bool)
    assert len(sqlite["engine_rates"]) == len(sqlite["baseline_rates"]) == 1
    postgresql = report["databases"]["postgresql"]
    assert postgresql["status"] == "skipped"
    assert postgresql["note"]
    assert list(tmp_path.iterdir()) == []  # --no-save


def test_postgresql_is_skipped_with_a_note_without_a_url(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(bench_fire.PG_ENV, raising=False)
    argv = ["--size", "5", "--rounds", "1", "--results-dir", str(tmp_path)]
    report = _run(argv, capsys)

    postgresql = report["databases"]["postgresql"]
    assert postgresql["status"] == "skipped"
    assert bench_fire.PG_ENV in postgresql["note"]
    assert report["databases"]["sqlite"]["engine_rate"] > 0
    saved = list(tmp_path.glob("fire-*Z.json"))
    assert len(saved) == 1
    assert json.loads(saved[0].read_text("utf-8")) == report
