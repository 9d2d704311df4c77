package io.llmpulse.examples;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.util.List;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.generic.GenericRecordBuilder;
import org.apache.avro.message.BinaryMessageEncoder;

/**
 * Encodes LLM calls the way llmpulse reads them: Avro single-object encoding (C3 01, the 8-byte little-endian
 * CRC-64-AVRO fingerprint of the writer schema, the binary body), as Apache Avro's BinaryMessageEncoder writes it,
 * with the project's contracts (schemas/llm_call.v1.avsc, schemas/llm_call_batch.v1.avsc) packed into the jar.
 */
public final class CallEncoder {
    private final Schema callSchema = load("llm_call.v1.avsc");
    private final Schema batchSchema = load("llm_call_batch.v1.avsc");
    private final BinaryMessageEncoder<GenericRecord> callEncoder =
            new BinaryMessageEncoder<>(GenericData.get(), callSchema);
    private final BinaryMessageEncoder<GenericRecord> batchEncoder =
            new BinaryMessageEncoder<>(GenericData.get(), batchSchema);
    private final BatchPacker packer = new BatchPacker(callSchema, batchSchema);

    private static Schema load(String file) {
        String path = "/llmpulse/schemas/" + file;
        try (InputStream in = CallEncoder.class.getResourceAsStream(path)) {
            if (in == null) {
                throw new IllegalStateException(path + " is not in the jar: build with mvn package");
            }
            return new Schema.Parser().parse(in);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** A builder for one llm_call: set the fields you have, the contract's defaults fill the rest on build(). */
    public GenericRecordBuilder newCall() {
        return new GenericRecordBuilder(callSchema);
    }

    /** The status enum symbol, e.g. "ok", "error", "timeout", "rate_limited", "filtered". */
    public GenericData.EnumSymbol status(String symbol) {
        return new GenericData.EnumSymbol(callSchema.getField("status").schema(), symbol);
    }

    /** One call as a single llm_call record. */
    public byte[] encodeCall(GenericRecord call) {
        return encode(callEncoder, call);
    }

    /** Many calls as one columnar llm_call_batch record (what llmpulse's own SDK sends). */
    public byte[] encodeBatch(String producerId, List<GenericRecord> calls) {
        return encode(batchEncoder, packer.pack(producerId, calls));
    }

    private static byte[] encode(BinaryMessageEncoder<GenericRecord> encoder, GenericRecord record) {
        ByteArrayOutputStream out = new ByteArrayOutputStream(256);
        try {
            encoder.encode(record, out);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return out.toByteArray();
    }
}
