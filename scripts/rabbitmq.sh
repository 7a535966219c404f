#!/usr/bin/env bash
# scripts/rabbitmq.sh — a single RabbitMQ node on 127.0.0.1 with its own state dir, for tests and local runs.
#
#   scripts/rabbitmq.sh up      install Debian's rabbitmq-server when missing (as root), start a node,
#                               wait until it boots, print
#                               `export PGOUTBOX_TEST_RABBITMQ_URL=amqp://guest:guest@127.0.0.1:<port>/`
#   scripts/rabbitmq.sh env     reprint that line (exit 1 when the node is not running)
#   scripts/rabbitmq.sh status  say whether the node runs (exit 0) or not (exit 3)
#   scripts/rabbitmq.sh down    stop the node this state dir started, and its epmd; its data is kept, so
#                               a later `up` restarts it on the same ports with the same queues
#   scripts/rabbitmq.sh clean   down, then delete the state dir
#   scripts/rabbitmq.sh ctl ARGS  run rabbitmqctl ARGS against this state dir's node (e.g. list_queues,
#                               set_vm_memory_high_watermark 0.0001 to raise a memory alarm in a test)
#
# Typical use:  svc=$(scripts/rabbitmq.sh up) && eval "$svc" && go test ./sink/rabbitmq/
#
# Nothing of the system installation is used but its programs: the node's configuration, Mnesia and
# message store, logs, Erlang cookie ($HOME) and epmd (ERL_EPMD_PORT) all belong to the state dir, on
# free ports (AMQP, Erlang distribution, epmd), so it never clashes with a system RabbitMQ, an epmd on
# 4369 or another state dir. It runs as the calling user (root included) without the Debian wrapper's
# switch to the rabbitmq user. The guest user may connect only from loopback, which is all it listens on.
#
# Environment:
#   PGOUTBOX_RABBITMQ_DIR  state dir (default /tmp/pgoutbox-rabbitmq); use another for a second node
#   PGOUTBOX_RABBITMQ_PORT listen on this AMQP port instead of a free one (fails if it is taken)
#   PGOUTBOX_RABBITMQ_WAIT seconds to wait for the node to boot (default 90)
# All progress goes to stderr; stdout carries only the export line, for `svc=$(... up) && eval "$svc"`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
state="${PGOUTBOX_RABBITMQ_DIR:-/tmp/pgoutbox-rabbitmq}"
wait_s="${PGOUTBOX_RABBITMQ_WAIT:-90}"
sbin=/usr/lib/rabbitmq/bin
node=pgoutbox@localhost
svc_name=rabbitmq.sh
svc_pid=rabbitmq.pid
# shellcheck source=lib/service.sh
. "$here/lib/service.sh"

