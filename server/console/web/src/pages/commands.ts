// Commands: search (name, id, type, tag) with paging; create, modify, delete, view; Execute.

import { commands, session } from "../api";
import { confirmDialog, h, openDialog, replace } from "../dom";
import { errorBox, Form, input, select } from "../forms";
import { utf8, TYPE_LABELS, when } from "../format";
import { CommandType, type Command } from "../gen/cloudassist/v1/command_pb";
import { findParameters } from "../params";
import { navigate } from "../nav";

const PAGE_SIZE = 20;
export const TYPE_OPTIONS: [string, string][] = [
  [String(CommandType.RUN_SHELL_SCRIPT), "Shell (Linux)"],
  [String(CommandType.RUN_BAT_SCRIPT), "Bat (Windows)"],
  [String(CommandType.RUN_POWERSHELL_SCRIPT), "PowerShell"],
];

export function contentView(content: Uint8Array): HTMLElement {
  return h("pre", { class: "code", "data-test": "content", tabindex: 0, "aria-label": "Command content" }, utf8.decode(content));
}

export function viewContent(command: Command): void {
  void openDialog(`${command.name}`, () => [
    h("p", { class: "muted" }, `${command.commandId} · ${TYPE_LABELS[command.type]} · timeout ${command.timeoutSeconds} s${command.workingDir ? ` · in ${command.workingDir}` : ""}`),
    contentView(command.commandContent),
  ], true);
}

/** A code area that takes Tab as a character, and the parameters it holds, found as typed. */
export function scriptEditor(initial: string, onNames?: (names: string[]) => void): { area: HTMLTextAreaElement; found: HTMLElement } {
  const area = h("textarea", { class: "code", rows: 12, spellcheck: "false", name: "command_content", "data-test": "content-editor", "aria-describedby": "editor-keys" });
  area.value = initial;
  const found = h("div", { class: "parameters-found", "data-test": "parameters-found" });
  const keys = h("div", { class: "muted small", id: "editor-keys" }, "Tab types a tab; Esc then Tab moves on.");
  const refresh = (): void => {
    const { names, problems } = findParameters(area.value);
    replace(
      found,
      h("span", { class: "muted" }, "Parameters: "),
      names.length ? names.map((n) => h("code", { class: "chip", "data-parameter": n }, n)) : h("span", { class: "muted" }, "none"),
      problems.map((p) => h("div", { class: "warn" }, p)),
    );
    onNames?.(names);
  };
  area.addEventListener("input", refresh);
  // Tab types a tab; Escape, then Tab (or Shift+Tab), moves on, so the keyboard is never
  // trapped here. A second Escape goes on to whatever handles it (closes a dialog).
  let released = false;
  area.addEventListener("blur", () => (released = false));
  area.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !released) {
      released = true;
      event.preventDefault();
      return;
    }
    if (event.key !== "Tab") {
      if (event.key !== "Shift" && event.key !== "Escape") released = false;
      return;
    }
    if (released || event.shiftKey) return;
    event.preventDefault();
    area.setRangeText("\t", area.selectionStart, area.selectionEnd, "end");
    refresh();
  });
  refresh();
  return { area, found: h("div", {}, found, keys) };
}

function editCommand(existing: Command | undefined, done: () => void): void {
  const name = input({ name: "name", value: existing?.name ?? "", maxlength: 128, "data-test": "name" });
  const type = select(TYPE_OPTIONS, String(existing?.type ?? CommandType.RUN_SHELL_SCRIPT), { name: "type" });
  const description = input({ name: "description", value: existing?.description ?? "" });
  const workingDir = input({ name: "working_dir", value: existing?.workingDir ?? "", placeholder: "the user's home" });
  const timeout = input({ name: "timeout_seconds", type: "number", value: existing ? String(existing.timeoutSeconds) : "60", min: 10, "data-test": "timeout" });
  const enable = h("input", { type: "checkbox", name: "enable_parameter", "data-test": "enable-parameter" });
  enable.checked = existing?.enableParameter ?? true;
  const tags = input({ name: "tags", placeholder: "team=ops, env=prod" });
  const editor = scriptEditor(existing ? utf8.decode(existing.commandContent) : "");
  if (existing) {
    type.disabled = true;
    enable.disabled = true;
    tags.disabled = true;
  }
  void openDialog(existing ? `Modify ${existing.name}` : "New command", (close) => {
    const form = new Form(async () => {
      const timeoutSeconds = BigInt(timeout.value.trim() || "0");
      if (existing) {
        await commands.modifyCommand({
          regionId: session.region,
          commandId: existing.commandId,
          name: name.value,
          description: description.value,
          workingDir: workingDir.value,
          timeoutSeconds,
          commandContent: utf8.encode(editor.area.value),
        });
      } else {
        await commands.createCommand({
          regionId: session.region,
          name: name.value,
          type: Number(type.value),
          commandContent: utf8.encode(editor.area.value),
          description: description.value,
          workingDir: workingDir.value,
          timeoutSeconds,
          enableParameter: enable.checked,
          tags: parseTags(tags.value),
        });
      }
      close("saved");
      done();
    }, "command-form");
    form.add(
      h("div", { class: "row" }, form.field("name", "Name", name), form.field("type", "Type", type)),
      form.field("command_content", "Content", editor.area, editor.found),
      h("label", { class: "check" }, enable, "Enable parameters: {{name}} in the content is replaced by the value given at each run"),
      form.field("description", "Description", description),
      h("div", { class: "row" }, form.field("working_dir", "Working directory", workingDir), form.field("timeout_seconds", "Timeout (seconds)", timeout)),
      existing ? null : form.field("tags", "Tags", tags),
      h("div", { class: "actions" }, h("button", { type: "button", onclick: () => close("") }, "Cancel"), h("button", { type: "submit", class: "primary", "data-test": "save" }, existing ? "Save" : "Create")),
    );
    return [form.element];
  }, true);
}

