"""Human tables, JSON, and readable gRPC errors for the CLI."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar, runtime_checkable

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2
from grpc import aio

from cloudassist.client.style import PLAIN, Palette, visible

T = TypeVar("T")
# A table column: its header, and the cell of one item.
Column = tuple[str, Callable[[T], object]]


def message_dict(message: Message) -> dict[str, Any]:
    """A message as JSON data, with the proto field names (`invoke_id`, not `invokeId`)."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def print_json(message: Message) -> None:
    print(json.dumps(message_dict(message), indent=2, sort_keys=True))


def print_json_line(data: dict[str, Any]) -> None:
    """One JSON object on one line (JSON lines), flushed: for streams of events."""
    sys.stdout.write(json.dumps(data, sort_keys=True) + "\n")
    sys.stdout.flush()


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], palette: Palette = PLAIN
) -> list[str]:
    """Columns padded to their widest cell; cells may be painted (widths ignore the colour)."""
    cells = [[palette.paint(str(h), "bold") for h in headers]]
    cells += [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(visible(row[i])) for row in cells) for i in range(len(headers))]
    lines = []
    for index, row in enumerate(cells):
        padded = [cell + " " * (widths[i] - len(visible(cell))) for i, cell in enumerate(row)]
        lines.append("  ".join(padded).rstrip())
        if index == 0:
            lines.append(palette.paint("  ".join("-" * w for w in widths), "dim"))
    return lines


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], palette: Palette = PLAIN
) -> None:
    for line in format_table(headers, rows, palette):
        print(line)


@runtime_checkable
class _Page(Protocol):
    """A list response that may be one page of several."""

    @property
    def total_count(self) -> int: ...

    @property
    def next_page_token(self) -> str: ...


def print_listing(
    response: Message,
    items: Sequence[T],
    columns: Sequence[Column[T]],
    palette: Palette = PLAIN,
    *,
    as_json: bool = False,
) -> None:
    """A list response: the whole of it as JSON, or a table of `items` and, when there are
    more pages, how to get the next one. Cells are made only for the table."""
    if as_json:
        print_json(response)
        return
    print_table(
        [header for header, _ in columns],
        [[cell(i) for _, cell in columns] for i in items],
        palette,
    )
    if isinstance(response, _Page) and response.next_page_token:
        print(
            f"({len(items)} of {response.total_count}; "
            f"next page: --page-token {response.next_page_token})"
        )


def print_ids(response: Message, *words: object, as_json: bool = False) -> None:
    """The answer to a call that changes something: with --json the response, else `words`
    (the ids a script wants) on one line, or nothing when success is the whole answer."""
    if as_json:
        print_json(response)
    elif words:
        print(*words)


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


# What to try next, for the failures a user can fix on their side.
_HINTS = {
    grpc.StatusCode.UNAVAILABLE: "is a server listening on {server}? "
    "(see --server, CLOUDASSIST_SERVER)",
    grpc.StatusCode.UNAUTHENTICATED: "give a valid API key with --api-key or CLOUDASSIST_API_KEY",
    grpc.StatusCode.PERMISSION_DENIED: "this needs the key of an admin account",
}


def _violation_line(field: str, description: str) -> str:
    # The server's descriptions usually start with the field already.
    if not field or description.startswith(f"{field}:"):
        return description
    return f"{field}: {description}"


def describe_status(
    code: grpc.StatusCode,
    message: str,
    details: bytes | None,
    server: str = "",
    palette: Palette = PLAIN,
) -> str:
    """`error: CODE Reason`, then every field violation (or the message) on its own
    indented line, then when to retry and what to try, if anything."""
    reason = ""
    problems: list[str] = []
    extras: list[str] = []
    status = status_pb2.Status.FromString(details) if details else status_pb2.Status()
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            problems += [_violation_line(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            extras.append(f"retry in {retry.retry_delay.ToTimedelta().total_seconds():g} s")
    if message and message not in problems:
        problems.insert(0, message)
    hint = _HINTS.get(code)
    if hint:
        extras.append("hint: " + hint.format(server=server or "the address given"))
    head = f"{palette.paint('error:', 'red', 'bold')} {code.name}"
    if reason:
        head += f" {palette.paint(reason, 'bold')}"
    return "\n".join([head] + [f"  {p}" for p in problems] + [f"  {e}" for e in extras])


def describe_rpc_error(error: aio.AioRpcError, server: str = "", palette: Palette = PLAIN) -> str:
    """A failed call, readably: see describe_status."""
    details = None
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            details = value
    return describe_status(error.code(), error.details() or "", details, server, palette)


def error(text: str) -> None:
    print(f"cloudassist: {text}", file=sys.stderr)
