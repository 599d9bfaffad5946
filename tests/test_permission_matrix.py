"""The complete permission matrix, generated from the workflow definitions of the registry.

Every cell — role × workflow (× meeting kind) × trigger × source state × own/other
municipality — is asserted allowed or refused:

* allowed: the trigger fires as that actor, the entity moves to a destination of the
  transition and its chain gains one ``transition`` entry;
* refused: :class:`pdca.PermissionDenied` naming the entity, trigger, actor, role and the
  reason; the state and version are unchanged; the chain gains exactly one ``refused`` entry
  whose note is the reason.

The expected value is computed here from the definitions, not by the engine: a time-based
trigger is for the scheduler only; otherwise the role must be one of the transition's roles
(for a meeting, of the roles of its kind, as the meeting module documents them), and staff
only act on entities whose scope includes their municipality (region-wide entities refuse
staff). Every cell is also *decided* without firing, by :func:`pdca.core.permission_problem`
on the real entity, and the decision must agree with the expectation and with the refusal.

Every cell is fired. Most cells get an entity of their own, created and moved along a path
of its workflow (found from the definitions) by an actor the matrix expects to be allowed.
The two review cycles are one per municipality (or region) and fiscal year and their
guards need a whole year of data, so a walk takes one municipal cycle (熊本市, FY2025) and
the regional cycle of FY2025 through every state of their workflows — the municipal one
through each ``*_pending`` state, its windows still closed — trying every actor at each
state, the refused ones first, and records what happened for the cells below to check.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import pdca
from pdca.core import _Actor, permission_problem
from pdca.types import AuditEntry, EntityView, Role, Transition
from pdca.workflows import FieldSpec, TransitionSpec, Workflow, default_registry
from tests.conftest import KIKUCHI, KUMAMOTO, new_postgres_database
from tests.test_fiscal_year import Clock, write_emissions

REGISTRY = default_registry()
FY = 2025
#: The cycles that the walk takes through every state.
WALKED = ("municipal_cycle", "regional_cycle")

# The actor of each (role, own municipality?) column; non-staff roles have no municipality,
# so they have one column each. Staff are registered as ``staff-CODE``.
COLUMNS: tuple[tuple[Role, bool], ...] = (
    (Role.STAFF, True),
    (Role.STAFF, False),
    (Role.SECRETARIAT, True),
    (Role.CLERK, True),
    (Role.AUDITOR, True),
    (Role.ADMIN, True),
    (Role.SCHEDULER, True),
)
STAFF_MUNICIPALITY = {True: KUMAMOTO, False: KIKUCHI}


def actor_of(role: Role, own: bool) -> str:
    if role is Role.STAFF:
        return f"staff-{STAFF_MUNICIPALITY[own]}"
    return role.value


#: Who runs a meeting of each kind, as pdca/workflows/meeting.py documents it: "The
#: secretariat runs the regional meetings, the committee clerk also the advisory committee,
#: a municipality's staff its policy meeting." Written out here so that the matrix does not
#: take the engine's own ``roles_for`` as the truth.
MEETING_RUNNERS: Mapping[str, frozenset[Role]] = {
    "liaison_council": frozenset({Role.SECRETARIAT}),
    "advisory_committee": frozenset({Role.SECRETARIAT, Role.CLERK}),
    "staff_meeting": frozenset({Role.SECRETARIAT}),
    "policy_meeting": frozenset({Role.STAFF}),
}

#: The scope each entity of the matrix is made with: region-wide entities have none.
SCOPES: Mapping[tuple[str, str | None], tuple[str, ...]] = {
    ("person", None): (KUMAMOTO,),  # the target is a staff member of 熊本市
    ("measure", None): (KUMAMOTO,),
    ("municipal_cycle", None): (KUMAMOTO,),
    ("regional_cycle", None): (),
    ("meeting", "liaison_council"): (),
    ("meeting", "advisory_committee"): (),
    ("meeting", "staff_meeting"): (),
    ("meeting", "policy_meeting"): (KUMAMOTO,),
    ("advice", None): (),
    ("theme_project", None): (),
    ("emissions", None): (KUMAMOTO,),
}


# ----------------------------------------------------------------------------- the cells


@dataclass(frozen=True, slots=True)
class Cell:
    workflow: str
    kind: str | None
    trigger: str
    source: str
    role: Role
    own: bool

    @property
    def actor(self) -> str:
        return actor_of(self.role, self.own)

    @property
    def group(self) -> tuple[str, str | None, str, str]:
        return (self.workflow, self.kind, self.trigger, self.source)

    @property
    def id(self) -> str:
        where = "own" if self.own else "other"
        column = f"staff-{where}" if self.role is Role.STAFF else self.role.value
        kind = f"[{self.kind}]" if self.kind else ""
        return f"{self.workflow}{kind}-{self.trigger}-from-{self.source}-{column}"


def _kinds(workflow: Workflow) -> tuple[str | None, ...]:
    """The kinds whose roles differ (``roles_for``): the choices of the create field
    ``kind``; one row for a workflow whose roles do not depend on the entity."""
    if workflow.spec.roles_for is None:
        return (None,)
    assert workflow.spec.create is not None
    kind_field = next(f for f in workflow.spec.create.fields if f.name == "kind")
    assert kind_field.choices, f"{workflow.name}: roles_for without kinds to iterate"
    return kind_field.choices


def _groups(workflow: Workflow) -> Iterator[tuple[str, str]]:
    """Each (trigger, source) pair once, in definition order."""
    seen: set[tuple[str, str]] = set()
    for t in workflow.spec.transitions:
        for source in t.sources:
            if (t.trigger, source) not in seen:
                seen.add((t.trigger, source))
                yield t.trigger, source


def all_cells() -> list[Cell]:
    return [
        Cell(workflow.name, kind, trigger, source, role, own)
        for workflow in REGISTRY
        for kind in _kinds(workflow)
        for trigger, source in _groups(workflow)
        for role, own in COLUMNS
    ]


CELLS = all_cells()


def _specs(workflow: str, trigger: str, source: str) -> list[TransitionSpec]:
    """Every transition of ``trigger`` from ``source`` (several when branches differ by
    ``when``), read from the definition."""
    return [
        t for t in REGISTRY.get(workflow).spec.transitions
        if t.trigger == trigger and source in t.sources
    ]


def expected_roles(cell: Cell) -> frozenset[Role]:
    """The roles that may fire the cell's transition, from the definition."""
    spec = _specs(cell.workflow, cell.trigger, cell.source)[0]
    if spec.time_based:
        return frozenset({Role.SCHEDULER})
    if cell.kind is not None:
        return MEETING_RUNNERS[cell.kind] & spec.roles
    return spec.roles


