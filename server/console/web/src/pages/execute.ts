// Execute a saved command (InvokeCommand) or a one-off script (RunCommand): content,
// parameter values, instances, immediate or scheduled (with the next fire times from the
// server before submit), timeout, user, working directory, rate control.

import { commands, refusal, session } from "../api";
import { h, replace } from "../dom";
import { Form, input, select } from "../forms";
import { TYPE_LABELS, utf8 } from "../format";
import { CommandType, RepeatMode, type Command } from "../gen/cloudassist/v1/command_pb";
import { navigate } from "../nav";
import { contentView, scriptEditor, TYPE_OPTIONS } from "./commands";
import { FireTimes } from "./fire-times";
import { InstancePicker } from "./instance-picker";

const ZONES = ["Asia/Shanghai", "UTC", "UTC+08:00", "Europe/London", "Europe/Paris", "America/New_York", "America/Los_Angeles", "Asia/Tokyo", "Asia/Singapore"];

/** Rows of name = value; the names found in the content first, more can be added. */
class ParameterValues {
  readonly element = h("div", { class: "params", "data-test": "parameters" });
  private readonly rows = h("div", { class: "param-rows" });
  private known: string[] = [];
  private readonly values = new Map<string, string>();
  private extra: { key: HTMLInputElement; value: HTMLInputElement }[] = [];

  constructor() {
    replace(this.element, this.rows, h("button", { type: "button", class: "small", "data-test": "add-parameter", onclick: () => this.addExtra() }, "+ Add parameter"));
  }

  setNames(names: string[]): void {
    this.known = names;
    this.render();
  }

  private addExtra(): void {
    const key = input({ placeholder: "name", class: "param-key", "data-test": "param-key", "aria-label": "Parameter name" });
    const value = input({ placeholder: "value", class: "param-value", "data-test": "param-value", "aria-label": "Parameter value" });
    this.extra.push({ key, value });
    this.render();
    key.focus();
  }

  private render(): void {
    const known = this.known.map((name) => {
      const value = input({ value: this.values.get(name) ?? "", "data-parameter-value": name, class: "param-value", "aria-label": `Value of ${name}` });
      value.addEventListener("input", () => this.values.set(name, value.value));
      return h("div", { class: "param-row" }, h("code", { class: "param-name" }, name), value);
    });
    const extra = this.extra.map(({ key, value }, index) =>
      h("div", { class: "param-row" }, key, value, h("button", { type: "button", class: "icon", title: "Remove", "aria-label": "Remove this parameter", onclick: () => { this.extra.splice(index, 1); this.render(); } }, "×")),
    );
    replace(this.rows, known.length || extra.length ? [...known, ...extra] : h("span", { class: "muted" }, "No parameters."));
  }

  collect(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const name of this.known) out[name] = this.values.get(name) ?? "";
    for (const { key, value } of this.extra) if (key.value.trim()) out[key.value.trim()] = value.value;
    return out;
  }
}

/** Immediate, or a schedule composed from its parts, with the server's next five fire times. */
class Schedule {
  readonly element = h("div", { class: "schedule" });
  private readonly mode = select([["once", "Immediate"], ["period", "Scheduled"]], "once", { "data-test": "mode" });
  private readonly kind = select([["cron", "Cron expression"], ["rate", "Fixed rate"], ["at", "Once at a time"]], "cron", { "data-test": "schedule-kind", "aria-label": "Kind of schedule" });
  private readonly cron = input({ placeholder: "0 */20 * * * ?  (seconds first)", "data-test": "cron", value: "0 */20 * * * ?", "aria-label": "Cron expression" });
  private readonly rateValue = input({ type: "number", min: 10, value: "5", "data-test": "rate", "aria-label": "Every" });
  private readonly rateUnit = select([["s", "seconds"], ["m", "minutes"], ["h", "hours"], ["d", "days"]], "m", { "aria-label": "Unit" });
  private readonly at = input({ type: "datetime-local", step: 1, "data-test": "at", "aria-label": "At" });
  private readonly zone = input({ placeholder: "server default (UTC+08:00)", list: "zones", "data-test": "timezone" });
  private readonly frequencyText = h("code", { "data-test": "frequency" });
  readonly fires = new FireTimes();
  private readonly parts = h("div", { class: "schedule-parts" });
  private timer = 0;
  private asked = 0;

