#!/usr/bin/env bash
# The postinst's decisions, without dpkg: its port check (skip the start
# when another server holds the config's port, as Debian's nginx does) is
# extracted from packaging/debian/postinst and run against a real listener
# on a free loopback port. The whole postinst runs in packaging/tests/deb.sh
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
summary
