// The console's shell: sign-in, the sidebar (region, pages, who is signed in), hash routing.
// A page is a function that fills the main area and returns what stops it (a live stream).

import { DEFAULT_REGION, instances, refusal, session, whenSignedOut } from "./api";
import { clockMode, setClockMode } from "./clock";
import { h, openDialog, replace } from "./dom";
import { Form, input, refusalView, select } from "./forms";
import type { Region } from "./gen/cloudassist/v1/instance_pb";
import { commandsPage } from "./pages/commands";
import { executePage } from "./pages/execute";
import { filesPage } from "./pages/files";
import { instancesPage } from "./pages/instances";
import { invocationPage } from "./pages/invocation";
import { invocationsPage } from "./pages/invocations";
import { navigate } from "./nav";
import { clockName } from "./time";

export type Stop = () => void;
export type Page = (main: HTMLElement, query: URLSearchParams, id: string) => Promise<Stop | void> | Stop | void;

const ROUTES: [RegExp, Page, string][] = [
  [/^\/commands$/, commandsPage, "commands"],
  [/^\/execute$/, executePage, "execute"],
  [/^\/invocations$/, invocationsPage, "invocations"],
  [/^\/invocations\/([^/]+)$/, invocationPage, "invocations"],
  [/^\/instances$/, instancesPage, "instances"],
  [/^\/files$/, filesPage, "files"],
];

const NAV: [string, string][] = [
  ["commands", "Commands"],
  ["execute", "Run a script"],
  ["invocations", "Execution records"],
  ["instances", "Instances"],
  ["files", "Files"],
];

const app = document.getElementById("app") as HTMLElement;
let stopPage: Stop | undefined;
let signInReason = "";

function signIn(): void {
  const key = input({ type: "password", name: "api_key", autocomplete: "off", placeholder: "k-….…", required: true, "data-test": "api-key" });
  const region = input({ name: "region_id", value: session.region, "data-test": "region" });
  const form = new Form(async () => {
    session.key = key.value.trim();
    session.region = region.value.trim() || DEFAULT_REGION;
    try {
      // Any call checks the key; this one also shows the region is well-formed.
      await instances.describeInstances({ regionId: session.region, pageSize: 1 });
    } catch (error) {
      session.key = "";
      throw error;
    }
    signInReason = "";
    const target = window.location.hash.slice(1);
    if (!target || target === "/signin") navigate("/commands");
    else route();
  });
  form.add(
    form.field("authorization", "API key", key, "An account's key, or the admin key (var/admin.key on the server). It stays in this tab only."),
    form.field("region_id", "Region", region),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", "data-test": "sign-in" }, "Sign in")),
  );
  if (signInReason) {
    form.show({ code: "Unauthenticated", message: signInReason, reason: "", fields: new Map(), unauthenticated: true });
  }
  replace(
    app,
    h(
      "main",
      { class: "signin" },
      h("div", { class: "card signin-card" }, h("div", { class: "brand big" }, h("span", { class: "logo" }, "▸"), "cloudassist"), h("h1", {}, "Sign in"), form.element),
    ),
  );
  key.focus();
}

function shell(current: string): HTMLElement {
  const main = h("main", { class: "content", id: "main" });
  replace(
    app,
    h(
      "div",
      { class: "layout" },
      h(
        "nav",
        { class: "sidebar", "aria-label": "Console" },
        h("div", { class: "brand" }, h("span", { class: "logo", "aria-hidden": "true" }, "▸"), "cloudassist"),
        regionPicker(),
        h("ul", {}, ...NAV.map(([path, label]) => h("li", {}, h("a", { href: `#/${path}`, class: path === current ? "active" : "", "aria-current": path === current ? "page" : undefined, "data-nav": path }, label)))),
        clockPicker(),
        h(
          "div",
          { class: "whoami" },
          h("span", { class: "side-muted" }, "Key "),
          h("code", {}, session.keyId),
          h("button", { type: "button", class: "link", "data-test": "sign-out", onclick: () => signOut("") }, "Sign out"),
        ),
      ),
      main,
    ),
  );
  return main;
}

