"""SQLModel table definitions: the schema on SQLite and PostgreSQL.

Times are integer milliseconds since the epoch (BigInteger, so PostgreSQL does not overflow).
States and statuses are the domain enums' names.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import BigInteger, Column, Index, LargeBinary, Table
from sqlmodel import Field, SQLModel


def _ms(*, nullable: bool = False, index: bool = False) -> Column:  # type: ignore[type-arg]
    return Column(BigInteger, nullable=nullable, index=index)


class AccountRow(SQLModel, table=True):
    __tablename__ = "accounts"

    account_id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=64, unique=True)
    admin: bool = False
    created_ms: int = Field(sa_column=_ms())


class ApiKeyRow(SQLModel, table=True):
    """An API key: the secret is kept only as its SHA-256 (it is 256 random bits)."""

    __tablename__ = "api_keys"

    key_id: str = Field(primary_key=True, max_length=64)
    account_id: str = Field(max_length=64, index=True)
    secret_hash: str = Field(max_length=64)
    description: str = Field(default="", max_length=256)
    created_ms: int = Field(sa_column=_ms())
    revoked_ms: int | None = Field(default=None, sa_column=_ms(nullable=True))


class ActivationRow(SQLModel, table=True):
    """What agents register with: the code is kept only as its SHA-256."""

    __tablename__ = "activations"

    activation_id: str = Field(primary_key=True, max_length=64)
    account_id: str = Field(max_length=64, index=True)
    region_id: str = Field(max_length=64)
    code_hash: str = Field(max_length=64)
    description: str = Field(default="", max_length=256)
    max_registrations: int
    registrations: int = 0
    expires_ms: int = Field(sa_column=_ms())
    created_ms: int = Field(sa_column=_ms())


class AuditRow(SQLModel, table=True):
    __tablename__ = "audit_events"

    event_id: str = Field(primary_key=True, max_length=64)
    time_ms: int = Field(sa_column=_ms(index=True))
    account_id: str = Field(max_length=64, index=True)
    key_id: str = Field(max_length=64)
    method: str = Field(max_length=128)
    resource_ids: str = "[]"  # JSON list
    code: str = Field(max_length=32)
    peer: str = Field(default="", max_length=128)


class ServerRow(SQLModel, table=True):
    """A running cloudassist-server process; a stale heartbeat means it is gone."""

    __tablename__ = "servers"

    server_id: str = Field(primary_key=True, max_length=64)
    address: str = Field(default="", max_length=256)
    heartbeat_ms: int = Field(sa_column=_ms())


class CommandRow(SQLModel, table=True):
    __tablename__ = "commands"
    __table_args__ = (
        Index("ix_commands_account_region_command", "account_id", "region_id", "command_id"),
    )

    command_id: str = Field(primary_key=True, max_length=64)
    account_id: str = Field(max_length=64)
    region_id: str = Field(max_length=64)
    name: str = Field(max_length=512)
    type: str = Field(max_length=32)
    content: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    description: str = Field(default="", max_length=2048)
    working_dir: str = Field(default="", max_length=4096)
    timeout_seconds: int = Field(sa_column=Column(BigInteger, nullable=False))
    enable_parameter: bool = False
    parameter_names: str = "[]"  # JSON list
    launcher: str = Field(default="", max_length=1024)
    invoke_times: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    created_ms: int = Field(sa_column=_ms())


class IdempotencyRow(SQLModel, table=True):
    """A client_token already used: the request it came with and what it created."""

    __tablename__ = "idempotency_tokens"

    account_id: str = Field(primary_key=True, max_length=64)
    region_id: str = Field(primary_key=True, max_length=64)
    operation: str = Field(primary_key=True, max_length=32)
    client_token: str = Field(primary_key=True, max_length=64)
    request_hash: str = Field(max_length=64)
    result: str  # JSON
    created_ms: int = Field(sa_column=_ms())


class InstanceRow(SQLModel, table=True):
    """A registered instance; its agent authenticates with the secret whose hash is here."""

    __tablename__ = "instances"
    __table_args__ = (
        Index("ix_instances_account_region_instance", "account_id", "region_id", "instance_id"),
    )

    instance_id: str = Field(primary_key=True, max_length=128)
    account_id: str = Field(max_length=64)
    region_id: str = Field(max_length=64)
    secret_hash: str = Field(max_length=64)
    activation_id: str = Field(default="", max_length=64)
    os_type: str = Field(max_length=16)
    hostname: str = Field(default="", max_length=255)
    agent_version: str = Field(default="", max_length=64)
    online: bool = False
    # The server holding the agent's stream (while online).
    server_id: str = Field(default="", max_length=64)
    last_heartbeat_ms: int | None = Field(default=None, sa_column=_ms(nullable=True))
    registered_ms: int = Field(sa_column=_ms())
    invocation_count: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    last_invoked_ms: int | None = Field(default=None, sa_column=_ms(nullable=True))
    # The boot id its agent last reported.
    boot_id: str = Field(default="", max_length=64)
    # JSON list: command types its agent runs beyond its OS's own.
    extra_command_types: str = "[]"


class CommandTagRow(SQLModel, table=True):
    __tablename__ = "command_tags"
    __table_args__ = (Index("ix_command_tags_key_value", "key", "value"),)

    command_id: str = Field(primary_key=True, max_length=64)
    key: str = Field(primary_key=True, max_length=128)
    value: str = Field(default="", max_length=128)


class InstanceTagRow(SQLModel, table=True):
    """A tag on an instance: set through the API (`source` "api") or reported by its agent
    ("agent"); an API tag wins over the agent's for the same key."""

    __tablename__ = "instance_tags"
    __table_args__ = (Index("ix_instance_tags_key_value", "key", "value"),)

    instance_id: str = Field(primary_key=True, max_length=128)
    key: str = Field(primary_key=True, max_length=128)
    value: str = Field(default="", max_length=128)
    source: str = Field(default="api", max_length=8)