def expected_allowed(cell: Cell) -> bool:
    if cell.role not in expected_roles(cell):
        return False
    if cell.role is Role.STAFF:
        return STAFF_MUNICIPALITY[cell.own] in SCOPES[(cell.workflow, cell.kind)]
    return True


def expected_reason(cell: Cell) -> str:
    """What the refusal says: the part of the reason that identifies its cause."""
    spec = _specs(cell.workflow, cell.trigger, cell.source)[0]
    if spec.time_based:
        return f"{cell.trigger} happens on schedule; only the scheduler fires it"
    roles = expected_roles(cell)
    if cell.role not in roles:
        names = ", ".join(sorted(r.value for r in roles))
        return f"{cell.trigger} is for {names}, not for {cell.role.value}"
    scope = SCOPES[(cell.workflow, cell.kind)]
    if not scope:
        return "it belongs to the whole region, not to one municipality"
    return f"it belongs to {', '.join(scope)}, not to {STAFF_MUNICIPALITY[cell.own]}"


def sample_value(spec: FieldSpec) -> Any:
    """A valid value of a field, for the required data of a trigger."""
    if spec.choices:
        return spec.choices[0]
    values: dict[str, Any] = {
        "str": "matrix",
        "int": 2026,
        "float": max(1234.5, spec.minimum or 0.0),
        "bool": True,
        "date": "2027-03-15",
        "str_list": ["matrix"],
    }
    return values[spec.type]


