#!/usr/bin/env bash
# bench/layout.sh: regenerate src/layout.ld, the code layout of the binary.
#
# Runs a release build of Baton under callgrind four times and records which
# functions each process runs (bench/layout.py explains why and how they are
# laid out):
#
#   worker  foreground master with 2 workers and a plain HTTP site; clients
#           do keep-alive, connection-per-request, HEAD, 304, ranges, 404, a
#           directory redirect, a 1 MiB file and a malformed request, then wrk
#           the same three loads as bench/static.sh; then a reload (SIGHUP)
#           and a graceful stop. Only the workers' lives are collected
#           (--toggle-collect on spawn(), which forks them).
#   master  the same as a daemon and without the reload, collecting
#           everything: the master's part is what the daemon ran beyond
#           what the foreground process had run when it forked.
#   tls     the worker run with a TLS site as well, collecting everything.
#   start   the worker run as a daemon, collecting everything: start-up,
#           config parsing, daemonizing.
#
# One run per tier, because a forked child's profile starts with its
# parent's counts: collecting master and workers in one run would credit
# the master's work to every worker forked after it.
#
# Run it after changes that move code between the hot paths, or when
# `bench/layout.sh --check` reports that few patterns still match.
# Needs valgrind, python3, openssl and wrk; about twenty seconds.
#
#   bash bench/layout.sh            write src/layout.ld
#   bash bench/layout.sh --check    how many of its patterns match the binary
#
# Knobs: BATON_BIN (default: cargo build --release), KEEP_TMP=1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/src/layout.ld
KEEP_TMP=${KEEP_TMP:-0}
log() { printf '[layout.sh] %s\n' "$*" >&2; }

if [[ -z ${BATON_BIN:-} ]]; then
	(cd "$ROOT" && cargo build --release --bin baton)
	BATON_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/baton
fi
BATON_BIN=$(realpath "$BATON_BIN")

if [[ ${1:-} == --check ]]; then
	# A pattern is live if some function section of the binary's objects
	# matched it: compare the symbols in the laid-out sections with the
	# pattern count.
	python3 - "$BATON_BIN" "$OUT" <<-'PY'
		import fnmatch, re, subprocess, sys
		binary, ld = sys.argv[1], sys.argv[2]
		pats = re.findall(r"^\s*\*\(\.text\.(\S+) ", open(ld).read(), re.M)
		syms = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True).stdout
		names = {re.sub(r"\.llvm\.\d+$", "", l.split()[2]) for l in syms.splitlines() if len(l.split()) == 3}
		# Pattern -> regex: only '*' is a wildcard in these patterns.
		rx = re.compile("|".join("(?:" + ".*".join(map(re.escape, p.split("*"))) + ")" for p in pats))
		live = sum(1 for n in names if n.startswith("_R") and rx.fullmatch(n))
		print(f"{len(pats)} patterns, {live} symbols of {binary} match them")
	PY
	exit 0
fi

for tool in valgrind python3 openssl wrk; do
	command -v "$tool" >/dev/null || {
		log "needs $tool"
		exit 1
	}
done

TMP=$(mktemp -d -t baton-layout.XXXXXX)
chmod 755 "$TMP"
cleanup() {
	if [[ $KEEP_TMP == 1 ]]; then log "kept $TMP"; else rm -rf -- "$TMP"; fi
}
trap cleanup EXIT

mkdir -p "$TMP/www/dir"
head -c 1024 /dev/zero | tr '\0' a >"$TMP/www/index.html"
head -c $((1 << 20)) /dev/zero >"$TMP/www/1m.bin"
echo hello >"$TMP/www/dir/index.html"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
	-keyout "$TMP/key.pem" -out "$TMP/cert.pem" -subj /CN=layout.test 2>/dev/null
chmod -R a+rX "$TMP"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A worker's whole life runs inside spawn(), which forks it. Collection
# flips on entry to and exit from it, so the pattern must match it and
# nothing it calls: a whole v0 symbol, the crate hash a wildcard. (The
# master's part is taken differently, see below: toggling on the functions
# it runs after daemonizing lost some of them, Master::new among them.)
WORKER_TOGGLE="_RNvNtCs*_12baton_master5spawn5spawn"

