"""Properties: input of any shape is either accepted or refused as :class:`pdca.InvalidInput`
(naming where it came from), never crashes with another exception, and a refusal writes
nothing.

* the plan loader, on mutations of the bundled kumamoto.toml and on TOML-ish noise;
* the CSV importers of measures and emissions, on random rows and values, with the audit
  log and the entities counted before and after every example;
* references, triggers, actors, data and notes of arbitrary text through ``Ref.parse``,
  ``Engine.get/history/parse_data/fire``;
* the ``pdca`` command with random argument lists made of its own command and option names,
  real values and random text.

Hypothesis runs derandomized (the same examples on every run) with no example database.
The defects these properties found (and fixed) keep a test each at the end of the file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import shutil
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import pdca
from pdca.cli import main
from pdca.engine import EMISSION_COLUMNS, MEASURE_COLUMNS, ImportResult
from pdca.plans import Plan, load_plan
from pdca.workflows import default_registry
from pdca.workflows.emissions import STATUSES
from tests.conftest import KIKUCHI, KUMAMOTO
from tests.test_fiscal_year import Clock

DETERMINISTIC = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.large_base_example],
)


def deterministic(examples: int) -> settings:
    """The same ``examples`` examples on every run."""
    return settings(DETERMINISTIC, max_examples=examples)


PLAN_PATH = Path(pdca.__file__).parent / "plans" / "kumamoto.toml"
PLAN_TEXT = PLAN_PATH.read_text(encoding="utf-8")
SOURCE = "mutated.toml"
YAMAGA = "432083"  # a valid code, not a member of the bundled plan
HUGE = "99999999999999999999"  # more than a 64-bit integer holds
T = TypeVar("T")


def _audit_size(engine: pdca.Engine) -> int:
    return sum(1 for _ in engine.audit_log())


def _entity_count(engine: pdca.Engine) -> int:
    return sum(len(engine.entities(workflow=w.name)) for w in default_registry())


def _fresh_engine(url: str, clock: Clock | None = None) -> pdca.Engine:
    """A migrated engine with the bundled plan and one person of each role."""
    engine = pdca.Engine.open(url, migrate=True, clock=clock)
    engine.bootstrap_admin("admin")
    engine.load_plan("kumamoto", actor="admin")
    for role in ("secretariat", "clerk", "auditor"):
        engine.add_person(role, role=role, actor="admin")
    for code in (KUMAMOTO, KIKUCHI):
        engine.add_person(f"staff-{code}", role="staff", municipality=code, actor="admin")
    return engine


# ----------------------------------------------------------------------------- (a) plan loader

#: Values that TOML and the plan's checks treat in interesting ways.
TOML_VALUES = (
    '""', '" "', "0", "-1", "2013", "9999", HUGE, "1e999", "inf", "nan", "-0.0", "true",
    "false", "[]", "{}", "[[]]", "{ a = 1 }", '"2013"', '"04-01"', '"4-1"', '"02-29"',
    '"13-01"', '"00-00"', '"03-31"', "2016-01-01", "1979-05-27T07:32:00Z", '"431002"',
    '"431001"', '"kumamoto"', '"Kumamoto"', '"municipality"', '"nobody"', "'''x'''",
    '"\\u0000"', '"熊本"', '"a"', "[1, 2]", '["A", "B"]',
)
TOML_TOKENS = (
    "[", "]", "[[", "]]", "{", "}", "=", ".", ",", '"', "'", "#", "\n", " ", "\t", "-", "+",
    ":", "_", "0", "1", "2013", "a", "x", "plan", "members", "sectors", "schedule", "id",
    "code", "opens", "due", "joined", "rating_scale", "true", "inf", "nan", "\\", "熊",
    "\r\n", '"""', "'''",
)
toml_noise = st.lists(st.sampled_from(TOML_TOKENS), max_size=40).map("".join)
toml_value = st.one_of(st.sampled_from(TOML_VALUES), st.text(max_size=20), toml_noise,
                       st.integers().map(str), st.floats().map(repr))
index = st.integers(min_value=0, max_value=10**6)