  constructor(private readonly form: Form, private readonly timeout: () => bigint | undefined) {
    for (const control of [this.mode, this.kind]) control.addEventListener("change", () => this.layout());
    for (const control of [this.cron, this.rateValue, this.rateUnit, this.at, this.zone]) {
      control.addEventListener("input", () => this.changed());
      control.addEventListener("change", () => this.changed());
    }
    replace(this.element, h("div", { class: "row" }, form.field("repeat_mode", "Execution", this.mode)), this.parts,
      h("datalist", { id: "zones" }, ...ZONES.map((z) => h("option", { value: z }))));
    this.layout();
  }

  get periodic(): boolean {
    return this.mode.value === "period";
  }

  frequency(): string {
    const zone = this.zone.value.trim();
    if (this.kind.value === "rate") return `rate(${this.rateValue.value.trim()}${this.rateUnit.value})`;
    if (this.kind.value === "at") {
      const local = this.at.value.replace("T", " ");
      const withSeconds = local.length === 16 ? `${local}:00` : local;
      return `at(${withSeconds}${zone ? ` ${zone}` : ""})`;
    }
    return `${this.cron.value.trim()}${zone ? ` ${zone}` : ""}`;
  }

  /** The controls of the chosen kind of schedule (built again only when the kind changes, so
   * that typing keeps its focus). */
  private layout(): void {
    if (!this.periodic) {
      replace(this.parts);
      return;
    }
    const kind = this.kind.value;
    replace(
      this.parts,
      h("div", { class: "row" },
        this.form.field("frequency", "Schedule", h("div", { class: "inline" }, this.kind,
          kind === "cron" ? this.cron : kind === "rate" ? [this.rateValue, this.rateUnit] : this.at)),
        kind === "rate" ? null : h("div", { class: "field" }, h("label", {}, h("span", { class: "label" }, "Time zone"), this.zone))),
      h("div", { class: "preview" }, h("span", { class: "muted" }, "Frequency sent: "), this.frequencyText, this.fires.element),
    );
    this.changed();
  }

  changed(): void {
    if (!this.periodic) return;
    this.frequencyText.textContent = this.frequency();
    window.clearTimeout(this.timer);
    this.timer = window.setTimeout(() => void this.preview(), 250);
  }

  /** The server's own reading of the frequency: its next five fire times, or its refusal. */
  async preview(): Promise<void> {
    const asked = ++this.asked;
    const frequency = this.frequency();
    try {
      const answer = await commands.previewSchedule({ regionId: session.region, frequency, timeoutSeconds: this.timeout(), count: 5 });
      if (asked !== this.asked) return;
      this.form.clearErrors();
      this.fires.show(answer.fireTimes, answer.timeZone);
    } catch (error) {
      if (asked !== this.asked) return;
      const found = refusal(error);
      this.form.clearErrors();
      this.form.show(found);
      this.fires.clear();
    }
  }
}

