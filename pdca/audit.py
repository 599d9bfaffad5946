"""The audit log's hash chains and their verification (pure: no database here).

Every entry belongs to the chain of one reference (an entity, a person, or the checkpoint
chain) and links to the previous entry of that chain by its hash. A global sequence number
orders all entries; it is part of each hash, so moving an entry changes its hash.
Checkpoint entries seal everything logged since the previous checkpoint with a cumulative
digest, so removing or inserting a whole chain is detected too, and a digest kept outside
the database proves that history up to it is unchanged.

The hash of an entry is SHA-256 over its fields, each written as ``LENGTH:TEXT`` (or ``~``
for a missing value) in a fixed order: unambiguous, and cheaper to compute than JSON when
an auditor verifies a million entries.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .errors import InvalidData
from .types import AuditEntry, Problem

#: The ``prev_hash`` of the first entry of every chain.
GENESIS = "0" * 64
#: The reference whose chain holds the checkpoint entries.
CHECKPOINT_REF = "audit:checkpoints"

KIND_CREATE = "create"
KIND_TRANSITION = "transition"
KIND_RECORD = "record"
KIND_REFUSED = "refused"
KIND_DEADLINE = "deadline_missed"
KIND_CHECKPOINT = "checkpoint"
ENTRY_KINDS = (
    KIND_CREATE,
    KIND_TRANSITION,
    KIND_RECORD,
    KIND_REFUSED,
    KIND_DEADLINE,
    KIND_CHECKPOINT,
)
#: Kinds whose ``to_state`` is the entity's state afterwards.
STATE_KINDS = frozenset({KIND_CREATE, KIND_TRANSITION})


def _check_json_value(value: Any, path: str) -> None:
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidData(f"{path} must be a finite number", field=path)
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json_value(item, f"{path}[{i}]")
        return
    if isinstance(value, Mapping):
        for k, item in value.items():
            if not isinstance(k, str):
                raise InvalidData(f"{path} has a key that is not a string: {k!r}", field=path)
            _check_json_value(item, f"{path}.{k}" if path else k)
        return
    raise InvalidData(
        f"{path or 'data'} has a value of type {type(value).__name__}; "
        "use text, numbers, booleans, lists or mappings",
        field=path or None,
    )


def canonical_json(value: Any) -> str:
    """The one text form of a JSON value: sorted keys, no spaces, UTF-8 kept as is."""
    _check_json_value(value, "")
    return json.dumps(
        value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
    )


def format_time(value: datetime | None) -> str | None:
    """UTC, microseconds, ``Z``: the form a time takes inside a hash."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _field(value: str | int | None) -> str:
    if value is None:
        return "~"
    text = str(value)
    return f"{len(text)}:{text}"


def entry_hash(
    *,
    seq: int,
    ref: str,
    entity_seq: int,
    kind: str,
    at: datetime,
    virtual_at: datetime | None,
    actor: str,
    role: str,
    fiscal_year: int | None,
    trigger: str,
    from_state: str | None,
    to_state: str | None,
    note: str | None,
    data: str,
    workflow_version: str,
    prev_hash: str,
) -> str:
    """The SHA-256 (hex) of one entry's fields and the hash of its predecessor."""
    return _hash_fields(
        seq,
        ref,
        entity_seq,
        kind,
        format_time(at),
        format_time(virtual_at),
        actor,
        role,
        fiscal_year,
        trigger,
        from_state,
        to_state,
        note,
        data,
        workflow_version,
        prev_hash,
    )


def _text(*fields: str | int | None) -> str:
    """The hashed text of an entry's fields, times already in :func:`format_time`'s form."""
    return "pdca-audit-v1|" + "".join(_field(value) for value in fields)


def _hash_fields(*fields: str | int | None) -> str:
    return hashlib.sha256(_text(*fields).encode("utf-8")).hexdigest()


def hash_of(entry: AuditEntry) -> str:
    """Recompute the hash of a stored entry."""
    return entry_hash(
        seq=entry.seq,
        ref=entry.ref,
        entity_seq=entry.entity_seq,
        kind=entry.kind,
        at=entry.at,
        virtual_at=entry.virtual_at,
        actor=entry.actor,
        role=entry.role,
        fiscal_year=entry.fiscal_year,
        trigger=entry.trigger,
        from_state=entry.from_state,
        to_state=entry.to_state,
        note=entry.note,
        data=entry.data,
        workflow_version=entry.workflow_version,
        prev_hash=entry.prev_hash,
    )


def text_of(entry: AuditEntry) -> str:
    """The text whose SHA-256 (of its UTF-8) is the entry's hash."""
    return _text(
        entry.seq,
        entry.ref,
        entry.entity_seq,
        entry.kind,
        format_time(entry.at),
        format_time(entry.virtual_at),
        entry.actor,
        entry.role,
        entry.fiscal_year,
        entry.trigger,
        entry.from_state,
        entry.to_state,
        entry.note,
        entry.data,
        entry.workflow_version,
        entry.prev_hash,
    )


