#!/usr/bin/env bash
# Builds the .deb (packaging/build-deb.sh), installs it with dpkg -i into a
# scratch Debian chroot, checks what it installed, runs `baton -t` on the
# installed default config, starts it with the installed init script in a
# private network namespace (port 80 there is nobody else's) and fetches
# the welcome page, then purges the package and checks what is left.
#
#   sudo bash packaging/tests/deb.sh
#   sudo DEB=dist/baton_0.1.0_amd64.deb bash packaging/tests/deb.sh   # skip the build
#
# The base chroot is made once with debootstrap (minbase + adduser,
# logrotate; a few minutes, needs network) and cached in
# $BATON_CHROOT_CACHE (default /var/tmp/baton-pkg-chroot/bookworm); each run
# installs into a fresh copy of it, so the host is never touched. A
# policy-rc.d in the copy keeps dpkg from starting the service. Prints
# "N passed, N failed" last.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
REPO=$PWD

[ "$(id -u)" = 0 ] || { echo "deb.sh: needs root (chroot, dpkg)" >&2; exit 1; }

BASE=${BATON_CHROOT_CACHE:-/var/tmp/baton-pkg-chroot/bookworm}
if [ ! -x "$BASE/usr/bin/dpkg" ]; then
    command -v debootstrap >/dev/null ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >/dev/null
    mkdir -p "$(dirname "$BASE")"
    debootstrap --variant=minbase --include=adduser,logrotate bookworm "$BASE" \
        "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" || exit 1
fi

if [ -z "${DEB:-}" ]; then
    bash packaging/build-deb.sh "$REPO/dist" || exit 1
    DEB=$(ls "$REPO"/dist/baton_*_"$(dpkg --print-architecture)".deb | tail -1)
fi
DEB=$(realpath "$DEB")

# shellcheck source=packaging/tests/lib.sh
. "$REPO/packaging/tests/lib.sh"

