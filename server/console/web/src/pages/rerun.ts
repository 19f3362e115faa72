// "Run again on failed instances": from an invocation that ended Failed or PartialFailed, the
// same command with the same parameters and options, as a new invocation on the failed
// instances the user keeps checked (RerunInvocation), then that invocation's page.

import { commands, session } from "../api";
import { h, openDialog } from "../dom";
import { Form } from "../forms";
import { stateBadge } from "../format";
import type { Invocation } from "../gen/cloudassist/v1/command_pb";
import { navigate } from "../nav";
import { failedInstances } from "../rules";

export function rerunButton(invocation: Invocation, cls = "small"): HTMLElement {
  return h(
    "button",
    { type: "button", class: cls, "data-rerun": invocation.invokeId, onclick: () => void rerunFailed(invocation) },
    "Run again on failed instances",
  );
}

export async function rerunFailed(invocation: Invocation): Promise<void> {
  const failed = failedInstances(invocation);
  // One token per dialog: a second submit (a retry) returns the same new invocation.
  const clientToken = crypto.randomUUID();
  const boxes = failed.map(({ instanceId }) => {
    const box = h("input", { type: "checkbox", "data-rerun-instance": instanceId, "aria-label": `Run again on ${instanceId}` });
    box.checked = true;
    return box;
  });
  const newId = await openDialog("Run again on failed instances", (close) => {
    const submit = h("button", { type: "submit", class: "primary", "data-test": "rerun-submit" }, "Run again");
    const count = h("span", { class: "muted small", "data-test": "rerun-count" });
    const recount = (): void => {
      const chosen = boxes.filter((b) => b.checked).length;
      count.textContent = `${chosen} of ${boxes.length} chosen`;
      submit.disabled = chosen === 0;
    };
    for (const box of boxes) box.addEventListener("change", recount);
    recount();
    const form = new Form(async () => {
      const instanceIds = failed.filter((_, i) => boxes[i]?.checked).map((f) => f.instanceId);
      if (!instanceIds.length) return; // none would mean all of them to the API
      const answer = await commands.rerunInvocation({ regionId: session.region, invokeId: invocation.invokeId, instanceIds, clientToken });
      close(answer.invokeId);
    }, "rerun-form");
    const rows = failed.map(({ instanceId, state }, i) =>
      h("tr", { "data-rerun-row": instanceId }, h("td", {}, boxes[i]), h("td", {}, h("code", {}, instanceId)), h("td", {}, stateBadge(state))),
    );
    form.add(
      h("p", {}, `${invocation.commandName} (`, h("code", {}, invocation.invokeId), ") runs again, with the same parameters and options, as a new invocation on the instances checked below."),
      form.field(
        "instance_ids",
        "Failed instances",
        failed.length
          ? h("div", { class: "table-wrap picker-table" }, h("table", { "data-test": "rerun-instances" }, h("thead", {}, h("tr", {}, h("th", {}, h("span", { class: "visually-hidden" }, "Run again")), h("th", {}, "Instance"), h("th", {}, "State"))), h("tbody", {}, ...rows)))
          : h("p", { class: "empty" }, "No instance of it failed."),
      ),
      h("div", { class: "actions" }, count, h("button", { type: "button", onclick: () => close("") }, "Cancel"), submit),
    );
    return [form.element];
  });
  if (newId) navigate(`/invocations/${newId}`);
}
