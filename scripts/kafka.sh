#!/usr/bin/env bash
# scripts/kafka.sh — a single-node KRaft Apache Kafka for tests, without Docker.
#
#   scripts/kafka.sh up      fetch the broker (cached), format, start, wait until it answers a
#                            metadata request, print `export PGOUTBOX_TEST_KAFKA_BROKERS=127.0.0.1:<port>`
#   scripts/kafka.sh env     reprint that line (exit 1 when the broker is not running)
#   scripts/kafka.sh status  say whether the broker runs (exit 0) or not (exit 3)
#   scripts/kafka.sh down    stop the broker this state dir started (pid file); its data is kept,
#                            so a later `up` restarts it on the same ports with the same topics
#   scripts/kafka.sh clean   down, then delete the state dir
#
# Typical use:  kafka=$(scripts/kafka.sh up) && eval "$kafka" && go test ./sink/...
#
# Environment:
#   PGOUTBOX_CACHE      jar cache, outside the checkout (default $HOME/.cache/pgoutbox)
#   PGOUTBOX_KAFKA_DIR  state dir: config, KRaft log dir, logs, pid, env (default /tmp/pgoutbox-kafka);
#                       use a different one to run a second, independent broker
#   PGOUTBOX_KAFKA_HEAP JVM heap flags (default "-Xms256m -Xmx512m")
#   PGOUTBOX_KAFKA_WAIT seconds to wait for the broker to answer (default 90)
#   PGOUTBOX_KAFKA_PORT listen on this port instead of a free one (the start fails if it is taken)
#   PGOUTBOX_KAFKA_ADVERTISED
#                       host:port the broker tells clients to connect to (default 127.0.0.1:<port>),
#                       e.g. a proxy in front of it for fault tests; `up` and `env` print it
#
# The Kafka version is pinned in scripts/kafka/pom.xml (kafka.version). Needs Java 17+ and Maven.
# All progress goes to stderr; stdout carries only the export line, for `env=$(... up) && eval "$env"`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pom="$here/kafka/pom.xml"
ready_src="$here/kafka/KafkaReady.java"
cache="${PGOUTBOX_CACHE:-$HOME/.cache/pgoutbox}"
state="${PGOUTBOX_KAFKA_DIR:-/tmp/pgoutbox-kafka}"
heap="${PGOUTBOX_KAFKA_HEAP:--Xms256m -Xmx512m}"
wait_s="${PGOUTBOX_KAFKA_WAIT:-90}"
svc_name=kafka.sh
svc_pid=kafka.pid
# shellcheck source=lib/service.sh
. "$here/lib/service.sh"

kafka_version() {
	sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom" | head -n1
}

# libs_dir fetches the broker classpath once per pom content into the cache and prints its path.
libs_dir() {
	local sum dir
	sum="$(sha256sum "$pom" | cut -c1-12)"
	dir="$cache/kafka-$(kafka_version)-$sum"
	if [[ ! -f "$dir/.complete" ]]; then
		command -v java >/dev/null || die "java not found (Java 17+ is needed)"
		command -v mvn >/dev/null || die "mvn not found (Maven is needed to fetch the broker)"
		log "fetching kafka $(kafka_version) into $dir (once)"
		rm -rf "$dir.tmp"
		mkdir -p "$dir.tmp"
		mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies \
			-DoutputDirectory="$dir.tmp/libs" -DincludeScope=runtime >&2 ||
			die "mvn dependency:copy-dependencies failed"
		touch "$dir.tmp/.complete"
		rm -rf "$dir"
		mv "$dir.tmp" "$dir"
	fi
	echo "$dir/libs"
}

