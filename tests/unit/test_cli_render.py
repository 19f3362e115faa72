"""The CLI's pure rendering: colour decisions, the live view's lines, the summary table, errors."""

from __future__ import annotations

import io
import json

import pytest
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2
from grpc import StatusCode

from cloudassist.client import render
from cloudassist.client.follow import (
    EXIT_NOT_RUN,
    EXIT_STOPPED,
    EXIT_TIMEOUT,
    exit_code_of,
    summary_json,
)
from cloudassist.client.progress import (
    CLEAR_LINE,
    Counts,
    InstanceProgress,
    LiveView,
    apply_change,
    count,
    counts_line,
    finish_line,
    format_duration,
    summary_table,
)
from cloudassist.client.style import COLORED, PLAIN, Palette, paint_state, use_color, visible
from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import instance_pb2

ESC = "\x1b["


def at(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromMicroseconds(int(seconds * 1e6))
    return ts


def change(
    instance_id: str,
    state: pb.ExecutionState.ValueType,
    when: float,
    exit_code: int | None = None,
    record_id: str = "",
    error_code: str = "",
    error_info: str = "",
) -> pb.StateChange:
    message = pb.StateChange(
        instance_id=instance_id,
        record_id=record_id or f"r-{instance_id}",
        state=state,
        error_code=error_code,
        error_info=error_info,
        time=at(when),
    )
    if exit_code is not None:
        message.exit_code = exit_code
    return message


# Colours ---------------------------------------------------------------------------------


def test_auto_colours_only_a_terminal_without_no_color() -> None:
    assert use_color("auto", isatty=True, environ={}) is True
    assert use_color("auto", isatty=False, environ={}) is False
    assert use_color("auto", isatty=True, environ={"NO_COLOR": "1"}) is False
    # no-color.org: set to an empty string, NO_COLOR does not count.
    assert use_color("auto", isatty=True, environ={"NO_COLOR": ""}) is True


def test_the_color_flag_overrides_the_terminal_and_no_color() -> None:
    assert use_color("always", isatty=False, environ={"NO_COLOR": "1"}) is True
    assert use_color("never", isatty=True, environ={}) is False


def test_a_disabled_palette_leaves_text_alone() -> None:
    assert PLAIN.paint("SUCCESS", "green", "bold") == "SUCCESS"
    assert COLORED.paint("SUCCESS", "green", "bold") == "\x1b[32;1mSUCCESS\x1b[0m"
    assert visible(COLORED.paint("SUCCESS", "green")) == "SUCCESS"
    assert paint_state(COLORED, "FAILED") == "\x1b[31mFAILED\x1b[0m"
    assert paint_state(COLORED, "NOT_A_STATE") == "NOT_A_STATE"


# The live view's lines -------------------------------------------------------------------


def test_counts_line() -> None:
    line = counts_line(Counts(done=1, running=2), elapsed=3.0)
    assert line == "1 done, 2 running, 0 failed, 0 pending  [3.0s]"
    stopped = counts_line(Counts(done=1, failed=1, stopped=2, pending=3), elapsed=75)
    assert stopped == "1 done, 0 running, 1 failed, 2 stopped, 3 pending  [1m15s]"


def test_counts_line_colours_only_what_is_not_zero() -> None:
    line = counts_line(Counts(done=1, running=2), elapsed=3.0, palette=COLORED)
    assert visible(line) == "1 done, 2 running, 0 failed, 0 pending  [3.0s]"
    assert f"{ESC}32m1 done" in line
    assert f"{ESC}33m2 running" in line
    assert f"{ESC}31m" not in line  # no failures, nothing red


def test_count_sorts_states_into_done_running_failed_stopped_pending() -> None:
    states = [
        pb.EXECUTION_STATE_SUCCESS,
        pb.EXECUTION_STATE_RUNNING,
        pb.EXECUTION_STATE_STOPPING,
        pb.EXECUTION_STATE_FAILED,
        pb.EXECUTION_STATE_TIMEOUT,
        pb.EXECUTION_STATE_ABORTED,
        pb.EXECUTION_STATE_INVALID,
        pb.EXECUTION_STATE_ERROR,
        pb.EXECUTION_STATE_CANCELLED,
        pb.EXECUTION_STATE_TERMINATED,
        pb.EXECUTION_STATE_PENDING,
    ]
    progress = [InstanceProgress(f"i-{n}", state=s) for n, s in enumerate(states)]
    assert count(progress) == Counts(done=1, running=2, failed=5, stopped=2, pending=1)


def test_format_duration() -> None:
    assert [format_duration(s) for s in (None, 0.04, 59.94, 125, 3725)] == [
        "-",
        "0.0s",
        "59.9s",
        "2m05s",
        "1h02m",
    ]


def test_a_change_that_ends_a_record_is_reported_once_with_its_duration() -> None:
    progress: dict[str, InstanceProgress] = {}
    assert apply_change(progress, change("i-a", pb.EXECUTION_STATE_PENDING, 10.0)) is False
    assert apply_change(progress, change("i-a", pb.EXECUTION_STATE_RUNNING, 10.5)) is False
    assert apply_change(progress, change("i-a", pb.EXECUTION_STATE_FAILED, 12.5, 3)) is True
    # A later change of the same record (more output counted) ends nothing again.
    assert apply_change(progress, change("i-a", pb.EXECUTION_STATE_FAILED, 13.0, 3)) is False
    assert (progress["i-a"].exit_code, progress["i-a"].duration) == (3, 2.0)
    # The next run of a periodic invocation starts afresh.
    later = change("i-a", pb.EXECUTION_STATE_RUNNING, 20.0, record_id="r-2")
    assert apply_change(progress, later) is False
    assert (progress["i-a"].state, progress["i-a"].exit_code) == (pb.EXECUTION_STATE_RUNNING, None)


def test_finish_line() -> None:
    failed = InstanceProgress(
        "i-b", state=pb.EXECUTION_STATE_FAILED, exit_code=3, started=1.0, finished=3.1
    )
    assert finish_line(failed) == "i-b: FAILED, exit 3, 2.1s"
    timeout = InstanceProgress(
        "i-c",
        state=pb.EXECUTION_STATE_TIMEOUT,
        error_code="ExecutionTimeout",
        error_info="ran past its timeout",
    )
    assert finish_line(timeout) == "i-c: TIMEOUT, -, ExecutionTimeout: ran past its timeout"
    assert visible(finish_line(failed, COLORED)) == finish_line(failed)
    assert f"{ESC}31mFAILED" in finish_line(failed, COLORED)


def _sample() -> list[InstanceProgress]:
    return [
        InstanceProgress(
            "i-c",
            state=pb.EXECUTION_STATE_TIMEOUT,
            error_code="ExecutionTimeout",
            started=0,
            finished=61,
        ),
        InstanceProgress(
            "i-a", state=pb.EXECUTION_STATE_SUCCESS, exit_code=0, started=0, finished=0.4
        ),
        InstanceProgress(
            "i-b", state=pb.EXECUTION_STATE_FAILED, exit_code=3, started=0, finished=2.1
        ),
    ]


def test_summary_table_has_a_row_per_instance_by_id() -> None:
    assert summary_table(_sample()) == [
        "INSTANCE  STATUS   EXIT  DURATION  ERROR",
        "--------  -------  ----  --------  ----------------",
        "i-a       SUCCESS  0     0.4s      -",
        "i-b       FAILED   3     2.1s      -",
        "i-c       TIMEOUT  -     1m01s     ExecutionTimeout",
    ]


def test_a_coloured_summary_table_keeps_its_columns() -> None:
    lines = summary_table(_sample(), COLORED)
    assert [visible(line) for line in lines] == summary_table(_sample())
    assert f"{ESC}32mSUCCESS{ESC}0m" in lines[2]
    assert f"{ESC}31mTIMEOUT{ESC}0m" in lines[4]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_live_view_redraws_its_status_line_in_place() -> None:
    out = io.BytesIO()
    clock = Clock()
    view = LiveView(out, PLAIN, ["i-a", "i-b"], clock=clock)
    view.redraw()
    assert out.getvalue() == b"0 done, 0 running, 0 failed, 2 pending  [0.0s]"
    view.state_change(change("i-a", pb.EXECUTION_STATE_RUNNING, 1.0))
    view.output("i-a", b"hello\npart")
    clock.now += 1.5
    view.state_change(change("i-a", pb.EXECUTION_STATE_SUCCESS, 2.0, 0))
    written = out.getvalue().split(CLEAR_LINE)
    assert written == [
        b"0 done, 0 running, 0 failed, 2 pending  [0.0s]",
        b"0 done, 1 running, 0 failed, 1 pending  [0.0s]",
        # Output lines go above the status line; a partial line waits for its end.
        b"i-a | hello\n0 done, 1 running, 0 failed, 1 pending  [0.0s]",
        b"i-a | part\ni-a: SUCCESS, exit 0, 1.0s\n1 done, 0 running, 0 failed, 1 pending  [1.5s]",
    ]


def test_the_live_view_ends_with_the_summary_and_no_status_line() -> None:
    out = io.BytesIO()
    view = LiveView(out, PLAIN, ["i-a"], clock=Clock())
    view.state_change(change("i-a", pb.EXECUTION_STATE_RUNNING, 1.0))
    view.output("i-a", b"no newline")
    view.state_change(change("i-a", pb.EXECUTION_STATE_FAILED, 2.0, 7))
    before = len(out.getvalue())
    view.finish()
    end = out.getvalue()[before:].decode()
    assert end == CLEAR_LINE.decode() + "\n".join(
        [
            "",
            "INSTANCE  STATUS  EXIT  DURATION  ERROR",
            "--------  ------  ----  --------  -----",
            "i-a       FAILED  7     1.0s      -",
            "0 done, 0 running, 1 failed, 0 pending  [0.0s]",
            "",
        ]
    )


def test_the_live_view_takes_exact_times_from_the_results() -> None:
    out = io.BytesIO()
    view = LiveView(out, PLAIN, [], clock=Clock())
    # Watched after it had ended: no running state seen, so no duration of its own.
    view.state_change(change("i-a", pb.EXECUTION_STATE_SUCCESS, 50.0, 0))
    assert view.progress["i-a"].duration is None
    result = pb.InvocationResult(
        instance_id="i-a", record_id="r-i-a", start_time=at(40.0), finish_time=at(42.5)
    )
    view.finish([result])
    assert view.progress["i-a"].duration == 2.5
    assert "2.5s" in out.getvalue().decode()


def test_a_coloured_live_view_paints_and_a_plain_one_does_not() -> None:
    plain, colored = io.BytesIO(), io.BytesIO()
    for out, palette in ((plain, PLAIN), (colored, Palette(True))):
        view = LiveView(out, palette, ["i-a", "i-b"], clock=Clock())
        view.output("i-a", b"x\n")
        view.state_change(change("i-a", pb.EXECUTION_STATE_SUCCESS, 1.0, 0))
        view.finish()
    assert b"\x1b[3" not in plain.getvalue()  # clearing the line is the only escape
    assert plain.getvalue().count(b"\x1b[") == plain.getvalue().count(CLEAR_LINE)
    assert b"\x1b[36mi-a\x1b[0m | x" in colored.getvalue()
    assert b"\x1b[32mSUCCESS\x1b[0m" in colored.getvalue()


# Outcomes --------------------------------------------------------------------------------


def test_the_exit_code_is_the_first_failing_instances() -> None:
    def of(**states: pb.ExecutionState.ValueType) -> int:
        return exit_code_of(
            {i: InstanceProgress(i, state=s, exit_code=5) for i, s in states.items()}
        )

    assert of(a=pb.EXECUTION_STATE_SUCCESS, b=pb.EXECUTION_STATE_SUCCESS) == 0
    assert of(a=pb.EXECUTION_STATE_SUCCESS, b=pb.EXECUTION_STATE_FAILED) == 5
    assert of(a=pb.EXECUTION_STATE_TIMEOUT, b=pb.EXECUTION_STATE_FAILED) == EXIT_TIMEOUT
    assert of(a=pb.EXECUTION_STATE_TERMINATED) == EXIT_STOPPED
    assert of(a=pb.EXECUTION_STATE_INVALID) == EXIT_NOT_RUN


def test_the_json_summary() -> None:
    progress = {p.instance_id: p for p in _sample()}
    summary = summary_json("t-1", progress, 3)["summary"]
    assert (summary["invoke_id"], summary["exit_code"]) == ("t-1", 3)
    assert summary["instances"][1] == {
        "instance_id": "i-b",
        "record_id": "",
        "state": "EXECUTION_STATE_FAILED",
        "exit_code": 3,
        "error_code": "",
        "error_info": "",
        "duration_seconds": 2.1,
    }


# Tables and errors -----------------------------------------------------------------------


def test_tables_align_coloured_cells_by_what_shows() -> None:
    rows = [["i-a", COLORED.paint("yes", "green")], ["i-bbbb", "no"]]
    lines = render.format_table(["ID", "ONLINE"], rows, COLORED)
    assert [visible(line) for line in lines] == [
        "ID      ONLINE",
        "------  ------",
        "i-a     yes",
        "i-bbbb  no",
    ]


def _commands_page(token: str) -> pb.DescribeCommandsResponse:
    return pb.DescribeCommandsResponse(
        commands=[pb.Command(command_id="c-1", name="one"), pb.Command(command_id="c-22")],
        total_count=7,
        next_page_token=token,
    )


_COMMAND_COLUMNS: list[render.Column[pb.Command]] = [
    ("COMMAND_ID", lambda cmd: cmd.command_id),
    ("NAME", lambda cmd: cmd.name),
]


def test_a_listing_is_a_table_then_how_to_get_the_next_page(
    capsys: pytest.CaptureFixture[str],
) -> None:
    response = _commands_page("p2")
    render.print_listing(response, response.commands, _COMMAND_COLUMNS)
    assert capsys.readouterr().out.splitlines() == [
        "COMMAND_ID  NAME",
        "----------  ----",
        "c-1         one",
        "c-22",
        "(2 of 7; next page: --page-token p2)",
    ]


def test_the_last_page_and_an_unpaged_listing_have_no_footer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    last = _commands_page("")
    render.print_listing(last, last.commands, _COMMAND_COLUMNS)
    assert capsys.readouterr().out.splitlines()[-1] == "c-22"
    regions = instance_pb2.DescribeRegionsResponse(
        regions=[instance_pb2.Region(region_id="cn-hangzhou", instance_count=2)]
    )
    columns: list[render.Column[instance_pb2.Region]] = [
        ("REGION", lambda r: r.region_id),
        ("INSTANCES", lambda r: r.instance_count),
    ]
    render.print_listing(regions, regions.regions, columns)
    assert capsys.readouterr().out.splitlines() == [
        "REGION       INSTANCES",
        "-----------  ---------",
        "cn-hangzhou  2",
    ]


def test_a_listing_as_json_is_the_whole_response_and_makes_no_cells(
    capsys: pytest.CaptureFixture[str],
) -> None:
    response = _commands_page("p2")

    def no_cell(cmd: pb.Command) -> str:
        raise AssertionError("a cell was made for JSON")

    render.print_listing(response, response.commands, [("X", no_cell)], as_json=True)
    assert json.loads(capsys.readouterr().out) == render.message_dict(response)


def test_ids_are_printed_on_one_line_or_the_response_as_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    response = pb.RunCommandResponse(invoke_id="t-1")
    render.print_ids(response, "t-1", "code")
    assert capsys.readouterr().out == "t-1 code\n"
    render.print_ids(response)
    assert capsys.readouterr().out == ""
    render.print_ids(response, "t-1", as_json=True)
    assert json.loads(capsys.readouterr().out) == {"invoke_id": "t-1"}


def _packed(*messages: object) -> list[any_pb2.Any]:
    packed = []
    for message in messages:
        detail = any_pb2.Any()
        detail.Pack(message)  # type: ignore[arg-type]
        packed.append(detail)
    return packed


def test_errors_name_the_code_the_reason_and_every_field_violation() -> None:
    status = status_pb2.Status(
        code=3,
        message="command_content: must be Base64",
        details=_packed(
            error_details_pb2.ErrorInfo(reason="InvalidParameter.X", domain="cloudassist.v1"),
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field="command_content", description="command_content: must be Base64"
                    ),
                    error_details_pb2.BadRequest.FieldViolation(
                        field="timeout_seconds", description="at least 10"
                    ),
                ]
            ),
        ),
    )
    text = render.describe_status(
        StatusCode.INVALID_ARGUMENT, status.message, status.SerializeToString()
    )
    assert text == (
        "error: INVALID_ARGUMENT InvalidParameter.X\n"
        "  command_content: must be Base64\n"
        "  timeout_seconds: at least 10"
    )


