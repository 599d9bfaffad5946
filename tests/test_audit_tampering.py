"""The audit log resists tampering: the database refuses it, and verification names it.

With the application's own connection the database itself refuses to change or remove audit
entries (append-only triggers). Whoever owns the database can bypass the triggers (drop them
on SQLite, ``session_replication_role = replica`` on PostgreSQL); what they do is then found
by :meth:`pdca.Engine.verify_audit`, whose ``first_bad`` names the entry where the log stops
being the one the engine wrote. Every scenario starts from a realistic log: people, measures
moving through their workflow, records, refusals audited on the refused entity or on the
refused person's own chain, and (where a test needs them) checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

import pdca
from pdca import audit
from tests.conftest import KIKUCHI, KUMAMOTO, Cast, make_measure

#: Tests that only make sense on PostgreSQL (TRUNCATE, sequences, dropped constraints).
only_postgresql = pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)]
)

# ---------------------------------------------------------------------------- the log


@dataclass(frozen=True)
class Log:
    """The entities of the realistic log, and the checkpoints taken while it was built."""

    #: create, commercialise, record "progress", complete: four entries, completed.
    funded: str
    #: create, refused commercialise (staff of another municipality), discontinue.
    refused: str
    #: A joint implementation project of two municipalities: create, complete.
    joint: str
    #: Still a study project: create, record "progress".
    pending: str
    #: A person registered, then given another role (a record on the person's chain).
    newcomer: str
    checkpoints: tuple[pdca.AuditEntry, ...]


def take_checkpoint(engine: pdca.Engine) -> pdca.AuditEntry:
    """``engine.checkpoint()``."""
    return engine.checkpoint()


def build_log(engine: pdca.Engine, cast: Cast, *, checkpoints: bool = False) -> Log:
    """Write a realistic log through the engine's public API.

    With ``checkpoints`` the log is sealed twice: after the first two measures (``cp1``)
    and after the measures reached their final states (``cp2``); ``pending`` comes after.
    """
    taken: list[pdca.AuditEntry] = []
    funded = make_measure(engine, "M-001")
    engine.fire(
        funded,
        "commercialise",
        actor=cast.staff,
        note="令和7年度予算で事業化",
        data={"fiscal_year": 2025, "budget_jpy": 12_000_000},
    )
    refused = make_measure(engine, "M-002")
    with pytest.raises(pdca.PermissionDenied):
        engine.fire(refused, "commercialise", actor=cast.other_staff)
    if checkpoints:
        taken.append(take_checkpoint(engine))

    engine.record(
        funded,
        "progress",
        actor=cast.staff,
        data={"progress_pct": 50},
        roles=frozenset({pdca.Role.STAFF}),
        note="半分完了",
    )
    joint = make_measure(
        engine,
        "M-003",
        actor=cast.other_staff,
        municipalities=(KIKUCHI, KUMAMOTO),
        kind="implementation",
    )
    # Staff of Kikuchi may not create a measure of Kumamoto alone: audited on their chain.
    with pytest.raises(pdca.PermissionDenied):
        make_measure(engine, "M-004", actor=cast.other_staff)
    newcomer = engine.add_person(
        "staff-kumamoto-2", role="staff", municipality=KUMAMOTO, actor=cast.admin
    )
    engine.change_role(newcomer.id, role="secretariat", actor=cast.admin, note="異動")
    engine.fire(funded, "complete", actor=cast.staff)
    engine.fire(refused, "discontinue", actor=cast.staff, data={"reason": "予算削減"})
    engine.fire(joint, "complete", actor=cast.other_staff)
    if checkpoints:
        taken.append(take_checkpoint(engine))

    pending = make_measure(engine, "M-005")
    engine.record(
        pending,
        "progress",
        actor=cast.staff,
        data={"progress_pct": 10},
        roles=frozenset({pdca.Role.STAFF}),
    )
    log = Log(
        funded=funded,
        refused=refused,
        joint=joint,
        pending=pending,
        newcomer=f"person:{newcomer.id}",
        checkpoints=tuple(taken),
    )
    report = engine.verify_audit()
    assert report.ok, report.problems
    return log


# ---------------------------------------------------------------------------- tampering


@contextlib.contextmanager
def tampering(engine: pdca.Engine) -> Iterator[Connection]:
    """A transaction of the database owner in which the append-only triggers do not fire.

    SQLite: the triggers are dropped and created again, as they were, before the commit.
    PostgreSQL: ``SET LOCAL session_replication_role = replica`` (superusers only), which
    also keeps foreign keys from cascading.
    """
    with engine._db.begin() as conn:
        if engine.dialect == "postgresql":
            conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
            yield conn
            return
        triggers = conn.execute(
            sa.text(
                "SELECT name, sql FROM sqlite_master "
                "WHERE type = 'trigger' AND tbl_name = 'audit_log' ORDER BY name"
            )
        ).all()
        assert [t.name for t in triggers] == ["audit_log_no_delete", "audit_log_no_update"]
        for trigger in triggers:
            conn.exec_driver_sql(f"DROP TRIGGER {trigger.name}")
        yield conn
        for trigger in triggers:
            conn.exec_driver_sql(trigger.sql)


def delete_entries(conn: Connection, *seqs: int) -> None:
    for seq in seqs:
        result = conn.execute(sa.text("DELETE FROM audit_log WHERE seq = :seq"), {"seq": seq})
        assert result.rowcount == 1


def delete_entity(conn: Connection, ref: str) -> None:
    """Remove every trace of ``ref``: its entries, its scope and its entities row."""
    conn.execute(sa.text("DELETE FROM audit_log WHERE ref = :ref"), {"ref": ref})
    conn.execute(
        sa.text(
            "DELETE FROM entity_scope WHERE entity_id = (SELECT id FROM entities WHERE ref = :ref)"
        ),
        {"ref": ref},
    )
    conn.execute(sa.text("DELETE FROM entities WHERE ref = :ref"), {"ref": ref})


def swap_seqs(conn: Connection, a: int, b: int) -> None:
    """Exchange the places of two entries in the log (their ``seq``), nothing else."""
    move = sa.text("UPDATE audit_log SET seq = :new WHERE seq = :old")
    conn.execute(move, {"old": a, "new": -a})
    conn.execute(move, {"old": b, "new": a})
    conn.execute(move, {"old": -a, "new": b})


def free_seq(engine: pdca.Engine, conn: Connection) -> int:
    """A sequence number no entry has and the engine will not hand out later."""
    if engine.dialect == "postgresql":
        return int(conn.execute(sa.text("SELECT nextval('audit_seq')")).scalar_one())
    return int(
        conn.execute(sa.text("SELECT COALESCE(MAX(seq), 0) + 1 FROM audit_log")).scalar_one()
    )


def forge(template: pdca.AuditEntry, **changes: Any) -> pdca.AuditEntry:
    """A copy of ``template`` with ``changes``, its hash computed as the engine would."""
    entry = dataclasses.replace(template, **changes)
    return dataclasses.replace(entry, hash=audit.hash_of(entry))


def insert_entry(conn: Connection, entry: pdca.AuditEntry) -> None:
    columns = [f.name for f in dataclasses.fields(entry)]
    values = dataclasses.asdict(entry)
    # Times go in as the engine stores them (UTC; naive on SQLite).
    for name in ("at", "virtual_at"):
        if values[name] is not None and conn.dialect.name == "sqlite":
            values[name] = values[name].replace(tzinfo=None)
    conn.execute(
        sa.text(
            f"INSERT INTO audit_log ({', '.join(columns)}) "
            f"VALUES ({', '.join(':' + c for c in columns)})"
        ),
        values,
    )


def entry(engine: pdca.Engine, ref: str, entity_seq: int) -> pdca.AuditEntry:
    """Entry number ``entity_seq`` (from 1) of ``ref``'s chain."""
    found = [e for e in engine.audit_log(ref=ref) if e.entity_seq == entity_seq]
    assert len(found) == 1, (ref, entity_seq, found)
    return found[0]


