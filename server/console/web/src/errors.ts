// A refused call as a person reads it: the gRPC status decoded (google.rpc.ErrorInfo's reason
// is the product's error code, google.rpc.BadRequest names the fields at fault), and messages
// that speak of a form's labels rather than the API's field names. Pure: no DOM, no session.

import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb";

/** A refused call, as the server explained it (google.rpc.Status details). */
export interface Refusal {
  /** The gRPC status name: `InvalidArgument`, `FailedPrecondition`, ... */
  code: string;
  message: string;
  /** ErrorInfo.reason: the product's error code (ParameterCount.ExceedLimit, ...). */
  reason: string;
  /** BadRequest: field -> what is wrong with it. */
  fields: Map<string, string>;
  retryAfterSeconds?: number;
  unauthenticated: boolean;
}

export function decodeRefusal(error: unknown): Refusal {
  const connectError = ConnectError.from(error);
  const fields = new Map<string, string>();
  for (const bad of connectError.findDetails(BadRequestSchema)) {
    for (const violation of bad.fieldViolations) {
      fields.set(violation.field, violation.description);
    }
  }
  const info = connectError.findDetails(ErrorInfoSchema)[0];
  const retry = connectError.findDetails(RetryInfoSchema)[0];
  return {
    code: Code[connectError.code] ?? String(connectError.code),
    message: connectError.rawMessage,
    reason: info?.reason ?? "",
    fields,
    retryAfterSeconds: retry?.retryDelay ? Number(retry.retryDelay.seconds) + retry.retryDelay.nanos / 1e9 : undefined,
    unauthenticated: connectError.code === Code.Unauthenticated,
  };
}

/** The top-level field a field path names: `parameters` for `parameters["who"]`, `tags` for
 * `tags[0].key`. */
export function baseField(field: string): string {
  return field.split(/[.[]/)[0] ?? field;
}

// A leading API field path and its colon: `timeout_seconds: `, `tags[0].key: `, `parameters["a b"]: `.
const FIELD_PREFIX = /^([a-z][a-z0-9_]*(?:\[[^\]]*\]|\.[a-z][a-z0-9_]*)*): /;

/** `message` without a leading `field: ` that names `field` (or a part of it, or its base). */
export function stripFieldPrefix(message: string, field: string): string {
  const found = FIELD_PREFIX.exec(message);
  if (!found?.[1]) return message;
  const named = found[1];
  if (named === field || baseField(named) === baseField(field)) return message.slice(found[0].length);
  return message;
}

/** What the pages call the API's fields that a refusal outside a form names (Stop, Run again,
 * a page that failed to load). */
export const FIELD_LABELS: ReadonlyMap<string, string> = new Map([
  ["region_id", "Region"],
  ["invoke_id", "Invocation"],
  ["command_id", "Command"],
  ["instance_id", "Instance"],
  ["instance_ids", "Instances"],
  ["record_id", "Record"],
  ["states", "States"],
  ["page_token", "Page"],
]);

/** `message` with a leading API field name replaced by its label (`timeout_seconds: x` ->
 * `Timeout (seconds): x`), when `labels` knows it; unchanged otherwise. */
export function withLabel(message: string, labels: ReadonlyMap<string, string>): string {
  const found = FIELD_PREFIX.exec(message);
  if (!found?.[1]) return message;
  const label = labels.get(found[1]) ?? labels.get(baseField(found[1]));
  if (!label) return message;
  return `${label}: ${message.slice(found[0].length)}`;
}
