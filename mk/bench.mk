# Benchmark suite targets (cmd/pgoutbox-bench). Include from the Makefile: `include mk/bench.mk`.
# All need the services: svc=$$(make -s services-up) && eval "$$svc" first.
GO ?= go
BENCH_OUT ?= bench/

.PHONY: bench-suite bench-quick bench-micro bench-peers bench-peers-quick

## bench-suite: W1–W5 at full size (1M-message backlogs; ~20 min on 2 cores), with CPU profiles; writes $(BENCH_OUT)
bench-suite:
	$(GO) run ./cmd/pgoutbox-bench -out $(BENCH_OUT) -profile

## bench-quick: the same workloads, smaller and shorter (~5 min)
bench-quick:
	$(GO) run ./cmd/pgoutbox-bench -out $(BENCH_OUT) -quick

## bench-micro: decoder and watermark micro-benchmarks (allocations per message), embedded in BENCH.md on the next suite run
bench-micro:
	$(GO) test -run '^$$' -bench 'DecodeInsert|Tracker' -benchmem -count 3 ./decoder ./outbox/internal/watermark | tee $(BENCH_OUT)micro.txt

## bench-peers: pgoutbox run vs Debezium 3.6.1 embedded (Outbox Event Router) vs pg_recvlogical, 1M-message drain and
## live load at 1k and 5k msgs/s (~15 min); writes $(BENCH_OUT)PEERS.md and peers.json (embedded in BENCH.md).
## Needs Java 17+, Maven and, the first time, Maven Central (bench/peers/debezium/build.sh). Not run by CI.
bench-peers:
	$(GO) run ./cmd/pgoutbox-bench -peers -out $(BENCH_OUT)

## bench-peers-quick: the same with a 100k-message backlog and shorter live runs, one repeat (~5 min)
bench-peers-quick:
	$(GO) run ./cmd/pgoutbox-bench -peers -quick -repeats 1 -out $(BENCH_OUT)