def digest_of(checkpoint: pdca.AuditEntry) -> str:
    return str(json.loads(checkpoint.data)["digest"])


def named(problem: pdca.Problem | None) -> tuple[int | None, str | None, str]:
    """What a test asserts of a problem: the entry (seq), its chain and the reason."""
    assert problem is not None, "the tampering was not detected"
    return (problem.seq, problem.ref, problem.reason)


def all_named(report: pdca.VerifyReport) -> list[tuple[int | None, str | None, str]]:
    return [named(p) for p in report.problems]


# ---------------------------------------------------------------------------- 1. refusals

APP_STATEMENTS = {
    "update-one": ("UPDATE audit_log SET note = 'forged' WHERE seq = :seq", "UPDATE"),
    "update-seq": ("UPDATE audit_log SET seq = seq + 1000 WHERE seq = :seq", "UPDATE"),
    "delete-one": ("DELETE FROM audit_log WHERE seq = :seq", "DELETE"),
    "delete-all": ("DELETE FROM audit_log WHERE seq >= :seq", "DELETE"),
}


@pytest.mark.parametrize("statement", list(APP_STATEMENTS))
def test_application_connection_cannot_change_or_remove_audit_entries(
    engine: pdca.Engine, cast: Cast, statement: str
) -> None:
    log = build_log(engine, cast)
    before = list(engine.audit_log())
    target = entry(engine, log.funded, 2)
    sql, operation = APP_STATEMENTS[statement]
    with pytest.raises(sa.exc.DBAPIError) as info, engine._db.begin() as conn:
        conn.execute(sa.text(sql), {"seq": target.seq})
    message = str(info.value.orig)
    assert "append-only" in message
    assert operation in message
    assert list(engine.audit_log()) == before
    assert engine.verify_audit().ok


