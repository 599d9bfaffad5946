"""Fixtures: a fresh database per test, on SQLite always and on PostgreSQL when configured.

PostgreSQL tests read ``PDCA_TEST_POSTGRES_URL`` (a server URL; each test gets a database
of its own, dropped afterwards). Without it they are skipped, unless
``PDCA_REQUIRE_POSTGRES=1`` (set by CI), in which case they fail: CI must never pass by
skipping the PostgreSQL half of the suite.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
import structlog

import pdca
from pdca.storage.database import normalise_url


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="run the reliability tests at their full size (slow; for local runs)",
    )


@pytest.fixture
def long_mode(request: pytest.FixtureRequest) -> bool:
    """Whether the reliability tests run at full size (``pytest --long``)."""
    return bool(request.config.getoption("--long"))


PG_URL = os.environ.get("PDCA_TEST_POSTGRES_URL")
REQUIRE_PG = os.environ.get("PDCA_REQUIRE_POSTGRES") == "1"

KUMAMOTO = "431001"
KIKUCHI = "432105"


def _pg_admin_engine() -> sa.Engine:
    if not PG_URL:
        if REQUIRE_PG:
            pytest.fail("PDCA_REQUIRE_POSTGRES=1 but PDCA_TEST_POSTGRES_URL is not set")
        pytest.skip("PDCA_TEST_POSTGRES_URL is not set")
    engine = sa.create_engine(normalise_url(PG_URL), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        engine.dispose()
        pytest.fail(f"PostgreSQL at {PG_URL} is unreachable: {exc.orig}")
    return engine


def new_postgres_database() -> Iterator[str]:
    """Create an empty database on the test server; yield its URL; drop it afterwards."""
    admin = _pg_admin_engine()
    name = f"pdca_t_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(normalise_url(PG_URL or "")).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A URL of an empty database on ``backend``."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'pdca.db'}"
    else:
        yield from new_postgres_database()


@pytest.fixture
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'pdca.db'}"


@pytest.fixture
def engine(db_url: str) -> Iterator[pdca.Engine]:
    """A migrated, empty engine; afterwards, no connection may be left checked out."""
    eng = pdca.Engine.open(db_url, migrate=True)
    try:
        yield eng
        pool = eng._db.pool
        checked_out = getattr(pool, "checkedout", lambda: 0)()
        assert checked_out == 0, f"{checked_out} connections leaked"
    finally:
        eng.close()


@dataclass(frozen=True)
class Cast:
    """The people of a test: one per role, and staff of two municipalities."""

    admin: str = "admin"
    staff: str = "staff-kumamoto"
    other_staff: str = "staff-kikuchi"
    secretariat: str = "secretariat"
    clerk: str = "clerk"
    auditor: str = "auditor"


@pytest.fixture
def cast(engine: pdca.Engine) -> Cast:
    c = Cast()
    engine.bootstrap_admin(c.admin)
    engine.add_person(c.staff, role="staff", municipality=KUMAMOTO, actor=c.admin)
    engine.add_person(c.other_staff, role="staff", municipality=KIKUCHI, actor=c.admin)
    engine.add_person(c.secretariat, role="secretariat", actor=c.admin)
    engine.add_person(c.clerk, role="clerk", actor=c.admin)
    engine.add_person(c.auditor, role="auditor", actor=c.admin)
    return c


def make_measure(
    engine: pdca.Engine,
    code: str = "M-001",
    *,
    actor: str = "staff-kumamoto",
    municipalities: tuple[str, ...] = (KUMAMOTO,),
    kind: str = "study",
) -> str:
    ref = f"measure:{code}"
    engine.create(
        ref,
        actor=actor,
        data={
            "municipalities": list(municipalities),
            "title_ja": f"施策 {code}",
            "title_en": f"Measure {code}",
            "kind": kind,
        },
    )
    return ref


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()
