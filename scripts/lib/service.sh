# scripts/lib/service.sh — what the scripts that run one local server for tests share (scripts/kafka.sh, scripts/nats.sh,
# scripts/rabbitmq.sh): messages, free ports, the state dir's lock, starting the server detached with a
# pid file, stopping it, and the commands env, status and clean. Sourced, never run.
#
# The sourcing script sets
#   svc_name   its name in messages ("nats.sh")
#   state      its state dir (holding port, env and the pid file)
#   svc_pid    the name of the pid file in the state dir
# and defines `running` (succeeds when the pid file names its live server) and cmd_up and cmd_down.
# Progress goes to stderr; stdout is left for the export line the scripts print.

log() { echo "$svc_name: $*" >&2; }
die() {
	log "$*"
	exit 1
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port prints a port that is not in use and not one of the ports given, below the kernel's
# ephemeral range (32768+), where outgoing connections of concurrent tests would otherwise take it
# between this check and the server's bind.
free_port() {
	local p i
	for i in $(seq 1 200); do
		p=$((10000 + RANDOM % 22000))
		if ! port_in_use "$p" && [[ " $* " != *" $p "* ]]; then
			echo "$p"
			return 0
		fi
	done
	die "no free port found on 127.0.0.1"
}

# choose_port VAR SAVED [TAKEN...] prints the port to listen on: the one the environment variable VAR
# names (which must be free), else SAVED (the last run's) while it is free, else a free one other than
# TAKEN.
choose_port() {
	local var="$1" port="$2"
	shift 2
	if [[ -n "${!var:-}" ]]; then
		[[ "${!var}" =~ ^[0-9]+$ ]] || die "$var=${!var} is not a port number"
		port="${!var}"
		! port_in_use "$port" || die "port $port ($var) is taken"
	elif [[ -z "$port" ]] || port_in_use "$port"; then
		port="$(free_port "$@")"
	fi
	echo "$port"
}

# lock_state creates the state dir and holds its lock (fd 9) until the script exits, so that two
# calls for one state dir never start or stop its server at once.
lock_state() {
	mkdir -p "$state"
	exec 9>"$state/.lock"
	flock 9
}

# start_detached OUT CMD... starts CMD with its output to OUT, detached from the caller's process
# group (setsid) so that it outlives the calling shell or test, and prints its pid once the pid file
# names it: bash writes its own pid, then execs CMD, so the pid file names the server itself.
start_detached() {
	local out="$1" pidfile="$state/$svc_pid" i
	shift
	rm -f "$pidfile"
	setsid bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$pidfile" "$@" </dev/null >"$out" 2>&1 9>&- &
	for i in $(seq 1 50); do
		[[ -s "$pidfile" ]] && break
		sleep 0.1
	done
	cat "$pidfile"
}

# stop_pid PID SECONDS WHAT sends PID a TERM and, when it is still there after SECONDS, a KILL.
stop_pid() {
	local pid="$1" secs="$2" what="$3" i
	log "stopping $what pid $pid"
	kill -TERM "$pid"
	for i in $(seq 1 $((secs * 10))); do
		[[ -d "/proc/$pid" ]] || return 0
		sleep 0.1
	done
	log "$what did not stop in ${secs}s; killing pid $pid"
	kill -KILL "$pid" 2>/dev/null || true
	sleep 0.5
}

cmd_env() {
	running || die "not running (start it with scripts/$svc_name up)"
	cat "$state/env"
}

cmd_status() {
	if running; then
		log "running: pid $(cat "$state/$svc_pid"), 127.0.0.1:$(cat "$state/port"), state in $state"
		return 0
	fi
	log "not running (state dir $state)"
	return 3
}

cmd_clean() {
	cmd_down
	rm -rf "$state"
}