# running succeeds when the pid file names a live JVM started with this state dir's config.
running() {
	local pid
	[[ -f "$state/kafka.pid" ]] || return 1
	pid="$(cat "$state/kafka.pid")"
	[[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$state/server.properties"
}

env_line() { echo "export PGOUTBOX_TEST_KAFKA_BROKERS=$(cat "$state/advertised" 2>/dev/null || echo "127.0.0.1:$(cat "$state/port")")"; }

write_config() {
	local port="$1" cport="$2"
	cat >"$state/server.properties" <<EOF
# written by scripts/kafka.sh
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://${PGOUTBOX_KAFKA_ADVERTISED:-127.0.0.1:$port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$state/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
	cat >"$state/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $state/logs/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
EOF
}

cmd_up() {
	lock_state
	if running; then
		env_line
		return 0
	fi
	local libs attempt
	libs="$(libs_dir)"
	mkdir -p "$state/logs"
	# A port can still be taken between the check and the broker's bind: then the broker exits at once
	# and start_broker returns 75; try again with fresh ports.
	local rc
	for attempt in 1 2 3; do
		start_broker "$libs" && return 0 || rc=$?
		[[ $rc -eq 75 ]] || die "broker did not start (logs in $state/logs)"
		[[ -z "${PGOUTBOX_KAFKA_PORT:-}" ]] || die "port $PGOUTBOX_KAFKA_PORT (PGOUTBOX_KAFKA_PORT) is taken"
		log "ports taken meanwhile (attempt $attempt); retrying with fresh ports"
		rm -f "$state/port" "$state/cport"
	done
	die "broker could not bind its ports after 3 attempts (logs in $state/logs)"
}

start_broker() {
	local libs="$1" port cport id pid
	# Reuse the previous ports when they are free, so clients that knew this broker find it again.
	port="$(cat "$state/port" 2>/dev/null || true)"
	cport="$(cat "$state/cport" 2>/dev/null || true)"
	if [[ -n "${PGOUTBOX_KAFKA_PORT:-}" && "$port" != "$PGOUTBOX_KAFKA_PORT" ]]; then
		[[ "$PGOUTBOX_KAFKA_PORT" =~ ^[0-9]+$ ]] || die "PGOUTBOX_KAFKA_PORT=$PGOUTBOX_KAFKA_PORT is not a port number"
		rm -rf "$state/data" # a broker's identity is tied to its listeners: start afresh
		port="$PGOUTBOX_KAFKA_PORT"
		cport="$(free_port "$port")"
	fi
	if [[ -z "$port" || -z "$cport" ]] || port_in_use "$port" || port_in_use "$cport"; then
		[[ -z "${PGOUTBOX_KAFKA_PORT:-}" ]] || die "port $PGOUTBOX_KAFKA_PORT (PGOUTBOX_KAFKA_PORT) is taken"
		if [[ -f "$state/data/meta.properties" ]]; then
			log "previous ports are taken; reformatting $state/data"
			rm -rf "$state/data"
		fi
		port="$(free_port)"
		cport="$(free_port "$port")"
	fi
	echo "$port" >"$state/port"
	echo "$cport" >"$state/cport"
	if [[ -n "${PGOUTBOX_KAFKA_ADVERTISED:-}" ]]; then
		[[ "$PGOUTBOX_KAFKA_ADVERTISED" =~ ^[A-Za-z0-9._-]+:[0-9]+$ ]] ||
			die "PGOUTBOX_KAFKA_ADVERTISED=$PGOUTBOX_KAFKA_ADVERTISED is not host:port"
		echo "$PGOUTBOX_KAFKA_ADVERTISED" >"$state/advertised"
	else
		rm -f "$state/advertised"
	fi
	write_config "$port" "$cport"

	local java_opts=(-Djava.awt.headless=true -Dlog4j2.configurationFile="$state/log4j2.properties"
		-Dkafka.logs.dir="$state/logs")
	if [[ ! -f "$state/data/meta.properties" ]]; then
		id="-"
		while [[ "$id" == -* ]]; do
			id="$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
		done
		log "formatting $state/data (cluster $id)"
		java -Xmx256m "${java_opts[@]}" -cp "$libs/*" kafka.tools.StorageTool \
			format -t "$id" -c "$state/server.properties" >"$state/logs/format.out" 2>&1 ||
			{ cat "$state/logs/format.out" >&2; die "format failed"; }
	fi

	log "starting kafka $(kafka_version) on 127.0.0.1:$port (controller $cport), state in $state"
	# shellcheck disable=SC2086 # $heap holds several JVM flags
	pid="$(start_detached "$state/logs/kafka.out" java $heap -XX:+UseG1GC "${java_opts[@]}" -cp "$libs/*" kafka.Kafka "$state/server.properties")"
	java -Xmx128m -cp "$libs/*" "$ready_src" "127.0.0.1:$port" "$wait_s" >"$state/logs/ready.out" 2>&1 &
	local ready=$! rc
	while kill -0 "$ready" 2>/dev/null; do
		if ! kill -0 "$pid" 2>/dev/null; then # the broker died while starting
			kill "$ready" 2>/dev/null || true
			wait "$ready" 2>/dev/null || true
			if grep -q "Address already in use" "$state/logs/kafka.out" "$state/logs/server.log" 2>/dev/null; then
				return 75
			fi
			tail -n 30 "$state/logs/kafka.out" "$state/logs/server.log" >&2 2>/dev/null || true
			return 1
		fi
		sleep 0.3
	done
	wait "$ready" && rc=0 || rc=$?
	if [[ $rc -ne 0 ]]; then
		cat "$state/logs/ready.out" >&2
		tail -n 30 "$state/logs/kafka.out" "$state/logs/server.log" >&2 2>/dev/null || true
		kill "$pid" 2>/dev/null || true
		if grep -q "Address already in use" "$state/logs/kafka.out" "$state/logs/server.log" 2>/dev/null; then
			return 75
		fi
		die "broker did not answer within ${wait_s}s (logs in $state/logs)"
	fi
	running || die "broker exited (logs in $state/logs)"
	env_line >"$state/env"
	log "ready (pid $pid)"
	env_line
}

cmd_down() {
	[[ -d "$state" ]] || { log "not running"; return 0; }
	lock_state
	if running; then
		stop_pid "$(cat "$state/kafka.pid")" 30 broker
	else
		log "not running"
	fi
	rm -f "$state/kafka.pid"
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
env) cmd_env ;;
status) cmd_status ;;
clean) cmd_clean ;;
*)
	echo "usage: $0 up|down|env|status|clean" >&2
	exit 2
	;;
esac
