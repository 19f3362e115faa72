import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { ExecutionState, InvocationSchema, InvokeStatus, RepeatMode } from "../src/gen/cloudassist/v1/command_pb";
import { canRerun, canStop, failedInstances, naturalCompare, sortedBy } from "../src/rules";

function invocation(status: InvokeStatus, mode: RepeatMode, states: [string, ExecutionState][] = []) {
  return create(InvocationSchema, {
    invokeStatus: status,
    repeatMode: mode,
    invokeInstances: states.map(([instanceId, state]) => ({ instanceId, state })),
  });
}

describe("canStop", () => {
  it("is for running invocations and periodic ones not stopped", () => {
    assert.equal(canStop(invocation(InvokeStatus.RUNNING, RepeatMode.ONCE)), true);
    assert.equal(canStop(invocation(InvokeStatus.RUNNING, RepeatMode.PERIOD)), true);
    assert.equal(canStop(invocation(InvokeStatus.PARTIAL_FAILED, RepeatMode.PERIOD)), true);
    assert.equal(canStop(invocation(InvokeStatus.FINISHED, RepeatMode.EVERY_REBOOT)), true);
  });

  it("is not for a one-shot that ended, nor a stopped one", () => {
    for (const status of [InvokeStatus.FINISHED, InvokeStatus.FAILED, InvokeStatus.PARTIAL_FAILED, InvokeStatus.STOPPED]) {
      assert.equal(canStop(invocation(status, RepeatMode.ONCE)), false, InvokeStatus[status]);
    }
    assert.equal(canStop(invocation(InvokeStatus.STOPPED, RepeatMode.PERIOD)), false);
  });
});

describe("canRerun", () => {
  it("is for an ended invocation with a failed instance, a non-zero exit included", () => {
    const failed: [string, ExecutionState][] = [["i-1", ExecutionState.SUCCESS], ["i-2", ExecutionState.TIMEOUT]];
    for (const status of [InvokeStatus.FAILED, InvokeStatus.PARTIAL_FAILED]) {
      assert.equal(canRerun(invocation(status, RepeatMode.ONCE, failed)), true, InvokeStatus[status]);
    }
    const nonZero: [string, ExecutionState][] = [["i-1", ExecutionState.FAILED]];
    assert.equal(canRerun(invocation(InvokeStatus.FINISHED, RepeatMode.ONCE, nonZero)), true);
  });

  it("is not for a running invocation, nor one where nothing failed", () => {
    const failed: [string, ExecutionState][] = [["i-1", ExecutionState.ERROR]];
    assert.equal(canRerun(invocation(InvokeStatus.RUNNING, RepeatMode.ONCE, failed)), false);
    const fine: [string, ExecutionState][] = [["i-1", ExecutionState.SUCCESS], ["i-2", ExecutionState.CANCELLED]];
    for (const status of [InvokeStatus.FINISHED, InvokeStatus.STOPPED]) {
      assert.equal(canRerun(invocation(status, RepeatMode.ONCE, fine)), false, InvokeStatus[status]);
    }
  });
});

describe("failedInstances", () => {
  it("lists the instances whose record failed, in natural order, with their state", () => {
    const found = failedInstances(
      invocation(InvokeStatus.PARTIAL_FAILED, RepeatMode.ONCE, [
        ["i-10", ExecutionState.TIMEOUT],
        ["i-2", ExecutionState.FAILED],
        ["i-3", ExecutionState.SUCCESS],
        ["i-4", ExecutionState.TERMINATED],
        ["i-5", ExecutionState.CANCELLED],
        ["i-6", ExecutionState.ABORTED],
        ["i-7", ExecutionState.INVALID],
        ["i-8", ExecutionState.ERROR],
      ]),
    );
    assert.deepEqual(found, [
      { instanceId: "i-2", state: ExecutionState.FAILED },
      { instanceId: "i-6", state: ExecutionState.ABORTED },
      { instanceId: "i-7", state: ExecutionState.INVALID },
      { instanceId: "i-8", state: ExecutionState.ERROR },
      { instanceId: "i-10", state: ExecutionState.TIMEOUT },
    ]);
  });
});

describe("naturalCompare", () => {
  it("orders numbers inside ids by value", () => {
    assert.deepEqual(["i-web-10", "i-web-2", "i-db-1", "i-web-1"].sort(naturalCompare), ["i-db-1", "i-web-1", "i-web-2", "i-web-10"]);
  });

  it("is a total order: ids that differ only in case keep a fixed order", () => {
    assert.notEqual(naturalCompare("I-1", "i-1"), 0);
    assert.equal(naturalCompare("I-1", "i-1"), -naturalCompare("i-1", "I-1"));
    assert.equal(naturalCompare("a", "a"), 0);
  });

  it("sorts a copy by a key", () => {
    const items = [{ id: "x-3" }, { id: "x-20" }, { id: "x-1" }];
    assert.deepEqual(sortedBy(items, (i) => i.id).map((i) => i.id), ["x-1", "x-3", "x-20"]);
    assert.deepEqual(items.map((i) => i.id), ["x-3", "x-20", "x-1"]);
  });
});
