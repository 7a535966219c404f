# pgoutbox — run `make test` with services up (see README). CI runs .ci/run, which starts them.
GO        ?= go
PKGS      ?= ./...
TIMEOUT   ?= 20m

.PHONY: test test-unit test-integration bench fuzz lint fmt services-up services-down

## test: every test (unit + integration against real PostgreSQL and Kafka); needs `make services-up` env
test:
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) test -race -count=1 -timeout $(TIMEOUT) $(PKGS)
	$(GO) test -count=1 -run 'Allocs' ./outbox/internal/watermark/  # allocation counts: only without -race

## test-unit: tests that need no services (integration tests skip)
test-unit:
	$(GO) test -count=1 -short -timeout 5m $(PKGS)

## test-integration: only the integration packages
test-integration:
	$(GO) test -count=1 -timeout $(TIMEOUT) -run 'Integration|Relay|Enqueue|Schema|Goose|Kafka|Slot|Stream' $(PKGS)

## bench: go benchmarks (benchstat-friendly)
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 1 -timeout 30m $(PKGS)

## fuzz: the pgoutput decoder fuzzer for 60s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime 60s ./decoder/

lint:
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l .)" || { gofmt -l .; exit 1; }

fmt:
	gofmt -w .

## services-up: start PostgreSQL, Kafka, NATS and RabbitMQ for tests and print their env; use it as
##   svc=$$(make -s services-up) && eval "$$svc"   (a failure stops the chain; eval "$$(…)" would hide it)
services-up:
	@scripts/postgres.sh up
	@if [ -x scripts/kafka.sh ]; then scripts/kafka.sh up; fi
	@scripts/nats.sh up
	@scripts/rabbitmq.sh up

services-down:
	@scripts/rabbitmq.sh down
	@scripts/nats.sh down
	@if [ -x scripts/kafka.sh ]; then scripts/kafka.sh down; fi
	@scripts/postgres.sh down

# Targets of the benchmark suite and the fault-injection suite (test-faults), kept in mk/.
-include mk/*.mk
