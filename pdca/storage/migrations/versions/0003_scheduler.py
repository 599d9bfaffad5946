"""The scheduler: due firings stored as rows under their idempotency key.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pdca.storage.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "due_firings",
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("fiscal_year", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("step", sa.String(60), nullable=True),
        sa.Column("ref", sa.String(200), nullable=True),
        sa.Column("trigger", sa.String(60), nullable=True),
        sa.Column("states", sa.String(200), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("order_no", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("done_at", UTCDateTime(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_due_firings")),
    )
    op.create_index(op.f("ix_due_firings_status_due_at"), "due_firings", ["status", "due_at"])


def downgrade() -> None:
    op.drop_table("due_firings")
