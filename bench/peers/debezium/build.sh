#!/usr/bin/env bash
# bench/peers/debezium/build.sh — build the Debezium peer (OutboxBench + Debezium embedded, pinned in pom.xml)
# once per content of this directory into a cache outside the checkout, and print its Java classpath.
#
#   PGOUTBOX_CACHE   cache directory (default $HOME/.cache/pgoutbox), shared with scripts/kafka.sh
#
# Needs Java 17+ and Maven, and Maven Central the first time. Progress goes to stderr, the classpath to stdout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${PGOUTBOX_CACHE:-$HOME/.cache/pgoutbox}"
log() { echo "debezium/build.sh: $*" >&2; }
die() { log "$*"; rm -rf "${dir:?}.tmp"; exit 1; }

version="$(sed -n 's:.*<debezium.version>\(.*\)</debezium.version>.*:\1:p' "$here/pom.xml" | head -n1)"
sum="$(cd "$here" && find pom.xml src resources -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-12)"
dir="$cache/debezium-$version-$sum"
if [[ ! -f "$dir/.complete" ]]; then
	command -v java >/dev/null || die "java not found (Java 17+ is needed)"
	command -v mvn >/dev/null || die "mvn not found (Maven is needed to fetch Debezium)"
	log "building the Debezium $version peer into $dir (once)"
	rm -rf "$dir.tmp"
	mkdir -p "$dir.tmp"
	mvn -q -B -Dstyle.color=never -f "$here/pom.xml" -Dpeers.build.dir="$dir.tmp/build" \
		package dependency:copy-dependencies -DoutputDirectory="$dir.tmp/libs" -DincludeScope=runtime >&2 ||
		die "mvn package failed"
	touch "$dir.tmp/.complete"
	rm -rf "$dir"
	mv "$dir.tmp" "$dir"
fi
echo "$dir/build/classes:$dir/libs/*"