class InvocationRow(SQLModel, table=True):
    __tablename__ = "invocations"
    __table_args__ = (
        Index("ix_invocations_account_region_invoke", "account_id", "region_id", "invoke_id"),
        Index("ix_invocations_account_region_created", "account_id", "region_id", "created_ms"),
    )

    invoke_id: str = Field(primary_key=True, max_length=64)
    account_id: str = Field(max_length=64)
    region_id: str = Field(max_length=64)
    command_id: str = Field(max_length=64, index=True)
    command_name: str = Field(max_length=512)
    command_type: str = Field(max_length=32)
    content: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    enable_parameter: bool = False
    parameters: str = "{}"  # JSON object
    repeat_mode: str = Field(max_length=16)
    frequency: str = Field(default="", max_length=256)
    timeout_seconds: int = Field(sa_column=Column(BigInteger, nullable=False))
    working_dir: str = Field(default="", max_length=4096)
    username: str = Field(default="", max_length=256)
    env: str = "{}"  # JSON object: the scripts' environment variables
    launcher: str = Field(default="", max_length=1024)
    # Rate control (targets at once, errors tolerated); NULL: no limit.
    max_concurrency: int | None = None
    max_errors: int | None = None
    # How long a task waits for its agent once it is sent (held tasks start the wait later).
    delivery_timeout_ms: int = Field(default=60_000, sa_column=_ms(nullable=False))
    # SendFile: JSON of the file its tasks write ("" for a command).
    file: str = ""
    # The output stored per record, for records made after the invocation (reboot modes).
    output_limit: int = Field(default=10 * 1024 * 1024, sa_column=_ms(nullable=False))
    status: str = Field(max_length=16)
    # ONCE, or a schedule that fires once (at): instances mirror their only record.
    one_shot: bool = True
    # The next scheduled fire; NULL when nothing more is scheduled.
    next_fire_ms: int | None = Field(default=None, sa_column=_ms(nullable=True, index=True))
    created_ms: int = Field(sa_column=_ms())