/** The regions the server knows for this key (DescribeRegions), and the current one; another
 * region (one with nothing in it yet) can still be named. */
function regionPicker(): HTMLElement {
  const picker = h("select", { class: "region", "data-test": "region-picker", id: "region-picker" });
  /** `regions` as the server listed them (undefined: not known yet, or an older server). */
  const fill = (regions: Region[] | undefined): void => {
    const known = regions?.some((r) => r.regionId === session.region);
    replace(
      picker,
      ...(regions ?? []).map((r) => h("option", { value: r.regionId }, regionLabel(r))),
      known ? null : h("option", { value: session.region }, regions ? `${session.region} (nothing here yet)` : session.region),
    );
    picker.value = session.region;
  };
  fill(undefined);
  picker.addEventListener("change", () => {
    session.region = picker.value;
    route();
  });
  void instances.describeRegions({}).then(
    (answer) => fill(answer.regions),
    () => undefined, // an older server: the current region only
  );
  const other = h("button", { type: "button", class: "link", "data-test": "other-region", onclick: () => void askRegion() }, "Other…");
  return h("div", { class: "region-label" }, h("div", { class: "region-row" }, h("label", { for: "region-picker" }, "Region"), other), picker);
}

function regionLabel(region: Region): string {
  if (region.instanceCount) return `${region.regionId} · ${region.onlineCount}/${region.instanceCount} online`;
  return `${region.regionId} · ${region.commandCount} command${region.commandCount === 1n ? "" : "s"}`;
}

async function askRegion(): Promise<void> {
  const field = input({ name: "region_id", "data-test": "new-region", placeholder: "eu-central-1", required: true, pattern: "[a-z0-9-]+" });
  const value = await openDialog("Another region", (close) => {
    const form = new Form(async () => close(field.value.trim()));
    form.add(
      form.field("region_id", "Region id", field, "One with nothing in it yet: commands and instances made there appear in the list."),
      h("div", { class: "actions" }, h("button", { type: "button", onclick: () => close("") }, "Cancel"), h("button", { type: "submit", class: "primary", "data-test": "use-region" }, "Use")),
    );
    return [form.element];
  });
  if (!value) return;
  session.region = value;
  route();
}

/** The console's clock: every time shown in the browser's zone or in UTC, with its label. */
function clockPicker(): HTMLElement {
  const picker = select([["local", clockName("local")], ["utc", clockName("utc")]], clockMode(), { "data-test": "clock", id: "clock-picker" });
  picker.addEventListener("change", () => setClockMode(picker.value === "utc" ? "utc" : "local"));
  return h("div", { class: "region-label" }, h("label", { for: "clock-picker" }, "Times in"), picker);
}

function signOut(reason: string): void {
  session.key = "";
  signInReason = reason;
  stopPage?.();
  stopPage = undefined;
  navigate("/signin");
  signIn();
}

async function route(): Promise<void> {
  stopPage?.();
  stopPage = undefined;
  if (!session.key) {
    signIn();
    return;
  }
  const hash = window.location.hash.slice(1) || "/commands";
  const [path = "", queryText = ""] = hash.split("?");
  for (const [pattern, page, nav] of ROUTES) {
    const match = pattern.exec(path);
    if (!match) continue;
    // Executing a saved command is part of Commands, not "Run a script".
    const query = new URLSearchParams(queryText);
    const main = shell(nav === "execute" && query.has("command") ? "commands" : nav);
    try {
      const stop = await page(main, query, decodeURIComponent(match[1] ?? ""));
      if (stop) stopPage = stop;
    } catch (error) {
      const found = refusal(error);
      if (!found.unauthenticated) replace(main, h("div", { class: "form-error", role: "alert" }, ...refusalView(found)));
    }
    return;
  }
  navigate("/commands");
}

whenSignedOut((reason) => signOut(reason));
window.addEventListener("hashchange", () => void route());
void route();