@only_postgresql
def test_application_connection_cannot_truncate_the_audit_log(
    engine: pdca.Engine, cast: Cast
) -> None:
    build_log(engine, cast)
    before = list(engine.audit_log())
    with pytest.raises(sa.exc.DBAPIError) as info, engine._db.begin() as conn:
        conn.exec_driver_sql("TRUNCATE audit_log")
    assert "append-only" in str(info.value.orig)
    assert "TRUNCATE" in str(info.value.orig)
    assert list(engine.audit_log()) == before
    assert engine.verify_audit().ok


def test_database_refuses_a_second_entry_with_the_same_number_in_a_chain(
    engine: pdca.Engine, cast: Cast
) -> None:
    log = build_log(engine, cast)
    original = entry(engine, log.funded, 2)
    with pytest.raises(sa.exc.IntegrityError), engine._db.begin() as conn:
        insert_entry(conn, dataclasses.replace(original, seq=free_seq(engine, conn)))
    assert engine.verify_audit().ok


def test_triggers_still_refuse_changes_after_a_tampering(engine: pdca.Engine, cast: Cast) -> None:
    """The helpers below leave the database as append-only as they found it."""
    log = build_log(engine, cast)
    edited, other = entry(engine, log.funded, 2), entry(engine, log.funded, 3)
    with tampering(engine) as conn:
        conn.execute(
            sa.text("UPDATE audit_log SET note = 'forged' WHERE seq = :seq"), {"seq": edited.seq}
        )
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine._db.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_log WHERE seq = :seq"), {"seq": other.seq})


# ---------------------------------------------------------------------------- 2. edited


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("note", "事業化は見送り"),
        ("note", None),
        ("data", '{"budget_jpy":120000000,"fiscal_year":2025}'),
        ("to_state", "discontinued"),
        ("actor", "admin"),
        ("fiscal_year", 2026),
    ],
)
def test_edited_entry_is_named_by_verify(
    engine: pdca.Engine, cast: Cast, column: str, value: str | int | None
) -> None:
    log = build_log(engine, cast)
    victim = entry(engine, log.funded, 2)
    with tampering(engine) as conn:
        conn.execute(
            sa.text(f"UPDATE audit_log SET {column} = :value WHERE seq = :seq"),
            {"value": value, "seq": victim.seq},
        )
    report = engine.verify_audit()
    assert all_named(report) == [(victim.seq, log.funded, "edited")]
    assert report.first_bad is not None
    assert "does not match its hash" in report.first_bad.detail