C=$(mktemp -d /var/tmp/baton-deb-root.XXXXXX)
cleanup() {
    # Anything still running in the chroot was started by this test.
    local pid
    for root in /proc/[0-9]*/root; do
        pid=${root#/proc/}
        pid=${pid%/root}
        [ "$(readlink "$root" 2>/dev/null)" = "$C" ] && kill -KILL "$pid" 2>/dev/null
    done
    umount "$C/proc" 2>/dev/null
    rm -rf "$C"
}
trap cleanup EXIT
cp -a "$BASE/." "$C/"
mount -t proc proc "$C/proc"
printf '#!/bin/sh\nexit 101\n' >"$C/usr/sbin/policy-rc.d"
chmod 0755 "$C/usr/sbin/policy-rc.d"
cp "$DEB" "$C/tmp/baton.deb"
in_root() { chroot "$C" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

echo "# installing $(basename "$DEB") into $C"
out=$(in_root dpkg -i /tmp/baton.deb 2>&1)
rc=$?
check "dpkg -i (exit $rc)" test "$rc" = 0
[ "$rc" = 0 ] || printf '%s\n' "$out" | sed 's/^/       /'
check "package installed" bash -c "chroot '$C' dpkg-query -W -f='\${Status}' baton | grep -q 'install ok installed'"

check "binary at /usr/sbin/baton" test -x "$C/usr/sbin/baton"
check "/etc/baton/baton.toml is a conffile" \
    bash -c "chroot '$C' dpkg-query -W -f='\${Conffiles}' baton | grep -q ' /etc/baton/baton.toml '"
for f in /lib/systemd/system/baton.service /lib/systemd/system/baton.socket /etc/init.d/baton \
    /etc/default/baton /etc/logrotate.d/baton /usr/lib/tmpfiles.d/baton.conf \
    /usr/share/man/man8/baton.8.gz /usr/share/man/man5/baton.toml.5.gz /usr/share/doc/baton/copyright; do
    check "installed $f" test -e "$C$f"
done
check "init script registered (rc2.d link)" bash -c "ls '$C'/etc/rc2.d/S*baton >/dev/null 2>&1"
check "baton.service enabled" test -L "$C/etc/systemd/system/multi-user.target.wants/baton.service"
check "baton.socket not enabled" test ! -e "$C/etc/systemd/system/sockets.target.wants/baton.socket"
check "system user baton exists" bash -c "chroot '$C' getent passwd baton | grep -q ':/nonexistent:/usr/sbin/nologin$'"
check "group baton exists" bash -c "chroot '$C' getent group baton >/dev/null"
check "/var/log/baton is root:adm 0750" test "$(stat -c '%U:%G %a' "$C/var/log/baton")" = "root:adm 750"
check "/var/www/html is root:root 0755" test "$(stat -c '%U:%G %a' "$C/var/www/html")" = "root:root 755"
check "welcome page in /var/www/html under its own name" grep -q "Welcome to Baton" "$C/var/www/html/index.baton-debian.html"
# stat inside the chroot: the host has no baton user (its uid may be
# someone else's name there).
check "error.log created root:adm 0640 (as logrotate's create)" test "$(chroot "$C" stat -c '%U:%G %a' /var/log/baton/error.log)" = "root:adm 640"
check "sample site installed" test -f "$C/usr/share/baton/sample-site/index.html"
check "operations.md installed" test -e "$C/usr/share/doc/baton/operations.md.gz"
check "/run/baton exists" test -d "$C/run/baton"
check "the service was not started (policy-rc.d)" test ! -e "$C/run/baton/baton.pid"

out=$(in_root baton -t -c /etc/baton/baton.toml 2>&1)
rc=$?
check "baton -t on the installed default config (exit $rc: $out)" test "$rc" = 0
check "init script configtest" in_root /etc/init.d/baton configtest

# Start it for real, as installed, on :80 of a private network namespace.
cat >"$C/tmp/run.sh" <<'EOF'
/etc/init.d/baton start || exit 10
exec 3<>/dev/tcp/127.0.0.1/80 || exit 11
printf 'GET / HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
grep -q "Welcome to Baton" <&3 || exit 12
exec 3<&-
m=$(cat /run/baton/baton.pid)
echo "workers: $(for st in /proc/[0-9]*/stat; do
    read -r pid _ _ ppid _ <"$st" && [ "$ppid" = "$m" ] && stat -c %U "/proc/$pid"
done 2>/dev/null | sort -u)"
/etc/init.d/baton status || exit 13
/etc/init.d/baton reload || exit 14
/etc/init.d/baton stop || exit 15
[ ! -e /run/baton/baton.pid ] || exit 16
EOF
out=$(unshare --net bash -c 'ip link set lo up &&
    chroot "$1" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin bash /tmp/run.sh' _ "$C" 2>&1)
rc=$?
check "installed server starts on :80 (private netns), serves the welcome page, reloads, stops (exit $rc)" test "$rc" = 0
printf '%s\n' "$out" | sed 's/^/       /'
check "its workers ran as baton" bash -c "printf '%s' '$out' | grep -q '^workers: baton$'"
check "it logged to /var/log/baton/error.log" grep -q "reload ok" "$C/var/log/baton/error.log"

# Reinstall (configure with a previous version): the admin deleted the
# welcome page; it must not come back.
rm -f "$C/var/www/html/index.baton-debian.html"
# A log an earlier version created baton-owned (which the master, root
# without CAP_DAC_OVERRIDE under systemd, cannot open).
in_root chown baton:adm /var/log/baton/error.log
in_root dpkg -i /tmp/baton.deb >/dev/null 2>&1
check "reinstall/upgrade does not restore a deleted welcome page" test ! -e "$C/var/www/html/index.baton-debian.html"
check "reinstall/upgrade gives a baton-owned log back to root:adm" \
    test "$(chroot "$C" stat -c '%U:%G %a' /var/log/baton/error.log)" = "root:adm 640"

# Removed, not purged: the init script stays, its stop succeeds.
in_root dpkg --remove baton >/dev/null 2>&1
check "init script kept after remove (conffile)" test -e "$C/etc/init.d/baton"
# debhelper's postrm (remove) snippet makes the script non-executable
# (chmod -x), so nothing runs it by accident; the script itself still
# honours Policy 9.3.2 when run.
check "init script stop exits 0 after remove (Policy 9.3.2)" in_root sh /etc/init.d/baton stop

# Purge.
out=$(in_root dpkg --purge baton 2>&1)
rc=$?
check "dpkg --purge (exit $rc)" test "$rc" = 0
[ "$rc" = 0 ] || printf '%s\n' "$out" | sed 's/^/       /'
for f in /usr/sbin/baton /etc/baton /etc/init.d/baton /etc/default/baton /lib/systemd/system/baton.service \
    /var/log/baton /var/lib/baton /var/www/html/index.baton-debian.html; do
    check "purged: $f gone" test ! -e "$C$f"
done
check "purged: no rc.d links left" bash -c "! ls '$C'/etc/rc?.d/*baton >/dev/null 2>&1"
check "purged: the baton user is kept (documented)" bash -c "chroot '$C' getent passwd baton >/dev/null"

summary