def fold_digest(digest: str, entry_hash_hex: str) -> str:
    """Extend a cumulative checkpoint digest by one entry's hash."""
    return hashlib.sha256(bytes.fromhex(digest) + bytes.fromhex(entry_hash_hex)).hexdigest()


@dataclass(slots=True)
class _Chain:
    length: int
    head: str
    last_seq: int
    state: str | None
    # entity_seq -> index of the "removed" problem reported for it (or -1)
    missing: dict[int, int]


@dataclass(frozen=True, kw_only=True, slots=True)
class EntityHead:
    """What the entities table says about one chain, compared with the log at the end."""

    ref: str
    state: str
    chain_len: int
    chain_head: str


#: How :meth:`Verifier.feed_rows` reads a time it could not write itself: from the two
#: columns a row has for it, the time as :func:`format_time` writes it (None for no time).
TimeOf = Callable[[Any, Any], str | None]


def _row_hash(row: Sequence[Any], time_of: TimeOf) -> str:
    """The hash of a row given to :meth:`Verifier.feed_rows`, by :func:`entry_hash`'s rules."""
    at, virtual_at, at_stored, virtual_at_stored = row[4], row[5], row[17], row[18]
    return _hash_fields(
        *row[:4],
        time_of(at, at_stored),
        time_of(virtual_at, virtual_at_stored),
        *row[6:16],
    )