def trigger_data(workflow: str, trigger: str, source: str) -> dict[str, Any]:
    spec = _specs(workflow, trigger, source)[0]
    return {f.name: sample_value(f) for f in spec.fields if f.required}


# ----------------------------------------------------------------------------- attempts


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """One cell fired on a real entity: what happened, and what was decided beforehand."""

    ref: str
    before: EntityView
    after: EntityView
    result: Transition | None
    error: pdca.PdcaError | None
    entries: tuple[AuditEntry, ...]  # what the attempt added to the entity's chain
    decided: str | None  # permission_problem on the real entity, without firing


def decide(engine: pdca.Engine, view: EntityView, cell: Cell) -> str | None:
    """The engine's permission decision for the cell on this entity, without firing."""
    workflow = REGISTRY.get(view.workflow)
    spec = workflow.spec_from(cell.trigger, view.state)
    assert spec is not None, f"{cell.trigger} is not a trigger of {view.ref} in {view.state}"
    if cell.role is Role.SCHEDULER:
        who = _Actor("scheduler", Role.SCHEDULER, None)
    else:
        person = engine.person(cell.actor)
        who = _Actor(person.id, person.role, person.municipality)
    return permission_problem(
        workflow.roles(view.attrs, spec),
        trigger=cell.trigger,
        time_based=spec.time_based,
        actor=who,
        scope=view.scope,
    )


def attempt(engine: pdca.Engine, ref: str, cell: Cell) -> Attempt:
    before = engine.get(ref)
    assert before.state == cell.source, f"{ref} is {before.state}, not {cell.source}"
    decided = decide(engine, before, cell)
    length = len(engine.history(ref))
    result: Transition | None = None
    error: pdca.PdcaError | None = None
    try:
        result = engine.fire(
            ref, cell.trigger, actor=cell.actor,
            data=trigger_data(cell.workflow, cell.trigger, cell.source),
        )
    except pdca.PdcaError as exc:
        error = exc
    return Attempt(
        ref=ref,
        before=before,
        after=engine.get(ref),
        result=result,
        error=error,
        entries=tuple(engine.history(ref)[length:]),
        decided=decided,
    )


def check(cell: Cell, tried: Attempt) -> None:
    """Assert the cell: allowed and fired, or refused, audited and changing nothing."""
    allowed = expected_allowed(cell)
    assert (tried.decided is None) == allowed, (
        f"permission_problem decided {tried.decided!r} for a cell expected "
        f"{'allowed' if allowed else 'refused'}"
    )
    assert tried.before.scope == SCOPES[(cell.workflow, cell.kind)]
    if allowed:
        assert tried.error is None, f"expected allowed, got {tried.error!r}"
        result = tried.result
        assert result is not None
        assert (result.ref, result.trigger, result.actor, result.role, result.from_state) == (
            tried.ref, cell.trigger, cell.actor, cell.role.value, cell.source)
        dests = {t.dest for t in _specs(cell.workflow, cell.trigger, cell.source)}
        assert result.to_state in dests
        assert tried.after.state == result.to_state
        assert tried.after.version == tried.before.version + 1
        assert [(e.kind, e.actor, e.trigger, e.from_state, e.to_state)
                for e in tried.entries] == [
            ("transition", cell.actor, cell.trigger, cell.source, result.to_state)]
        return
    error = tried.error
    assert isinstance(error, pdca.PermissionDenied), f"expected PermissionDenied, got {error!r}"
    assert (error.ref, error.trigger, error.state, error.actor, error.role) == (
        tried.ref, cell.trigger, cell.source, cell.actor, cell.role.value)
    assert error.reason == expected_reason(cell)
    assert error.reason == tried.decided
    assert str(error) == (
        f"{cell.actor} ({cell.role.value}) may not {cell.trigger} {tried.ref}: {error.reason}")
    assert (tried.after.state, tried.after.version) == (cell.source, tried.before.version)
    assert len(tried.entries) == 1, f"expected one refused entry, got {tried.entries!r}"
    entry = tried.entries[0]
    assert (entry.kind, entry.actor, entry.role, entry.trigger) == (
        "refused", cell.actor, cell.role.value, cell.trigger)
    assert entry.from_state == entry.to_state == cell.source
    assert entry.note == error.reason