def test_edited_entry_with_a_recomputed_hash_is_caught_where_its_chain_breaks(
    engine: pdca.Engine, cast: Cast
) -> None:
    """A forger who knows the hash recomputes it; the next entry still links to the old one.

    The chain alone cannot tell a rewritten entry from a forged successor, so either of the
    two may be named, on the right chain.
    """
    log = build_log(engine, cast)
    victim = entry(engine, log.funded, 2)
    successor = entry(engine, log.funded, 3)
    rewritten = forge(victim, note="事業化は見送り")
    with tampering(engine) as conn:
        conn.execute(
            sa.text("UPDATE audit_log SET note = :note, hash = :hash WHERE seq = :seq"),
            {"note": rewritten.note, "hash": rewritten.hash, "seq": victim.seq},
        )
    first = named(engine.verify_audit().first_bad)
    assert first in {
        (victim.seq, log.funded, "edited"),
        (successor.seq, log.funded, "inserted"),
    }


def test_edited_checkpoint_is_named_by_verify(engine: pdca.Engine, cast: Cast) -> None:
    log = build_log(engine, cast, checkpoints=True)
    cp1 = log.checkpoints[0]
    sealed = json.loads(cp1.data)
    sealed["count"] -= 1
    with tampering(engine) as conn:
        conn.execute(
            sa.text("UPDATE audit_log SET data = :data WHERE seq = :seq"),
            {"data": audit.canonical_json(sealed), "seq": cp1.seq},
        )
    report = engine.verify_audit()
    assert named(report.first_bad) == (cp1.seq, audit.CHECKPOINT_REF, "edited")
    assert {p.seq for p in report.problems} == {cp1.seq}


# ---------------------------------------------------------------------------- 2. removed


@pytest.mark.parametrize("removed", [1, 2, 3])
def test_removed_entry_is_named_at_the_entry_after_the_gap(
    engine: pdca.Engine, cast: Cast, removed: int
) -> None:
    log = build_log(engine, cast)
    gone, after_gap = entry(engine, log.funded, removed), entry(engine, log.funded, removed + 1)
    with tampering(engine) as conn:
        delete_entries(conn, gone.seq)
    report = engine.verify_audit()
    assert named(report.first_bad) == (after_gap.seq, log.funded, "removed")
    assert report.first_bad is not None
    assert f"entry {removed} of {log.funded} is missing" in report.first_bad.detail


def test_removed_run_of_entries_is_named_once_at_the_entry_after_the_gap(
    engine: pdca.Engine, cast: Cast
) -> None:
    log = build_log(engine, cast)
    second, third, last = (entry(engine, log.funded, n) for n in (2, 3, 4))
    with tampering(engine) as conn:
        delete_entries(conn, second.seq, third.seq)
    report = engine.verify_audit()
    assert all_named(report) == [(last.seq, log.funded, "removed")]
    assert report.first_bad is not None
    assert "entries 2..3" in report.first_bad.detail


def test_removed_last_entry_is_found_through_the_entities_table(
    engine: pdca.Engine, cast: Cast
) -> None:
    log = build_log(engine, cast)
    now_last, gone = entry(engine, log.funded, 3), entry(engine, log.funded, 4)
    with tampering(engine) as conn:
        delete_entries(conn, gone.seq)
    report = engine.verify_audit()
    assert named(report.first_bad) == (now_last.seq, log.funded, "removed")
    assert report.first_bad is not None
    assert "has 4 entries, the log only 3" in report.first_bad.detail
    # The removed entry was the one that completed the measure.
    assert (now_last.seq, log.funded, "state_mismatch") in all_named(report)


