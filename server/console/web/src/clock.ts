// The console's one clock: every time on the page is a <time data-ms> shown in the zone the
// user chose (the browser's, or UTC; kept in localStorage), with its label. Switching redraws
// every time in place, so nothing typed into a form is lost. A time given a zone of its own
// (data-zone: a schedule's) is shown in that zone instead.

import { h } from "./dom";
import { clockZone, formatInstant, parseClockMode, parseZone, type ClockMode } from "./time";

const KEY = "cloudassist.clock";

export function clockMode(): ClockMode {
  try {
    return parseClockMode(localStorage.getItem(KEY));
  } catch {
    return "local";
  }
}

export function setClockMode(mode: ClockMode): void {
  try {
    localStorage.setItem(KEY, mode);
  } catch {
    // Storage refused (private mode): the setting lasts as long as the page.
  }
  applyClock(document);
}

/** The text of one time element, in its own zone when it has one, else the clock's. */
function render(element: HTMLElement): void {
  const ms = Number(element.dataset.ms);
  const own = element.dataset.zone ? parseZone(element.dataset.zone) : undefined;
  // Date, then time and zone: a narrow cell breaks the line between the two, nowhere else.
  const text = formatInstant(ms, own ?? clockZone(clockMode()));
  const cut = text.indexOf(" ");
  element.replaceChildren(h("span", {}, text.slice(0, cut)), " ", h("span", {}, text.slice(cut + 1)));
}

/** Draws every time under `root` again (after the clock or a time's zone changed). */
export function applyClock(root: ParentNode): void {
  for (const element of root.querySelectorAll<HTMLElement>("time[data-ms]")) render(element);
}

/** A time at `ms` (milliseconds since the epoch), shown by the clock; "—" for none. */
export function timeAt(ms: number | undefined, zone = ""): HTMLElement {
  if (ms === undefined) return h("span", { class: "muted" }, "—");
  const element = h("time", { datetime: new Date(ms).toISOString(), "data-ms": ms, "data-zone": zone || undefined });
  render(element);
  return element;
}

/** Gives `element` (a time) a zone of its own, or back to the clock's with "". */
export function setTimeZone(element: HTMLElement, zone: string): void {
  if (zone) element.dataset.zone = zone;
  else delete element.dataset.zone;
  render(element);
}
