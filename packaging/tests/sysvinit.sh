#!/usr/bin/env bash
# Drives packaging/sysvinit/baton for real, with start-stop-daemon, against
# a scratch install in a temp dir: the binary, a config on a free loopback
# port, the pidfile and the error log all live there.
#
#   sudo bash packaging/tests/sysvinit.sh            # builds target/debug/baton if needed
#   sudo BATON_BIN=/path/to/baton bash packaging/tests/sysvinit.sh
#
# Needs root (start-stop-daemon, workers dropping to nobody) and curl.
# Kills only processes it started, by pid or by the process group of the
# master it started. Prints "N passed, N failed" last; exits 1 on a failure.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
REPO=$PWD

if [ "$(id -u)" != 0 ]; then
    echo "sysvinit.sh: needs root (start-stop-daemon, privilege drop); skipped"
    echo "0 passed, 0 failed"
    exit 0
fi
for tool in start-stop-daemon curl python3; do
    command -v "$tool" >/dev/null || { echo "sysvinit.sh: $tool is missing" >&2; exit 1; }
done

if [ -z "${BATON_BIN:-}" ]; then
    cargo build --quiet --bin baton || exit 1
    BATON_BIN=${CARGO_TARGET_DIR:-$REPO/target}/debug/baton
fi

# shellcheck source=packaging/tests/lib.sh
. "$REPO/packaging/tests/lib.sh"
expect_rc() { # expect_rc WANT DESCRIPTION COMMAND...
    local want=$1 what=$2
    shift 2
    local out rc
    out=$("$@" 2>&1)
    rc=$?
    if [ "$rc" = "$want" ]; then
        ok "$what (exit $rc)"
    else
        nok "$what: exit $rc, wanted $want"
        printf '%s\n' "$out" | sed 's/^/       /'
    fi
}

SCRATCH=$(mktemp -d /tmp/baton-sysvinit.XXXXXX)
chmod 0755 "$SCRATCH" # workers (nobody) must enter the site root
mkdir -p "$SCRATCH"/{bin,etc,run,log,www}
install -m 0755 "$BATON_BIN" "$SCRATCH/bin/baton"
echo "hello from baton" >"$SCRATCH/www/index.html"
head -c 1500000 /dev/zero >"$SCRATCH/www/big.bin"
chmod -R a+rX "$SCRATCH/www"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
write_config() { # write_config WORKERS
    cat >"$SCRATCH/etc/baton.toml" <<EOF
user = "nobody"
workers = $1
pid_file = "$SCRATCH/run/baton.pid"
grace = "10s"
error_log = "$SCRATCH/log/error.log"

[[site]]
listen = ["127.0.0.1:$PORT"]
root = "$SCRATCH/www"
EOF
}
write_config 2

export DAEMON=$SCRATCH/bin/baton
export CONFIG=$SCRATCH/etc/baton.toml
export PIDFILE=$SCRATCH/run/baton.pid
export BATON_DEFAULTS=/dev/null
export STOP_TIMEOUT=20
INIT=$REPO/packaging/sysvinit/baton
URL=http://127.0.0.1:$PORT

# Every master this test starts; cleanup kills what is left of their groups.
STARTED=()
remember_master() {
    local pid
    pid=$(cat "$PIDFILE" 2>/dev/null) && STARTED+=("$pid")
}
cleanup() {
    local pid
    for pid in "${STARTED[@]}"; do
        # The daemon is a session leader: its group is it and its workers.
        kill -KILL -- "-$pid" 2>/dev/null
    done
    [ -n "${CURL_PID:-}" ] && kill "$CURL_PID" 2>/dev/null
    [ -n "${KEEP_SCRATCH:-}" ] || rm -rf "$SCRATCH"
}
trap cleanup EXIT

serves() { curl -fsS --max-time 5 "$URL/" 2>/dev/null | grep -q "hello from baton"; }
alive() { kill -0 "$1" 2>/dev/null; }
# wait_until SECONDS COMMAND...: polls COMMAND every 100 ms until it
# succeeds, or fails after SECONDS.
wait_until() {
    local end=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$end" ] || return 1
        sleep 0.1
    done
}
generation() { "$DAEMON" --pid-file "$PIDFILE" -s status 2>/dev/null | sed -n 's/^generation: //p'; }
group_gone() { # group_gone PGID [TRIES]: no process left in that group
    local i
    for ((i = 0; i < ${2:-50}; i++)); do
        pgrep -g "$1" >/dev/null || return 0
        sleep 0.1
    done
    return 1
}

