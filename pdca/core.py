"""The engine's core: the one way to change state.

Every change is one database transaction: lock the entity's row, re-check its state on that
row, check the actor's permission and the workflow's guards, write the new state and append
the audit entry (and, when someone listens, an outbox message), then commit. Listeners are
called after the commit, from the outbox. Refusals for permission or guards are audited too.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Self, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import audit, log
from .errors import (
    ConcurrentTransition,
    DuplicateEntity,
    GuardFailed,
    InvalidData,
    InvalidInput,
    PdcaError,
    PermissionDenied,
    StorageError,
    TransitionNotAllowed,
    UnknownActor,
    UnknownReference,
    UnknownTrigger,
)
from .storage import database
from .storage.models import AuditLog, Entity, EntityScope, Outbox
from .types import (
    SCHEDULER_ACTOR,
    SYSTEM_ACTOR,
    AuditEntry,
    EntityView,
    Person,
    Ref,
    Role,
    Transition,
    VerifyReport,
)
from .workflows import Registry, Subject, Workflow, default_registry, validate_fields
from .workflows.base import TransitionSpec, parse_text_fields

_E = cast(sa.Table, Entity.__table__)
_A = cast(sa.Table, AuditLog.__table__)
_S = cast(sa.Table, EntityScope.__table__)
_O = cast(sa.Table, Outbox.__table__)

#: Outbox channel of the events given to ``on_transition`` subscribers.
CHANNEL_TRANSITION = "transition"
#: How long a claimed outbox message stays with the process that claimed it.
OUTBOX_LEASE = timedelta(minutes=5)
MAX_NOTE = 4000

TransitionCallback = Callable[[Transition], None]
Clock = Callable[[], datetime]
#: What a single entity's write runs on: SQLAlchemy's Connection, or a pooled connection's
#: driver alone (a plain fire on SQLite, see EngineCore._on_driver).
_Conn = Connection | database.DriverConnection


#: The PostgreSQL advisory lock that orders sequence numbers against checkpoints.
SEQ_LOCK_KEY = 4242002


def _pg_next_seq() -> Any:
    """``nextval('audit_seq')`` taken under the shared checkpoint lock (PostgreSQL).

    The sequence value is computed in a subquery over the lock call, so the lock is
    always held before the value is taken.
    """
    lock = sa.select(
        sa.func.pg_advisory_xact_lock_shared(SEQ_LOCK_KEY).label("locked")
    ).subquery("seq_lock")
    return sa.select(sa.func.nextval("audit_seq")).select_from(lock).scalar_subquery()


def _pg_seq_block() -> Any:
    """``:n`` values of ``audit_seq``, taken under the shared checkpoint lock."""
    return sa.text(
        "SELECT nextval('audit_seq') FROM (SELECT pg_advisory_xact_lock_shared(:key)) AS l, "
        "generate_series(1, :n)"
    ).bindparams(key=SEQ_LOCK_KEY)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class _Actor:
    id: str
    role: Role
    municipality: str | None


def _actor_of(actor: str, state: str | None, attrs: str | None) -> _Actor:
    """The acting person from their entity row (state and attributes), or refuse them."""
    if not isinstance(actor, str) or not actor:
        raise UnknownActor(str(actor), "an actor is required: who is acting?")
    if actor == SCHEDULER_ACTOR:
        return _Actor(SCHEDULER_ACTOR, Role.SCHEDULER, None)
    if state is None or attrs is None:
        raise UnknownActor(actor)
    if state != "active":
        raise UnknownActor(actor, f"{actor} has been deactivated and may not act")
    return _active_actor(actor, attrs)


@functools.lru_cache(maxsize=1024)
def _active_actor(actor: str, attrs: str) -> _Actor:
    """An active person from their attributes: parsed once per version of them (every
    fire reads the actor's row; the row changes rarely)."""
    parsed = json.loads(attrs)
    return _Actor(actor, Role(parsed["role"]), parsed.get("municipality"))


def permission_problem(
    spec_roles: frozenset[Role],
    *,
    trigger: str,
    time_based: bool,
    actor: _Actor,
    scope: Sequence[str],
) -> str | None:
    """Why ``actor`` may not fire ``trigger`` on an entity of ``scope`` (None: allowed)."""
    if time_based and actor.role is not Role.SCHEDULER:
        return f"{trigger} happens on schedule; only the scheduler fires it"
    if actor.role not in spec_roles:
        roles = ", ".join(sorted(r.value for r in spec_roles))
        return f"{trigger} is for {roles}, not for {actor.role.value}"
    if actor.role is Role.STAFF:
        if not scope:
            return "it belongs to the whole region, not to one municipality"
        if actor.municipality not in scope:
            return f"it belongs to {', '.join(scope)}, not to {actor.municipality}"
    return None


class _Context:
    """What guards may read during a transition (see :class:`pdca.workflows.GuardContext`)."""

    def __init__(
        self,
        conn: _Conn,
        now: datetime,
        queries: Mapping[str, Any],
        bulk: _Bulk | None = None,
    ) -> None:
        self._conn = conn
        self._now = now
        self._queries = queries
        self._bulk = bulk

    @property
    def now(self) -> datetime:
        return self._now

    def query(self, name: str, **params: Any) -> Any:
        try:
            func = self._queries[name]
        except KeyError:
            raise PdcaError(f"no query named {name!r} is available to guards") from None
        if not isinstance(self._conn, Connection):  # pragma: no cover - see _on_driver
            raise PdcaError("a transition without guards or conditions ran a query")
        if self._bulk is not None:
            self._bulk.flush()  # a guard reads what this transaction wrote so far
        return func(self._conn, **params)


#: How many parsed references an engine keeps (each fire parses its reference).
_PARSED_REFS = 4096

#: How many audit sequence numbers a bulk write takes from PostgreSQL per round trip.
SEQ_BLOCK = 500


class _Bulk:
    """The writes of one bulk operation, sent with ``executemany``.

    Audit entries are collected and inserted together; entity-row moves are sent in runs
    of the same statement, in the order they were made (a row moved twice is moved twice,
    in order). Sequence numbers are taken in blocks: on SQLite by counting on from the
    largest (the write lock is held), on PostgreSQL from ``audit_seq`` in one round trip
    per block, under the shared checkpoint lock and after the rows are locked.
    """

    __slots__ = ("_conn", "_core", "_next", "_pool", "_want", "audit", "moves", "outbox")

    def __init__(self, core: EngineCore, conn: Connection, expected: int = 1) -> None:
        self._conn = conn
        self._core = core
        self.audit: list[dict[str, Any]] = []
        self.moves: list[tuple[tuple[bool, bool], dict[str, Any]]] = []
        self.outbox: list[dict[str, Any]] = []
        self._pool: list[int] = []
        self._next: int | None = None
        self._want = max(1, expected)

    def take_seq(self) -> int:
        if self._core._pg:
            if not self._pool:
                block = min(max(self._want, 1), SEQ_BLOCK)
                values = sorted(
                    int(v) for v in self._conn.execute(_pg_seq_block(), {"n": block}).scalars()
                )
                self._pool = values[::-1]
                self._want = max(1, self._want - block)
            return self._pool.pop()
        if self._next is None:
            self._next = self._core._next_seq(self._conn)
        value = self._next
        self._next += 1
        return value

    def recount(self) -> None:
        """Numbers were taken outside this collector: count on from the largest (SQLite),
        take new ones (PostgreSQL: those held are lower than the ones just taken, and a
        chain's entries must be numbered in the order they are written)."""
        self.flush()
        self._next = None
        self._pool = []

    def flush(self) -> None:
        if self.audit:
            self._conn.execute(self._core._insert_audit, self.audit)
            self.audit = []
        if self.moves:
            moves, self.moves = self.moves, []
            start = 0
            while start < len(moves):
                key = moves[start][0]
                end = start
                while end < len(moves) and moves[end][0] == key:
                    end += 1
                params = [m[1] for m in moves[start:end]]
                self._conn.execute(self._core._move_head[key], params)
                start = end
        if self.outbox:
            self._conn.execute(_O.insert(), self.outbox)
            self.outbox = []


@dataclass(slots=True)
class _Locked:
    """An entity row read under lock, with the next audit sequence number."""

    id: int
    ref: str
    workflow: Workflow
    state: str
    version: int
    scope: tuple[str, ...]
    fiscal_year: int | None
    attrs: dict[str, Any]
    chain_len: int
    chain_head: str
    next_seq: int
    actor_state: str | None = None
    actor_attrs: str | None = None


@dataclass(frozen=True, slots=True)
class _FireRequest:
    """A validated request to fire one trigger."""

    ref: str
    workflow: Workflow
    trigger: str
    specs: tuple[TransitionSpec, ...]
    note: str | None
    clean: dict[str, Any]
    data_json: str
    #: No transition of the trigger has a guard or a condition (none queries the database).
    plain: bool = False


@dataclass(frozen=True, slots=True)
class _Creation:
    """A validated request to create one entity."""

    ref: str
    workflow: Workflow
    roles: frozenset[Role]
    clean: dict[str, Any]
    initial: str
    scope: tuple[str, ...]
    fiscal_year: int | None
    data_json: str
    note: str | None


def _write_error(exc: sa.exc.SQLAlchemyError, ref: str, trigger: str) -> PdcaError:
    """What a write transaction's database error means: lock conflicts become
    :class:`ConcurrentTransition`, a duplicate created at once :class:`DuplicateEntity`."""
    if isinstance(exc, sa.exc.DBAPIError):
        if database.is_unique_violation(exc) and "entities" in str(exc.orig) and (
            "ref" in str(exc.orig)
        ):
            # Two writers created the same entity at once: the loser's is a duplicate.
            return DuplicateEntity(ref)
        if database.is_lock_conflict(exc) or database.is_unique_violation(exc):
            return ConcurrentTransition(
                ref=ref,
                trigger=trigger,
                state="unknown",
                detail="another change to it is in progress",
            )
        return StorageError(f"{trigger} {ref} failed: {database.describe_driver_error(exc)}")
    return StorageError(f"{trigger} {ref} failed: {exc}")


def _locked_of(row: Any, workflow: Workflow) -> _Locked:
    """An entity row (with the columns of ``entities``) as read under lock; ``next_seq``
    is left 0 for the writer to number its entry."""
    return _Locked(
        id=row.id,
        ref=row.ref,
        workflow=workflow,
        state=row.state,
        version=row.version,
        scope=_split_scope(row.scope),
        fiscal_year=row.fiscal_year,
        attrs=json.loads(row.attrs),
        chain_len=row.chain_len,
        chain_head=row.chain_head,
        next_seq=0,
    )


def _split_scope(scope: str) -> tuple[str, ...]:
    return tuple(filter(None, scope.split(";")))


def _clean_note(note: str | None) -> str | None:
    if note is None:
        return None
    if not isinstance(note, str):
        raise InvalidData("the note must be text", field="note")
    note = note.strip()
    if any(ord(ch) < 32 and ch not in "\t\n\r" for ch in note):
        raise InvalidData("the note must not contain control characters", field="note")
    if len(note) > MAX_NOTE:
        raise InvalidData(f"the note is longer than {MAX_NOTE} characters", field="note")
    return note or None


class EngineCore:
    """Entities, transitions, people, the audit log and the outbox: no plan knowledge.

    :class:`pdca.Engine` adds the plan's operations on top of this core.
    """

    def __init__(
        self,
        db: sa.Engine,
        *,
        registry: Registry | None = None,
        clock: Clock | None = None,
        queries: Mapping[str, Any] | None = None,
        simulation: bool = False,
        virtual_now: datetime | None = None,
    ) -> None:
        self._db = db
        #: A training or simulation database: business time is a virtual clock kept in
        #: the database; audit entries carry the real time and the virtual time.
        self.simulation = simulation
        self._virtual_now = virtual_now
        self._registry = registry or default_registry()
        self._clock = clock or (self._virtual_clock if simulation else _utcnow)
        self._queries: dict[str, Any] = dict(queries or {})
        self._subscribers: list[TransitionCallback] = []
        self._delivering = threading.local()
        self._pinned = threading.local()
        self._parsed: dict[str, tuple[Ref, Workflow]] = {}
        self._pg = db.dialect.name == "postgresql"
        self._log = log.get_logger()
        self._lock_stmt = self._build_lock_statement()
        # The hot statements, built once: building and cache-keying a statement per call
        # cost more than executing it.
        self._insert_audit = _A.insert()
        self._move_head: dict[tuple[bool, bool], sa.Update] = {}
        for with_state in (False, True):
            for with_attrs in (False, True):
                values: dict[str, Any] = {
                    "chain_len": sa.bindparam("new_len"),
                    "chain_head": sa.bindparam("new_head"),
                    "updated_at": sa.bindparam("new_at", type_=_E.c.updated_at.type),
                }
                if with_state:
                    values.update(
                        state=sa.bindparam("new_state"),
                        version=sa.bindparam("new_version"),
                        overdue_since=None,
                    )
                if with_attrs:
                    values.update(
                        attrs=sa.bindparam("new_attrs"), version=sa.bindparam("new_version")
                    )
                self._move_head[(with_state, with_attrs)] = (
                    _E.update()
                    .where(_E.c.id == sa.bindparam("row_id"),
                           _E.c.chain_len == sa.bindparam("old_len"))
                    .values(**values)
                )
        # A single fire runs these three on the driver's cursor (see DriverStatement): per
        # statement SQLAlchemy's execution path costs more than SQLite takes to run it.
        # Bulk writes keep ``executemany`` through SQLAlchemy.
        self._lock_driver = database.DriverStatement(self._lock_stmt, db)
        self._insert_audit_driver = database.DriverStatement(self._insert_audit, db)
        self._move_head_driver = {
            key: database.DriverStatement(stmt, db)
            for key, stmt in self._move_head.items()
        }

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        url: str = "sqlite:///pdca.db",
        *,
        migrate: bool = False,
        registry: Registry | None = None,
        lock_timeout: float = database.LOCK_TIMEOUT_S,
        clock: Clock | None = None,
    ) -> Self:
        """Open the database at ``url`` (``sqlite:///FILE`` or ``postgresql://...``).

        With ``migrate=True`` the schema is created or upgraded first; otherwise a database
        without the current schema raises :class:`~pdca.errors.SchemaOutdated`.
        ``clock`` replaces the real clock (tests and simulations).
        """
        db = database.create_engine(url, lock_timeout=lock_timeout)
        try:
            if migrate:
                database.upgrade(db)
            database.check_schema(db)
            settings = database.read_settings(db, ("simulation", "virtual_now"))
        except BaseException:
            db.dispose()
            raise
        virtual = settings.get("virtual_now")
        return cls(
            db,
            registry=registry,
            clock=clock,
            simulation=settings.get("simulation") == "true",
            virtual_now=datetime.fromisoformat(virtual) if virtual else None,
        )

    def close(self) -> None:
        """Release every pooled connection."""
        self._db.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def registry(self) -> Registry:
        return self._registry

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return str(self._db.dialect.name)

    def now(self) -> datetime:
        """The engine's current time (UTC): the virtual clock's in a simulation database."""
        return self._clock()

    def _virtual_clock(self) -> datetime:
        pinned: datetime | None = getattr(self._pinned, "now", None)
        if pinned is not None:
            return pinned  # read once by the write transaction under way
        # Read each time: another process (a daemon, `pdca simulate`) may have moved it.
        settings = database.read_settings(self._db, ("virtual_now",))
        if "virtual_now" in settings:
            self._virtual_now = datetime.fromisoformat(settings["virtual_now"])
        if self._virtual_now is None:
            raise PdcaError("this simulation database has no virtual time yet")
        return self._virtual_now

    # ------------------------------------------------------------------ internals

    def _build_lock_statement(self) -> sa.Select[Any]:
        """Lock the entity row and, in the same round trip, read the acting person and
        take the next audit sequence number."""
        if self._pg:
            next_seq: Any = _pg_next_seq()
        else:
            next_seq = (
                sa.select(sa.func.coalesce(sa.func.max(_A.c.seq), 0) + 1).scalar_subquery()
            )
        person = _E.alias("person")
        columns = ("id", "workflow", "state", "version", "scope", "fiscal_year", "attrs",
                   "chain_len", "chain_head")
        target: Any = _E
        if self._pg:
            # Lock first, in a subquery, and take the sequence number in the outer query:
            # the number is then taken only once the row lock is held, so the entries of
            # one chain get increasing numbers in the order they are written.
            target = (
                sa.select(*(_E.c[c] for c in columns))
                .where(_E.c.ref == sa.bindparam("ref"))
                .with_for_update()
                .subquery("locked")
            )
            # The acting person's row is read FOR SHARE: a row read under a lock is re-read
            # after any wait, so someone deactivated while this waited for the entity's lock
            # is seen as deactivated (and cannot be deactivated while acting).
            acting: Any = (
                sa.select(person.c.state, person.c.attrs)
                .where(person.c.ref == sa.bindparam("actor_ref"))
                .with_for_update(read=True)
                .subquery("acting")
            )
            joined = target.outerjoin(acting, sa.true())
        else:
            acting = person
            joined = target.outerjoin(person, person.c.ref == sa.bindparam("actor_ref"))
        stmt = sa.select(
            *(target.c[c] for c in columns),
            acting.c.state.label("actor_state"),
            acting.c.attrs.label("actor_attrs"),
            next_seq.label("next_seq"),
        ).select_from(joined)
        if not self._pg:
            stmt = stmt.where(_E.c.ref == sa.bindparam("ref"))
        return stmt

    def _lock(self, conn: _Conn, ref: str, actor: str | None = None) -> _Locked | None:
        row = self._lock_driver.one_or_none(
            conn, {"ref": ref, "actor_ref": f"person:{actor}" if actor else ""}
        )
        if row is None:
            return None
        # The columns of _build_lock_statement, in order.
        (entity_id, workflow, state, version, scope, fiscal_year, attrs, chain_len, chain_head,
         actor_state, actor_attrs, next_seq) = row
        return _Locked(
            id=entity_id,
            ref=ref,
            workflow=self._registry.get(workflow),
            state=state,
            version=version,
            scope=_split_scope(scope),
            fiscal_year=fiscal_year,
            attrs=json.loads(attrs),
            chain_len=chain_len,
            chain_head=chain_head,
            next_seq=int(next_seq),
            actor_state=actor_state,
            actor_attrs=actor_attrs,
        )

    def _lock_many(self, conn: Connection, refs: Sequence[str]) -> dict[str, _Locked]:
        """Lock the rows of ``refs`` (those that exist), in id order so that two bulk
        writers never wait on each other in a cycle. ``next_seq`` is left 0: bulk writers
        number their entries themselves."""
        wanted = sorted(set(refs))
        columns = [_E.c[c] for c in ("id", "ref", "workflow", "state", "version", "scope",
                                     "fiscal_year", "attrs", "chain_len", "chain_head")]
        found: dict[str, _Locked] = {}
        for start in range(0, len(wanted), 500):
            stmt = sa.select(*columns).where(_E.c.ref.in_(wanted[start:start + 500]))
            stmt = stmt.order_by(_E.c.id)
            if self._pg:
                stmt = stmt.with_for_update()
            for row in conn.execute(stmt):
                found[row.ref] = _locked_of(row, self._registry.get(row.workflow))
        return found

    def _next_seq(self, conn: Connection) -> int:
        if self._pg:
            return int(conn.execute(sa.select(_pg_next_seq())).scalar_one())
        value = conn.execute(sa.select(sa.func.coalesce(sa.func.max(_A.c.seq), 0) + 1))
        return int(value.scalar_one())

    def _actor(self, conn: Connection, actor: str) -> _Actor:
        if not isinstance(actor, str) or not actor:
            raise UnknownActor(str(actor), "an actor is required: who is acting?")
        if actor == SCHEDULER_ACTOR:
            return _Actor(SCHEDULER_ACTOR, Role.SCHEDULER, None)
        stmt = sa.select(_E.c.state, _E.c.attrs).where(_E.c.ref == f"person:{actor}")
        if self._pg:
            stmt = stmt.with_for_update(read=True)  # see _build_lock_statement
        row = conn.execute(stmt).one_or_none()
        return _actor_of(actor, None if row is None else row.state,
                         None if row is None else row.attrs)

    def _append(
        self,
        conn: _Conn,
        *,
        seq: int,
        ref: str,
        entity_seq: int,
        prev_hash: str,
        kind: str,
        at: datetime,
        actor: _Actor | str,
        trigger: str,
        from_state: str | None,
        to_state: str | None,
        note: str | None,
        data: str,
        workflow_version: str,
        fiscal_year: int | None,
        bulk: _Bulk | None = None,
    ) -> str:
        actor_id, role = (
            (actor, SYSTEM_ACTOR) if isinstance(actor, str) else (actor.id, actor.role.value)
        )
        virtual_at: datetime | None = None
        if self.simulation:
            # Never backdated, never ahead: the entry's time is the real time; the
            # business time of a simulation is kept beside it.
            at, virtual_at = _utcnow(), at
        entry: dict[str, Any] = {
            "seq": seq,
            "ref": ref,
            "entity_seq": entity_seq,
            "kind": kind,
            "at": at,
            "virtual_at": virtual_at,
            "actor": actor_id,
            "role": role,
            "fiscal_year": fiscal_year,
            "trigger": trigger,
            "from_state": from_state,
            "to_state": to_state,
            "note": note,
            "data": data,
            "workflow_version": workflow_version,
            "prev_hash": prev_hash,
        }
        entry["hash"] = digest = audit.entry_hash(**entry)
        if bulk is not None:
            bulk.audit.append(entry)
        else:
            self._insert_audit_driver.rowcount(conn, entry)
        return digest

    def _append_to(
        self,
        conn: _Conn,
        row: _Locked,
        *,
        kind: str,
        at: datetime,
        actor: _Actor,
        trigger: str,
        to_state: str,
        note: str | None,
        data: str,
        attrs: Mapping[str, Any] | None = None,
        scope: tuple[str, ...] | None = None,
        bulk: _Bulk | None = None,
    ) -> str:
        """Append an entry to a locked entity's chain and move its head (and state).

        With ``bulk`` the writes are collected (sent at its flush) and ``row`` is moved on
        in memory, so that the same row may be written again in the same operation."""
        digest = self._append(
            conn,
            seq=row.next_seq,
            ref=row.ref,
            entity_seq=row.chain_len + 1,
            prev_hash=row.chain_head,
            kind=kind,
            at=at,
            actor=actor,
            trigger=trigger,
            from_state=row.state,
            to_state=to_state,
            note=note,
            data=data,
            workflow_version=row.workflow.version,
            fiscal_year=row.fiscal_year,
            bulk=bulk,
        )
        transition = kind == audit.KIND_TRANSITION
        params: dict[str, Any] = {
            "row_id": row.id,
            "old_len": row.chain_len,
            "new_len": row.chain_len + 1,
            "new_head": digest,
            "new_at": at,
            "new_version": row.version + 1,
        }
        if transition:
            params["new_state"] = to_state
        if attrs is not None:
            params["new_attrs"] = audit.canonical_json(dict(attrs))
        if bulk is not None:
            assert scope is None, "a scope change is not written in bulk"
            bulk.moves.append(((transition, attrs is not None), params))
            row.chain_len += 1
            row.chain_head = digest
            if transition or attrs is not None:
                row.version += 1
            if transition:
                row.state = to_state
            if attrs is not None:
                row.attrs = dict(attrs)
            return digest
        if scope is not None:
            assert isinstance(conn, Connection), "a scope change goes through SQLAlchemy"
            moved = conn.execute(
                self._move_head[(transition, attrs is not None)].values(scope=";".join(scope)),
                params,
            ).rowcount
        else:
            moved = self._move_head_driver[(transition, attrs is not None)].rowcount(conn, params)
        if moved != 1:  # pragma: no cover - the row lock makes this impossible
            raise ConcurrentTransition(
                ref=row.ref, trigger=trigger, state=row.state, detail="its row changed under us"
            )
        return digest

    def _audit_refusal(
        self,
        conn: _Conn,
        row: _Locked,
        who: _Actor,
        trigger: str,
        reason: str,
        data_json: str,
        now: datetime,
    ) -> None:
        """Append a ``refused`` entry to a locked entity's chain; its state stays."""
        self._append_to(
            conn,
            row,
            kind=audit.KIND_REFUSED,
            at=now,
            actor=who,
            trigger=trigger,
            to_state=row.state,
            note=reason,
            data=data_json,
        )

    @contextlib.contextmanager
    def _writing(self, ref: str, trigger: str) -> Iterator[Connection]:
        """A write transaction whose lock conflicts become :class:`ConcurrentTransition`."""
        try:
            with database.write_transaction(self._db) as conn:
                if not self.simulation:
                    yield conn
                    return
                # The virtual clock, read once on this transaction's own connection (and
                # snapshot), instead of on a connection of its own at every entry.
                value = conn.execute(
                    sa.text("SELECT value FROM settings WHERE key = 'virtual_now'")
                ).scalar_one_or_none()
                outer = getattr(self._pinned, "now", None)
                if value is not None:
                    self._virtual_now = datetime.fromisoformat(value)
                    self._pinned.now = self._virtual_now
                try:
                    yield conn
                finally:
                    self._pinned.now = outer
        except sa.exc.SQLAlchemyError as exc:
            raise _write_error(exc, ref, trigger) from exc

    @contextlib.contextmanager
    def _writing_on_driver(self, ref: str, trigger: str) -> Iterator[database.DriverConnection]:
        """:meth:`_writing` for a transaction that runs nothing but DriverStatements (SQLite,
        no simulation clock): on the driver of a pooled connection, without SQLAlchemy's
        Connection (see :meth:`_on_driver`)."""
        try:
            with database.driver_write_transaction(self._db) as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise _write_error(exc, ref, trigger) from exc

    def _on_driver(self, request: _FireRequest) -> bool:
        """Whether firing ``request`` can run on the driver alone: everything it may do
        then goes through the hot DriverStatements. Not when a guard or condition may query
        the database, a subscriber's outbox message is written, a simulation's clock is read
        in the transaction, or listeners watch SQLAlchemy's connections."""
        return (
            request.plain
            and not self._pg
            and not self.simulation
            and not self._subscribers
            and not database.listened(self._db)
        )

    def _parse(self, ref: str) -> tuple[Ref, Workflow]:
        if not isinstance(ref, str):
            raise UnknownReference(str(ref), f"a reference must be text, not {ref!r}")
        known = self._parsed.get(ref)
        if known is not None:
            return known
        parsed = Ref.parse(ref)
        result = parsed, self._registry.resolve(parsed.kind, parsed.key)
        # Workflows are only ever added to a registry, never replaced: a reference, once
        # resolved, keeps resolving to the same workflow.
        if len(self._parsed) >= _PARSED_REFS:
            self._parsed.clear()
        self._parsed[ref] = result
        return result

    # ------------------------------------------------------------------ changing state

    def parse_data(self, ref: str, trigger: str, pairs: Mapping[str, str]) -> dict[str, Any]:
        """Typed data for ``trigger`` from ``KEY=VALUE`` texts (as the CLI's ``--set``)."""
        parsed, workflow = self._parse(ref)
        specs = workflow.specs_for(trigger)
        if not specs:
            raise UnknownTrigger(str(parsed), trigger, workflow.triggers)
        return parse_text_fields(specs[0].fields, pairs, what=trigger)

    def fire(
        self,
        ref: str,
        trigger: str,
        *,
        actor: str,
        note: str | None = None,
        data: Mapping[str, Any] | None = None,
        expected_version: int | None = None,
    ) -> Transition:
        """Fire ``trigger`` on the entity ``ref`` on behalf of ``actor``.

        Returns the :class:`~pdca.Transition` that happened. Raises
        :class:`~pdca.TransitionNotAllowed`, :class:`~pdca.GuardFailed`,
        :class:`~pdca.PermissionDenied` (audited), :class:`~pdca.ConcurrentTransition`
        (another change won; also when ``expected_version`` is given and no longer current)
        or an :class:`~pdca.InvalidInput` (nothing written).
        """
        request = self._prepare_fire(ref, trigger, note, data)
        writing: contextlib.AbstractContextManager[_Conn] = (
            self._writing_on_driver(request.ref, trigger)
            if self._on_driver(request)
            else self._writing(request.ref, trigger)
        )
        with writing as conn:
            row = self._lock(conn, request.ref, actor)
            if row is None:
                raise UnknownReference(request.ref)
            who = _actor_of(actor, row.actor_state, row.actor_attrs)
            result, refusal = self._fire_in(conn, request, who, expected_version, row)
        if refusal is not None:
            if log.enabled():
                self._log.info(
                    "refused", ref=request.ref, trigger=trigger, actor=actor, reason=str(refusal)
                )
            raise refusal
        assert result is not None
        self._after_commit(result)
        return result

    def fire_many(
        self,
        requests: Sequence[tuple[str, str, Mapping[str, Any] | None]],
        *,
        actor: str,
        note: str | None = None,
    ) -> list[Transition]:
        """Fire several ``(ref, trigger, data)`` in one transaction: all of them or none.

        Any refusal (even one that would be audited on its own) rolls everything back and
        is raised; nothing is written.
        """
        prepared = [self._prepare_fire(ref, trigger, note, data) for ref, trigger, data in requests]
        results: list[Transition] = []
        with self._writing("(many)", "fire") as conn:
            who = self._actor(conn, actor)
            rows = self._lock_many(conn, [r.ref for r in prepared])
            bulk = _Bulk(self, conn, len(prepared))
            for request in prepared:
                row = rows.get(request.ref)
                if row is None:
                    raise UnknownReference(request.ref)
                row.next_seq = bulk.take_seq()
                result, refusal = self._fire_in(conn, request, who, None, row, bulk)
                if refusal is not None:
                    raise refusal
                assert result is not None
                results.append(result)
            bulk.flush()
        for result in results:
            if log.enabled():
                self._log.info(
                    "transition", ref=result.ref, trigger=result.trigger,
                    from_state=result.from_state, to_state=result.to_state,
                    actor=result.actor, seq=result.seq,
                )
        if self._subscribers:
            self.deliver_pending()
        return results

    def _prepare_fire(
        self, ref: str, trigger: str, note: str | None, data: Mapping[str, Any] | None
    ) -> _FireRequest:
        parsed, workflow = self._parse(ref)
        ref = str(parsed)
        specs = workflow.specs_for(trigger) if isinstance(trigger, str) else []
        if not specs:
            raise UnknownTrigger(ref, str(trigger), workflow.triggers)
        fields = specs[0].fields
        if data or any(f.required for f in fields):
            clean = validate_fields(fields, data, what=f"{trigger}")
        else:
            clean = {}  # what validating no data against fields none of which is required gives
        return _FireRequest(
            ref=ref,
            workflow=workflow,
            trigger=trigger,
            specs=tuple(specs),
            note=_clean_note(note),
            clean=clean,
            # No data is the common case: its one text form, without a JSON encoder run.
            data_json=audit.canonical_json(clean) if clean else "{}",
            plain=not any(s.guards or s.when is not None for s in specs),
        )

    def _fire_in(
        self,
        conn: _Conn,
        request: _FireRequest,
        who: _Actor,
        expected_version: int | None,
        row: _Locked | None = None,
        bulk: _Bulk | None = None,
    ) -> tuple[Transition | None, PdcaError | None]:
        """One transition inside an open write transaction: the result, or the refusal
        (already audited when it is a permission or guard refusal)."""
        ref, trigger, workflow = request.ref, request.trigger, request.workflow
        if row is None:
            row = self._lock(conn, ref)
        if row is None:
            raise UnknownReference(ref)
        if expected_version is not None and expected_version != row.version:
            raise ConcurrentTransition(
                ref=ref,
                trigger=trigger,
                state=row.state,
                detail=f"it changed since you read it (version {expected_version}, "
                f"now {row.version}, {row.state})",
            )
        now = self._clock()
        found = workflow.spec_from(trigger, row.state)
        spec = found or request.specs[0]
        problem = permission_problem(
            workflow.roles(row.attrs, spec),
            trigger=trigger,
            time_based=spec.time_based,
            actor=who,
            scope=row.scope,
        )
        if problem is not None:
            if bulk is not None:
                bulk.flush()
            self._audit_refusal(conn, row, who, trigger, problem, request.data_json, now)
            return None, PermissionDenied(
                ref=ref,
                trigger=trigger,
                state=row.state,
                actor=who.id,
                role=who.role.value,
                reason=problem,
            )
        if found is None:
            raise TransitionNotAllowed(
                ref=ref,
                trigger=trigger,
                state=row.state,
                allowed=self._allowed(conn, row, who, now, check_guards=False),
            )
        subject = Subject(
            ref=ref,
            state=row.state,
            attrs=row.attrs,
            scope=row.scope,
            fiscal_year=row.fiscal_year,
            data=request.clean,
            at=now,
        )
        reasons = workflow.fire(subject, trigger, _Context(conn, now, self._queries, bulk))
        if reasons:
            if bulk is not None:
                bulk.flush()
            self._audit_refusal(conn, row, who, trigger, "; ".join(reasons),
                                request.data_json, now)
            return None, GuardFailed(ref=ref, trigger=trigger, state=row.state, reasons=reasons)
        result = self._commit_transition(
            conn, row, found, subject, who, now, request.note, request.clean, request.data_json,
            bulk,
        )
        return result, None

    def _commit_transition(
        self,
        conn: _Conn,
        row: _Locked,
        spec: TransitionSpec,
        subject: Subject,
        who: _Actor,
        now: datetime,
        note: str | None,
        clean: Mapping[str, Any],
        data_json: str,
        bulk: _Bulk | None = None,
    ) -> Transition:
        attrs: dict[str, Any] | None = None
        if spec.effect is not None:
            attrs = {**row.attrs, **spec.effect(subject)}
        seq, from_state = row.next_seq, row.state
        digest = self._append_to(
            conn,
            row,
            kind=audit.KIND_TRANSITION,
            at=now,
            actor=who,
            trigger=spec.trigger,
            to_state=subject.state,
            note=note,
            data=data_json,
            attrs=attrs,
            bulk=bulk,
        )
        result = Transition(
            seq=seq,
            ref=row.ref,
            workflow=row.workflow.name,
            trigger=spec.trigger,
            from_state=from_state,
            to_state=subject.state,
            actor=who.id,
            role=who.role.value,
            at=now,
            note=note,
            data=dict(clean),
            hash=digest,
        )
        # On the driver alone only when nobody subscribed as the fire began (_on_driver):
        # one subscribing meanwhile gets the events of the fires that begin after.
        if self._subscribers and isinstance(conn, Connection):
            self._enqueue(conn, result, now)
        return result

    def _prepare_creation(
        self, ref: str, data: Mapping[str, Any], note: str | None
    ) -> _Creation:
        parsed, workflow = self._parse(ref)
        ref = str(parsed)
        create = workflow.spec.create
        if create is None:
            raise InvalidInput(f"{workflow.name} entities are not created directly")
        clean = validate_fields(create.fields, data, what=f"creating {ref}")
        if create.key_of is not None and create.key_of(clean) != parsed.key:
            raise InvalidInput(
                f"{ref} does not match its data: expected {workflow.kind}:{create.key_of(clean)}"
            )
        return _Creation(
            ref=ref,
            workflow=workflow,
            roles=create.roles,
            clean=clean,
            initial=create.initial(clean),
            scope=create.scope(clean),
            fiscal_year=create.fiscal_year(clean),
            data_json=audit.canonical_json(clean),
            note=_clean_note(note),
        )

    def create(
        self,
        ref: str,
        *,
        actor: str,
        data: Mapping[str, Any],
        note: str | None = None,
        write: Callable[[Connection, int], None] | None = None,
    ) -> Transition:
        """Create the entity ``ref`` from ``data`` (validated by its workflow), audited.

        ``write(conn, entity_id)`` may write domain rows in the same transaction.
        """
        item = self._prepare_creation(ref, data, note)
        refusal: PermissionDenied | None = None
        with self._writing(item.ref, "create") as conn:
            who = self._creator(conn, actor)
            if conn.execute(sa.select(_E.c.id).where(_E.c.ref == item.ref)).first() is not None:
                raise DuplicateEntity(item.ref)
            now = self._clock()
            problem = permission_problem(
                item.roles, trigger="create", time_based=False, actor=who, scope=item.scope
            )
            seq = self._next_seq(conn)
            if problem is not None:
                refusal = PermissionDenied(
                    ref=item.ref,
                    trigger="create",
                    state="none",
                    actor=who.id,
                    role=who.role.value,
                    reason=problem,
                )
                self._refuse_creation(conn, who, seq, item.ref, problem, item.data_json, now)
            else:
                result = self._insert_entity(conn, item, who, seq, now)
                if write is not None:
                    write(conn, self._entity_id(conn, item.ref))
        if refusal is not None:
            raise refusal
        self._after_commit(result)
        return result

    def create_many(
        self,
        items: Sequence[tuple[str, Mapping[str, Any]]],
        *,
        actor: str,
        note: str | None = None,
        skip_existing: bool = False,
    ) -> list[Transition]:
        """Create several entities in one transaction: all of them or none.

        Every item is validated before anything is written; a refusal of any item
        (permission, duplicate) writes nothing. With ``skip_existing`` an entity that
        exists already is left alone instead (for idempotent set-up such as opening a
        fiscal year).
        """
        prepared = [self._prepare_creation(ref, data, note) for ref, data in items]
        seen: set[str] = set()
        for item in prepared:
            if item.ref in seen:
                raise DuplicateEntity(item.ref)
            seen.add(item.ref)
        with self._writing("(many)", "create") as conn:
            who = self._creator(conn, actor)
            results = self._create_many_in(conn, prepared, who, skip_existing=skip_existing)
        if log.enabled():
            self._log.info("created", count=len(results), actor=actor)
        if self._subscribers:
            self.deliver_pending()
        return results

    def _create_many_in(
        self,
        conn: Connection,
        prepared: Sequence[_Creation],
        who: _Actor,
        *,
        skip_existing: bool,
    ) -> list[Transition]:
        existing = self._existing_refs(conn, [i.ref for i in prepared])
        if existing and not skip_existing:
            raise DuplicateEntity(sorted(existing)[0])
        now = self._clock()
        todo = [item for item in prepared if item.ref not in existing]
        for item in todo:
            problem = permission_problem(
                item.roles, trigger="create", time_based=False, actor=who, scope=item.scope
            )
            if problem is not None:
                raise PermissionDenied(
                    ref=item.ref,
                    trigger="create",
                    state="none",
                    actor=who.id,
                    role=who.role.value,
                    reason=problem,
                )
        if not todo:
            return []
        # Every entry first (hashes need nothing from the rows), then the rows with one
        # executemany each: entries, entities (their new ids returned in order), scopes.
        bulk = _Bulk(self, conn, len(todo))
        results = []
        rows = []
        for item in todo:
            seq = bulk.take_seq()
            digest, row = self._creation_entry(conn, item, who, seq, now, bulk)
            rows.append(row)
            results.append(self._created(item, who, seq, now, digest))
        bulk.flush()
        if self._subscribers:
            for result in results:
                self._enqueue(conn, result, now)
        ids = conn.execute(
            _E.insert().returning(_E.c.id, sort_by_parameter_order=True), rows
        ).scalars().all()
        scopes = [
            {"entity_id": entity_id, "municipality": m}
            for entity_id, item in zip(ids, todo, strict=True)
            for m in item.scope
        ]
        if scopes:
            conn.execute(_S.insert(), scopes)
        return results

    def _existing_refs(self, conn: Connection, refs: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(refs), 500):
            chunk = list(refs[start : start + 500])
            found.update(
                r.ref for r in conn.execute(sa.select(_E.c.ref).where(_E.c.ref.in_(chunk)))
            )
        return found

    def _entity_id(self, conn: Connection, ref: str) -> int:
        return int(conn.execute(sa.select(_E.c.id).where(_E.c.ref == ref)).scalar_one())

    def _creator(self, conn: Connection, actor: str) -> _Actor:
        if actor == SYSTEM_ACTOR:
            return _Actor(SYSTEM_ACTOR, Role.ADMIN, None)
        return self._actor(conn, actor)

    def _creation_entry(
        self,
        conn: Connection,
        item: _Creation,
        who: _Actor,
        seq: int,
        now: datetime,
        bulk: _Bulk | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """Append the ``create`` entry that starts ``item``'s chain (collected by ``bulk``
        if given); return its hash and the new entity's row."""
        digest = self._append(
            conn,
            seq=seq,
            ref=item.ref,
            entity_seq=1,
            prev_hash=audit.GENESIS,
            kind=audit.KIND_CREATE,
            at=now,
            actor=who.id if who.id == SYSTEM_ACTOR else who,
            trigger="create",
            from_state=None,
            to_state=item.initial,
            note=item.note,
            data=item.data_json,
            workflow_version=item.workflow.version,
            fiscal_year=item.fiscal_year,
            bulk=bulk,
        )
        row = {
            "ref": item.ref,
            "workflow": item.workflow.name,
            "state": item.initial,
            "version": 1,
            "scope": ";".join(item.scope),
            "fiscal_year": item.fiscal_year,
            "attrs": item.data_json,
            "overdue_since": None,
            "chain_len": 1,
            "chain_head": digest,
            "created_at": now,
            "updated_at": now,
        }
        return digest, row

    def _insert_entity(
        self, conn: Connection, item: _Creation, who: _Actor, seq: int, now: datetime
    ) -> Transition:
        digest, row = self._creation_entry(conn, item, who, seq, now)
        entity_id = conn.execute(_E.insert().returning(_E.c.id), row).scalar_one()
        if item.scope:
            conn.execute(
                _S.insert(), [{"entity_id": entity_id, "municipality": m} for m in item.scope]
            )
        result = self._created(item, who, seq, now, digest)
        if self._subscribers:
            self._enqueue(conn, result, now)
        return result

    @staticmethod
    def _created(item: _Creation, who: _Actor, seq: int, now: datetime, digest: str
                 ) -> Transition:
        return Transition(
            seq=seq,
            ref=item.ref,
            workflow=item.workflow.name,
            trigger="create",
            from_state=None,
            to_state=item.initial,
            actor=who.id,
            role=who.role.value,
            at=now,
            note=item.note,
            data=item.clean,
            hash=digest,
        )

    def _refuse_creation(
        self,
        conn: Connection,
        who: _Actor,
        seq: int,
        ref: str,
        problem: str,
        data_json: str,
        now: datetime,
    ) -> None:
        """Audit a refused creation on the acting person's own chain (the target has none)."""
        row = self._lock(conn, f"person:{who.id}")
        if row is None:
            return
        row.next_seq = seq
        self._audit_refusal(conn, row, who, "create", f"create {ref}: {problem}", data_json, now)

    def record(
        self,
        ref: str,
        name: str,
        *,
        actor: str,
        data: Mapping[str, Any],
        roles: frozenset[Role],
        note: str | None = None,
        attrs: Mapping[str, Any] | Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
        scope: tuple[str, ...] | None = None,
        write: Callable[[Connection, int], None] | None = None,
    ) -> Transition:
        """Record data about an entity without changing its state (audited, one transaction).

        ``attrs`` are merged into the entity's attributes (or, given as a function of the
        current attributes, return what to merge); ``write(conn, entity_id)`` may write
        domain rows in the same transaction. Library code builds on this (evaluations, role
        changes); it checks ``roles`` and scope.
        """
        parsed, _ = self._parse(ref)
        ref = str(parsed)
        clean_note = _clean_note(note)
        data_json = audit.canonical_json(dict(data))
        refusal: PermissionDenied | None = None
        with self._writing(ref, name) as conn:
            row = self._lock(conn, ref)
            if row is None:
                raise UnknownReference(ref)
            who = self._actor(conn, actor)
            now = self._clock()
            problem = permission_problem(
                roles, trigger=name, time_based=False, actor=who, scope=row.scope
            )
            if problem is not None:
                refusal = PermissionDenied(
                    ref=ref,
                    trigger=name,
                    state=row.state,
                    actor=who.id,
                    role=who.role.value,
                    reason=problem,
                )
                self._audit_refusal(conn, row, who, name, problem, data_json, now)
            else:
                if write is not None:
                    write(conn, row.id)
                update = attrs(row.attrs) if callable(attrs) else attrs
                new_attrs = None if update is None else {**row.attrs, **update}
                digest = self._append_to(
                    conn,
                    row,
                    kind=audit.KIND_RECORD,
                    at=now,
                    actor=who,
                    trigger=name,
                    to_state=row.state,
                    note=clean_note,
                    data=data_json,
                    attrs=new_attrs,
                    scope=scope,
                )
                if scope is not None:
                    conn.execute(_S.delete().where(_S.c.entity_id == row.id))
                    if scope:
                        conn.execute(
                            _S.insert(), [{"entity_id": row.id, "municipality": m} for m in scope]
                        )
                result = Transition(
                    seq=row.next_seq,
                    ref=ref,
                    workflow=row.workflow.name,
                    trigger=name,
                    from_state=row.state,
                    to_state=row.state,
                    actor=who.id,
                    role=who.role.value,
                    at=now,
                    note=clean_note,
                    data=dict(data),
                    hash=digest,
                )
        if refusal is not None:
            raise refusal
        if log.enabled():
            self._log.info("recorded", ref=ref, record=name, actor=actor, seq=result.seq)
        return result

    def record_many(
        self,
        items: Sequence[tuple[str, Mapping[str, Any]]],
        name: str,
        *,
        actor: str,
        roles: frozenset[Role],
        note: str | None = None,
        check: Callable[[Any], None] | None = None,
        write: Callable[[Connection, Sequence[tuple[int, Mapping[str, Any]]]], None]
        | None = None,
    ) -> list[Transition]:
        """Record data about many entities in one transaction (all or none), as
        :meth:`record` does for one: ``(ref, data)`` items, each audited on its entity.

        ``check(row)`` may refuse an item (raise); ``write(conn, [(entity_id, data), ...])``
        writes the domain rows. A refusal of any item writes nothing and is raised.
        """
        prepared = []
        for ref, data in items:
            parsed, _ = self._parse(ref)
            prepared.append((str(parsed), dict(data), audit.canonical_json(dict(data))))
        clean_note = _clean_note(note)
        results: list[Transition] = []
        with self._writing("(many)", name) as conn:
            who = self._actor(conn, actor)
            rows = self._lock_many(conn, [ref for ref, _, _ in prepared])
            now = self._clock()
            for ref, _, _ in prepared:
                row = rows.get(ref)
                if row is None:
                    raise UnknownReference(ref)
                if check is not None:
                    check(row)
                problem = permission_problem(
                    roles, trigger=name, time_based=False, actor=who, scope=row.scope
                )
                if problem is not None:
                    raise PermissionDenied(ref=ref, trigger=name, state=row.state, actor=who.id,
                                           role=who.role.value, reason=problem)
            bulk = _Bulk(self, conn, len(prepared))
            written: list[tuple[int, Mapping[str, Any]]] = []
            for ref, data, data_json in prepared:
                row = rows[ref]
                row.next_seq = seq = bulk.take_seq()
                digest = self._append_to(conn, row, kind=audit.KIND_RECORD, at=now, actor=who,
                                         trigger=name, to_state=row.state, note=clean_note,
                                         data=data_json, bulk=bulk)
                written.append((row.id, data))
                results.append(Transition(
                    seq=seq, ref=ref, workflow=row.workflow.name, trigger=name,
                    from_state=row.state, to_state=row.state, actor=who.id,
                    role=who.role.value, at=now, note=clean_note, data=data, hash=digest,
                ))
            bulk.flush()
            if write is not None and written:
                write(conn, written)
        if log.enabled():
            self._log.info("recorded", record=name, count=len(results), actor=actor)
        return results

    # ------------------------------------------------------------------ people

    def bootstrap_admin(self, person_id: str, *, name: str = "") -> Person:
        """Register the first administrator; refused once any administrator exists."""
        person = Person(id=person_id, role=Role.ADMIN, name=name)
        with database.storage_errors("reading people"), database.read_transaction(
            self._db
        ) as conn:
            rows = conn.execute(
                sa.select(_E.c.attrs).where(_E.c.workflow == "person", _E.c.state == "active")
            ).all()
        if any(json.loads(r.attrs).get("role") == Role.ADMIN.value for r in rows):
            raise InvalidInput(
                "an administrator exists already; ask them to register new people"
            )
        self.create(
            f"person:{person_id}",
            actor=SYSTEM_ACTOR,
            data={"role": Role.ADMIN.value, "name": name} if name else {"role": "admin"},
        )
        return person

    def add_person(
        self,
        person_id: str,
        *,
        role: str | Role,
        actor: str,
        municipality: str | None = None,
        name: str = "",
        email: str | None = None,
    ) -> Person:
        """Register someone who may act (administrators only)."""
        person = Person(
            id=person_id,
            role=Role.parse(str(role)),
            municipality=municipality,
            name=name,
            email=email,
        )
        data: dict[str, Any] = {"role": person.role.value}
        if municipality:
            data["municipality"] = municipality
        if name:
            data["name"] = name
        if email:
            data["email"] = email
        self.create(f"person:{person_id}", actor=actor, data=data)
        return person

    def change_role(
        self,
        person_id: str,
        *,
        role: str | Role,
        actor: str,
        municipality: str | None = None,
        note: str | None = None,
    ) -> Person:
        """Give someone another role (and municipality), audited on their chain."""
        current = self.person(person_id)
        person = Person(
            id=person_id,
            role=Role.parse(str(role)),
            municipality=municipality,
            name=current.name,
            email=current.email,
        )
        self.record(
            f"person:{person_id}",
            "change_role",
            actor=actor,
            data={"role": person.role.value, "municipality": municipality},
            roles=frozenset({Role.ADMIN}),
            note=note,
            attrs={"role": person.role.value, "municipality": municipality},
            scope=(municipality,) if municipality else (),
        )
        return person

    def person(self, person_id: str) -> Person:
        """The registered person ``person_id``."""
        view = self._read_entity(f"person:{person_id}")
        if view is None:
            raise UnknownActor(person_id)
        attrs = json.loads(view.attrs)
        return Person(
            id=person_id,
            role=Role(attrs["role"]),
            municipality=attrs.get("municipality"),
            name=attrs.get("name", ""),
            email=attrs.get("email"),
            active=view.state == "active",
        )

    def people(self) -> list[Person]:
        """Everyone registered, active or not, by id."""
        with database.storage_errors("reading people"), database.read_transaction(
            self._db
        ) as conn:
            rows = conn.execute(
                sa.select(_E.c.ref, _E.c.state, _E.c.attrs)
                .where(_E.c.workflow == "person")
                .order_by(_E.c.ref)
            ).all()
        result = []
        for r in rows:
            attrs = json.loads(r.attrs)
            result.append(
                Person(
                    id=r.ref.split(":", 1)[1],
                    role=Role(attrs["role"]),
                    municipality=attrs.get("municipality"),
                    name=attrs.get("name", ""),
                    email=attrs.get("email"),
                    active=r.state == "active",
                )
            )
        return result

    # ------------------------------------------------------------------ reading

    def _read_entity(self, ref: str) -> Any:
        with database.storage_errors(f"reading {ref}"), database.read_transaction(
            self._db
        ) as conn:
            return conn.execute(sa.select(_E).where(_E.c.ref == ref)).one_or_none()

    def _allowed(
        self,
        conn: _Conn,
        row: _Locked,
        who: _Actor | None,
        now: datetime,
        *,
        check_guards: bool,
    ) -> tuple[str, ...]:
        allowed, _ = self._allowed_and_blocked(conn, row, who, now, check_guards=check_guards)
        return allowed

    def _allowed_and_blocked(
        self,
        conn: _Conn,
        row: _Locked,
        who: _Actor | None,
        now: datetime,
        *,
        check_guards: bool,
    ) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
        allowed: list[str] = []
        blocked: dict[str, tuple[str, ...]] = {}
        context = _Context(conn, now, self._queries)
        for trigger in row.workflow.triggers_from(row.state):
            spec = row.workflow.spec_from(trigger, row.state)
            assert spec is not None
            if who is not None and permission_problem(
                row.workflow.roles(row.attrs, spec),
                trigger=trigger,
                time_based=spec.time_based,
                actor=who,
                scope=row.scope,
            ):
                continue
            if check_guards and spec.guards:
                subject = Subject(
                    ref=row.ref,
                    state=row.state,
                    attrs=row.attrs,
                    scope=row.scope,
                    fiscal_year=row.fiscal_year,
                )
                reasons = row.workflow.check_guards(subject, trigger, context)
                if reasons:
                    blocked[trigger] = tuple(reasons)
                    continue
            allowed.append(trigger)
        return tuple(allowed), blocked

    def get(self, ref: str, *, actor: str | None = None) -> EntityView:
        """The entity ``ref`` now: state, version, overdue, and what ``actor`` may fire.

        Without ``actor``, ``allowed`` lists every trigger the state and guards allow.
        """
        parsed, workflow = self._parse(ref)
        ref = str(parsed)
        with database.storage_errors(f"reading {ref}"), database.read_transaction(
            self._db
        ) as conn:
            row = conn.execute(sa.select(_E).where(_E.c.ref == ref)).one_or_none()
            if row is None:
                raise UnknownReference(ref)
            who = None if actor is None else self._actor(conn, actor)
            locked = _locked_of(row, workflow)
            allowed, blocked = self._allowed_and_blocked(
                conn, locked, who, self._clock(), check_guards=True
            )
        return EntityView(
            ref=ref,
            workflow=workflow.name,
            state=row.state,
            state_label=workflow.state_label(row.state),
            version=row.version,
            scope=locked.scope,
            fiscal_year=row.fiscal_year,
            attrs=locked.attrs,
            overdue=row.overdue_since is not None,
            allowed=allowed,
            blocked=blocked,
        )

    def _known_ref(self, ref: str) -> str:
        """``ref`` normalised, if an entity has it or the log has entries for it."""
        if ref == audit.CHECKPOINT_REF:
            return ref
        parsed, _ = self._parse(ref)
        ref = str(parsed)
        with database.storage_errors(f"reading {ref}"), database.read_transaction(
            self._db
        ) as conn:
            found = conn.execute(sa.select(_E.c.id).where(_E.c.ref == ref)).first() or \
                conn.execute(sa.select(_A.c.seq).where(_A.c.ref == ref).limit(1)).first()
        if found is None:
            raise UnknownReference(ref)
        return ref

    def history(self, ref: str) -> list[AuditEntry]:
        """Every audit entry of ``ref``, oldest first."""
        parsed, _ = self._parse(ref)
        ref = str(parsed)
        with database.storage_errors(f"reading the history of {ref}"), database.read_transaction(
            self._db
        ) as conn:
            if conn.execute(sa.select(_E.c.id).where(_E.c.ref == ref)).first() is None:
                raise UnknownReference(ref)
            rows = conn.execute(
                sa.select(_A).where(_A.c.ref == ref).order_by(_A.c.entity_seq)
            ).all()
        return [_entry(r) for r in rows]

    def audit_log(
        self,
        *,
        ref: str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        trigger: str | None = None,
        kind: str | None = None,
        batch: int = 2000,
    ) -> Iterator[AuditEntry]:
        """The audit log in sequence order, filtered; streamed in batches.

        ``since``/``until`` compare with the entry's business time: the virtual time in a
        simulation database, the real time otherwise. An unknown ``ref`` is refused.
        """
        if ref is not None:
            ref = self._known_ref(ref)
        last = 0
        while True:
            stmt = sa.select(_A).where(_A.c.seq > last).order_by(_A.c.seq).limit(batch)
            if ref is not None:
                stmt = stmt.where(_A.c.ref == ref)
            if actor is not None:
                stmt = stmt.where(_A.c.actor == actor)
            when = sa.func.coalesce(_A.c.virtual_at, _A.c.at) if self.simulation else _A.c.at
            if since is not None:
                stmt = stmt.where(when >= since)
            if until is not None:
                stmt = stmt.where(when < until)
            if trigger is not None:
                stmt = stmt.where(_A.c.trigger == trigger)
            if kind is not None:
                stmt = stmt.where(_A.c.kind == kind)
            with database.storage_errors("reading the audit log"), database.read_transaction(
                self._db
            ) as conn:
                rows = conn.execute(stmt).all()
            if not rows:
                return
            for r in rows:
                yield _entry(r)
            last = rows[-1].seq

    # ------------------------------------------------------------------ audit

    def verify_audit(self, *, expect_digest: str | None = None) -> VerifyReport:
        """Recompute every hash and chain; name the first entry edited, removed, inserted
        or reordered, and any entity whose state its log does not explain.

        ``expect_digest`` is a checkpoint digest kept outside the database: the report then
        also says whether history up to that checkpoint is unchanged.
        """
        verifier = audit.Verifier()
        with database.storage_errors("verifying the audit log"), database.read_transaction(
            self._db
        ) as conn:
            self._feed_audit_log(conn, verifier)
            problems = verifier.finish_rows(
                conn.execute(
                    sa.select(_E.c.ref, _E.c.state, _E.c.chain_len, _E.c.chain_head),
                    execution_options={"yield_per": self._VERIFY_BATCH},
                )
            )
        if expect_digest is not None and expect_digest not in verifier.sealed:
            from .types import Problem

            problems.insert(
                0,
                Problem(
                    seq=None,
                    ref=audit.CHECKPOINT_REF,
                    reason="checkpoint_missing",
                    detail=f"no checkpoint with digest {expect_digest} is in the log: history "
                    "up to it has been changed",
                ),
            )
        return VerifyReport(
            entries=verifier.entries,
            entities=verifier.entities,
            checkpoints=verifier.checkpoints,
            problems=tuple(problems),
            last_checkpoint_seq=verifier.last_checkpoint_seq,
            last_checkpoint_digest=verifier.last_checkpoint_digest,
        )

    # The whole log in seq order, as ``audit.Verifier.feed_rows`` takes it, read through the
    # driver's own cursor: SQLAlchemy's rows and an AuditEntry per entry cost many times
    # what hashing the entry does. SQLite hands its stored times over as they are
    # ('YYYY-MM-DD HH:MM:SS.ffffff'), for the verifier to write.
    _VERIFY_SQLITE = (
        "SELECT seq, ref, entity_seq, kind, at, virtual_at, actor, role, fiscal_year, "
        "trigger, from_state, to_state, note, data, workflow_version, prev_hash, hash, "
        "NULL, NULL FROM audit_log ORDER BY seq"
    )
    # PostgreSQL writes each time as its field of the hashed text itself (in UTC, whatever
    # the session's time zone) for the years 1000 to 9999 of the common era; any other
    # time comes as it is stored (in UTC) in the last two columns.
    _VERIFY_PG_TIME = (
        "{c} >= TIMESTAMPTZ '1000-01-01 00:00:00+00' "
        "AND {c} < TIMESTAMPTZ '10000-01-01 00:00:00+00'"
    )
    _VERIFY_PG_TEXT = (
        "'27:' || to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    )
    _VERIFY_POSTGRESQL = (
        "SELECT seq, ref, entity_seq, kind, "
        "CASE WHEN {at} THEN {at_text} END, "
        "CASE WHEN virtual_at IS NULL THEN '~' WHEN {vat} THEN {vat_text} END, "
        "actor, role, fiscal_year, trigger, from_state, to_state, note, data, "
        "workflow_version, prev_hash, hash, "
        "CASE WHEN {at} THEN NULL ELSE at AT TIME ZONE 'UTC' END, "
        "CASE WHEN {vat} THEN NULL ELSE virtual_at AT TIME ZONE 'UTC' END "
        "FROM audit_log ORDER BY seq"
    ).format(
        at=_VERIFY_PG_TIME.format(c="at"),
        vat=_VERIFY_PG_TIME.format(c="virtual_at"),
        at_text=_VERIFY_PG_TEXT.format(c="at"),
        vat_text=_VERIFY_PG_TEXT.format(c="virtual_at"),
    )
    #: Rows read at a time where the driver streams them: bounds the memory verify takes.
    _VERIFY_BATCH = 2000

    def _feed_audit_log(self, conn: Connection, verifier: audit.Verifier) -> None:
        """Stream the whole log into ``verifier`` inside ``conn``'s read transaction; a
        driver error becomes SQLAlchemy's, which the caller translates."""
        raw: Any = conn.connection.driver_connection
        dbapi: Any = conn.dialect.loaded_dbapi
        sql = self._VERIFY_POSTGRESQL if self._pg else self._VERIFY_SQLITE
        try:
            if self._pg:
                # Streamed: the server writes the next rows while these are verified, and
                # holds back when the client falls behind. Rows come in chunks where the
                # libpq can (17 and later), one by one otherwise; never the whole log.
                chunk = self._VERIFY_BATCH if dbapi.pq.version() >= 170000 else 1
                with raw.cursor() as cursor:
                    rows = cursor.stream(sql, size=chunk)
                    try:
                        verifier.feed_rows(rows, self._verify_time_postgresql)
                    finally:
                        rows.close()  # stopped early: cancels the query, drains the rest
            else:
                cursor = raw.cursor()
                try:
                    cursor.execute(sql)
                    verifier.feed_rows(
                        cursor, self._verify_time_sqlite(conn.dialect), stored=True
                    )
                finally:
                    cursor.close()
        except dbapi.Error as exc:
            raise sa.exc.DBAPIError.instance(sql, None, exc, dbapi.Error) from exc

    @staticmethod
    def _verify_time_postgresql(field: str | None, stored: datetime | None) -> str | None:
        if field == "~":
            return None
        if field is not None:
            return field[3:]
        return audit.format_time(stored)  # naive, in UTC

    @staticmethod
    def _verify_time_sqlite(dialect: sa.Dialect) -> audit.TimeOf:
        # The type's own reading of a stored time, as for every other read of the log.
        read = _A.c.at.type.result_processor(dialect, None)

        def time_of(value: Any, _: object) -> str | None:
            return audit.format_time(read(value) if read is not None else value)

        return time_of

    def checkpoint(self, *, actor: str = SCHEDULER_ACTOR) -> AuditEntry:
        """Seal every entry since the last checkpoint with a cumulative digest.

        Keep the returned entry's digest outside the database: ``verify_audit(
        expect_digest=...)`` later proves history up to it is unchanged.
        """
        with self._writing(audit.CHECKPOINT_REF, "checkpoint") as conn:
            who = self._actor(conn, actor)
            if who.role not in (Role.SCHEDULER, Role.AUDITOR, Role.ADMIN):
                raise PermissionDenied(
                    ref=audit.CHECKPOINT_REF,
                    trigger="checkpoint",
                    state="-",
                    actor=who.id,
                    role=who.role.value,
                    reason="checkpoints are made by the scheduler, an auditor or an admin",
                )
            if self._pg:
                # Every writer holds this lock (shared) from the moment it takes its
                # sequence number until it commits: taking it exclusively waits for the
                # writers in flight and keeps new ones out, so the checkpoint seals a prefix
                # of the log with no lower sequence number still to be committed.
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(SEQ_LOCK_KEY)))
            last = conn.execute(
                sa.select(_A)
                .where(_A.c.ref == audit.CHECKPOINT_REF)
                .order_by(_A.c.entity_seq.desc())
                .limit(1)
            ).one_or_none()
            digest = audit.GENESIS if last is None else json.loads(last.data)["digest"]
            from_seq = 0 if last is None else last.seq
            count = 0
            hashes = conn.execute(
                sa.select(_A.c.hash).where(_A.c.seq > from_seq).order_by(_A.c.seq),
                execution_options={"yield_per": 10000},
            )
            for (h,) in hashes:
                digest = audit.fold_digest(digest, h)
                count += 1
            seq = self._next_seq(conn)
            now = self._clock()
            data = audit.canonical_json(
                {"count": count, "digest": digest, "from_seq": from_seq + 1, "to_seq": seq - 1}
            )
            self._append(
                conn,
                seq=seq,
                ref=audit.CHECKPOINT_REF,
                entity_seq=1 if last is None else last.entity_seq + 1,
                prev_hash=audit.GENESIS if last is None else last.hash,
                kind=audit.KIND_CHECKPOINT,
                at=now,
                actor=who,
                trigger="checkpoint",
                from_state=None,
                to_state=None,
                note=None,
                data=data,
                workflow_version="-",
                fiscal_year=None,
            )
            row = conn.execute(sa.select(_A).where(_A.c.seq == seq)).one()
        return _entry(row)

    # ------------------------------------------------------------------ events

    def on_transition(self, callback: TransitionCallback) -> Callable[[], None]:
        """Call ``callback(transition)`` after each committed transition or creation.

        From the moment a callback is registered, every change this engine commits also
        queues an outbox message in its transaction; messages are delivered after the
        commit, at least once, and a message whose delivery failed (the callback raised,
        or the process died) is retried by the next delivery (:meth:`deliver_pending`).
        Returns a function that unsubscribes.
        """
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    def _enqueue(self, conn: Connection, result: Transition, now: datetime) -> None:
        payload = audit.canonical_json(
            {
                "seq": result.seq,
                "ref": result.ref,
                "workflow": result.workflow,
                "trigger": result.trigger,
                "from_state": result.from_state,
                "to_state": result.to_state,
                "actor": result.actor,
                "role": result.role,
                "at": audit.format_time(result.at),
                "note": result.note,
                "data": dict(result.data),
                "hash": result.hash,
            }
        )
        conn.execute(
            _O.insert(),
            {
                "audit_seq": result.seq,
                "channel": CHANNEL_TRANSITION,
                "payload": payload,
                "created_at": now,
                "attempts": 0,
                "next_attempt_at": now,
                "delivered_at": None,
                "last_error": None,
                "done": False,
            },
        )

    def _after_commit(self, result: Transition) -> None:
        if log.enabled():
            self._log.info(
                "transition",
                ref=result.ref,
                trigger=result.trigger,
                from_state=result.from_state,
                to_state=result.to_state,
                actor=result.actor,
                seq=result.seq,
            )
        if self._subscribers:
            try:
                self.deliver_pending()
            except StorageError as exc:
                # The change is committed; its event stays queued and is delivered later.
                self._log.warning("delivery_postponed", ref=result.ref, error=str(exc))

    def deliver_pending(self, *, limit: int = 1000) -> int:
        """Deliver queued transition events to this engine's subscribers; return how many.

        Each message is claimed (leased) before its callbacks run, so two processes never
        deliver the same message at once; it is marked done only after every callback
        returned. Nested calls (a callback that fires a transition) leave the work to the
        outer call.
        """
        if not self._subscribers or getattr(self._delivering, "active", False):
            return 0
        self._delivering.active = True
        delivered = 0
        try:
            while delivered < limit:
                claimed = self._claim(min(100, limit - delivered))
                if not claimed:
                    break
                for message_id, payload in claimed:
                    error = self._deliver_one(payload)
                    self._settle(message_id, error)
                    if error is None:
                        delivered += 1
                if len(claimed) < 100:
                    break
        finally:
            self._delivering.active = False
        return delivered

    def _claim(self, count: int, channel: str = CHANNEL_TRANSITION) -> list[tuple[int, str]]:
        now = self._clock()
        with database.storage_errors("claiming outbox messages"), database.write_transaction(
            self._db
        ) as conn:
            stmt = (
                sa.select(_O.c.id, _O.c.payload)
                .where(
                    _O.c.done.is_(False),
                    _O.c.channel == channel,
                    _O.c.next_attempt_at <= now,
                )
                .order_by(_O.c.id)
                .limit(count)
            )
            if self._pg:
                stmt = stmt.with_for_update(skip_locked=True)
            rows = conn.execute(stmt).all()
            if rows:
                conn.execute(
                    _O.update()
                    .where(_O.c.id.in_([r.id for r in rows]))
                    .values(next_attempt_at=now + OUTBOX_LEASE, attempts=_O.c.attempts + 1)
                )
        return [(r.id, r.payload) for r in rows]

    def _deliver_one(self, payload: str) -> str | None:
        data = json.loads(payload)
        event = Transition(
            seq=data["seq"],
            ref=data["ref"],
            workflow=data["workflow"],
            trigger=data["trigger"],
            from_state=data["from_state"],
            to_state=data["to_state"],
            actor=data["actor"],
            role=data["role"],
            at=datetime.strptime(data["at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC),
            note=data["note"],
            data=data["data"],
            hash=data["hash"],
        )
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception as exc:
                self._log.error(
                    "subscriber_failed", ref=event.ref, seq=event.seq, error=repr(exc)
                )
                return repr(exc)
        return None

    def _settle(self, message_id: int, error: str | None) -> None:
        with self._writing("outbox", "settle") as conn:
            now = self._clock()  # a simulation's clock read on this same connection
            values: dict[str, Any]
            if error is None:
                values = {"done": True, "delivered_at": now, "last_error": None}
            else:
                values = {"next_attempt_at": now + timedelta(seconds=30),
                          "last_error": error[:2000]}
            conn.execute(_O.update().where(_O.c.id == message_id).values(**values))


def _entry(r: Any) -> AuditEntry:
    return AuditEntry(
        seq=r.seq,
        ref=r.ref,
        entity_seq=r.entity_seq,
        kind=r.kind,
        at=r.at,
        virtual_at=r.virtual_at,
        actor=r.actor,
        role=r.role,
        fiscal_year=r.fiscal_year,
        trigger=r.trigger,
        from_state=r.from_state,
        to_state=r.to_state,
        note=r.note,
        data=r.data,
        workflow_version=r.workflow_version,
        prev_hash=r.prev_hash,
        hash=r.hash,
    )