install_rabbitmq() {
	[[ -x "$sbin/rabbitmq-server" ]] && return 0
	[[ $(id -u) -eq 0 ]] || die "RabbitMQ not found and not root: install Debian's 'rabbitmq-server' package"
	log "installing rabbitmq-server from Debian packages"
	# The package's postinst would start a system node: policy-rc.d (present in this image) forbids it;
	# add one for the install when there is none.
	local policy=/usr/sbin/policy-rc.d added=""
	if [[ ! -e "$policy" ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added=1
	fi
	apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rabbitmq-server >&2 ||
		{ [[ -z "$added" ]] || rm -f "$policy"; die "apt-get install rabbitmq-server failed"; }
	[[ -z "$added" ]] || rm -f "$policy"
	[[ -x "$sbin/rabbitmq-server" ]] || die "rabbitmq-server installed but $sbin/rabbitmq-server is missing"
}

# node_env exports what makes the node and the CLI tools use this state dir only.
node_env() {
	export HOME="$state/home" # the Erlang cookie lives here
	export RABBITMQ_NODENAME="$node"
	export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
	export RABBITMQ_NODE_PORT="$(cat "$state/port")"
	export RABBITMQ_DIST_PORT="$(cat "$state/dist_port")"
	export ERL_EPMD_PORT="$(cat "$state/epmd_port")"
	export ERL_EPMD_ADDRESS=127.0.0.1
	export RABBITMQ_CONF_ENV_FILE="$state/rabbitmq-env.conf"
	export RABBITMQ_CONFIG_FILE="$state/rabbitmq.conf"
	export RABBITMQ_ADVANCED_CONFIG_FILE="$state/advanced.config"
	export RABBITMQ_ENABLED_PLUGINS_FILE="$state/enabled_plugins"
	export RABBITMQ_MNESIA_BASE="$state/mnesia"
	export RABBITMQ_LOG_BASE="$state/log"
	export RABBITMQ_PID_FILE="$state/node.pid"
	export RABBITMQ_PLUGINS_EXPAND_DIR="$state/plugins-expand"
}

# beam_pid prints the pid of the Erlang VM started with this state dir (the server script runs it as a
# child and forwards signals, so the script's own pid is not the node's).
beam_pid() {
	local f pid
	for f in /proc/[0-9]*/comm; do
		[[ "$(cat "$f" 2>/dev/null)" == beam.smp ]] || continue
		pid="${f#/proc/}"
		pid="${pid%/comm}"
		if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF -- "RABBITMQ_MNESIA_BASE=$state/mnesia"; then
			echo "$pid"
			return 0
		fi
	done
	return 1
}

# running succeeds when the pid file names a live process started with this state dir: the Erlang VM
# once the node booted (the pid to kill -9 in fault tests), the server script while it boots.
running() {
	local pid
	[[ -f "$state/rabbitmq.pid" ]] || return 1
	pid="$(cat "$state/rabbitmq.pid")"
	[[ -n "$pid" && -r "/proc/$pid/environ" ]] || return 1
	tr '\0' '\n' <"/proc/$pid/environ" | grep -qxF -- "RABBITMQ_MNESIA_BASE=$state/mnesia"
}

env_line() { echo "export PGOUTBOX_TEST_RABBITMQ_URL=amqp://guest:guest@127.0.0.1:$(cat "$state/port")/"; }

write_config() {
	mkdir -p "$state/home" "$state/log" "$state/mnesia"
	: >"$state/rabbitmq-env.conf"
	echo "[]." >"$state/enabled_plugins"
	echo "[]." >"$state/advanced.config"
	cat >"$state/rabbitmq.conf" <<EOF
# written by scripts/rabbitmq.sh
listeners.tcp.default = 127.0.0.1:$(cat "$state/port")
loopback_users.guest = true
disk_free_limit.absolute = 50MB
log.file.level = info
log.console = false
EOF
}

pick_ports() {
	local port dist epmd
	port="$(choose_port PGOUTBOX_RABBITMQ_PORT "$(cat "$state/port" 2>/dev/null || true)")"
	dist="$(cat "$state/dist_port" 2>/dev/null || true)"
	epmd="$(cat "$state/epmd_port" 2>/dev/null || true)"
	if [[ -z "$dist" ]] || port_in_use "$dist"; then dist="$(free_port "$port")"; fi
	# The epmd port may still answer from our own epmd (left by a kill -9 of the node): keep it then.
	if [[ -z "$epmd" ]] || { port_in_use "$epmd" && ! ERL_EPMD_PORT="$epmd" epmd -names >/dev/null 2>&1; }; then
		epmd="$(free_port "$port" "$dist")"
	fi
	echo "$port" >"$state/port"
	echo "$dist" >"$state/dist_port"
	echo "$epmd" >"$state/epmd_port"
}

cmd_up() {
	lock_state
	if running; then
		env_line
		return 0
	fi
	install_rabbitmq
	pick_ports
	write_config
	node_env
	log "starting RabbitMQ $(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null || echo '?') on 127.0.0.1:$RABBITMQ_NODE_PORT (dist $RABBITMQ_DIST_PORT, epmd $ERL_EPMD_PORT), state in $state"
	# The server script execs the Erlang VM: the pid file names the node itself.
	local i pid
	pid="$(start_detached "$state/log/server.out" "$sbin/rabbitmq-server")"
	# await_startup fails at once while the node is not registered with epmd yet: wait for that first.
	local deadline=$((SECONDS + wait_s)) rc=1
	while ((SECONDS < deadline)); do
		kill -0 "$pid" 2>/dev/null || { tail -n 30 "$state/log/server.out" >&2 2>/dev/null || true; die "node exited while starting (logs in $state/log)"; }
		if epmd -names 2>/dev/null | grep -q "^name ${node%@*} "; then
			"$sbin/rabbitmqctl" -q -n "$node" await_startup --timeout $((deadline - SECONDS + 1)) >"$state/log/await.out" 2>&1 && rc=0 || rc=$?
			break
		fi
		sleep 0.2
	done
	if [[ $rc -ne 0 ]] || ! port_in_use "$RABBITMQ_NODE_PORT"; then
		cat "$state/log/await.out" >&2 2>/dev/null || true
		tail -n 30 "$state/log/server.out" >&2 2>/dev/null || true
		kill "$pid" 2>/dev/null || true
		die "node did not boot within ${wait_s}s (logs in $state/log)"
	fi
	pid="$(beam_pid)" || die "node booted but its Erlang VM was not found"
	echo "$pid" >"$state/rabbitmq.pid"
	env_line >"$state/env"
	log "ready (pid $pid)"
	env_line
}

cmd_down() {
	[[ -d "$state" ]] || { log "not running"; return 0; }
	lock_state
	if running; then
		stop_pid "$(cat "$state/rabbitmq.pid")" 30 node
	else
		log "not running"
	fi
	rm -f "$state/rabbitmq.pid"
	if [[ -f "$state/epmd_port" ]]; then # our own epmd; a system one on another port is left alone
		ERL_EPMD_PORT="$(cat "$state/epmd_port")" epmd -kill >/dev/null 2>&1 || true
	fi
}

cmd_ctl() {
	running || die "not running (start it with scripts/rabbitmq.sh up)"
	node_env
	"$sbin/rabbitmqctl" -q -n "$node" "$@"
}

case "${1:-}" in
up) cmd_up ;;
ctl) shift; cmd_ctl "$@" ;;
down) cmd_down ;;
env) cmd_env ;;
status) cmd_status ;;
clean) cmd_clean ;;
*)
	echo "usage: $0 up|down|env|status|clean|ctl ARGS" >&2
	exit 2
	;;
esac