echo "# scratch install in $SCRATCH, port $PORT, binary $BATON_BIN"

# --- not running yet
expect_rc 3 "status before start: not running" "$INIT" status
expect_rc 0 "configtest on a good config" "$INIT" configtest

# --- start
expect_rc 0 "start" "$INIT" start
remember_master
check "pidfile present after start" test -s "$PIDFILE"
PID=$(cat "$PIDFILE" 2>/dev/null)
check "pidfile holds a live master" alive "$PID"
check "server answers after start" serves
expect_rc 0 "status while running" "$INIT" status
expect_rc 0 "start while running is a no-op" "$INIT" start
check "start while running kept the same master" test "$(cat "$PIDFILE")" = "$PID"

# --- reload with a good config
GEN1=$(generation)
check "status reports a generation ($GEN1)" test -n "$GEN1"
write_config 3
expect_rc 0 "reload with a good config" "$INIT" reload
GEN2=$(generation)
check "reload made a new generation ($GEN1 -> $GEN2)" test "${GEN2:-0}" -gt "${GEN1:-0}"
check "reload kept the master pid" test "$(cat "$PIDFILE")" = "$PID"
check "server answers after reload" serves
expect_rc 0 "force-reload" "$INIT" force-reload
GEN3=$(generation)
check "force-reload made a new generation ($GEN2 -> $GEN3)" test "${GEN3:-0}" -gt "${GEN2:-0}"

# --- reload with a broken config
cp "$CONFIG" "$SCRATCH/good.toml"
echo 'workers = "lots"' >"$CONFIG"
expect_rc 1 "configtest on a broken config" "$INIT" configtest
expect_rc 1 "reload with a broken config is refused" "$INIT" reload
check "the refused reload left the generation ($GEN3)" test "$(generation)" = "$GEN3"
check "the refused reload left the master" test "$(cat "$PIDFILE")" = "$PID"
check "the old generation still serves" serves
expect_rc 1 "restart with a broken config is refused" "$INIT" restart
check "the refused restart left the master" alive "$PID"
check "the old generation still serves after the refused restart" serves
cp "$SCRATCH/good.toml" "$CONFIG"
# configtest is -tt: beside the running server its own port passes; a
# config on a port another process holds is refused, located, and so is a
# restart to it (the running server is not stopped).
expect_rc 0 "configtest (-tt) beside the running server" "$INIT" configtest
python3 -c 'import socket,time; s=socket.socket(); s.bind(("127.0.0.1",0)); s.listen(); print(s.getsockname()[1],flush=True); time.sleep(60)' >"$SCRATCH/squat.out" &
SQUAT=$!
for _ in $(seq 50); do [ -s "$SCRATCH/squat.out" ] && break; sleep 0.1; done
PORT2=$(cat "$SCRATCH/squat.out")
sed "s|127.0.0.1:$PORT\"|127.0.0.1:$PORT2\"|" "$SCRATCH/good.toml" >"$CONFIG"
out=$("$INIT" configtest 2>&1)
rc=$?
check "configtest with a port another process holds: exit 1 ($rc)" test "$rc" = 1
check "  located, holder named" grep -q "baton.toml:[0-9]*:[0-9]*: cannot bind 127.0.0.1:$PORT2: the address is in use by pid $SQUAT" <<<"$out"
expect_rc 1 "restart to that config is refused" "$INIT" restart
check "the refused restart left the master" alive "$PID"
kill "$SQUAT" 2>/dev/null
wait "$SQUAT" 2>/dev/null
cp "$SCRATCH/good.toml" "$CONFIG"

