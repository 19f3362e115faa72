// A Node.js client of cloudassist, built only from the .proto files at run time: it creates a
// command, invokes it, follows WatchInvocation to its end, reads the results, and makes a
// request the server rejects, then prints what it saw as one JSON object on stdout.
//
//   CLOUDASSIST_API_KEY=... node flow.mjs --server 127.0.0.1:50051 --instance i-a \
//     --script 'echo "{{greeting}} from {{ACS::InstanceId}}"' --param greeting=hello \
//     --include DIR_WITH_google/rpc/status.proto
//
// Bytes (output) are Base64 in the summary, so that any output survives the JSON.

import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CALL_SECONDS = 30;
// A timeout far past the server's limit (86,400 s): the request the server must reject.
const REJECTED_TIMEOUT = 999_999;

const { values: args } = parseArgs({
  options: {
    server: { type: "string", default: "127.0.0.1:50051" },
    key: { type: "string", default: process.env.CLOUDASSIST_API_KEY ?? "" },
    region: { type: "string", default: "cn-hangzhou" },
    instance: { type: "string", multiple: true, default: [] },
    script: { type: "string", default: 'echo "hello from {{ACS::InstanceId}}"' },
    param: { type: "string", multiple: true, default: [] },
    protos: { type: "string", default: path.join(HERE, "..", "..", "protos") },
    // Directories holding google/rpc/status.proto and google/rpc/error_details.proto.
    include: { type: "string", multiple: true, default: [] },
  },
});

function fail(message) {
  process.stderr.write(`flow.mjs: ${message}\n`);
  process.exit(2);
}

if (!args.key) fail("no API key: pass --key or set CLOUDASSIST_API_KEY");
if (args.instance.length === 0) fail("no instance: pass --instance ID (repeatable)");

const protoFiles = ["command", "instance", "admin"].map((name) => `cloudassist/v1/${name}.proto`);
const definition = protoLoader.loadSync(protoFiles, {
  includeDirs: [args.protos],
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});
const api = grpc.loadPackageDefinition(definition).cloudassist.v1;

// google.rpc.Status and its details, to decode the grpc-status-details-bin trailer.
const richErrors = new protobuf.Root();
richErrors.resolvePath = (origin, target) => {
  for (const dir of args.include) {
    const candidate = path.join(dir, target);
    try {
      protobuf.util.fs.accessSync(candidate);
      return candidate;
    } catch {
      // Not in this directory; google/protobuf/* falls back to protobufjs's bundled copies.
    }
  }
  return protobuf.util.path.resolve(origin, target);
};
try {
  richErrors.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], {
    keepCase: true,
  });
} catch (error) {
  fail(`cannot load google/rpc protos from --include ${args.include}: ${error.message}`);
}
const StatusType = richErrors.lookupType("google.rpc.Status");

const credentials = grpc.credentials.createInsecure();
const commands = new api.CommandService(args.server, credentials);

function authorized() {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${args.key}`);
  return metadata;
}

function deadline() {
  return new Date(Date.now() + CALL_SECONDS * 1000);
}

function unary(client, method, request, metadata = authorized()) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: deadline() }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

function decodeStatus(error) {
  const [raw] = error.metadata?.get("grpc-status-details-bin") ?? [];
  if (!raw) return null;
  const asObject = { longs: Number, enums: String, defaults: false };
  const status = StatusType.decode(raw);
  return {
    code: status.code,
    message: status.message,
    details: status.details.map((any) => {
      const typeName = any.type_url.slice(any.type_url.lastIndexOf("/") + 1);
      const type = richErrors.lookupType(typeName);
      return { type: typeName, value: type.toObject(type.decode(any.value), asObject) };
    }),
  };
}

function rejection(error) {
  return {
    code: error.code,
    code_name: grpc.status[error.code],
    message: error.details,
    status: decodeStatus(error),
  };
}

async function watch(invokeId) {
  const output = {};
  const events = [];
  const final = {};
  const call = commands.WatchInvocation(
    { region_id: args.region, invoke_id: invokeId },
    authorized(),
    { deadline: deadline() },
  );
  for await (const event of call) {
    if (event.event === "output") {
      const chunk = event.output;
      const received = output[chunk.instance_id] ?? [];
      events.push({
        kind: "output",
        instance_id: chunk.instance_id,
        record_id: chunk.record_id,
        offset: chunk.offset,
        size: chunk.data.length,
      });
      received.push(chunk.data);
      output[chunk.instance_id] = received;
    } else {
      const change = event.state_change;
      events.push({ kind: "state_change", instance_id: change.instance_id, state: change.state });
      final[change.instance_id] = {
        state: change.state,
        invoke_record_status: change.invoke_record_status,
        invoke_status: change.invoke_status,
        exit_code: change.exit_code ?? null,
        error_code: change.error_code,
      };
    }
  }
  const joined = Object.fromEntries(
    Object.entries(output).map(([id, parts]) => [id, Buffer.concat(parts).toString("base64")]),
  );
  return { output: joined, events, final };
}

async function main() {
  const parameters = Object.fromEntries(
    args.param.map((pair) => {
      const at = pair.indexOf("=");
      if (at < 1) fail(`--param wants NAME=VALUE, not ${pair}`);
      return [pair.slice(0, at), pair.slice(at + 1)];
    }),
  );
  const created = await unary(commands, "CreateCommand", {
    region_id: args.region,
    name: "node-interop",
    type: "COMMAND_TYPE_RUN_SHELL_SCRIPT",
    command_content: Buffer.from(args.script),
    enable_parameter: true,
    timeout_seconds: CALL_SECONDS,
  });
  const invoked = await unary(commands, "InvokeCommand", {
    region_id: args.region,
    command_id: created.command_id,
    instance_ids: args.instance,
    parameters,
  });
  const watched = await watch(invoked.invoke_id);
  const described = await unary(commands, "DescribeInvocationResults", {
    region_id: args.region,
    invoke_id: invoked.invoke_id,
    page_size: 50,
  });
  const results = described.invocation_results.map((result) => ({
    instance_id: result.instance_id,
    state: result.state,
    invoke_record_status: result.invoke_record_status,
    exit_code: result.exit_code,
    error_code: result.error_code,
    output: result.output.toString("base64"),
  }));

  let rejected = null;
  try {
    await unary(commands, "CreateCommand", {
      region_id: args.region,
      name: "node-interop-rejected",
      type: "COMMAND_TYPE_RUN_SHELL_SCRIPT",
      command_content: Buffer.from("true"),
      timeout_seconds: REJECTED_TIMEOUT,
    });
  } catch (error) {
    rejected = rejection(error);
  }
  let unauthenticated = null;
  const instances = new api.InstanceService(args.server, credentials);
  try {
    await unary(instances, "DescribeInstances", { region_id: args.region }, new grpc.Metadata());
  } catch (error) {
    unauthenticated = rejection(error);
  } finally {
    instances.close();
  }
  commands.close();

  const summary = {
    command_id: created.command_id,
    invoke_id: invoked.invoke_id,
    watched,
    results,
    rejected,
    unauthenticated,
  };
  process.stdout.write(`${JSON.stringify(summary)}\n`);
}

main().catch((error) => fail(error.stack ?? String(error)));
