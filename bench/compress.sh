#!/usr/bin/env bash
# bench/compress.sh: the CPU cost of on-the-fly compression per request.
#
# A 64 KiB HTML page, fetched with wrk (-t1 -c16, keep-alive) with and
# without Accept-Encoding, from:
#
#   baton-cached   compress = true, the file cache on (the default): the
#                  compressed variant is made once per file version and
#                  then served from memory, like the identity body
#   baton-stream   compress = true, file_cache_size = 0: every request
#                  compresses the file again while sending it (chunked)
#   nginx          gzip on, gzip_comp_level 6 (Baton's gzip level), which
#                  compresses on every request
#
# Each server has 2 workers and no access log. Prints req/s per encoding
# and the ratio to the same server's identity req/s (1.00 = compression
# costs nothing); a ratio is the per-request CPU cost seen as throughput.
# Exits 0 whatever happens (a missing tool is reported, not fatal).
#
# Knobs: DURATION=5 (seconds per run), SERVERS="baton-cached baton-stream
# nginx", BATON_BIN=path (skip cargo build --release), KEEP_TMP=1.
set -uo pipefail

BENCH=compress.sh
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
SERVERS=${SERVERS:-baton-cached baton-stream nginx}

install_missing wrk=wrk python3=python3
[[ $SERVERS == *nginx* ]] && install_missing nginx=nginx-light
have wrk || { log "wrk is missing: nothing measured"; exit 0; }
if [[ $SERVERS == *baton* ]]; then build_baton || exit 0; fi

make_tmp compress

WWW=$TMP/www
mkdir -p "$WWW"
# 64 KiB of HTML that compresses like a real page (about 4:1 with gzip).
python3 - "$WWW/page.html" <<'PY'
import sys
out, i = [], 0
while sum(map(len, out)) < 65536:
    out.append(f'<li class="row-{i % 7}"><a href="/item/{i * 7919 % 10007}">Item {i}</a> updated {i % 28 + 1} Nov</li>\n')
    i += 1
open(sys.argv[1], "w").write("".join(out)[:65536])
PY
chmod -R a+rX "$TMP"


write_config() {
	local s=$1 p=${PORT[$1]} d=$TMP/$1
	mkdir -p "$d"
	PIDFILE[$s]=$d/pid
	case $s in
	baton-*)
		{
			[[ -n $USER_LINE ]] && echo 'user = "nobody"'
			echo "workers = 2"
			echo "pid_file = \"$d/pid\""
			echo "error_log = \"$d/error.log\""
			echo "keepalive_requests = 1000000"
			[[ $s == baton-stream ]] && echo "file_cache_size = 0"
			echo "[[site]]"
			echo "listen = [\"127.0.0.1:$p\"]"
			echo "root = \"$WWW\""
			echo "compress = true"
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
			  gzip on; gzip_comp_level 6; gzip_vary on;
			  client_body_temp_path $d; proxy_temp_path $d; fastcgi_temp_path $d; uwsgi_temp_path $d; scgi_temp_path $d;
			  server { listen 127.0.0.1:$p; root $WWW; }
			}
		NGX
		;;
	esac
}

start() {
	local s=$1 d=$TMP/$1
	case $s in
	baton-*) "$BATON_BIN" -c "$d/conf.toml" --daemon ;;
	nginx) "$(bin nginx)" -c "$d/nginx.conf" ;;
	esac >"$d/start.log" 2>&1
	wait_up "$s" /page.html
}

# req/s of one wrk run, or "-".
run() {
	local port=$1 ae=$2 out
	local -a hdr=()
	[[ -n $ae ]] && hdr=(-H "Accept-Encoding: $ae")
	out=$(wrk -t1 -c16 -d"${DURATION}s" "${hdr[@]}" "http://127.0.0.1:$port/page.html" 2>&1)
	awk '/^Requests\/sec:/ {printf "%.0f", $2; found=1} END {if (!found) printf "-"}' <<<"$out"
}

declare -A RPS=()
ENCODINGS=(identity gzip br zstd)
for s in $SERVERS; do
	[[ $s == nginx ]] && ! have nginx && { log "nginx missing: skipped"; continue; }
	PORT[$s]=$(free_port)
	write_config "$s"
	start "$s" || continue
	for e in "${ENCODINGS[@]}"; do
		# nginx compresses gzip only: its br and zstd rows are identity.
		[[ $s == nginx && ($e == br || $e == zstd) ]] && continue
		ae=$e
		[[ $e == identity ]] && ae=
		# Warm up (the cached variant is made on the first request).
		wrk -t1 -c1 -d1s ${ae:+-H "Accept-Encoding: $ae"} "http://127.0.0.1:${PORT[$s]}/page.html" >/dev/null 2>&1
		RPS[$s/$e]=$(run "${PORT[$s]}" "$ae")
		log "$s $e: ${RPS[$s/$e]} req/s"
	done
done

printf '\n64 KiB HTML, wrk -t1 -c16 -d%ss, keep-alive; req/s [ratio to identity]\n' "$DURATION"
printf '%-14s' server
for e in "${ENCODINGS[@]}"; do printf '%18s' "$e"; done
printf '\n'
for s in $SERVERS; do
	printf '%-14s' "$s"
	base=${RPS[$s/identity]:--}
	for e in "${ENCODINGS[@]}"; do
		v=${RPS[$s/$e]:--}
		if [[ $v != - && $base != - && $base != 0 ]]; then
			ratio=$(awk -v a="$v" -v b="$base" 'BEGIN {printf "%.2f", a / b}')
			printf '%18s' "$v [$ratio]"
		else
			printf '%18s' "$v"
		fi
	done
	printf '\n'
done
commit_line
exit 0
