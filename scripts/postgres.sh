#!/usr/bin/env bash
# Throwaway PostgreSQL cluster with wal_level=logical on 127.0.0.1, for tests and local runs.
#
#   scripts/postgres.sh up      install PostgreSQL (Debian packages, when missing and root), start a cluster, print env
#   scripts/postgres.sh env     print the env of the running cluster
#   scripts/postgres.sh down    stop the cluster this script started and remove its directory
#   scripts/postgres.sh status  exit 0 when the cluster answers
#   scripts/postgres.sh restart [fast|immediate]   restart the cluster (fault tests)
#
# State lives in ${PGOUTBOX_PG_DIR:-/tmp/pgoutbox-pg}. `up` is idempotent.
set -euo pipefail

DIR="${PGOUTBOX_PG_DIR:-/tmp/pgoutbox-pg}"
PG_MAJOR="${PGOUTBOX_PG_MAJOR:-}"

log() { echo "postgres.sh: $*" >&2; }

find_bin() {
	if [[ -n "$PG_MAJOR" && -x "/usr/lib/postgresql/$PG_MAJOR/bin/initdb" ]]; then
		echo "/usr/lib/postgresql/$PG_MAJOR/bin"
		return 0
	fi
	local d
	d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
	if [[ -n "$d" && -x "$d/initdb" ]]; then
		echo "$d"
		return 0
	fi
	return 1
}

install_pg() {
	if find_bin >/dev/null; then return 0; fi
	if [[ $(id -u) -ne 0 ]]; then
		log "PostgreSQL server binaries not found and not root: install the 'postgresql' package"
		exit 1
	fi
	log "installing PostgreSQL from Debian packages"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-contrib >/dev/null
	find_bin >/dev/null || { log "PostgreSQL install failed"; exit 1; }
}

# free_port picks a free port below the kernel's ephemeral range (32768+), where outgoing connections
# of concurrent tests could take it before the server binds it.
free_port() {
	python3 - <<'PY' 2>/dev/null || echo $((10000 + RANDOM % 22000))
import random, socket
for _ in range(200):
    p = random.randint(10000, 31999)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        s.close()
PY
}

as_pg() {
	if [[ $(id -u) -eq 0 ]]; then
		su postgres -s /bin/bash -c "$*"
	else
		bash -c "$*"
	fi
}

print_env() {
	local port
	port=$(cat "$DIR/port")
	echo "export PGOUTBOX_TEST_DATABASE_URL='postgres://postgres@127.0.0.1:${port}/postgres?sslmode=disable'"
	echo "export PGOUTBOX_PG_BIN='$(cat "$DIR/bin")'"
	echo "export PGOUTBOX_PG_DIR='$DIR'"
}

running() {
	[[ -f "$DIR/port" && -f "$DIR/bin" ]] || return 1
	"$(cat "$DIR/bin")/pg_isready" -q -h 127.0.0.1 -p "$(cat "$DIR/port")" 2>/dev/null
}

up() {
	if running; then print_env; return 0; fi
	install_pg
	local bin port
	bin=$(find_bin)
	mkdir -p "$DIR"
	if [[ ! -f "$DIR/data/PG_VERSION" ]]; then
		rm -rf "$DIR/data"
		port=$(free_port)
		if [[ $(id -u) -eq 0 ]]; then chown postgres:postgres "$DIR"; fi
		as_pg "'$bin/initdb' -D '$DIR/data' -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >'$DIR/initdb.log' 2>&1" \
			|| { cat "$DIR/initdb.log" >&2; exit 1; }
		cat >>"$DIR/data/postgresql.conf" <<CONF
# pgoutbox test cluster
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$DIR'
wal_level = logical
max_replication_slots = 40
max_wal_senders = 40
max_connections = 200
wal_sender_timeout = 5s
fsync = off
full_page_writes = off
shared_buffers = 256MB
max_wal_size = 4GB
log_min_messages = warning
CONF
		echo "$port" >"$DIR/port"
		echo "$bin" >"$DIR/bin"
	fi
	as_pg "'$bin/pg_ctl' -D '$DIR/data' -l '$DIR/pg.log' -w -t 60 start >/dev/null" || { tail -20 "$DIR/pg.log" >&2; exit 1; }
	log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$(cat "$DIR/port") (data $DIR/data)"
	print_env
}

down() {
	if [[ -f "$DIR/bin" && -d "$DIR/data" ]]; then
		as_pg "'$(cat "$DIR/bin")/pg_ctl' -D '$DIR/data' -m fast -w stop >/dev/null 2>&1" || true
	fi
	rm -rf "$DIR"
}

restart() {
	local mode="${1:-fast}"
	as_pg "'$(cat "$DIR/bin")/pg_ctl' -D '$DIR/data' -l '$DIR/pg.log' -m '$mode' -w -t 60 restart >/dev/null"
}

case "${1:-}" in
up) up ;;
env) running && print_env || { log "not running; run: scripts/postgres.sh up"; exit 1; } ;;
down) down ;;
status) running ;;
restart) shift; restart "$@" ;;
*) echo "usage: $0 up|env|down|status|restart [fast|immediate]" >&2; exit 2 ;;
esac
