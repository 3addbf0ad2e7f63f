#!/usr/bin/env bash
# The postinst's decisions, without dpkg: its port check (skip the start
# when another server holds the config's port, as Debian's nginx does) is
# extracted from packaging/debian/postinst and run against a real listener
# on a free loopback port; what it does with a running server for each
# outcome of `invoke-rc.d baton upgrade` is run with a stand-in invoke-rc.d. The whole postinst runs in packaging/tests/deb.sh
# (not in CI). Prints "N passed, N failed" last.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
REPO=$PWD
. "$REPO/packaging/tests/lib.sh"
command -v python3 >/dev/null || { echo "postinst.sh: python3 is missing" >&2; exit 1; }

SCRATCH=$(mktemp -d /tmp/baton-postinst.XXXXXX)
LISTENER=
cleanup() { [ -n "$LISTENER" ] && kill "$LISTENER" 2>/dev/null; rm -rf "$SCRATCH"; }
trap cleanup EXIT

check "postinst: sh -n" sh -n packaging/debian/postinst
# The function, pointed at a scratch config.
sed -n '/^ports_in_use() {/,/^}/p' packaging/debian/postinst |
    sed "s|/etc/baton/baton.toml|$SCRATCH/baton.toml|" >"$SCRATCH/f.sh"
check "ports_in_use extracted" grep -q 'ports_in_use' "$SCRATCH/f.sh"

python3 - "$SCRATCH/port" <<'PY' &
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
time.sleep(120)
PY
LISTENER=$!
for _ in $(seq 50); do [ -s "$SCRATCH/port" ] && break; sleep 0.1; done
BUSY=$(cat "$SCRATCH/port")
FREE=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

cat >"$SCRATCH/baton.toml" <<EOF2
[[site]]
listen = ["0.0.0.0:$FREE", "[::]:$FREE"]
root = "/var/www/html"
EOF2
out=$(sh -c ". '$SCRATCH/f.sh'; ports_in_use")
check "a free port is not reported (got '$out')" test -z "$out"

cat >>"$SCRATCH/baton.toml" <<EOF2

[[site]]
listen = ["127.0.0.1:$BUSY"]
root = "/var/www/html"
EOF2
out=$(sh -c ". '$SCRATCH/f.sh'; ports_in_use")
check "the port another process listens on is reported ($BUSY, got '$out')" test "$out" = "$BUSY"

# What the postinst does with a running server, for each answer of
# `invoke-rc.d baton upgrade`: start_or_upgrade with baton_running true and
# a stand-in invoke-rc.d that logs its calls and answers UPGRADE_RC.
sed -n '/^start_or_upgrade() {/,/^}/p' packaging/debian/postinst >"$SCRATCH/s.sh"
check "start_or_upgrade extracted" grep -q 'invoke-rc.d baton upgrade' "$SCRATCH/s.sh"
mkdir -p "$SCRATCH/bin"
cat >"$SCRATCH/bin/invoke-rc.d" <<'EOF2'
#!/bin/sh
echo "$*" >>"$CALLS"
[ "$2" = upgrade ] && exit "$UPGRADE_RC"
exit 0
EOF2
chmod +x "$SCRATCH/bin/invoke-rc.d"
decide() { # decide UPGRADE_RC: sets MSG (its output), RC, CALLS_MADE
    : >"$SCRATCH/calls"
    MSG=$(CALLS=$SCRATCH/calls UPGRADE_RC=$1 PATH="$SCRATCH/bin:$PATH" \
        sh -ec ". '$SCRATCH/s.sh'; baton_running() { true; }; start_or_upgrade configure 0.1.0" 2>&1)
    RC=$?
    CALLS_MADE=$(tr '\n' ';' <"$SCRATCH/calls")
}
# says TEXT: the output holds TEXT.
says() { [[ "$MSG" == *"$1"* ]]; }
quiet() { [ -z "$MSG" ]; }
decide 0
check "upgraded in place: says so, exit 0, no other call ($CALLS_MADE)" \
    bash -c '[ "$1" = 0 ] && [ "$2" = "baton upgrade;" ]' _ "$RC" "$CALLS_MADE"
check "  message: $MSG" says 'upgraded in place (binary upgrade, same pid)'
decide 101
check "policy-rc.d forbids (101): exit 0, no other call ($CALLS_MADE)" \
    bash -c '[ "$1" = 0 ] && [ "$2" = "baton upgrade;" ]' _ "$RC" "$CALLS_MADE"
check "  and nothing said" quiet
decide 1
check "upgrade failed (1): no restart, package configured: exit 0 ($CALLS_MADE)" \
    bash -c '[ "$1" = 0 ] && [ "$2" = "baton upgrade;" ]' _ "$RC" "$CALLS_MADE"
check "  says the previous binary keeps serving" says 'binary upgrade failed (exit 1): the previous binary keeps serving'
decide 2
check "init script without upgrade (usage, 2): restart ($CALLS_MADE)" \
    bash -c '[ "$1" = 0 ] && [ "$2" = "baton upgrade;baton restart;" ]' _ "$RC" "$CALLS_MADE"
check "  and says so" says "has no 'upgrade': restarting"
summary
