#!/usr/bin/env bash
# Checks the systemd units without a running systemd (none is PID 1 here):
#
# 1. `systemd-analyze verify` on baton.service and baton.socket, installed
#    in a scratch root with the binary at /usr/sbin/baton and the man pages
#    they name; any complaint fails.
# 2. The unit's sandbox, as far as it can be reproduced without systemd:
#    the master runs with exactly the unit's CapabilityBoundingSet and
#    no_new_privs (setpriv), on a privileged loopback port, with workers
#    dropping to nobody, and must start, reload, SIGKILL a draining worker
#    that outlives grace (CAP_KILL), and stop.
# 3. If strace is installed: every system call the server makes during (2)
#    is allowed by the unit's SystemCallFilter (@system-service).
#
#   sudo bash packaging/tests/verify-units.sh           # builds target/debug/baton if needed
#   sudo BATON_BIN=/path/to/baton bash packaging/tests/verify-units.sh
#
# Installs systemd (for systemd-analyze) from apt if it is missing. Kills
# only processes it started. Prints "N passed, N failed" last.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
REPO=$PWD
UNITS=$REPO/packaging/systemd

if ! command -v systemd-analyze >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends systemd >/dev/null ||
        { echo "verify-units.sh: cannot install systemd" >&2; exit 1; }
fi
if [ -z "${BATON_BIN:-}" ]; then
    cargo build --quiet --bin baton || exit 1
    BATON_BIN=${CARGO_TARGET_DIR:-$REPO/target}/debug/baton
fi

# shellcheck source=packaging/tests/lib.sh
. "$REPO/packaging/tests/lib.sh"

SCRATCH=$(mktemp -d /tmp/baton-units.XXXXXX)
chmod 0755 "$SCRATCH"
MASTER=
cleanup() {
    [ -n "$MASTER" ] && kill -KILL -- "-$MASTER" 2>/dev/null
    [ -n "${HOLD_PID:-}" ] && kill "$HOLD_PID" 2>/dev/null
    rm -rf "$SCRATCH"
}
trap cleanup EXIT

# --- 1. systemd-analyze verify in a scratch root
ROOT=$SCRATCH/root
mkdir -p "$ROOT/usr/sbin" "$ROOT/etc/systemd/system" "$ROOT/usr/lib/systemd" \
    "$ROOT/usr/share/man/man8" "$ROOT/usr/share/man/man5"
cp -a /usr/lib/systemd/system "$ROOT/usr/lib/systemd/" # sysinit.target & co.
install -m 0755 "$BATON_BIN" "$ROOT/usr/sbin/baton"
install -m 0644 "$UNITS/baton.service" "$UNITS/baton.socket" "$ROOT/etc/systemd/system/"
install -m 0644 "$REPO/packaging/man/baton.8" "$ROOT/usr/share/man/man8/"
install -m 0644 "$REPO/packaging/man/baton.toml.5" "$ROOT/usr/share/man/man5/"
for unit in baton.service baton.socket; do
    # Documentation=man:... is checked with man(1), which looks in MANPATH.
    out=$(MANPATH=$ROOT/usr/share/man systemd-analyze verify --root="$ROOT" \
        "$ROOT/etc/systemd/system/$unit" 2>&1)
    rc=$?
    if [ "$rc" = 0 ] && [ -z "$out" ]; then
        ok "systemd-analyze verify $unit"
    else
        nok "systemd-analyze verify $unit (exit $rc)"
        printf '%s\n' "$out" | sed 's/^/       /'
    fi
done
if systemd-analyze security --help 2>/dev/null | grep -q -- --offline; then
    score=$(systemd-analyze security --offline=true --root="$ROOT" \
        "$ROOT/etc/systemd/system/baton.service" 2>/dev/null | sed -n 's/.*Overall exposure level for .*: //p')
    echo "#    systemd-analyze security: exposure ${score:-unknown}"
fi

# Sanity: the unit's key settings are what docs/packaging.md promises.
unit_value() { sed -n "s/^$1=//p" "$UNITS/baton.service" | tail -1; }
check "Type=notify" test "$(unit_value Type)" = notify
check "KillMode=mixed" test "$(unit_value KillMode)" = mixed
check "KillSignal=SIGTERM (graceful)" test "$(unit_value KillSignal)" = SIGTERM
check "ExecReload waits: baton -s reload" bash -c "grep -q '^ExecReload=.* -s reload$' '$UNITS/baton.service'"
check "ExecStartPre checks the config: baton -t" bash -c "grep -q '^ExecStartPre=/usr/sbin/baton -t ' '$UNITS/baton.service'"
check "pidfile in RuntimeDirectory=baton" bash -c \
    "test '$(unit_value RuntimeDirectory)' = baton && grep -q -- '--pid-file /run/baton/baton.pid' '$UNITS/baton.service' &&
     grep -q '^pid_file = \"/run/baton/baton.pid\"' '$REPO/packaging/baton.toml'"
stop_secs=$(unit_value TimeoutStopSec)
stop_secs=${stop_secs%s}
grace=$(sed -n 's/^grace = "\([0-9]*\)s"/\1/p' "$REPO/packaging/baton.toml")
check "TimeoutStopSec ($stop_secs) exceeds the default config's grace ($grace)" test "$stop_secs" -gt "$grace"