Mutation = tuple[str, int, int, str]
mutation: st.SearchStrategy[Mutation] = st.one_of(
    st.tuples(st.just("delete"), index, st.just(0), st.just("")),
    st.tuples(st.just("duplicate"), index, st.just(0), st.just("")),
    st.tuples(st.just("value"), index, st.just(0), toml_value),
    st.tuples(st.just("insert"), index, st.just(0), st.one_of(toml_noise, st.text(max_size=30))),
    st.tuples(st.just("swap"), index, index, st.just("")),
    st.tuples(st.just("truncate"), index, st.just(0), st.just("")),
)


def mutate(text: str, mutations: Sequence[Mutation]) -> str:
    """Apply line-level mutations to ``text``: delete, duplicate, insert or swap a line,
    change the value of a ``key = value`` line to ``new``, truncate the text."""
    for op, i, j, new in mutations:
        lines = text.splitlines(keepends=True) or [""]
        n = i % len(lines)
        if op == "delete":
            del lines[n]
        elif op == "duplicate":
            lines.insert(n, lines[n])
        elif op == "insert":
            lines.insert(n, new + "\n")
        elif op == "swap":
            m = j % len(lines)
            lines[n], lines[m] = lines[m], lines[n]
        elif op == "value":
            # The n-th line that has a value, counting from line n onwards.
            candidates = [k for k in range(len(lines)) if "=" in lines[k]]
            if candidates:
                k = candidates[n % len(candidates)]
                key = lines[k].split("=", 1)[0]
                lines[k] = f"{key}= {new}\n"
        elif op == "truncate":
            text = text[: i % (len(text) + 1)]
            continue
        text = "".join(lines)
    return text


def outcome(run: Callable[[], T]) -> tuple[T | None, pdca.InvalidInput | None]:
    """What ``run`` returned, or the InvalidInput it raised (anything else propagates)."""
    try:
        return run(), None
    except pdca.InvalidInput as exc:
        return None, exc


def _check_plan_text(text: str) -> None:
    plan, error = outcome(lambda: Plan.from_toml_text(text, source=SOURCE))
    event("refused" if error is not None else "loaded")
    if error is not None:
        assert error.source == SOURCE, f"the error does not name its source: {error!r}"
        assert str(error).startswith(SOURCE)
        assert error.line is None or 1 <= error.line <= text.count("\n") + 1, error.line
        return
    assert plan is not None
    # A plan that loads is usable: it survives its dict, its first and last years compute.
    assert Plan.from_dict(plan.to_dict()) == plan
    assert len(plan.digest) == 64
    for fy in (plan.first_fiscal_year, plan.last_fiscal_year):
        plan.members_of(fy)
        plan.inventory_year(fy)
        plan.target_for(fy)
        plan.staff_meeting_dates(fy)
        for step in plan.steps:
            opens, due = plan.step_window(step.id, fy)
            assert opens <= due


@deterministic(400)
@given(mutations=st.lists(mutation, min_size=1, max_size=4))
def test_a_mutated_plan_file_loads_or_is_refused_as_invalid_input(
    mutations: list[Mutation],
) -> None:
    _check_plan_text(mutate(PLAN_TEXT, mutations))


@deterministic(300)
@given(text=st.one_of(toml_noise, st.text(max_size=200),
                      st.lists(st.tuples(st.sampled_from(TOML_TOKENS[25:36]), toml_value),
                               max_size=8).map(lambda kv: "\n".join(f"{k} = {v}"
                                                                    for k, v in kv))))
def test_toml_ish_text_loads_or_is_refused_as_invalid_input(text: str) -> None:
    _check_plan_text(text)


@deterministic(100)
@given(data=st.one_of(st.binary(max_size=300),
                      st.text(max_size=200).map(lambda t: t.encode("utf-16")),
                      st.lists(mutation, min_size=1, max_size=2).map(
                          lambda m: mutate(PLAN_TEXT, m).encode("cp932", errors="replace"))))
