"""The plan and its review cycles: members, evaluations, the new workflows' states.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pdca.storage.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

#: The (workflow, state) pairs the CHECK constraint on entities.state allows at this revision.
STATES = [
    ("advice", "answered"),
    ("advice", "open"),
    ("emissions", "estimated"),
    ("emissions", "final"),
    ("emissions", "preliminary"),
    ("measure", "completed"),
    ("measure", "discontinued"),
    ("measure", "implemented"),
    ("measure", "study"),
    ("meeting", "cancelled"),
    ("meeting", "held"),
    ("meeting", "minutes_recorded"),
    ("meeting", "planned"),
    ("meeting", "postponed"),
    ("municipal_cycle", "act"),
    ("municipal_cycle", "check_emissions"),
    ("municipal_cycle", "check_evaluation"),
    ("municipal_cycle", "check_report"),
    ("municipal_cycle", "check_status"),
    ("municipal_cycle", "closed"),
    ("municipal_cycle", "do"),
    ("municipal_cycle", "emissions_pending"),
    ("municipal_cycle", "evaluation_pending"),
    ("municipal_cycle", "plan"),
    ("municipal_cycle", "report_pending"),
    ("person", "active"),
    ("person", "inactive"),
    ("plan", "active"),
    ("regional_cycle", "act"),
    ("regional_cycle", "check_aggregated"),
    ("regional_cycle", "check_collect"),
    ("regional_cycle", "closed"),
    ("regional_cycle", "committee_held"),
    ("regional_cycle", "council_held"),
    ("regional_cycle", "do"),
    ("regional_cycle", "published"),
    ("theme_project", "active"),
    ("theme_project", "concluded"),
    ("theme_project", "proposed"),
]


def state_check(pairs: list[tuple[str, str]]) -> str:
    allowed = ", ".join(f"'{w}:{s}'" for w, s in sorted(pairs))
    return f"(workflow || ':' || state) IN ({allowed})"


def upgrade() -> None:
    with op.batch_alter_table("entities") as batch:
        batch.drop_constraint(op.f("ck_entities_state"), type_="check")
        batch.create_check_constraint(op.f("ck_entities_state"), sa.text(state_check(STATES)))

    op.create_table(
        "evaluations",
        sa.Column("entity_id", sa.Integer(), nullable=False),
        sa.Column("fiscal_year", sa.Integer(), nullable=False),
        sa.Column("rating", sa.String(20), nullable=False),
        sa.Column("actual", sa.Float(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("recorded_by", sa.String(64), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["entity_id"],
            ["entities.id"],
            name=op.f("fk_evaluations_entity_id_entities"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("entity_id", "fiscal_year", name=op.f("pk_evaluations")),
    )
    op.create_table(
        "members",
        sa.Column("code", sa.String(6), nullable=False),
        sa.Column("name_ja", sa.String(100), nullable=False),
        sa.Column("name_en", sa.String(100), nullable=False),
        sa.Column("joined", sa.Integer(), nullable=False),
        sa.Column("left", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_members")),
    )


def downgrade() -> None:
    op.drop_table("members")
    op.drop_table("evaluations")
