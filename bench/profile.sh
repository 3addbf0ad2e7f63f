#!/usr/bin/env bash
# bench/profile.sh: instructions per request in the worker, with callgrind.
#
# Wall-clock numbers on a shared machine are noise; instruction counts are
# not. This runs Baton (workers = 1, access log off, as bench/static.sh
# configures it) under `valgrind --tool=callgrind`, which follows the forked
# worker and writes one file per pid, and drives it with a bounded python3
# client. Each load runs twice, with N and 2N requests, and the worker's
# instructions per request are (I(2N) - I(N)) / N: start-up, the idle ticks
# and the exit cancel out.
#
#   ka     N keep-alive GETs of a 1 KiB file on one connection (wrk's request)
#   close  N GETs of the 1 KiB file, a new connection each, Connection: close
#   10m    N keep-alive GETs of a 10 MiB file
#   h2     N GETs of a 1 KiB file over one HTTP/2 TLS connection, 10 streams
#          at a time (h2load -c 1 -m 10)
#   h2-100k  the same with a 100 KiB file
#
# With PEERS="h2o", the h2 loads are also run against h2o (one thread,
# same certificate and files) under callgrind: user-space instructions
# per request side by side, which a shared machine cannot disturb.
#
# Knobs: BATON_BIN (default $CARGO_TARGET_DIR/release/baton), LOADS="ka close 10m",
#        N_KA=2000 N_CLOSE=1000 N_10M=10 N_H2=5000 N_H2_100K=500, PEERS="",
#        KEEP_TMP=1 (keeps the callgrind files for callgrind_annotate: the
#        worker's is the largest callgrind.out.<pid> of each run directory).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BATON_BIN=${BATON_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/baton}
LOADS=${LOADS:-ka close 10m}
KEEP_TMP=${KEEP_TMP:-0}
PEERS=${PEERS:-}
BENCH=profile.sh
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
declare -A N=([ka]=${N_KA:-2000} [close]=${N_CLOSE:-1000} [10m]=${N_10M:-10}
	[h2]=${N_H2:-5000} [h2-100k]=${N_H2_100K:-500})

TMP=$(mktemp -d -t baton-profile.XXXXXX)
chmod 755 "$TMP"
cleanup() { if [[ $KEEP_TMP == 1 ]]; then echo "kept $TMP" >&2; else rm -rf -- "$TMP"; fi; }
trap cleanup EXIT

mkdir -p "$TMP/www"
head -c 1024 /dev/zero | tr '\0' a >"$TMP/www/1k.html"
head -c $((10 << 20)) /dev/zero >"$TMP/www/10m.bin"
head -c 1024 /dev/urandom >"$TMP/www/1k.bin"
head -c 102400 /dev/urandom >"$TMP/www/100k.bin"
chmod -R a+rX "$TMP"
install_missing valgrind=valgrind
if [[ " $LOADS " == *" h2"* ]]; then
	install_missing h2load=nghttp2-client openssl=openssl curl=curl
	[[ " $PEERS " == *" h2o "* ]] && install_missing h2o=h2o
	make_ecdsa_cert "$TMP"
fi

# The largest instruction count among a run directory's callgrind files
# (the worker's, or the serving process's).
most_instructions() {
	local f best=0 ir
	for f in "$1"/callgrind.out.*; do
		ir=$(awk '/^summary:/ { print $2 }' "$f")
		((${ir:-0} > best)) && best=$ir
	done
	echo "$best"
}