class InvocationInstanceRow(SQLModel, table=True):
    """One instance of an invocation. It mirrors its latest record; a periodic one stays
    Running (coarse) until it is stopped."""

    __tablename__ = "invocation_instances"

    invoke_id: str = Field(primary_key=True, max_length=64)
    instance_id: str = Field(primary_key=True, max_length=128, index=True)
    state: str = Field(max_length=16)
    status: str = Field(max_length=16)
    repeats: int = 0
    # Stopped by StopInvocation: no more scheduled runs on this instance.
    stopped: bool = False
    latest_record_id: str | None = Field(default=None, max_length=64)
    # Reboot modes: the instance's boot id when it last ran (or was invoked); a hello with
    # another one means the instance has booted since.
    boot_id: str = Field(default="", max_length=64)
    exit_code: int | None = None
    error_code: str = Field(default="", max_length=64)
    error_info: str = Field(default="", max_length=1024)
    created_ms: int = Field(sa_column=_ms())
    start_ms: int | None = Field(default=None, sa_column=_ms(nullable=True))
    finish_ms: int | None = Field(default=None, sa_column=_ms(nullable=True))
    stop_ms: int | None = Field(default=None, sa_column=_ms(nullable=True))
    updated_ms: int = Field(sa_column=_ms())


class RecordRow(SQLModel, table=True):
    """One execution on one instance; its id is the task id the agent sees."""

    __tablename__ = "records"
    __table_args__ = (
        Index("ix_records_instance_id_state", "instance_id", "state"),
        Index("ix_records_delivered_state", "delivered", "state"),
        # The metrics count records by state on every scrape.
        Index("ix_records_state", "state"),
    )

    record_id: str = Field(primary_key=True, max_length=64)
    invoke_id: str = Field(max_length=64, index=True)
    instance_id: str = Field(max_length=128)
    state: str = Field(max_length=16)
    exit_code: int | None = None
    output_size: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    output_limit: int = Field(sa_column=Column(BigInteger, nullable=False))
    dropped: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    # The agent's last report is stored: no more output will come.
    agent_done: bool = False
    error_code: str = Field(default="", max_length=64)
    error_info: str = Field(default="", max_length=1024)
    repeats: int = 1
    created_ms: int = Field(sa_column=_ms())
    start_ms: int | None = Field(default=None, sa_column=_ms(nullable=True))
    finish_ms: int | None = Field(default=None, sa_column=_ms(nullable=True))
    stop_ms: int | None = Field(default=None, sa_column=_ms(nullable=True))
    # The next moment the reaper must look at this record: delivery deadline while PENDING,
    # execution deadline while RUNNING, stop confirmation deadline while STOPPING.
    deadline_ms: int | None = Field(default=None, sa_column=_ms(nullable=True, index=True))
    # Its output has been copied to the server's --output-dir.
    delivered: bool = False
    # PENDING but not sent yet: waiting for a place under the invocation's max_concurrency.
    held: bool = False


class OutputChunkRow(SQLModel, table=True):
    """Bytes [offset, end_offset) of a record's output."""

    __tablename__ = "output_chunks"

    record_id: str = Field(primary_key=True, max_length=64)
    offset: int = Field(sa_column=Column(BigInteger, primary_key=True))
    end_offset: int = Field(sa_column=Column(BigInteger, nullable=False))
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class InvocationDayRow(SQLModel, table=True):
    """How many invocations an account made in a region on one day (the daily quota): kept
    in each invocation's transaction, so the quota check reads one row instead of counting
    the day's invocations."""

    __tablename__ = "invocation_days"

    account_id: str = Field(primary_key=True, max_length=64)
    region_id: str = Field(primary_key=True, max_length=64)
    # The day's first millisecond in the server's default time zone.
    day_start_ms: int = Field(sa_column=Column(BigInteger, primary_key=True))
    invocations: int


def _table(model: type[SQLModel]) -> Table:
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


SERVERS = _table(ServerRow)
ACCOUNTS = _table(AccountRow)
API_KEYS = _table(ApiKeyRow)
ACTIVATIONS = _table(ActivationRow)
AUDIT = _table(AuditRow)
COMMANDS = _table(CommandRow)
COMMAND_TAGS = _table(CommandTagRow)
IDEMPOTENCY = _table(IdempotencyRow)
INSTANCES = _table(InstanceRow)
INSTANCE_TAGS = _table(InstanceTagRow)
INVOCATIONS = _table(InvocationRow)
INVOCATION_INSTANCES = _table(InvocationInstanceRow)
INVOCATION_DAYS = _table(InvocationDayRow)
RECORDS = _table(RecordRow)
OUTPUT_CHUNKS = _table(OutputChunkRow)