class Verifier:
    """Streaming verification: feed entries in ``seq`` order, then :meth:`finish`.

    Memory grows with the number of chains (references), not with the number of entries.
    """

    def __init__(self, *, max_problems: int = 100) -> None:
        self._chains: dict[str, _Chain] = {}
        self._problems: list[Problem] = []
        self._max = max_problems
        self.entries = 0
        self.checkpoints = 0
        self._last_seq = 0
        self._digest = GENESIS
        self._since_checkpoint = 0
        self.last_checkpoint_seq: int | None = None
        self.last_checkpoint_digest: str | None = None
        #: The digest of every checkpoint entry whose data names one, damaged or not.
        self.sealed: set[str] = set()
        #: The heads :meth:`finish` compared.
        self.entities = 0

    def _problem(self, seq: int | None, ref: str | None, reason: str, detail: str) -> int:
        if len(self._problems) >= self._max:
            return -1
        self._problems.append(Problem(seq=seq, ref=ref, reason=reason, detail=detail))
        return len(self._problems) - 1

    def feed(self, entry: AuditEntry) -> None:
        self._feed(
            entry.seq,
            entry.ref,
            entry.entity_seq,
            entry.kind,
            entry.to_state,
            entry.data,
            entry.prev_hash,
            entry.hash,
            lambda: hash_of(entry),
        )

    def feed_rows(
        self, rows: Iterable[Sequence[Any]], time_of: TimeOf, *, stored: bool = False
    ) -> None:
        """Feed entries as the database returns them: what :meth:`feed` does, faster.

        A row is ``(seq, ref, entity_seq, kind, at, virtual_at, actor, role, fiscal_year,
        trigger, from_state, to_state, note, data, workflow_version, prev_hash, hash,
        at_stored, virtual_at_stored)``: the columns of ``audit_log``, each time already
        written as its field of the hashed text (``"27:2026-04-01T09:30:00.123456Z"``, or
        ``"~"`` for no virtual time), or None where the database could not write it so; the
        stored value then follows in ``*_stored``, and ``time_of(field, stored)`` gives the
        time as :func:`format_time` writes it.

        ``stored``: the rows come from a database that keeps times as text and may keep
        anything in any column (SQLite): ``at`` and ``virtual_at`` are the stored values
        (``"2026-04-01 09:30:00.123456"``, UTC), written here into their fields when they
        have that shape, ``time_of(value, None)`` reads them otherwise; and a text column
        is written here only when it holds a text.

        An entry that carries on its chain as expected, whose text is written here and
        whose hash matches, is taken without building an :class:`AuditEntry`; its text is
        the one :func:`entry_hash` writes, or (for a time of that shape that is no real
        time) one no other entry can have. Every other entry (a checkpoint, anything that
        does not match) goes through the same checks as :meth:`feed`, its hash recomputed
        by :func:`entry_hash`'s rules.
        """
        chains = self._chains
        find = chains.get
        sha256 = hashlib.sha256
        # ``str.__len__`` refuses bytes (which the exact rules write as ``b'…'``).
        length = str.__len__ if stored else len
        str_ = str
        checkpoint, genesis, state_kinds, new_chain = KIND_CHECKPOINT, GENESIS, STATE_KINDS, _Chain
        digest = bytes.fromhex(self._digest)
        last = self._last_seq
        since = self._since_checkpoint
        fast = 0
        for row in rows:
            (
                seq,
                ref,
                entity_seq,
                kind,
                at,
                virtual_at,
                actor,
                role,
                fiscal_year,
                trigger,
                from_state,
                to_state,
                note,
                data,
                workflow_version,
                prev_hash,
                hash_,
                _,
                _,
            ) = row
            chain = find(ref)
            if (
                seq > last
                and kind != checkpoint
                and (
                    entity_seq == 1 and prev_hash == genesis
                    if chain is None
                    else entity_seq == chain.length + 1 and prev_hash == chain.head
                )
            ):
                if stored:
                    # 'YYYY-MM-DD HH:MM:SS.ffffff' -> '27:YYYY-MM-DDTHH:MM:SS.ffffffZ'
                    if at.__class__ is str_ and len(at) == 26 and at[10] == " ":
                        at = f"27:{at[:10]}T{at[11:]}Z"
                    else:
                        at = None
                    if virtual_at is None:
                        virtual_at = "~"
                    elif (
                        virtual_at.__class__ is str_
                        and len(virtual_at) == 26
                        and virtual_at[10] == " "
                    ):
                        virtual_at = f"27:{virtual_at[:10]}T{virtual_at[11:]}Z"
                    else:
                        virtual_at = None
                if at is not None and virtual_at is not None:
                    try:
                        s = str_(seq)
                        e = str_(entity_seq)
                        if fiscal_year is None:
                            y = "~"
                        else:
                            y = str_(fiscal_year)
                            y = f"{len(y)}:{y}"
                        text = (
                            f"pdca-audit-v1|{len(s)}:{s}{length(ref)}:{ref}{len(e)}:{e}"
                            f"{length(kind)}:{kind}{at}{virtual_at}{length(actor)}:{actor}"
                            f"{length(role)}:{role}{y}{length(trigger)}:{trigger}"
                            f"{'~' if from_state is None else f'{length(from_state)}:{from_state}'}"
                            f"{'~' if to_state is None else f'{length(to_state)}:{to_state}'}"
                            f"{'~' if note is None else f'{length(note)}:{note}'}"
                            f"{length(data)}:{data}{length(workflow_version)}:{workflow_version}"
                            f"{length(prev_hash)}:{prev_hash}"
                        )
                    except TypeError:
                        pass
                    else:
                        recomputed = sha256(text.encode()).digest()
                        if recomputed.hex() == hash_:
                            state = to_state if kind in state_kinds else None
                            if chain is None:
                                chains[ref] = new_chain(entity_seq, hash_, seq, state, {})
                            else:
                                chain.length = entity_seq
                                chain.head = hash_
                                chain.last_seq = seq
                                if state is not None:
                                    chain.state = state
                            digest = sha256(digest + recomputed).digest()
                            since += 1
                            last = seq
                            fast += 1
                            continue
            self.entries += fast
            fast = 0
            self._digest, self._last_seq, self._since_checkpoint = digest.hex(), last, since
            self._feed(
                seq,
                ref,
                entity_seq,
                kind,
                to_state,
                data,
                prev_hash,
                hash_,
                functools.partial(_row_hash, row, time_of),
            )
            digest = bytes.fromhex(self._digest)
            last, since = self._last_seq, self._since_checkpoint
        self.entries += fast
        self._digest, self._last_seq, self._since_checkpoint = digest.hex(), last, since

    def _feed(
        self,
        seq: int,
        ref: str,
        entity_seq: int,
        kind: str,
        to_state: str | None,
        data: str,
        prev_hash: str,
        hash_: str,
        recompute: Callable[[], str],
    ) -> None:
        self.entries += 1
        if kind == KIND_CHECKPOINT:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self.sealed.add(str(json.loads(data)["digest"]))
        if seq <= self._last_seq:
            self._problem(seq, ref, "out_of_order", f"sequence {seq} after {self._last_seq}")
        self._last_seq = max(self._last_seq, seq)

        if entity_seq < 1:
            self._problem(seq, ref, "inserted", f"entry number {entity_seq} cannot start a chain")
            return
        recomputed = recompute()
        chain = self._chains.get(ref)
        expected_seq = 1 if chain is None else chain.length + 1
        expected_prev = GENESIS if chain is None else chain.head

        if chain is not None and entity_seq <= chain.length:
            if entity_seq in chain.missing:
                # What looked like a removal earlier was a move: report it as such, at the
                # first entry that stands out of place.
                index = chain.missing.pop(entity_seq)
                if index >= 0:
                    earlier = self._problems[index]
                    self._problems[index] = Problem(
                        seq=earlier.seq,
                        ref=earlier.ref,
                        reason="reordered",
                        detail=f"entries of {ref} stand out of order: entry "
                        f"{entity_seq} comes later in the log, at {seq}",
                    )
            else:
                self._problem(
                    seq, ref, "inserted", f"a second entry number {entity_seq} of {ref}"
                )
            return
        if entity_seq > expected_seq:
            gap = range(expected_seq, entity_seq)
            if chain is None:
                chain = _Chain(0, GENESIS, 0, None, {})
                self._chains[ref] = chain
            index = self._problem(
                seq,
                ref,
                "removed",
                f"entries {gap.start}..{gap.stop - 1} of {ref} are missing before it"
                if len(gap) > 1
                else f"entry {gap.start} of {ref} is missing before it",
            )
            for missing in gap:
                chain.missing[missing] = index
        elif recomputed != hash_:
            self._problem(seq, ref, "edited", "the entry's content does not match its hash")
        elif prev_hash != expected_prev:
            self._problem(
                seq, ref, "inserted", f"it does not link to entry {expected_seq - 1} of {ref}"
            )

        if chain is None:
            chain = _Chain(0, GENESIS, 0, None, {})
            self._chains[ref] = chain
        chain.length = entity_seq
        chain.head = hash_
        chain.last_seq = seq
        if kind in STATE_KINDS and to_state is not None:
            chain.state = to_state

        if kind == KIND_CHECKPOINT:
            self._check_checkpoint(seq, ref, data)
        else:
            self._digest = fold_digest(self._digest, hash_)
            self._since_checkpoint += 1

    def _check_checkpoint(self, seq: int, ref: str, data: str) -> None:
        self.checkpoints += 1
        try:
            sealed = json.loads(data)
            digest = str(sealed["digest"])
            count = int(sealed["count"])
        except (ValueError, KeyError, TypeError):
            self._problem(seq, ref, "edited", "the checkpoint's data is unreadable")
            return
        if count != self._since_checkpoint or digest != self._digest:
            self._problem(
                seq,
                ref,
                "checkpoint_mismatch",
                f"it sealed {count} entries with digest {digest[:12]}…, but the log holds "
                f"{self._since_checkpoint} with digest {self._digest[:12]}… since the previous "
                "checkpoint: entries were removed, inserted or changed",
            )
        # Continue from what the checkpoint sealed, so one damaged range is reported once.
        self._digest = digest
        self._since_checkpoint = 0
        self.last_checkpoint_seq = seq
        self.last_checkpoint_digest = digest

    def finish(self, heads: Iterable[EntityHead]) -> list[Problem]:
        """Compare the chains with the entities table; return every problem, by ``seq``."""
        return self.finish_rows((h.ref, h.state, h.chain_len, h.chain_head) for h in heads)

    def finish_rows(self, heads: Iterable[Sequence[Any]]) -> list[Problem]:
        """:meth:`finish`, each head a row ``(ref, state, chain_len, chain_head)``; counts
        them in :attr:`entities`."""
        seen: set[str] = set()
        for ref, state, chain_len, chain_head in heads:
            self.entities += 1
            seen.add(ref)
            chain = self._chains.get(ref)
            if chain is None:
                self._problems.append(
                    Problem(
                        seq=None,
                        ref=ref,
                        reason="removed",
                        detail=f"{ref} exists but has no entry in the log",
                    )
                )
                continue
            if chain.length < chain_len:
                self._problems.append(
                    Problem(
                        seq=chain.last_seq,
                        ref=ref,
                        reason="removed",
                        detail=f"{ref} has {chain_len} entries, the log only "
                        f"{chain.length}: the entries after this one were removed",
                    )
                )
            elif chain.length > chain_len or chain.head != chain_head:
                self._problems.append(
                    Problem(
                        seq=chain.last_seq,
                        ref=ref,
                        reason="inserted",
                        detail=f"{ref} records {chain_len} entries ending in "
                        f"{chain_head[:12]}…, the log {chain.length} ending in "
                        f"{chain.head[:12]}…",
                    )
                )
            if chain.state is not None and chain.state != state:
                self._problems.append(
                    Problem(
                        seq=chain.last_seq,
                        ref=ref,
                        reason="state_mismatch",
                        detail=f"{ref} is {state} but its log ends in {chain.state}: "
                        "the state was changed without an audit entry",
                    )
                )
        for ref, chain in self._chains.items():
            if ref not in seen and ref != CHECKPOINT_REF:
                self._problems.append(
                    Problem(
                        seq=chain.last_seq,
                        ref=ref,
                        reason="inserted",
                        detail=f"the log has entries for {ref}, which does not exist",
                    )
                )
        return sorted(
            self._problems, key=lambda p: (p.seq is None, p.seq if p.seq is not None else 0)
        )
