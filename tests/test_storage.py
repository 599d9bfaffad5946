"""Storage: migrations agree with the models, the schema is checked, constraints hold."""

from __future__ import annotations

import importlib.util
from pathlib import Path

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
