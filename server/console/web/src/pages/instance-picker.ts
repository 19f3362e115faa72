// Choosing the instances to run on: search, tag filter, online and OS shown; an instance that
// cannot run the command (offline, or its OS does not run the command type) cannot be chosen,
// and says why.

import { instances, session } from "../api";
import { h, replace } from "../dom";
import { errorBox, input } from "../forms";
import { OS_LABELS, TYPE_LABELS } from "../format";
import { CommandType } from "../gen/cloudassist/v1/command_pb";
import type { Instance } from "../gen/cloudassist/v1/instance_pb";
import { sortedBy } from "../rules";
import { parseTags } from "./commands";

const MAX_LISTED = 1000;

export function ineligible(instance: Instance, type: CommandType): string {
  if (!instance.online) return "offline";
  if (!instance.commandTypes.includes(type)) return `${OS_LABELS[instance.osType]} does not run ${TYPE_LABELS[type]} scripts`;
  return "";
}

export async function allInstances(tags: { key: string; value: string }[] = []): Promise<Instance[]> {
  const found: Instance[] = [];
  let pageToken = "";
  do {
    const page = await instances.describeInstances({ regionId: session.region, pageSize: 50, pageToken, tags });
    found.push(...page.instances);
    pageToken = page.nextPageToken;
  } while (pageToken && found.length < MAX_LISTED);
  return found;
}

export class InstancePicker {
  readonly element = h("div", { class: "picker", "data-test": "instance-picker" });
  readonly selected = new Set<string>();
  private type: CommandType = CommandType.RUN_SHELL_SCRIPT;
  private listed: Instance[] = [];
  private readonly search = input({ type: "search", placeholder: "Search id or hostname", "data-test": "instance-search", "aria-label": "Search instances by id or hostname" });
  private readonly tag = input({ placeholder: "Tag filter: key=value", "data-test": "instance-tag", "aria-label": "Tag filter (key=value)" });
  private readonly table = h("div", { class: "table-wrap picker-table" });
  private readonly count = h("span", { class: "muted" });

  constructor() {
    this.search.addEventListener("input", () => this.render());
    this.tag.addEventListener("change", () => void this.load());
    replace(
      this.element,
      h("div", { class: "toolbar" }, this.search, this.tag,
        h("button", { type: "button", class: "small", "data-test": "select-all", onclick: () => this.selectAll() }, "Select all eligible"),
        h("button", { type: "button", class: "small", onclick: () => void this.load() }, "Refresh"),
        this.count),
      this.table,
    );
  }

  setType(type: CommandType): void {
    this.type = type;
    this.render();
  }

  async load(): Promise<void> {
    try {
      this.listed = sortedBy(await allInstances(parseTags(this.tag.value)), (i) => i.instanceId);
      this.render();
    } catch (error) {
      replace(this.table, errorBox(error));
    }
  }

  private visible(): Instance[] {
    const query = this.search.value.trim().toLowerCase();
    return this.listed.filter((i) => !query || i.instanceId.toLowerCase().includes(query) || i.hostname.toLowerCase().includes(query));
  }

  private selectAll(): void {
    for (const i of this.visible()) if (!ineligible(i, this.type)) this.selected.add(i.instanceId);
    this.render();
  }

  private render(): void {
    // An instance that became ineligible (another type chosen) is no longer selected.
    for (const i of this.listed) if (ineligible(i, this.type)) this.selected.delete(i.instanceId);
    this.count.textContent = `${this.selected.size} selected`;
    const rows = this.visible();
    if (!rows.length) {
      replace(this.table, h("p", { class: "empty" }, "No instances match."));
      return;
    }
    replace(
      this.table,
      h(
        "table",
        {},
        h("thead", {}, h("tr", {}, ...["Run on", "Instance", "Hostname", "OS", "Status", "Tags", "Why not"].map((c) => h("th", {}, c)))),
        h(
          "tbody",
          {},
          ...rows.map((i) => {
            const reason = ineligible(i, this.type);
            const box = h("input", { type: "checkbox", disabled: Boolean(reason), "data-instance": i.instanceId, "aria-label": `Run on ${i.instanceId}` });
            box.checked = this.selected.has(i.instanceId);
            box.addEventListener("change", () => {
              if (box.checked) this.selected.add(i.instanceId);
              else this.selected.delete(i.instanceId);
              this.count.textContent = `${this.selected.size} selected`;
            });
            return h(
              "tr",
              { class: reason ? "disabled" : "", "data-row-instance": i.instanceId },
              h("td", {}, box),
              h("td", {}, h("code", {}, i.instanceId)),
              h("td", {}, i.hostname),
              h("td", {}, OS_LABELS[i.osType]),
              h("td", {}, h("span", { class: i.online ? "dot online" : "dot offline" }), i.online ? "Online" : "Offline"),
              h("td", {}, i.tags.map((t) => h("code", { class: "chip" }, t.value ? `${t.key}=${t.value}` : t.key))),
              h("td", { class: "reason-cell", "data-reason": reason }, reason),
            );
          }),
        ),
      ),
    );
  }
}
