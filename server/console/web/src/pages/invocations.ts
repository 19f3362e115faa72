// Execution records: invocations newest first, filtered by status, with each instance's
// coarse status and detailed state.

import { commands, session } from "../api";
import { h, replace } from "../dom";
import { errorBox, select } from "../forms";
import { REPEAT_LABELS, STATUS_LABELS, stateBadge, statusBadge, TYPE_LABELS, when } from "../format";
import { InvokeStatus, type Invocation } from "../gen/cloudassist/v1/command_pb";
import { navigate } from "../nav";

const PAGE_SIZE = 20;

export async function invocationsPage(main: HTMLElement, query: URLSearchParams): Promise<() => void> {
  const statuses = [InvokeStatus.RUNNING, InvokeStatus.FINISHED, InvokeStatus.FAILED, InvokeStatus.PARTIAL_FAILED, InvokeStatus.STOPPED];
  const status = select([["0", "Any status"], ...statuses.map((s): [string, string] => [String(s), STATUS_LABELS[s]])], query.get("status") ?? "0", { "data-test": "status-filter" });
  const list = h("div", { class: "table-wrap" });
  const pager = h("div", { class: "pager" });
  const tokens: string[] = [""];
  let page = 0;
  const load = async (): Promise<void> => {
    try {
      const found = await commands.describeInvocations({ regionId: session.region, invokeStatus: Number(status.value), pageSize: PAGE_SIZE, pageToken: tokens[page] ?? "" });
      tokens[page + 1] = found.nextPageToken;
      replace(list, table(found.invocations));
      replace(
        pager,
        h("span", { class: "muted" }, `${found.totalCount} invocation(s) · page ${page + 1}`),
        h("button", { type: "button", disabled: page === 0, onclick: () => { page--; void load(); } }, "‹ Previous"),
        h("button", { type: "button", disabled: !found.nextPageToken, onclick: () => { page++; void load(); } }, "Next ›"),
      );
    } catch (error) {
      replace(list, errorBox(error));
    }
  };
  status.addEventListener("change", () => {
    page = 0;
    tokens.length = 1;
    void load();
  });
  replace(
    main,
    h("header", { class: "page-head" }, h("h1", {}, "Execution records"), h("button", { type: "button", onclick: () => void load() }, "Refresh")),
    h("div", { class: "toolbar" }, status),
    list,
    pager,
  );
  await load();
  // Running invocations change by themselves: look again now and then while the page is open.
  const timer = window.setInterval(() => void load(), 5000);
  return () => window.clearInterval(timer);
}

function table(items: Invocation[]): HTMLElement {
  if (!items.length) return h("p", { class: "empty" }, "No invocations.");
  return h(
    "table",
    { "data-test": "invocations" },
    h("thead", {}, h("tr", {}, ...["Invocation", "Command", "Status", "Instances", "Mode", "Created"].map((c) => h("th", {}, c)))),
    h(
      "tbody",
      {},
      ...items.map((i) =>
        h(
          "tr",
          { class: "clickable", "data-invocation": i.invokeId, onclick: () => navigate(`/invocations/${i.invokeId}`) },
          h("td", {}, h("a", { href: `#/invocations/${i.invokeId}` }, h("code", {}, i.invokeId))),
          h("td", {}, i.commandName, h("div", { class: "muted small" }, TYPE_LABELS[i.commandType])),
          h("td", {}, statusBadge(i.invokeStatus)),
          h("td", {}, h("div", { class: "instance-states" }, ...i.invokeInstances.map((x) => h("span", { class: "instance-state" }, h("code", {}, x.instanceId), statusBadge(x.instanceInvokeStatus), stateBadge(x.state))))),
          h("td", {}, REPEAT_LABELS[i.repeatMode], i.frequency ? h("div", { class: "muted small" }, h("code", {}, i.frequency)) : null),
          h("td", { class: "nowrap" }, when(i.creationTime)),
        ),
      ),
    ),
  );
}