# run_h2 SERVER FILE COUNT: SERVER (baton or h2o) under callgrind, COUNT
# HTTP/2 GETs of FILE from h2load, the serving process's instructions.
run_h2() {
	local server=$1 file=$2 count=$3 dir=$TMP/$1-$2-$3 port pid
	mkdir -p "$dir"
	chmod 777 "$dir"
	port=$(free_port)
	if [[ $server == baton ]]; then
		cat >"$dir/conf.toml" <<-EOF
			workers = 1
			pid_file = "$dir/pid"
			error_log = "$dir/error.log"
			access_log = "off"
			[[site]]
			listen = ["127.0.0.1:$port"]
			root = "$TMP/www"
			tls = { cert = "$TMP/cert.pem", key = "$TMP/key.pem" }
		EOF
		valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out.%p" \
			"$BATON_BIN" -c "$dir/conf.toml" >"$dir/valgrind.log" 2>&1 &
	else
		# As root, h2o would switch to nobody and could not write its
		# callgrind file: it stays root here (a temp dir, loopback).
		{
			[[ $(id -u) == 0 ]] && echo 'user: root'
			printf 'num-threads: 1\nerror-log: %s\n' "$dir/h2o.log"
			h2o_tls_site "$port" "$TMP/www" "$TMP/cert.pem" "$TMP/key.pem"
		} >"$dir/h2o.conf"
		valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out.%p" \
			h2o -c "$dir/h2o.conf" >"$dir/valgrind.log" 2>&1 &
	fi
	pid=$!
	for _ in $(seq 600); do
		curl -sk -o /dev/null "https://127.0.0.1:$port/1k.bin" && break
		sleep 0.1
	done
	h2load -n "$count" -c 1 -m 10 "https://127.0.0.1:$port/$file" >"$dir/h2load.log" 2>&1
	if [[ $server == baton ]]; then kill -QUIT "$(cat "$dir/pid")"; else kill -TERM "$pid"; fi
	wait "$pid"
	most_instructions "$dir"
}

# One run: start baton under callgrind, wait for it, drive COUNT requests,
# stop it gracefully, print the worker's total instructions.
run() {
	local load=$1 count=$2 dir=$TMP/$1-$2 port
	mkdir -p "$dir"
	# Workers run as nobody when started as root: callgrind writes their file.
	chmod 777 "$dir"
	port=$(free_port)
	cat >"$dir/conf.toml" <<-EOF
		workers = 1
		pid_file = "$dir/pid"
		error_log = "$dir/error.log"
		keepalive_requests = 1000000
		[[site]]
		listen = ["127.0.0.1:$port"]
		root = "$TMP/www"
	EOF
	valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out.%p" \
		"$BATON_BIN" -c "$dir/conf.toml" >"$dir/valgrind.log" 2>&1 &
	local vg=$!
	python3 - "$port" "$load" "$count" <<-'PY'
		import socket, sys, time
		port, load, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
		path = "/10m.bin" if load == "10m" else "/1k.html"
		req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode()
		if load == "close":
		    req += b"Connection: close\r\n"
		req += b"\r\n"
		def connect():
		    for _ in range(600):
		        try:
		            return socket.create_connection(("127.0.0.1", port))
		        except OSError:
		            time.sleep(0.1)
		    sys.exit("baton did not start")
		def one(s, buf):
		    s.sendall(req)
		    while b"\r\n\r\n" not in buf:
		        d = s.recv(65536)
		        if not d: sys.exit("eof in head")
		        buf += d
		    head, _, rest = buf.partition(b"\r\n\r\n")
		    assert head.startswith(b"HTTP/1.1 200"), head
		    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
		    while len(rest) < length:
		        d = s.recv(1 << 20)
		        if not d: sys.exit("eof in body")
		        rest += d
		    return rest[length:]
		# Wait until the worker answers (it starts slowly under valgrind).
		s = connect()
		s.close()
		if load == "close":
		    for _ in range(count):
		        s = socket.create_connection(("127.0.0.1", port))
		        one(s, b"")
		        s.close()
		else:
		    s = socket.create_connection(("127.0.0.1", port))
		    buf = b""
		    for _ in range(count):
		        buf = one(s, buf)
		    s.close()
	PY
	kill -QUIT "$(cat "$dir/pid")"
	wait "$vg"
	most_instructions "$dir"
}

printf '| load | server | requests | instructions | instructions per request |\n'
printf '| --- | --- | ---: | ---: | ---: |\n'
for load in $LOADS; do
	n=${N[$load]}
	servers=baton
	[[ $load == h2* ]] && servers="baton $PEERS"
	for server in $servers; do
		case $load in
		h2) file=1k.bin ;;
		h2-100k) file=100k.bin ;;
		*) file= ;;
		esac
		if [[ -n $file ]]; then
			a=$(run_h2 "$server" "$file" "$n")
			b=$(run_h2 "$server" "$file" $((2 * n)))
		else
			a=$(run "$load" "$n")
			b=$(run "$load" $((2 * n)))
		fi
		printf '| %s | %s | %s / %s | %s / %s | %s |\n' "$load" "$server" "$n" $((2 * n)) "$a" "$b" $(((b - a) / n))
	done
done
