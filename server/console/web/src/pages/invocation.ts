// One invocation, at the seed's three levels: the invocation's status, each instance's
// (coarse status beside detailed state), and every record (each run of a periodic one). Its
// output streams live (WatchInvocation) and downloads whole (GetInvocationOutput); Stop ends
// it on one instance or all; one that failed runs again on its failed instances. A periodic
// one shows its next fire times.

import { commands, isCancel, refusal, session } from "../api";
import { appendAnsi, plainStyle, type Style } from "../ansi";
import { confirmDialog, download, h, redraw, replace } from "../dom";
import { errorBox } from "../forms";
import { bytes, REPEAT_LABELS, stateBadge, statusBadge, TYPE_LABELS, when } from "../format";
import { InvokeStatus, RepeatMode, type Invocation, type InvocationResult } from "../gen/cloudassist/v1/command_pb";
import { canRerun, canStop, naturalCompare, sortedBy } from "../rules";
import { rerunButton } from "./rerun";
import { FireTimes } from "./fire-times";

/** Where one instance's output is shown, decoding its records' bytes as they come. */
class OutputPane {
  // A named region: a bare <pre> may not carry a label (ARIA), and a live region would read
  // every line of a long output aloud.
  readonly pre = h("pre", { class: "output", tabindex: 0, role: "region" });
  private record = "";
  private decoder = new TextDecoder();
  private style: Style = plainStyle();
  private runs = 0;

  constructor(instanceId: string, private readonly periodic: boolean) {
    this.pre.setAttribute("data-output-instance", instanceId);
    this.pre.setAttribute("aria-label", `Output of ${instanceId}`);
  }

  write(recordId: string, data: Uint8Array): void {
    if (recordId !== this.record) {
      this.flush();
      this.record = recordId;
      this.decoder = new TextDecoder();
      this.style = plainStyle();
      this.runs++;
      if (this.periodic) this.pre.appendChild(h("div", { class: "run-mark", "data-run": recordId }, `run ${this.runs} · ${recordId}`));
    }
    const atBottom = this.pre.scrollTop + this.pre.clientHeight >= this.pre.scrollHeight - 4;
    appendAnsi(this.pre, this.decoder.decode(data, { stream: true }), this.style);
    if (atBottom) this.pre.scrollTop = this.pre.scrollHeight;
  }

  flush(): void {
    if (this.record) appendAnsi(this.pre, this.decoder.decode(), this.style);
  }
}

async function fetchOutput(invokeId: string, instanceId: string, recordId: string): Promise<Uint8Array<ArrayBuffer>> {
  const parts: Uint8Array[] = [];
  let offset = 0n;
  for (;;) {
    const chunk = await commands.getInvocationOutput({ regionId: session.region, invokeId, instanceId, recordId, offset });
    parts.push(chunk.data);
    offset = chunk.nextOffset;
    if (chunk.eof || chunk.data.length === 0) break;
  }
  const whole = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    whole.set(part, at);
    at += part.length;
  }
  return whole;
}

