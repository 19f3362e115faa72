"""What the console's browser tests share: a real server with real agents and Debian's real
Chromium (headless, driven by selenium through Debian's chromedriver; nothing is downloaded),
the page helpers, and the accessibility checks (axe-core from the console's node_modules,
injected into the page; keyboard reach by pressing Tab).

Screenshots go to $CLOUDASSIST_SCREENSHOTS (else a temp dir).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import command_pb2_grpc
from tests.integration.helpers import REGION
from tests.support import AgentProcess, ServerProcess

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
AXE = Path(__file__).parents[2] / "server/console/web/node_modules/axe-core/axe.min.js"
# The browser's own zone in these tests: neither UTC nor the server's default (+08:00), so that
# a time shown in the wrong zone shows.
BROWSER_TZ = "Europe/Paris"
WAIT_SECONDS = 30
T = TypeVar("T")


@dataclass
class Console:
    server: ServerProcess
    browser: WebDriver
    workdir: Path
    shots: Path
    downloads: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.console_port}/"

    def wait(
        self, condition: Callable[[WebDriver], T], what: str, seconds: float = WAIT_SECONDS
    ) -> T:
        try:
            return WebDriverWait(self.browser, seconds, poll_frequency=0.05).until(
                condition, message=f"waiting for {what}"
            )
        except TimeoutException:
            self.shot("timed-out")  # what the page showed instead
            raise

    def find(self, css: str) -> WebElement:
        return self.wait(lambda b: b.find_element(By.CSS_SELECTOR, css), css)

    def all(self, css: str) -> list[WebElement]:
        return self.browser.find_elements(By.CSS_SELECTOR, css)

    def texts(self, css: str) -> list[str]:
        """The text of every element `css` finds, shown or not (a hidden output tab too),
        read in one go in the page (the page redraws tables as it follows the server)."""
        found = self.browser.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)", css
        )
        return [str(t) for t in found]

    def text_of(self, css: str) -> str:
        self.find(css)
        return "".join(self.texts(css))

    def attribute(self, css: str, name: str) -> str:
        value = self.browser.execute_script(
            "const e = document.querySelector(arguments[0]); "
            "return e ? e.getAttribute(arguments[1]) : null",
            css,
            name,
        )
        return "" if value is None else str(value)

    def wait_text(self, css: str, text: str, seconds: float = WAIT_SECONDS) -> None:
        self.wait(lambda _: any(text in t for t in self.texts(css)), f"{text!r} in {css}", seconds)

    def wait_status(self, status: str) -> None:
        """The invocation page's own status (the seed's coarse one)."""
        self.wait(
            lambda _: self.attribute(".invocation-head [data-status]", "data-status") == status,
            f"the invocation to be {status}",
        )

    def go(self, route: str) -> None:
        """A fresh page at `route` (loaded again when already there: a new, empty form)."""
        target = f"{self.url}#{route}"
        same = self.browser.current_url == target
        self.browser.get(target)
        if same:
            self.browser.refresh()

    def fill(self, css: str, value: str) -> None:
        field = self.find(css)
        field.clear()
        field.send_keys(value)

    def click(self, css: str) -> None:
        """Clicks `css` once it is there (found again if the page redrew it meanwhile)."""

        def clicked(browser: WebDriver) -> bool:
            try:
                element = browser.find_element(By.CSS_SELECTOR, css)
                # In the middle of the view: not under the form's sticky Execute bar.
                browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
                element.click()
            except (StaleElementReferenceException, ElementClickInterceptedException):
                return False
            return True

        self.wait(clicked, f"a click on {css}")

    def choose(self, css: str, value: str) -> None:
        """Picks the option `value` of the select `css`."""
        self.find(css).find_element(By.CSS_SELECTOR, f"option[value='{value}']").click()

    def checked(self, css: str) -> bool:
        return bool(
            self.browser.execute_script("return document.querySelector(arguments[0]).checked", css)
        )

    def shot(self, name: str) -> None:
        self.browser.save_screenshot(str(self.shots / f"{name}.png"))

    def stub(self) -> command_pb2_grpc.CommandServiceStub:
        return command_pb2_grpc.CommandServiceStub(self.server.sync_channel())

    @property
    def metadata(self) -> list[tuple[str, str]]:
        return self.server.metadata


def chromium(downloads: Path, profile: Path) -> WebDriver:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1360,960", f"--user-data-dir={profile}",
        "--lang=en-US",
    ):  # fmt: skip
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    service = Service(CHROMEDRIVER, env={**os.environ, "TZ": BROWSER_TZ})
    browser = webdriver.Chrome(service=service, options=options)
    browser.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    return browser


@contextmanager
def running_console(workdir: Path, instances: tuple[str, ...]) -> Iterator[Console]:
    """A server with its console, an agent per instance id, and a browser; all stopped after."""
    # Fails (no skip) where chromium is missing: CI installs it.
    assert Path(CHROMIUM).exists(), "apt-get install chromium"
    assert Path(CHROMEDRIVER).exists(), "apt-get install chromium-driver"
    shots = Path(os.environ.get("CLOUDASSIST_SCREENSHOTS") or workdir / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    downloads = workdir / "downloads"
    downloads.mkdir()
    server = ServerProcess(
        workdir / "server",
        "--console-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
        "--min-timeout", "1", "--stop-grace", "5",
    )  # fmt: skip
    agents = [AgentProcess(server, i, workdir) for i in instances]
    server.start()
    browser: WebDriver | None = None
    try:
        for agent in agents:
            agent.start()
        browser = chromium(downloads, workdir / "profile")
        yield Console(server, browser, workdir, shots, downloads)
    finally:
        if browser is not None:
            browser.quit()
        for agent in agents:
            agent.stop()
        server.stop()


def sign_in(console: Console, key: str) -> None:
    console.go("/signin")
    console.fill("[data-test=api-key]", key)
    console.click("[data-test=sign-in]")


def results_by_instance(console: Console, invoke_id: str) -> dict[str, pb.InvocationResult]:
    found = console.stub().DescribeInvocationResults(
        pb.DescribeInvocationResultsRequest(region_id=REGION, invoke_id=invoke_id),
        metadata=console.metadata,
    )
    return {r.instance_id: r for r in found.invocation_results}


def invocation(console: Console, invoke_id: str) -> pb.Invocation:
    return (
        console.stub()
        .DescribeInvocations(
            pb.DescribeInvocationsRequest(region_id=REGION, invoke_id=invoke_id),
            metadata=console.metadata,
        )
        .invocations[0]
    )


def invoke_id_of(console: Console, other_than: str = "") -> str:
    """The invocation whose page the browser shows (once it is not `other_than`'s)."""

    def shown(browser: WebDriver) -> bool:
        url = browser.current_url
        return "#/invocations/t-" in url and not (other_than and url.endswith(f"/{other_than}"))

    console.wait(shown, "the invocation page")
    return console.browser.current_url.rsplit("/", 1)[1]


# axe-core's findings of these impacts fail a page; "moderate" and "minor" ones are reported.
BLOCKING_IMPACTS = ("serious", "critical")


def axe_violations(console: Console) -> list[dict[str, Any]]:
    """axe-core's violations on the page as it is now (every rule axe runs by default: WCAG 2.x
    A and AA and its best practices), injected from node_modules, so nothing is fetched."""
    if not console.browser.execute_script("return typeof window.axe === 'object'"):
        console.browser.execute_script(AXE.read_text(encoding="utf-8"))
    found = console.browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then("
        "  r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
        "    nodes: v.nodes.map(n => n.target.join(' '))}))),"
        "  e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));"
    )
    return list(found)


def blocking(violations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [v for v in violations if v["impact"] in BLOCKING_IMPACTS]


# The controls a keyboard user must reach: links, buttons and form controls that are shown
# and enabled, and whatever else is in the tab order (a scrollable output pane). Inside an open
# modal dialog, only its own (the rest of the page is inert). Each is known by what it is (tag,
# data-*, href, label, text, its table row), so a control the page draws again while the test
# runs (a list it refreshes) counts as the same one.
_KEYBOARD_JS = """
window.__kb = {
  scope: () => document.querySelector('dialog[open]') || document,
  controls() {
    const shown = e => e.getClientRects().length > 0
      && getComputedStyle(e).visibility !== 'hidden';
    const all = 'a[href], button, input, select, textarea, [tabindex]';
    return [...this.scope().querySelectorAll(all)]
      .filter(e => shown(e) && !e.disabled && e.tabIndex >= 0 && !e.closest('[inert]'));
  },
  key(e) {
    const named = ['href', 'aria-label', 'name', 'type'];
    const attrs = el => [...el.attributes]
      .filter(a => a.name.startsWith('data-') || named.includes(a.name))
      .map(a => a.name + '=' + a.value).join(' ');
    const row = e.closest('tr');
    const text = ['A', 'BUTTON'].includes(e.tagName) ? e.textContent.trim().slice(0, 60) : '';
    return [e.tagName, attrs(e), row ? attrs(row) : '', text].join('|');
  },
  keys() {
    const count = new Map();
    return this.controls().map(e => {
      const k = this.key(e);
      count.set(k, (count.get(k) || 0) + 1);
      return [e, k + '#' + count.get(k)];
    });
  },
  seen: new Set(),
};
document.addEventListener('focusin', e => {
  const found = window.__kb.keys().find(([el]) => el === e.target);
  if (found) window.__kb.seen.add(found[1]);
}, true);
document.activeElement && document.activeElement.blur();
return window.__kb.keys().map(([, k]) => k);
"""


def keyboard_gaps(console: Console, max_presses: int = 400) -> tuple[list[str], list[str]]:
    """Presses Tab from the top of the page (or dialog) until focus has been on every control or
    comes round again, and returns (the controls focus never reached, the elements with a
    positive tabindex, which reorder the tab sequence). A code editor takes Tab as a character;
    Escape first releases it, as its hint says, and that is what is pressed there."""
    wanted = [str(k) for k in console.browser.execute_script(_KEYBOARD_JS)]
    for _ in range(max_presses):
        actions = ActionChains(console.browser)
        if console.browser.execute_script(
            "return document.activeElement && document.activeElement.matches('textarea.code')"
        ):
            actions.send_keys(Keys.ESCAPE)
        actions.send_keys(Keys.TAB).perform()
        seen = set(console.browser.execute_script("return [...window.__kb.seen]"))
        if seen >= set(wanted):
            break
    missed = [k for k in wanted if k not in seen]
    positive = console.browser.execute_script(
        "return [...document.querySelectorAll('[tabindex]')].filter(e => e.tabIndex > 0)"
        "  .map(e => e.outerHTML.slice(0, 120));"
    )
    return missed, [str(p) for p in positive]