def test_removed_refusal_of_a_person_is_found_through_the_entities_table(
    engine: pdca.Engine, cast: Cast
) -> None:
    """A refused creation is audited on the refused person's chain; removing it shows."""
    build_log(engine, cast)
    person = f"person:{cast.other_staff}"
    created, refusal = entry(engine, person, 1), entry(engine, person, 2)
    assert (refusal.kind, refusal.trigger) == (audit.KIND_REFUSED, "create")
    with tampering(engine) as conn:
        delete_entries(conn, refusal.seq)
    report = engine.verify_audit()
    assert all_named(report) == [(created.seq, person, "removed")]


def test_removed_chain_of_an_existing_entity_is_named_by_its_ref(
    engine: pdca.Engine, cast: Cast
) -> None:
    log = build_log(engine, cast)
    with tampering(engine) as conn:
        conn.execute(sa.text("DELETE FROM audit_log WHERE ref = :ref"), {"ref": log.pending})
    report = engine.verify_audit()
    assert report.first_bad is not None
    assert (report.first_bad.ref, report.first_bad.reason) == (log.pending, "removed")


# ---------------------------------------------------------------------------- 2. inserted


def test_forged_entry_that_does_not_link_is_named_as_inserted(
    engine: pdca.Engine, cast: Cast
) -> None:
    """A well-formed entry (its hash right) appended to a chain, linked to the wrong entry."""
    log = build_log(engine, cast)
    template, wrong_link = entry(engine, log.funded, 3), entry(engine, log.funded, 2)
    with tampering(engine) as conn:
        forged = forge(
            template,
            seq=free_seq(engine, conn),
            entity_seq=5,
            prev_hash=wrong_link.hash,
            note="追加予算",
        )
        insert_entry(conn, forged)
    report = engine.verify_audit()
    assert named(report.first_bad) == (forged.seq, log.funded, "inserted")
    assert report.first_bad is not None
    assert "does not link to entry 4" in report.first_bad.detail


def test_forged_entry_that_links_is_named_as_inserted_through_the_entities_table(
    engine: pdca.Engine, cast: Cast
) -> None:
    """A copy of an entry with a new seq, linked and hashed right: the chain grew, the
    entity's recorded length and head did not."""
    log = build_log(engine, cast)
    template, head = entry(engine, log.funded, 3), entry(engine, log.funded, 4)
    with tampering(engine) as conn:
        forged = forge(template, seq=free_seq(engine, conn), entity_seq=5, prev_hash=head.hash)
        insert_entry(conn, forged)
    report = engine.verify_audit()
    assert all_named(report) == [(forged.seq, log.funded, "inserted")]
    assert report.first_bad is not None
    assert "records 4 entries" in report.first_bad.detail


@only_postgresql
def test_duplicated_entry_is_named_as_inserted(engine: pdca.Engine, cast: Cast) -> None:
    """An exact copy with a new seq, once the owner dropped the (ref, entity_seq) key."""
    log = build_log(engine, cast)
    original = entry(engine, log.funded, 2)
    with tampering(engine) as conn:
        conn.exec_driver_sql("ALTER TABLE audit_log DROP CONSTRAINT uq_audit_log_ref_entity_seq")
        copy = dataclasses.replace(original, seq=free_seq(engine, conn))
        insert_entry(conn, copy)
    report = engine.verify_audit()
    assert all_named(report) == [(copy.seq, log.funded, "inserted")]
    assert report.first_bad is not None
    assert "a second entry number 2" in report.first_bad.detail


def test_entries_of_an_entity_that_does_not_exist_are_named_as_inserted(
    engine: pdca.Engine, cast: Cast
) -> None:
    """A whole forged chain, hashed and linked right, of an entity that is not there."""
    log = build_log(engine, cast)
    ghost = "measure:M-999"
    prev = audit.GENESIS
    templates = [entry(engine, log.funded, number) for number in (1, 2)]
    with tampering(engine) as conn:
        for template in templates:
            forged = forge(
                template,
                seq=free_seq(engine, conn),
                ref=ghost,
                prev_hash=prev,
            )
            insert_entry(conn, forged)
            prev = forged.hash
    report = engine.verify_audit()
    assert all_named(report) == [(forged.seq, ghost, "inserted")]