def test_a_plan_file_of_any_bytes_loads_or_is_refused_naming_the_file(
    data: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.getbasetemp() / "any-bytes.toml"
    path.write_bytes(data)
    _, error = outcome(lambda: load_plan(path))
    assert error is None or error.source == str(path), error


# ----------------------------------------------------------------------------- (b) CSV imports


def _cell(*choices: str) -> st.SearchStrategy[str]:
    """One of ``choices`` (valid and invalid values), or random text."""
    return st.one_of(st.sampled_from(choices), st.sampled_from(choices), st.text(max_size=12))


PLAN = load_plan("kumamoto")
CODES = st.sampled_from([f"M-{n}" for n in range(40)])
#: Rows of valid values: they import, unless the code (or value) is already there.
GOOD_MEASURE_ROW = st.tuples(
    CODES,
    st.sampled_from([KUMAMOTO, KIKUCHI, f"{KUMAMOTO};{KIKUCHI}"]),
    st.sampled_from(["施策", "太陽光発電の導入支援"]),
    st.sampled_from(["", "Solar"]),
    st.sampled_from(["", *(a.id for a in PLAN.policy_areas)]),
    st.sampled_from(["study", "implementation"]),
    st.sampled_from(["", *(p.id for p in PLAN.priority_projects)]),
    st.sampled_from(["", "true", "false", "TRUE"]),
    st.sampled_from(["", "導入件数"]),
    st.sampled_from(["", "件"]),
    st.one_of(st.just(""), st.floats(allow_nan=False, allow_infinity=False).map(repr)),
)
#: Rows of valid and invalid values and random text.
ANY_MEASURE_ROW = st.tuples(
    _cell("M-1", "M-2", "X.3", "m_4", "M 5", ""),
    _cell(KUMAMOTO, KIKUCHI, f"{KUMAMOTO};{KIKUCHI}", f"{KUMAMOTO};{KUMAMOTO}", "431002",
          YAMAGA, ""),
    st.one_of(_cell("施策", " ", ""), st.just("長" * 501)),
    _cell("Solar", ""),
    _cell("renewable_energy", "awareness", "forestry", ""),
    _cell("study", "implementation", "Study", ""),
    _cell("priority-1", "priority-9", ""),
    _cell("true", "false", "TRUE", "yes", ""),
    _cell("導入件数", ""),
    _cell("件", ""),
    _cell("10", "1e3", "nan", "inf", "-5", "1_000", "ten", HUGE, ""),
)
GOOD_EMISSION_ROW = st.tuples(
    st.sampled_from([KUMAMOTO, KIKUCHI]),
    st.sampled_from(["2013", "2023", "2024"]),
    st.sampled_from(PLAN.sector_ids),
    st.one_of(st.sampled_from(["0", "1000", "1e3"]),
              st.floats(min_value=0, max_value=1e12).map(repr)),
    st.sampled_from(STATUSES),
)
ANY_EMISSION_ROW = st.tuples(
    _cell(KUMAMOTO, KIKUCHI, "431002", YAMAGA, ""),
    st.one_of(_cell("2013", "2023", "2024", "202", "20245", "1989", "0x10", "２０２４", "+202",
                    "-999", "2_02", HUGE, ""),
              st.integers(min_value=1980, max_value=2100).map(str)),
    _cell("household", "commercial", "waste", "transport_road", "Household", "forestry", ""),
    st.one_of(_cell("0", "-0", "1000", "1000.0", "1e3", "nan", "inf", "-1", "1e400", "1_000",
                    "abc", ""),
              st.floats().map(repr)),
    _cell(*STATUSES, "Final", "draft", ""),
)
MEASURE_ROW = st.one_of(GOOD_MEASURE_ROW, GOOD_MEASURE_ROW, ANY_MEASURE_ROW)
EMISSION_ROW = st.one_of(GOOD_EMISSION_ROW, GOOD_EMISSION_ROW, ANY_EMISSION_ROW)


@dataclass(frozen=True)
class CsvFile:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    raw: str | None  # text written as is instead of through the csv module
    encoding: str
    newline: str

    def content(self) -> bytes:
        if self.raw is not None:
            text = self.raw
        else:
            out = io.StringIO()
            writer = csv.writer(out, lineterminator=self.newline)
            try:
                writer.writerow(self.header)
                writer.writerows(self.rows)
            except csv.Error:  # a value csv cannot write: write it raw
                out = io.StringIO()
                out.write(self.newline.join(",".join(r) for r in (self.header, *self.rows)))
            text = out.getvalue()
        return text.encode(self.encoding, errors="replace")


@st.composite
def csv_files(
    draw: st.DrawFn, columns: Sequence[str], row: st.SearchStrategy[tuple[str, ...]]
) -> CsvFile:
    """Mostly well-formed files of random rows; one in ten has another header, one in ten
    a random text after its header, one in ten another encoding; one row in ten has a
    random number of cells."""
    good = tuple(columns)
    header = good
    if draw(st.integers(0, 9)) == 9:
        header = draw(st.one_of(
            st.permutations(good).map(tuple),
            st.lists(st.one_of(st.sampled_from(good), st.text(max_size=8)),
                     max_size=len(good) + 1).map(tuple)))
    rows = draw(st.lists(
        st.integers(0, 9).flatmap(
            lambda n: row if n < 9 else st.lists(st.text(max_size=6), max_size=len(good) + 2)
            .map(tuple)),
        min_size=draw(st.sampled_from([1] * 9 + [0])), max_size=4))
    raw = None
    if draw(st.integers(0, 9)) == 9:
        raw = ",".join(good) + "\n" + draw(st.text(max_size=200))
    encoding = "utf-8"
    if draw(st.integers(0, 9)) == 9:
        encoding = draw(st.sampled_from(["utf-8-sig", "cp932", "utf-16"]))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return CsvFile(header, tuple(rows), raw, encoding, newline)


FILE_LEVEL = ("the file has no rows", "the file is not UTF-8 text")


def _check_import(
    engine: pdca.Engine,
    path: Path,
    run: Callable[..., ImportResult],
    content: bytes,
) -> None:
    """Import ``content``: it is imported, counted exactly, or refused naming the file and
    (for a row) its line, with nothing written."""
    path.write_bytes(content)
    size, count = _audit_size(engine), _entity_count(engine)
    result, error = outcome(lambda: run(path, actor="secretariat"))
    event(f"refused ({error.field or 'file'})" if error is not None else "imported")
    if error is not None:
        assert error.source == str(path), f"the error does not name the file: {error!r}"
        if error.line is None:
            assert error.reason.startswith(FILE_LEVEL), f"no line in {error!r}"
        else:  # the file is read with universal newlines: a lone CR ends a line too
            assert 1 <= error.line <= content.count(b"\n") + content.count(b"\r") + 1
        assert (_audit_size(engine), _entity_count(engine)) == (size, count), (
            f"{error!r} was raised but something was written")
        return
    assert result is not None
    assert _entity_count(engine) == count + result.created
    assert _audit_size(engine) == size + result.created + result.changed


def test_a_measures_csv_of_any_rows_is_imported_or_refused_whole(tmp_path: Path) -> None:
    engine = _fresh_engine(f"sqlite:///{tmp_path / 'measures.db'}")
    path = tmp_path / "measures.csv"

    @deterministic(200)
    @given(file=csv_files(MEASURE_COLUMNS, MEASURE_ROW))
    def example(file: CsvFile) -> None:
        _check_import(engine, path, engine.import_measures, file.content())

    try:
        example()
        assert engine.verify_audit().ok
    finally:
        engine.close()


def test_an_emissions_csv_of_any_rows_is_imported_or_refused_whole(tmp_path: Path) -> None:
    engine = _fresh_engine(f"sqlite:///{tmp_path / 'emissions.db'}")
    path = tmp_path / "emissions.csv"

    @deterministic(200)
    @given(file=csv_files(EMISSION_COLUMNS, EMISSION_ROW))
    def example(file: CsvFile) -> None:
        _check_import(engine, path, engine.import_emissions, file.content())

    try:
        example()
        assert engine.verify_audit().ok
    finally:
        engine.close()


# ----------------------------------------------------------------------------- (c) references

REAL_REFS = (
    f"measure:M-{KUMAMOTO}", f"measure:M-{KIKUCHI}", f"cycle:{KUMAMOTO}:2025",
    "cycle:region:2025", "person:admin", f"person:staff-{KUMAMOTO}", "plan:kumamoto",
    "meeting:2025-liaison_council-1", "meeting:2025-advisory_committee-1", "advice:2025-1",
    f"emissions:{KUMAMOTO}:2024:household", "project:2025-1",
)
KINDS = (*sorted({w.kind for w in default_registry()}), "audit", "Measure", "x")
TRIGGERS = tuple(sorted({t.trigger for w in default_registry() for t in w.spec.transitions}))
ACTORS = ("admin", "secretariat", "clerk", "auditor", f"staff-{KUMAMOTO}",
          f"staff-{KIKUCHI}", "scheduler", "system", "nobody")

any_text = st.text(max_size=30)
refs = st.one_of(
    st.sampled_from(REAL_REFS),
    st.sampled_from(REAL_REFS),
    st.sampled_from(REAL_REFS),
    any_text,
    st.tuples(st.sampled_from(KINDS), any_text).map(":".join),
    st.tuples(st.sampled_from(REAL_REFS), st.sampled_from(["", " ", ":", "\n", "x", "\x00"]),
              st.booleans()).map(lambda r: r[1] + r[0] if r[2] else r[0] + r[1]),
    st.sampled_from(REAL_REFS).map(str.upper),
)
triggers = st.one_of(st.sampled_from((*TRIGGERS, "create", "evaluate", "load_plan")),
                     st.sampled_from(TRIGGERS), any_text)
actors = st.one_of(st.sampled_from(ACTORS), st.sampled_from(ACTORS), any_text)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), any_text),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(any_text, inner, max_size=3)),
    max_leaves=6,
)
field_names = st.one_of(st.sampled_from(["reason", "fiscal_year", "budget_jpy", "value_t_co2",
                                         "date", "minutes", "answer", "outcome", "url",
                                         "meeting", "revisions"]), any_text)
