// A schedule's next fire times (PreviewSchedule's answer), in the console's clock like every
// other time, or in the schedule's own zone when the user asks for it here.

import { setTimeZone, timeAt } from "../clock";
import { h, replace } from "../dom";
import { select } from "../forms";
import type { FireTime } from "../gen/cloudassist/v1/command_pb";
import { parseZone, timestampMs } from "../time";

let lists = 0;

export class FireTimes {
  readonly list = h("ol", { class: "fires", "data-test": "fire-times" });
  private readonly zoneSelect: HTMLSelectElement;
  private readonly scheduleOption = h("option", { value: "schedule" }, "The schedule's zone");
  private zone = "";
  readonly element: HTMLElement;

  constructor() {
    const id = `fire-zone-${++lists}`;
    this.zoneSelect = select([["clock", "The console's clock"]], "clock", { "data-test": "fire-zone", id });
    this.zoneSelect.appendChild(this.scheduleOption);
    this.zoneSelect.addEventListener("change", () => this.applyZone());
    this.element = h(
      "div",
      { class: "fire-times" },
      h("div", { class: "fires-head" }, h("span", { class: "muted small" }, "Next fire times"), h("label", { class: "small muted", for: id }, "shown in"), this.zoneSelect),
      this.list,
    );
  }

  /** The fire times of a schedule read in `zone` (its own, or the server's default). */
  show(fires: FireTime[], zone: string): void {
    this.zone = parseZone(zone) ? zone : "";
    this.scheduleOption.textContent = this.zone ? `The schedule's zone (${this.zone})` : "The schedule's zone (unknown here)";
    this.scheduleOption.disabled = !this.zone;
    if (!this.zone) this.zoneSelect.value = "clock";
    replace(
      this.list,
      fires.map((f) => {
        const ms = f.time ? timestampMs(f.time.seconds, f.time.nanos) : undefined;
        // The server's own reading stays on the element (data-fire), whatever is shown.
        return h("li", { "data-fire": f.localTime }, ms === undefined ? f.localTime : timeAt(ms, this.chosenZone()));
      }),
    );
  }

  clear(): void {
    replace(this.list);
  }

  private chosenZone(): string {
    return this.zoneSelect.value === "schedule" ? this.zone : "";
  }

  private applyZone(): void {
    for (const element of this.list.querySelectorAll<HTMLElement>("time[data-ms]")) setTimeZone(element, this.chosenZone());
  }
}
