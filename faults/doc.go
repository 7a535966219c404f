// Package faults is pgoutbox's fault-injection suite. It has no library code: its tests (build tag
// `faults`) drive the real `pgoutbox` binary against real PostgreSQL and Kafka, inject crashes,
// restarts, partitions and bad input, and check the guarantees I1–I5 of the design with an oracle.
//
//	svc=$(make -s services-up) && eval "$svc"
//	make test-faults        # go test -tags faults -count=1 -timeout 25m ./faults/
//
// Every scenario appends a row (messages, lost, phantom, duplicated, order violations, recovery time)
// to FAULTS.md at the repository root, which the suite rewrites after each run.
package faults