datas = st.one_of(
    st.none(), st.none(),
    st.sampled_from([{"reason": "理由"}, {"value_t_co2": 5.0}, {"minutes": "議事録"},
                     {"answer": "対応"}, {"date": "2026-05-01"}, {"fiscal_year": 2025}]),
    st.dictionaries(field_names, json_values, max_size=3),
)


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, str]:
    """A reference and a trigger: half of them an existing entity and one of its triggers."""
    if draw(st.booleans()):
        ref = draw(st.sampled_from(REAL_REFS))
        kind, key = ref.split(":", 1)
        known = default_registry().resolve(kind, key).triggers
        return ref, draw(st.sampled_from(known) if known else triggers)
    return draw(refs), draw(triggers)
notes = st.one_of(st.none(), any_text, st.just("x" * 4001))


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pdca.Engine]:
    """An engine with an entity of every kind (FY2025, its check under way)."""
    clock = Clock()
    engine = _fresh_engine(f"sqlite:///{tmp_path_factory.mktemp('refs') / 'refs.db'}", clock)
    try:
        for code in (KUMAMOTO, KIKUCHI):
            engine.create(f"measure:M-{code}", actor="secretariat", data={
                "municipalities": [code], "title_ja": "施策", "kind": "study"})
        engine.open_fiscal_year(2025)
        clock.set(2026, 4, 2)
        engine.create(f"emissions:{KUMAMOTO}:2024:household", actor="secretariat", data={
            "municipality": KUMAMOTO, "year": 2024, "sector": "household",
            "value_t_co2": 1.0, "status": "preliminary"})
        engine.schedule_meeting("liaison_council", fiscal_year=2025, on="2026-12-10",
                                actor="secretariat")
        committee = engine.schedule_meeting("advisory_committee", fiscal_year=2025,
                                            on="2026-04-01", actor="clerk")
        engine.fire(committee, "hold", actor="clerk")
        engine.add_advice(committee, "助言", actor="clerk")
        engine.propose_project("テーマ", fiscal_year=2025, actor="secretariat")
        yield engine
    finally:
        engine.close()


