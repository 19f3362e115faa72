import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ansiClasses, parseAnsi, plainStyle, stripAnsi } from "../src/ansi";

describe("stripAnsi", () => {
  it("drops colour, cursor and title sequences and control characters", () => {
    assert.equal(stripAnsi("\x1b[31mred\x1b[0m plain"), "red plain");
    assert.equal(stripAnsi("a\x1b[2Kb\x1b[1;1Hc"), "abc");
    assert.equal(stripAnsi("\x1b]0;title\x07text"), "text");
    assert.equal(stripAnsi("bell\x07 nul\x00 del\x7f"), "bell nul del");
  });

  it("keeps newlines and tabs, and a CR only before a LF", () => {
    assert.equal(stripAnsi("a\tb\r\nc\rd\n"), "a\tb\r\ncd\n");
  });

  it("keeps markup as text", () => {
    assert.equal(stripAnsi("<script>alert(1)</script>"), "<script>alert(1)</script>");
  });
});

describe("parseAnsi", () => {
  it("gives each run its colour and boldness", () => {
    const runs = parseAnsi("\x1b[1;32mok\x1b[22m still green\x1b[39m plain", plainStyle());
    assert.deepEqual(runs, [
      { text: "ok", fg: 2, bold: true },
      { text: " still green", fg: 2, bold: false },
      { text: " plain", fg: null, bold: false },
    ]);
    assert.equal(ansiClasses(runs[0] ?? { text: "", fg: null, bold: false }), "ansi-fg-2 ansi-bold");
  });

  it("knows bright colours and skips 256 and true colour", () => {
    assert.deepEqual(parseAnsi("\x1b[91ma\x1b[38;5;200mb\x1b[38;2;1;2;3mc", plainStyle()), [
      { text: "a", fg: 9, bold: false },
      { text: "b", fg: 9, bold: false },
      { text: "c", fg: 9, bold: false },
    ]);
  });

  it("carries the style from one chunk to the next", () => {
    const style = plainStyle();
    parseAnsi("\x1b[33m", style);
    assert.deepEqual(parseAnsi("yellow", style), [{ text: "yellow", fg: 3, bold: false }]);
    parseAnsi("\x1b[m", style);
    assert.deepEqual(style, plainStyle());
  });
});
