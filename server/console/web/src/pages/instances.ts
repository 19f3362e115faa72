// Instances: online, OS, hostname, agent version, last heartbeat, running tasks, tags; tag and
// untag the selected ones.

import { instances, session } from "../api";
import { h, redraw, replace } from "../dom";
import { errorBox, Form, input } from "../forms";
import { OS_LABELS, TYPE_LABELS, when } from "../format";
import type { Instance } from "../gen/cloudassist/v1/instance_pb";
import { sortedBy } from "../rules";
import { parseTags } from "./commands";
import { allInstances } from "./instance-picker";

export async function instancesPage(main: HTMLElement): Promise<() => void> {
  const selected = new Set<string>();
  const tagFilter = input({ placeholder: "Tag filter: key=value", "data-test": "tag-filter", "aria-label": "Tag filter (key=value)" });
  const list = h("div", { class: "table-wrap" });
  const tags = input({ name: "tags", placeholder: "role=web, env=prod", "data-test": "tags" });
  const keys = input({ name: "keys", placeholder: "role, env", "data-test": "keys" });
  const listed: Instance[] = [];

  const load = async (): Promise<void> => {
    try {
      listed.splice(0, listed.length, ...sortedBy(await allInstances(parseTags(tagFilter.value)), (i) => i.instanceId));
      render();
    } catch (error) {
      replace(list, errorBox(error));
    }
  };
  const render = (): void => {
    if (!listed.length) {
      replace(list, h("p", { class: "empty" }, "No instances. Start an agent: cloudassist-agent --server … --activation-id … --activation-code …"));
      return;
    }
    redraw(list, h("table", { "data-test": "instances" },
      h("thead", {}, h("tr", {}, ...["Select", "Instance", "Status", "OS", "Runs", "Hostname", "Agent", "Last heartbeat", "Running tasks", "Tags"].map((c) => h("th", {}, c)))),
      h("tbody", {}, ...listed.map((i) => {
        const box = h("input", { type: "checkbox", "data-select": i.instanceId, "aria-label": `Select ${i.instanceId}` });
        box.checked = selected.has(i.instanceId);
        box.addEventListener("change", () => (box.checked ? selected.add(i.instanceId) : selected.delete(i.instanceId)));
        return h("tr", { "data-instance": i.instanceId },
          h("td", {}, box),
          h("td", {}, h("code", {}, i.instanceId)),
          h("td", {}, h("span", { class: i.online ? "dot online" : "dot offline" }), i.online ? "Online" : "Offline"),
          h("td", {}, OS_LABELS[i.osType]),
          h("td", { class: "small" }, i.commandTypes.map((t) => TYPE_LABELS[t]).join(", ")),
          h("td", {}, i.hostname),
          h("td", {}, i.agentVersion),
          h("td", { class: "time-cell" }, when(i.lastHeartbeatTime)),
          h("td", {}, String(i.activeTaskCount)),
          h("td", { "data-cell": "tags" }, i.tags.map((t) => h("code", { class: "chip" }, t.value ? `${t.key}=${t.value}` : t.key))));
      }))));
  };
  const chosen = (): string[] => [...selected].sort();
  const tagForm = new Form(async () => {
    await instances.tagInstances({ regionId: session.region, instanceIds: chosen(), tags: parseTags(tags.value) });
    tags.value = "";
    await load();
  }, "inline-form");
  tagForm.add(tagForm.field("tags", "Add tags to the selected", tags), tagForm.field("instance_ids", "", h("button", { type: "submit", "data-test": "tag" }, "Tag")));
  const untagForm = new Form(async () => {
    const names = keys.value.split(",").map((k) => k.trim()).filter(Boolean);
    await instances.untagInstances({ regionId: session.region, instanceIds: chosen(), keys: names });
    keys.value = "";
    await load();
  }, "inline-form");
  untagForm.add(untagForm.field("keys", "Remove tag keys from the selected", keys), untagForm.field("instance_ids", "", h("button", { type: "submit", "data-test": "untag" }, "Untag")));
  tagFilter.addEventListener("change", () => void load());

  replace(
    main,
    h("header", { class: "page-head" }, h("h1", {}, "Instances"), h("button", { type: "button", onclick: () => void load() }, "Refresh")),
    h("div", { class: "toolbar" }, tagFilter),
    list,
    h("section", { class: "card tag-forms" }, tagForm.element, untagForm.element),
  );
  await load();
  const timer = window.setInterval(() => void load(), 10_000);
  return () => window.clearInterval(timer);
}
