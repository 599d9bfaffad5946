"""The bulk paths (create_many, fire_many, record_many / evaluate_many): one transaction,
all or nothing, the same audit entries and chains as one call per item would write."""

from __future__ import annotations

import itertools

import pytest
import sqlalchemy as sa

import pdca
from pdca.storage.models import Evaluation
from tests.conftest import KIKUCHI, KUMAMOTO, Cast

FY = 2025


def _measures(engine: pdca.Engine, actor: str, count: int, prefix: str = "B") -> list[str]:
    items = [(f"measure:{prefix}-{n:03d}",
              {"municipalities": [KUMAMOTO], "title_ja": f"施策{n}", "kind": "study"})
             for n in range(count)]
    engine.create_many(items, actor=actor)
    return [ref for ref, _ in items]


def _evaluations(engine: pdca.Engine) -> int:
    with engine._db.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(Evaluation)).scalar_one())


def test_bulk_paths_write_the_entries_and_chains_single_calls_would(
    engine: pdca.Engine, cast: Cast
) -> None:
    engine.load_plan("kumamoto", actor=cast.admin)
    refs = _measures(engine, cast.staff, 30)
    # The same row moved twice in one transaction: both entries, in order, chained.
    engine.fire_many([(ref, trigger, None) for ref in refs[:10]
                      for trigger in ("commercialise", "complete")], actor=cast.staff)
    results = engine.evaluate_many(
        [{"measure": ref, "rating": "A", "actual": 1.5, "comment": " ok "} for ref in refs],
        fiscal_year=FY, actor=cast.staff)
    assert [r.ref for r in results] == refs
    assert [engine.get(ref).state for ref in refs[:11]] == ["completed"] * 10 + ["study"]
    history = engine.history(refs[0])
    assert [e.trigger for e in history] == ["create", "commercialise", "complete", "evaluate"]
    assert [e.entity_seq for e in history] == [1, 2, 3, 4]
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(history))
    seqs = [e.seq for ref in refs for e in engine.history(ref)]
    assert len(seqs) == len(set(seqs))  # no number taken twice
    evaluations = engine.evaluations(fiscal_year=FY, municipality=KUMAMOTO)
    assert {e.measure for e in evaluations} == set(refs)
    assert {(e.rating, e.actual, e.comment) for e in evaluations} == {("A", 1.5, "ok")}
    report = engine.verify_audit()
    assert report.ok, report.problems


def test_evaluating_again_replaces_the_evaluation_and_keeps_both_entries(
    engine: pdca.Engine, cast: Cast
) -> None:
    engine.load_plan("kumamoto", actor=cast.admin)
    refs = _measures(engine, cast.staff, 3)
    engine.evaluate_many([{"measure": r, "rating": "A"} for r in refs], fiscal_year=FY,
                         actor=cast.staff)
    engine.evaluate_many([{"measure": r, "rating": "C"} for r in refs], fiscal_year=FY,
                         actor=cast.staff)
    assert {e.rating for e in engine.evaluations(fiscal_year=FY)} == {"C"}
    assert _evaluations(engine) == 3
    assert [e.trigger for e in engine.history(refs[0])] == ["create", "evaluate", "evaluate"]


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        ({"measure": "measure:B-001", "rating": "Z"}, "rating", "rating must be one of"),
        ({"measure": "measure:B-001", "rating": "A", "actual": "many"}, "actual", "number"),
        ({"measure": 7, "rating": "A"}, "measure", "reference"),
        ({"measure": "measure:B-000", "rating": "A"}, "measure", "appears twice"),
    ],
)
def test_one_bad_evaluation_is_named_and_nothing_is_written(
    engine: pdca.Engine, cast: Cast, bad: dict[str, object], field: str, words: str
) -> None:
    engine.load_plan("kumamoto", actor=cast.admin)
    refs = _measures(engine, cast.staff, 3)
    before = len(list(engine.audit_log()))
    items: list[dict[str, object]] = [{"measure": refs[0], "rating": "A"}, bad]
    with pytest.raises(pdca.InvalidInput) as caught:
        engine.evaluate_many(items, fiscal_year=FY, actor=cast.staff)
    assert caught.value.field == field
    assert words in str(caught.value)
    assert "evaluation 2" in str(caught.value)
    assert len(list(engine.audit_log())) == before
    assert _evaluations(engine) == 0