def test_entry_planted_before_its_entity_is_created_is_named_not_the_creation(
    engine: pdca.Engine, cast: Cast
) -> None:
    log = build_log(engine, cast)
    future = "measure:M-010"
    template = entry(engine, log.pending, 1)
    with tampering(engine) as conn:
        planted = forge(
            template,
            seq=free_seq(engine, conn),
            ref=future,
            entity_seq=0,
            prev_hash=audit.GENESIS,
        )
        insert_entry(conn, planted)
    make_measure(engine, "M-010")
    report = engine.verify_audit()
    assert named(report.first_bad) == (planted.seq, future, "inserted")


# ---------------------------------------------------------------------------- 2. reordered


@pytest.mark.parametrize(("first", "second"), [(2, 3), (1, 4), (3, 4)])
def test_swapped_entries_are_named_as_reordered_at_the_first_misplaced_entry(
    engine: pdca.Engine, cast: Cast, first: int, second: int
) -> None:
    log = build_log(engine, cast)
    earlier, later = entry(engine, log.funded, first), entry(engine, log.funded, second)
    with tampering(engine) as conn:
        swap_seqs(conn, earlier.seq, later.seq)
    report = engine.verify_audit()
    # After the swap, entry `second` stands at `earlier.seq`: the first misplaced entry.
    assert all_named(report) == [(earlier.seq, log.funded, "reordered")]
    assert report.first_bad is not None
    assert "out of order" in report.first_bad.detail


def test_entry_replaced_by_a_later_forgery_is_detected(engine: pdca.Engine, cast: Cast) -> None:
    """Entry 2 removed and a forged entry 2 (other note) appended at the end of the log.

    It is named as a move: an entry arriving late in its chain is not hash-checked, so the
    changed content of the forgery is not reported on its own.
    """
    log = build_log(engine, cast)
    original, after = entry(engine, log.funded, 2), entry(engine, log.funded, 3)
    with tampering(engine) as conn:
        delete_entries(conn, original.seq)
        insert_entry(conn, forge(original, seq=free_seq(engine, conn), note="事業化は見送り"))
    report = engine.verify_audit()
    assert named(report.first_bad) == (after.seq, log.funded, "reordered")


# ---------------------------------------------------------------------------- 2. state


@pytest.mark.parametrize(
    ("which", "state"),
    [("pending", "completed"), ("refused", "study"), ("newcomer", "inactive")],
)
def test_state_changed_without_an_audit_entry_is_named_as_state_mismatch(
    engine: pdca.Engine, cast: Cast, which: str, state: str
) -> None:
    log = build_log(engine, cast)
    ref = str(getattr(log, which))
    last = list(engine.audit_log(ref=ref))[-1]
    # No trigger protects the entities table: the application's own connection will do.
    with engine._db.begin() as conn:
        conn.execute(
            sa.text("UPDATE entities SET state = :state WHERE ref = :ref"),
            {"state": state, "ref": ref},
        )
    report = engine.verify_audit()
    assert all_named(report) == [(last.seq, ref, "state_mismatch")]


# ---------------------------------------------------------------------------- 2. checkpoints


def test_entity_removed_inside_a_checkpointed_range_is_named_at_the_checkpoint(
    engine: pdca.Engine, cast: Cast
) -> None:
    """Every entry of ``joint`` and its entities row removed: no chain is left to break,
    but the checkpoint that sealed them no longer matches the log."""
    log = build_log(engine, cast, checkpoints=True)
    cp2 = log.checkpoints[1]
    with tampering(engine) as conn:
        delete_entity(conn, log.joint)
    report = engine.verify_audit()
    assert all_named(report) == [(cp2.seq, audit.CHECKPOINT_REF, "checkpoint_mismatch")]


