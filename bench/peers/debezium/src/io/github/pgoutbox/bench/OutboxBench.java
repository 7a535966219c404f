package io.github.pgoutbox.bench;

import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.ByteArraySerializer;

import io.debezium.config.CommonConnectorConfig;
import io.debezium.engine.ChangeEvent;
import io.debezium.engine.DebeziumEngine;
import io.debezium.engine.Header;
import io.debezium.engine.format.Binary;
import io.debezium.engine.format.JsonByteArray;
import io.debezium.engine.format.KeyValueHeaderChangeEventFormat;
import io.debezium.engine.format.SimpleString;

/**
 * The Debezium peer of pgoutbox's benchmark: Debezium embedded with the PostgreSQL connector and the Outbox Event
 * Router reads the outbox table and produces to Kafka the way Debezium Server's Kafka sink does: for each batch the
 * engine hands over, send every record, wait for every ack, then markProcessed each record and markBatchFinished.
 *
 * <p>Usage: {@code java -cp <classpath> io.github.pgoutbox.bench.OutboxBench <file.properties>}. Keys starting with
 * {@code producer.} configure the KafkaProducer (prefix removed), every other key the engine and the connector.
 * Stdout carries JSON lines only: the effective settings at start, the batch counters at exit.
 */
public final class OutboxBench {
    private static final String PRODUCER_PREFIX = "producer.";

    private OutboxBench() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: OutboxBench <file.properties>");
            System.exit(2);
        }
        Properties all = new Properties();
        try (InputStream in = new FileInputStream(args[0])) {
            all.load(in);
        }
        Properties engineProps = new Properties();
        Properties producerProps = new Properties();
        for (String k : all.stringPropertyNames()) {
            if (k.startsWith(PRODUCER_PREFIX)) {
                producerProps.setProperty(k.substring(PRODUCER_PREFIX.length()), all.getProperty(k));
            }
            else {
                engineProps.setProperty(k, all.getProperty(k));
            }
        }
        printSettings(engineProps, producerProps);

        KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(producerProps, new ByteArraySerializer(), new ByteArraySerializer());
        KafkaSink sink = new KafkaSink(producer);
        AtomicReference<Throwable> failure = new AtomicReference<>();
        CountDownLatch finished = new CountDownLatch(1);
        DebeziumEngine<ChangeEvent<String, Object>> engine = DebeziumEngine
                .create(KeyValueHeaderChangeEventFormat.of(SimpleString.class, Binary.class, JsonByteArray.class))
                .using(engineProps)
                .notifying(sink)
                .using((success, message, error) -> {
                    if (!success) {
                        failure.set(error != null ? error : new IllegalStateException(message));
                    }
                    finished.countDown();
                })
                .build();
        ExecutorService executor = Executors.newSingleThreadExecutor();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                engine.close();
                finished.await();
            }
            catch (IOException | InterruptedException e) {
                System.err.println("OutboxBench: close: " + e);
            }
            producer.close(Duration.ofSeconds(5));
            System.out.printf("{\"event\":\"stop\",\"batches\":%d,\"records\":%d,\"max_batch\":%d}%n",
                    sink.batches.get(), sink.records.get(), sink.maxBatch.get());
            System.out.flush();
        }));
        executor.execute(engine);
        finished.await();
        Throwable err = failure.get();
        if (err != null) {
            System.err.println("OutboxBench: engine failed: " + err);
            err.printStackTrace();
            Runtime.getRuntime().halt(1);
        }
    }

    /** Prints the settings that shape batching and latency, with the connector's defaults filled in. */
    private static void printSettings(Properties engine, Properties producer) {
        System.out.printf("{\"event\":\"start\",\"poll_interval_ms\":%s,\"max_batch_size\":%s,\"max_queue_size\":%s,"
                + "\"linger_ms\":\"%s\",\"acks\":\"%s\",\"enable_idempotence\":\"%s\",\"batch_size\":\"%s\","
                + "\"offset_flush_interval_ms\":\"%s\",\"snapshot_mode\":\"%s\"}%n",
                engine.getProperty("poll.interval.ms", String.valueOf(CommonConnectorConfig.DEFAULT_POLL_INTERVAL_MILLIS)),
                engine.getProperty("max.batch.size", String.valueOf(CommonConnectorConfig.DEFAULT_MAX_BATCH_SIZE)),
                engine.getProperty("max.queue.size", String.valueOf(CommonConnectorConfig.DEFAULT_MAX_QUEUE_SIZE)),
                producer.getProperty("linger.ms", "default"), producer.getProperty("acks", "default"),
                producer.getProperty("enable.idempotence", "default"), producer.getProperty("batch.size", "default"),
                engine.getProperty("offset.flush.interval.ms", "default"), engine.getProperty("snapshot.mode", "default"));
        System.out.flush();
    }

    /** What Debezium Server's Kafka sink does with each batch: send all, wait for every ack, then commit. */
    static final class KafkaSink implements DebeziumEngine.ChangeConsumer<ChangeEvent<String, Object>> {
        private final KafkaProducer<byte[], byte[]> producer;
        final AtomicLong batches = new AtomicLong();
        final AtomicLong records = new AtomicLong();
        final AtomicLong maxBatch = new AtomicLong();

        KafkaSink(KafkaProducer<byte[], byte[]> producer) {
            this.producer = producer;
        }

        @Override
        public void handleBatch(List<ChangeEvent<String, Object>> batch, DebeziumEngine.RecordCommitter<ChangeEvent<String, Object>> committer)
                throws InterruptedException {
            List<Future<RecordMetadata>> acks = new ArrayList<>(batch.size());
            for (ChangeEvent<String, Object> r : batch) {
                RecordHeaders headers = new RecordHeaders();
                for (Header<?> h : r.headers()) {
                    headers.add(h.getKey(), bytes(h.getValue()));
                }
                acks.add(producer.send(new ProducerRecord<>(r.destination(), null, null, bytes(r.key()), bytes(r.value()), headers)));
            }
            try {
                for (int i = 0; i < batch.size(); i++) {
                    acks.get(i).get();
                    committer.markProcessed(batch.get(i));
                }
            }
            catch (ExecutionException e) {
                throw new IllegalStateException("produce to Kafka: " + e.getCause(), e.getCause());
            }
            committer.markBatchFinished();
            batches.incrementAndGet();
            records.addAndGet(batch.size());
            maxBatch.accumulateAndGet(batch.size(), Math::max);
        }

        private static byte[] bytes(Object v) {
            if (v == null) {
                return null;
            }
            if (v instanceof byte[] b) {
                return b;
            }
            if (v instanceof ByteBuffer bb) {
                byte[] b = new byte[bb.remaining()];
                bb.duplicate().get(b);
                return b;
            }
            return v.toString().getBytes(StandardCharsets.UTF_8);
        }
    }
}
