# shellcheck shell=bash
# bench/lib.sh: what the benches share (static.sh, proxy.sh, profile.sh,
# compress.sh, tls.sh, http2.sh): the knobs, installing the peers from
# apt without letting their packages start daemons, building Baton, a temp
# dir whose servers are stopped (TERM, then KILL, by their pidfiles or
# pids) however the script ends, a test certificate, an h2o site, waiting
# for a server to answer, the RSS and CPU time of a process tree, and
# wrk's numbers.
#
# Source it after setting BENCH (the name log lines start with):
#
#   BENCH=proxy.sh
#   . "$(dirname "$0")/lib.sh"
#
# Knobs every bench takes: DURATION=5 (seconds per run), BATON_BIN=path
# (skip cargo build --release), KEEP_TMP=1 (keep the temp dir).

DURATION=${DURATION:-5}
BATON_BIN=${BATON_BIN:-}
KEEP_TMP=${KEEP_TMP:-0}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf '%s: %s\n' "${BENCH:-bench}" "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 ]]; }
bin() { command -v "$1" 2>/dev/null || echo "/usr/sbin/$1"; }

# install_missing TOOL=PACKAGE...: installs, from apt, the package of each
# tool not found. Packages' daemons are kept from starting (policy-rc.d);
# nginx-light falls back to nginx where the first does not exist. apt's
# chatter goes to stderr, so that stdout holds only the table.
install_missing() {
	local -a pkgs=()
	local spec
	for spec in "$@"; do
		have "${spec%%=*}" || pkgs+=("${spec#*=}")
	done
	((${#pkgs[@]} > 0)) || return 0
	local -a sudo=()
	((EUID == 0)) || sudo=(sudo)
	log "installing: ${pkgs[*]}"
	export DEBIAN_FRONTEND=noninteractive
	{
		"${sudo[@]}" apt-get update -qq || true
		printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
		"${sudo[@]}" chmod +x /usr/sbin/policy-rc.d
		"${sudo[@]}" apt-get install -y -qq "${pkgs[@]}" ||
			"${sudo[@]}" apt-get install -y -qq "${pkgs[@]/nginx-light/nginx}" || log "apt-get install failed"
		"${sudo[@]}" rm -f /usr/sbin/policy-rc.d
	} >&2
}

# make_pid_tmp: TMP, a fresh world-readable temp dir, and PIDS, the pids
# of the servers a bench starts (for those not recorded by pidfile as
# make_tmp's are): stopped (TERM, then KILL) however the script ends.
make_pid_tmp() {
	TMP=$(mktemp -d)
	chmod 755 "$TMP"
	PIDS=()
	trap stop_servers EXIT
}

stop_servers() {
	local p
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	sleep 0.5
	for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
	if [[ $KEEP_TMP == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}

# make_ecdsa_cert DIR: DIR/cert.pem and DIR/key.pem, an ECDSA P-256
# certificate for bench.test, the key readable by the servers' users.
make_ecdsa_cert() {
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
		-keyout "$1/key.pem" -out "$1/cert.pem" -subj /CN=bench.test \
		-addext subjectAltName=DNS:bench.test 2>/dev/null
	chmod 644 "$1/key.pem"
}

# h2o_tls_site PORT ROOT CERT KEY: the listen and hosts part of an h2o
# config serving the directory ROOT over TLS on 127.0.0.1:PORT (the
# caller writes the global lines: user, threads, logs).
h2o_tls_site() {
	cat <<-CONF
		listen:
		  host: 127.0.0.1
		  port: $1
		  ssl:
		    certificate-file: $3
		    key-file: $4
		hosts:
		  default:
		    paths:
		      /:
		        file.dir: $2
	CONF
}

# Sets BATON_BIN to a release build unless it is set; returns 1 if the
# build fails.
build_baton() {
	[[ -n $BATON_BIN ]] && return 0
	log "building baton: cargo build --release"
	(cd "$ROOT" && cargo build --release -q --bin baton) || { log "build failed"; return 1; }
	BATON_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/baton
}

# make_tmp NAME: TMP, a fresh world-readable temp dir (under /tmp as root:
# the workers run as nobody), and the tables servers are recorded in:
# PORT[name], PIDFILE[name], RUNNING (started, in order) and STOP_ALSO
# (names stopped as well, not benchmarked: a backend). Everything recorded
# is stopped on exit.
make_tmp() {
	if ((EUID == 0)); then
		TMP=$(mktemp -d "/tmp/baton-$1.XXXXXX")
	else
		TMP=$(mktemp -d -t "baton-$1.XXXXXX")
	fi
	chmod 755 "$TMP"
	declare -gA PORT=() PIDFILE=()
	RUNNING=()
	STOP_ALSO=()
	trap cleanup EXIT INT TERM
}

# Signals the pid in each recorded server's pidfile (never by name).
signal_all() {
	local s pid
	for s in "${RUNNING[@]}" "${STOP_ALSO[@]}"; do
		pid=$(cat "${PIDFILE[$s]:-/nonexistent}" 2>/dev/null)
		[[ -n $pid ]] && kill "-$1" "$pid" 2>/dev/null
	done
}

cleanup() {
	set +e
	signal_all TERM
	sleep 1
	signal_all KILL
	if [[ $KEEP_TMP == 1 ]]; then log "kept $TMP"; else rm -rf -- "$TMP"; fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Servers run as nobody when the bench runs as root.
# shellcheck disable=SC2034 # used by the scripts that source this
USER_LINE=$( ((EUID == 0)) && echo 1)

# wait_up NAME PATH: waits (5 s at most) for server NAME to answer
# http://127.0.0.1:PORT[NAME]PATH, then records it as RUNNING; else logs
# its start log ($TMP/NAME/start.log) and error log and returns 1.
wait_up() {
	local s=$1 url _
	url="http://127.0.0.1:${PORT[$s]}$2"
	for _ in $(seq 50); do
		if curl -fsS -o /dev/null "$url" 2>/dev/null ||
			python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1).read()' "$url" 2>/dev/null; then
			RUNNING+=("$s")
			return 0
		fi
		sleep 0.1
	done
	log "$s did not start: $(cat "$TMP/$s/start.log" "$TMP/$s/error.log" 2>/dev/null | tail -3)"
	return 1
}

# RSS (KiB) of a pid and all its descendants.
rss_tree() {
	python3 - "$1" <<-'PY'
		import os, sys
		root = int(sys.argv[1]); kids = {}
		for p in os.listdir("/proc"):
		    if not p.isdigit(): continue
		    try:
		        st = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
		        kids.setdefault(int(st[1]), []).append(int(p))
		    except OSError: pass
		total, todo = 0, [root]
		while todo:
		    p = todo.pop(); todo += kids.get(p, [])
		    try:
		        for l in open(f"/proc/{p}/status"):
		            if l.startswith("VmRSS:"): total += int(l.split()[1])
		    except OSError: pass
		print(total)
	PY
}

# CPU time (user + system, in clock ticks) of a pid and its descendants
# alive now: sampled around a load, the difference divided by the
# requests served is the CPU cost per request, which a busy shared
# machine disturbs far less than it does req/s.
cpu_tree() {
	python3 - "$1" <<-'PY'
		import os, sys
		root = int(sys.argv[1]); kids = {}; ticks = {}
		for p in os.listdir("/proc"):
		    if not p.isdigit(): continue
		    try:
		        st = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
		        kids.setdefault(int(st[1]), []).append(int(p))
		        ticks[int(p)] = int(st[11]) + int(st[12])
		    except (OSError, IndexError, ValueError): pass
		total, todo = 0, [root]
		while todo:
		    p = todo.pop(); todo += kids.get(p, []); total += ticks.get(p, 0)
		print(total)
	PY
}

# usec_per_req TICKS REQUESTS: CPU microseconds per request.
usec_per_req() {
	awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "-" }'
}

# wrk_numbers LABEL: wrk's output on stdin → "req/s MB/s p99" (p99 "-"
# without --latency); errors it reports are logged under LABEL.
wrk_numbers() {
	local out rps mbs p99 errs
	out=$(cat)
	rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' <<<"$out")
	mbs=$(awk '/^Transfer\/sec:/ { v=$2; u=v; sub(/[0-9.]+/, "", u); sub(/[A-Za-z]+/, "", v);
		m = (u=="GB") ? 1024 : (u=="MB") ? 1 : (u=="KB") ? 1/1024 : 1/1048576; printf "%.0f", v*m }' <<<"$out")
	p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
	errs=$(awk '/Non-2xx|Socket errors/ { print }' <<<"$out" | tr '\n' ' ')
	[[ -n $errs ]] && log "$1: $errs"
	echo "${rps:-0} ${mbs:-0} ${p99:--}"
}

# The commit measured, for the closing note.
commit_line() { printf 'commit %s\n' "$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')"; }
