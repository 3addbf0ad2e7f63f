#!/usr/bin/env bash
# Checks packaging/openrc/baton.initd as far as possible without OpenRC:
# `sh -n`, shellcheck (if installed), then the script is sourced by a POSIX
# shell with stand-ins for OpenRC's helpers (ebegin, eend, checkpath) and
# its functions run against a scratch install: configtest, start the way
# OpenRC's start-stop-daemon would (command + command_args), reload with a
# good and a broken config, stop_pre refusing a restart on a broken config,
# configtest (-tt) beside the running server and against a taken port,
# upgrade (in place; a failing new binary refused with the old one
# serving; restarted when the binary has no upgrade; started when the
# master died; refused with a broken config).
#
#   sudo bash packaging/tests/openrc.sh
#   sudo BATON_BIN=/path/to/baton bash packaging/tests/openrc.sh
#
# Prints "N passed, N failed" last.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
REPO=$PWD
INITD=$REPO/packaging/openrc/baton.initd

# shellcheck source=packaging/tests/lib.sh
. "$REPO/packaging/tests/lib.sh"

check "sh -n" sh -n "$INITD"
if command -v shellcheck >/dev/null; then
    # SC2034: OpenRC reads the variables; SC2154: RC_CMD comes from OpenRC.
    check "shellcheck -s sh" shellcheck -s sh -e SC2034,SC2154 "$INITD"
fi
if [ "$(id -u)" != 0 ]; then
    echo "openrc.sh: the run checks need root; skipped"
    echo "$PASS passed, $FAIL failed"
    [ "$FAIL" = 0 ]
    exit
fi
if [ -z "${BATON_BIN:-}" ]; then
    cargo build --quiet --bin baton || exit 1
    BATON_BIN=${CARGO_TARGET_DIR:-$REPO/target}/debug/baton
fi

S=$(mktemp -d /tmp/baton-openrc.XXXXXX)
chmod 0755 "$S"
mkdir -p "$S/www" "$S/run" "$S/bin"
# The installed binary: a copy the test replaces by rename, as dpkg or apk
# would, under the running master.
install -m 0755 "$BATON_BIN" "$S/bin/baton"
BATON_BIN=$S/bin/baton
echo hi >"$S/www/index.html"
chmod -R a+rX "$S/www"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$S/baton.toml" <<EOF
user = "nobody"
workers = 1
grace = "5s"
pid_file = "$S/run/baton.pid"
error_log = "$S/error.log"

[[site]]
listen = ["127.0.0.1:$PORT"]
root = "$S/www"
EOF
cp "$S/baton.toml" "$S/good.toml"
MASTER=
STARTED=()
# Every master this test started (by pid): their groups are killed at exit.
trap 'for m in "${STARTED[@]}"; do kill -KILL -- "-$m" 2>/dev/null; done; rm -rf "$S"' EXIT

# run_fn RC_CMD FUNCTION: sources the script in sh with OpenRC stand-ins.
run_fn() {
    BATON_BINARY=${BATON_BIN_OVERRIDE:-$BATON_BIN} BATON_CONFIG=${BATON_CONFIG_OVERRIDE:-$S/baton.toml} BATON_PIDFILE=${BATON_PIDFILE_OVERRIDE:-$S/run/baton.pid} RC_CMD=$1 \
        sh -c '
        ebegin() { echo " * $*"; }
        eerror() { echo " * ERROR: $*" >&2; }
        ewarn() { echo " * WARNING: $*" >&2; }
        eend() { [ "$1" = 0 ] || echo " * ERROR: $2" >&2; return "$1"; }
        checkpath() { :; }
        # openrc-run defines start and stop before it sources the script
        # (its start-stop-daemon functions); these do what they do with
        # command, command_args, pidfile and retry.
        start() { eval "set -- $command_args"; start-stop-daemon --start --exec "$command" --pidfile "$pidfile" -- "$@"; }
        stop() { start-stop-daemon --stop --pidfile "$pidfile" --retry "$retry"; }
        . "$0"
        '"$2" "$INITD"
}