def test_damage_sealed_by_one_checkpoint_is_reported_once(engine: pdca.Engine, cast: Cast) -> None:
    """A person removed from the range of ``cp1``; ``cp2`` and later entries still verify."""
    log = build_log(engine, cast, checkpoints=True)
    cp1 = log.checkpoints[0]
    assert entry(engine, f"person:{cast.auditor}", 1).seq < cp1.seq
    with tampering(engine) as conn:
        delete_entity(conn, f"person:{cast.auditor}")
    report = engine.verify_audit()
    assert all_named(report) == [(cp1.seq, audit.CHECKPOINT_REF, "checkpoint_mismatch")]


def test_removed_middle_checkpoint_is_named_at_the_next_checkpoint(
    engine: pdca.Engine, cast: Cast
) -> None:
    log = build_log(engine, cast, checkpoints=True)
    cp3 = take_checkpoint(engine)
    with tampering(engine) as conn:
        delete_entries(conn, log.checkpoints[1].seq)
    report = engine.verify_audit()
    assert named(report.first_bad) == (cp3.seq, audit.CHECKPOINT_REF, "removed")


def test_untampered_log_verifies_against_every_kept_digest(engine: pdca.Engine, cast: Cast) -> None:
    log = build_log(engine, cast, checkpoints=True)
    cp3 = take_checkpoint(engine)
    for checkpoint in (*log.checkpoints, cp3):
        report = engine.verify_audit(expect_digest=digest_of(checkpoint))
        assert report.ok, report.problems


def test_digest_never_taken_is_reported_as_checkpoint_missing(
    engine: pdca.Engine, cast: Cast
) -> None:
    build_log(engine, cast)
    report = engine.verify_audit(expect_digest="ab" * 32)
    assert all_named(report) == [(None, audit.CHECKPOINT_REF, "checkpoint_missing")]


def test_rewritten_history_passes_verify_but_not_the_kept_digest(
    engine: pdca.Engine, cast: Cast
) -> None:
    """The owner removes an entity, removes every checkpoint and seals the result again:
    the log is consistent with itself, only a digest kept outside shows what happened."""
    log = build_log(engine, cast, checkpoints=True)
    kept = digest_of(log.checkpoints[1])
    with tampering(engine) as conn:
        delete_entity(conn, log.joint)
        conn.execute(
            sa.text("DELETE FROM audit_log WHERE ref = :ref"), {"ref": audit.CHECKPOINT_REF}
        )
    take_checkpoint(engine)
    assert engine.verify_audit().ok
    report = engine.verify_audit(expect_digest=kept)
    assert named(report.first_bad) == (None, audit.CHECKPOINT_REF, "checkpoint_missing")
    assert report.first_bad is not None
    assert kept in report.first_bad.detail


def test_removed_last_checkpoint_is_caught_by_the_kept_digest(
    engine: pdca.Engine, cast: Cast
) -> None:
    """Nothing in the database says a last checkpoint existed: only its kept digest."""
    log = build_log(engine, cast, checkpoints=True)
    last = log.checkpoints[-1]
    with tampering(engine) as conn:
        delete_entries(conn, last.seq)
    assert engine.verify_audit().ok
    report = engine.verify_audit(expect_digest=digest_of(last))
    assert all_named(report) == [(None, audit.CHECKPOINT_REF, "checkpoint_missing")]
    # History up to the first checkpoint is still provably unchanged.
    assert engine.verify_audit(expect_digest=digest_of(log.checkpoints[0])).ok


# ---------------------------------------------------------------------------- 3. untampered


