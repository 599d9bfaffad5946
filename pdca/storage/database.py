"""Connections, transactions and migrations for SQLite and PostgreSQL.

SQLite (the embedded default) runs in WAL mode with foreign keys on; a write transaction
starts with ``BEGIN IMMEDIATE`` so that two writers queue at the start instead of failing
half-way. PostgreSQL is reached through psycopg 3; writers lock the entity row they change.
Driver errors are translated here into pdca's own errors, so none crosses the API.
"""

from __future__ import annotations

import contextlib
import contextvars
import operator
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import PoolProxiedConnection

from ..errors import InvalidDatabaseUrl, SchemaOutdated, StorageError
from .models import SCHEMA_REVISION

MIGRATIONS = Path(__file__).parent / "migrations"

#: How long a writer waits for a lock held by another writer before giving up (seconds).
LOCK_TIMEOUT_S = 10.0

def normalise_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` as psycopg 3 URLs; leave others alone."""
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def create_engine(url: str, *, lock_timeout: float = LOCK_TIMEOUT_S) -> Engine:
    """An SQLAlchemy engine set up the way pdca needs it."""
    url = normalise_url(url)
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise InvalidDatabaseUrl(f"not a database URL: {url!r}") from None
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, lock_timeout)
    if parsed.get_backend_name() == "postgresql":
        ms = int(lock_timeout * 1000)
        try:
            # No pre-ping (a round trip per transaction): a connection the server dropped
            # fails once, is discarded by the pool, and the next transaction reconnects.
            return sa.create_engine(
                parsed,
                pool_recycle=1800,
                connect_args={"options": f"-c lock_timeout={ms} -c timezone=UTC"},
            )
        except (ImportError, sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
            raise StorageError(f"cannot use {url!r}: {exc}") from None
    raise InvalidDatabaseUrl(
        f"unsupported database {parsed.get_backend_name()!r}: use sqlite:///FILE or "
        "postgresql://USER@HOST/DB"
    )


def _sqlite_engine(url: sa.URL, lock_timeout: float) -> Engine:
    database = url.database or ""
    if database in ("", ":memory:"):
        raise InvalidDatabaseUrl(
            "an in-memory SQLite database cannot be shared; give a file: sqlite:///pdca.db"
        )
    parent = Path(database).expanduser().resolve().parent
    if not parent.is_dir():
        raise InvalidDatabaseUrl(f"cannot create {database}: folder {parent} does not exist")
    engine = sa.create_engine(
        url,
        connect_args={"timeout": lock_timeout, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling defers BEGIN and cannot do BEGIN IMMEDIATE:
        # turn it off; the dialect emits BEGIN itself (_sqlite_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(lock_timeout * 1000)}")
        cursor.close()

    # BEGIN comes from the dialect rather than from a "begin" event listener: once any
    # connection event of an engine is listened to, SQLAlchemy dispatches events at every
    # connect, begin, commit and close of its connections, which costs a short write
    # transaction about a twentieth of its time. (This dialect object is this engine's own.)
    engine.dialect.do_begin = _sqlite_begin  # type: ignore[method-assign]
    return engine


#: True while a write transaction begins: SQLite's BEGIN is then ``BEGIN IMMEDIATE``.
_BEGIN_IMMEDIATE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "pdca_begin_immediate", default=False
)


def _sqlite_begin(dbapi_connection: Any) -> None:
    """``Dialect.do_begin`` of pdca's SQLite engines: ``BEGIN``, or ``BEGIN IMMEDIATE``
    when :func:`write_transaction` begins (takes the write lock at once, so that two
    writers queue at the start instead of one failing half-way)."""
    raw = getattr(dbapi_connection, "driver_connection", dbapi_connection)
    raw.execute("BEGIN IMMEDIATE" if _BEGIN_IMMEDIATE.get() else "BEGIN")


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


@contextlib.contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """One write transaction (``BEGIN IMMEDIATE`` on SQLite): commit at the end, roll back
    on any error."""
    with engine.connect() as conn:
        token = _BEGIN_IMMEDIATE.set(True)
        try:
            transaction = conn.begin()
        finally:
            _BEGIN_IMMEDIATE.reset(token)
        with transaction:
            yield conn


class DriverConnection:
    """A pooled connection in a write transaction run on its driver alone, without
    SQLAlchemy's :class:`~sqlalchemy.engine.Connection` (see
    :func:`driver_write_transaction`). Only :class:`DriverStatement` runs on it."""

    __slots__ = ("connection",)

    def __init__(self, connection: PoolProxiedConnection) -> None:
        #: The pool's connection, as ``Connection.connection`` is.
        self.connection = connection

    def invalidate(self, exception: BaseException | None = None) -> None:
        """Discard the connection (the driver lost it) instead of returning it to the pool."""
        self.connection.invalidate(exception)


def listened(engine: Engine) -> bool:
    """Whether anyone listens to the engine's connection events (execution, begin, commit,
    ...) or to its dialect's errors: then its transactions should run on SQLAlchemy's
    Connection, where the listeners see them, not in a :func:`driver_write_transaction`."""
    return bool(engine._has_events or engine.dialect.dispatch.handle_error)


@contextlib.contextmanager
def driver_write_transaction(engine: Engine) -> Iterator[DriverConnection]:
    """One SQLite write transaction (``BEGIN IMMEDIATE``) run on a pooled connection's
    driver: commit at the end, roll back on any error; the connection goes back to the
    pool either way, and a driver error is raised as SQLAlchemy's
    :class:`~sqlalchemy.exc.DBAPIError`, as :func:`write_transaction` raises it.

    For a short transaction that runs nothing but :class:`DriverStatement`: SQLAlchemy's
    Connection and transaction bookkeeping cost such a transaction about a tenth of its time.
    """
    if engine.dialect.name != "sqlite":
        raise ValueError("a driver write transaction is for SQLite")
    error: type[Exception] = engine.dialect.loaded_dbapi.Error
    pooled = engine.raw_connection()
    try:
        raw: Any = pooled.driver_connection
        try:
            raw.execute("BEGIN IMMEDIATE")
        except error as exc:
            raise sa.exc.DBAPIError.instance("BEGIN IMMEDIATE", (), exc, error) from exc
        done = False
        try:
            yield DriverConnection(pooled)
            try:
                raw.commit()
            except error as exc:
                raise sa.exc.DBAPIError.instance("COMMIT", (), exc, error) from exc
            done = True
        finally:
            if not done:
                try:
                    raw.rollback()
                except error:
                    pooled.invalidate()  # in a state nobody knows: not back to the pool
    finally:
        pooled.close()


class DriverStatement:
    """A hot statement compiled once for an engine's dialect and run on the driver's cursor.

    Per statement, SQLAlchemy's execution path (cache lookup, parameter processing, result
    wrapping, events) costs several times what SQLite takes to run a short statement. This
    keeps what matters of it: the SQL text SQLAlchemy compiles for the dialect and the bind
    processors of the statement's types (a time is stored byte for byte as SQLAlchemy stores
    it: ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC on SQLite), and runs the text on the
    connection's driver, inside the transaction that connection has open. A driver error is
    raised as SQLAlchemy's :class:`~sqlalchemy.exc.DBAPIError`, as ``conn.execute`` raises
    it, and a connection the error shows lost is invalidated.

    While anyone listens to execution events (instrumentation, tests), the statement goes
    through ``conn.execute`` instead, so that the listeners see it as they see any other.
    """

    __slots__ = ("_dialect", "_engine", "_error", "_fixed", "_get", "_names", "_process", "sql",
                 "statement")

    def __init__(self, statement: sa.Select[Any] | sa.Insert | sa.Update, engine: Engine) -> None:
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect)
        if compiled.literal_execute_params or compiled.post_compile_params:
            raise ValueError("a statement with post-compile parameters is compiled per call")
        self.statement = statement
        self.sql = compiled.string
        self._engine = engine
        self._dialect = dialect
        self._error: type[Exception] = dialect.loaded_dbapi.Error
        escaped = compiled.escaped_bind_names
        # Per placeholder: the key of the caller's parameters (or, for a value fixed in the
        # statement, a key no caller uses) and the bind processor of its type, if any.
        slot: dict[str, tuple[Any, Any]] = {}
        self._fixed: dict[Any, Any] = {}
        for bind, name in compiled.bind_names.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.required:
                slot[name] = (bind.key, process)
            else:
                value = bind.effective_value
                self._fixed[(None, name)] = value if process is None else process(value)
                slot[name] = ((None, name), None)
        order = list(slot) if not compiled.positional else list(compiled.positiontup or ())
        #: Named placeholders (PostgreSQL's ``%(name)s``) take a mapping, positional a tuple.
        self._names = None if compiled.positional else tuple(escaped.get(n, n) for n in order)
        keys = [slot[name][0] for name in order]
        self._get = operator.itemgetter(*keys) if len(keys) > 1 else (
            lambda params: tuple(params[k] for k in keys)
        )
        self._process = tuple(
            (index, slot[name][1]) for index, name in enumerate(order) if slot[name][1]
        )

    def _parameters(self, params: Mapping[str, Any]) -> Any:
        values = self._get({**params, **self._fixed} if self._fixed else params)
        if self._process:
            values = list(values)
            for index, process in self._process:
                values[index] = process(values[index])
        if self._names is not None:
            return dict(zip(self._names, values, strict=True))
        return values

    def observed(self) -> bool:
        """Whether listeners watch the statements the engine executes (then a statement
        run on a SQLAlchemy Connection goes through ``conn.execute``).

        The engine's own listeners (and those of every engine, on the class): those of the
        transaction's connection or of an engine copied from it with other execution options
        are not looked at, so that the check stays cheap on the hot path.
        """
        if self._dialect.dispatch.handle_error:
            return True
        if not self._engine._has_events:  # no connection event listened to at all
            return False
        dispatch = self._engine.dispatch
        return bool(
            dispatch.before_cursor_execute or dispatch.after_cursor_execute
            or dispatch.before_execute or dispatch.after_execute
        )

    def _run(self, conn: Connection | DriverConnection, params: Mapping[str, Any]) -> Any:
        raw: Any = conn.connection.driver_connection
        values = self._parameters(params)
        try:
            return raw.execute(self.sql, values)
        except self._error as exc:
            invalidated = self._dialect.is_disconnect(
                cast(Any, exc), conn.connection.dbapi_connection, None
            )
            if invalidated:
                conn.invalidate(exc)
            raise sa.exc.DBAPIError.instance(
                self.sql, values, exc, self._error,
                connection_invalidated=invalidated, dialect=self._dialect,
            ) from exc

    def one_or_none(
        self, conn: Connection | DriverConnection, params: Mapping[str, Any]
    ) -> Sequence[Any] | None:
        """The row the statement returns (None without one); more than one is an error."""
        if isinstance(conn, Connection) and self.observed():
            return conn.execute(self.statement, params).one_or_none()
        cursor = self._run(conn, params)
        try:
            rows = cursor.fetchmany(2)
        finally:
            cursor.close()
        if len(rows) > 1:
            raise sa.exc.MultipleResultsFound("more than one row where at most one was expected")
        return rows[0] if rows else None

    def rowcount(self, conn: Connection | DriverConnection, params: Mapping[str, Any]) -> int:
        """Run the statement (an INSERT, UPDATE or DELETE); how many rows it matched."""
        if isinstance(conn, Connection) and self.observed():
            return int(conn.execute(self.statement, params).rowcount)
        cursor = self._run(conn, params)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()


@contextlib.contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """One read transaction that sees one consistent snapshot.

    PostgreSQL runs it at REPEATABLE READ (every statement sees the same snapshot);
    SQLite's WAL gives a deferred transaction the same guarantee.
    """
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


# ----------------------------------------------------------------------------- errors

_LOCKED_SQLSTATES = {"55P03", "40001", "40P01"}


def is_lock_conflict(exc: BaseException) -> bool:
    """Whether a driver error means another writer held the lock (worth a retry)."""
    orig = getattr(exc, "orig", None)
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate in _LOCKED_SQLSTATES:
        return True
    text = str(orig if orig is not None else exc).lower()
    return "database is locked" in text or "database table is locked" in text


def is_unique_violation(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    if getattr(orig, "sqlstate", None) == "23505":
        return True
    return "unique constraint failed" in str(orig).lower()


def describe_driver_error(exc: BaseException) -> str:
    """A one-line description of a driver error, without SQL or parameters."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return re.sub(r"\s+", " ", text)


@contextlib.contextmanager
def storage_errors(action: str) -> Iterator[None]:
    """Turn any driver error that escapes ``action`` into :class:`StorageError`."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        raise StorageError(f"{action} failed: {describe_driver_error(exc)}") from exc
    except sa.exc.SQLAlchemyError as exc:
        raise StorageError(f"{action} failed: {exc}") from exc


# ----------------------------------------------------------------------------- schema


def _alembic_config(conn: Connection) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Create the schema or bring it up to ``revision``; safe to run again."""
    from alembic import command

    with storage_errors("upgrading the database"), write_transaction(engine) as conn:
        if engine.dialect.name == "postgresql":
            # Two `pdca init` at once must not both run the same migration.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(4242001)")
        command.upgrade(_alembic_config(conn), revision)


def read_settings(engine: Engine, keys: tuple[str, ...]) -> dict[str, str]:
    """Values of the ``settings`` table for ``keys`` (missing keys are left out)."""
    with storage_errors("reading settings"), read_transaction(engine) as conn:
        rows = conn.execute(
            sa.text("SELECT key, value FROM settings WHERE key IN :keys").bindparams(
                sa.bindparam("keys", expanding=True)
            ),
            {"keys": list(keys)},
        ).all()
    return {str(k): str(v) for k, v in rows}


def current_revision(engine: Engine) -> str | None:
    with storage_errors("reading the schema version"), read_transaction(engine) as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        value = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        return None if value is None else str(value)


def check_schema(engine: Engine) -> None:
    """Raise :class:`SchemaOutdated` unless the schema is exactly the one this code expects."""
    revision = current_revision(engine)
    if revision == SCHEMA_REVISION:
        return
    if revision is None:
        raise SchemaOutdated(
            "the database has no pdca schema yet: run `pdca init` "
            "(or call pdca.Engine.open(url, migrate=True))"
        )
    raise SchemaOutdated(
        f"the database schema is at revision {revision}, this version of pdca needs "
        f"{SCHEMA_REVISION}: run `pdca init` to upgrade it"
    )