export async function executePage(main: HTMLElement, query: URLSearchParams): Promise<void> {
  const commandId = query.get("command") ?? "";
  let command: Command | undefined;
  if (commandId) {
    const found = await commands.describeCommands({ regionId: session.region, commandId, pageSize: 1 });
    command = found.commands[0];
    if (!command) {
      replace(main, h("div", { class: "form-error" }, `No command ${commandId} in ${session.region}.`));
      return;
    }
  }
  const parameters = new ParameterValues();
  const picker = new InstancePicker();
  const timeout = input({ type: "number", min: 10, name: "timeout_seconds", placeholder: command ? String(command.timeoutSeconds) : "60", "data-test": "timeout" });
  const username = input({ name: "username", placeholder: "the agent's user (root)", "data-test": "username" });
  const workingDir = input({ name: "working_dir", placeholder: command?.workingDir || "the user's home", "data-test": "working-dir" });
  const maxConcurrency = input({ name: "max_concurrency", placeholder: "all at once (e.g. 10 or 25%)" });
  const maxErrors = input({ name: "max_errors", placeholder: "no limit (e.g. 0 or 10%)" });
  const timeoutValue = (): bigint | undefined => (timeout.value.trim() ? BigInt(timeout.value.trim()) : undefined);

  let type = command?.type ?? CommandType.RUN_SHELL_SCRIPT;
  const typeSelect = select(TYPE_OPTIONS, String(type), { name: "type" });
  const enable = h("input", { type: "checkbox", "data-test": "enable-parameter" });
  const editor = scriptEditor("", (names) => {
    enable.checked = names.length > 0;
    parameters.setNames(names);
  });
  typeSelect.addEventListener("change", () => {
    type = Number(typeSelect.value);
    picker.setType(type);
  });

  const form = new Form(async () => {
    const instanceIds = [...picker.selected].sort();
    const common = {
      regionId: session.region,
      instanceIds,
      parameters: parameters.collect(),
      repeatMode: schedule.periodic ? RepeatMode.PERIOD : RepeatMode.ONCE,
      frequency: schedule.periodic ? schedule.frequency() : "",
      username: username.value.trim(),
      maxConcurrency: schedule.periodic ? "" : maxConcurrency.value.trim(),
      maxErrors: schedule.periodic ? "" : maxErrors.value.trim(),
    };
    let invokeId: string;
    if (command) {
      invokeId = (await commands.invokeCommand({
        ...common,
        commandId: command.commandId,
        timeoutSeconds: timeoutValue(),
        workingDir: workingDir.value.trim() || undefined,
      })).invokeId;
    } else {
      invokeId = (await commands.runCommand({
        ...common,
        type,
        commandContent: utf8.encode(editor.area.value),
        enableParameter: enable.checked,
        timeoutSeconds: timeoutValue() ?? 0n,
        workingDir: workingDir.value.trim(),
      })).invokeId;
    }
    navigate(`/invocations/${invokeId}`);
  }, "execute-form");
  const schedule = new Schedule(form, timeoutValue);
  timeout.addEventListener("input", () => schedule.changed());

  let source: HTMLElement;
  if (command) {
    const content = contentView(command.commandContent);
    content.classList.add("hidden");
    parameters.setNames(command.enableParameter ? command.parameterNames : []);
    source = h("section", { class: "card" },
      h("div", { class: "command-summary" },
        h("div", {}, h("strong", {}, command.name), " ", h("code", {}, command.commandId), h("span", { class: "muted" }, ` · ${TYPE_LABELS[command.type]}`)),
        h("button", { type: "button", class: "small", "data-test": "view-content", onclick: () => content.classList.toggle("hidden") }, "View command content")),
      content);
  } else {
    source = h("section", { class: "card" },
      h("div", { class: "row" }, form.field("type", "Type", typeSelect)),
      form.field("command_content", "Script", editor.area, editor.found),
      h("label", { class: "check" }, enable, "Enable parameters"));
  }
  picker.setType(type);
  form.add(
    source,
    h("section", { class: "card" }, h("h2", {}, "Parameters"), form.field("parameters", "Values", parameters.element)),
    h("section", { class: "card" }, h("h2", {}, "Instances"), form.field("instance_ids", "Run on", picker.element)),
    h("section", { class: "card" }, h("h2", {}, "When"), schedule.element),
    h("section", { class: "card" }, h("h2", {}, "Options"),
      h("div", { class: "row" }, form.field("timeout_seconds", "Timeout (seconds)", timeout), form.field("username", "Run as user", username), form.field("working_dir", "Working directory", workingDir)),
      h("div", { class: "row" }, form.field("max_concurrency", "Max concurrency", maxConcurrency), form.field("max_errors", "Max errors", maxErrors))),
    h("div", { class: "actions sticky" }, h("button", { type: "submit", class: "primary", "data-test": "run" }, "Execute")),
  );
  replace(main, h("header", { class: "page-head" }, h("h1", {}, command ? `Execute ${command.name}` : "Run a script")), form.element);
  await picker.load();
}
