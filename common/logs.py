"""Log output: readable text, or one JSON object per line (`--log-format json`).

Log calls name what they are about in `extra` (`about(invoke_id=..., instance_id=...)`); the
text format appends those fields as `key=value`, the JSON format puts them at the top level, so
that a log pipeline can select every line about one invocation or one instance.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

# The ids and facts a log line may carry, in the order the text format prints them.
FIELDS = (
    "invoke_id",
    "instance_id",
    "record_id",
    "command_id",
    "account_id",
    "method",
    "code",
    "state",
    "exit_code",
    "error_code",
    "instances",
)

LOG_FORMATS = ("text", "json")


def about(**fields: object) -> dict[str, object]:
    """The `extra` of a log call: only known fields, so a typo cannot shadow a LogRecord
    attribute."""
    unknown = set(fields) - set(FIELDS)
    assert not unknown, f"unknown log fields {unknown}"
    return fields


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in FIELDS if hasattr(record, name)}


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if not fields:
            return line
        head, newline, rest = line.partition("\n")  # keep a traceback below the fields
        tail = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{head} {tail}{newline}{rest}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(level: str, log_format: str, stream: TextIO = sys.stderr) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
