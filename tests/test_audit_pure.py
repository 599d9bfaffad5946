"""pdca.audit without a database: the hash of an entry, and the streaming Verifier.

Entries are built here the way the engine builds them (``entry_hash`` over every field and
the previous hash), so each test can damage a log precisely and see what is named.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

import pdca
from pdca import audit

T0 = datetime(2026, 4, 1, 9, 30, 0, 123456, tzinfo=UTC)


def make_entry(
    seq: int,
    ref: str,
    entity_seq: int,
    prev_hash: str,
    *,
    kind: str = audit.KIND_RECORD,
    to_state: str | None = "study",
    data: str = "{}",
    note: str | None = None,
) -> pdca.AuditEntry:
    entry = pdca.AuditEntry(
        seq=seq,
        ref=ref,
        entity_seq=entity_seq,
        kind=kind,
        at=T0 + timedelta(seconds=seq),
        virtual_at=None,
        actor="staff-kumamoto",
        role="staff",
        fiscal_year=2025,
        trigger="progress" if kind == audit.KIND_RECORD else kind,
        from_state="study",
        to_state=to_state,
        note=note,
        data=data,
        workflow_version="v1",
        prev_hash=prev_hash,
        hash="",
    )
    return dataclasses.replace(entry, hash=audit.hash_of(entry))


def rehash(entry: pdca.AuditEntry, **changes: Any) -> pdca.AuditEntry:
    changed = dataclasses.replace(entry, **changes)
    return dataclasses.replace(changed, hash=audit.hash_of(changed))


def interleaved_log(refs: Sequence[str], per_chain: int) -> list[pdca.AuditEntry]:
    """``per_chain`` entries of each ref, the chains taking turns in the log."""
    heads = dict.fromkeys(refs, audit.GENESIS)
    log: list[pdca.AuditEntry] = []
    for number in range(1, per_chain + 1):
        for ref in refs:
            kind = audit.KIND_CREATE if number == 1 else audit.KIND_RECORD
            entry = make_entry(len(log) + 1, ref, number, heads[ref], kind=kind)
            heads[ref] = entry.hash
            log.append(entry)
    return log


def heads_of(log: Iterable[pdca.AuditEntry], state: str = "study") -> list[audit.EntityHead]:
    last: dict[str, pdca.AuditEntry] = {}
    for entry in log:
        if entry.ref != audit.CHECKPOINT_REF:
            last[entry.ref] = entry
    return [
        audit.EntityHead(ref=e.ref, state=state, chain_len=e.entity_seq, chain_head=e.hash)
        for e in last.values()
    ]


def verify(
    log: Iterable[pdca.AuditEntry], heads: Iterable[audit.EntityHead]
) -> list[tuple[int | None, str | None, str]]:
    verifier = audit.Verifier()
    for entry in sorted(log, key=lambda e: e.seq):
        verifier.feed(entry)
    return [(p.seq, p.ref, p.reason) for p in verifier.finish(heads)]


def checkpoint_after(log: Sequence[pdca.AuditEntry], digest: str = audit.GENESIS) -> str:
    for entry in log:
        digest = audit.fold_digest(digest, entry.hash)
    return digest


A, B = "measure:M-001", "measure:M-002"


# ---------------------------------------------------------------------------- hashing


def test_canonical_json_sorts_keys_keeps_unicode_and_drops_spaces() -> None:
    assert audit.canonical_json({"b": [1, 2.5], "a": "予算"}) == '{"a":"予算","b":[1,2.5]}'


@pytest.mark.parametrize(
    "value",
    [{"x": math.nan}, {"x": math.inf}, {1: "key not text"}, {"x": {1, 2}}, {"x": b"bytes"}],
)
def test_canonical_json_refuses_what_json_cannot_say_exactly(value: Any) -> None:
    with pytest.raises(pdca.InvalidData):
        audit.canonical_json(value)


def test_time_inside_a_hash_is_utc_with_microseconds() -> None:
    jst = timezone(timedelta(hours=9))
    assert audit.format_time(datetime(2026, 4, 1, 18, 30, 0, 5, tzinfo=jst)) == (
        "2026-04-01T09:30:00.000005Z"
    )
    assert audit.format_time(None) is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seq", 99),
        ("ref", B),
        ("entity_seq", 2),
        ("kind", audit.KIND_TRANSITION),
        ("at", T0 + timedelta(microseconds=1)),
        ("virtual_at", T0),
        ("actor", "admin"),
        ("role", "admin"),
        ("fiscal_year", None),
        ("trigger", "complete"),
        ("from_state", None),
        ("to_state", "implemented"),
        ("note", ""),
        ("data", '{"x":1}'),
        ("workflow_version", "v2"),
        ("prev_hash", "f" * 64),
    ],
)
def test_every_field_of_an_entry_is_in_its_hash(field: str, value: Any) -> None:
    entry = make_entry(1, A, 1, audit.GENESIS)
    assert audit.hash_of(dataclasses.replace(entry, **{field: value})) != entry.hash


def test_hash_cannot_be_kept_by_moving_text_between_fields() -> None:
    entry = make_entry(1, A, 1, audit.GENESIS, note="ab", data="c")
    moved = dataclasses.replace(entry, note="a", data="bc")
    assert audit.hash_of(moved) != entry.hash


@pytest.mark.parametrize(("one", "other"), [(None, ""), (None, "~"), ("", "~")])
def test_missing_note_empty_note_and_tilde_hash_differently(
    one: str | None, other: str | None
) -> None:
    entry = make_entry(1, A, 1, audit.GENESIS, note=one)
    assert audit.hash_of(dataclasses.replace(entry, note=other)) != entry.hash


# ---------------------------------------------------------------------------- verifier


def test_interleaved_chains_verify() -> None:
    log = interleaved_log([A, B], 3)
    assert verify(log, heads_of(log)) == []


def test_edited_entry_is_named() -> None:
    log = interleaved_log([A, B], 3)
    log[2] = dataclasses.replace(log[2], note="forged")
    assert verify(log, heads_of(interleaved_log([A, B], 3))) == [(3, A, "edited")]


def test_removed_entry_is_named_at_the_entry_after_the_gap() -> None:
    log = interleaved_log([A, B], 3)
    heads = heads_of(log)
    del log[2]  # A's entry 2
    assert verify(log, heads) == [(5, A, "removed")]


def test_forged_entry_that_does_not_link_is_named_as_inserted() -> None:
    log = interleaved_log([A, B], 2)
    heads = heads_of(log)
    log.append(make_entry(5, A, 3, audit.GENESIS))
    assert verify(log, heads)[0] == (5, A, "inserted")


def test_swapped_entries_are_named_as_reordered() -> None:
    log = interleaved_log([A, B], 3)
    heads = heads_of(log)
    # A's entries 2 (seq 3) and 3 (seq 5) change places.
    log[2], log[4] = dataclasses.replace(log[4], seq=3), dataclasses.replace(log[2], seq=5)
    assert verify(log, heads) == [(3, A, "reordered")]


def test_log_fed_out_of_sequence_order_is_named() -> None:
    log = interleaved_log([A], 2)
    verifier = audit.Verifier()
    for entry in reversed(log):
        verifier.feed(entry)
    problems = verifier.finish(heads_of(log))
    assert ("out_of_order", 1) in [(p.reason, p.seq) for p in problems]


def test_state_the_log_does_not_explain_is_named() -> None:
    log = interleaved_log([A, B], 2)
    heads = [dataclasses.replace(h, state="completed") if h.ref == B else h for h in heads_of(log)]
    assert verify(log, heads) == [(4, B, "state_mismatch")]


def test_checkpoint_seals_what_came_before_it() -> None:
    log = interleaved_log([A, B], 2)
    sealed = {"count": 4, "digest": checkpoint_after(log), "from_seq": 1, "to_seq": 4}
    cp = make_entry(
        5,
        audit.CHECKPOINT_REF,
        1,
        audit.GENESIS,
        kind=audit.KIND_CHECKPOINT,
        to_state=None,
        data=audit.canonical_json(sealed),
    )
    assert verify([*log, cp], heads_of(log)) == []

    # Entity B wholly removed, entities row and all: only the checkpoint can tell.
    without_b = [e for e in log if e.ref != B]
    assert verify([*without_b, cp], heads_of(without_b)) == [
        (5, audit.CHECKPOINT_REF, "checkpoint_mismatch")
    ]


def test_unreadable_checkpoint_is_named_as_edited() -> None:
    cp = make_entry(
        1, audit.CHECKPOINT_REF, 1, audit.GENESIS, kind=audit.KIND_CHECKPOINT, data="[]"
    )
    assert verify([cp], []) == [(1, audit.CHECKPOINT_REF, "edited")]


def test_verifier_stops_collecting_chain_problems_at_its_limit() -> None:
    original = interleaved_log([A], 5)
    verifier = audit.Verifier(max_problems=2)
    for entry in original:
        verifier.feed(dataclasses.replace(entry, note="forged"))
    problems = verifier.finish(heads_of(original))
    assert [(p.seq, p.reason) for p in problems] == [(1, "edited"), (2, "edited")]


def test_entity_without_any_entry_is_named_by_its_ref() -> None:
    log = interleaved_log([A, B], 2)
    heads = heads_of(log)
    assert verify([e for e in log if e.ref != B], heads) == [(None, B, "removed")]


def test_chain_starting_below_entry_one_is_named_at_the_forged_entry() -> None:
    genuine = make_entry(2, A, 1, audit.GENESIS, kind=audit.KIND_CREATE)
    forged = rehash(genuine, seq=1, entity_seq=0, note="planted")
    assert verify([forged, genuine], heads_of([genuine]))[0] == (1, A, "inserted")
