"""The console's Execution records workflow and its finish, in Debian's real Chromium against a
real server and three real agents: search the records and Stop Command from the Operation
column as the seed tells, Run again on failed instances, commands found by part of their name,
regions to choose from, errors next to their field with the product's code apart, one
labelled clock, the records table within its card, live output sizes, and an accessibility
pass (axe-core and the keyboard) over every page.

The tests run in order on one browser tab, as a user would.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from cloudassist.v1 import command_pb2 as pb
from tests.integration.console_support import (
    BROWSER_TZ,
    Console,
    axe_violations,
    blocking,
    invocation,
    invoke_id_of,
    keyboard_gaps,
    running_console,
    sign_in,
)
from tests.integration.helpers import REGION

# Three, so that natural order (1, 2, 10) and text order (1, 10, 2) differ.
INSTANCES = ("i-web-1", "i-web-10", "i-web-2")


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    with running_console(tmp_path_factory.mktemp("console-records"), INSTANCES) as found:
        sign_in(found, found.server.admin_key)
        found.wait_text("h1", "Commands")
        yield found


def run(
    console: Console, name: str, script: str, instances: tuple[str, ...], timeout: int = 0
) -> str:
    """RunCommand through the API: the invocation id."""
    answer = console.stub().RunCommand(
        pb.RunCommandRequest(
            region_id=REGION,
            name=name,
            type=pb.COMMAND_TYPE_RUN_SHELL_SCRIPT,
            command_content=script.encode(),
            enable_parameter=True,
            instance_ids=list(instances),
            timeout_seconds=timeout,
        ),
        metadata=console.metadata,
    )
    return str(answer.invoke_id)


def wait_invocation_status(console: Console, invoke_id: str, status: int) -> None:
    console.wait(
        lambda _: invocation(console, invoke_id).invoke_status == status,
        f"{invoke_id} to be {pb.InvokeStatus.Name(status)}",
    )


def instances_of(console: Console, invoke_id: str) -> list[str]:
    return sorted(x.instance_id for x in invocation(console, invoke_id).invoke_instances)


def row(invoke_id: str) -> str:
    return f"tr[data-invocation='{invoke_id}']"


def search_records(console: Console, by: str, text: str) -> None:
    console.go("/invocations")
    console.choose("[data-test=records-search-by]", by)
    console.fill("[data-test=records-search]", text)


def shown_invocations(console: Console) -> list[str]:
    found = console.browser.execute_script(
        "return [...document.querySelectorAll('tr[data-invocation]')]"
        ".map(r => r.getAttribute('data-invocation'))"
    )
    return [str(f) for f in found]


def test_records_are_found_by_command_id_invocation_id_and_instance_id(console: Console) -> None:
    first = run(console, "finder-a", "echo a\n", ("i-web-1",))
    second = run(console, "finder-b", "echo b\n", ("i-web-10",))
    command_id = invocation(console, first).command_id
    search_records(console, "command", command_id)
    console.wait(lambda _: shown_invocations(console) == [first], "the command's invocation")
    search_records(console, "invocation", second)
    console.wait(lambda _: shown_invocations(console) == [second], "the invocation by id")
    search_records(console, "instance", "i-web-10")
    console.wait(
        lambda _: second in shown_invocations(console) and first not in shown_invocations(console),
        "i-web-10's invocations only",
    )
    search_records(console, "name", "no-such-command")
    console.wait_text(".empty", "No invocations match “no-such-command”.")


def test_run_again_on_failed_instances_from_the_records(console: Console) -> None:
    # A non-zero exit code is Finished ("Finished does not mean succeeded"); a timeout fails.
    script = 'echo "on {{ACS::InstanceId}}"\n[ "{{ACS::InstanceId}}" != i-web-2 ] || sleep 30\n'
    source = run(console, "flaky", script, ("i-web-1", "i-web-2"), timeout=1)
    wait_invocation_status(console, source, pb.INVOKE_STATUS_PARTIAL_FAILED)
    search_records(console, "invocation", source)
    console.wait(lambda _: shown_invocations(console) == [source], "the failed invocation")
    assert not console.all(f"{row(source)} [data-op=stop]"), "a one-shot that ended"
    console.click(f"{row(source)} [data-rerun]")
    console.find("dialog [data-rerun-row]")
    rows = console.texts("dialog [data-rerun-row]")
    assert len(rows) == 1, rows
    assert "i-web-2" in rows[0], rows
    assert "TIMEOUT" in rows[0], rows
    assert console.checked("dialog input[data-rerun-instance='i-web-2']")
    console.shot("rerun")
    console.click("dialog [data-test=rerun-submit]")

    again = invoke_id_of(console, other_than=source)
    assert again != source
    assert instances_of(console, again) == ["i-web-2"]
    made = invocation(console, again)
    assert made.command_content == script.encode()
    assert made.timeout_seconds == 1
    console.wait_status("Failed")  # the same script times out there again
    console.wait_text("h1", again)


def test_run_again_from_the_invocation_page_on_the_instances_kept_checked(
    console: Console,
) -> None:
    source = run(console, "broken", "sleep 30\n", ("i-web-1", "i-web-2"), timeout=1)
    wait_invocation_status(console, source, pb.INVOKE_STATUS_FAILED)
    console.go(f"/invocations/{source}")
    console.wait_status("Failed")
    console.click(".invocation-head [data-rerun]")
    assert sorted(console.texts("dialog [data-rerun-row] code")) == ["i-web-1", "i-web-2"]
    console.click("dialog input[data-rerun-instance='i-web-1']")  # unchecked
    assert console.text_of("dialog [data-test=rerun-count]") == "1 of 2 chosen"
    console.click("dialog [data-test=rerun-submit]")
    again = invoke_id_of(console, other_than=source)
    assert instances_of(console, again) == ["i-web-2"]


def test_stop_command_from_the_operation_column_of_the_searched_records(console: Console) -> None:
    # The seed: "In the Execution Record area, search for the command you need to stop, and
    # select Stop Command from the Operation column."
    suffix = uuid.uuid4().hex[:5]
    target = run(console, f"Sleeper-{suffix}", "echo started\nsleep 300\n", ("i-web-1",))
    other = run(console, f"other-{suffix}", "echo started\nsleep 300\n", ("i-web-2",))
    console.go("/invocations")
    console.wait_text(f"{row(target)} [data-cell=status]", "Running")
    console.find(f"{row(target)} [data-op=stop]")
    console.shot("records")  # every kind of row: Stop Command, Run again, View
    search_records(console, "name", f"sleeper-{suffix}"[2:])  # part of it, other case
    console.wait(lambda _: shown_invocations(console) == [target], "only the searched command")
    console.wait_text(f"{row(target)} [data-cell=status]", "Running")
    assert "#/invocations?q=" in console.browser.current_url, "the search is in the address"
    console.shot("records-search")

    console.click(f"{row(target)} [data-op=stop]")
    assert f"Sleeper-{suffix}" in console.text_of("dialog")
    console.click("dialog [data-test=confirm]")
    console.wait_text(f"{row(target)} [data-cell=status]", "Stopped")
    assert invocation(console, target).invoke_status == pb.INVOKE_STATUS_STOPPED
    assert not console.all(f"{row(target)} [data-op=stop]"), "nothing more to stop"
    assert invocation(console, other).invoke_status == pb.INVOKE_STATUS_RUNNING
    console.stub().StopInvocation(
        pb.StopInvocationRequest(region_id=REGION, invoke_id=other), metadata=console.metadata
    )


def test_commands_are_found_by_part_of_their_name(console: Console) -> None:
    suffix = uuid.uuid4().hex[:5]
    console.stub().CreateCommand(
        pb.CreateCommandRequest(
            region_id=REGION,
            name=f"greet-{suffix}",
            type=pb.COMMAND_TYPE_RUN_SHELL_SCRIPT,
            command_content=b"echo hi\n",
        ),
        metadata=console.metadata,
    )
    console.go("/commands")
    console.fill("[data-test=search]", "GREET")
    console.wait_text("[data-test=commands]", f"greet-{suffix}")
    console.fill("[data-test=search]", "zz-nothing")
    console.wait_text("[data-test=commands-empty]", "No commands match “zz-nothing”.")
    assert "No commands here yet" not in console.text_of("[data-test=commands-empty]")


def test_an_error_is_shown_next_to_its_field_with_its_code_apart(console: Console) -> None:
    console.go("/commands")
    console.click("[data-test=new-command]")
    console.fill("dialog [data-test=name]", "too-many")
    content = " ".join(f"{{{{p{n}}}}}" for n in range(1, 22))  # 21 parameters; 20 at most
    console.find("dialog [data-test=content-editor]").send_keys(f"echo {content}")
    console.click("dialog [data-test=save]")
    slot = "dialog [data-field-error=command_content]"
    console.wait_text(slot, "the limit is 20")
    assert console.text_of(f"{slot} .message") == "21 custom parameters, the limit is 20"
    assert console.text_of(f"{slot} .reason") == "CmdParamCount.ExceedLimit"
    assert "20CmdParamCount" not in console.text_of(slot)
    assert "command_content" not in console.text_of("dialog")
    # Beside the field it names (under the content), and the code after the text, not in it.
    gap = console.browser.execute_script(
        "const m = document.querySelector(arguments[0] + ' .message').getBoundingClientRect();"
        "const r = document.querySelector(arguments[0] + ' .reason').getBoundingClientRect();"
        "const f = document.querySelector('dialog [data-test=content-editor]')"
        "  .getBoundingClientRect();"
        "return [r.left - m.right, m.top - f.bottom];",
        slot,
    )
    assert gap[0] >= 4, gap
    assert 0 <= gap[1] < 80, gap
    console.shot("command-refused")
    console.click("dialog header button")


def test_every_time_is_labelled_and_the_clock_switches_to_utc(console: Console) -> None:
    def times() -> list[tuple[int, str]]:
        found = console.browser.execute_script(
            "return [...document.querySelectorAll('time[data-ms]')]"
            ".map(t => [Number(t.dataset.ms), t.textContent])"
        )
        return [(int(ms), str(text)) for ms, text in found]

    def expected(ms: int, zone: str) -> str:
        moment = datetime.fromtimestamp(ms // 1000, ZoneInfo(zone))
        if zone == "UTC":
            return f"{moment:%Y-%m-%d %H:%M:%S} UTC"
        offset = moment.strftime("%z")
        return f"{moment:%Y-%m-%d %H:%M:%S} {offset[:3]}:{offset[3:]}"

    console.go("/invocations")
    console.find("[data-test=invocations] time")
    assert console.attribute("[data-test=clock] option:checked", "value") == "local"
    assert BROWSER_TZ in console.text_of("[data-test=clock] option[value=local]")
    shown = times()
    assert shown
    assert all(text == expected(ms, BROWSER_TZ) for ms, text in shown), shown

    console.choose("[data-test=clock]", "utc")
    console.wait(lambda _: all(t.endswith(" UTC") for _, t in times()), "every time in UTC")
    assert all(text == expected(ms, "UTC") for ms, text in times())
    console.go("/commands")
    console.find("[data-test=commands] time")
    assert all(text == expected(ms, "UTC") for ms, text in times()), "kept across pages"

    # Next fire times follow the clock, or the schedule's own zone when asked.
    console.go("/execute")
    console.choose("[data-test=mode]", "period")
    console.fill("[data-test=cron]", "0 0 12 * * ?")
    console.fill("[data-test=timezone]", "Asia/Shanghai")
    # The preview before the zone was typed (the server's default, UTC+08:00) reads the same
    # times: wait for the one that names the zone.
    console.wait(
        lambda _: (
            "Asia/Shanghai" in console.text_of("[data-test=fire-zone] option[value=schedule]")
        ),
        "the preview of the schedule in its own zone",
    )
    console.wait(lambda _: len(console.all("[data-test=fire-times] time")) == 5, "fire times")
    assert all(text.endswith(" 04:00:00 UTC") for _, text in times()), times()
    console.choose("[data-test=fire-zone]", "schedule")
    console.wait(
        lambda _: all(t.endswith(" 12:00:00 +08:00") for _, t in times()), "the schedule's zone"
    )
    assert "Asia/Shanghai" in console.text_of("[data-test=fire-zone] option[value=schedule]")
    console.shot("execute-schedule-zone")
    console.choose("[data-test=fire-zone]", "clock")
    console.choose("[data-test=clock]", "local")
    console.wait(
        lambda _: all(text == expected(ms, BROWSER_TZ) for ms, text in times()),
        "fire times in the browser's zone",
    )
    console.browser.refresh()
    console.find("[data-test=clock]")
    assert console.attribute("[data-test=clock] option:checked", "value") == "local"


def test_executing_a_saved_command_stays_under_commands(console: Console) -> None:
    console.go("/commands")
    command_id = str(console.find("tr[data-command]").get_attribute("data-command"))
    console.click(f"tr[data-command='{command_id}'] [data-test=execute]")
    console.wait_text("h1", "Execute")
    assert console.texts(".sidebar a.active") == ["Commands"]
    # The instance picker lists instances in natural order.
    console.find("[data-row-instance='i-web-10']")
    order = console.browser.execute_script(
        "return [...document.querySelectorAll('[data-row-instance]')]"
        ".map(r => r.getAttribute('data-row-instance'))"
    )
    assert order == list(sorted(INSTANCES, key=lambda i: int(i.rsplit("-", 1)[1])))


def test_the_invocation_page_has_a_heading_and_a_way_back(console: Console) -> None:
    invoke_id = run(console, "heading", "echo hi\n", ("i-web-1",))
    console.go(f"/invocations/{invoke_id}")
    console.wait_text("h1", f"Invocation {invoke_id}")
    console.click("[data-test=back]")
    console.wait(lambda b: b.current_url.endswith("#/invocations"), "the records list")
    console.wait_text("h1", "Execution records")


def test_the_output_size_follows_the_output_as_it_grows(console: Console) -> None:
    first, second = console.workdir / "gate-1", console.workdir / "gate-2"
    script = (
        "printf 'first\\n'\n"
        f"while [ ! -e {first} ]; do sleep 0.05; done\n"
        "head -c 5000 /dev/zero | tr '\\0' x\n"
        f"while [ ! -e {second} ]; do sleep 0.05; done\n"
    )
    invoke_id = run(console, "grower", script, ("i-web-1",))
    console.go(f"/invocations/{invoke_id}")
    console.wait_text("[data-output-size]", "6 B")
    first.touch()
    console.wait_text("[data-output-size]", "4.9 KiB")  # 5006 bytes
    state = invocation(console, invoke_id).invoke_instances[0].state
    assert state == pb.EXECUTION_STATE_RUNNING, "while it still runs"
    second.touch()
    console.wait_status("Finished")


def test_the_records_table_fits_its_card_at_1400_px(console: Console) -> None:
    # A long name with nothing to break it at, as generated names and backup jobs have.
    long_name = "nightly_backup_of_the_customer_database_to_cold_storage_eu_west_1"
    wait_invocation_status(
        console, run(console, long_name, "echo done\n", INSTANCES), pb.INVOKE_STATUS_FINISHED
    )
    size = console.browser.get_window_size()
    console.browser.set_window_size(1400, 900)
    try:
        for route in ("/invocations", f"/invocations/{shown_first_invocation(console)}"):
            console.go(route)
            console.find("table")
            overflow = console.browser.execute_script(
                "const out = [];"
                "if (document.documentElement.scrollWidth > innerWidth) out.push('page');"
                "for (const w of document.querySelectorAll('.table-wrap')) {"
                "  const box = (w.closest('.card') || w).getBoundingClientRect();"
                "  const t = w.querySelector('table');"
                "  if (!t) continue;"
                "  if (w.scrollWidth > w.clientWidth + 1) out.push('scrolls: ' + t.dataset.test);"
                "  if (t.getBoundingClientRect().right > box.right + 1) out.push(t.dataset.test);"
                "}"
                "return out;"
            )
            assert overflow == [], (route, overflow)
            console.shot("records-1400" if route == "/invocations" else "invocation-1400")
    finally:
        console.browser.set_window_size(size["width"], size["height"])


def shown_first_invocation(console: Console) -> str:
    console.go("/invocations")
    console.find("tr[data-invocation]")
    return console.attribute("tr[data-invocation]", "data-invocation")


def test_the_region_picker_offers_the_servers_regions(console: Console) -> None:
    console.go("/commands")
    console.wait_text("[data-test=region-picker]", "3/3 online")
    assert console.attribute("[data-test=region-picker] option:checked", "value") == REGION
    console.click("[data-test=other-region]")
    console.fill("dialog [data-test=new-region]", "eu-test-1")
    console.click("dialog [data-test=use-region]")
    console.wait_text("[data-test=region-picker] option:checked", "eu-test-1 (nothing here yet)")
    console.wait_text(".empty", "No commands here yet.")
    console.choose("[data-test=region-picker]", REGION)
    console.find("[data-test=commands]")


PAGES = ("/commands", "/execute", "/invocations", "/instances", "/files")


@pytest.mark.parametrize("route", [*PAGES, "invocation", "execute-scheduled"])
def test_every_page_passes_axe_and_every_control_is_reached_by_tab(
    console: Console, route: str
) -> None:
    if route == "invocation":
        route = f"/invocations/{shown_first_invocation(console)}"
    console.go("/execute" if route == "execute-scheduled" else route)
    console.find("main h1")
    if route == "execute-scheduled":
        console.choose("[data-test=mode]", "period")
        console.find("[data-test=fire-times] li")
    assert_accessible(console, route)


@pytest.mark.parametrize("dialog", ["new-command", "stop", "rerun"])
def test_every_dialog_passes_axe_and_every_control_is_reached_by_tab(
    console: Console, dialog: str
) -> None:
    invoke_id = ""
    if dialog == "new-command":
        console.go("/commands")
        console.click("[data-test=new-command]")
    elif dialog == "stop":
        invoke_id = run(console, "to-stop", "sleep 300\n", ("i-web-1",))
        search_records(console, "invocation", invoke_id)
        console.click(f"{row(invoke_id)} [data-op=stop]")
    else:
        source = run(console, "to-rerun", "sleep 30\n", ("i-web-1", "i-web-2"), timeout=1)
        wait_invocation_status(console, source, pb.INVOKE_STATUS_FAILED)
        console.go(f"/invocations/{source}")
        console.click(".invocation-head [data-rerun]")
    console.find("dialog[open]")
    assert_accessible(console, dialog)
    if dialog == "stop":
        console.click("dialog[open] [data-test=confirm]")
        console.wait_text(f"{row(invoke_id)} [data-cell=status]", "Stopped")
    else:
        console.click("dialog[open] header button")


def test_the_sign_in_page_passes_axe_and_tab(console: Console) -> None:
    console.click("[data-test=sign-out]")
    console.find("[data-test=api-key]")
    assert_accessible(console, "sign-in")
    sign_in(console, console.server.admin_key)
    console.wait_text("h1", "Commands")


def assert_accessible(console: Console, where: str) -> None:
    serious = blocking(axe_violations(console))
    assert serious == [], (where, serious)
    missed, positive = keyboard_gaps(console)
    assert missed == [], (where, "not reached by Tab", missed)
    assert positive == [], (where, "positive tabindex", positive)
