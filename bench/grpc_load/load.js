// Closed-loop gRPC load on embedrec.v1.EmbedRec/Embed, one text per call, from a grpc-js client
// that knows only the .proto (what a non-Python service sees). Prints one JSON summary line.
// Requests are encoded from the .proto once, up front, and replies are checked for their size
// and status but not decoded into JS numbers: decoding 384 floats per reply cost the client
// ~1.4 ms of CPU per call on the server's own cores, which made gRPC look slower than HTTP
// (wrk spends ~0.08 ms); a load tool should cost as little as possible of what it measures.
//
// node load.js [--rpc embed|info] --target HOST:PORT --proto protos/embedrec/v1/embedrec.proto --texts FILE.json
//              --concurrency C --seconds S --warmup W
"use strict";
const grpc = require("@grpc/grpc-js");
const protobuf = require("protobufjs");
const fs = require("fs");
const path = require("path");

function option(name, fallback) {
  const at = process.argv.indexOf("--" + name);
  return at > 0 ? process.argv[at + 1] : fallback;
}

const protoPath = path.resolve(option("proto"));
const root = new protobuf.Root();
root.resolvePath = (origin, target) => path.resolve(protoPath, "../../..", target);
root.loadSync("embedrec/v1/embedrec.proto", { keepCase: true });
const EmbedRequest = root.lookupType("embedrec.v1.EmbedRequest");
const InfoRequest = root.lookupType("embedrec.v1.InfoRequest");
const texts = JSON.parse(fs.readFileSync(option("texts"), "utf8"));
const embedRequests = texts.map((text) => Buffer.from(EmbedRequest.encode({ texts: [text] }).finish()));
const infoRequest = Buffer.from(InfoRequest.encode({}).finish());
const identity = (buffer) => buffer;
const concurrency = Number(option("concurrency", "1"));
const seconds = Number(option("seconds", "8"));
const warmup = Number(option("warmup", "2"));
const rpc = option("rpc", "embed");  // embed (one text) or info (the transport's own cost)
// One channel per 8 callers, as a service with a small connection pool would have.
const channels = Array.from({ length: Math.max(1, Math.ceil(concurrency / 8)) }, () =>
  new grpc.Client(option("target"), grpc.credentials.createInsecure(), { "grpc.use_local_subchannel_pool": 1 }));

const latencies = [];
let errors = 0;
let measuring = false;
let callsTotal = 0;
let stopping = false;

function one(worker, sequence) {
  return new Promise((resolve) => {
    const started = process.hrtime.bigint();
    const client = channels[worker % channels.length];
    const request = embedRequests[(worker * 7919 + sequence) % embedRequests.length];
    const done = (error, reply) => {
      if (!error && rpc === "embed" && reply.length < 16) error = new Error("short reply");
      const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;
      callsTotal += 1;
      if (measuring) {
        if (error) errors += 1;
        else latencies.push(elapsedMs);
      }
      resolve();
    };
    const method = rpc === "info" ? "/embedrec.v1.EmbedRec/Info" : "/embedrec.v1.EmbedRec/Embed";
    const body = rpc === "info" ? infoRequest : request;
    client.makeUnaryRequest(method, identity, identity, body, { deadline: Date.now() + 30000 }, done);
  });
}

async function worker(index) {
  for (let sequence = 0; !stopping; sequence++) await one(index, sequence);
}

function percentile(sorted, share) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(share * sorted.length))];
}

async function main() {
  const workers = Array.from({ length: concurrency }, (_, index) => worker(index));
  await new Promise((resolve) => setTimeout(resolve, warmup * 1000));
  measuring = true;
  const started = process.hrtime.bigint();
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  measuring = false;
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  stopping = true;
  await Promise.all(workers);
  latencies.sort((a, b) => a - b);
  console.log(JSON.stringify({
    requests_per_s: latencies.length / elapsed,
    errors,
    p50_ms: percentile(latencies, 0.5),
    p99_ms: percentile(latencies, 0.99),
    calls_total: callsTotal,
  }));
  channels.forEach((channel) => channel.close());
}

main();
