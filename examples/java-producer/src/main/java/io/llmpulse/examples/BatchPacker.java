package io.llmpulse.examples;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;

/**
 * Packs llm_call records into one llm_call_batch record, the columnar layout of schemas/llm_call_batch.v1.avsc:
 * numbers as little-endian buffers (NaN or -1 where a call has no value), repeated strings dictionary-encoded
 * (values + int32 codes, -1 = null), unique strings as plain arrays (null when no call has one).
 */
final class BatchPacker {
    /** How a numeric column is packed; {@code missing} stands in for a null. */
    private enum Packed {
        INT64(8), FLOAT64(8), INT32(4), UINT8(1);

        final int width;

        Packed(int width) {
            this.width = width;
        }
    }

    private record Numeric(Packed type, Number missing) {}

    private static final Map<String, Numeric> PACKED = Map.ofEntries(
            Map.entry("timestamp_ms", new Numeric(Packed.INT64, 0L)),
            Map.entry("status", new Numeric(Packed.UINT8, 0)),
            Map.entry("latency_ms", new Numeric(Packed.FLOAT64, Double.NaN)),
            Map.entry("ttft_ms", new Numeric(Packed.FLOAT64, Double.NaN)),
            Map.entry("input_tokens", new Numeric(Packed.INT32, 0)),
            Map.entry("output_tokens", new Numeric(Packed.INT32, 0)),
            Map.entry("cached_tokens", new Numeric(Packed.INT32, 0)),
            Map.entry("cost_micros", new Numeric(Packed.INT64, -1L)),
            Map.entry("confidence", new Numeric(Packed.FLOAT64, Double.NaN)),
            Map.entry("cache_hit", new Numeric(Packed.UINT8, 0)),
            Map.entry("no_answer", new Numeric(Packed.UINT8, 0)),
            Map.entry("prompt_chars", new Numeric(Packed.INT32, 0)),
            Map.entry("response_chars", new Numeric(Packed.INT32, 0)));
    private static final List<String> DICTIONARY = List.of(
            "service", "feature", "provider", "request_model", "response_model", "operation", "error_type",
            "user_hash", "session_id", "experiment_id", "variant", "prompt_version", "feature_version");
    private static final List<String> NULLABLE = List.of(
            "trace_id", "span_id", "prompt_sha256", "prompt_text", "response_text");

    private final Schema batchSchema;
    private final Schema stringColumn;
    private final Schema statusEnum;

    BatchPacker(Schema callSchema, Schema batchSchema) {
        this.batchSchema = batchSchema;
        this.stringColumn = batchSchema.getField("service").schema();
        this.statusEnum = callSchema.getField("status").schema();
        Set<String> placed = new HashSet<>(PACKED.keySet());
        placed.addAll(DICTIONARY);
        placed.addAll(NULLABLE);
        placed.addAll(List.of("event_id", "labels"));
        for (Schema.Field field : callSchema.getFields()) {
            if (!placed.contains(field.name()) || batchSchema.getField(field.name()) == null) {
                throw new IllegalStateException("llm_call field " + field.name() + " has no batch column here");
            }
        }
    }

    GenericRecord pack(String producerId, List<GenericRecord> calls) {
        int count = calls.size();
        GenericData.Record batch = new GenericData.Record(batchSchema);
        batch.put("producer_id", producerId);
        batch.put("count", count);
        List<String> eventIds = new ArrayList<>(count);
        for (GenericRecord call : calls) {
            eventIds.add(call.get("event_id").toString());
        }
        batch.put("event_id", eventIds);
        PACKED.forEach((name, column) -> batch.put(name, packed(calls, name, column)));
        for (String name : DICTIONARY) {
            batch.put(name, dictionary(calls, name));
        }
        for (String name : NULLABLE) {
            batch.put(name, nullable(calls, name));
        }
        List<Object> labels = new ArrayList<>(count);
        boolean anyLabels = false;
        for (GenericRecord call : calls) {
            Map<?, ?> map = (Map<?, ?>) call.get("labels");
            Map<String, String> copy = new LinkedHashMap<>();
            if (map != null) {
                map.forEach((k, v) -> copy.put(k.toString(), v.toString()));
            }
            anyLabels |= !copy.isEmpty();
            labels.add(copy);
        }
        batch.put("labels", anyLabels ? labels : null);
        return batch;
    }

    private ByteBuffer packed(List<GenericRecord> calls, String name, Numeric column) {
        ByteBuffer out = ByteBuffer.allocate(calls.size() * column.type().width).order(ByteOrder.LITTLE_ENDIAN);
        for (GenericRecord call : calls) {
            Object value = call.get(name);
            if (value == null) {
                value = column.missing();
            } else if (value instanceof Boolean flag) {
                value = flag ? 1 : 0;
            } else if (name.equals("status")) {
                value = statusEnum.getEnumOrdinal(value.toString());
            }
            Number number = (Number) value;
            switch (column.type()) {
                case INT64 -> out.putLong(number.longValue());
                case FLOAT64 -> out.putDouble(number.doubleValue());
                case INT32 -> out.putInt(number.intValue());
                case UINT8 -> out.put((byte) number.intValue());
            }
        }
        return out.flip();
    }

    private GenericRecord dictionary(List<GenericRecord> calls, String name) {
        Map<String, Integer> index = new LinkedHashMap<>();
        ByteBuffer codes = ByteBuffer.allocate(calls.size() * 4).order(ByteOrder.LITTLE_ENDIAN);
        for (GenericRecord call : calls) {
            Object value = call.get(name);
            codes.putInt(value == null ? -1 : index.computeIfAbsent(value.toString(), k -> index.size()));
        }
        GenericData.Record column = new GenericData.Record(stringColumn);
        column.put("values", new ArrayList<>(index.keySet()));
        column.put("codes", codes.flip());
        return column;
    }

    private static List<String> nullable(List<GenericRecord> calls, String name) {
        List<String> values = new ArrayList<>(calls.size());
        boolean any = false;
        for (GenericRecord call : calls) {
            Object value = call.get(name);
            any |= value != null;
            values.add(value == null ? null : value.toString());
        }
        return any ? values : null;
    }
}
