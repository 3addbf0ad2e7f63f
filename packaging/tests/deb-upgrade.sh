#!/usr/bin/env bash
# A package upgrade under load loses no request: install version N in a
# scratch chroot (as packaging/tests/deb.sh makes it), start it on :80 of a
# private network namespace, run keep-alive and connection-per-request
# load, `dpkg -i` version N+1 (built with another version string), and
# count failed requests (must be 0) and the master's pid (unchanged: the
# postinst's binary upgrade).
#
#   sudo DEB_OLD=dist/baton_0.1.0_amd64.deb DEB_NEW=dist/baton_0.1.1_amd64.deb \
#       bash packaging/tests/deb-upgrade.sh
#
# Build N+1 with a changelog entry and Cargo.toml version bumped in a
# scratch copy, then packaging/build-deb.sh. Needs binary upgrade
# (`baton -s upgrade`) in N: with a baton that lacks it, the postinst
# restarts, and this test reports the requests refused meanwhile (fails).
# Not in CI and not run where it was written (no chroot, two release
# builds); see docs/packaging.md.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
REPO=$PWD
[ "$(id -u)" = 0 ] || { echo "deb-upgrade.sh: needs root" >&2; exit 1; }
: "${DEB_OLD:?DEB_OLD=version N .deb}" "${DEB_NEW:?DEB_NEW=version N+1 .deb}"
. "$REPO/packaging/tests/lib.sh"
BASE=${BATON_CHROOT_CACHE:-/var/tmp/baton-pkg-chroot/bookworm}
[ -x "$BASE/usr/bin/dpkg" ] || { echo "run packaging/tests/deb.sh once first (it makes $BASE)" >&2; exit 1; }
C=$(mktemp -d /var/tmp/baton-upg-root.XXXXXX)
trap 'umount "$C/proc" 2>/dev/null; rm -rf "$C"' EXIT
cp -a "$BASE/." "$C/"
mount -t proc proc "$C/proc"
cp "$DEB_OLD" "$C/tmp/old.deb"
cp "$DEB_NEW" "$C/tmp/new.deb"
cat >"$C/tmp/run.sh" <<'EOS'
set -u
# The load generator (deb.sh's minbase chroot has no python3: add it to
# the cached chroot with apt-get first).
command -v python3 >/dev/null || { echo "python3 missing in the chroot"; exit 9; }
dpkg -i /tmp/old.deb >/dev/null || exit 10
[ -s /run/baton/baton.pid ] || /etc/init.d/baton start || exit 11
before=$(cat /run/baton/baton.pid)
# Load: keep-alive and connection-per-request, counting failures.
python3 - <<'PY' >/tmp/load.out &
import socket, threading, time, os
stop = time.time() + 8
fail = ok = 0
lock = threading.Lock()
def one(keep):
    global fail, ok
    s = None
    while time.time() < stop:
        try:
            if s is None:
                s = socket.create_connection(("127.0.0.1", 80), timeout=5)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + (b"" if keep else b"Connection: close\r\n") + b"\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                c = s.recv(65536)
                if not c: raise OSError("closed")
                data += c
            head, _, body = data.partition(b"\r\n\r\n")
            n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
            while len(body) < n:
                c = s.recv(65536)
                if not c: raise OSError("short")
                body += c
            with lock: ok += 1
            if not keep or b"connection: close" in head.lower():
                s.close(); s = None
        except OSError:
            with lock: fail += 1
            if s: s.close()
            s = None
ts = [threading.Thread(target=one, args=(k,)) for k in (True, True, False, False)]
[t.start() for t in ts]; [t.join() for t in ts]
print(f"ok {ok} failed {fail}")
PY
sleep 2
dpkg -i /tmp/new.deb >/tmp/dpkg.out 2>&1 || exit 12
wait
after=$(cat /run/baton/baton.pid)
echo "pid $before -> $after"
cat /tmp/load.out
EOS
out=$(unshare --net bash -c 'ip link set lo up && chroot "$1" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin bash /tmp/run.sh' _ "$C" 2>&1)
rc=$?
printf '%s\n' "$out" | sed 's/^/   /'
check "install N, load, install N+1 (exit $rc)" test "$rc" = 0
check "no failed request during the package upgrade" bash -c "printf '%s' '$out' | grep -q 'failed 0$'"
check "same master pid (binary upgrade, not restart)" bash -c "printf '%s' '$out' | grep -Eq '^pid ([0-9]+) -> \\1$'"
summary
