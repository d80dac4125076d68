#!/usr/bin/env bash
# Runs the benchmark scenarios of issue 13 against the built server binary
# and prints the figures (see the README's "Benchmarks" section).
#
#   scripts/bench.sh [-s send,send16,fanout,initialsync,joins,memory] [-l label]
#                    [-n repeat] [-o outdir] [--postgres URL] [--log-level info] [--keep-data]
#                    [-- driver flags, e.g. -fanout-duration 10s -idle 10s]
#
# It builds both once; each of the -n runs starts the binary afresh, on an
# empty data directory (SQLite and embedded NATS) or an empty PostgreSQL
# database, with rate limits off, open registration and bcrypt cost 4, on
# free 127.0.0.1 ports; the driver (tests/bench) then runs the scenarios
# over HTTP and reads the server's /proc/<pid>. Figures, heap profiles and
# the server's log go to outdir/runN/; its data directory is deleted after
# the run unless --keep-data. The environment (GOMEMLIMIT, GOGC...) is the
# server's too.
set -euo pipefail

usage() { sed -n '2,18s/^# \{0,1\}//p' "$0"; exit "${1:-2}"; }

scenarios=""
label=""
repeat=1
out=""
pgurl="${MYELIN_BENCH_POSTGRES:-}"
loglevel="info"
keepdata=""
driver_args=()
while [ $# -gt 0 ]; do
	case "$1" in
	-s | --scenarios) scenarios="$2"; shift 2 ;;
	-l | --label) label="$2"; shift 2 ;;
	-n | --repeat) repeat="$2"; shift 2 ;;
	-o | --out) out="$2"; shift 2 ;;
	--postgres) pgurl="$2"; shift 2 ;;
	--log-level) loglevel="$2"; shift 2 ;;
	--keep-data) keepdata=1; shift ;;
	-h | --help) usage 0 ;;
	--) shift; driver_args=("$@"); break ;;
	*) echo "bench.sh: unknown option $1" >&2; usage ;;
	esac
done
case "$repeat" in '' | *[!0-9]* | 0) echo "bench.sh: -n needs a positive number" >&2; exit 2 ;; esac

cd "$(dirname "$0")/.."
out="${out:-/tmp/myelin-bench-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

echo "bench.sh: building into $out" >&2
go build -o "$out/myelin" ./cmd/myelin
go build -o "$out/myelin-bench" ./tests/bench

# free_port prints a TCP port on 127.0.0.1 that nothing listens on.
free_port() {
	local p
	for _ in $(seq 1 100); do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
	echo "bench.sh: no free port found" >&2
	exit 1
}

server_pid=""
pgdb=""
cleanup() {
	if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
		kill -TERM "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
	fi
	if [ -n "$pgdb" ]; then
		psql -q "$pgurl" -c "DROP DATABASE IF EXISTS $pgdb" >/dev/null 2>&1 || true
	fi
}
trap cleanup EXIT

stop_server() {
	kill -TERM "$server_pid" 2>/dev/null || true
	for _ in $(seq 1 150); do
		kill -0 "$server_pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$server_pid" 2>/dev/null; then
		echo "bench.sh: the server did not stop within 15 s of SIGTERM; killing it" >&2
		kill -KILL "$server_pid" 2>/dev/null || true
	fi
	wait "$server_pid" 2>/dev/null || true
	server_pid=""
}

status=0
figures=()
for i in $(seq 1 "$repeat"); do
	dir="$out/run$i"
	rm -rf "$dir"
	mkdir -p "$dir/data"
	port=$(free_port)
	mport=$(free_port)
	dburl="sqlite:data/myelin.db"
	if [ -n "$pgurl" ]; then
		# A fresh database on the given server for every run.
		command -v psql >/dev/null || { echo "bench.sh: --postgres needs psql to create a fresh database" >&2; exit 1; }
		pgdb="myelin_bench_$$_$i"
		psql -q "$pgurl" -c "CREATE DATABASE $pgdb" >/dev/null
		dburl=$(printf '%s' "$pgurl" | sed -E "s#^(postgres(ql)?://[^/?]*)(/[^?]*)?#\1/$pgdb#")
	fi
	"$out/myelin" generate-keys --key "$dir/data/signing.key" >/dev/null
	cat >"$dir/myelin.yaml" <<YAML
server_name: "127.0.0.1:$port"
signing_key_path: data/signing.key
database:
  url: "$dburl"
nats:
  store_dir: data/jetstream
listeners:
  http:
    address: "127.0.0.1:$port"
registration:
  enabled: true
auth:
  bcrypt_cost: 4
rate_limiting:
  enabled: false
media:
  store_path: data/media
federation:
  trusted_key_servers: []
logging:
  level: $loglevel
metrics:
  enabled: true
  address: "127.0.0.1:$mport"
  pprof: true
YAML
	"$out/myelin" --config "$dir/myelin.yaml" >"$dir/server.log" 2>&1 &
	server_pid=$!
	echo "bench.sh: run $i of $repeat: server pid $server_pid on 127.0.0.1:$port ($([ -n "$pgurl" ] && echo "PostgreSQL $pgdb" || echo SQLite))" >&2
	args=(-url "http://127.0.0.1:$port" -metrics "http://127.0.0.1:$mport" -pid "$server_pid" -out "$dir")
	[ -n "$scenarios" ] && args+=(-scenarios "$scenarios")
	[ -n "$label" ] && args+=(-label "$label")
	set +e
	"$out/myelin-bench" "${args[@]}" ${driver_args[@]+"${driver_args[@]}"} | tee "$dir/table.txt"
	rc=${PIPESTATUS[0]}
	set -e
	if ! kill -0 "$server_pid" 2>/dev/null; then
		echo "bench.sh: the server died during run $i; see $dir/server.log" >&2
		rc=1
	fi
	stop_server
	if [ -n "$pgdb" ]; then
		psql -q "$pgurl" -c "DROP DATABASE IF EXISTS $pgdb" >/dev/null || true
		pgdb=""
	fi
	[ -n "$keepdata" ] || rm -rf "$dir/data"
	[ "$rc" -eq 0 ] || status=1
	[ -f "$dir/figures.json" ] && figures+=("$dir/figures.json")
done

if [ "$repeat" -gt 1 ] && [ ${#figures[@]} -gt 0 ]; then
	echo
	"$out/myelin-bench" -summarize "${figures[@]}" | tee "$out/summary.txt"
fi
echo "bench.sh: figures in $out" >&2
exit $status
