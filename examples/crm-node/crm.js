#!/usr/bin/env node
// An example CRM in Node.js: it reads facestream's matches.v1 and greets members as they walk
// into a store, the way `facestream crm-example` does in Python. It shows what a consumer in any
// language needs to get right:
//
// - the contract: every event is checked against schemas/json/MatchEvent.v1.schema.json (the
//   JSON Schema generated from facestream's models); a record that does not fit, or carries a
//   version this consumer does not know, is parked (here: a line on stderr), never guessed at;
// - at-least-once delivery: an event can arrive twice, so it acts once per event_id;
// - its own consumer group, and offsets committed only after the effect (no auto-commit);
// - event time: a greeting shows when the camera saw the member, in the store's time zone;
// - one visit, one greeting: not again until the member was unseen for the sink's visit gap.
//
// Configured like the pipeline, from the environment: FACESTREAM_KAFKA_BOOTSTRAP,
// FACESTREAM_TOPIC_PREFIX, FACESTREAM_GROUP_PREFIX (the group is <prefix>-crm-node),
// FACESTREAM_SINK_VISIT_GAP_SECONDS, FACESTREAM_SINK_TIMEZONE, FACESTREAM_SINK_STORE_TIMEZONES.
//
//   npm ci && node crm.js --from-beginning
//   member M-1234 just entered store store-7 at 14:05 (camera entrance-1)

import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";
import { Kafka, logLevel } from "kafkajs";

const HERE = dirname(fileURLToPath(import.meta.url));
const DEFAULT_SCHEMA = resolve(HERE, "../../schemas/json/MatchEvent.v1.schema.json");
const KNOWN_VERSION = 1;
// Duplicates come from redelivered batches, close together in the stream: a bounded memory of
// event ids is enough.
const SEEN_LIMIT = 100_000;

const USAGE = `usage: node crm.js [--from-beginning] [--max-idle-seconds N] [--json] [--schema FILE]

  --from-beginning      a new consumer group starts at the first retained match (else the end)
  --max-idle-seconds N  stop once no match has arrived for N seconds (else run until Ctrl+C)
  --json                print one JSON object per line (events, greetings, a final summary)
  --schema FILE         the MatchEvent JSON Schema [default: ${DEFAULT_SCHEMA}]`;

function settings(env) {
  const prefix = env.FACESTREAM_TOPIC_PREFIX ?? "";
  return {
    brokers: (env.FACESTREAM_KAFKA_BOOTSTRAP ?? "localhost:9092").split(","),
    topic: `${prefix}matches.v1`,
    groupId: `${env.FACESTREAM_GROUP_PREFIX ?? "facestream"}-crm-node`,
    visitGapMs: 1000 * Number(env.FACESTREAM_SINK_VISIT_GAP_SECONDS ?? 1800),
    timezone: env.FACESTREAM_SINK_TIMEZONE ?? "UTC",
    storeTimezones: JSON.parse(env.FACESTREAM_SINK_STORE_TIMEZONES || "{}"),
  };
}

/** Decides which events deserve a greeting: members, once per event id and per visit. */
class Greeter {
  constructor(config) {
    this.config = config;
    this.seen = new Set();
    this.lastSeen = new Map(); // "store\u0000member" -> event time (ms) of the latest sighting
  }

  /** True the first time an event id is offered, false for a redelivery. */
  firstTime(eventId) {
    if (this.seen.has(eventId)) return false;
    this.seen.add(eventId);
    if (this.seen.size > SEEN_LIMIT) this.seen.delete(this.seen.values().next().value);
    return true;
  }

  /** The greeting for a (first-time) event, or null: not a member, or the same visit. */
  greeting(event) {
    if (event.kind !== "member" || event.member_id === null) return null;
    const who = `${event.store_id}\u0000${event.member_id}`;
    const at = Date.parse(event.captured_at);
    const last = this.lastSeen.get(who);
    // Event time, not the clock of this process: a replay greets exactly as live traffic did.
    this.lastSeen.set(who, last === undefined ? at : Math.max(last, at));
    if (last !== undefined && Math.abs(at - last) <= this.config.visitGapMs) return null;
    const zone = this.config.storeTimezones[event.store_id] ?? this.config.timezone;
    const local = new Intl.DateTimeFormat("en-GB", {
      timeZone: zone,
      hour: "2-digit",
      minute: "2-digit",
      hourCycle: "h23",
    }).format(new Date(at));
    return (
      `member ${event.member_id} just entered store ${event.store_id} at ${local} ` +
      `(camera ${event.camera_id})`
    );
  }
}