# ----------------------------------------------------------------------------- set-up


def _people(engine: pdca.Engine, municipalities: list[str]) -> None:
    engine.bootstrap_admin("admin")
    for role in (Role.SECRETARIAT, Role.CLERK, Role.AUDITOR):
        engine.add_person(role.value, role=role, actor="admin")
    for code in municipalities:
        engine.add_person(f"staff-{code}", role=Role.STAFF, municipality=code, actor="admin")


@dataclass
class World:
    """Entities made on demand, one per cell (everything but the review cycles)."""

    engine: pdca.Engine
    committee: str
    numbers: Iterator[int] = field(default_factory=itertools.count)

    def create(self, workflow: str, kind: str | None) -> str:
        """A new entity of ``workflow`` (and meeting ``kind``), in its initial state."""
        engine, n = self.engine, next(self.numbers)
        if workflow == "person":
            engine.add_person(f"target-{n}", role=Role.STAFF, municipality=KUMAMOTO,
                              actor="admin")
            return f"person:target-{n}"
        if workflow == "measure":
            ref = f"measure:X-{n}"
            engine.create(ref, actor="secretariat", data={
                "municipalities": [KUMAMOTO], "title_ja": f"施策 {n}", "kind": "study"})
            return ref
        if workflow == "meeting":
            assert kind is not None
            return engine.schedule_meeting(
                kind, fiscal_year=2026, on="2027-03-01", actor="secretariat",
                municipality=KUMAMOTO if kind == "policy_meeting" else None)
        if workflow == "advice":
            return engine.add_advice(self.committee, f"助言 {n}", actor="clerk")
        if workflow == "theme_project":
            return engine.propose_project(f"テーマ {n}", fiscal_year=2026, actor="secretariat")
        if workflow == "emissions":
            year = 1990 + n
            ref = f"emissions:{KUMAMOTO}:{year}:household"
            engine.create(ref, actor="secretariat", data={
                "municipality": KUMAMOTO, "year": year, "sector": "household",
                "value_t_co2": 1000.0, "status": "preliminary"})
            return ref
        raise AssertionError(f"the matrix cannot make a {workflow} entity: add it here")

    def entity_in(self, workflow: str, kind: str | None, state: str) -> str:
        """A new entity moved from its initial state to ``state`` along the shortest path
        of its workflow, each step fired by an actor the matrix expects to be allowed."""
        ref = self.create(workflow, kind)
        for trigger, source in _path(workflow, self.engine.get(ref).state, state):
            actor = next(c.actor for c in CELLS
                         if c.group == (workflow, kind, trigger, source) and expected_allowed(c))
            self.engine.fire(ref, trigger, actor=actor,
                             data=trigger_data(workflow, trigger, source))
        assert self.engine.get(ref).state == state
        return ref


def _path(workflow: str, start: str, goal: str) -> list[tuple[str, str]]:
    """The shortest list of (trigger, source) from ``start`` to ``goal``."""
    paths: dict[str, list[tuple[str, str]]] = {start: []}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        if state == goal:
            return paths[state]
        for t in REGISTRY.get(workflow).spec.transitions:
            if state in t.sources and t.dest not in paths:
                paths[t.dest] = [*paths[state], (t.trigger, state)]
                queue.append(t.dest)
    raise AssertionError(f"{workflow}: {goal} cannot be reached from {start}")


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def matrix_backend(request: pytest.FixtureRequest) -> str:
    """The matrix runs on both back ends (about 10 s each)."""
    return str(request.param)


@contextlib.contextmanager
def _database(backend: str, tmp: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp / 'matrix.db'}"
    else:
        yield from new_postgres_database()


