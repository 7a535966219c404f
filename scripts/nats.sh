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
svc_name=nats.sh
svc_pid=nats.pid
# shellcheck source=lib/service.sh
. "$here/lib/service.sh"

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
	lock_state
	if running; then
		env_line
		return 0
	fi
	local bin port pid i
	bin="$(server_bin)"
	port="$(choose_port PGOUTBOX_NATS_PORT "$(cat "$state/port" 2>/dev/null || true)")"
	echo "$port" >"$state/port"
	write_config "$port"
	log "starting $("$bin" --version) on 127.0.0.1:$port, state in $state"
	pid="$(start_detached "$state/nats.out" "$bin" -c "$state/nats.conf" -l "$state/nats.log")"
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
	lock_state
	if running; then
		stop_pid "$(cat "$state/nats.pid")" 15 nats-server
	else
		log "not running"
	fi
	rm -f "$state/nats.pid"
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
