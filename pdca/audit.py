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

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
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


def _hash_fields(*fields: str | int | None) -> str:
    """SHA-256 (hex) of the fields of an entry, times already in :func:`format_time`'s form."""
    text = "pdca-audit-v1|" + "".join(_field(value) for value in fields)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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

    def _problem(self, entry: AuditEntry | None, reason: str, detail: str) -> int:
        if len(self._problems) >= self._max:
            return -1
        self._problems.append(
            Problem(
                seq=None if entry is None else entry.seq,
                ref=None if entry is None else entry.ref,
                reason=reason,
                detail=detail,
            )
        )
        return len(self._problems) - 1

    def feed(self, entry: AuditEntry) -> None:
        self.entries += 1
        if entry.seq <= self._last_seq:
            self._problem(entry, "out_of_order", f"sequence {entry.seq} after {self._last_seq}")
        self._last_seq = max(self._last_seq, entry.seq)

        if entry.entity_seq < 1:
            self._problem(
                entry, "inserted", f"entry number {entry.entity_seq} cannot start a chain"
            )
            return
        recomputed = hash_of(entry)
        chain = self._chains.get(entry.ref)
        expected_seq = 1 if chain is None else chain.length + 1
        expected_prev = GENESIS if chain is None else chain.head

        if chain is not None and entry.entity_seq <= chain.length:
            if entry.entity_seq in chain.missing:
                # What looked like a removal earlier was a move: report it as such, at the
                # first entry that stands out of place.
                index = chain.missing.pop(entry.entity_seq)
                if index >= 0:
                    earlier = self._problems[index]
                    self._problems[index] = Problem(
                        seq=earlier.seq,
                        ref=earlier.ref,
                        reason="reordered",
                        detail=f"entries of {entry.ref} stand out of order: entry "
                        f"{entry.entity_seq} comes later in the log, at {entry.seq}",
                    )
            else:
                self._problem(
                    entry,
                    "inserted",
                    f"a second entry number {entry.entity_seq} of {entry.ref}",
                )
            return
        if entry.entity_seq > expected_seq:
            gap = range(expected_seq, entry.entity_seq)
            if chain is None:
                chain = _Chain(0, GENESIS, 0, None, {})
                self._chains[entry.ref] = chain
            index = self._problem(
                entry,
                "removed",
                f"entries {gap.start}..{gap.stop - 1} of {entry.ref} are missing before it"
                if len(gap) > 1
                else f"entry {gap.start} of {entry.ref} is missing before it",
            )
            for missing in gap:
                chain.missing[missing] = index
        elif recomputed != entry.hash:
            self._problem(
                entry,
                "edited",
                "the entry's content does not match its hash",
            )
        elif entry.prev_hash != expected_prev:
            self._problem(
                entry,
                "inserted",
                f"it does not link to entry {expected_seq - 1} of {entry.ref}",
            )

        if chain is None:
            chain = _Chain(0, GENESIS, 0, None, {})
            self._chains[entry.ref] = chain
        chain.length = entry.entity_seq
        chain.head = entry.hash
        chain.last_seq = entry.seq
        if entry.kind in STATE_KINDS and entry.to_state is not None:
            chain.state = entry.to_state

        if entry.kind == KIND_CHECKPOINT:
            self._check_checkpoint(entry)
        else:
            self._digest = fold_digest(self._digest, entry.hash)
            self._since_checkpoint += 1

    def _check_checkpoint(self, entry: AuditEntry) -> None:
        self.checkpoints += 1
        try:
            sealed = json.loads(entry.data)
            digest = str(sealed["digest"])
            count = int(sealed["count"])
        except (ValueError, KeyError, TypeError):
            self._problem(entry, "edited", "the checkpoint's data is unreadable")
            return
        if count != self._since_checkpoint or digest != self._digest:
            self._problem(
                entry,
                "checkpoint_mismatch",
                f"it sealed {count} entries with digest {digest[:12]}…, but the log holds "
                f"{self._since_checkpoint} with digest {self._digest[:12]}… since the previous "
                "checkpoint: entries were removed, inserted or changed",
            )
        # Continue from what the checkpoint sealed, so one damaged range is reported once.
        self._digest = digest
        self._since_checkpoint = 0
        self.last_checkpoint_seq = entry.seq
        self.last_checkpoint_digest = digest

    def finish(self, heads: Iterable[EntityHead]) -> list[Problem]:
        """Compare the chains with the entities table; return every problem, by ``seq``."""
        seen: set[str] = set()
        for head in heads:
            seen.add(head.ref)
            chain = self._chains.get(head.ref)
            if chain is None:
                self._problems.append(
                    Problem(
                        seq=None,
                        ref=head.ref,
                        reason="removed",
                        detail=f"{head.ref} exists but has no entry in the log",
                    )
                )
                continue
            if chain.length < head.chain_len:
                self._problems.append(
                    Problem(
                        seq=chain.last_seq,
                        ref=head.ref,
                        reason="removed",
                        detail=f"{head.ref} has {head.chain_len} entries, the log only "
                        f"{chain.length}: the entries after this one were removed",
                    )
                )
            elif chain.length > head.chain_len or chain.head != head.chain_head:
                self._problems.append(
                    Problem(
                        seq=chain.last_seq,
                        ref=head.ref,
                        reason="inserted",
                        detail=f"{head.ref} records {head.chain_len} entries ending in "
                        f"{head.chain_head[:12]}…, the log {chain.length} ending in "
                        f"{chain.head[:12]}…",
                    )
                )
            if chain.state is not None and chain.state != head.state:
                self._problems.append(
                    Problem(
                        seq=chain.last_seq,
                        ref=head.ref,
                        reason="state_mismatch",
                        detail=f"{head.ref} is {head.state} but its log ends in {chain.state}: "
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
