// Execution records: invocations newest first, searched by command name (any part of it),
// command id, invocation id or instance id, and filtered by status, with each instance's
// coarse status and detailed state, and an Operation column: View, Stop Command (running or
// periodic ones, after a confirmation), Run again on failed instances (Failed or
// PartialFailed ones).

import { commands, session } from "../api";
import { confirmDialog, h, redraw, replace } from "../dom";
import { errorBox, input, select } from "../forms";
import { REPEAT_LABELS, STATUS_LABELS, stateBadge, statusBadge, TYPE_LABELS, when } from "../format";
import { InvokeStatus, type DescribeInvocationsRequest, type Invocation } from "../gen/cloudassist/v1/command_pb";
import { canRerun, canStop, sortedBy } from "../rules";
import { rerunButton } from "./rerun";

const PAGE_SIZE = 20;
const SEARCH_BY: [string, string][] = [
  ["name", "Command name"],
  ["command", "Command ID"],
  ["invocation", "Invocation ID"],
  ["instance", "Instance ID"],
];

/** The DescribeInvocations filter a search sets. */
function filterOf(by: string, text: string): Pick<Partial<DescribeInvocationsRequest>, "commandId" | "invokeId" | "instanceId" | "commandName"> {
  if (!text) return {};
  if (by === "command") return { commandId: text };
  if (by === "invocation") return { invokeId: text };
  if (by === "instance") return { instanceId: text };
  return { commandName: text };
}

export async function invocationsPage(main: HTMLElement, query: URLSearchParams): Promise<() => void> {
  const statuses = [InvokeStatus.RUNNING, InvokeStatus.FINISHED, InvokeStatus.FAILED, InvokeStatus.PARTIAL_FAILED, InvokeStatus.STOPPED];
  const status = select([["0", "Any status"], ...statuses.map((s): [string, string] => [String(s), STATUS_LABELS[s]])], query.get("status") ?? "0", { "data-test": "status-filter", "aria-label": "Status" });
  const by = select(SEARCH_BY, query.get("by") ?? "name", { "data-test": "records-search-by", "aria-label": "Search by" });
  const text = input({ type: "search", placeholder: "Search", value: query.get("q") ?? "", "data-test": "records-search", "aria-label": "Search text" });
  const notice = h("div", { class: "notices", "aria-live": "polite" });
  const list = h("div", { class: "table-wrap records-wrap" });
  const pager = h("div", { class: "pager" });
  const tokens: string[] = [""];
  let page = 0;
  let shown = "";
  let asked = 0;

  const load = async (): Promise<void> => {
    const ask = ++asked;
    const search = text.value.trim();
    try {
      const found = await commands.describeInvocations({
        regionId: session.region,
        invokeStatus: Number(status.value),
        pageSize: PAGE_SIZE,
        pageToken: tokens[page] ?? "",
        ...filterOf(by.value, search),
      });
      if (ask !== asked) return; // a newer search is out
      tokens[page + 1] = found.nextPageToken;
      // Drawn again only when something changed, so that focus and a pointer stay put.
      const key = JSON.stringify([search, found.invocations.map((i) => [i.invokeId, i.invokeStatus, i.invokeInstances.map((x) => [x.instanceId, x.instanceInvokeStatus, x.state])])]);
      if (key !== shown) {
        shown = key;
        redraw(list, table(found.invocations, search, actions));
      }
      redraw(
        pager,
        h("span", { class: "muted" }, `${found.totalCount} invocation(s) · page ${page + 1}`),
        h("button", { type: "button", disabled: page === 0, onclick: () => { page--; void load(); } }, "‹ Previous"),
        h("button", { type: "button", disabled: !found.nextPageToken, onclick: () => { page++; void load(); } }, "Next ›"),
      );
    } catch (error) {
      if (ask !== asked) return;
      shown = "";
      replace(list, errorBox(error));
    }
  };

  const actions = {
    stop: async (i: Invocation): Promise<void> => {
      const what = `Stop ${i.commandName} (${i.invokeId}) on every instance it still runs or will run on?`;
      if (!(await confirmDialog("Stop command", what, "Stop command"))) return;
      try {
        await commands.stopInvocation({ regionId: session.region, invokeId: i.invokeId, instanceIds: [] });
        replace(notice);
      } catch (error) {
        replace(notice, errorBox(error));
      }
      await load();
    },
  };

  let typing = 0;
  const search = (): void => {
    page = 0;
    tokens.length = 1;
    // Where the search is, in the address (without a new history entry or a redraw).
    const params = new URLSearchParams();
    if (text.value.trim()) params.set("q", text.value.trim());
    if (text.value.trim() && by.value !== "name") params.set("by", by.value);
    if (status.value !== "0") params.set("status", status.value);
    const suffix = params.toString();
    history.replaceState(null, "", `#/invocations${suffix ? `?${suffix}` : ""}`);
    window.clearTimeout(typing);
    typing = window.setTimeout(() => void load(), 200);
  };
  text.addEventListener("input", search);
  by.addEventListener("change", search);
  status.addEventListener("change", search);
  replace(
    main,
    h("header", { class: "page-head" }, h("h1", {}, "Execution records"), h("button", { type: "button", onclick: () => void load() }, "Refresh")),
    h("div", { class: "toolbar", role: "search" }, by, text, status),
    notice,
    list,
    pager,
  );
  await load();
  // Running invocations change by themselves: look again now and then while the page is open.
  const timer = window.setInterval(() => void load(), 5000);
  return () => {
    window.clearInterval(timer);
    window.clearTimeout(typing);
  };
}

function table(items: Invocation[], search: string, actions: { stop: (i: Invocation) => Promise<void> }): HTMLElement {
  if (!items.length) return h("p", { class: "empty" }, search ? `No invocations match “${search}”.` : "No invocations.");
  return h(
    "table",
    { "data-test": "invocations", class: "records" },
    h("thead", {}, h("tr", {}, ...["Invocation", "Command", "Status", "Instances", "Mode", "Created", "Operation"].map((c) => h("th", {}, c)))),
    h(
      "tbody",
      {},
      ...items.map((i) =>
        h(
          "tr",
          { "data-invocation": i.invokeId },
          h("td", {}, h("a", { href: `#/invocations/${i.invokeId}`, class: "id" }, h("code", {}, i.invokeId))),
          h("td", { class: "wrap" }, i.commandName, h("div", { class: "muted small" }, TYPE_LABELS[i.commandType])),
          h("td", { "data-cell": "status" }, statusBadge(i.invokeStatus)),
          h("td", {}, h("div", { class: "instance-states" }, ...sortedBy(i.invokeInstances, (x) => x.instanceId).map((x) => h("span", { class: "instance-state" }, h("code", {}, x.instanceId), statusBadge(x.instanceInvokeStatus), stateBadge(x.state))))),
          h("td", { class: "wrap" }, REPEAT_LABELS[i.repeatMode], i.frequency ? h("div", { class: "muted small" }, h("code", { class: "frequency" }, i.frequency)) : null),
          h("td", { class: "time-cell" }, when(i.creationTime)),
          h(
            "td",
            { "data-cell": "operation" },
            h(
              "div",
              { class: "operations" },
              h("a", { href: `#/invocations/${i.invokeId}`, class: "op", "data-op": "view" }, "View"),
              canStop(i) ? h("button", { type: "button", class: "small danger", "data-op": "stop", onclick: () => void actions.stop(i) }, "Stop Command") : null,
              canRerun(i) ? rerunButton(i) : null,
            ),
          ),
        ),
      ),
    ),
  );
}
