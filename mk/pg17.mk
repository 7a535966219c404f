# The PostgreSQL 17 half of the test matrix: `make test` runs against the services-up cluster (PostgreSQL 15
# from Debian); test-pg17 runs the integration packages against PostgreSQL 17.6 (Maven Central's binaries,
# fetched once and cached outside the checkout by scripts/postgres.sh) in a cluster of its own, removed
# afterwards. Private clusters the tests start are PostgreSQL 17 too. Needs the services-up environment
# (Kafka) and Java + Maven the first time:
#   svc=$(make -s services-up) && eval "$svc" && make test-pg17
GO           ?= go
PG17_PKGS    ?= ./outbox/... ./replication/... ./decoder/... ./cmd/pgoutbox/... ./sink/...
PG17_TIMEOUT ?= 20m

.PHONY: test-pg17

## test-pg17: the integration packages (outbox, replication, decoder, the daemon, sinks) against PostgreSQL 17 (~3 min)
test-pg17:
	@set -e; dir=$$(mktemp -d /tmp/pgoutbox-pg17.XXXXXX); \
	trap "PGOUTBOX_PG_DIR=$$dir scripts/postgres.sh down >/dev/null 2>&1 || true" EXIT; \
	bin=$$(PGOUTBOX_PG_MAJOR=17 scripts/postgres.sh fetch); eval "$$bin"; \
	svc=$$(PGOUTBOX_PG_MAJOR=17 PGOUTBOX_PG_DIR=$$dir scripts/postgres.sh up); eval "$$svc"; \
	export PGOUTBOX_PG_MAJOR=17; \
	$(GO) test -count=1 -timeout $(PG17_TIMEOUT) $(PG17_PKGS)