vars=$(run_fn start 'echo "$extra_started_commands|$extra_commands|$pidfile|$retry|$command $command_args"')
check "extra_started_commands=reload upgrade ($vars)" test "${vars%%|*}" = "reload upgrade"
check "pidfile and --pid-file agree" bash -c "[[ '$vars' == *'|$S/run/baton.pid|'*'--pid-file $S/run/baton.pid --daemon'* ]]"
check "retry is TERM then KILL" bash -c "[[ '$vars' == *'|TERM/45/KILL/5|'* ]]"
check "configtest on a good config" run_fn start configtest
check "start_pre (checkpath, configtest)" run_fn start start_pre

# Start as OpenRC's start-stop-daemon would: exec command with command_args.
cmdline=$(run_fn start 'echo "$command $command_args"')
# shellcheck disable=SC2086
check "command command_args starts the daemon" $cmdline
MASTER=$(cat "$S/run/baton.pid" 2>/dev/null)
STARTED+=("$MASTER")
gen() { "$BATON_BIN" --pid-file "$S/run/baton.pid" -s status | sed -n 's/^generation: //p'; }
check "it serves" bash -c "curl -fsS --max-time 5 http://127.0.0.1:$PORT/ | grep -q hi"
g1=$(gen)
check "reload with a good config" run_fn reload reload
check "reload made a new generation ($g1 -> $(gen))" test "$(gen)" -gt "${g1:-0}"
# configtest is -tt: the running server's own port passes, another
# process's does not.
check "configtest (-tt) beside the running server" run_fn start configtest
sed "s|$S/run/baton.pid|$S/run/other.pid|" "$S/good.toml" >"$S/other.toml"
out=$(BATON_CONFIG_OVERRIDE=$S/other.toml BATON_PIDFILE_OVERRIDE=$S/run/other.pid run_fn start configtest 2>&1)
rc=$?
check "configtest of a config whose port another server holds fails (exit $rc)" test "$rc" = 1
check "  with the located error" grep -q "other.toml:[0-9]*:[0-9]*: cannot bind 127.0.0.1:$PORT" <<<"$out"
# upgrade: same pid, still serving.
check "upgrade (binary upgrade in place)" run_fn upgrade upgrade
check "upgrade kept the master pid ($MASTER)" test "$(cat "$S/run/baton.pid" 2>/dev/null)" = "$MASTER"
check "it serves after the upgrade" bash -c "curl -fsS --max-time 5 http://127.0.0.1:$PORT/ | grep -q hi"
# A master busy with a log reopen (its workers stopped, so the reopen
# waits for them) refuses the upgrade for that moment; upgrade asks again
# once a second and succeeds once the reopen is over.
WORKERS=$(pgrep -P "$MASTER" | tr '\n' ' ')
reopens() { grep -c "master $MASTER: reopened error log" "$S/error.log"; }
R0=$(reopens)
# shellcheck disable=SC2086
kill -STOP $WORKERS
"$BATON_BIN" --pid-file "$S/run/baton.pid" -s reopen >/dev/null 2>&1 &
REOPEN_PID=$!
wait_until() { # wait_until SECONDS COMMAND...: polls every 100 ms
    local end=$((SECONDS + $1))
    shift
    until "$@"; do [ "$SECONDS" -lt "$end" ] || return 1; sleep 0.1; done
}
reopen_began() { [ "$(reopens)" -gt "$R0" ]; }
wait_until 10 reopen_began
run_fn upgrade upgrade >"$S/upgrade.out" 2>&1 &
UPG_PID=$!
was_refused() { grep -q 'upgrade refused (busy): a log reopen is running' "$S/error.log"; }
check "upgrade during a log reopen: the master says busy" wait_until 10 was_refused
# shellcheck disable=SC2086
kill -CONT $WORKERS
wait "$UPG_PID"
rc=$?
check "  upgrade asked again and upgraded (exit $rc)" test "$rc" = 0
check "  same master ($MASTER)" test "$(cat "$S/run/baton.pid" 2>/dev/null)" = "$MASTER"
wait "$REOPEN_PID"
# A new binary that fails (its -t preflight, run by the master, exits 1):
# refused and not restarted; the old binary keeps serving. The wrapper
# runs the real binary for everything but -t, so the script's own calls
# (--help, -s upgrade) work.
mkdir -p "$S/bin/real"
cp "$BATON_BIN" "$S/bin/real/baton"
printf '#!/bin/sh\nfor a; do [ "$a" = -t ] && { echo "broken build" >&2; exit 1; }; done\nexec "%s" "$@"\n' \
    "$S/bin/real/baton" >"$S/bin/baton.new"
