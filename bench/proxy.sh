#!/usr/bin/env bash
# bench/proxy.sh: reverse proxying, Baton beside nginx (proxy_pass with an
# upstream keepalive pool) and HAProxy, all in front of the same backend:
# nginx serving a 1 KiB and a 10 MiB file.
#
# Every proxy: 2 workers (HAProxy: nbthread 2, its model), access logs off,
# upstream keep-alive on, on 127.0.0.1 in a temp dir. Loads run interleaved
# (every proxy for one load, then the next load) so noise on a shared
# machine hits all alike:
#
#   ka     1 KiB, keep-alive:          wrk -t1 -c50 -dDs --latency
#   close  1 KiB, connection per req:  wrk -t1 -c50 -dDs --latency -H 'Connection: close'
#   10m    10 MiB, keep-alive:         wrk -t1 -c8  -dDs
#
# then the RSS of all each proxy's processes, and a table (p99 is the
# keep-alive run's). The CPU columns are the proxy's processes' CPU time
# (user + system) during a load divided by the requests it served: on a
# busy shared machine they move far less than req/s do. Exits 0 whatever the numbers; bounded by DURATION.
#
# Knobs: DURATION=5 (seconds per run), SERVERS="baton nginx haproxy",
#        BATON_BIN=path (skip cargo build --release), KEEP_TMP=1.
set -uo pipefail

BENCH=proxy.sh
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
SERVERS=${SERVERS:-baton nginx haproxy}

# nginx is the backend whatever SERVERS says.
install_missing wrk=wrk python3=python3 nginx=nginx-light
[[ $SERVERS == *haproxy* ]] && install_missing haproxy=haproxy
if [[ $SERVERS == *baton* ]]; then build_baton || exit 0; fi

make_tmp proxy
STOP_ALSO=(backend)

WWW=$TMP/www
mkdir -p "$WWW"
head -c 1024 /dev/urandom | base64 -w0 | head -c 1024 >"$WWW/1k.html"
head -c $((10 << 20)) /dev/urandom >"$WWW/10m.bin"
chmod -R a+rX "$TMP"

NGINX_USER=
[[ -n $USER_LINE ]] && NGINX_USER="user nobody nogroup;"

# The backend: nginx, 2 workers, the files.
PORT[backend]=$(free_port)
B=$TMP/backend
mkdir -p "$B"
PIDFILE[backend]=$B/pid
cat >"$B/nginx.conf" <<NGX
worker_processes 2;
pid $B/pid;
error_log $B/error.log;
$NGINX_USER
events { worker_connections 4096; }
http {
  access_log off; sendfile on; tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path $B; proxy_temp_path $B; fastcgi_temp_path $B; uwsgi_temp_path $B; scgi_temp_path $B;
  server { listen 127.0.0.1:${PORT[backend]}; root $WWW; }
}
NGX
"$(bin nginx)" -c "$B/nginx.conf" -p "$B" || { log "the backend did not start"; exit 0; }

write_configs() {
	local s=$1 p=${PORT[$1]} d=$TMP/$1 up=127.0.0.1:${PORT[backend]}
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
			echo "[[upstream]]"
			echo "name = \"backend\""
			echo "servers = [\"$up\"]"
			echo "keepalive = 64"
			echo "keepalive_requests = 1000000"
			echo "[[site]]"
			echo "listen = [\"127.0.0.1:$p\"]"
			echo "[[site.route]]"
			echo "path = \"/\""
			echo "proxy = \"backend\""
		} >"$d/conf.toml"
		;;
	nginx)
		cat >"$d/nginx.conf" <<-NGX
			worker_processes 2;
			pid $d/pid;
			error_log $d/error.log;
			$NGINX_USER
			events { worker_connections 4096; }
			http {
			  access_log off;
			  keepalive_requests 1000000;
			  client_body_temp_path $d; proxy_temp_path $d; fastcgi_temp_path $d; uwsgi_temp_path $d; scgi_temp_path $d;
			  upstream backend { server $up; keepalive 64; keepalive_requests 1000000; }
			  server {
			    listen 127.0.0.1:$p;
			    location / {
			      proxy_pass http://backend;
			      proxy_http_version 1.1;
			      proxy_set_header Connection "";
			    }
			  }
			}
		NGX
		;;
	haproxy)
		cat >"$d/haproxy.cfg" <<-HAP
			global
			  nbthread 2
			  pidfile $d/pid
			  daemon
			defaults
			  mode http
			  timeout connect 5s
			  timeout client 60s
			  timeout server 60s
			  option http-keep-alive
			  http-reuse always
			frontend f
			  bind 127.0.0.1:$p
			  default_backend b
			backend b
			  server s1 $up
		HAP
		;;
	esac
}

start() {
	local s=$1 d=$TMP/$1
	case $s in
	baton) "$BATON_BIN" -c "$d/conf.toml" --daemon ;;
	nginx) "$(bin nginx)" -c "$d/nginx.conf" -p "$d" ;;
	haproxy) "$(bin haproxy)" -f "$d/haproxy.cfg" ;;
	esac >"$d/start.log" 2>&1
	wait_up "$s" /1k.html
}

# wrk → "req/s MB/s p99"
run_wrk() {
	local s=$1 load=$2 out
	case $load in
	ka) out=$(timeout $((DURATION + 10)) wrk -t1 -c50 -d"${DURATION}s" --latency "http://127.0.0.1:${PORT[$s]}/1k.html" 2>&1) ;;
	close) out=$(timeout $((DURATION + 10)) wrk -t1 -c50 -d"${DURATION}s" --latency -H 'Connection: close' "http://127.0.0.1:${PORT[$s]}/1k.html" 2>&1) ;;
	10m) out=$(timeout $((DURATION + 10)) wrk -t1 -c8 -d"${DURATION}s" "http://127.0.0.1:${PORT[$s]}/10m.bin" 2>&1) ;;
	esac
	echo "$out" >"$TMP/$s/wrk-$load.txt"
	wrk_numbers "$s $load" <<<"$out"
}

# run_wrk, and the proxy's CPU time per request: "req/s MB/s p99 cpu-us".
measure() {
	local s=$1 load=$2 pid before after numbers requests
	pid=$(cat "${PIDFILE[$s]}" 2>/dev/null || echo 0)
	before=$(cpu_tree "$pid")
	numbers=$(run_wrk "$s" "$load")
	after=$(cpu_tree "$pid")
	requests=$(awk '/requests in/ { print $1 }' "$TMP/$s/wrk-$load.txt")
	echo "$numbers $(usec_per_req $((after - before)) "${requests:-0}")"
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
		R[$s,$load]=$(measure "$s" "$load")
	done
done

printf '\n| proxy | 1 KiB keep-alive req/s | 1 KiB conn-per-request req/s | 10 MiB MB/s | p99 keep-alive | RSS after load (MiB) | CPU µs/req keep-alive | CPU µs/req conn-per-request |\n'
printf '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n'
for s in "${RUNNING[@]}"; do
	pid=$(cat "${PIDFILE[$s]}" 2>/dev/null || echo 0)
	rss=$(rss_tree "$pid")
	read -r ka _ p99 cpu_ka <<<"${R[$s,ka]}"
	read -r cl _ _ cpu_cl <<<"${R[$s,close]}"
	read -r _ mb _ _ <<<"${R[$s,10m]}"
	printf '| %s | %s | %s | %s | %s | %.1f | %s | %s |\n' "$s" "$ka" "$cl" "$mb" "$p99" "$(awk -v k="$rss" 'BEGIN { print k/1024 }')" "$cpu_ka" "$cpu_cl"
done
commit_line
exit 0
