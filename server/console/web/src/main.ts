// The console's shell: sign-in, the sidebar (region, pages, who is signed in), hash routing.
// A page is a function that fills the main area and returns what stops it (a live stream).

import { DEFAULT_REGION, instances, refusal, session, whenSignedOut } from "./api";
import { h, replace } from "./dom";
import { Form, input } from "./forms";
import { commandsPage } from "./pages/commands";
import { executePage } from "./pages/execute";
import { filesPage } from "./pages/files";
import { instancesPage } from "./pages/instances";
import { invocationPage } from "./pages/invocation";
import { invocationsPage } from "./pages/invocations";
import { navigate } from "./nav";

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
    form.show({ code: "UNAUTHENTICATED", message: signInReason, reason: "Signed out", fields: new Map(), unauthenticated: true });
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
  const region = input({ class: "region", value: session.region, "data-test": "region-picker", list: "regions", "aria-label": "Region" });
  region.addEventListener("change", () => {
    session.region = region.value.trim() || DEFAULT_REGION;
    route();
  });
  const main = h("main", { class: "content" });
  replace(
    app,
    h(
      "div",
      { class: "layout" },
      h(
        "nav",
        { class: "sidebar" },
        h("div", { class: "brand" }, h("span", { class: "logo" }, "▸"), "cloudassist"),
        h("label", { class: "region-label" }, h("span", {}, "Region"), region),
        h("datalist", { id: "regions" }, ...["cn-hangzhou", "cn-shanghai", "cn-beijing", "cn-shenzhen", "ap-southeast-1", "us-west-1", "eu-central-1"].map((r) => h("option", { value: r }))),
        h("ul", {}, ...NAV.map(([path, label]) => h("li", {}, h("a", { href: `#/${path}`, class: path === current ? "active" : "", "data-nav": path }, label)))),
        h(
          "div",
          { class: "whoami" },
          h("span", { class: "muted" }, "Key "),
          h("code", {}, session.keyId),
          h("button", { type: "button", class: "link", "data-test": "sign-out", onclick: () => signOut("") }, "Sign out"),
        ),
      ),
      main,
    ),
  );
  return main;
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
    const main = shell(nav);
    try {
      const stop = await page(main, new URLSearchParams(queryText), decodeURIComponent(match[1] ?? ""));
      if (stop) stopPage = stop;
    } catch (error) {
      const found = refusal(error);
      if (!found.unauthenticated) replace(main, h("div", { class: "form-error" }, h("strong", {}, found.reason || found.code), " ", found.message));
    }
    return;
  }
  navigate("/commands");
}

whenSignedOut((reason) => signOut(reason));
window.addEventListener("hashchange", () => void route());
void route();
