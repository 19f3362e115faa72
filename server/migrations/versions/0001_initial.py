"""The schema of cloudassist 0.1.0: every table as the first release made them.

A database created by 0.1.0 before migrations existed has exactly these tables;
`cloudassist-server migrate` stamps it with this revision and upgrades it from here.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The tables this revision creates: a database without a revision that has them all was made
# by 0.1.0.
TABLES = (
    "accounts",
    "activations",
    "api_keys",
    "audit_events",
    "command_tags",
    "commands",
    "idempotency_tokens",
    "instance_tags",
    "instances",
    "invocation_instances",
    "invocations",
    "output_chunks",
    "records",
    "servers",
)


def upgrade() -> None:

    op.create_table(
        "accounts",
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("admin", sa.Boolean(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account_id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "activations",
        sa.Column("activation_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("region_id", sa.String(length=64), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=256), nullable=False),
        sa.Column("max_registrations", sa.Integer(), nullable=False),
        sa.Column("registrations", sa.Integer(), nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("activation_id"),
    )
    with op.batch_alter_table("activations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_activations_account_id"), ["account_id"], unique=False)

    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=256), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("revoked_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("key_id"),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_keys_account_id"), ["account_id"], unique=False)

    op.create_table(
        "audit_events",
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("time_ms", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=128), nullable=False),
        sa.Column("resource_ids", sa.String(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("peer", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audit_events_account_id"), ["account_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_audit_events_time_ms"), ["time_ms"], unique=False)

    op.create_table(
        "command_tags",
        sa.Column("command_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("value", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("command_id", "key"),
    )
    with op.batch_alter_table("command_tags", schema=None) as batch_op:
        batch_op.create_index("ix_command_tags_key_value", ["key", "value"], unique=False)

    op.create_table(
        "commands",
        sa.Column("command_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("region_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("description", sa.String(length=2048), nullable=False),
        sa.Column("working_dir", sa.String(length=4096), nullable=False),
        sa.Column("timeout_seconds", sa.BigInteger(), nullable=False),
        sa.Column("enable_parameter", sa.Boolean(), nullable=False),
        sa.Column("parameter_names", sa.String(), nullable=False),
        sa.Column("launcher", sa.String(length=1024), nullable=False),
        sa.Column("invoke_times", sa.BigInteger(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("command_id"),
    )
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.create_index(
            "ix_commands_account_region_command",
            ["account_id", "region_id", "command_id"],
            unique=False,
        )

    op.create_table(
        "idempotency_tokens",
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("region_id", sa.String(length=64), nullable=False),
        sa.Column("operation", sa.String(length=32), nullable=False),
        sa.Column("client_token", sa.String(length=64), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("result", sa.String(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "region_id", "operation", "client_token"),
    )
    op.create_table(
        "instance_tags",
        sa.Column("instance_id", sa.String(length=128), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("value", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.PrimaryKeyConstraint("instance_id", "key"),
    )
    with op.batch_alter_table("instance_tags", schema=None) as batch_op:
        batch_op.create_index("ix_instance_tags_key_value", ["key", "value"], unique=False)

    op.create_table(
        "instances",
        sa.Column("instance_id", sa.String(length=128), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("region_id", sa.String(length=64), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("activation_id", sa.String(length=64), nullable=False),
        sa.Column("os_type", sa.String(length=16), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("agent_version", sa.String(length=64), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("server_id", sa.String(length=64), nullable=False),
        sa.Column("last_heartbeat_ms", sa.BigInteger(), nullable=True),
        sa.Column("registered_ms", sa.BigInteger(), nullable=False),
        sa.Column("invocation_count", sa.BigInteger(), nullable=False),
        sa.Column("last_invoked_ms", sa.BigInteger(), nullable=True),
        sa.Column("boot_id", sa.String(length=64), nullable=False),
        sa.Column("extra_command_types", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("instance_id"),
    )
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.create_index(
            "ix_instances_account_region_instance",
            ["account_id", "region_id", "instance_id"],
            unique=False,
        )

    op.create_table(
        "invocation_instances",
        sa.Column("invoke_id", sa.String(length=64), nullable=False),
        sa.Column("instance_id", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("repeats", sa.Integer(), nullable=False),
        sa.Column("stopped", sa.Boolean(), nullable=False),
        sa.Column("latest_record_id", sa.String(length=64), nullable=True),
        sa.Column("boot_id", sa.String(length=64), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=False),
        sa.Column("error_info", sa.String(length=1024), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("start_ms", sa.BigInteger(), nullable=True),
        sa.Column("finish_ms", sa.BigInteger(), nullable=True),
        sa.Column("stop_ms", sa.BigInteger(), nullable=True),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("invoke_id", "instance_id"),
    )
    with op.batch_alter_table("invocation_instances", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_invocation_instances_instance_id"), ["instance_id"], unique=False
        )

    op.create_table(
        "invocations",
        sa.Column("invoke_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("region_id", sa.String(length=64), nullable=False),
        sa.Column("command_id", sa.String(length=64), nullable=False),
        sa.Column("command_name", sa.String(length=512), nullable=False),
        sa.Column("command_type", sa.String(length=32), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("enable_parameter", sa.Boolean(), nullable=False),
        sa.Column("parameters", sa.String(), nullable=False),
        sa.Column("repeat_mode", sa.String(length=16), nullable=False),
        sa.Column("frequency", sa.String(length=256), nullable=False),
        sa.Column("timeout_seconds", sa.BigInteger(), nullable=False),
        sa.Column("working_dir", sa.String(length=4096), nullable=False),
        sa.Column("username", sa.String(length=256), nullable=False),
        sa.Column("env", sa.String(), nullable=False),
        sa.Column("launcher", sa.String(length=1024), nullable=False),
        sa.Column("max_concurrency", sa.Integer(), nullable=True),
        sa.Column("max_errors", sa.Integer(), nullable=True),
        sa.Column("delivery_timeout_ms", sa.BigInteger(), nullable=False),
        sa.Column("file", sa.String(), nullable=False),
        sa.Column("output_limit", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("one_shot", sa.Boolean(), nullable=False),
        sa.Column("next_fire_ms", sa.BigInteger(), nullable=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("invoke_id"),
    )
    with op.batch_alter_table("invocations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_invocations_account_region_created",
            ["account_id", "region_id", "created_ms"],
            unique=False,
        )
        batch_op.create_index(
            "ix_invocations_account_region_invoke",
            ["account_id", "region_id", "invoke_id"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_invocations_command_id"), ["command_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_invocations_next_fire_ms"), ["next_fire_ms"], unique=False
        )

    op.create_table(
        "output_chunks",
        sa.Column("record_id", sa.String(length=64), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("end_offset", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("record_id", "offset"),
    )
    op.create_table(
        "records",
        sa.Column("record_id", sa.String(length=64), nullable=False),
        sa.Column("invoke_id", sa.String(length=64), nullable=False),
        sa.Column("instance_id", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("output_size", sa.BigInteger(), nullable=False),
        sa.Column("output_limit", sa.BigInteger(), nullable=False),
        sa.Column("dropped", sa.BigInteger(), nullable=False),
        sa.Column("agent_done", sa.Boolean(), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=False),
        sa.Column("error_info", sa.String(length=1024), nullable=False),
        sa.Column("repeats", sa.Integer(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("start_ms", sa.BigInteger(), nullable=True),
        sa.Column("finish_ms", sa.BigInteger(), nullable=True),
        sa.Column("stop_ms", sa.BigInteger(), nullable=True),
        sa.Column("deadline_ms", sa.BigInteger(), nullable=True),
        sa.Column("delivered", sa.Boolean(), nullable=False),
        sa.Column("held", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("record_id"),
    )
    with op.batch_alter_table("records", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_records_deadline_ms"), ["deadline_ms"], unique=False)
        batch_op.create_index("ix_records_delivered_state", ["delivered", "state"], unique=False)
        batch_op.create_index(
            "ix_records_instance_id_state", ["instance_id", "state"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_records_invoke_id"), ["invoke_id"], unique=False)

    op.create_table(
        "servers",
        sa.Column("server_id", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=256), nullable=False),
        sa.Column("heartbeat_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("server_id"),
    )


def downgrade() -> None:

    op.drop_table("servers")
    with op.batch_alter_table("records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_records_invoke_id"))
        batch_op.drop_index("ix_records_instance_id_state")
        batch_op.drop_index("ix_records_delivered_state")
        batch_op.drop_index(batch_op.f("ix_records_deadline_ms"))

    op.drop_table("records")
    op.drop_table("output_chunks")
    with op.batch_alter_table("invocations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_invocations_next_fire_ms"))
        batch_op.drop_index(batch_op.f("ix_invocations_command_id"))
        batch_op.drop_index("ix_invocations_account_region_invoke")
        batch_op.drop_index("ix_invocations_account_region_created")

    op.drop_table("invocations")
    with op.batch_alter_table("invocation_instances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_invocation_instances_instance_id"))

    op.drop_table("invocation_instances")
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_index("ix_instances_account_region_instance")

    op.drop_table("instances")
    with op.batch_alter_table("instance_tags", schema=None) as batch_op:
        batch_op.drop_index("ix_instance_tags_key_value")

    op.drop_table("instance_tags")
    op.drop_table("idempotency_tokens")
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.drop_index("ix_commands_account_region_command")

    op.drop_table("commands")
    with op.batch_alter_table("command_tags", schema=None) as batch_op:
        batch_op.drop_index("ix_command_tags_key_value")

    op.drop_table("command_tags")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_time_ms"))
        batch_op.drop_index(batch_op.f("ix_audit_events_account_id"))

    op.drop_table("audit_events")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_account_id"))

    op.drop_table("api_keys")
    with op.batch_alter_table("activations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_activations_account_id"))

    op.drop_table("activations")
    op.drop_table("accounts")
