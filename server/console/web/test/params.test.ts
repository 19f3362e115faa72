import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BUILTIN_NAMES, findParameters } from "../src/params";

describe("findParameters", () => {
  it("finds each custom name once, in order of first use, spaces inside braces allowed", () => {
    const found = findParameters("echo {{who}} {{ greeting }} {{who}}\n{{a-b_9}}");
    assert.deepEqual(found.names, ["who", "greeting", "a-b_9"]);
    assert.deepEqual(found.problems, []);
  });

  it("knows the built-in parameters and leaves them out of the custom ones", () => {
    const found = findParameters(BUILTIN_NAMES.map((n) => `{{${n}}}`).join(" "));
    assert.deepEqual(found.names, []);
    assert.deepEqual(found.problems, []);
  });

  it("says what is wrong with an unknown built-in or a bad name", () => {
    const found = findParameters("{{ACS::Nope}} {{bad name}} {{}} {{" + "x".repeat(65) + "}}");
    assert.deepEqual(found.names, []);
    assert.equal(found.problems.length, 4);
    assert.match(found.problems[0] ?? "", /unknown built-in parameter \{\{ACS::Nope\}\}/);
    assert.match(found.problems[1] ?? "", /\{\{bad name\}\}: a name is 1 to 64 characters/);
  });

  it("finds nothing in plain text or single braces", () => {
    assert.deepEqual(findParameters("echo {not} ${HOME} {{ }").names, []);
    assert.deepEqual(findParameters("").names, []);
  });

  it("takes 64 characters and no more", () => {
    assert.deepEqual(findParameters(`{{${"y".repeat(64)}}}`).names, ["y".repeat(64)]);
  });
});
