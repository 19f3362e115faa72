"""server/logs.py: the text and JSON formats, and the lifecycle lines the server writes with
them (records that ended)."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from datetime import datetime

import pytest

from cloudassist.agent.config import parse_config
from cloudassist.common import logs
from cloudassist.common.logs import JsonFormatter, TextFormatter, about
from cloudassist.server.domain import reasons
from cloudassist.server.domain.reports import RecordEnded
from cloudassist.server.fleet.hub import log_ended


def emit(
    formatter: logging.Formatter,
    message: str,
    *args: object,
    extra: dict[str, object] | None = None,
    exc_info: bool = False,
) -> str:
    """What `formatter` makes of one log call on the logger "server.test"."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    logger = logging.getLogger("server.test")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        if exc_info:
            try:
                raise ValueError("boom")
            except ValueError:
                logger.error(message, *args, extra=extra, exc_info=True)
        else:
            logger.warning(message, *args, extra=extra)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    return out.getvalue().rstrip("\n")


def test_text_appends_the_fields_as_key_value_in_a_fixed_order() -> None:
    line = emit(
        TextFormatter(),
        "task %s",
        "dispatched",
        extra=about(record_id="r-1", instance_id="i-a", invoke_id="t-1"),
    )
    # The order of FIELDS, whatever the order of the call.
    assert line.endswith(
        " WARNING server.test: task dispatched invoke_id=t-1 instance_id=i-a record_id=r-1"
    )


def test_text_without_fields_is_the_plain_line() -> None:
    assert emit(TextFormatter(), "stopped").endswith(" WARNING server.test: stopped")


def test_text_keeps_the_traceback_below_the_fields() -> None:
    lines = emit(TextFormatter(), "failed", extra=about(invoke_id="t-1"), exc_info=True).split("\n")
    assert lines[0].endswith("ERROR server.test: failed invoke_id=t-1")
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: boom"


def test_json_is_one_object_with_the_fields_at_the_top_level() -> None:
    line = emit(
        JsonFormatter(),
        "task %s",
        "ended",
        extra=about(invoke_id="t-1", instance_id="i-a", exit_code=3, state="FAILED"),
    )
    assert "\n" not in line
    entry = json.loads(line)
    assert entry.pop("time").endswith("+00:00")  # UTC
    assert entry == {
        "level": "WARNING",
        "logger": "server.test",
        "message": "task ended",
        "invoke_id": "t-1",
        "instance_id": "i-a",
        "exit_code": 3,
        "state": "FAILED",
    }


def test_json_time_is_the_records_creation_time() -> None:
    before = datetime.now().astimezone()
    entry = json.loads(emit(JsonFormatter(), "now"))
    after = datetime.now().astimezone()
    assert before.replace(microsecond=0) <= datetime.fromisoformat(entry["time"]) <= after


def test_json_keeps_the_exception_in_its_own_field() -> None:
    entry = json.loads(emit(JsonFormatter(), "failed", exc_info=True))
    assert entry["message"] == "failed"
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert entry["exception"].endswith("ValueError: boom")


def test_json_writes_what_json_cannot_hold_as_text() -> None:
    entry = json.loads(emit(JsonFormatter(), "odd", extra=about(instances={"i-a"})))
    assert entry["instances"] == "{'i-a'}"


def test_an_unknown_field_is_refused() -> None:
    with pytest.raises(AssertionError, match="unknown log fields"):
        about(invoke_id="t-1", invokeid="t-1")
    # A field named like a LogRecord attribute would otherwise replace it.
    with pytest.raises(AssertionError, match="unknown log fields"):
        about(msg="shadowed")


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, given back as it was."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(
    ("log_format", "formatter"), [("json", JsonFormatter), ("text", TextFormatter)]
)
def test_configure_installs_one_handler_of_the_format(
    root_logger: logging.Logger, log_format: str, formatter: type[logging.Formatter]
) -> None:
    out = io.StringIO()
    logs.configure("WARNING", log_format, stream=out)
    [handler] = root_logger.handlers
    assert type(handler.formatter) is formatter
    logging.getLogger("server.x").info("quiet")
    logging.getLogger("server.x").warning("loud", extra=about(record_id="r-1"))
    [line] = out.getvalue().splitlines()
    if log_format == "json":
        assert json.loads(line)["record_id"] == "r-1"
    else:
        assert line.endswith("server.x: loud record_id=r-1")


def test_configure_writes_to_stderr_by_default(root_logger: logging.Logger) -> None:
    logs.configure("INFO", "json")
    [handler] = root_logger.handlers
    assert isinstance(handler, logging.StreamHandler)
    assert handler.stream is sys.stderr


# The lifecycle lines ------------------------------------------------------------------------


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, dict[str, object]]]:
    """Each captured line: its message and the fields it carries."""
    return [
        (r.getMessage(), {k: v for k, v in vars(r).items() if k in logs.FIELDS})
        for r in caplog.records
    ]


def test_every_ended_record_is_logged_with_its_ids(caplog: pytest.LogCaptureFixture) -> None:
    ended = [
        RecordEnded("t-1", "i-a", "r-1", "FAILED", 3, reasons.EXIT_CODE_NONZERO),
        RecordEnded("t-1", "i-b", "r-2", "TIMEOUT", None, reasons.EXECUTION_TIMEOUT),
    ]
    with caplog.at_level(logging.INFO, logger="cloudassist.server.fleet.hub"):
        log_ended(ended)
    assert _lines(caplog) == [
        (
            "record ended: FAILED",
            {
                "invoke_id": "t-1",
                "instance_id": "i-a",
                "record_id": "r-1",
                "state": "FAILED",
                "exit_code": 3,
                "error_code": reasons.EXIT_CODE_NONZERO,
            },
        ),
        (
            "record ended: TIMEOUT",
            {
                "invoke_id": "t-1",
                "instance_id": "i-b",
                "record_id": "r-2",
                "state": "TIMEOUT",
                "exit_code": None,
                "error_code": reasons.EXECUTION_TIMEOUT,
            },
        ),
    ]


# The agent logs the same way ---------------------------------------------------------------


def test_the_agent_takes_its_log_format_from_a_flag_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CLOUDASSIST_AGENT_LOG_FORMAT", raising=False)
    assert parse_config([]).log_format == "text"
    assert parse_config(["--log-format", "json"]).log_format == "json"
    monkeypatch.setenv("CLOUDASSIST_AGENT_LOG_FORMAT", "json")
    assert parse_config([]).log_format == "json"
    assert parse_config(["--log-format", "text"]).log_format == "text"
    with pytest.raises(SystemExit):
        parse_config(["--log-format", "yaml"])