def _no_write(engine: pdca.Engine, size: int, what: str) -> None:
    assert _audit_size(engine) == size, f"{what} wrote to the audit log"


@deterministic(300)
@given(call=calls(), actor=actors, data=datas, note=notes,
       pairs=st.dictionaries(field_names, any_text, max_size=2))
def test_any_reference_trigger_and_actor_is_refused_as_invalid_input_or_works(
    populated: pdca.Engine, call: tuple[str, str], actor: str,
    data: dict[str, Any] | None, note: str | None, pairs: dict[str, str],
) -> None:
    engine, (ref, trigger) = populated, call
    size = _audit_size(engine)
    try:
        parsed = pdca.Ref.parse(ref)
    except pdca.InvalidInput:
        pass
    else:
        assert str(parsed) == ref.strip()
    reads: list[Callable[[], object]] = [
        lambda: engine.get(ref),
        lambda: engine.get(ref, actor=actor),
        lambda: engine.history(ref),
        lambda: engine.parse_data(ref, trigger, pairs),
        lambda: list(engine.audit_log(ref=ref, actor=actor, trigger=trigger)),
    ]
    for read in reads:
        with contextlib.suppress(pdca.InvalidInput):
            read()
        _no_write(engine, size, "a read")

    try:
        result = engine.fire(ref, trigger, actor=actor, data=data, note=note)
    except pdca.InvalidInput as exc:
        event(f"fire: {type(exc).__name__}")
        _no_write(engine, size, "a refusal as invalid input")
    except pdca.TransitionNotAllowed:
        event("fire: TransitionNotAllowed")
        _no_write(engine, size, "a trigger not allowed in the state")
    except (pdca.PermissionDenied, pdca.GuardFailed) as exc:
        # The one refusal that is audited: one ``refused`` entry on the entity's chain.
        event(f"fire: {type(exc).__name__}")
        assert _audit_size(engine) == size + 1
        entry = engine.history(exc.ref)[-1]
        assert (entry.kind, entry.trigger, entry.actor) == ("refused", trigger, actor)
    else:
        event("fire: done")
        assert _audit_size(engine) == size + 1
        assert engine.get(result.ref).state == result.to_state


