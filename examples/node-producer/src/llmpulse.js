'use strict';
// Encodes LLM calls the way llmpulse reads them: Avro single-object encoding (C3 01, the 8-byte little-endian
// CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form, the binary body) with avsc, on the
// project's contracts (schemas/llm_call.v1.avsc, schemas/llm_call_batch.v1.avsc).
//
// avsc writes the Avro body and gives the Parsing Canonical Form (type.schema(), an object), but has neither
// single-object encoding nor the CRC-64-AVRO fingerprint: both are here.

const fs = require('fs');
const path = require('path');
const avro = require('avsc');

const SCHEMAS_DIR = process.env.LLMPULSE_SCHEMAS_DIR || path.join(__dirname, '..', '..', '..', 'schemas');
const MAGIC = Buffer.from([0xc3, 0x01]);
const EMPTY64 = 0xc15d213aa4d7a795n;

const CRC64_TABLE = (() => {
  const table = new Array(256);
  for (let i = 0; i < 256; i++) {
    let fp = BigInt(i);
    for (let j = 0; j < 8; j++) fp = (fp >> 1n) ^ (EMPTY64 & -(fp & 1n));
    table[i] = fp;
  }
  return table;
})();

/** CRC-64-AVRO of a string's UTF-8 bytes (Avro specification, "Schema Fingerprints"). */
function crc64Avro(text) {
  let fp = EMPTY64;
  for (const byte of Buffer.from(text, 'utf8')) {
    fp = (fp >> 8n) ^ CRC64_TABLE[Number((fp ^ BigInt(byte)) & 0xffn)];
  }
  return fp;
}

/** The 8-byte little-endian fingerprint of an avsc type's Parsing Canonical Form. */
function fingerprint(type) {
  const out = Buffer.alloc(8);
  out.writeBigUInt64LE(crc64Avro(JSON.stringify(type.schema())));  // schema(): the canonical form, as JSON
  return out;
}

/** Writes one Avro type as single-object-encoded records. */
class SingleObjectEncoder {
  constructor(type) {
    this.type = type;
    this.header = Buffer.concat([MAGIC, fingerprint(type)]);
  }

  encode(value) {
    return Buffer.concat([this.header, this.type.toBuffer(value)]);
  }
}

function loadType(file) {
  return avro.Type.forSchema(JSON.parse(fs.readFileSync(path.join(SCHEMAS_DIR, file), 'utf8')));
}

// How each llm_call field becomes a batch column (schemas/llm_call_batch.v1.avsc): numbers as little-endian
// buffers, with the stand-in for a missing value; repeated strings dictionary-encoded; unique strings as arrays.
const PACKED = {
  timestamp_ms: ['int64', 0], status: ['uint8', 0], latency_ms: ['float64', NaN], ttft_ms: ['float64', NaN],
  input_tokens: ['int32', 0], output_tokens: ['int32', 0], cached_tokens: ['int32', 0],
  cost_micros: ['int64', -1], confidence: ['float64', NaN], cache_hit: ['uint8', 0], no_answer: ['uint8', 0],
  prompt_chars: ['int32', 0], response_chars: ['int32', 0],
};
const DICTIONARY = [
  'service', 'feature', 'provider', 'request_model', 'response_model', 'operation', 'error_type',
  'user_hash', 'session_id', 'experiment_id', 'variant', 'prompt_version', 'feature_version',
];
const NULLABLE = ['trace_id', 'span_id', 'prompt_sha256', 'prompt_text', 'response_text'];
const WIDTH = { int64: 8, float64: 8, int32: 4, uint8: 1 };

function packed(values, kind) {
  const out = Buffer.alloc(values.length * WIDTH[kind]);
  values.forEach((value, i) => {
    if (kind === 'int64') out.writeBigInt64LE(BigInt(value), i * 8);
    else if (kind === 'float64') out.writeDoubleLE(value, i * 8);
    else if (kind === 'int32') out.writeInt32LE(value, i * 4);
    else out.writeUInt8(value, i);
  });
  return out;
}

function dictionary(values) {
  const index = new Map();
  const codes = values.map((v) => {
    if (v === null) return -1;
    if (!index.has(v)) index.set(v, index.size);
    return index.get(v);
  });
  return { values: [...index.keys()], codes: packed(codes, 'int32') };
}

/** Encodes calls (plain objects named as llm_call's fields) as single llm_call or columnar llm_call_batch. */
class CallEncoder {
  constructor() {
    this.callType = loadType('llm_call.v1.avsc');
    this.batchType = loadType('llm_call_batch.v1.avsc');
    this.calls = new SingleObjectEncoder(this.callType);
    this.batches = new SingleObjectEncoder(this.batchType);
    this.fields = this.callType.fields;
    this.statusCodes = new Map(this.callType.field('status').type.symbols.map((s, i) => [s, i]));
    const placed = new Set([...Object.keys(PACKED), ...DICTIONARY, ...NULLABLE, 'event_id', 'labels']);
    for (const field of this.fields) {
      if (!placed.has(field.name) || !this.batchType.field(field.name)) {
        throw new Error(`llm_call field ${field.name} has no batch column here`);
      }
    }
  }

  /** A complete llm_call: the fields given, the contract's defaults for the rest (null where none). */
  newCall(fields) {
    const call = {};
    for (const field of this.fields) {
      const given = fields[field.name];
      call[field.name] = given === undefined ? (field.defaultValue() ?? null) : given;
    }
    return call;
  }

  encodeCall(call) {
    return this.calls.encode(call);
  }

  encodeBatch(producerId, calls) {
    const batch = { producer_id: producerId, count: calls.length, event_id: calls.map((c) => c.event_id) };
    for (const [name, [kind, missing]] of Object.entries(PACKED)) {
      batch[name] = packed(calls.map((c) => {
        const value = c[name];
        if (value === null || value === undefined) return missing;
        if (name === 'status') return this.statusCodes.get(value);
        return typeof value === 'boolean' ? Number(value) : value;
      }), kind);
    }
    for (const name of DICTIONARY) batch[name] = dictionary(calls.map((c) => c[name] ?? null));
    for (const name of NULLABLE) {
      const values = calls.map((c) => c[name] ?? null);
      batch[name] = values.some((v) => v !== null) ? values : null;
    }
    const labels = calls.map((c) => c.labels || {});
    batch.labels = labels.some((m) => Object.keys(m).length) ? labels : null;
    return this.batches.encode(batch);
  }
}

module.exports = { CallEncoder, SingleObjectEncoder, crc64Avro, fingerprint, SCHEMAS_DIR };