/** A validating decoder for match events: returns {event} or {reason, error}. */
function decoder(schemaPath) {
  const ajv = new Ajv2020({ allErrors: false, strict: true });
  addFormats(ajv);
  const validate = ajv.compile(JSON.parse(readFileSync(schemaPath, "utf8")));
  return (value) => {
    if (value === null) return { reason: "invalid", error: "the record has no value" };
    let data;
    try {
      data = JSON.parse(value.toString("utf8"));
    } catch (err) {
      return { reason: "not_json", error: err.message };
    }
    if (data === null || typeof data !== "object" || Array.isArray(data)) {
      return { reason: "invalid", error: "not a JSON object" };
    }
    if (data.v !== KNOWN_VERSION) {
      return { reason: "unknown_version", error: `version ${JSON.stringify(data.v)}` };
    }
    if (!validate(data)) {
      const [first] = validate.errors;
      return { reason: "invalid", error: `${first.instancePath || "/"} ${first.message}` };
    }
    return { event: data };
  };
}

async function main() {
  const { values: args } = parseArgs({
    options: {
      "from-beginning": { type: "boolean", default: false },
      "max-idle-seconds": { type: "string" },
      json: { type: "boolean", default: false },
      schema: { type: "string", default: DEFAULT_SCHEMA },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (args.help) {
    console.log(USAGE);
    return 0;
  }
  const maxIdleMs = args["max-idle-seconds"] ? 1000 * Number(args["max-idle-seconds"]) : null;
  const config = settings(process.env);
  const decode = decoder(args.schema);
  const greeter = new Greeter(config);
  const counts = { read: 0, duplicates: 0, parked: 0, greetings: 0 };
  const out = (obj, line) => console.log(args.json ? JSON.stringify(obj) : line);

  const kafka = new Kafka({ clientId: "facestream-crm-node", brokers: config.brokers, logLevel: logLevel.ERROR });
  const consumer = kafka.consumer({ groupId: config.groupId });
  let lastActivity = null; // set once the group is joined: joining is not idleness
  consumer.on(consumer.events.GROUP_JOIN, () => {
    lastActivity ??= Date.now();
  });

  await consumer.connect();
  await consumer.subscribe({ topics: [config.topic], fromBeginning: args["from-beginning"] });
  await consumer.run({
    autoCommit: false,
    eachBatchAutoResolve: false,
    eachBatch: async ({ batch, resolveOffset, heartbeat, isRunning, isStale }) => {
      let next = null;
      for (const message of batch.messages) {
        if (!isRunning() || isStale()) break;
        counts.read += 1;
        const { event, reason, error } = decode(message.value);
        if (event === undefined) {
          counts.parked += 1;
          console.error(`parked ${batch.topic}[${batch.partition}]@${message.offset}: ${reason}: ${error}`);
        } else if (!greeter.firstTime(event.event_id)) {
          counts.duplicates += 1;
        } else {
          const { event_id, kind, store_id, member_id, face_id, captured_at } = event;
          if (args.json) out({ event: { event_id, kind, store_id, member_id, face_id, captured_at } });
          const line = greeter.greeting(event);
          if (line !== null) {
            counts.greetings += 1;
            out({ greeting: line, member_id, store_id }, line);
          }
        }
        resolveOffset(message.offset);
        next = (BigInt(message.offset) + 1n).toString();
      }
      // The effects above are done (printed): only now is the position committed.
      if (next !== null) {
        await consumer.commitOffsets([{ topic: batch.topic, partition: batch.partition, offset: next }]);
      }
      lastActivity = Date.now();
      await heartbeat();
    },
  });

  await new Promise((done) => {
    const stop = () => {
      clearInterval(timer);
      done();
    };
    const timer = setInterval(() => {
      if (maxIdleMs !== null && lastActivity !== null && Date.now() - lastActivity > maxIdleMs) stop();
    }, 200);
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
  });
  await consumer.disconnect();
  if (args.json) out({ summary: counts });
  else console.error(`read ${counts.read}, duplicates ${counts.duplicates}, parked ${counts.parked}, greetings ${counts.greetings}`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
