// Files: push a file to instances (SendFile) and see each instance's result.

import { commands, session } from "../api";
import { h, redraw, replace } from "../dom";
import { errorBox, Form, input } from "../forms";
import { stateBadge, statusBadge, utf8, when } from "../format";
import { CommandType } from "../gen/cloudassist/v1/command_pb";
import { InstancePicker } from "./instance-picker";

export async function filesPage(main: HTMLElement): Promise<() => void> {
  const name = input({ name: "name", placeholder: "app.conf", "data-test": "file-name" });
  const targetDir = input({ name: "target_dir", placeholder: "/etc/app", "data-test": "target-dir" });
  const content = h("textarea", { class: "code", rows: 8, name: "content", spellcheck: "false", "data-test": "file-content" });
  const upload = h("input", { type: "file", "aria-label": "Content from a file" });
  let uploaded: Uint8Array<ArrayBuffer> | undefined;
  upload.addEventListener("change", async () => {
    const file = upload.files?.[0];
    uploaded = file ? new Uint8Array(await file.arrayBuffer()) : undefined;
    content.disabled = Boolean(uploaded);
  });
  const mode = input({ name: "file_mode", placeholder: "0644" });
  const owner = input({ name: "file_owner", placeholder: "the agent's user" });
  const group = input({ name: "file_group", placeholder: "the agent's group" });
  const overwrite = h("input", { type: "checkbox", name: "overwrite" });
  const timeout = input({ name: "timeout_seconds", type: "number", placeholder: "60" });
  const picker = new InstancePicker();
  picker.setType(CommandType.RUN_SHELL_SCRIPT); // files go to Linux instances
  const results = h("div", { class: "table-wrap" });

  const loadResults = async (): Promise<void> => {
    try {
      const found = await commands.describeSendFileResults({ regionId: session.region, pageSize: 50 });
      redraw(results, !found.results.length ? h("p", { class: "empty" }, "No files sent yet.") : h("table", { "data-test": "file-results" },
        h("thead", {}, h("tr", {}, ...["Invocation", "Instance", "File", "Status", "State", "Error", "Created", "Finished"].map((c) => h("th", {}, c)))),
        h("tbody", {}, ...found.results.map((r) => h("tr", { "data-file-result": `${r.invokeId}/${r.instanceId}` },
          h("td", {}, h("code", {}, r.invokeId)),
          h("td", {}, h("code", {}, r.instanceId)),
          h("td", {}, h("code", {}, `${r.targetDir.replace(/\/$/, "")}/${r.name}`)),
          h("td", {}, statusBadge(r.invokeRecordStatus)),
          h("td", {}, stateBadge(r.state)),
          h("td", {}, r.errorCode ? h("code", { title: r.errorInfo }, r.errorCode) : "—"),
          h("td", { class: "time-cell" }, when(r.creationTime)),
          h("td", { class: "time-cell" }, when(r.finishTime)))))));
    } catch (error) {
      replace(results, errorBox(error));
    }
  };

  const form = new Form(async () => {
    await commands.sendFile({
      regionId: session.region,
      name: name.value.trim(),
      targetDir: targetDir.value.trim(),
      content: uploaded ?? utf8.encode(content.value),
      fileMode: mode.value.trim(),
      fileOwner: owner.value.trim(),
      fileGroup: group.value.trim(),
      overwrite: overwrite.checked,
      timeoutSeconds: BigInt(timeout.value.trim() || "0"),
      instanceIds: [...picker.selected].sort(),
    });
    await loadResults();
  }, "file-form");
  form.add(
    h("div", { class: "row" }, form.field("name", "File name", name), form.field("target_dir", "Directory", targetDir)),
    form.field("content", "Content (at most 32 KB)", content, h("span", {}, "or a file: ", upload)),
    h("div", { class: "row" }, form.field("file_mode", "Mode", mode), form.field("file_owner", "Owner", owner), form.field("file_group", "Group", group), form.field("timeout_seconds", "Timeout (s)", timeout)),
    h("label", { class: "check" }, overwrite, "Overwrite a file already there"),
    form.field("instance_ids", "Send to", picker.element),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", "data-test": "send-file" }, "Send file")),
  );
  replace(
    main,
    h("header", { class: "page-head" }, h("h1", {}, "Files")),
    h("section", { class: "card" }, form.element),
    h("section", { class: "card" }, h("h2", {}, "Results"), results),
  );
  await Promise.all([picker.load(), loadResults()]);
  const timer = window.setInterval(() => void loadResults(), 5000);
  return () => window.clearInterval(timer);
}
