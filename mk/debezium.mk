# The debezium-outbox record format checked against the real Debezium Outbox Event Router.

.PHONY: test-debezium

## test-debezium: the Kafka sink's debezium-outbox format against Debezium 3.6.1's Outbox Event Router (the bench's
## Debezium peer, bench/peers/debezium) on the same messages: same key, value and router headers. Needs the services
## (PostgreSQL, Kafka), Java 17+, Maven and, the first time, Maven Central. Not run by CI.
test-debezium:
	@cp=$$(bench/peers/debezium/build.sh) && \
		PGOUTBOX_TEST_DEBEZIUM_CLASSPATH="$$cp" $(GO) test -tags debezium -count=1 -run TestDebeziumRouterParity -v ./sink/kafka/