# --- graceful stop: a slow download in flight finishes
curl -fsS --max-time 30 --limit-rate 400k -o "$SCRATCH/big.out" "$URL/big.bin" &
CURL_PID=$!
sleep 1
expect_rc 0 "stop" "$INIT" stop
wait "$CURL_PID"
CURL_RC=$?
CURL_PID=
check "the download in flight finished during the stop (curl exit $CURL_RC)" \
    test "$CURL_RC" = 0 -a "$(stat -c %s "$SCRATCH/big.out" 2>/dev/null)" = 1500000
check "pidfile gone after stop" test ! -e "$PIDFILE"
check "master gone after stop" bash -c "! kill -0 $PID 2>/dev/null"
check "workers gone after stop" group_gone "$PID" 1
check "nothing answers after stop" bash -c "! curl -fsS --max-time 2 $URL/ >/dev/null 2>&1"
expect_rc 3 "status after stop: not running" "$INIT" status
expect_rc 0 "stop when not running" "$INIT" stop
expect_rc 7 "reload when not running" "$INIT" reload

# --- a master killed with SIGKILL leaves its pidfile: status 1
expect_rc 0 "start again" "$INIT" start
remember_master
PID=$(cat "$PIDFILE" 2>/dev/null)
check "server answers after the second start" serves
kill -KILL "$PID"
for _ in $(seq 50); do alive "$PID" || break; sleep 0.1; done
check "workers of the killed master exit on their own" group_gone "$PID" 120
expect_rc 1 "status with a dead master and its pidfile" "$INIT" status
expect_rc 0 "start over a stale pidfile" "$INIT" start
remember_master
NEWPID=$(cat "$PIDFILE" 2>/dev/null)
check "a new master started ($PID -> $NEWPID)" test -n "$NEWPID" -a "$NEWPID" != "$PID"
check "server answers after starting over a stale pidfile" serves

# --- restart
expect_rc 0 "restart" "$INIT" restart
remember_master
RPID=$(cat "$PIDFILE" 2>/dev/null)
check "restart made a new master ($NEWPID -> $RPID)" test -n "$RPID" -a "$RPID" != "$NEWPID"
check "server answers after restart" serves

# --- logrotate: packaging/logrotate/baton, pointed at the scratch install
if command -v logrotate >/dev/null; then
    sed -e "s|/var/log/baton|$SCRATCH/log|g" -e "s|/run/baton/baton.pid|$PIDFILE|g" \
        -e "s|/usr/sbin/baton|$DAEMON|g" \
        "$REPO/packaging/logrotate/baton" >"$SCRATCH/logrotate.conf"
    GEN_BEFORE=$(generation)
    expect_rc 0 "logrotate -f" logrotate -f -s "$SCRATCH/logrotate.state" "$SCRATCH/logrotate.conf"
    check "the old log was moved to error.log.1" test -s "$SCRATCH/log/error.log.1"
    check "logrotate's postrotate reopened the logs without a new generation ($GEN_BEFORE)" \
        test "$(generation)" -eq "${GEN_BEFORE:-0}"
    check "the master writes to the new error.log after rotation" \
        grep -q "master $RPID: reopened error log" "$SCRATCH/log/error.log"
    check "the master stopped writing to error.log.1" \
        bash -c "! grep -q 'master $RPID: reopened error log' '$SCRATCH/log/error.log.1'"
else
    echo "# logrotate missing: rotation not tested"
fi

