"""The web console in Debian's real Chromium (headless, driven by selenium through Debian's
chromedriver; nothing is downloaded), against a real server and two real agents: every call
the page makes goes through the server's gRPC-Web bridge to its own gRPC services.

The tests run in order on one browser tab, as a user would: sign in, create a command, run
it, stop one, schedule one, be refused, look at instances and files. Screenshots of each page
go to $CLOUDASSIST_SCREENSHOTS (else a temp dir). test_console_records.py goes on with the
Execution records, the clock, errors and accessibility.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By

from cloudassist.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    instance_pb2,
    instance_pb2_grpc,
)
from cloudassist.v1 import command_pb2 as pb
from tests.integration.console_support import (
    Console,
    invoke_id_of,
    results_by_instance,
    running_console,
    sign_in,
)
from tests.integration.helpers import REGION
from tests.support import ServerProcess

INSTANCES = ("i-web-1", "i-web-2")


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    with running_console(tmp_path_factory.mktemp("console"), INSTANCES) as found:
        yield found


def page_rows_match_api(console: Console, invoke_id: str) -> bool:
    """The page's instance rows say what DescribeInvocationResults says: detailed state,
    coarse status and exit code."""
    statuses = {1: "Running", 2: "Finished", 3: "Failed", 4: "Stopped"}
    for instance_id, result in results_by_instance(console, invoke_id).items():
        row = f"[data-instance-row='{instance_id}']"
        shown = (
            console.attribute(f"{row} [data-cell=state] [data-state]", "data-state"),
            console.attribute(f"{row} [data-cell=status] [data-status]", "data-status"),
            "".join(console.texts(f"{row} [data-cell=exit-code]")),
        )
        expected = (
            pb.ExecutionState.Name(result.state).removeprefix("EXECUTION_STATE_"),
            statuses.get(result.invoke_record_status),
            str(result.exit_code) if result.HasField("exit_code") else "—",
        )
        if shown != expected:
            return False
    return True


def test_a_wrong_key_is_refused_at_sign_in(console: Console) -> None:
    console.browser.get(console.url)
    console.find("[data-test=api-key]")
    console.shot("sign-in")
    sign_in(console, "k-nobody.not-a-secret")
    console.wait_text(".form-error", "the API key is unknown, wrong or revoked")
    assert "InvalidApiKey" in console.text_of(".form-error")
    assert console.all("[data-test=sign-in]"), "still on the sign-in page"
    assert "not-a-secret" not in console.browser.current_url
    console.shot("sign-in-refused")


def test_sign_in_with_the_admin_key(console: Console) -> None:
    sign_in(console, console.server.admin_key)
    console.wait_text("h1", "Commands")
    assert console.server.admin_key not in console.browser.current_url
    key_id = console.server.admin_key.split(".")[0]
    assert console.text_of(".whoami code") == key_id


def test_create_a_command_and_run_it_on_both_instances_live(console: Console) -> None:
    gate = console.workdir / "gate"
    script = (
        'echo "hello {{who}} from {{ACS::InstanceId}}"\n'
        f"while [ ! -e {gate} ]; do sleep 0.05; done\n"
        "echo line-two\n"
    )
    console.go("/commands")
    console.click("[data-test=new-command]")
    console.fill("dialog [data-test=name]", "greet")
    editor = console.find("dialog [data-test=content-editor]")
    editor.send_keys(script)
    # The parameter is found as the content is typed.
    console.find("dialog [data-parameter=who]")
    console.shot("command-editor")
    console.click("dialog [data-test=save]")
    console.wait_text("[data-test=commands]", "greet")
    console.shot("commands")
    command_id = str(console.find("tr[data-command]").get_attribute("data-command"))

    console.click(f"tr[data-command='{command_id}'] [data-test=execute]")
    console.find("[data-parameter-value=who]").send_keys("console")
    console.click("[data-test=view-content]")
    console.wait_text("[data-test=content]", "hello {{who}}")
    console.find("[data-row-instance='i-web-2'] input[type=checkbox]")
    console.click("[data-test=select-all]")
    for instance_id in INSTANCES:
        assert console.checked(f"input[data-instance='{instance_id}']")
    console.shot("execute")
    console.click("[data-test=run]")
    invoke_id = invoke_id_of(console)

    # The first line is on the page while the script is still waiting to write its second.
    for instance_id in INSTANCES:
        console.wait_text(
            f"[data-output-instance='{instance_id}']", f"hello console from {instance_id}"
        )
    assert not gate.exists()
    assert all(
        "line-two" not in console.text_of(f"[data-output-instance='{i}']") for i in INSTANCES
    )
    console.shot("invocation-live")
    gate.touch()
    for instance_id in INSTANCES:
        console.wait_text(f"[data-output-instance='{instance_id}']", "line-two")

    api = results_by_instance(console, invoke_id)
    assert {i: r.state for i, r in api.items()} == dict.fromkeys(
        INSTANCES, pb.EXECUTION_STATE_SUCCESS
    )
    console.wait(
        lambda _: page_rows_match_api(console, invoke_id), "the page to show the API's states"
    )
    console.wait_status("Finished")
    console.shot("invocation-finished")


def test_stop_a_long_running_script(console: Console) -> None:
    console.go("/execute")
    console.find("[data-test=content-editor]").send_keys("echo started\nsleep 300\n")
    console.click("input[data-instance='i-web-1']")
    console.click("[data-test=run]")
    invoke_id = invoke_id_of(console)
    console.wait_text("[data-output-instance='i-web-1']", "started")
    console.click("[data-stop='i-web-1']")
    console.wait(
        lambda _: (
            results_by_instance(console, invoke_id)["i-web-1"].state
            == pb.EXECUTION_STATE_TERMINATED
        ),
        "the record to be TERMINATED",
    )
    console.wait_text("[data-instance-row='i-web-1'] [data-cell=status]", "Stopped")
    console.wait(lambda _: page_rows_match_api(console, invoke_id), "the page to show Stopped")
    console.shot("invocation-stopped")


def test_schedule_every_ten_seconds_and_see_a_second_run(console: Console) -> None:
    console.go("/execute")
    console.find("[data-test=content-editor]").send_keys("echo tick\n")
    console.click("input[data-instance='i-web-2']")
    mode = console.find("[data-test=mode]")
    mode.find_element(By.CSS_SELECTOR, "option[value=period]").click()
    console.fill("[data-test=cron]", "*/10 * * * * ?")
    console.wait(lambda _: len(console.all("[data-test=fire-times] li")) == 5, "five fire times")
    fires = [str(li.get_attribute("data-fire")) for li in console.all("[data-test=fire-times] li")]
    moments = [datetime.strptime(f, "%Y-%m-%d %H:%M:%S %z") for f in fires]
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(moments)] == [10] * 4
    assert all(m.second % 10 == 0 for m in moments)
    console.shot("execute-scheduled")
    console.click("[data-test=run]")
    invoke_id = invoke_id_of(console)
    console.wait(
        lambda _: len(console.all("[data-test=records] tr[data-record]")) >= 2,
        "a second run in the records",
        seconds=40,
    )
    console.shot("invocation-periodic")
    console.click("[data-test=stop-all]")
    console.click("dialog [data-test=confirm]")
    console.wait_status("Stopped")
    invocation = (
        console.stub()
        .DescribeInvocations(
            pb.DescribeInvocationsRequest(region_id=REGION, invoke_id=invoke_id),
            metadata=console.metadata,
        )
        .invocations[0]
    )
    assert invocation.invoke_status == pb.INVOKE_STATUS_STOPPED


def test_a_refused_field_is_shown_next_to_it_and_nothing_is_made(console: Console) -> None:
    def invocations() -> int:
        return int(
            console.stub()
            .DescribeInvocations(
                pb.DescribeInvocationsRequest(region_id=REGION), metadata=console.metadata
            )
            .total_count
        )

    before = invocations()
    console.go("/execute")
    console.find("[data-test=content-editor]").send_keys("echo {{p1}}\n")
    console.click("input[data-instance='i-web-1']")
    for n in range(2, 22):  # 21 parameter values in all; the limit is 20
        console.click("[data-test=add-parameter]")
        console.all("[data-test=param-key]")[-1].send_keys(f"p{n}")
    console.click("[data-test=run]")
    console.wait_text("[data-field-error=parameters]", "21 values given, the limit is 20")
    assert "ParameterCount.ExceedLimit" in console.text_of("[data-field-error=parameters]")
    assert "#/execute" in console.browser.current_url
    assert invocations() == before
    console.shot("execute-refused")


def test_output_with_html_and_ansi_renders_as_text_and_downloads_byte_exact(
    console: Console,
) -> None:
    script = (
        "printf '<img src=x onerror=alert(1)>\\n<script>alert(2)</script>\\n'\n"
        "printf '\\033[31mred\\033[0m plain \\377\\n'\n"
    )
    console.go("/execute")
    console.find("[data-test=content-editor]").send_keys(script)
    console.click("input[data-instance='i-web-1']")
    console.click("[data-test=run]")
    invoke_id = invoke_id_of(console)
    pane = "[data-output-instance='i-web-1']"
    console.wait_text(pane, "plain")
    text = console.text_of(pane)
    assert "<img src=x onerror=alert(1)>" in text
    assert "<script>alert(2)</script>" in text
    assert "\x1b" not in text
    assert console.all(f"{pane} img") == []
    assert console.all(f"{pane} script") == []
    assert console.texts(f"{pane} .ansi-fg-1") == ["red"]
    with pytest.raises(NoAlertPresentException):
        _ = console.browser.switch_to.alert.text
    console.shot("invocation-escaped")

    stored = console.stub().GetInvocationOutput(
        pb.GetInvocationOutputRequest(region_id=REGION, invoke_id=invoke_id, instance_id="i-web-1"),
        metadata=console.metadata,
    )
    assert b"\xff" in stored.data
    console.click("[data-download='i-web-1']")
    saved = console.downloads / f"{invoke_id}_i-web-1.log"
    console.wait(lambda _: saved.exists(), "the download")
    assert saved.read_bytes() == stored.data


def test_instances_show_their_agents_and_take_tags(console: Console) -> None:
    console.go("/instances")
    for instance_id in INSTANCES:
        console.find(f"tr[data-instance='{instance_id}']")
    assert "Online" in console.text_of("tr[data-instance='i-web-1']")
    assert "Linux" in console.text_of("tr[data-instance='i-web-1']")
    console.click("input[data-select='i-web-2']")
    console.fill("[data-test=tags]", "role=web")
    console.click("[data-test=tag]")
    console.wait_text("tr[data-instance='i-web-2'] [data-cell=tags]", "role=web")
    tagged = instance_pb2_grpc.InstanceServiceStub(console.server.sync_channel()).DescribeInstances(
        instance_pb2.DescribeInstancesRequest(region_id=REGION, instance_ids=["i-web-2"]),
        metadata=console.metadata,
    )
    assert [(t.key, t.value) for t in tagged.instances[0].tags] == [("role", "web")]
    console.shot("instances")


def test_send_a_file_and_see_its_result(console: Console) -> None:
    target = console.workdir / "sent"
    console.go("/files")
    console.fill("[data-test=file-name]", "app.conf")
    console.fill("[data-test=target-dir]", str(target))
    console.find("[data-test=file-content]").send_keys("port = 8080\n")
    console.click("input[data-instance='i-web-1']")
    console.click("[data-test=send-file]")
    console.wait_text("[data-test=file-results] [data-state]", "SUCCESS")
    assert (target / "app.conf").read_text() == "port = 8080\n"
    console.shot("files")


def test_console_calls_are_audited_with_the_browser_and_counted(console: Console) -> None:
    console.go("/invocations")
    console.find("[data-test=invocations]")
    console.shot("invocations")
    with console.server.sync_channel() as channel:
        audit = admin_pb2_grpc.AdminServiceStub(channel).ListAuditEvents(
            admin_pb2.ListAuditEventsRequest(
                method="/cloudassist.v1.CommandService/RunCommand", page_size=50
            ),
            metadata=console.metadata,
        )
    peers = {e.peer for e in audit.events}
    assert peers, "the console's RunCommand calls are audited"
    assert all(p.startswith("ipv4:127.0.0.1:") and p.endswith(" (console)") for p in peers), peers

    samples = _scrape(console.server)
    for method, code in [
        ("CommandService/WatchInvocation", "OK"),
        ("CommandService/PreviewSchedule", "OK"),
        ("CommandService/CreateCommand", "OK"),
        ("CommandService/RunCommand", "INVALID_ARGUMENT"),
        ("InstanceService/DescribeInstances", "UNAUTHENTICATED"),  # the wrong key
    ]:
        assert samples.get((f"/cloudassist.v1.{method}", code), 0) >= 1, (method, code)


def _scrape(server: ServerProcess) -> dict[tuple[str, str], float]:
    import urllib.request

    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (s.labels["method"], s.labels["code"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "cloudassist_rpcs_total"
    }


@pytest.mark.parametrize(
    ("address", "message"),
    [
        (
            "127.0.0.1:{taken}",
            "--console-listen 127.0.0.1:{taken}: cannot listen: Address already in use",
        ),
        ("127.0.0.1", "--console-listen 127.0.0.1: expected HOST:PORT"),
        ("0.0.0.0:0", "refusing plaintext on 0.0.0.0:0, which is not a loopback address"),
    ],
)
def test_a_console_address_it_cannot_serve_stops_the_server_with_one_line(
    tmp_path: Path, address: str, message: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        process = ServerProcess(tmp_path / "server", "--console-listen", address.format(taken=port))
        try:
            with pytest.raises(RuntimeError, match="server exited early"):
                process.start()
        finally:
            exit_code = process.stop()
    log = process.log()
    assert exit_code == 1, log
    assert message.format(taken=port) in log
    assert "Traceback" not in log