def test_a_refused_item_refuses_the_whole_batch(engine: pdca.Engine, cast: Cast) -> None:
    engine.load_plan("kumamoto", actor=cast.admin)
    refs = _measures(engine, cast.staff, 3)
    engine.create("measure:K-001", actor=cast.other_staff,
                  data={"municipalities": [KIKUCHI], "title_ja": "菊池の施策", "kind": "study"})
    before = len(list(engine.audit_log()))
    with pytest.raises(pdca.PermissionDenied):
        engine.evaluate_many([{"measure": r, "rating": "A"} for r in [*refs, "measure:K-001"]],
                             fiscal_year=FY, actor=cast.staff)
    with pytest.raises(pdca.UnknownReference):
        engine.evaluate_many([{"measure": "measure:NOPE", "rating": "A"}], fiscal_year=FY,
                             actor=cast.staff)
    with pytest.raises(pdca.TransitionNotAllowed):
        engine.fire_many([(refs[0], "commercialise", None), (refs[0], "commercialise", None)],
                         actor=cast.staff)
    assert len(list(engine.audit_log())) == before
    assert _evaluations(engine) == 0
    assert engine.get(refs[0]).state == "study"


def test_create_many_numbers_entries_in_order_and_rolls_back_on_a_duplicate(
    engine: pdca.Engine, cast: Cast
) -> None:
    created = engine.create_many(
        [(f"measure:C-{n}", {"municipalities": [KUMAMOTO, KIKUCHI], "title_ja": "x",
                             "kind": "implementation"}) for n in range(5)],
        actor=cast.secretariat)
    assert [t.seq for t in created] == sorted(t.seq for t in created)
    assert engine.get("measure:C-4").scope == (KUMAMOTO, KIKUCHI)
    assert [v.ref for v in engine.entities(workflow="measure", municipality=KIKUCHI)] == [
        f"measure:C-{n}" for n in range(5)]
    before = len(list(engine.audit_log()))
    with pytest.raises(pdca.DuplicateEntity):
        engine.create_many([("measure:C-9", {"municipalities": [KUMAMOTO], "title_ja": "x",
                                             "kind": "study"}),
                            ("measure:C-0", {"municipalities": [KUMAMOTO], "title_ja": "x",
                                             "kind": "study"})], actor=cast.secretariat)
    assert len(list(engine.audit_log())) == before
    with pytest.raises(pdca.UnknownReference):
        engine.get("measure:C-9")


def test_status_counts_measures_by_state(engine: pdca.Engine, cast: Cast) -> None:
    engine.load_plan("kumamoto", actor=cast.admin)
    refs = _measures(engine, cast.staff, 4)
    engine.fire(refs[0], "commercialise", actor=cast.staff)
    engine.create("measure:K-001", actor=cast.other_staff,
                  data={"municipalities": [KIKUCHI], "title_ja": "菊池の施策", "kind": "study"})
    assert engine.status(FY)["measures"] == {"implemented": 1, "study": 4}
    assert engine.status(FY, municipality=KIKUCHI)["measures"] == {"study": 1}


def test_a_measure_is_active_from_the_fiscal_year_it_was_created(db_url: str) -> None:
    from datetime import UTC, datetime

    from pdca.storage import queries

    engine = pdca.Engine.create_simulation(db_url, start=datetime(2025, 3, 1, tzinfo=UTC))
    try:
        engine.bootstrap_admin("admin")
        engine.load_plan("kumamoto", actor="admin")
        engine.add_person("staff", role="staff", municipality=KUMAMOTO, actor="admin")
        data = {"municipalities": [KUMAMOTO], "title_ja": "施策", "kind": "study"}
        engine.create("measure:OLD", actor="staff", data=data)  # FY2024
        engine.tick(datetime(2025, 6, 1, tzinfo=UTC))
        engine.create("measure:NEW", actor="staff", data=data)  # FY2025
        with engine._db.connect() as conn:
            assert queries.active_measures(conn, KUMAMOTO, 2024) == ["OLD"]
            assert queries.active_measures(conn, KUMAMOTO, 2025) == ["NEW", "OLD"]
            assert queries.missing_evaluations(conn, municipality=KUMAMOTO,
                                               fiscal_year=2024) == ["OLD"]
    finally:
        engine.close()