# ----------------------------------------------------------------------------- (d) the CLI


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in sorted(group.commands.items()):
        if name in ("daemon", "demo"):  # runs until stopped / builds a demo for seconds
            continue
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from _command_paths(command, (*prefix, name))


def _option_names(command: click.Command) -> Iterator[str]:
    for param in command.params:
        if isinstance(param, click.Option):
            yield from param.opts
            yield from param.secondary_opts
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            yield from _option_names(sub)


COMMAND_PATHS = tuple(_command_paths(main))
COMMAND_WORDS = tuple(sorted({word for path in COMMAND_PATHS for word in path}))
#: Every option of every command but ``--db`` (each example gets its own database).
OPTIONS = tuple(sorted(set(_option_names(main)) - {"--db"}))
CLI_VALUES = (
    "admin", "secretariat", "clerk", "auditor", f"staff-{KUMAMOTO}", "newcomer", "staff",
    KUMAMOTO, KIKUCHI, "431002", "2025", "2024", "2026", "0", "-1", HUGE, "A", "B", "Z",
    f"measure:M-{KUMAMOTO}", f"cycle:{KUMAMOTO}:2025", "cycle:region:2025", "person:admin",
    "commercialise", "discontinue", "start", "publish", "reason=x", "fiscal_year=2025",
    "value_t_co2=-1", "=x", "x", "kumamoto", "plan.toml", "measures.csv", "emissions.csv",
    "out", "out.xlsx", ".", "", "xlsx", "csv", "ja", "en", "liaison_council", "policy_meeting",
    "2026-04-01", "2026-04-01T09:00", "2025-03-01", "measure", "municipal_cycle", "nan",
)
#: Text a shell can pass: no NUL, no surrogates that do not come from undecodable bytes.
cli_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
                   max_size=15)
cli_word = st.one_of(st.sampled_from(COMMAND_WORDS), st.sampled_from(OPTIONS),
                     st.sampled_from(CLI_VALUES), cli_text)
GLOBALS = (("--actor", "admin"), ("--actor", "secretariat"), ("--actor", f"staff-{KUMAMOTO}"),
           ("--lang", "en"), ("--lang", "ja"), ("-q",), ("-v",))
