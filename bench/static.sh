#!/usr/bin/env bash
# bench/static.sh: static file serving, Baton beside nginx, lighttpd and h2o.
#
# Every server: 2 workers (h2o: 2 threads, its model), access logs off,
# sendfile on where the server has it (h2o has no sendfile), on 127.0.0.1 in
# a temp dir. Loads run interleaved (every server for one load, then the
# next load) so noise on a shared machine hits all alike:
#
#   ka     1 KiB file, keep-alive:          wrk -t1 -c50 -dDs
#   close  1 KiB file, connection per req:  wrk -t1 -c50 -dDs -H 'Connection: close'
#   10m    10 MiB file, keep-alive:         wrk -t1 -c8  -dDs
#
# then the RSS of all each server's processes (master and workers), and a
# table. Exits 0 whatever the numbers; bounded by DURATION.
#
# Knobs: DURATION=5 (seconds per run), SERVERS="baton nginx lighttpd h2o",
#        BATON_BIN=path (skip cargo build --release), KEEP_TMP=1.
set -uo pipefail

DURATION=${DURATION:-5}
SERVERS=${SERVERS:-baton nginx lighttpd h2o}
BATON_BIN=${BATON_BIN:-}
KEEP_TMP=${KEEP_TMP:-0}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

log() { printf 'static.sh: %s\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 ]]; }
bin() { command -v "$1" 2>/dev/null || echo "/usr/sbin/$1"; }

# ------------------------------------------------------------------ tools
install_missing() {
	local -a pkgs=()
	have wrk || pkgs+=(wrk)
	have python3 || pkgs+=(python3)
	[[ $SERVERS == *nginx* ]] && ! have nginx && pkgs+=(nginx-light)
	[[ $SERVERS == *lighttpd* ]] && ! have lighttpd && pkgs+=(lighttpd)
	[[ $SERVERS == *h2o* ]] && ! have h2o && pkgs+=(h2o)
	((${#pkgs[@]} > 0)) || return 0
	local -a sudo=()
	((EUID == 0)) || sudo=(sudo)
	log "installing: ${pkgs[*]}"
	export DEBIAN_FRONTEND=noninteractive
	"${sudo[@]}" apt-get update -qq || true
	# Do not let the packages start their own daemons on port 80.
	printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
	"${sudo[@]}" chmod +x /usr/sbin/policy-rc.d
	"${sudo[@]}" apt-get install -y -qq "${pkgs[@]}" ||
		"${sudo[@]}" apt-get install -y -qq "${pkgs[@]/nginx-light/nginx}" || log "apt-get install failed"
	"${sudo[@]}" rm -f /usr/sbin/policy-rc.d
}
install_missing

if [[ $SERVERS == *baton* && -z $BATON_BIN ]]; then
	target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
	log "building baton: cargo build --release"
	(cd "$ROOT" && cargo build --release -q) || { log "build failed"; exit 0; }
	BATON_BIN=$target_dir/release/baton
fi

# --------------------------------------------------------------- temp dir
if ((EUID == 0)); then TMP=$(mktemp -d /tmp/baton-static.XXXXXX); else TMP=$(mktemp -d -t baton-static.XXXXXX); fi
chmod 755 "$TMP"
declare -A PORT=() PIDFILE=()
RUNNING=()

cleanup() {
	set +e
	local s pid
	for s in "${RUNNING[@]}"; do
		pid=$(cat "${PIDFILE[$s]}" 2>/dev/null)
		[[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null
	done
	sleep 1
	for s in "${RUNNING[@]}"; do
		pid=$(cat "${PIDFILE[$s]}" 2>/dev/null)
		[[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null
	done
	[[ $KEEP_TMP == 1 ]] && log "kept $TMP" || rm -rf -- "$TMP"
}
trap cleanup EXIT INT TERM

WWW=$TMP/www
mkdir -p "$WWW"
head -c 1024 /dev/urandom | base64 -w0 | head -c 1024 >"$WWW/1k.html"
head -c $((10 << 20)) /dev/urandom >"$WWW/10m.bin"
chmod -R a+rX "$TMP"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
USER_LINE=
((EUID == 0)) && USER_LINE=1

write_configs() {
	local s=$1 p=${PORT[$1]} d=$TMP/$1
	mkdir -p "$d"
	PIDFILE[$s]=$d/pid
	case $s in
	baton)
		{
			[[ -n $USER_LINE ]] && echo 'user = "nobody"'
			echo "workers = 2"
			echo "pid_file = \"$d/pid\""
			echo "error_log = \"$d/error.log\""
			echo "keepalive_requests = 1000000"
			echo "[[site]]"
			echo "listen = [\"127.0.0.1:$p\"]"
			echo "root = \"$WWW\""
		} >"$d/conf.toml"
		;;
	nginx)
		cat >"$d/nginx.conf" <<-NGX
			worker_processes 2;
			pid $d/pid;
			error_log $d/error.log;
			$([[ -n $USER_LINE ]] && echo "user nobody nogroup;")
			events { worker_connections 4096; }
			http {
			  access_log off; sendfile on; tcp_nopush on;
			  keepalive_requests 1000000;
			  client_body_temp_path $d; proxy_temp_path $d; fastcgi_temp_path $d; uwsgi_temp_path $d; scgi_temp_path $d;
			  server { listen 127.0.0.1:$p; root $WWW; }
			}
		NGX
		;;
	lighttpd)
		# lighttpd opens its error log after dropping to nobody.
		[[ -n $USER_LINE ]] && chown nobody "$d"
		cat >"$d/lighttpd.conf" <<-LTD
			server.document-root = "$WWW"
			server.bind = "127.0.0.1"
			server.port = $p
			server.pid-file = "$d/pid"
			server.errorlog = "$d/error.log"
			server.max-worker = 2
			server.network-backend = "sendfile"
			server.max-keep-alive-requests = 1000000
			server.max-connections = 4096
			$([[ -n $USER_LINE ]] && printf 'server.username = "nobody"\nserver.groupname = "nogroup"')
		LTD
		;;
	h2o)
		cat >"$d/h2o.conf" <<-H2O
			num-threads: 2
			pid-file: $d/pid
			error-log: $d/error.log
			$([[ -n $USER_LINE ]] && echo "user: nobody")
			listen:
			  host: 127.0.0.1
			  port: $p
			hosts:
			  default:
			    paths:
			      /:
			        file.dir: $WWW
		H2O
		;;
	esac
}

start() {
	local s=$1 d=$TMP/$1
	case $s in
	baton) "$BATON_BIN" -c "$d/conf.toml" --daemon ;;
	nginx) "$(bin nginx)" -c "$d/nginx.conf" -p "$d" ;;
	lighttpd) "$(bin lighttpd)" -f "$d/lighttpd.conf" ;;
	h2o) "$(bin h2o)" -c "$d/h2o.conf" -m daemon ;;
	esac >"$d/start.log" 2>&1
	local i
	for i in $(seq 50); do
		if curl -fsS -o /dev/null "http://127.0.0.1:${PORT[$s]}/1k.html" 2>/dev/null ||
			python3 - "${PORT[$s]}" <<-'PY' 2>/dev/null; then
				import sys, urllib.request
				urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/1k.html", timeout=1).read()
			PY
			RUNNING+=("$s")
			return 0
		fi
		sleep 0.1
	done
	log "$s did not start: $(cat "$d/start.log" "$d/error.log" 2>/dev/null | tail -3)"
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

# wrk → "req/s MB/s"
run_wrk() {
	local s=$1 load=$2 url out
	case $load in
	ka) out=$(timeout $((DURATION + 10)) wrk -t1 -c50 -d"${DURATION}s" "http://127.0.0.1:${PORT[$s]}/1k.html" 2>&1) ;;
	close) out=$(timeout $((DURATION + 10)) wrk -t1 -c50 -d"${DURATION}s" -H 'Connection: close' "http://127.0.0.1:${PORT[$s]}/1k.html" 2>&1) ;;
	10m) out=$(timeout $((DURATION + 10)) wrk -t1 -c8 -d"${DURATION}s" "http://127.0.0.1:${PORT[$s]}/10m.bin" 2>&1) ;;
	esac
	echo "$out" >"$TMP/$s/wrk-$load.txt"
	local rps mbs
	rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' <<<"$out")
	mbs=$(awk '/^Transfer\/sec:/ { v=$2; u=v; sub(/[0-9.]+/, "", u); sub(/[A-Za-z]+/, "", v);
		m = (u=="GB") ? 1024 : (u=="MB") ? 1 : (u=="KB") ? 1/1024 : 1/1048576; printf "%.0f", v*m }' <<<"$out")
	local errs
	errs=$(awk '/Non-2xx|Socket errors/ { print }' <<<"$out" | tr '\n' ' ')
	[[ -n $errs ]] && log "$s $load: $errs"
	echo "${rps:-0} ${mbs:-0}"
}

for s in $SERVERS; do
	PORT[$s]=$(free_port)
	write_configs "$s"
	start "$s" || true
done

declare -A R=()
for load in ka close 10m; do
	for s in "${RUNNING[@]}"; do
		log "$s: $load (${DURATION}s)"
		R[$s,$load]=$(run_wrk "$s" "$load")
	done
done

printf '\n| server | 1 KiB keep-alive req/s | 1 KiB conn-per-request req/s | 10 MiB MB/s | RSS of all processes (MiB) |\n'
printf '| --- | ---: | ---: | ---: | ---: |\n'
for s in "${RUNNING[@]}"; do
	pid=$(cat "${PIDFILE[$s]}" 2>/dev/null || echo 0)
	rss=$(rss_tree "$pid")
	read -r ka _ <<<"${R[$s,ka]}"
	read -r cl _ <<<"${R[$s,close]}"
	read -r _ mb <<<"${R[$s,10m]}"
	printf '| %s | %s | %s | %s | %.1f |\n' "$s" "$ka" "$cl" "$mb" "$(awk -v k="$rss" 'BEGIN { print k/1024 }')"
done
exit 0
