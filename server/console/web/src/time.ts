// Instants as a person reads them: one zone at a time, always with its label. Pure (no DOM):
// the browser's own zone comes from Intl, any other zone is an IANA name or a fixed offset as
// the server writes schedules' zones (`UTC`, `UTC+08:00`, `GMT+8:00`).

/** A time zone: an IANA name (offsets from Intl, daylight saving included) or a fixed offset. */
export interface Zone {
  /** What the user is told: `Europe/Paris`, `UTC`, `UTC+08:00`. */
  name: string;
  iana?: string;
  fixedMinutes?: number;
}

export const UTC: Zone = { name: "UTC", fixedMinutes: 0 };

const FIXED = /^(?:UTC|GMT)\s*(?:([+-])\s*(\d{1,2})(?::?(\d{2}))?)?$/i;

/** The zone `text` names, or undefined when it names none. */
export function parseZone(text: string): Zone | undefined {
  const trimmed = text.trim();
  if (!trimmed) return undefined;
  if (trimmed.toUpperCase() === "Z") return UTC;
  const fixed = FIXED.exec(trimmed);
  if (fixed) {
    const [, sign, hours, minutes] = fixed;
    if (!sign) return UTC;
    const total = Number(hours) * 60 + Number(minutes ?? "0");
    if (Number(hours) > 14 || Number(minutes ?? "0") > 59) return undefined;
    const signed = sign === "-" ? -total : total;
    return signed === 0 ? UTC : { name: `UTC${offsetLabel(signed)}`, fixedMinutes: signed };
  }
  try {
    const iana = new Intl.DateTimeFormat("en-US", { timeZone: trimmed }).resolvedOptions().timeZone;
    return { name: trimmed, iana };
  } catch {
    return undefined;
  }
}

/** The browser's zone. */
export function localZone(): Zone {
  const iana = Intl.DateTimeFormat().resolvedOptions().timeZone;
  return iana ? { name: iana, iana } : UTC;
}

const partFormats = new Map<string, Intl.DateTimeFormat>();

function wallParts(ms: number, iana: string): Record<string, number> {
  let format = partFormats.get(iana);
  if (!format) {
    format = new Intl.DateTimeFormat("en-US", {
      timeZone: iana,
      hourCycle: "h23",
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
    });
    partFormats.set(iana, format);
  }
  const parts: Record<string, number> = {};
  for (const part of format.formatToParts(new Date(ms))) {
    if (part.type !== "literal") parts[part.type] = Number(part.value);
  }
  return parts;
}

/** Minutes east of UTC that `zone` is at the instant `ms`. */
export function offsetMinutes(ms: number, zone: Zone): number {
  if (zone.fixedMinutes !== undefined || !zone.iana) return zone.fixedMinutes ?? 0;
  const p = wallParts(ms, zone.iana);
  const wall = Date.UTC(p.year ?? 1970, (p.month ?? 1) - 1, p.day ?? 1, p.hour ?? 0, p.minute ?? 0, p.second ?? 0);
  const whole = Math.floor(ms / 1000) * 1000;
  return Math.round((wall - whole) / 60_000);
}

/** `+08:00`, `-05:30`, `+00:00`. */
export function offsetLabel(minutes: number): string {
  const sign = minutes < 0 ? "-" : "+";
  const abs = Math.abs(minutes);
  return `${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
}

function pad(n: number): string {
  return String(n).padStart(2, "0");
}

/** `2026-12-07 19:30:05 +01:00` in `zone` (`… UTC` in UTC): the wall time and its label. */
export function formatInstant(ms: number, zone: Zone): string {
  const offset = offsetMinutes(ms, zone);
  const wall = new Date(Math.floor(ms / 1000) * 1000 + offset * 60_000);
  const text = `${wall.getUTCFullYear()}-${pad(wall.getUTCMonth() + 1)}-${pad(wall.getUTCDate())} ${pad(wall.getUTCHours())}:${pad(wall.getUTCMinutes())}:${pad(wall.getUTCSeconds())}`;
  return `${text} ${zoneLabel(ms, zone)}`;
}

/** The label a time carries: `UTC` for UTC itself, else the offset at that instant. */
export function zoneLabel(ms: number, zone: Zone): string {
  if (zone === UTC || (zone.fixedMinutes === 0 && zone.name === "UTC")) return "UTC";
  return offsetLabel(offsetMinutes(ms, zone));
}

/** Milliseconds since the epoch of a protobuf Timestamp's parts; undefined for the zero one. */
export function timestampMs(seconds: bigint, nanos: number): number | undefined {
  if (seconds === 0n && nanos === 0) return undefined;
  return Number(seconds) * 1000 + Math.floor(nanos / 1e6);
}

/** The console's clock setting: the browser's zone or UTC. */
export type ClockMode = "local" | "utc";

export function clockZone(mode: ClockMode): Zone {
  return mode === "utc" ? UTC : localZone();
}

/** What the clock switch says for each setting: `Local (Europe/Paris)`, `UTC`. */
export function clockName(mode: ClockMode): string {
  return mode === "utc" ? "UTC" : `Local (${localZone().name})`;
}

export function parseClockMode(text: string | null): ClockMode {
  return text === "utc" ? "utc" : "local";
}