structured_args = st.tuples(
    st.lists(st.sampled_from(GLOBALS), max_size=2),
    st.sampled_from(COMMAND_PATHS),
    st.lists(st.one_of(st.sampled_from(OPTIONS), st.sampled_from(CLI_VALUES), cli_text),
             max_size=7),
).map(lambda t: [w for g in t[0] for w in g] + list(t[1]) + t[2])
YEARS = ("2025", "2024", "2026", "0", "-1", HUGE, "x")


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = main
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


def _value(param: click.Parameter) -> st.SearchStrategy[str]:
    """A value for ``param``: one of its choices, a year, a real value or random text."""
    if isinstance(param.type, click.Choice):
        return st.one_of(st.sampled_from([str(c) for c in param.type.choices]), cli_text)
    if param.name in ("fiscal_year", "year"):
        return st.sampled_from(YEARS)
    return st.one_of(st.sampled_from(CLI_VALUES), st.sampled_from(CLI_VALUES), cli_text)


@st.composite
def well_formed_args(draw: st.DrawFn) -> list[str]:
    """A command with a value for each of its arguments and some of its own options."""
    path = draw(st.sampled_from(COMMAND_PATHS))
    words: list[str] = []
    actor = draw(st.sampled_from([*ACTORS, None]))
    if actor is not None:
        words += ["--actor", actor]
    words += draw(st.sampled_from([[], [], ["--lang", "en"], ["--lang", "ja"], ["-q"], ["-v"]]))
    words += path
    for param in _command(path).params:
        if isinstance(param, click.Argument):
            words.append(draw(_value(param)))
        elif isinstance(param, click.Option) and param.name != "help" and draw(st.booleans()):
            words.append(param.opts[0])
            if not param.is_flag:
                words.append(draw(_value(param)))
    return words


cli_args = st.one_of(well_formed_args(), well_formed_args(), structured_args,
                     st.lists(cli_word, max_size=8))


def _template(tmp: Path) -> Path:
    """A database with FY2025 opened, measures and emissions: what commands work on."""
    path = tmp / "template.db"
    clock = Clock()
    engine = _fresh_engine(f"sqlite:///{path}", clock)
    try:
        for code in (KUMAMOTO, KIKUCHI):
            engine.create(f"measure:M-{code}", actor="secretariat", data={
                "municipalities": [code], "title_ja": "施策", "kind": "study"})
        engine.open_fiscal_year(2025)
        clock.set(2026, 4, 2)
        engine.fire_many([(f"cycle:{KUMAMOTO}:2025", t, None) for t in ("start", "begin_check")],
                         actor="scheduler")
        engine.create(f"emissions:{KUMAMOTO}:2024:household", actor="secretariat", data={
            "municipality": KUMAMOTO, "year": 2024, "sector": "household",
            "value_t_co2": 1.0, "status": "preliminary"})
    finally:
        engine.close()
    (tmp / "measures.csv").write_text(
        ",".join(MEASURE_COLUMNS) + f"\nM-9,{KUMAMOTO},施策,,,study,,,,,\n", encoding="utf-8")
    (tmp / "emissions.csv").write_text(
        ",".join(EMISSION_COLUMNS) + f"\n{KUMAMOTO},2024,waste,5,preliminary\n",
        encoding="utf-8")
    (tmp / "plan.toml").write_text(PLAN_TEXT, encoding="utf-8")
    return path


@pytest.fixture
def _restore_pdca_logger() -> Iterator[None]:
    """The CLI points the ``pdca`` logger at the runner's stderr: put it back afterwards."""
    logger = logging.getLogger("pdca")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


@pytest.mark.usefixtures("_restore_pdca_logger")
def test_the_cli_with_any_arguments_exits_0_1_or_2_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    template = _template(tmp_path)
    database = tmp_path / "example.db"
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    @deterministic(400)
    @given(args=cli_args)
    def example(args: list[str]) -> None:
        shutil.copyfile(template, database)
        result = runner.invoke(
            main, args, catch_exceptions=True,
            env={"PDCA_DATABASE_URL": f"sqlite:///{database}", "PDCA_ACTOR": None,
                 "PDCA_LANG": None},
        )
        exc = result.exception
        event(f"exit {result.exit_code}")
        if exc is not None and not isinstance(exc, SystemExit):
            trace = "".join(traceback.format_exception(exc))
            raise AssertionError(f"pdca {args!r} raised {exc!r}:\n{trace}")
        assert result.exit_code in (0, 1, 2), (args, result.exit_code, result.output)

    example()


