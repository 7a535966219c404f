#!/usr/bin/env bash
# scripts/nats.sh — a single nats-server with JetStream on 127.0.0.1, for tests and local runs.
#
#   scripts/nats.sh up      build nats-server (cached), start it, wait until it answers, print
#                           `export PGOUTBOX_TEST_NATS_URL=nats://127.0.0.1:<port>`
#   scripts/nats.sh env     reprint that line (exit 1 when the server is not running)
#   scripts/nats.sh status  say whether the server runs (exit 0) or not (exit 3)
#   scripts/nats.sh down    stop the server this state dir started (pid file); its JetStream data is
#                           kept, so a later `up` restarts it on the same port with the same streams
#   scripts/nats.sh clean   down, then delete the state dir
#
# Typical use:  svc=$(scripts/nats.sh up) && eval "$svc" && go test ./sink/nats/
#
# The server is built from the Go module github.com/nats-io/nats-server/v2 at the version go.mod pins
# (a `tool` dependency), not taken from Debian: Debian's nats-server is 2.9, older than the in-process
# server the unit tests embed, and the module proxy is the one source every machine reaches. One
# pinned version serves both, and moves with go.mod. The build (~1 min the first time) is cached.
#
# Environment:
#   PGOUTBOX_CACHE     binary cache, outside the checkout (default $HOME/.cache/pgoutbox)
#   PGOUTBOX_NATS_DIR  state dir: config, JetStream store, log, pid, env (default /tmp/pgoutbox-nats);
#                      use a different one to run a second, independent server
#   PGOUTBOX_NATS_PORT listen on this port instead of a free one (the start fails if it is taken)
#   PGOUTBOX_NATS_WAIT seconds to wait for the server to answer (default 30)
# All progress goes to stderr; stdout carries only the export line, for `svc=$(... up) && eval "$svc"`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cache="${PGOUTBOX_CACHE:-$HOME/.cache/pgoutbox}"
state="${PGOUTBOX_NATS_DIR:-/tmp/pgoutbox-nats}"
wait_s="${PGOUTBOX_NATS_WAIT:-30}"
module=github.com/nats-io/nats-server/v2

log() { echo "nats.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# server_bin builds nats-server at the version go.mod pins, once per version, and prints its path.
server_bin() {
	local version bin
	command -v go >/dev/null || die "go not found (the server is built from the Go module $module)"
	version="$(cd "$root" && go list -m -f '{{.Version}}' "$module")" || die "go.mod does not pin $module"
	bin="$cache/nats-server-$version"
	if [[ ! -x "$bin" ]]; then
		log "building nats-server $version into $bin (once)"
		mkdir -p "$cache"
		(cd "$root" && go build -o "$bin.tmp" "$module") >&2 ||
			die "go build $module failed"
		mv "$bin.tmp" "$bin"
	fi
	echo "$bin"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port picks a port below the kernel's ephemeral range (32768+), where outgoing connections of
# concurrent tests would otherwise take it between this check and the server's bind.
free_port() {
	local p i
	for i in $(seq 1 200); do
		p=$((10000 + RANDOM % 22000))
		if ! port_in_use "$p"; then
			echo "$p"
			return 0
		fi
	done
	die "no free port found on 127.0.0.1"
}

# running succeeds when the pid file names a live nats-server started with this state dir's config.
running() {
	local pid
	[[ -f "$state/nats.pid" ]] || return 1
	pid="$(cat "$state/nats.pid")"
	[[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$state/nats.conf"
}

env_line() { echo "export PGOUTBOX_TEST_NATS_URL=nats://127.0.0.1:$(cat "$state/port")"; }

write_config() {
	local port="$1"
	cat >"$state/nats.conf" <<EOF
# written by scripts/nats.sh
server_name: pgoutbox_test
listen: 127.0.0.1:$port
max_payload: 1MB
jetstream {
  store_dir: "$state/jetstream"
  max_memory_store: 256MB
  max_file_store: 4GB
}
EOF
}

# answers succeeds when the server on port sends its INFO line.
answers() {
	local line
	exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
	read -r -t 2 line <&3 || { exec 3<&-; return 1; }
	exec 3<&-
	[[ "$line" == INFO* ]]
}

cmd_up() {
	mkdir -p "$state"
	exec 9>"$state/.lock"
	flock 9
	if running; then
		env_line
		return 0
	fi
	local bin port pid i
	bin="$(server_bin)"
	port="$(cat "$state/port" 2>/dev/null || true)"
	if [[ -n "${PGOUTBOX_NATS_PORT:-}" ]]; then
		[[ "$PGOUTBOX_NATS_PORT" =~ ^[0-9]+$ ]] || die "PGOUTBOX_NATS_PORT=$PGOUTBOX_NATS_PORT is not a port number"
		port="$PGOUTBOX_NATS_PORT"
		! port_in_use "$port" || die "port $port (PGOUTBOX_NATS_PORT) is taken"
	elif [[ -z "$port" ]] || port_in_use "$port"; then
		port="$(free_port)"
	fi
	echo "$port" >"$state/port"
	write_config "$port"
	log "starting $("$bin" --version) on 127.0.0.1:$port, state in $state"
	rm -f "$state/nats.pid"
	# bash -c writes its own pid, then execs the server: the pid file names the server itself.
	# setsid detaches it from the caller's process group so it outlives the calling shell or test.
	setsid bash -c 'echo $$ >"$0/nats.pid.tmp" && mv "$0/nats.pid.tmp" "$0/nats.pid" && exec "$@"' "$state" \
		"$bin" -c "$state/nats.conf" -l "$state/nats.log" </dev/null >"$state/nats.out" 2>&1 9>&- &
	for i in $(seq 1 50); do
		[[ -s "$state/nats.pid" ]] && break
		sleep 0.1
	done
	pid="$(cat "$state/nats.pid")"
	for i in $(seq 1 $((wait_s * 10))); do
		if ! kill -0 "$pid" 2>/dev/null; then
			tail -n 20 "$state/nats.out" "$state/nats.log" >&2 2>/dev/null || true
			die "nats-server exited while starting (logs in $state)"
		fi
		if answers "$port" && grep -q "Server is ready" "$state/nats.log" 2>/dev/null; then
			env_line >"$state/env"
			log "ready (pid $pid)"
			env_line
			return 0
		fi
		sleep 0.1
	done
	kill "$pid" 2>/dev/null || true
	die "nats-server did not answer within ${wait_s}s (logs in $state)"
}

cmd_down() {
	[[ -d "$state" ]] || { log "not running"; return 0; }
	exec 9>"$state/.lock"
	flock 9
	if ! running; then
		rm -f "$state/nats.pid"
		log "not running"
		return 0
	fi
	local pid i
	pid="$(cat "$state/nats.pid")"
	log "stopping nats-server pid $pid"
	kill -TERM "$pid"
	for i in $(seq 1 150); do
		[[ -d "/proc/$pid" ]] || break
		sleep 0.1
	done
	if [[ -d "/proc/$pid" ]]; then
		log "nats-server did not stop in 15s; killing pid $pid"
		kill -KILL "$pid" 2>/dev/null || true
		sleep 0.2
	fi
	rm -f "$state/nats.pid"
}

cmd_env() {
	running || die "not running (start it with scripts/nats.sh up)"
	cat "$state/env"
}

cmd_status() {
	if running; then
		log "running: pid $(cat "$state/nats.pid"), 127.0.0.1:$(cat "$state/port"), state in $state"
		return 0
	fi
	log "not running (state dir $state)"
	return 3
}

cmd_clean() {
	cmd_down
	rm -rf "$state"
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
