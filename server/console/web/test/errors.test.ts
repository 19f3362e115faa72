import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { findTrailerError, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { baseField, decodeRefusal, FIELD_LABELS, stripFieldPrefix, withLabel } from "../src/errors";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "../src/gen/google/rpc/error_details_pb";

// The trailers the server sends for a refused CreateCommand (server/api/errors.py's
// rich_status for "21 custom parameters"), byte for byte.
const SERVER_DETAILS =
  "CAMSNmNvbW1hbmRfY29udGVudDogMjEgY3VzdG9tIHBhcmFtZXRlcnMsIHRoZSBsaW1pdCBpcyAyMBpXCih0eXBlLmdvb2dsZWFwaXMuY29tL2dvb2dsZS5ycGMuRXJyb3JJbmZvEisKGUNtZFBhcmFtQ291bnQuRXhjZWVkTGltaXQSDmNsb3VkYXNzaXN0LnYxGpMBCil0eXBlLmdvb2dsZWFwaXMuY29tL2dvb2dsZS5ycGMuQmFkUmVxdWVzdBJmCmQKD2NvbW1hbmRfY29udGVudBI2Y29tbWFuZF9jb250ZW50OiAyMSBjdXN0b20gcGFyYW1ldGVycywgdGhlIGxpbWl0IGlzIDIwGhlDbWRQYXJhbUNvdW50LkV4Y2VlZExpbWl0";

function fromTrailers(trailers: Headers): unknown {
  const error = findTrailerError(trailers);
  assert.ok(error, "the trailers hold an error");
  return error;
}

describe("decodeRefusal", () => {
  it("reads the server's own trailers: status, message, product code and field", () => {
    const trailers = new Headers({
      "grpc-status": "3",
      "grpc-message": encodeURIComponent("command_content: 21 custom parameters, the limit is 20"),
      "grpc-status-details-bin": SERVER_DETAILS,
    });
    const found = decodeRefusal(fromTrailers(trailers));
    assert.equal(found.code, "InvalidArgument");
    assert.equal(found.reason, "CmdParamCount.ExceedLimit");
    assert.equal(found.message, "command_content: 21 custom parameters, the limit is 20");
    assert.deepEqual([...found.fields], [["command_content", "command_content: 21 custom parameters, the limit is 20"]]);
    assert.equal(found.unauthenticated, false);
    assert.equal(found.retryAfterSeconds, undefined);
  });

  it("reads several field violations and a retry delay", () => {
    const sent = new ConnectError("slow down", Code.ResourceExhausted, undefined, [
      { desc: ErrorInfoSchema, value: create(ErrorInfoSchema, { reason: "Throttling.User", domain: "cloudassist.v1" }) },
      {
        desc: BadRequestSchema,
        value: create(BadRequestSchema, {
          fieldViolations: [
            { field: "name", description: "name: too long" },
            { field: "tags[0].key", description: "tags[0].key: required" },
          ],
        }),
      },
      { desc: RetryInfoSchema, value: create(RetryInfoSchema, { retryDelay: { seconds: 2n, nanos: 500_000_000 } }) },
    ]);
    const trailers = new Headers();
    setTrailerStatus(trailers, sent);
    const found = decodeRefusal(fromTrailers(trailers));
    assert.equal(found.code, "ResourceExhausted");
    assert.equal(found.reason, "Throttling.User");
    assert.equal(found.fields.get("tags[0].key"), "tags[0].key: required");
    assert.equal(found.fields.size, 2);
    assert.equal(found.retryAfterSeconds, 2.5);
  });

  it("marks a refused key, and takes an error with no details", () => {
    const found = decodeRefusal(new ConnectError("the API key is unknown", Code.Unauthenticated));
    assert.equal(found.unauthenticated, true);
    assert.equal(found.reason, "");
    assert.equal(found.fields.size, 0);
    assert.equal(found.message, "the API key is unknown");
  });

  it("takes what is not a ConnectError (a network failure)", () => {
    const found = decodeRefusal(new TypeError("Failed to fetch"));
    assert.equal(found.code, "Unknown");
    assert.match(found.message, /Failed to fetch/);
  });
});

describe("stripFieldPrefix", () => {
  it("drops the API field name the message starts with", () => {
    assert.equal(stripFieldPrefix("timeout_seconds: must be between 10 and 86400, not 5", "timeout_seconds"), "must be between 10 and 86400, not 5");
    assert.equal(stripFieldPrefix("parameters: 21 values given, the limit is 20", "parameters"), "21 values given, the limit is 20");
  });

  it("drops a path into the field, or the field's base", () => {
    assert.equal(stripFieldPrefix("tags[0].key: required", "tags[0].key"), "required");
    assert.equal(stripFieldPrefix('parameters["who"]: too long', "parameters"), "too long");
    assert.equal(stripFieldPrefix("tags: at most 20", "tags[3].value"), "at most 20");
  });

  it("keeps a message that names another field, or none", () => {
    assert.equal(stripFieldPrefix("frequency: a rate must be longer than timeout_seconds", "timeout_seconds"), "frequency: a rate must be longer than timeout_seconds");
    assert.equal(stripFieldPrefix("Something went wrong: retry", "name"), "Something went wrong: retry");
    assert.equal(stripFieldPrefix("no colon here", "name"), "no colon here");
  });
});

describe("withLabel", () => {
  const labels = new Map([
    ["timeout_seconds", "Timeout (seconds)"],
    ["parameters", "Values"],
  ]);

  it("names the field by its label", () => {
    assert.equal(withLabel("timeout_seconds: must be between 10 and 86400", labels), "Timeout (seconds): must be between 10 and 86400");
    assert.equal(withLabel('parameters["x"]: too long', labels), "Values: too long");
  });

  it("leaves a field the form does not know", () => {
    assert.equal(withLabel("invoke_id: not found", labels), "invoke_id: not found");
  });

  it("knows the fields pages name outside a form", () => {
    assert.equal(withLabel("invoke_id: invocation t-1 is not running; nothing to stop", FIELD_LABELS), "Invocation: invocation t-1 is not running; nothing to stop");
  });
});

describe("baseField", () => {
  it("is the top-level field of a path", () => {
    assert.equal(baseField("tags[0].key"), "tags");
    assert.equal(baseField('parameters["a"]'), "parameters");
    assert.equal(baseField("env.PATH"), "env");
    assert.equal(baseField("name"), "name");
  });
});
