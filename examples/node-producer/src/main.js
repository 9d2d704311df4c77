#!/usr/bin/env node
'use strict';
// Sends single llm_call records and llm_call_batch records to llmpulse's calls topic, keyed by service.
//
//   node src/main.js [--service NAME] [--calls N] [--batches M] [--batch-size K] [--topic T] [--dry-run]
//
// Kafka from KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:9092); topic from --topic, else LLMPULSE_TOPICS__CALLS or
// LLMPULSE_TOPIC_CALLS, else llm-calls. With --dry-run nothing is sent: each record is printed as "call HEX" or
// "batch HEX", one a line.

const crypto = require('crypto');
const { Kafka, Partitioners, logLevel } = require('kafkajs');
const { CallEncoder } = require('./llmpulse');

const MODELS = [['openai', 'gpt-4o'], ['openai', 'gpt-4o-mini'], ['anthropic', 'claude-3-5-haiku-latest']];
const USAGE = 'usage: node src/main.js [--service NAME] [--calls N] [--batches M] [--batch-size K] [--topic T] [--dry-run]';

function parse(argv) {
  const opts = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i].replace(/^--?/, '');
    if (arg === 'dry-run') opts[arg] = true;
    else if (['service', 'calls', 'batches', 'batch-size', 'topic'].includes(arg) && i + 1 < argv.length) opts[arg] = argv[++i];
    else {
      console.error(USAGE);
      process.exit(arg === 'help' ? 0 : 2);
    }
  }
  return opts;
}

function env(name, fallback) {
  const value = process.env[name];
  return value && value.trim() ? value : fallback;
}

const hex = (bytes) => crypto.randomBytes(bytes).toString('hex');

/** A plausible call; every few calls one sets the optional fields (error, streaming, labels, text). */
function exampleCall(encoder, service, i) {
  const [provider, model] = MODELS[i % MODELS.length];
  const latency = 200 + Math.random() * 800;
  const call = {
    event_id: hex(16), timestamp_ms: Date.now(), service, provider, request_model: model, response_model: model,
    status: 'ok', latency_ms: latency, input_tokens: 100 + Math.floor(Math.random() * 900),
    output_tokens: 20 + Math.floor(Math.random() * 300), prompt_chars: 400 + Math.floor(Math.random() * 4000),
    trace_id: hex(16),
  };
  if (i % 2 === 0) Object.assign(call, { ttft_ms: latency / 4, feature: 'résumé-summary' });
  if (i % 3 === 0) Object.assign(call, { cost_micros: 1500 + i, confidence: 0.85, user_hash: `u${i % 7}` });
  if (i % 5 === 0) Object.assign(call, { labels: { region: 'eu-west-1' }, experiment_id: 'prompt-v2', variant: 'B' });
  if (i % 11 === 0) Object.assign(call, { status: 'rate_limited', error_type: 'RateLimitError:429' });
  return encoder.newCall(call);
}

async function main() {
  const opts = parse(process.argv.slice(2));
  const service = opts.service || 'node-example';
  const calls = Number(opts.calls ?? 5);
  const batches = Number(opts.batches ?? 2);
  const batchSize = Number(opts['batch-size'] ?? 100);
  const topic = opts.topic || env('LLMPULSE_TOPICS__CALLS', env('LLMPULSE_TOPIC_CALLS', 'llm-calls'));
  const producerId = `node-${crypto.randomUUID()}`;

  const encoder = new CallEncoder();
  const records = [];
  let n = 0;
  for (let i = 0; i < calls; i++) records.push(['call', encoder.encodeCall(exampleCall(encoder, service, n++))]);
  for (let b = 0; b < batches; b++) {
    const batch = Array.from({ length: batchSize }, () => exampleCall(encoder, service, n++));
    records.push(['batch', encoder.encodeBatch(producerId, batch)]);
  }

  if (opts['dry-run']) {
    for (const [kind, value] of records) process.stdout.write(`${kind} ${value.toString('hex')}\n`);
    return;
  }
  const kafka = new Kafka({
    clientId: 'llmpulse-node-producer',
    brokers: env('KAFKA_BOOTSTRAP_SERVERS', '127.0.0.1:9092').split(','),
    logLevel: logLevel.WARN,
  });
  // The Java client's partitioner, so a service's records land where a Java or Python producer's would.
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  try {
    await producer.send({ topic, acks: -1, messages: records.map(([, value]) => ({ key: service, value })) });
  } finally {
    await producer.disconnect();
  }
  console.error(`sent ${calls} single calls and ${batches} batches of ${batchSize} calls for service ${service} to ${topic}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
