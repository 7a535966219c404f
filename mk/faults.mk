# Fault-injection suite (issue 7): the real pgoutbox binary against real PostgreSQL and Kafka, with
# crashes, restarts, partitions and bad input; it rewrites FAULTS.md. Needs the services-up environment,
# Java (it starts Kafka brokers of its own) and the PostgreSQL binaries (private clusters).
#   svc=$(make -s services-up) && eval "$svc" && make test-faults
GO             ?= go
FAULTS_TIMEOUT ?= 25m
FAULTS_FLAGS   ?=

.PHONY: test-faults

## test-faults: the fault-injection suite (~10 min on 2 cores); results in FAULTS.md
test-faults:
	$(GO) vet -tags faults ./faults/ ./internal/tcpproxy/
	$(GO) test -count=1 -timeout 2m ./internal/tcpproxy/
	$(GO) test -tags faults -count=1 -timeout $(FAULTS_TIMEOUT) $(FAULTS_FLAGS) ./faults/
