#!/usr/bin/env bash
# bench/http2.sh: HTTP/2 over TLS, Baton beside nginx (http2 on) and h2o,
# the same site, the same certificate, the same worker count, one run:
#
#   1k     1 KiB file:            h2load -c 50 -m 10 -D DURATION
#   100k   100 KiB file:          h2load -c 50 -m 10 -D DURATION
#   page   a 64-file page load:   h2load -c 8 -m 64 -i (the 64 URLs) -D DURATION
#          (few connections, each with all 64 files in flight: a browser's
#          page over one HTTP/2 connection)
#
# Each row gives requests/s and the p99 latency of a request (from
# h2load's --log-file: every request's duration), the server's CPU time
# per request (user + system of all its processes and threads, divided by
# the requests served: what a noisy shared machine disturbs least), and
# Baton's req/s over the best of the others. ECDSA P-256 certificate made here, access logs
# off, WORKERS workers (nginx worker_processes, h2o num-threads), on
# 127.0.0.1 in a temp dir. Loads are interleaved per row so noise on a
# shared machine hits each server alike. Exits 0 whatever the numbers.
#
# Knobs: DURATION=5 (seconds per run), WORKERS=2, SERVERS="baton nginx h2o",
#        BATON_BIN=path (skip cargo build --release), KEEP_TMP=1.
set -uo pipefail

WORKERS=${WORKERS:-2}
SERVERS=${SERVERS:-baton nginx h2o}
BENCH=http2.sh
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

peers=()
[[ " $SERVERS " == *" nginx "* ]] && peers+=(nginx=nginx-light)
[[ " $SERVERS " == *" h2o "* ]] && peers+=(h2o=h2o)
install_missing h2load=nghttp2-client openssl=openssl curl=curl "${peers[@]}"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
H2O=$(command -v h2o || echo /usr/bin/h2o)

build_baton || exit 1

# Servers here are recorded by pid (PIDS), not by pidfile.
make_pid_tmp

mkdir -p "$TMP/www/page"
head -c 1024 /dev/urandom >"$TMP/www/1k.bin"
head -c 102400 /dev/urandom >"$TMP/www/100k.bin"
# A page: 64 files from 1 to 32 KiB (scripts, styles, images).
for i in $(seq 1 64); do
	head -c $(((i * 2654435761 % 32 + 1) * 1024)) /dev/urandom >"$TMP/www/page/f$i.bin"
done
chmod -R a+rX "$TMP/www"
make_ecdsa_cert "$TMP"

root=$([[ $(id -u) == 0 ]] && echo 1 || echo 0)
declare -A PORT PID
for s in $SERVERS; do PORT[$s]=$(free_port); done

if [[ " $SERVERS " == *" baton "* ]]; then
	cat >"$TMP/baton.toml" <<CONF
$([[ $root == 1 ]] && echo 'user = "nobody"')
workers = $WORKERS
pid_file = "$TMP/baton.pid"
error_log = "$TMP/baton.log"
access_log = "off"
[[site]]
listen = ["127.0.0.1:${PORT[baton]}"]
root = "$TMP/www"
tls = { cert = "$TMP/cert.pem", key = "$TMP/key.pem" }
CONF
	"$BATON_BIN" -c "$TMP/baton.toml" --daemon || exit 1
	PIDS+=("$(cat "$TMP/baton.pid")")
	PID[baton]=${PIDS[-1]}
fi
if [[ " $SERVERS " == *" nginx "* ]]; then
	cat >"$TMP/nginx.conf" <<CONF
worker_processes $WORKERS;
pid $TMP/nginx.pid;
error_log $TMP/nginx.log;
$([[ $root == 1 ]] && echo 'user nobody nogroup;')
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    ssl_protocols TLSv1.2 TLSv1.3;
    # h2load keeps its connections for the whole run: nginx's default of
    # 1000 requests per connection would end them (counted as failures).
    keepalive_requests 100000000;
    server {
        listen 127.0.0.1:${PORT[nginx]} ssl http2;
        ssl_certificate $TMP/cert.pem;
        ssl_certificate_key $TMP/key.pem;
        root $TMP/www;
    }
}
CONF
	"$NGINX" -c "$TMP/nginx.conf" -p "$TMP" || exit 1
	sleep 0.5
	PIDS+=("$(cat "$TMP/nginx.pid")")
	PID[nginx]=${PIDS[-1]}
