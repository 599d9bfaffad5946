"""`pdca daemon`, `pdca tick` and `pdca simulate` from the command line."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

import pdca
from pdca.cli import main
from pdca.scheduler import Daemon, due_moments


def _cli(url: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--db", url, "--lang", "en", *args],
                                catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def real_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'real.db'}"
    code, _, err = _cli(url, "init", "--plan", "kumamoto", "--admin", "admin")
    assert code == 0, err
    return url


@pytest.fixture
def sim_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'sim.db'}"
    code, out, err = _cli(url, "init", "--simulation", "--start", "2025-03-01", "--plan",
                          "kumamoto", "--admin", "admin")
    assert code == 0, err
    assert "SIMULATION" in out
    return url


def test_daemon_catches_up_at_start_and_stops_cleanly_on_sigterm(
    real_db: str, tmp_path: Path
) -> None:
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pdca", "--db", real_db, "daemon", "--heartbeat", "60"],
            stdout=subprocess.DEVNULL, stderr=log_file,
        )
        try:
            for _ in range(6000):  # bounded wait for the daemon to say it has started
                if "daemon_started" in log_path.read_text() or proc.poll() is not None:
                    break
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.01)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=60)
    lines = log_path.read_text().splitlines()
    events = [json.loads(line)["event"] for line in lines if line.startswith("{")]
    assert events[-3:] == ["daemon_started", "daemon_stopping", "daemon_stopped"]
    assert "tick" in events  # it caught up before planning its jobs
    assert "fired" in events  # and logged every firing


def test_daemon_refuses_a_simulation_database(sim_db: str) -> None:
    with pdca.Engine.open(sim_db) as engine, pytest.raises(pdca.InvalidInput,
                                                           match="pdca simulate"):
        Daemon(engine)


def test_daemon_plans_one_job_per_due_moment(real_db: str) -> None:
    with pdca.Engine.open(real_db) as engine:
        daemon = Daemon(engine)
        count = daemon.plan_jobs()
        moments = due_moments(engine, datetime.now(UTC))
        jobs = {job.id for job in daemon.scheduler.get_jobs()}
    assert count == len(moments)
    assert {"daily", "heartbeat"} <= jobs
    assert len(jobs) == len(moments) + 2


def test_tick_at_a_time_later_than_now_is_refused_on_a_real_database(real_db: str) -> None:
    code, _, err = _cli(real_db, "tick", "--at", "2999-01-01")
    assert code == 2
    assert "later than now" in err


def test_tick_at_something_that_is_not_a_time_is_bad_usage(real_db: str) -> None:
    code, _, err = _cli(real_db, "tick", "--at", "soon")
    assert code == 2
    assert "not a time: 'soon'" in err


def test_simulate_moves_the_virtual_clock_and_says_it_is_a_simulation(sim_db: str) -> None:
    code, _out, err = _cli(sim_db, "simulate", "--until", "2025-04-02")
    assert code == 0, err
    assert "[SIMULATION]" in err
    with pdca.Engine.open(sim_db) as engine:
        assert engine.simulation
        assert engine.now() == datetime(2025, 4, 1, 15, tzinfo=UTC)
        states = {v.state for v in engine.entities(workflow="municipal_cycle",
                                                   fiscal_year=2025)}
        start = next(e for e in engine.audit_log() if e.trigger == "start")
    assert states == {"do"}
    assert start.virtual_at == datetime(2025, 3, 31, 15, tzinfo=UTC)  # 1 April, 00:00 JST
    assert start.at > datetime(2026, 1, 1, tzinfo=UTC)  # the real time, not backdated


def test_tick_json_lists_the_firings_and_ticking_again_fires_nothing(sim_db: str) -> None:
    code, out, _ = _cli(sim_db, "tick", "--at", "2025-04-01", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["simulation"] is True
    assert report["done"] == 1 + 18
    assert {f["trigger"] for f in report["firings"] if f["action"] == "fire"} == {"start"}
    code, out, _ = _cli(sim_db, "tick", "--at", "2025-04-01", "--json")
    assert json.loads(out)["firings"] == []


def test_the_virtual_clock_never_goes_back(sim_db: str) -> None:
    assert _cli(sim_db, "tick", "--at", "2025-05-01")[0] == 0
    code, _, err = _cli(sim_db, "tick", "--at", "2025-04-01")
    assert code == 2
    assert "never goes back" in err


def test_simulate_on_a_real_database_is_refused(real_db: str) -> None:
    code, _, err = _cli(real_db, "simulate", "--until", "2026-01-01")
    assert code == 2
    assert "only on a simulation database" in err
