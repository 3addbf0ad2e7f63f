#!/usr/bin/env bash
# bench/reload.sh: failed requests across reloads, Baton and nginx side by side.
#
# Each server gets the same 1 KiB static file, the same wrk load and a reload
# every INTERVAL seconds while the load runs; the table at the end counts the
# requests wrk saw fail. See bench/README.md.
#
# Knobs (environment):
#   DURATION=20        seconds of load per phase (a whole number)
#   INTERVAL=0.25      seconds to sleep between two reload commands
#   CONNECTIONS=50     wrk connections (wrk -c)
#   SERVERS="baton nginx"  which servers to run, in this order
#   BATON_BIN=path     use this baton binary instead of `cargo build --release`
#   KEEP_TMP=1         keep the temp dir (configs, logs, wrk output) on exit
set -euo pipefail

DURATION=${DURATION:-20}
INTERVAL=${INTERVAL:-0.25}
CONNECTIONS=${CONNECTIONS:-50}
SERVERS=${SERVERS:-baton nginx}
BATON_BIN=${BATON_BIN:-}
KEEP_TMP=${KEEP_TMP:-0}

LOADS=(keep-alive close)
WORKERS=2
GRACE_SECS=10

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd)

log() { printf '[reload.sh] %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------- arguments

[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a whole number of seconds, not '$DURATION'"
if ! [[ $INTERVAL =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ ]] || ! awk -v i="$INTERVAL" 'BEGIN { exit !(i > 0) }'; then
	die "INTERVAL must be a positive number of seconds, not '$INTERVAL'"
fi
[[ $CONNECTIONS =~ ^[1-9][0-9]*$ ]] || die "CONNECTIONS must be a positive whole number, not '$CONNECTIONS'"
read -r -a SERVER_LIST <<<"$SERVERS"
((${#SERVER_LIST[@]} > 0)) || die "SERVERS is empty"
for s in "${SERVER_LIST[@]}"; do
	[[ $s == baton || $s == nginx ]] || die "unknown server '$s' in SERVERS (baton, nginx)"
done
# The reload loop stops when wrk ends, and in any case after this many rounds.
MAX_RELOADS=$(awk -v d="$DURATION" -v i="$INTERVAL" 'BEGIN { printf "%d", d / i + 5 }')

wants() {
	local s
	for s in "${SERVER_LIST[@]}"; do [[ $s == "$1" ]] && return 0; done
	return 1
}

# ------------------------------------------------------------------ tools

find_nginx() {
	if have nginx; then
		command -v nginx
	elif [[ -x /usr/sbin/nginx ]]; then
		echo /usr/sbin/nginx
	else
		return 1
	fi
}

install_missing() {
	local -a pkgs=()
	have wrk || pkgs+=(wrk)
	have python3 || pkgs+=(python3)
	local nginx_pkg=
	if wants nginx && ! find_nginx >/dev/null; then nginx_pkg=nginx-light; fi
	((${#pkgs[@]} > 0)) || [[ -n $nginx_pkg ]] || return 0
	local missing="${pkgs[*]} $nginx_pkg"
	have apt-get || die "missing: $missing (and no apt-get to install it)"
	local -a sudo=()
	if ((EUID != 0)); then
		have sudo || die "missing: $missing; run as root or install it"
		sudo=(sudo)
	fi
	log "installing: $missing"
	export DEBIAN_FRONTEND=noninteractive
	"${sudo[@]}" apt-get update -qq || log "apt-get update failed; trying the install anyway"
	# nginx-light is gone from newer Debian releases: plain nginx then.
	"${sudo[@]}" apt-get install -y -qq "${pkgs[@]}" $nginx_pkg ||
		{ [[ -n $nginx_pkg ]] && "${sudo[@]}" apt-get install -y -qq "${pkgs[@]}" nginx; } ||
		die "apt-get install failed"
}

install_missing
have wrk || die "wrk not found"
have python3 || die "python3 not found"
NGINX=
if wants nginx; then NGINX=$(find_nginx) || die "nginx not found"; fi

if wants baton; then
	if [[ -z $BATON_BIN ]]; then
		have cargo || die "cargo not found (or set BATON_BIN to a built baton)"
		target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
		[[ $target_dir == /* ]] || target_dir=$ROOT/$target_dir
		log "building baton: cargo build --release (in $ROOT)"
		(cd "$ROOT" && cargo build --release) || die "cargo build --release failed"
		BATON_BIN=$target_dir/release/baton
	fi
	[[ -x $BATON_BIN ]] || die "no baton binary at $BATON_BIN"
fi

# --------------------------------------------------------------- temp dir

declare -A PID=() PORT=() CONF=()
STARTED=()
WRK_PID=
LOOP_PID=

# When root, the workers run as nobody and must reach the doc root, so keep
# the temp dir under /tmp rather than wherever TMPDIR points (e.g. /root/...).
if ((EUID == 0)); then
	TMP=$(mktemp -d /tmp/baton-bench.XXXXXX)
else
	TMP=$(mktemp -d -t baton-bench.XXXXXX)
fi

# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	[[ -n $LOOP_PID ]] && kill "$LOOP_PID" 2>/dev/null
	[[ -n $WRK_PID ]] && kill "$WRK_PID" 2>/dev/null
	wait 2>/dev/null
	local s
	for s in "${STARTED[@]}"; do server_stop "$s"; done
	if [[ $KEEP_TMP == 1 ]]; then
		log "kept $TMP"
	else
		rm -rf -- "$TMP"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$TMP/www"
prefix='<!doctype html><html><head><title>reload bench</title></head><body><p>'
suffix=$'</p></body></html>\n'
{
	printf '%s' "$prefix"
	printf '%*s' $((1024 - ${#prefix} - ${#suffix})) '' | tr ' ' x
	printf '%s' "$suffix"
} >"$TMP/www/index.html"
[[ $(wc -c <"$TMP/www/index.html") -eq 1024 ]] || die "index.html is not 1024 bytes"

if ((EUID == 0)); then
	chmod 755 "$TMP" "$TMP/www"
	chmod 644 "$TMP/www/index.html"
fi

# One free port per server, all picked at once so that they differ.
read -r -a ports <<<"$(python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
' "${#SERVER_LIST[@]}")"
i=0
for s in "${SERVER_LIST[@]}"; do
	PORT[$s]=${ports[$i]}
	i=$((i + 1))
done

# ----------------------------------------------------------------- servers
# Every server is driven through the same five verbs; the phases below only
# call these, so Baton and nginx take the same code path.

write_config() {
	local s=$1
	case $s in
	baton)
		CONF[$s]=$TMP/baton.toml
		{
			((EUID == 0)) && echo 'user = "nobody"'
			cat <<-EOF
				workers = $WORKERS
				pid_file = "$TMP/baton.pid"
				grace = "${GRACE_SECS}s"
				error_log = "$TMP/baton-error.log"
				[[site]]
				listen = ["127.0.0.1:${PORT[$s]}"]
				root = "$TMP/www"
			EOF
		} >"${CONF[$s]}"
		;;
	nginx)
		CONF[$s]=$TMP/nginx.conf
		local user_line=
		if ((EUID == 0)); then
			local group=nogroup
			getent group nogroup >/dev/null || group=$(id -gn nobody)
			user_line="user nobody $group;"
		fi
		cat >"${CONF[$s]}" <<-EOF
			worker_processes $WORKERS;
			daemon on;
			master_process on;
			$user_line
			pid $TMP/nginx.pid;
			error_log $TMP/nginx-error.log warn;
			events { worker_connections 4096; }
			http {
			    access_log off;
			    sendfile on;
			    default_type text/html;
			    client_body_temp_path $TMP/nginx-client_body;
			    proxy_temp_path $TMP/nginx-proxy;
			    fastcgi_temp_path $TMP/nginx-fastcgi;
			    uwsgi_temp_path $TMP/nginx-uwsgi;
			    scgi_temp_path $TMP/nginx-scgi;
			    server {
			        listen 127.0.0.1:${PORT[$s]};
			        root $TMP/www;
			        index index.html;
			    }
			}
		EOF
		;;
	esac
}

pid_file() { echo "$TMP/$1.pid"; }
error_log() { echo "$TMP/$1-error.log"; }

# server_cmd SERVER ARGS...: run the server's own binary against our config,
# bounded in time: start (no ARGS for nginx, --daemon for baton), -s reload,
# -s quit.
server_cmd() {
	local s=$1
	shift
	case $s in
	baton) timeout 60 "$BATON_BIN" -c "${CONF[$s]}" "$@" ;;
	nginx) timeout 60 "$NGINX" -e "$(error_log nginx)" -p "$TMP" -c "${CONF[$s]}" "$@" ;;
	esac
}

# alive PID: running, and not a zombie left for a non-reaping init.
alive() {
	local st
	kill -0 "$1" 2>/dev/null || return 1
	st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
	[[ $st != Z* ]]
}

children() { ps -o pid= --ppid "$1" 2>/dev/null | awk '{ printf "%s%s", sep, $1; sep = " " }' || true; }

read_pid() {
	local f
	f=$(pid_file "$1")
	[[ -s $f ]] || return 1
	local p
	p=$(tr -dc '0-9' <"$f")
	[[ -n $p ]] && echo "$p"
}

tail_log() {
	local f
	f=$(error_log "$1")
	[[ -s $f ]] || return 0
	log "last lines of $f:"
	tail -n 15 "$f" | sed 's/^/    /' >&2
}

# Ready means it serves the whole 1 KiB file with a 200 (retried for 10 s).
READY_PY='
import sys, time, urllib.request
deadline = time.time() + 10
while True:
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
            body = r.read()
            if r.status == 200 and len(body) == 1024:
                sys.exit(0)
            err = f"status {r.status}, {len(body)} bytes"
    except Exception as e:
        err = str(e)
    if time.time() > deadline:
        print(f"GET {sys.argv[1]}: {err}", file=sys.stderr)
        sys.exit(1)
    time.sleep(0.1)
'

server_start() {
	local s=$1 rc=0 i
	write_config "$s"
	STARTED+=("$s")
	log "starting $s on 127.0.0.1:${PORT[$s]}"
	case $s in
	baton) server_cmd baton --daemon || rc=$? ;;
	nginx) server_cmd nginx || rc=$? ;;
	esac
	if ((rc != 0)); then
		tail_log "$s"
		die "$s failed to start (exit $rc)"
	fi
	for ((i = 0; i < 50; i++)); do
		PID[$s]=$(read_pid "$s") && alive "${PID[$s]}" && break
		PID[$s]=
		sleep 0.1
	done
	[[ -n ${PID[$s]} ]] || {
		tail_log "$s"
		die "$s started but no live pid in $(pid_file "$s")"
	}
	# Ready means it serves the whole 1 KiB file with a 200.
	if ! python3 -c "$READY_PY" "http://127.0.0.1:${PORT[$s]}/"; then
		tail_log "$s"
		die "$s (pid ${PID[$s]}) does not serve index.html"
	fi
	log "$s is up: master pid ${PID[$s]}, workers $(children "${PID[$s]}")"
}

# Stop by pid only: a graceful quit, then TERM, then KILL for the master and
# whatever children it still has.
# shellcheck disable=SC2317 # called from cleanup, the EXIT trap
server_stop() {
	local s=$1 pid i kids
	pid=${PID[$s]:-}
	[[ -n $pid ]] || pid=$(read_pid "$s") || return 0
	alive "$pid" || return 0
	log "stopping $s (pid $pid)"
	server_cmd "$s" -s quit >/dev/null 2>&1 || true
	for ((i = 0; i < 150; i++)); do
		alive "$pid" || return 0
		sleep 0.1
	done
	kids=$(children "$pid")
	log "$s did not quit; sending TERM to $pid $kids"
	# shellcheck disable=SC2086 # kids is a list of pids
	kill -TERM "$pid" $kids 2>/dev/null || true
	for ((i = 0; i < 30; i++)); do
		alive "$pid" || return 0
		sleep 0.1
	done
	# shellcheck disable=SC2086
	kill -KILL "$pid" $kids 2>/dev/null || true
}

# settle SERVER: wait (a while) for old generations to finish draining, so
# that one phase's leftovers do not weigh on the next phase.
settle() {
	local s=$1 i n
	for ((i = 0; i < (GRACE_SECS + 2) * 10; i++)); do
		n=$(children "${PID[$s]}" | wc -w)
		((n <= WORKERS)) && return 0
		sleep 0.1
	done
	log "$s still has $n children after $((GRACE_SECS + 2))s; going on"
}

# ------------------------------------------------------------------ phases

# reload_loop SERVER WRK_PID OUT: reload every INTERVAL while wrk runs, at
# most MAX_RELOADS times; writes "reloads failures" to OUT.
reload_loop() {
	local s=$1 wrk=$2 out=$3 n=0 fails=0
	while ((n < MAX_RELOADS)); do
		sleep "$INTERVAL"
		kill -0 "$wrk" 2>/dev/null || break
		if ! server_cmd "$s" -s reload >>"$TMP/$s-reload.log" 2>&1; then
			fails=$((fails + 1))
			echo "reload $((n + 1)) failed at $(date +%T.%N)" >>"$TMP/$s-reload.log"
		fi
		n=$((n + 1))
	done
	echo "$n $fails" >"$out"
}

# Fields, tab-separated: requests req/s connect read write timeout non2xx p99
parse_wrk() {
	awk '
		/ requests in / { req = $1 }
		/Socket errors:/ { gsub(",", ""); c = $4; r = $6; w = $8; t = $10 }
		/Non-2xx or 3xx responses:/ { n = $NF }
		/^Requests\/sec:/ { rps = $2 }
		/^ *99% / { p99 = $2 }
		END {
			if (req == "") { print "n/a\tn/a\tn/a\tn/a\tn/a\tn/a\tn/a\tn/a"; exit }
			printf "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\n", req, rps, c, r, w, t, n, (p99 == "" ? "n/a" : p99)
		}' "$1"
}

RESULTS=$TMP/results.tsv
: >"$RESULTS"

run_phase() {
	local s=$1 load=$2 tag=$1-$2
	local out=$TMP/$tag.wrk counts=$TMP/$tag.reloads wrk_rc=0
	local -a hdr=()
	[[ $load == close ]] && hdr=(-H 'Connection: close')
	local before
	before=$(children "${PID[$s]}")
	log "$s $load: wrk -t1 -c$CONNECTIONS -d${DURATION}s, a reload every ${INTERVAL}s"
	wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "${hdr[@]}" \
		"http://127.0.0.1:${PORT[$s]}/" >"$out" 2>&1 &
	WRK_PID=$!
	reload_loop "$s" "$WRK_PID" "$counts" &
	LOOP_PID=$!
	wait "$WRK_PID" || wrk_rc=$?
	WRK_PID=
	wait "$LOOP_PID" || true
	LOOP_PID=
	((wrk_rc == 0)) || log "wrk exited $wrk_rc: $(head -c 300 "$out")"

	local req rps c r w t n p99 reloads=n/a rfails=n/a failed=n/a
	IFS=$'\t' read -r req rps c r w t n p99 < <(parse_wrk "$out")
	[[ -s $counts ]] && read -r reloads rfails <"$counts"
	[[ $req != n/a ]] && failed=$((c + r + w + t + n))
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
		"$s" "$load" "$req" "$rps" "$failed" "$reloads" "$rfails" "$c" "$r" "$w" "$t" "$n" "$p99" >>"$RESULTS"
	log "$s $load: $req requests, $failed failed, $reloads reloads ($rfails failed)"
	if [[ $rfails != n/a ]] && ((rfails > 0)); then
		log "$s reload failures, last lines of $TMP/$s-reload.log:"
		tail -n 5 "$TMP/$s-reload.log" | sed 's/^/    /' >&2
	fi
	alive "${PID[$s]}" || {
		tail_log "$s"
		die "$s (pid ${PID[$s]}) died during the $load phase"
	}
	settle "$s"
	# A reload that exits 0 but starts no new workers would make a hollow zero.
	local after
	after=$(children "${PID[$s]}")
	if [[ $reloads != n/a ]] && ((reloads > rfails)) && [[ $after == "$before" ]]; then
		log "warning: $s still has the same workers ($after) after $reloads reloads"
	fi
}

# -------------------------------------------------------------------- main

for s in "${SERVER_LIST[@]}"; do server_start "$s"; done

# Interleaved (baton keep-alive, nginx keep-alive, baton close, nginx close)
# so that noise from the shared machine hits both alike.
for load in "${LOADS[@]}"; do
	for s in "${SERVER_LIST[@]}"; do run_phase "$s" "$load"; done
done

echo
echo "Reload benchmark: wrk -t1 -c$CONNECTIONS, ${DURATION}s per row, a reload every ${INTERVAL}s (sleep between reload commands)"
echo "failed = socket errors (connect+read+write+timeout) + non-2xx/3xx responses"
echo
fmt='%-6s  %-10s  %9s  %9s  %6s  %7s  %15s  %-15s  %7s  %8s\n'
# shellcheck disable=SC2059 # fmt is a format string held in a variable
printf "$fmt" server load requests req/s failed reloads reload_failures 'errs c/r/w/t' non2xx p99
while IFS=$'\t' read -r s load req rps failed reloads rfails c r w t n p99; do
	# shellcheck disable=SC2059
	printf "$fmt" "$s" "$load" "$req" "$rps" "$failed" "$reloads" "$rfails" "$c/$r/$w/$t" "$n" "$p99"
done <"$RESULTS"
echo

if wants baton; then
	awk -F'\t' '
		$1 == "baton" {
			rows++
			if ($5 == "n/a") unknown++; else failed += $5
			if ($6 != "n/a") reloads += $6
			if ($7 != "n/a") rfail += $7
		}
		END {
			extra = rfail ? sprintf(" (but %d reload commands failed)", rfail) : ""
			if (unknown) printf "Baton: failed requests unknown for %d of %d runs (wrk gave no result)\n", unknown, rows
			else if (failed == 0) printf "Baton: ZERO failed requests across %d reloads%s\n", reloads, extra
			else printf "Baton: %d failed requests across %d reloads%s\n", failed, reloads, extra
		}' "$RESULTS"
else
	echo "Baton: not run (SERVERS=$SERVERS)"
fi
exit 0
