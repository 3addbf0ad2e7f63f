#!/usr/bin/env bash
# bench/tls.sh: TLS handshakes per second and keep-alive requests per second
# over TLS, Baton beside nginx in one run.
#
#   handshake  1 KiB file, a new TLS connection per request:
#              wrk -t1 -c50 -dDs -H 'Connection: close' https://...
#   ka         1 KiB file over kept-alive TLS connections: wrk -t1 -c50 -dDs
#
# Same ECDSA P-256 certificate (made here with openssl), 2 workers each,
# access logs off, TLS 1.3 and 1.2 allowed, on 127.0.0.1 in a temp dir.
# Loads are interleaved (baton, nginx, baton, nginx) so noise on a shared
# machine hits both alike. Exits 0 whatever the numbers.
#
# Knobs: DURATION=5 (seconds per run), SERVERS="baton nginx",
#        BATON_BIN=path (skip cargo build --release), KEEP_TMP=1.
set -uo pipefail

SERVERS=${SERVERS:-baton nginx}
BENCH=tls.sh
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

peers=()
[[ " $SERVERS " == *" nginx "* ]] && peers+=(nginx=nginx-light)
install_missing wrk=wrk openssl=openssl curl=curl "${peers[@]}"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

build_baton || exit 1

# Servers here are recorded by pid (PIDS), not by pidfile.
make_pid_tmp

mkdir -p "$TMP/www"
head -c 1024 /dev/urandom | base64 -w0 | head -c 1024 >"$TMP/www/index.html"
make_ecdsa_cert "$TMP" # nginx reads the key as root; baton's master too

user_line=""
[[ $(id -u) == 0 ]] && user_line='user = "nobody"'
declare -A PORT
for s in $SERVERS; do PORT[$s]=$(free_port); done

if [[ " $SERVERS " == *" baton "* ]]; then
	cat >"$TMP/baton.toml" <<CONF
$user_line
workers = 2
pid_file = "$TMP/baton.pid"
error_log = "$TMP/baton.log"
access_log = "off"
[[site]]
listen = ["127.0.0.1:${PORT[baton]}"]
names = ["bench.test"]
root = "$TMP/www"
tls = { cert = "$TMP/cert.pem", key = "$TMP/key.pem" }
CONF
	"$BATON_BIN" -c "$TMP/baton.toml" --daemon || exit 1
	PIDS+=("$(cat "$TMP/baton.pid")")
fi
if [[ " $SERVERS " == *" nginx "* ]]; then
	cat >"$TMP/nginx.conf" <<CONF
worker_processes 2;
pid $TMP/nginx.pid;
error_log $TMP/nginx.log;
$([[ $(id -u) == 0 ]] && echo 'user nobody nogroup;')
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache off;
    server {
        listen 127.0.0.1:${PORT[nginx]} ssl;
        server_name bench.test;
        ssl_certificate $TMP/cert.pem;
        ssl_certificate_key $TMP/key.pem;
        root $TMP/www;
    }
}
CONF
	"$NGINX" -c "$TMP/nginx.conf" -p "$TMP" || exit 1
	sleep 0.5
	PIDS+=("$(cat "$TMP/nginx.pid")")
fi

for s in $SERVERS; do
	code=$(curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:${PORT[$s]}/")
	[[ $code == 200 ]] || { log "$s answers $code"; exit 1; }
done

declare -A RESULT
for load in handshake ka; do
	for s in $SERVERS; do
		args=(-t1 -c50 "-d${DURATION}s")
		[[ $load == handshake ]] && args+=(-H 'Connection: close')
		out=$(wrk "${args[@]}" "https://127.0.0.1:${PORT[$s]}/" 2>&1)
		rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
		errs=$(awk '/Non-2xx|Socket errors/' <<<"$out" | tr -s ' ' | paste -sd';')
		RESULT[$s,$load]="${rps:-?}${errs:+ ($errs)}"
		log "$s $load: ${RESULT[$s,$load]}"
	done
done

printf '\n| server | TLS handshakes/s (new connection per request) | 1 KiB keep-alive req/s over TLS |\n'
printf '| --- | --- | --- |\n'
for s in $SERVERS; do
	printf '| %s | %s | %s |\n' "$s" "${RESULT[$s,handshake]}" "${RESULT[$s,ka]}"
done
