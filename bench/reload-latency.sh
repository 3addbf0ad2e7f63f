#!/usr/bin/env bash
# bench/reload-latency.sh: how long `baton -s reload` takes, from the command
# to "the new generation serves and the old one no longer accepts", for one
# or more baton binaries side by side (e.g. before and after a change).
#
#   bash bench/reload-latency.sh                      # target/release/baton
#   bash bench/reload-latency.sh OLD_BIN NEW_BIN      # two builds, interleaved
#
# Knobs: RELOADS=40 (per binary), WORKERS=2. Prints min, median, p90 and max
# in milliseconds per binary. A benchmark, not a test: it never fails on
# timing. Everything listens on 127.0.0.1 only.
set -euo pipefail

RELOADS=${RELOADS:-40}
WORKERS=${WORKERS:-2}
ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)

bins=("$@")
if ((${#bins[@]} == 0)); then
	(cd "$ROOT" && cargo build --release -q)
	bins=("$ROOT/target/release/baton")
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	rm -rf "$tmp"
}
trap cleanup EXIT

mkdir -p "$tmp/www"
printf 'hello\n' >"$tmp/www/index.html"

port=18400
i=0
for bin in "${bins[@]}"; do
	dir="$tmp/s$i"
	mkdir -p "$dir"
	user=""
	[[ $(id -u) == 0 ]] && user='user = "nobody"'
	cat >"$dir/baton.toml" <<CONF
$user
workers = $WORKERS
pid_file = "$dir/baton.pid"
grace = "5s"
[[site]]
listen = ["127.0.0.1:$((port + i))"]
root = "$tmp/www"
CONF
	chmod 755 "$tmp" "$tmp/www"
	"$bin" -c "$dir/baton.toml" --daemon 2>"$dir/err.log"
	pids+=("$(cat "$dir/baton.pid")")
	i=$((i + 1))
done

# Interleaved, so a noisy moment hits every binary alike.
for ((r = 0; r < RELOADS; r++)); do
	i=0
	for bin in "${bins[@]}"; do
		start=$(date +%s%N)
		"$bin" -c "$tmp/s$i/baton.toml" -s reload >/dev/null
		end=$(date +%s%N)
		echo $(((end - start) / 1000)) >>"$tmp/times$i"
		i=$((i + 1))
	done
done

printf '%-40s %8s %8s %8s %8s\n' binary min_ms median_ms p90_ms max_ms
i=0
for bin in "${bins[@]}"; do
	sort -n "$tmp/times$i" | awk -v name="$bin" '
		{ v[NR] = $1 / 1000 }
		END {
			printf "%-40s %8.1f %8.1f %8.1f %8.1f\n", name, v[1], v[int((NR + 1) / 2)], v[int(NR * 0.9)], v[NR]
		}'
	i=$((i + 1))
done
