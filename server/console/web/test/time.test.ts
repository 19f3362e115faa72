import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { clockName, clockZone, formatInstant, localZone, offsetLabel, offsetMinutes, parseClockMode, parseZone, timestampMs, UTC, zoneLabel } from "../src/time";

// The browser's zone, as far as these tests go (Node reads TZ again when it changes).
process.env.TZ = "Europe/Paris";

const WINTER = Date.UTC(2026, 11, 7, 18, 30, 5); // 2026-12-07 18:30:05 UTC
const SUMMER = Date.UTC(2026, 6, 1, 12, 0, 0); // 2026-07-01 12:00:00 UTC

describe("formatInstant", () => {
  it("shows UTC labelled UTC", () => {
    assert.equal(formatInstant(WINTER, UTC), "2026-12-07 18:30:05 UTC");
  });

  it("shows an IANA zone with its offset at that instant, daylight saving included", () => {
    const paris = parseZone("Europe/Paris");
    assert.ok(paris);
    assert.equal(formatInstant(WINTER, paris), "2026-12-07 19:30:05 +01:00");
    assert.equal(formatInstant(SUMMER, paris), "2026-07-01 14:00:00 +02:00");
    const ny = parseZone("America/New_York");
    assert.ok(ny);
    assert.equal(formatInstant(WINTER, ny), "2026-12-07 13:30:05 -05:00");
    const kolkata = parseZone("Asia/Kolkata");
    assert.ok(kolkata);
    assert.equal(formatInstant(WINTER, kolkata), "2026-12-08 00:00:05 +05:30");
  });

  it("shows a fixed offset as the server writes schedules' zones", () => {
    const zone = parseZone("UTC+08:00");
    assert.deepEqual(zone, { name: "UTC+08:00", fixedMinutes: 480 });
    assert.equal(formatInstant(WINTER, zone ?? UTC), "2026-12-08 02:30:05 +08:00");
    assert.equal(formatInstant(WINTER, parseZone("GMT-3:30") ?? UTC), "2026-12-07 15:00:05 -03:30");
  });

  it("drops milliseconds rather than rounding into the next second", () => {
    assert.equal(formatInstant(WINTER + 999, UTC), "2026-12-07 18:30:05 UTC");
    assert.equal(formatInstant(-1, UTC), "1969-12-31 23:59:59 UTC");
  });

  it("follows the browser's zone for the local clock", () => {
    assert.equal(localZone().name, "Europe/Paris");
    assert.equal(formatInstant(WINTER, clockZone("local")), "2026-12-07 19:30:05 +01:00");
    assert.equal(formatInstant(WINTER, clockZone("utc")), "2026-12-07 18:30:05 UTC");
  });
});

describe("parseZone", () => {
  it("reads UTC, GMT and Z as UTC", () => {
    for (const text of ["UTC", "utc", "GMT", "Z", "UTC+0", "GMT-00:00"]) assert.equal(zoneLabel(0, parseZone(text) ?? localZone()), "UTC", text);
  });

  it("refuses what names no zone", () => {
    for (const text of ["", "  ", "Mars/Olympus", "UTC+15", "GMT+8:75", "nonsense"]) assert.equal(parseZone(text), undefined, text);
  });
});

describe("offsets", () => {
  it("labels offsets with sign, hours and minutes", () => {
    assert.equal(offsetLabel(0), "+00:00");
    assert.equal(offsetLabel(330), "+05:30");
    assert.equal(offsetLabel(-570), "-09:30");
  });

  it("computes an IANA zone's offset at an instant", () => {
    assert.equal(offsetMinutes(WINTER, parseZone("Asia/Shanghai") ?? UTC), 480);
    assert.equal(offsetMinutes(SUMMER, parseZone("America/Los_Angeles") ?? UTC), -420);
  });
});

describe("the clock setting", () => {
  it("is local unless UTC was chosen", () => {
    assert.equal(parseClockMode(null), "local");
    assert.equal(parseClockMode("utc"), "utc");
    assert.equal(parseClockMode("junk"), "local");
  });

  it("names itself with the browser's zone", () => {
    assert.equal(clockName("local"), "Local (Europe/Paris)");
    assert.equal(clockName("utc"), "UTC");
  });
});

describe("timestampMs", () => {
  it("reads a Timestamp's parts, and the zero one as none", () => {
    assert.equal(timestampMs(1_700_000_000n, 250_000_000), 1_700_000_000_250);
    assert.equal(timestampMs(0n, 0), undefined);
  });
});