export function parseTags(text: string): { key: string; value: string }[] {
  return text
    .split(",")
    .map((t) => t.trim())
    .filter(Boolean)
    .map((t) => {
      const [key = "", ...rest] = t.split("=");
      return { key: key.trim(), value: rest.join("=").trim() };
    });
}

export async function commandsPage(main: HTMLElement): Promise<void> {
  const by = select([["name", "Name"], ["id", "Command ID"], ["tag", "Tag (key=value)"]], "name", { "data-test": "search-by", "aria-label": "Search by" });
  const text = input({ type: "search", placeholder: "Search", "data-test": "search", "aria-label": "Search text" });
  const type = select([["0", "All types"], ...TYPE_OPTIONS], "0", { "aria-label": "Type" });
  const list = h("div", { class: "table-wrap" });
  const pager = h("div", { class: "pager" });
  const tokens: string[] = [""];
  let page = 0;
  let asked = 0;

  const load = async (): Promise<void> => {
    const query = text.value.trim();
    // Answers can come back out of order while the user types: only the latest one is shown.
    const ask = ++asked;
    try {
      const found = await commands.describeCommands({
        regionId: session.region,
        name: by.value === "name" ? query : "",
        commandId: by.value === "id" ? query : "",
        tags: by.value === "tag" && query ? parseTags(query) : [],
        type: Number(type.value),
        pageSize: PAGE_SIZE,
        pageToken: tokens[page] ?? "",
      });
      if (ask !== asked) return;
      tokens[page + 1] = found.nextPageToken;
      replace(list, table(found.commands, load, emptyText(query, type.value === "0" ? "" : (type.selectedOptions[0]?.textContent ?? ""))));
      replace(
        pager,
        h("span", { class: "muted" }, `${found.totalCount} command(s) · page ${page + 1}`),
        h("button", { type: "button", disabled: page === 0, onclick: () => { page--; void load(); } }, "‹ Previous"),
        h("button", { type: "button", disabled: !found.nextPageToken, onclick: () => { page++; void load(); } }, "Next ›"),
      );
    } catch (error) {
      if (ask === asked) replace(list, errorBox(error));
    }
  };
  const search = (): void => {
    page = 0;
    tokens.length = 1;
    void load();
  };
  text.addEventListener("input", search);
  by.addEventListener("change", search);
  type.addEventListener("change", search);
  replace(
    main,
    h("header", { class: "page-head" }, h("h1", {}, "Commands"), h("button", { type: "button", class: "primary", "data-test": "new-command", onclick: () => editCommand(undefined, search) }, "New command")),
    h("div", { class: "toolbar", role: "search" }, by, text, type),
    list,
    pager,
  );
  await load();
}

/** What an empty list says: that a filter hides everything, or that there is nothing yet. */
export function emptyText(query: string, typeLabel: string): string {
  if (query && typeLabel) return `No ${typeLabel} commands match “${query}”.`;
  if (query) return `No commands match “${query}”.`;
  if (typeLabel) return `No ${typeLabel} commands here yet.`;
  return "No commands here yet.";
}

function table(items: Command[], reload: () => Promise<void>, empty: string): HTMLElement {
  if (!items.length) return h("p", { class: "empty", "data-test": "commands-empty" }, empty);
  return h(
    "table",
    { "data-test": "commands" },
    h("thead", {}, h("tr", {}, ...["Name", "ID", "Type", "Parameters", "Runs", "Created", ""].map((c) => h("th", {}, c)))),
    h(
      "tbody",
      {},
      ...items.map((c) =>
        h(
          "tr",
          { "data-command": c.commandId },
          h("td", {}, h("strong", {}, c.name), c.description ? h("div", { class: "muted small" }, c.description) : null),
          h("td", {}, h("code", {}, c.commandId)),
          h("td", {}, TYPE_LABELS[c.type]),
          h("td", {}, c.enableParameter ? c.parameterNames.map((p) => h("code", { class: "chip" }, p)) : h("span", { class: "muted" }, "off")),
          h("td", {}, String(c.invokeTimes)),
          h("td", { class: "time-cell" }, when(c.creationTime)),
          h(
            "td",
            {},
            h(
              "div",
              { class: "row-actions" },
              h("button", { type: "button", class: "primary small", "data-test": "execute", onclick: () => navigate(`/execute?command=${encodeURIComponent(c.commandId)}`) }, "Execute"),
              h("button", { type: "button", class: "small", "data-test": "view", onclick: () => viewContent(c) }, "View"),
              h("button", { type: "button", class: "small", "data-test": "modify", onclick: () => editCommand(c, () => void reload()) }, "Modify"),
              h("button", {
                type: "button",
                class: "small danger",
                "data-test": "delete",
                onclick: async () => {
                  if (!(await confirmDialog("Delete command", `Delete ${c.name} (${c.commandId})? Its invocations and their results stay readable.`, "Delete"))) return;
                  try {
                    await commands.deleteCommand({ regionId: session.region, commandId: c.commandId });
                    await reload();
                  } catch (error) {
                    void openDialog("Not deleted", () => [errorBox(error)]);
                  }
                },
              }, "Delete"),
            ),
          ),
        ),
      ),
    ),
  );
}
