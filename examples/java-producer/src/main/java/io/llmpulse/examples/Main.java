package io.llmpulse.examples;

import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.ThreadLocalRandom;

import org.apache.avro.generic.GenericRecord;
import org.apache.avro.generic.GenericRecordBuilder;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Sends single llm_call records and llm_call_batch records to llmpulse's calls topic, keyed by service.
 *
 * <pre>java -jar target/llmpulse-java-producer.jar [--service NAME] [--calls N] [--batches M] [--batch-size K]
 *     [--topic T] [--dry-run]</pre>
 * Kafka from KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:9092); topic from --topic, else LLMPULSE_TOPICS__CALLS or
 * LLMPULSE_TOPIC_CALLS, else llm-calls. With --dry-run nothing is sent: each record is printed as
 * "call HEX" or "batch HEX", one a line.
 */
public final class Main {
    private static final String[][] MODELS = {
        {"openai", "gpt-4o"}, {"openai", "gpt-4o-mini"}, {"anthropic", "claude-3-5-haiku-latest"}};

    private Main() {}

    public static void main(String[] args) throws Exception {
        Map<String, String> opts = parse(args);
        String service = opts.getOrDefault("service", "java-example");
        int calls = Integer.parseInt(opts.getOrDefault("calls", "5"));
        int batches = Integer.parseInt(opts.getOrDefault("batches", "2"));
        int batchSize = Integer.parseInt(opts.getOrDefault("batch-size", "100"));
        String topic = opts.getOrDefault("topic", env("LLMPULSE_TOPICS__CALLS", env("LLMPULSE_TOPIC_CALLS", "llm-calls")));
        String producerId = "java-" + UUID.randomUUID();

        CallEncoder encoder = new CallEncoder();
        List<byte[]> records = new ArrayList<>();
        List<String> kinds = new ArrayList<>();
        int n = 0;
        for (int i = 0; i < calls; i++) {
            records.add(encoder.encodeCall(exampleCall(encoder, service, n++)));
            kinds.add("call");
        }
        for (int b = 0; b < batches; b++) {
            List<GenericRecord> batch = new ArrayList<>(batchSize);
            for (int i = 0; i < batchSize; i++) {
                batch.add(exampleCall(encoder, service, n++));
            }
            records.add(encoder.encodeBatch(producerId, batch));
            kinds.add("batch");
        }

        if (opts.containsKey("dry-run")) {
            HexFormat hex = HexFormat.of();
            for (int i = 0; i < records.size(); i++) {
                System.out.println(kinds.get(i) + " " + hex.formatHex(records.get(i)));
            }
            return;
        }
        Properties config = new Properties();
        config.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"));
        config.put(ProducerConfig.ACKS_CONFIG, "all");
        config.put(ProducerConfig.LINGER_MS_CONFIG, 5);
        try (KafkaProducer<String, byte[]> producer =
                     new KafkaProducer<>(config, new StringSerializer(), new ByteArraySerializer())) {
            for (byte[] value : records) {
                producer.send(new ProducerRecord<>(topic, service, value));
            }
            producer.flush();  // close() would too; flush first so a delivery failure surfaces here
        }
        System.err.printf("sent %d single calls and %d batches of %d calls for service %s to %s%n",
                calls, batches, batchSize, service, topic);
    }

    /** A plausible call; every few calls one sets the optional fields (error, streaming, labels, text). */
    static GenericRecord exampleCall(CallEncoder encoder, String service, int i) {
        ThreadLocalRandom random = ThreadLocalRandom.current();
        String[] model = MODELS[i % MODELS.length];
        double latency = 200 + random.nextDouble(800);
        GenericRecordBuilder call = encoder.newCall()
                .set("event_id", UUID.randomUUID().toString().replace("-", ""))
                .set("timestamp_ms", System.currentTimeMillis())
                .set("service", service)
                .set("provider", model[0])
                .set("request_model", model[1])
                .set("response_model", model[1])
                .set("status", encoder.status("ok"))
                .set("latency_ms", latency)
                .set("input_tokens", 100 + random.nextInt(900))
                .set("output_tokens", 20 + random.nextInt(300))
                .set("prompt_chars", 400 + random.nextInt(4000))
                .set("trace_id", UUID.randomUUID().toString().replace("-", ""));
        if (i % 2 == 0) {
            call.set("ttft_ms", latency / 4).set("feature", "résumé-summary");
        }
        if (i % 3 == 0) {
            call.set("cost_micros", 1500L + i).set("confidence", 0.85).set("user_hash", "u" + (i % 7));
        }
        if (i % 5 == 0) {
            call.set("labels", Map.of("region", "eu-west-1")).set("experiment_id", "prompt-v2").set("variant", "B");
        }
        if (i % 11 == 0) {
            call.set("status", encoder.status("rate_limited")).set("error_type", "RateLimitError:429");
        }
        return call.build();
    }

    private static Map<String, String> parse(String[] args) {
        Map<String, String> opts = new java.util.HashMap<>();
        for (int i = 0; i < args.length; i++) {
            String arg = args[i].replaceFirst("^--?", "");
            if (arg.equals("dry-run")) {
                opts.put(arg, "true");
            } else if (List.of("service", "calls", "batches", "batch-size", "topic").contains(arg) && i + 1 < args.length) {
                opts.put(arg, args[++i]);
            } else {
                System.err.println("usage: java -jar llmpulse-java-producer.jar [--service NAME] [--calls N] "
                        + "[--batches M] [--batch-size K] [--topic T] [--dry-run]");
                System.exit(arg.equals("help") ? 0 : 2);
            }
        }
        return opts;
    }

    private static String env(String name, String fallback) {
        String value = System.getenv(name);
        return value == null || value.isBlank() ? fallback : value;
    }
}