def test_untampered_log_with_refusals_records_and_checkpoints_verifies_ok(
    engine: pdca.Engine, cast: Cast
) -> None:
    log = build_log(engine, cast, checkpoints=True)
    last = take_checkpoint(engine)
    entries = list(engine.audit_log())
    kinds = {e.kind for e in entries}
    assert kinds == set(audit.ENTRY_KINDS) - {audit.KIND_DEADLINE}

    report = engine.verify_audit(expect_digest=digest_of(log.checkpoints[0]))

    assert report.ok, report.problems
    assert report.first_bad is None
    assert report.entries == len(entries)
    assert report.checkpoints == 3
    with engine._db.connect() as conn:
        entities = conn.execute(sa.text("SELECT COUNT(*) FROM entities")).scalar_one()
    assert report.entities == entities >= len(engine.people()) + 4
    assert report.last_checkpoint_seq == last.seq
    assert report.last_checkpoint_digest == digest_of(last)


def test_untampered_log_without_checkpoints_verifies_ok(engine: pdca.Engine, cast: Cast) -> None:
    build_log(engine, cast)
    report = engine.verify_audit()
    assert report.ok, report.problems
    assert (report.checkpoints, report.last_checkpoint_seq) == (0, None)


def test_checkpoint_seals_the_log_on_every_backend(
    engine: pdca.Engine, cast: Cast, request: pytest.FixtureRequest
) -> None:
    build_log(engine, cast)
    checkpoint = engine.checkpoint()
    sealed = json.loads(checkpoint.data)
    assert sealed["count"] == len(list(engine.audit_log())) - 1
    assert engine.verify_audit(expect_digest=sealed["digest"]).ok


def test_verify_is_not_confused_by_a_change_committed_while_it_reads(
    engine: pdca.Engine, cast: Cast, request: pytest.FixtureRequest
) -> None:
    """A transition committed between verify's read of the log and of the entities."""
    log = build_log(engine, cast)
    fired: list[bool] = []

    def commit_meanwhile(conn: Connection, cursor: Any, statement: str, *args: Any) -> None:
        if fired or "FROM entities" not in statement or "audit_log" in statement:
            return
        fired.append(True)
        engine.fire(log.pending, "commercialise", actor=cast.staff)

    sa.event.listen(engine._db, "before_cursor_execute", commit_meanwhile)
    try:
        report = engine.verify_audit()
    finally:
        sa.event.remove(engine._db, "before_cursor_execute", commit_meanwhile)
    assert fired
    assert engine.get(log.pending).state == "implemented"
    assert report.ok, report.problems


@only_postgresql
def test_checkpoint_taken_while_a_transition_is_in_flight_keeps_the_log_verifiable(
    engine: pdca.Engine, cast: Cast
) -> None:
    """The checkpoint waits for the writer that took its sequence number, then seals it."""
    log = build_log(engine, cast)
    checkpoints: list[pdca.AuditEntry] = []
    errors: list[BaseException] = []
    threads: list[threading.Thread] = []

    def run_checkpoint() -> None:
        try:
            checkpoints.append(engine.checkpoint())
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    def checkpoint_meanwhile(
        conn: Connection, cursor: Any, statement: str, parameters: Any, *args: Any
    ) -> None:
        if threads or not statement.startswith("INSERT INTO audit_log"):
            return
        if not isinstance(parameters, dict) or parameters.get("trigger") != "commercialise":
            return
        thread = threading.Thread(target=run_checkpoint)
        threads.append(thread)
        thread.start()
        # Let the writer go on only once the checkpoint is waiting for it.
        with engine._db.connect() as probe:
            for _ in range(2000):
                waiting = probe.execute(sa.text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                )).scalar_one()
                probe.rollback()
                if waiting:
                    break
                thread.join(timeout=0.005)
            else:
                raise AssertionError("the checkpoint never waited for the writer")

    sa.event.listen(engine._db, "before_cursor_execute", checkpoint_meanwhile)
    try:
        fired = engine.fire(log.pending, "commercialise", actor=cast.staff)
    finally:
        sa.event.remove(engine._db, "before_cursor_execute", checkpoint_meanwhile)
    threads[0].join(timeout=30)
    assert errors == []
    assert checkpoints[0].seq > fired.seq
    report = engine.verify_audit()
    assert report.ok, report.problems