# ----------------------------------------------------------------------------- defects found


@pytest.mark.parametrize("text", ["x = " + "[" * 2000, "x = " + "{ a = " * 2000])
def test_deeply_nested_toml_is_refused_as_invalid_input(text: str) -> None:
    with pytest.raises(pdca.InvalidInput) as info:
        Plan.from_toml_text(text, source=SOURCE)
    assert info.value.source == SOURCE


@pytest.mark.parametrize("name", ["a\x00b.csv", "\ud800.csv"])
@pytest.mark.parametrize("what", ["measures", "emissions", "plan", "plan file"])
def test_a_path_that_cannot_name_a_file_is_refused_as_invalid_input(
    tmp_path: Path, what: str, name: str
) -> None:
    engine = pdca.Engine.open(f"sqlite:///{tmp_path / 'p.db'}", migrate=True)
    try:
        engine.bootstrap_admin("admin")
        engine.load_plan("kumamoto", actor="admin")
        run: Callable[[], object] = {
            "measures": lambda: engine.import_measures(name, actor="admin"),
            "emissions": lambda: engine.import_emissions(name, actor="admin"),
            "plan": lambda: engine.load_plan(name.replace(".csv", ".toml"), actor="admin"),
            "plan file": lambda: load_plan(name.replace(".csv", ".toml")),
        }[what]
        with pytest.raises(pdca.InvalidInput):
            run()
    finally:
        engine.close()


@pytest.mark.parametrize("call", ["entities", "schedule_meeting", "propose_project"])
def test_a_fiscal_year_too_large_for_the_database_is_refused_as_invalid_input(
    tmp_path: Path, call: str
) -> None:
    engine = _fresh_engine(f"sqlite:///{tmp_path / 'fy.db'}")
    huge = int(HUGE)
    try:
        size = _audit_size(engine)
        run: Callable[[], object] = {
            "entities": lambda: engine.entities(workflow="meeting", fiscal_year=huge),
            "schedule_meeting": lambda: engine.schedule_meeting(
                "liaison_council", fiscal_year=huge, on="2026-01-01", actor="secretariat"),
            "propose_project": lambda: engine.propose_project(
                "テーマ", fiscal_year=huge, actor="secretariat"),
        }[call]
        with pytest.raises(pdca.InvalidInput):
            run()
        assert _audit_size(engine) == size
    finally:
        engine.close()


@pytest.mark.usefixtures("_restore_pdca_logger")
def test_the_cli_refuses_a_fiscal_year_too_large_for_the_database(tmp_path: Path) -> None:
    template = _template(tmp_path)
    result = CliRunner().invoke(main, ["--db", f"sqlite:///{template}", "status", "--fy", HUGE])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 2


@pytest.mark.usefixtures("_restore_pdca_logger")
@pytest.mark.parametrize("out", [".", ""])
def test_export_to_a_folder_name_is_written_or_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, out: str
) -> None:
    template = _template(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        main, ["--db", f"sqlite:///{template}", "export", "--fy", "2025", "--out", out])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code in (0, 2)


def test_a_note_with_a_nul_character_is_refused_as_invalid_data(db_url: str) -> None:
    engine = pdca.Engine.open(db_url, migrate=True)
    try:
        engine.bootstrap_admin("admin")
        engine.add_person("staff", role="staff", municipality=KUMAMOTO, actor="admin")
        engine.create("measure:M-1", actor="staff", data={
            "municipalities": [KUMAMOTO], "title_ja": "施策", "kind": "study"})
        with pytest.raises(pdca.InvalidData):
            engine.fire("measure:M-1", "commercialise", actor="staff", note="a\x00b")
    finally:
        engine.close()
