"""The command line: arrange through the library, act through the CLI, assert both."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import pdca
from pdca.cli import main
from tests.conftest import make_measure

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    with pdca.Engine.open(url, migrate=True) as engine:
        engine.bootstrap_admin("admin")
        engine.add_person("staff-kumamoto", role="staff", municipality="431001", actor="admin")
        engine.add_person("staff-kikuchi", role="staff", municipality="432105", actor="admin")
        make_measure(engine)
    return url


def run(url: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--db", url, "--lang", "en", *args],
                                catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _commands(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        yield f"{prefix}{name}", command
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix}{name} ")


@pytest.mark.parametrize("name", [n for n, _ in _commands(main)])
def test_every_command_has_a_docstring_with_an_example(name: str) -> None:
    command = dict(_commands(main))[name]
    if isinstance(command, click.Group):
        assert command.help, f"{name} has no help"
    else:
        assert command.help and "Example:" in command.help, f"{name} has no example"


def test_advance_fires_the_trigger_as_the_acting_person(url: str) -> None:
    code, out, _ = run(url, "--actor", "staff-kumamoto", "advance", "measure:M-001",
                       "commercialise", "--set", "fiscal_year=2025", "--note", "予算化")
    assert code == 0
    assert out.startswith("measure:M-001: study → implemented")
    with pdca.Engine.open(url) as engine:
        last = engine.history("measure:M-001")[-1]
    assert (last.trigger, last.note, last.data) == ("commercialise", "予算化",
                                                    '{"fiscal_year":2025}')


def test_refusal_exits_1_with_the_reason(url: str) -> None:
    code, out, err = run(url, "--actor", "staff-kikuchi", "advance", "measure:M-001",
                         "commercialise")
    assert code == 1
    assert out == ""
    assert err.strip() == ("Error: staff-kikuchi (staff) may not commercialise measure:M-001: "
                           "it belongs to 431001, not to 432105")


def test_refusal_with_json_is_one_json_object_on_stderr(url: str) -> None:
    code, out, err = run(url, "--actor", "staff-kumamoto", "advance", "measure:M-001",
                         "complete", "--json")
    assert code == 1
    assert out == ""
    assert json.loads(err)["error"] == "not_allowed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["advance", "measure:NOPE", "complete"], "no such entity: measure:NOPE"),
        (["advance", "measure:M-001", "fly"], "unknown trigger 'fly'"),
        (["advance", "measure:M-001", "commercialise", "--set", "fiscal_year=soon"],
         "fiscal_year must be a whole number"),
        (["advance", "measure:M-001", "commercialise", "--set", "oops"], "KEY=VALUE"),
        (["show", "bogus"], "expected KIND:KEY"),
    ],
)
def test_bad_input_exits_2_with_one_line(url: str, args: list[str], message: str) -> None:
    code, _, err = run(url, "--actor", "staff-kumamoto", *args)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_unregistered_actor_exits_2(url: str) -> None:
    code, _, err = run(url, "--actor", "mallory", "advance", "measure:M-001", "commercialise")
    assert code == 2
    assert "unknown actor 'mallory'" in err


def test_show_json_has_the_contract_keys(url: str) -> None:
    code, out, _ = run(url, "--actor", "staff-kumamoto", "show", "measure:M-001", "--json")
    assert code == 0
    shown = json.loads(out)
    assert {"ref", "state", "allowed", "overdue", "history"} <= shown.keys()
    assert shown["allowed"] == ["commercialise", "discontinue"]
    assert shown["history"][0]["trigger"] == "create"


def test_show_prints_state_and_history_in_japanese(url: str) -> None:
    result = CliRunner().invoke(main, ["--db", url, "--lang", "ja", "--actor", "staff-kumamoto",
                                       "show", "measure:M-001"], catch_exceptions=False)
    assert result.exit_code == 0
    assert "状態: 検討事業 (study)" in result.stdout
    assert "実行可能な操作: commercialise, discontinue" in result.stdout


def test_people_add_and_list(url: str) -> None:
    code, out, _ = run(url, "--actor", "admin", "people", "add", "sec", "--role", "secretariat")
    assert (code, out.strip()) == (0, "person:sec")
    code, out, _ = run(url, "people", "list", "--json")
    assert {p["id"]: p["role"] for p in json.loads(out)}["sec"] == "secretariat"


def test_audit_log_json_is_one_object_per_line(url: str) -> None:
    code, out, _ = run(url, "audit", "log", "--json", "--ref", "measure:M-001")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["trigger"] for line in lines] == ["create"]
    assert {"seq", "at", "actor", "ref", "trigger", "from", "to", "note", "hash"} <= lines[0].keys()


def test_audit_verify_and_checkpoint(url: str) -> None:
    code, out, _ = run(url, "audit", "checkpoint", "--json")
    assert code == 0
    digest = json.loads(out)["digest"]
    code, out, _ = run(url, "audit", "verify", "--json", "--expect", digest)
    assert code == 0
    assert json.loads(out)["ok"] is True
    code, out, _ = run(url, "audit", "verify", "--json", "--expect", "0" * 64)
    assert code == 1
    assert json.loads(out)["reason"] == "checkpoint_missing"


def test_init_is_safe_to_run_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    for _ in range(2):
        code, _, _ = run(url, "init", "--admin", "admin")
        assert code == 0
    with pdca.Engine.open(url) as engine:
        assert [p.id for p in engine.people()] == ["admin"]


def test_command_on_a_database_without_schema_says_run_init(tmp_path: Path) -> None:
    code, _, err = run(f"sqlite:///{tmp_path / 'empty.db'}", "people", "list")
    assert code == 2
    assert "pdca init" in err


def test_diagram_prints_mermaid(url: str) -> None:
    code, out, _ = run(url, "diagram", "measure")
    assert code == 0
    assert out.startswith("stateDiagram-v2\n")
    code, _, err = run(url, "diagram", "nothing")
    assert code == 2
    assert "unknown workflow 'nothing'" in err


def test_python_m_pdca_works() -> None:
    result = subprocess.run([sys.executable, "-m", "pdca", "--help"], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0
    assert "Usage:" in result.stdout


def test_first_steps_example_runs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'example.db'}"
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "first_steps.py"), url],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "verified: True" in result.stdout
