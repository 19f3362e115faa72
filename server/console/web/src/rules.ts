// What an invocation allows (Stop, Run again on failed instances) and the order lists are shown
// in. Pure: no DOM, no calls.

import { ExecutionState, InvokeStatus, RepeatMode, type Invocation } from "./gen/cloudassist/v1/command_pb";

/** The states of a record that failed: what "Run again on failed instances" runs again. */
export const FAILED_STATES: readonly ExecutionState[] = [
  ExecutionState.FAILED,
  ExecutionState.TIMEOUT,
  ExecutionState.ABORTED,
  ExecutionState.INVALID,
  ExecutionState.ERROR,
];

type Shape = Pick<Invocation, "invokeStatus" | "repeatMode" | "invokeInstances">;

/** Stop applies to an invocation still running, or one whose schedule still has runs to come
 * (periodic or on reboot, not yet stopped). */
export function canStop(invocation: Shape): boolean {
  if (invocation.invokeStatus === InvokeStatus.RUNNING) return true;
  return invocation.repeatMode !== RepeatMode.ONCE && invocation.repeatMode !== RepeatMode.UNSPECIFIED && invocation.invokeStatus !== InvokeStatus.STOPPED;
}

/** Run again applies, as RerunInvocation does, to an invocation no longer running with an
 * instance whose record failed: Failed or PartialFailed, or Finished with a non-zero exit
 * ("finished does not mean succeeded"). */
export function canRerun(invocation: Shape): boolean {
  return invocation.invokeStatus !== InvokeStatus.RUNNING && failedInstances(invocation).length > 0;
}

/** The instances whose latest record failed, with that state, in natural order of their ids. */
export function failedInstances(invocation: Shape): { instanceId: string; state: ExecutionState }[] {
  return invocation.invokeInstances
    .filter((x) => FAILED_STATES.includes(x.state))
    .map((x) => ({ instanceId: x.instanceId, state: x.state }))
    .sort((a, b) => naturalCompare(a.instanceId, b.instanceId));
}

const collator = new Intl.Collator("en", { numeric: true, sensitivity: "base" });

/** Natural order: `i-2` before `i-10`, case aside; ties broken by code point so the order is
 * total. */
export function naturalCompare(a: string, b: string): number {
  return collator.compare(a, b) || (a < b ? -1 : a > b ? 1 : 0);
}

/** A copy of `items` sorted naturally by `key`. */
export function sortedBy<T>(items: readonly T[], key: (item: T) => string): T[] {
  return [...items].sort((a, b) => naturalCompare(key(a), key(b)));
}