def test_errors_say_when_to_retry_and_what_to_try() -> None:
    delay = duration_pb2.Duration(seconds=1, nanos=500_000_000)
    status = status_pb2.Status(
        code=8,
        message="rate limit: 10 requests a second",
        details=_packed(
            error_details_pb2.ErrorInfo(reason="Throttling.User"),
            error_details_pb2.RetryInfo(retry_delay=delay),
        ),
    )
    text = render.describe_status(
        StatusCode.RESOURCE_EXHAUSTED, status.message, status.SerializeToString()
    )
    assert text == (
        "error: RESOURCE_EXHAUSTED Throttling.User\n"
        "  rate limit: 10 requests a second\n"
        "  retry in 1.5 s"
    )
    unreachable = render.describe_status(
        StatusCode.UNAVAILABLE, "failed to connect to all addresses", None, "127.0.0.1:1"
    )
    assert unreachable == (
        "error: UNAVAILABLE\n"
        "  failed to connect to all addresses\n"
        "  hint: is a server listening on 127.0.0.1:1? (see --server, CLOUDASSIST_SERVER)"
    )


def test_coloured_errors_show_the_same_text() -> None:
    plain = render.describe_status(StatusCode.NOT_FOUND, "command_id: no command", None)
    colored = render.describe_status(
        StatusCode.NOT_FOUND, "command_id: no command", None, palette=COLORED
    )
    assert visible(colored) == plain
    assert colored.startswith(f"{ESC}31;1merror:")
