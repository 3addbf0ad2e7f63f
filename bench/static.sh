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

BENCH=static.sh
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
SERVERS=${SERVERS:-baton nginx lighttpd h2o}

install_missing wrk=wrk python3=python3
[[ $SERVERS == *nginx* ]] && install_missing nginx=nginx-light
[[ $SERVERS == *lighttpd* ]] && install_missing lighttpd=lighttpd
[[ $SERVERS == *h2o* ]] && install_missing h2o=h2o
if [[ $SERVERS == *baton* ]]; then build_baton || exit 0; fi

make_tmp static

WWW=$TMP/www
mkdir -p "$WWW"
head -c 1024 /dev/urandom | base64 -w0 | head -c 1024 >"$WWW/1k.html"
head -c $((10 << 20)) /dev/urandom >"$WWW/10m.bin"
chmod -R a+rX "$TMP"


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
	wait_up "$s" /1k.html
}

# wrk → "req/s MB/s p99"
run_wrk() {
	local s=$1 load=$2 url out
	case $load in
	ka) out=$(timeout $((DURATION + 10)) wrk -t1 -c50 -d"${DURATION}s" "http://127.0.0.1:${PORT[$s]}/1k.html" 2>&1) ;;
	close) out=$(timeout $((DURATION + 10)) wrk -t1 -c50 -d"${DURATION}s" -H 'Connection: close' "http://127.0.0.1:${PORT[$s]}/1k.html" 2>&1) ;;
	10m) out=$(timeout $((DURATION + 10)) wrk -t1 -c8 -d"${DURATION}s" "http://127.0.0.1:${PORT[$s]}/10m.bin" 2>&1) ;;
	esac
	echo "$out" >"$TMP/$s/wrk-$load.txt"
	wrk_numbers "$s $load" <<<"$out"
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
	read -r ka _ _ <<<"${R[$s,ka]}"
	read -r cl _ _ <<<"${R[$s,close]}"
	read -r _ mb _ <<<"${R[$s,10m]}"
	printf '| %s | %s | %s | %s | %.1f |\n' "$s" "$ka" "$cl" "$mb" "$(awk -v k="$rss" 'BEGIN { print k/1024 }')"
done
commit_line
exit 0
