import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { timeAt } from "./clock";
import { h } from "./dom";
import { CommandType, ExecutionState, InvokeStatus, RepeatMode } from "./gen/cloudassist/v1/command_pb";
import { OsType } from "./gen/cloudassist/v1/instance_pb";
import { timestampMs } from "./time";

/** The seed's coarse status names. */
export const STATUS_LABELS: Record<InvokeStatus, string> = {
  [InvokeStatus.UNSPECIFIED]: "—",
  [InvokeStatus.RUNNING]: "Running",
  [InvokeStatus.FINISHED]: "Finished",
  [InvokeStatus.FAILED]: "Failed",
  [InvokeStatus.STOPPED]: "Stopped",
  [InvokeStatus.PARTIAL_FAILED]: "PartialFailed",
};

export const TYPE_LABELS: Record<CommandType, string> = {
  [CommandType.UNSPECIFIED]: "—",
  [CommandType.RUN_SHELL_SCRIPT]: "Shell",
  [CommandType.RUN_BAT_SCRIPT]: "Bat",
  [CommandType.RUN_POWERSHELL_SCRIPT]: "PowerShell",
};

export const OS_LABELS: Record<OsType, string> = {
  [OsType.UNSPECIFIED]: "—",
  [OsType.LINUX]: "Linux",
  [OsType.WINDOWS]: "Windows",
};

export const REPEAT_LABELS: Record<RepeatMode, string> = {
  [RepeatMode.UNSPECIFIED]: "—",
  [RepeatMode.ONCE]: "Once",
  [RepeatMode.PERIOD]: "Periodic",
  [RepeatMode.NEXT_REBOOT_ONLY]: "Next reboot",
  [RepeatMode.EVERY_REBOOT]: "Every reboot",
};

export function stateName(state: ExecutionState): string {
  return state === ExecutionState.UNSPECIFIED ? "—" : ExecutionState[state];
}

export function statusBadge(status: InvokeStatus): HTMLElement {
  const label = STATUS_LABELS[status] ?? "—";
  return h("span", { class: `badge status-${label.toLowerCase()}`, "data-status": label }, label);
}

export function stateBadge(state: ExecutionState): HTMLElement {
  const name = stateName(state);
  return h("span", { class: `state state-${name.toLowerCase()}`, "data-state": name }, name);
}

/** A protobuf Timestamp as a labelled time in the console's clock ("—" when unset). */
export function when(timestamp: Timestamp | undefined): HTMLElement {
  return timeAt(timestamp ? timestampMs(timestamp.seconds, timestamp.nanos) : undefined);
}

export function bytes(size: bigint | number): string {
  const n = Number(size);
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();
export const utf8 = {
  decode: (data: Uint8Array): string => decoder.decode(data),
  encode: (text: string): Uint8Array<ArrayBuffer> => encoder.encode(text) as Uint8Array<ArrayBuffer>,
};