# --- 2. the capability bounding set, for real
CAPS=$(unit_value CapabilityBoundingSet)
SETPRIV_CAPS=-all
for c in $CAPS; do
    c=${c#CAP_}
    SETPRIV_CAPS="$SETPRIV_CAPS,+${c,,}"
done
PORT=$(python3 -c '
import socket
for p in range(900, 1024):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        s.close()')
mkdir -p "$SCRATCH/www"
echo "hello from baton" >"$SCRATCH/www/index.html"
truncate -s 64M "$SCRATCH/www/big.bin"
chmod -R a+rX "$SCRATCH/www"
CONF=$SCRATCH/baton.toml
cat >"$CONF" <<EOF
user = "nobody"
workers = 1
pid_file = "$SCRATCH/baton.pid"
grace = "1s"
error_log = "$SCRATCH/error.log"

[[site]]
listen = ["127.0.0.1:$PORT"]
root = "$SCRATCH/www"
EOF
echo "# capabilities: $CAPS (setpriv --bounding-set $SETPRIV_CAPS), port $PORT"
B=$BATON_BIN
TRACE=()
if command -v strace >/dev/null; then
    # -D: strace runs as a detached grandchild, so `--daemon` returns as
    # usual while the daemon and its workers stay traced.
    TRACE=(strace -D -f -qq -o "$SCRATCH/trace")
fi
"${TRACE[@]}" setpriv --bounding-set "$SETPRIV_CAPS" --inh-caps -all --no-new-privs \
    "$B" -c "$CONF" --daemon
rc=$?
check "the master starts with only the unit's capabilities, on port $PORT (exit $rc)" test "$rc" = 0
MASTER=$(cat "$SCRATCH/baton.pid" 2>/dev/null)
check "it serves" bash -c "curl -fsS --max-time 5 http://127.0.0.1:$PORT/ | grep -q 'hello from baton'"
check "workers run as nobody" bash -c "ps -o user= --ppid '$MASTER' | grep -qx nobody"
# A client that requests 64 MiB and reads nothing: its worker cannot drain.
python3 -c '
import socket, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", '"$PORT"'))
s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
s.recv(100)
time.sleep(20)' &
HOLD_PID=$!
sleep 0.5
OLD_WORKER=$(ps -o pid= --ppid "$MASTER" | tr -d ' ' | head -1)
check "reload under the unit's capabilities" "$B" -c "$CONF" -s reload
gone=no
for _ in $(seq 40); do
    kill -0 "$OLD_WORKER" 2>/dev/null || { gone=yes; break; }
    sleep 0.1
done
check "the master SIGKILLs a draining worker that outlives grace (CAP_KILL)" test "$gone" = yes
check "it serves after the reload" bash -c "curl -fsS --max-time 5 http://127.0.0.1:$PORT/ | grep -q 'hello from baton'"
kill "$HOLD_PID" 2>/dev/null
wait "$HOLD_PID" 2>/dev/null
HOLD_PID=
check "graceful stop" "$B" -c "$CONF" -s quit
gone=no
for _ in $(seq 30); do # under strace the zombie may linger a moment
    [ -d "/proc/$MASTER" ] && [ "$(awk '{print $3}' "/proc/$MASTER/stat" 2>/dev/null)" != Z ] ||
        { gone=yes; break; }
    sleep 0.1
done
check "master gone" test "$gone" = yes
MASTER=

# --- 3. system calls against SystemCallFilter
if [ "${#TRACE[@]}" -gt 0 ]; then
    expand() { # the syscalls of a filter set, nested sets expanded
        systemd-analyze syscall-filter "$1" | sed -n '2,$p' | sed 's/#.*//; s/^ *//; /^$/d' |
            while read -r name; do
                case $name in
                    @*) expand "$name" ;;
                    *) echo "$name" ;;
                esac
            done
    }
    for _ in $(seq 50); do # strace exits once the last traced process has
        pgrep -f "strace -D -f -qq -o $SCRATCH/trace" >/dev/null || break
        sleep 0.1
    done
    FILTER=$(unit_value SystemCallFilter)
    expand "$FILTER" | sort -u >"$SCRATCH/allowed"
    # Calls made after setpriv exec'd baton (skip strace's and setpriv's own).
    awk '/execve\("[^"]*baton"/ { on = 1 } on' "$SCRATCH/trace" |
        sed -n 's/^[0-9]* *\([a-z0-9_]*\)(.*/\1/p' | sort -u >"$SCRATCH/used"
    [ -n "${KEEP_TRACE:-}" ] && cp "$SCRATCH/trace" "$KEEP_TRACE"
    denied=$(comm -23 "$SCRATCH/used" "$SCRATCH/allowed" | tr '\n' ' ')
    used=$(wc -l <"$SCRATCH/used")
    check "the trace saw the server's system calls ($used kinds)" test "$used" -gt 20
    check "every system call made is in SystemCallFilter=$FILTER${denied:+ (not: $denied)}" \
        test -z "$denied"
else
    echo "# strace missing: SystemCallFilter not checked"
fi

summary
