"""docs/sql/audit-roles.sql: the application's role may only INSERT and SELECT the audit log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

import pdca
from tests.conftest import make_measure, new_postgres_database

SCRIPT = Path(__file__).resolve().parent.parent / "docs" / "sql" / "audit-roles.sql"

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from new_postgres_database()


def _as(url: str, role: str) -> str:
    return sa.make_url(url).set(username=role).render_as_string(hide_password=False)


def test_the_application_role_appends_to_the_audit_log_but_cannot_change_it(pg_url: str) -> None:
    with pdca.Engine.open(pg_url, migrate=True) as owner:  # pdca init, as the owner
        owner.bootstrap_admin("admin")
    admin = sa.create_engine(pg_url)
    with admin.begin() as conn:
        conn.exec_driver_sql(SCRIPT.read_text(encoding="utf-8"))
    admin.dispose()

    app_url = _as(pg_url, "pdca_app")
    with pdca.Engine.open(app_url) as app:  # everything else, as the application
        app.add_person("staff-kumamoto", role="staff", municipality="431001", actor="admin")
        ref = make_measure(app)
        app.fire(ref, "commercialise", actor="staff-kumamoto")
        app.checkpoint(actor="admin")
        assert app.verify_audit().ok
    app_db = sa.create_engine(app_url)
    try:
        for statement in ("UPDATE audit_log SET note = 'x'", "DELETE FROM audit_log",
                          "TRUNCATE audit_log", "DROP TRIGGER audit_log_no_truncate ON audit_log",
                          "ALTER TABLE audit_log DISABLE TRIGGER ALL"):
            with pytest.raises(sa.exc.ProgrammingError) as info, app_db.begin() as conn:
                conn.exec_driver_sql(statement)
            assert "permission denied" in str(info.value.orig) or "must be owner" in str(
                info.value.orig), statement
    finally:
        app_db.dispose()

    auditor = sa.create_engine(_as(pg_url, "pdca_auditor"))
    try:
        with auditor.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM audit_log").scalar_one() > 0
        with pytest.raises(sa.exc.ProgrammingError), auditor.begin() as conn:
            conn.exec_driver_sql("INSERT INTO settings VALUES ('x', 'y')")
    finally:
        auditor.dispose()