export async function invocationPage(main: HTMLElement, _query: URLSearchParams, invokeId: string): Promise<() => void> {
  const notice = h("div", { class: "notices" });
  const header = h("header", { class: "invocation-head" });
  const schedule = h("section", { class: "card hidden", "data-test": "schedule" });
  const fireTimes = new FireTimes();
  // Output bytes per record: as stored when last described, and as far as the stream has come.
  const storedSize = new Map<string, bigint>();
  const seenSize = new Map<string, bigint>();
  const instancesTable = h("div", { class: "table-wrap" });
  const recordsTable = h("div", { class: "table-wrap" });
  const tabs = h("div", { class: "tabs" });
  const panesBox = h("div", { class: "panes" });
  const liveState = h("span", { class: "live", "data-test": "live" }, "connecting…");
  const panes = new Map<string, OutputPane>();
  let invocation: Invocation | undefined;
  let shown = "";
  const abort = new AbortController();

  const problem = (error: unknown): void => {
    if (isCancel(error)) return;
    const found = refusal(error);
    if (!found.unauthenticated) replace(notice, errorBox(error));
  };

  const pane = (instanceId: string): OutputPane => {
    let found = panes.get(instanceId);
    if (!found) {
      found = new OutputPane(instanceId, invocation?.repeatMode === RepeatMode.PERIOD);
      panes.set(instanceId, found);
      if (!shown) shown = instanceId;
      renderTabs();
    }
    return found;
  };

  const renderTabs = (): void => {
    redraw(tabs, ...[...panes.keys()].sort(naturalCompare).map((id) => h("button", { type: "button", class: id === shown ? "tab active" : "tab", "aria-pressed": String(id === shown), "data-tab": id, onclick: () => { shown = id; renderTabs(); } }, id)));
    replace(panesBox, ...[...panes.entries()].map(([id, p]) => { p.pre.classList.toggle("hidden", id !== shown); return p.pre; }));
  };

  const stop = async (instanceIds: string[]): Promise<void> => {
    if (!instanceIds.length && !(await confirmDialog("Stop invocation", `Stop ${invokeId} on every instance?`, "Stop all"))) return;
    try {
      await commands.stopInvocation({ regionId: session.region, invokeId, instanceIds });
      await refresh();
    } catch (error) {
      problem(error);
    }
  };

  const save = async (instanceId: string, recordId: string): Promise<void> => {
    try {
      const data = await fetchOutput(invokeId, instanceId, recordId);
      download(`${invokeId}_${instanceId}${recordId ? `_${recordId}` : ""}.log`, data);
    } catch (error) {
      problem(error);
    }
  };

  const renderHeader = (i: Invocation): void => {
    redraw(
      header,
      h("nav", { class: "breadcrumb", "aria-label": "Breadcrumb" }, h("a", { href: "#/invocations", "data-test": "back" }, "← Execution records")),
      h("div", { class: "head-row" },
        h("div", {}, h("h1", {}, "Invocation ", h("code", {}, i.invokeId), " ", statusBadge(i.invokeStatus)),
          h("div", { class: "muted" }, `${i.commandName} · ${TYPE_LABELS[i.commandType]} · ${REPEAT_LABELS[i.repeatMode]}`, i.frequency ? [" · ", h("code", {}, i.frequency)] : null, " · created ", when(i.creationTime))),
        h("div", { class: "row-actions" }, liveState,
          canRerun(i) ? rerunButton(i, "") : null,
          canStop(i) ? h("button", { type: "button", class: "danger", "data-test": "stop-all", onclick: () => void stop([]) }, "Stop all") : null)),
    );
  };

  /** A periodic invocation still to fire: its next fire times, as the server reads its schedule. */
  const renderSchedule = async (i: Invocation): Promise<void> => {
    if (i.repeatMode !== RepeatMode.PERIOD || !canStop(i) || !i.frequency) {
      schedule.classList.add("hidden");
      return;
    }
    try {
      const answer = await commands.previewSchedule({ regionId: session.region, frequency: i.frequency, timeoutSeconds: i.timeoutSeconds, count: 3 });
      fireTimes.show(answer.fireTimes, answer.timeZone);
      replace(schedule, h("h2", {}, "Schedule"), h("p", { class: "muted small" }, h("code", {}, i.frequency), ` · read in ${answer.timeZone}`), fireTimes.element);
      schedule.classList.remove("hidden");
    } catch {
      schedule.classList.add("hidden"); // no fire to come (an at() that fired)
    }
  };

  const sizeText = (recordId: string): string => {
    const stored = storedSize.get(recordId) ?? 0n;
    const seen = seenSize.get(recordId) ?? 0n;
    return bytes(seen > stored ? seen : stored);
  };

  /** The Output column follows the stream, between two descriptions of the records. */
  const grew = (recordId: string, end: bigint): void => {
    if (end <= (seenSize.get(recordId) ?? 0n)) return;
    seenSize.set(recordId, end);
    for (const cell of recordsTable.querySelectorAll<HTMLElement>("[data-output-size]")) {
      if (cell.dataset.outputSize === recordId) cell.textContent = sizeText(recordId);
    }
  };

  const renderInstances = (i: Invocation): void => {
    redraw(instancesTable, h("table", { "data-test": "invocation-instances" },
      h("thead", {}, h("tr", {}, ...["Instance", "Status", "State", "Runs", "Exit code", "Error", "Started", "Finished", ""].map((c) => h("th", {}, c)))),
      h("tbody", {}, ...sortedBy(i.invokeInstances, (x) => x.instanceId).map((x) => h("tr", { "data-instance-row": x.instanceId },
        h("td", {}, h("code", {}, x.instanceId)),
        h("td", { "data-cell": "status" }, statusBadge(x.instanceInvokeStatus)),
        h("td", { "data-cell": "state" }, stateBadge(x.state)),
        h("td", {}, String(x.repeats)),
        h("td", { "data-cell": "exit-code" }, x.exitCode === undefined ? "—" : String(x.exitCode)),
        h("td", { "data-cell": "error" }, x.errorCode ? h("span", { title: x.errorInfo }, h("code", {}, x.errorCode), x.errorInfo ? h("div", { class: "muted small" }, x.errorInfo) : null) : "—"),
        h("td", { class: "time-cell" }, when(x.startTime)),
        h("td", { class: "time-cell" }, when(x.finishTime)),
        h("td", {}, h("div", { class: "row-actions" },
          x.instanceInvokeStatus === InvokeStatus.RUNNING ? h("button", { type: "button", class: "small danger", "data-stop": x.instanceId, onclick: () => void stop([x.instanceId]) }, "Stop") : null,
          h("button", { type: "button", class: "small", "data-download": x.instanceId, onclick: () => void save(x.instanceId, "") }, "Download output"))),
      )))));
  };

  const renderRecords = (records: InvocationResult[]): void => {
    redraw(recordsTable, !records.length ? h("p", { class: "empty" }, "No records yet.") : h("table", { "data-test": "records" },
      h("thead", {}, h("tr", {}, ...["Record", "Instance", "Status", "State", "Exit code", "Error", "Created", "Finished", "Output", ""].map((c) => h("th", {}, c)))),
      h("tbody", {}, ...records.map((r) => h("tr", { "data-record": r.recordId, "data-record-instance": r.instanceId },
        h("td", { class: "id-cell" }, h("code", { title: r.recordId }, r.recordId)),
        h("td", {}, h("code", {}, r.instanceId)),
        h("td", {}, statusBadge(r.invokeRecordStatus)),
        h("td", {}, stateBadge(r.state)),
        h("td", {}, r.exitCode === undefined ? "—" : String(r.exitCode)),
        h("td", {}, r.errorCode ? h("code", { title: r.errorInfo }, r.errorCode) : "—"),
        h("td", { class: "time-cell" }, when(r.creationTime)),
        h("td", { class: "time-cell" }, when(r.finishTime)),
        h("td", { class: "nowrap" }, h("span", { "data-output-size": r.recordId }, sizeText(r.recordId)), r.dropped ? h("span", { class: "warn" }, ` +${bytes(r.dropped)} dropped`) : null),
        h("td", {}, h("button", { type: "button", class: "small", "aria-label": `Download the output of record ${r.recordId}`, onclick: () => void save(r.instanceId, r.recordId) }, "Download")),
      )))));
  };

  const refresh = async (): Promise<void> => {
    try {
      const [found, results] = await Promise.all([
        commands.describeInvocations({ regionId: session.region, invokeId, pageSize: 1 }),
        commands.describeInvocationResults({ regionId: session.region, invokeId, includeHistory: true, pageSize: 50 }),
      ]);
      invocation = found.invocations[0];
      if (!invocation) {
        replace(main, h("div", { class: "form-error" }, `No invocation ${invokeId} in ${session.region}.`));
        return;
      }
      renderHeader(invocation);
      renderInstances(invocation);
      for (const r of results.invocationResults) storedSize.set(r.recordId, r.outputSize);
      renderRecords(results.invocationResults);
      void renderSchedule(invocation);
      for (const x of invocation.invokeInstances) pane(x.instanceId);
    } catch (error) {
      problem(error);
    }
  };

  let pending = 0;
  const soon = (): void => {
    window.clearTimeout(pending);
    pending = window.setTimeout(() => void refresh(), 150);
  };

  const follow = async (): Promise<void> => {
    try {
      // Batched: the events of each look the server takes arrive in one message.
      const stream = commands.watchInvocation({ regionId: session.region, invokeId, batch: true }, { signal: abort.signal });
      liveState.textContent = "live";
      liveState.classList.add("on");
      for await (const response of stream) {
        for (const event of response.events.length > 0 ? response.events : [response]) {
          if (event.event.case === "output") {
            const chunk = event.event.value;
            pane(chunk.instanceId).write(chunk.recordId, chunk.data);
            grew(chunk.recordId, chunk.offset + BigInt(chunk.data.length));
          } else if (event.event.case === "stateChange") {
            soon();
          }
        }
      }
      for (const p of panes.values()) p.flush();
      liveState.textContent = "ended";
    } catch (error) {
      liveState.textContent = "disconnected";
      problem(error);
    } finally {
      liveState.classList.remove("on");
      soon();
    }
  };

  replace(
    main,
    notice,
    header,
    schedule,
    h("section", { class: "card" }, h("h2", {}, "Instances"), instancesTable),
    h("section", { class: "card" }, h("h2", {}, "Output"), tabs, panesBox),
    h("section", { class: "card" }, h("h2", {}, "Records"), h("p", { class: "muted small" }, "Every run on every instance; a periodic invocation has one per fire."), recordsTable),
  );
  await refresh();
  void follow();
  return () => {
    abort.abort();
    window.clearTimeout(pending);
  };
}
