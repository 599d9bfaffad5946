"""Connections, transactions and migrations for SQLite and PostgreSQL.

SQLite (the embedded default) runs in WAL mode with foreign keys on; a write transaction
starts with ``BEGIN IMMEDIATE`` so that two writers queue at the start instead of failing
half-way. PostgreSQL is reached through psycopg 3; writers lock the entity row they change.
Driver errors are translated here into pdca's own errors, so none crosses the API.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from ..errors import InvalidDatabaseUrl, SchemaOutdated, StorageError
from .models import SCHEMA_REVISION

MIGRATIONS = Path(__file__).parent / "migrations"

#: How long a writer waits for a lock held by another writer before giving up (seconds).
LOCK_TIMEOUT_S = 10.0

_WRITE = "pdca_write"


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
        # Let SQLAlchemy's events emit BEGIN themselves: pysqlite's own transaction
        # handling defers BEGIN and cannot do BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(lock_timeout * 1000)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Straight to the driver: this runs once per transaction, on the hot path.
        raw = conn.connection.driver_connection
        assert raw is not None
        raw.execute("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")

    return engine


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def writer(engine: Engine) -> Engine:
    """The same engine (same pool) marked for writing: SQLite then starts its
    transactions with ``BEGIN IMMEDIATE``."""
    return engine.execution_options(**{_WRITE: True})


@contextlib.contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """One write transaction: commit at the end, roll back on any error."""
    with engine.connect() as conn:
        if not conn.get_execution_options().get(_WRITE):
            conn.execution_options(**{_WRITE: True})
        with conn.begin():
            yield conn


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
