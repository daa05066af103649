// Calls one Tandem RPC using nothing but the .proto files, and prints the outcome as JSON.
// Usage: node call.js ADDRESS SERVICE METHOD REQUEST_JSON
// SERVICE is a full name such as tandem.config.v1.ConfigService.
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [address, serviceName, method, requestJson] = process.argv.slice(2);
const root = path.resolve(__dirname, "..", "..");
const files = {
  "tandem.config.v1.ConfigService": "tandem/config/v1/config_service.proto",
  "tandem.session.v1.SessionService": "tandem/session/v1/session_service.proto",
};

const definition = protoLoader.loadSync(files[serviceName], {
  includeDirs: [path.join(root, "protos"), path.join(root, "third_party", "protos")],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
});
const Service = grpc.loadPackageDefinition(definition);
const Client = serviceName.split(".").reduce((node, part) => node[part], Service);
const client = new Client(address, grpc.credentials.createInsecure());
const request = JSON.parse(requestJson || "{}");

let finished = false;
const finish = (outcome) => {
  // grpc-js may emit "end" after "error" on a failed stream; report only the first outcome.
  if (finished) return;
  finished = true;
  process.stdout.write(JSON.stringify(outcome) + "\n");
  client.close();
};

const definitionOf = Client.service[method];
if (definitionOf.responseStream) {
  const call = client[method](request);
  const messages = [];
  call.on("data", (message) => messages.push(message));
  call.on("error", (err) => finish(outcomeOf(err, messages)));
  call.on("end", () => finish({ code: 0, messages }));
} else {
  client[method](request, { deadline: Date.now() + 10000 }, (err, response) => {
    finish(err ? outcomeOf(err, []) : { code: 0, response });
  });
}

function outcomeOf(err, messages) {
  return {
    code: err.code,
    codeName: grpc.status[err.code],
    details: err.details,
    hasStatusDetails: err.metadata.get("grpc-status-details-bin").length > 0,
    messages,
  };
}
