"""Storage: migrations agree with the models, the schema is checked, constraints hold."""

from __future__ import annotations

import importlib.util
import sqlite3
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

import pdca
from pdca.storage import database
from pdca.storage.models import SCHEMA_REVISION, Base
from pdca.workflows import default_registry
from tests.conftest import KUMAMOTO, Cast, make_measure

MIGRATIONS = Path(database.__file__).parent / "migrations"


def test_models_and_migrations_agree(engine: pdca.Engine) -> None:
    with engine._db.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_schema_revision_constant_is_the_migrations_head() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_current_head() == SCHEMA_REVISION


def test_state_check_constraint_of_latest_migration_matches_the_registry() -> None:
    """The last migration that sets the CHECK constraint allows exactly the registry's."""
    for path in sorted((MIGRATIONS / "versions").glob("0*.py"), reverse=True):
        spec = importlib.util.spec_from_file_location(f"migration_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if hasattr(module, "STATES"):
            assert sorted(module.STATES) == sorted(default_registry().state_pairs())
            return
    raise AssertionError("no migration sets the state CHECK constraint")


def test_database_refuses_an_unknown_state(engine: pdca.Engine) -> None:
    with pytest.raises(sa.exc.IntegrityError), engine._db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO entities (ref, workflow, state, version, scope, attrs, "
                "chain_len, chain_head, created_at, updated_at) VALUES "
                "('measure:X', 'measure', 'dreaming', 1, '', '{}', 0, '', "
                "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )


def test_opening_a_database_without_schema_says_how_to_create_it(db_url: str) -> None:
    with pytest.raises(pdca.SchemaOutdated, match="pdca init"):
        pdca.Engine.open(db_url)


def test_migrating_twice_is_safe(db_url: str) -> None:
    pdca.Engine.open(db_url, migrate=True).close()
    with pdca.Engine.open(db_url, migrate=True) as engine:
        engine.bootstrap_admin("admin")
        assert [p.id for p in engine.people()] == ["admin"]


def test_sqlite_runs_in_wal_mode_with_foreign_keys(sqlite_url: str) -> None:
    with pdca.Engine.open(sqlite_url, migrate=True) as engine, engine._db.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "in-memory SQLite"),
        ("sqlite:////no/such/folder/x.db", "does not exist"),
        ("mysql://x@y/z", "unsupported database"),
        ("not a url", "not a database URL"),
    ],
)
def test_unusable_database_urls_get_a_clear_error(url: str, message: str) -> None:
    with pytest.raises(pdca.StorageError, match=message):
        pdca.Engine.open(url)


def test_unreachable_postgresql_is_a_storage_error() -> None:
    with pytest.raises(pdca.StorageError, match="failed"):
        pdca.Engine.open("postgresql://nobody@127.0.0.1:1/none")


# ------------------------------------------------------ a fire's statements on the driver


@pytest.mark.parametrize("watched", [False, True], ids=["on-the-driver", "watched"])
def test_a_fire_stores_what_sqlalchemy_would_store(
    engine: pdca.Engine, cast: Cast, watched: bool
) -> None:
    """A fire runs its statements on the driver unless someone listens to SQLAlchemy's
    execution events; either way the rows hold the same values (times as SQLAlchemy
    writes them), the log verifies, and listeners see every statement."""
    ref = make_measure(engine)
    seen: list[str] = []

    def watch(conn: sa.Connection, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    if watched:
        sa.event.listen(engine._db, "before_cursor_execute", watch)
    try:
        first = engine.fire(ref, "commercialise", actor=cast.staff)
        second = engine.fire(ref, "complete", actor=cast.staff)
    finally:
        if watched:
            sa.event.remove(engine._db, "before_cursor_execute", watch)
    assert any(s.startswith("INSERT INTO audit_log") for s in seen) is watched
    with engine._db.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT a.at, a.virtual_at, e.updated_at, e.attrs, a.hash, e.chain_head "
                "FROM audit_log a JOIN entities e ON e.ref = a.ref "
                "WHERE a.seq IN (:a, :b) ORDER BY a.seq"
            ),
            {"a": first.seq, "b": second.seq},
        ).all()
    assert [r.hash for r in rows] == [first.hash, second.hash]
    assert rows[1].chain_head == second.hash
    assert '"ended_fy":' in rows[1].attrs  # the effect of complete, written with the state
    if engine.dialect == "sqlite":
        # SQLAlchemy's text for a UTC time: what readers and the verifier parse.
        assert [r.at for r in rows] == [
            t.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") for t in (first, second)
        ]
        assert rows[1].updated_at == rows[1].at
    else:
        assert [r.at for r in rows] == [first.at, second.at]
        assert rows[1].updated_at == second.at
    assert [r.virtual_at for r in rows] == [None, None]
    assert [e.at for e in engine.history(ref)[-2:]] == [first.at, second.at]
    assert engine.verify_audit().ok


def test_a_fire_that_cannot_get_the_write_lock_is_a_concurrent_transition(
    tmp_path: Path,
) -> None:
    """On the driver too: a writer holding SQLite's lock past the timeout makes the fire a
    ConcurrentTransition; nothing is written and the connection goes back to the pool."""
    path = tmp_path / "pdca.db"
    with pdca.Engine.open(f"sqlite:///{path}", migrate=True, lock_timeout=0.1) as engine:
        engine.bootstrap_admin("admin")
        engine.add_person("staff", role="staff", municipality=KUMAMOTO, actor="admin")
        ref = make_measure(engine, actor="staff")
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(pdca.ConcurrentTransition):
                engine.fire(ref, "commercialise", actor="staff")
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert engine._db.pool.checkedout() == 0  # type: ignore[attr-defined]
        assert engine.get(ref).state == "study"
        assert engine.fire(ref, "commercialise", actor="staff").to_state == "implemented"
        assert engine.verify_audit().ok
