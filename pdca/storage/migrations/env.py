"""Alembic environment: migrations run on the connection pdca hands over."""

from __future__ import annotations

from alembic import context

from pdca.storage.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - pdca always passes its connection
    raise RuntimeError("run pdca's migrations through pdca.storage.database.upgrade()")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
context.run_migrations()
