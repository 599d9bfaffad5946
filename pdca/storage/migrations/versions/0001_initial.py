"""The engine core: entities, their scope, the append-only audit log, the outbox, settings.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pdca.storage.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

#: The (workflow, state) pairs the CHECK constraint on entities.state allows at this revision.
STATES = [
    ("measure", "completed"),
    ("measure", "discontinued"),
    ("measure", "implemented"),
    ("measure", "study"),
    ("person", "active"),
    ("person", "inactive"),
]


def state_check(pairs: list[tuple[str, str]]) -> str:
    allowed = ", ".join(f"'{w}:{s}'" for w, s in sorted(pairs))
    return f"(workflow || ':' || state) IN ({allowed})"


APPEND_ONLY_PG = """
CREATE FUNCTION pdca_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table(
        "entities",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ref", sa.String(200), nullable=False),
        sa.Column("workflow", sa.String(40), nullable=False),
        sa.Column("state", sa.String(60), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(400), nullable=False),
        sa.Column("fiscal_year", sa.Integer(), nullable=True),
        sa.Column("attrs", sa.Text(), nullable=False),
        sa.Column("overdue_since", UTCDateTime(), nullable=True),
        sa.Column("chain_len", sa.Integer(), nullable=False),
        sa.Column("chain_head", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entities")),
        sa.UniqueConstraint("ref", name=op.f("uq_entities_ref")),
        sa.CheckConstraint(state_check(STATES), name=op.f("ck_entities_state")),
    )
    op.create_index(op.f("ix_entities_workflow_state"), "entities", ["workflow", "state"])
    op.create_index(op.f("ix_entities_fiscal_year"), "entities", ["fiscal_year"])

    op.create_table(
        "entity_scope",
        sa.Column("entity_id", sa.Integer(), nullable=False),
        sa.Column("municipality", sa.String(6), nullable=False),
        sa.ForeignKeyConstraint(
            ["entity_id"],
            ["entities.id"],
            name=op.f("fk_entity_scope_entity_id_entities"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("entity_id", "municipality", name=op.f("pk_entity_scope")),
    )
    op.create_index(op.f("ix_entity_scope_municipality"), "entity_scope", ["municipality"])

    if bind.dialect.name == "postgresql":
        op.execute("CREATE SEQUENCE audit_seq")
    seq_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "audit_log",
        sa.Column("seq", seq_type, nullable=False),
        sa.Column("ref", sa.String(200), nullable=False),
        sa.Column("entity_seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("virtual_at", UTCDateTime(), nullable=True),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("fiscal_year", sa.Integer(), nullable=True),
        sa.Column("trigger", sa.String(60), nullable=False),
        sa.Column("from_state", sa.String(60), nullable=True),
        sa.Column("to_state", sa.String(60), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("workflow_version", sa.String(64), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_log")),
        sa.UniqueConstraint("ref", "entity_seq", name=op.f("uq_audit_log_ref_entity_seq")),
    )
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"])
    op.create_index(op.f("ix_audit_log_actor"), "audit_log", ["actor"])

    op.create_table(
        "outbox",
        sa.Column("id", seq_type, autoincrement=True, nullable=False),
        sa.Column("audit_seq", seq_type, nullable=True),
        sa.Column("channel", sa.String(40), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    op.create_index(
        op.f("ix_outbox_done_channel_next_attempt_at"),
        "outbox",
        ["done", "channel", "next_attempt_at"],
    )

    op.create_table(
        "settings",
        sa.Column("key", sa.String(60), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_settings")),
    )

    # The audit log is append-only, enforced by the database itself.
    if bind.dialect.name == "postgresql":
        op.execute(APPEND_ONLY_PG)
        op.execute(
            "CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION pdca_audit_append_only()"
        )
        op.execute(
            "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
            "FOR EACH STATEMENT EXECUTE FUNCTION pdca_audit_append_only()"
        )
    else:
        for op_name in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_log_no_{op_name.lower()} BEFORE {op_name} ON audit_log "
                f"BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: {op_name} is not "
                "allowed'); END"
            )


def downgrade() -> None:
    raise NotImplementedError("the audit log is never dropped by a migration")