@pytest.fixture(scope="module")
def world(matrix_backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    clock = Clock()
    clock.set(2027, 3, 20)
    with _database(matrix_backend, tmp_path_factory.mktemp("world")) as url:
        engine = pdca.Engine.open(url, migrate=True, clock=clock)
        try:
            _people(engine, [KUMAMOTO, KIKUCHI])
            engine.load_plan("kumamoto", actor="admin")
            committee = engine.schedule_meeting("advisory_committee", fiscal_year=2026,
                                                on="2027-02-01", actor="clerk")
            engine.fire(committee, "hold", actor="clerk")
            yield World(engine, committee)
        finally:
            engine.close()


@dataclass
class Walk:
    """The cells of the review cycles, tried in order along one walk through each cycle."""

    engine: pdca.Engine
    attempts: dict[Cell, Attempt] = field(default_factory=dict)

    def probe(self, ref: str, trigger: str) -> str:
        """Try every column on ``ref`` in its current state, the refused ones first, then
        the one allowed column (which moves it on); return the new state."""
        view = self.engine.get(ref)
        group = (view.workflow, None, trigger, view.state)
        cells = sorted((c for c in CELLS if c.group == group), key=expected_allowed)
        assert cells, f"no cells for {group}"
        assert sum(map(expected_allowed, cells)) == 1, f"{group}: the walk needs one mover"
        for cell in cells:
            tried = attempt(self.engine, ref, cell)
            self.attempts[cell] = tried
            if expected_allowed(cell) and tried.error is not None:
                raise AssertionError(f"the walk is stuck: {cell.id}: {tried.error}")
        return self.engine.get(ref).state


def _walk(engine: pdca.Engine, clock: Clock, tmp: Path) -> Walk:
    walk = Walk(engine)
    municipal, region = f"cycle:{KUMAMOTO}:{FY}", f"cycle:region:{FY}"
    members = [m.code for m in engine.plan.members_of(FY)]
    others = [code for code in members if code != KUMAMOTO]
    engine.open_fiscal_year(FY)

    # 熊本市 alone, early in the check (2 April 2026): every later window is still closed,
    # so each phase ends in its *_pending state and the scheduler opens the next.
    assert walk.probe(municipal, "start") == "do"
    clock.set(2026, 4, 2)
    assert walk.probe(municipal, "begin_check") == "check_status"
    assert walk.probe(municipal, "confirm_status") == "emissions_pending"
    assert walk.probe(municipal, "open_emissions") == "check_emissions"
    write_emissions(tmp / "emissions.csv", engine, [engine.plan.inventory_year(FY)])
    engine.import_emissions(tmp / "emissions.csv", actor="secretariat")
    assert walk.probe(municipal, "submit_emissions") == "evaluation_pending"
    assert walk.probe(municipal, "open_evaluation") == "check_evaluation"
    assert walk.probe(municipal, "finish_evaluation") == "report_pending"
    assert walk.probe(municipal, "open_report") == "check_report"
    assert walk.probe(municipal, "report_internally") == "act"

    # The other members report when every window is open (November 2026).
    clock.set(2026, 11, 2)
    engine.fire_many([(f"cycle:{c}:{FY}", t, None) for c in others
                      for t in ("start", "begin_check")], actor="scheduler")
    for code in others:
        engine.fire_many([(f"cycle:{code}:{FY}", t, None)
                          for t in ("confirm_status", "submit_emissions", "finish_evaluation",
                                    "report_internally")], actor=f"staff-{code}")

    # The region, through every state; 熊本市 closes once the region has published.
    assert walk.probe(region, "begin_check") == "check_collect"
    for project in engine.plan.priority_projects:
        engine.evaluate_priority_project(project.id, fiscal_year=FY, rating="B",
                                         actor="secretariat")
    assert walk.probe(region, "aggregate") == "check_aggregated"
    council = engine.schedule_meeting("liaison_council", fiscal_year=FY, on="2026-12-10",
                                      actor="secretariat")
    clock.set(2026, 12, 10)
    engine.fire(council, "hold", actor="secretariat")
    assert walk.probe(region, "hold_liaison_council") == "council_held"
    committee = engine.schedule_meeting("advisory_committee", fiscal_year=FY, on="2027-01-20",
                                        actor="clerk")
    clock.set(2027, 1, 20)
    engine.fire(committee, "hold", actor="clerk")
    assert walk.probe(region, "hold_advisory_committee") == "committee_held"
    clock.set(2027, 2, 20)
    assert walk.probe(region, "publish") == "published"
    assert walk.probe(municipal, "close") == "closed"
    assert walk.probe(region, "begin_act") == "act"
    assert walk.probe(region, "close") == "closed"
    return walk


@pytest.fixture(scope="module")
def walk(matrix_backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walk]:
    clock = Clock()  # 1 March 2025
    tmp = tmp_path_factory.mktemp("walk")
    with _database(matrix_backend, tmp) as url:
        engine = pdca.Engine.open(url, migrate=True, clock=clock)
        try:
            _people(engine, [])
            engine.load_plan("kumamoto", actor="admin")
            for member in engine.plan.members:
                engine.add_person(f"staff-{member.code}", role=Role.STAFF,
                                  municipality=member.code, actor="admin")
            yield _walk(engine, clock, tmp)
        finally:
            engine.close()


# ----------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("cell", [pytest.param(c, id=c.id) for c in CELLS])
def test_permission_cell(
    cell: Cell, matrix_backend: str, request: pytest.FixtureRequest
) -> None:
    if cell.workflow in WALKED:
        walked: Walk = request.getfixturevalue("walk")
        assert cell in walked.attempts, f"the walk did not reach {cell.id}"
        check(cell, walked.attempts[cell])
        return
    made: World = request.getfixturevalue("world")
    ref = made.entity_in(cell.workflow, cell.kind, cell.source)
    check(cell, attempt(made.engine, ref, cell))


def test_the_matrix_covers_every_transition_of_every_workflow() -> None:
    """Each (workflow, kind, trigger, source) has a row for each of the seven columns, and
    the matrix knows the scope of every entity it makes."""
    groups = {c.group for c in CELLS}
    expected = {
        (w.name, kind, trigger, source)
        for w in REGISTRY for kind in _kinds(w) for trigger, source in _groups(w)
    }
    assert groups == expected
    assert len(CELLS) == len(groups) * len(COLUMNS)
    with_transitions = {w.name for w in REGISTRY if w.spec.transitions}
    assert {c.workflow for c in CELLS} == with_transitions
    assert {(c.workflow, c.kind) for c in CELLS} <= set(SCOPES)
    assert with_transitions == {
        "person", "measure", "municipal_cycle", "regional_cycle", "meeting", "advice",
        "theme_project", "emissions",
    }, "a workflow was added or removed: give the matrix a way to make its entities"


def test_the_walk_reaches_every_state_of_the_review_cycles() -> None:
    """The walk's path, in _walk, tries every (trigger, source) of both cycles."""
    walked_groups = {c.group for c in CELLS if c.workflow in WALKED}
    assert len(walked_groups) == 17  # 10 municipal + 7 regional, tried in _walk


def test_branches_of_one_trigger_share_their_roles() -> None:
    """When one trigger has several transitions from a state (a ``when`` branch), they must
    agree on who may fire it: the engine decides with the first."""
    for workflow in REGISTRY:
        for trigger, source in _groups(workflow):
            specs = _specs(workflow.name, trigger, source)
            assert len({(s.roles, s.time_based) for s in specs}) == 1, (
                workflow.name, trigger, source)


def test_time_based_triggers_are_for_the_scheduler_only() -> None:
    for workflow in REGISTRY:
        for t in workflow.spec.transitions:
            assert (t.roles == {Role.SCHEDULER}) == t.time_based, (workflow.name, t.trigger)


@pytest.mark.parametrize("kind", list(MEETING_RUNNERS))
def test_meeting_roles_for_agrees_with_the_documented_runners(kind: str) -> None:
    """``roles_for`` of a meeting gives the documented runners, within each transition's
    declared roles."""
    meeting = REGISTRY.get("meeting")
    assert meeting.spec.roles_for is not None
    for t in meeting.spec.transitions:
        roles = meeting.roles({"kind": kind}, t)
        assert roles == MEETING_RUNNERS[kind], (kind, t.trigger)
        assert roles <= t.roles, (kind, t.trigger)