chmod 0755 "$S/bin/baton.new"
mv "$S/bin/baton.new" "$BATON_BIN"
out=$(run_fn upgrade upgrade 2>&1)
rc=$?
check "upgrade to a new binary that fails: refused (exit $rc)" test "$rc" = 2
check "  says so, not restarted" grep -q 'the new binary failed: the previous one keeps serving (not restarted)' <<<"$out"
check "  same master ($MASTER), serving" bash -c "test \"\$(cat '$S/run/baton.pid')\" = $MASTER && curl -fsS --max-time 5 http://127.0.0.1:$PORT/ | grep -q hi"
# A binary without binary upgrade (an older one, a downgrade): openrc-run's
# own stop and start from inside the command, as restart would.
printf '#!/bin/sh\n[ "$1" = --help ] && { echo "usage: baton [-s reload|stop]"; exit 0; }\nexec "%s" "$@"\n' \
    "$S/bin/real/baton" >"$S/bin/baton.new"
chmod 0755 "$S/bin/baton.new"
mv "$S/bin/baton.new" "$BATON_BIN"
out=$(run_fn upgrade upgrade 2>&1)
rc=$?
check "upgrade with a binary that has no binary upgrade: restarted (exit $rc)" test "$rc" = 0
check "  says so" grep -q 'has no binary upgrade: restarting' <<<"$out"
NEW=$(cat "$S/run/baton.pid" 2>/dev/null)
[ -n "$NEW" ] && STARTED+=("$NEW")
check "  a new master ($MASTER -> $NEW), the old one gone, serving" \
    bash -c "[ -n '$NEW' ] && [ '$NEW' != $MASTER ] && ! kill -0 $MASTER 2>/dev/null && curl -fsS --max-time 5 http://127.0.0.1:$PORT/ | grep -q hi"
MASTER=$NEW
mv "$S/bin/real/baton" "$BATON_BIN"
# The master died (OpenRC still has the service started): upgrade starts it.
kill -KILL -- "-$MASTER"
for _ in $(seq 100); do kill -0 "$MASTER" 2>/dev/null || break; sleep 0.1; done
out=$(run_fn upgrade upgrade 2>&1)
rc=$?
check "upgrade with the master dead: started (exit $rc)" test "$rc" = 0
check "  says so" grep -q 'is not running (the service is marked started): starting it' <<<"$out"
NEW=$(cat "$S/run/baton.pid" 2>/dev/null)
[ -n "$NEW" ] && STARTED+=("$NEW")
check "  a new master ($MASTER -> $NEW), serving" \
    bash -c "[ -n '$NEW' ] && [ '$NEW' != $MASTER ] && kill -0 $NEW && curl -fsS --max-time 5 http://127.0.0.1:$PORT/ | grep -q hi"
MASTER=$NEW
echo 'workers = "lots"' >"$S/baton.toml"
if run_fn start configtest 2>/dev/null; then nok "configtest on a broken config fails"; else ok "configtest on a broken config fails"; fi
g2=$(gen)
if run_fn reload reload 2>/dev/null; then nok "reload with a broken config is refused"; else ok "reload with a broken config is refused"; fi
check "the refused reload kept generation $g2" test "$(gen)" = "$g2"
if run_fn restart stop_pre 2>/dev/null; then nok "restart with a broken config is refused (stop_pre)"; else ok "restart with a broken config is refused (stop_pre)"; fi
out=$(run_fn upgrade upgrade 2>&1)
rc=$?
check "upgrade with a broken config: refused (exit $rc)" test "$rc" = 1
check "  says why" grep -q 'invalid configuration' <<<"$out"
check "  the old master keeps serving" bash -c "kill -0 $MASTER && curl -fsS --max-time 5 http://127.0.0.1:$PORT/ | grep -q hi"
cp "$S/good.toml" "$S/baton.toml"
check "stop (what OpenRC's retry=TERM/... sends first)" kill -TERM "$MASTER"
for _ in $(seq 50); do kill -0 "$MASTER" 2>/dev/null || break; sleep 0.1; done
check "master gone, pidfile gone" bash -c "! kill -0 $MASTER 2>/dev/null && test ! -e '$S/run/baton.pid'"
MASTER=

summary