# --- upgrade: binary upgrade in place (same pid)
expect_rc 0 "upgrade (binary upgrade)" "$INIT" upgrade
check "upgrade kept the master pid ($RPID)" test "$(cat "$PIDFILE" 2>/dev/null)" = "$RPID"
# A master busy with a log reopen (its workers stopped, so the reopen
# waits for them) refuses the upgrade for that moment; the script asks
# again once a second and succeeds once the reopen is over.
LOG=$SCRATCH/log/error.log
WORKERS=$(pgrep -P "$RPID" | tr '\n' ' ')
reopens() { grep -c "master $RPID: reopened error log" "$LOG"; }
R0=$(reopens)
# shellcheck disable=SC2086
kill -STOP $WORKERS
"$DAEMON" --pid-file "$PIDFILE" -s reopen >/dev/null 2>&1 &
REOPEN_PID=$!
reopen_began() { [ "$(reopens)" -gt "$R0" ]; }
wait_until 10 reopen_began
"$INIT" upgrade >"$SCRATCH/upgrade.out" 2>&1 &
UPG_PID=$!
was_refused() { grep -q 'upgrade refused (busy): a log reopen is running' "$LOG"; }
check "upgrade during a log reopen: the master says busy" wait_until 10 was_refused
# shellcheck disable=SC2086
kill -CONT $WORKERS
wait "$UPG_PID"
rc=$?
check "  the script asked again and upgraded (exit $rc)" test "$rc" = 0
check "  same master ($RPID)" test "$(cat "$PIDFILE" 2>/dev/null)" = "$RPID"
wait "$REOPEN_PID"
# A new binary that fails (its -t preflight, run by the master, exits 1):
# refused, not restarted, the old binary keeps serving. Replaced by
# rename, as dpkg does; the wrapper runs the real binary for everything
# but -t, so the init script's own calls work (named baton, the process
# name the script matches).
mkdir -p "$SCRATCH/bin/real"
cp "$DAEMON" "$SCRATCH/bin/real/baton"
cat >"$SCRATCH/bin/baton.new" <<EOF
#!/bin/sh
for a; do [ "\$a" = -t ] && { echo "broken build" >&2; exit 1; }; done
exec "$SCRATCH/bin/real/baton" "\$@"
EOF
chmod 0755 "$SCRATCH/bin/baton.new"
mv "$SCRATCH/bin/baton.new" "$DAEMON"
out=$("$INIT" upgrade 2>&1)
rc=$?
check "upgrade to a new binary that fails: refused (exit $rc)" test "$rc" = 1
check "  says the new binary failed and the old one serves" grep -q 'new binary failed: the previous one keeps serving' <<<"$out"
check "  not restarted: same master ($RPID)" test "$(cat "$PIDFILE" 2>/dev/null)" = "$RPID"
check "  which still serves" serves
# A binary without binary upgrade (older, or a downgrade): restart.
cat >"$SCRATCH/bin/baton.new" <<EOF
#!/bin/sh
[ "\$1" = --help ] && { echo "usage: baton [-s reload|reopen|stop|quit]"; exit 0; }
exec "$SCRATCH/bin/real/baton" "\$@"
EOF
chmod 0755 "$SCRATCH/bin/baton.new"
mv "$SCRATCH/bin/baton.new" "$DAEMON"
out=$("$INIT" upgrade 2>&1)
rc=$?
check "upgrade with a binary that has no binary upgrade falls back to restart (exit $rc)" test "$rc" = 0
check "  and says so" grep -q 'no binary upgrade possible for this baton: restarting' <<<"$out"
remember_master
UPID=$(cat "$PIDFILE" 2>/dev/null)
check "  restart made a new master ($RPID -> $UPID)" test -n "$UPID" -a "$UPID" != "$RPID"
RPID=$UPID
mv "$SCRATCH/bin/real/baton" "$DAEMON"
check "server answers after upgrade" serves
cp "$CONFIG" "$SCRATCH/good.toml"
echo 'workers = "lots"' >"$CONFIG"
expect_rc 1 "upgrade with a broken config: refused" "$INIT" upgrade
check "the refused upgrade left the master" alive "$RPID"
check "the old generation still serves after the refused upgrade" serves
cp "$SCRATCH/good.toml" "$CONFIG"

expect_rc 0 "stop after restart" "$INIT" stop
check "pidfile gone after the last stop" test ! -e "$PIDFILE"
check "lock file gone after the last stop" test ! -e "$PIDFILE.lock"
expect_rc 3 "status at the end" "$INIT" status
expect_rc 7 "upgrade when not running" "$INIT" upgrade

# --- removed, not purged: the binary is gone, the init script (a
# conffile) stays. Policy 9.3.2: stop succeeds.
expect_rc 0 "stop with the binary removed" env DAEMON="$SCRATCH/bin/removed" "$INIT" stop
expect_rc 5 "start with the binary removed: not installed" env DAEMON="$SCRATCH/bin/removed" "$INIT" start
expect_rc 3 "status with the binary removed" env DAEMON="$SCRATCH/bin/removed" "$INIT" status

summary
