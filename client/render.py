"""Human tables, JSON, and readable gRPC errors for the CLI."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2
from grpc import aio


def print_json(message: Message) -> None:
    data = json_format.MessageToDict(message, preserving_proto_field_name=True)
    print(json.dumps(data, indent=2, sort_keys=True))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if index == 0:
            print("  ".join("-" * w for w in widths))


def when(ts: Timestamp, present: bool = True) -> str:
    if not present or (ts.seconds == 0 and ts.nanos == 0):
        return "-"
    return datetime.fromtimestamp(ts.seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def enum_suffix(name: str) -> str:
    """`EXECUTION_STATE_RUNNING` -> `RUNNING`."""
    for prefix in (
        "EXECUTION_STATE_",
        "INVOKE_STATUS_",
        "COMMAND_TYPE_",
        "OS_TYPE_",
        "REPEAT_MODE_",
    ):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def describe_rpc_error(error: aio.AioRpcError) -> str:
    """`CODE (reason): message`, then each field violation on its own line."""
    lines = [f"{error.code().name}: {error.details()}"]
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                lines[0] = f"{error.code().name} ({info.reason}): {error.details()}"
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                for violation in bad.field_violations:
                    if violation.description == error.details():
                        continue
                    lines.append(f"  field {violation.field}: {violation.description}")
    return "\n".join(lines)


def error(text: str) -> None:
    print(f"cloudassist: {text}", file=sys.stderr)
