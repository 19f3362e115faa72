// The console's one way to the server: gRPC-Web calls to the services it serves, with the API
// key in the authorization header (never a cookie, a URL or a log). The key is kept in this
// tab's sessionStorage only.

import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { AdminService } from "./gen/cloudassist/v1/admin_pb";
import { CommandService } from "./gen/cloudassist/v1/command_pb";
import { InstanceService } from "./gen/cloudassist/v1/instance_pb";
import { decodeRefusal, type Refusal } from "./errors";

const KEY = "cloudassist.key";
const REGION = "cloudassist.region";
export const DEFAULT_REGION = "cn-hangzhou";

export const session = {
  get key(): string {
    return sessionStorage.getItem(KEY) ?? "";
  },
  set key(value: string) {
    if (value) sessionStorage.setItem(KEY, value);
    else sessionStorage.removeItem(KEY);
  },
  get region(): string {
    return sessionStorage.getItem(REGION) || DEFAULT_REGION;
  },
  set region(value: string) {
    sessionStorage.setItem(REGION, value);
  },
  /** The key's id (before the dot): not secret, shown so the user knows which key is in use. */
  get keyId(): string {
    return this.key.split(".")[0] ?? "";
  },
};

/** Called when the server refuses the key (wrong, expired, revoked): back to sign-in. */
let onSignedOut: (reason: string) => void = () => {};
export function whenSignedOut(handler: (reason: string) => void): void {
  onSignedOut = handler;
}

const authorize: Interceptor = (next) => async (request) => {
  request.header.set("authorization", `Bearer ${session.key}`);
  return await next(request);
};

const transport = createGrpcWebTransport({
  baseUrl: window.location.origin,
  useBinaryFormat: true,
  interceptors: [authorize],
});

export const commands: Client<typeof CommandService> = createClient(CommandService, transport);
export const instances: Client<typeof InstanceService> = createClient(InstanceService, transport);
export const admin: Client<typeof AdminService> = createClient(AdminService, transport);

export type { Refusal } from "./errors";

/** The server's word on a refused call; a refused key also signs the user out. */
export function refusal(error: unknown): Refusal {
  const found = decodeRefusal(error);
  if (found.unauthenticated && session.key) {
    session.key = "";
    onSignedOut(found.message);
  }
  return found;
}

export function isCancel(error: unknown): boolean {
  return ConnectError.from(error).code === Code.Canceled;
}