fi
if [[ " $SERVERS " == *" h2o "* ]]; then
	{
		[[ $root == 1 ]] && echo 'user: nobody'
		printf 'num-threads: %s\npid-file: %s\nerror-log: %s\n' "$WORKERS" "$TMP/h2o.pid" "$TMP/h2o.log"
		h2o_tls_site "${PORT[h2o]}" "$TMP/www" "$TMP/cert.pem" "$TMP/key.pem"
	} >"$TMP/h2o.conf"
	"$H2O" -c "$TMP/h2o.conf" -m daemon >/dev/null 2>&1 || { log "h2o did not start: $(cat "$TMP/h2o.log" 2>/dev/null)"; exit 1; }
	for _ in $(seq 50); do [[ -s $TMP/h2o.pid ]] && break; sleep 0.1; done
	PIDS+=("$(cat "$TMP/h2o.pid")")
	PID[h2o]=${PIDS[-1]}
fi

for s in $SERVERS; do
	proto=$(curl -sk --http2 -o /dev/null -w '%{http_version} %{http_code}' "https://127.0.0.1:${PORT[$s]}/1k.bin")
	[[ $proto == "2 200" ]] || { log "$s answers '$proto' (want HTTP/2 200)"; exit 1; }
done

for i in $(seq 1 64); do echo "/page/f$i.bin"; done >"$TMP/page.txt"

# run SERVER LOAD: "req/s p99_ms cpu_us_per_request"
run() {
	local s=$1 load=$2 base="https://127.0.0.1:${PORT[$1]}"
	local args=(-D "$DURATION" --log-file="$TMP/h2load.log")
	case $load in
	1k) args+=(-c 50 -m 10 -t 2 "$base/1k.bin") ;;
	100k) args+=(-c 50 -m 10 -t 2 "$base/100k.bin") ;;
	page) args+=(-c 8 -m 64 -t 2 -B "$base" -i "$TMP/page.txt") ;;
	esac
	rm -f "$TMP/h2load.log"
	local out rps errs served p99 before after
	before=$(cpu_tree "${PID[$s]}")
	out=$(h2load "${args[@]}" 2>&1)
	after=$(cpu_tree "${PID[$s]}")
	rps=$(awk '/^finished in/ {print $4}' <<<"$out")
	served=$(awk '/^requests:/ {print $8}' <<<"$out")
	errs=$(awk '/^requests:/ {print $10}' <<<"$out")
	# The log: start time, status, duration in microseconds.
	p99=$(awk '{print $3}' "$TMP/h2load.log" 2>/dev/null | sort -n |
		awk '{a[NR] = $1} END {
			if (NR == 0) { print "?"; exit }
			i = int(NR * 0.99 + 0.5); if (i > NR) i = NR; if (i < 1) i = 1
			printf "%.2f", a[i] / 1000 }')
	[[ ${errs:-0} != 0 ]] && log "$s $load: $errs requests failed"
	echo "${rps:-?} ${p99:-?} $(usec_per_req $((after - before)) "${served:-0}")"
}

declare -A RPS P99 CPU
for load in 1k 100k page; do
	for s in $SERVERS; do
		read -r r p c < <(run "$s" "$load")
		RPS[$s,$load]=$r
		P99[$s,$load]=$p
		CPU[$s,$load]=$c
		log "$s $load: $r req/s, p99 $p ms, $c CPU µs/req"
	done
done

printf '\n| load | %s | baton / best other |\n' "$(for s in $SERVERS; do printf '%s req/s (p99 ms, CPU µs/req) | ' "$s"; done | sed 's/ | $//')"
printf '| --- |%s --- |\n' "$(for s in $SERVERS; do printf ' --- |'; done)"
for load in 1k 100k page; do
	row="| $load |"
	best=0
	for s in $SERVERS; do
		row+=" ${RPS[$s,$load]} (${P99[$s,$load]}, ${CPU[$s,$load]}) |"
		[[ $s != baton ]] && best=$(awk -v a="$best" -v b="${RPS[$s,$load]}" 'BEGIN {print (b+0 > a+0) ? b : a}')
	done
	ratio=$(awk -v a="${RPS[baton,$load]:-0}" -v b="$best" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}')
	printf '%s %s |\n' "$row" "$ratio"
done
printf '\n(%s workers each; h2load -D %ss; %s)\n' "$WORKERS" "$DURATION" "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"