# run NAME TLS(0|1) COLLECT(worker|all) MODE(fg|daemon): one profiled
# life of the server; the master's pid is left in NAME/master.pid.
run() {
	local name=$1 tls=$2 collect=$3 mode=$4 dir=$TMP/$1 port tport vg master
	mkdir -p "$dir"
	chmod 777 "$dir" # workers run as nobody and write their own profile
	port=$(free_port)
	tport=$(free_port)
	{
		echo 'user = "nobody"'
		echo 'workers = 2'
		echo "pid_file = \"$dir/pid\""
		echo "error_log = \"$dir/error.log\""
		echo '[[site]]'
		echo "listen = [\"127.0.0.1:$port\"]"
		echo "root = \"$TMP/www\""
		if [[ $tls == 1 ]]; then
			echo '[[site]]'
			echo "listen = [\"127.0.0.1:$tport\"]"
			echo "root = \"$TMP/www\""
			echo "tls = { cert = \"$TMP/cert.pem\", key = \"$TMP/key.pem\" }"
		fi
	} >"$dir/conf.toml"
	local opts=(--tool=callgrind --demangle=no --compress-strings=no
		--callgrind-out-file="$dir/callgrind.%p")
	[[ $collect == worker ]] && opts+=(--collect-atstart=no "--toggle-collect=$WORKER_TOGGLE")
	local daemon=()
	[[ $mode == daemon ]] && daemon=(--daemon)
	valgrind "${opts[@]}" "$BATON_BIN" -c "$dir/conf.toml" "${daemon[@]}" >"$dir/valgrind.log" 2>&1 &
	vg=$!
	python3 - "$port" "$([[ $tls == 1 ]] && echo "$tport" || echo 0)" <<-'PY'
		import re, socket, ssl, sys, time
		port, tport = int(sys.argv[1]), int(sys.argv[2])
		for _ in range(600):  # valgrind starts slowly
		    try:
		        socket.create_connection(("127.0.0.1", port)).close(); break
		    except OSError:
		        time.sleep(0.1)
		else:
		    sys.exit("baton did not start")
		def exchange(s, req):
		    """Sends one request and reads its whole response."""
		    s.sendall(req)
		    s.settimeout(10)
		    data = b""
		    while b"\r\n\r\n" not in data:
		        d = s.recv(65536)
		        if not d: return data
		        data += d
		    head, _, body = data.partition(b"\r\n\r\n")
		    m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
		    length = int(m.group(1)) if m else 0
		    if req.startswith(b"HEAD") or head.startswith(b"HTTP/1.1 304"):
		        length = 0
		    while len(body) < length:
		        d = s.recv(1 << 20)
		        if not d: break
		        body += d
		    return head
		def plain():
		    return socket.create_connection(("127.0.0.1", port))
		def secure():
		    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
		    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", tport)), server_hostname="layout.test")
		reqs = [b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		        b"HEAD /index.html HTTP/1.1\r\nHost: a\r\n\r\n",
		        b"GET /index.html HTTP/1.1\r\nHost: a\r\nRange: bytes=1-9\r\n\r\n",
		        b"GET /missing HTTP/1.1\r\nHost: a\r\n\r\n",
		        b"GET /dir HTTP/1.1\r\nHost: a\r\n\r\n"]
		for connect in [plain] + ([secure] if tport else []):
		    for _ in range(20):
		        s = connect()
		        for r in reqs:
		            exchange(s, r)
		        etag = re.search(rb"(?i)\r\netag: *(\S+)", exchange(s, reqs[0]))
		        if etag:  # a conditional GET: 304
		            exchange(s, b"GET / HTTP/1.1\r\nHost: a\r\nIf-None-Match: " + etag.group(1) + b"\r\n\r\n")
		        s.close()
		        s = connect()
		        exchange(s, b"GET /index.html HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
		        s.close()
		    s = connect()
		    s.sendall(b"GET /1m.bin HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
		    while s.recv(1 << 20): pass
		    s.close()
		    s = connect()
		    exchange(s, b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
		    s.close()
	PY
	# Concurrent clients, as in production: partial writes, write interest,
	# accept batches, many connections in one poll.
	local url=http://127.0.0.1:$port
	wrk -t1 -c20 -d1s "$url/index.html" >/dev/null
	wrk -t1 -c20 -d1s -H 'Connection: close' "$url/index.html" >/dev/null
	wrk -t1 -c4 -d1s "$url/1m.bin" >/dev/null
	# A reload: the master parses the config again, a new generation starts
	# and the old one drains. Not in the master's tier: parsing is start-up
	# code, and the master's idle loop should not share pages with it.
	[[ $name != master ]] && kill -HUP "$(cat "$dir/pid")"
	python3 - "$port" <<-'PY'
		import socket, sys, time
		port = int(sys.argv[1])
		for _ in range(100):
		    s = socket.create_connection(("127.0.0.1", port))
		    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
		    while s.recv(65536): pass
		    s.close()
	PY
	master=$(cat "$dir/pid")
	echo "$master" >"$dir/master.pid"
	kill -QUIT "$master"
	# A daemon's foreground parent has long exited; wait for the master.
	local tries=300
	while kill -0 "$master" 2>/dev/null && ((tries-- > 0)); do sleep 0.1; done
	wait "$vg" || {
		log "$name: baton under valgrind failed: $(tail -3 "$dir/error.log" "$dir/valgrind.log")"
		exit 1
	}
}

log "profiling (four runs under callgrind)"
run worker 0 worker fg
run master 0 all daemon
run tls 1 all fg
run start 0 all daemon

args=()
m=$(cat "$TMP/worker/master.pid")
for f in "$TMP"/worker/callgrind.*; do
	[[ $f != */callgrind.$m ]] && args+=("worker=$f")
done
# The foreground process of a daemon run is its lowest pid.
fg=$(find "$TMP/master" -name 'callgrind.*' | sort -t. -k2 -n | head -1)
args+=("master=$TMP/master/callgrind.$(cat "$TMP/master/master.pid")~$fg")
for f in "$TMP"/start/callgrind.*; do args+=("start=$f"); done
for f in "$TMP"/tls/callgrind.*; do args+=("tls=$f"); done
python3 -B "$ROOT/bench/layout.py" "$BATON_BIN" "$OUT" "${args[@]}"
log "wrote $OUT; rebuild to apply it"
