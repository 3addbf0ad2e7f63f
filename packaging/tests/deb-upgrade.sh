#!/usr/bin/env bash
# A package upgrade under load loses no request: install version N of the
# .deb, start it on :80 of a private network namespace, put keep-alive and
# connection-per-request load on it (packaging/tests/http-load.py), `dpkg
# -i` version N+1 (built with another version string), and prove that no
# request failed and that the master kept its pid (the postinst's binary
# upgrade, `invoke-rc.d baton upgrade`, not a restart) while it now runs
# the new binary. Twice:
#
#   - sysvinit: in a chroot (as deb.sh makes it) inside `unshare --net`;
#     invoke-rc.d runs /etc/init.d/baton upgrade;
#   - systemd: the same chroot with systemd installed, booted with
#     `systemd-nspawn -b --private-network` (systemd as PID 1 of the
#     container); invoke-rc.d runs the init script's upgrade there too,
#     and systemd's MainPID, NRestarts and ActiveState are checked.
#     Skipped (said so) when systemd-nspawn is missing, or SYSTEMD=0.
#
#   sudo bash packaging/tests/deb-upgrade.sh            # builds N and N+1
#   sudo DEB_OLD=a.deb DEB_NEW=b.deb bash packaging/tests/deb-upgrade.sh
#
# Without DEB_OLD/DEB_NEW it builds both into $OUT (default
# /var/tmp/baton-deb-upgrade): N with packaging/build-deb.sh, N+1 with
# packaging/tests/build-next-deb.sh (version N+upgradetest1): two release
# builds. The chroots are made once with debootstrap and apt (network to
# deb.debian.org) and cached under $BATON_CHROOT_CACHE's directory; each
# run works in fresh copies. Kills only what it started (the nspawn it
# ran, the processes whose root is its chroot). Prints "N passed, N
# failed" last.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
REPO=$PWD
[ "$(id -u)" = 0 ] || { echo "deb-upgrade.sh: needs root (chroot, unshare, nspawn)" >&2; exit 1; }
# shellcheck source=packaging/tests/lib.sh
. "$REPO/packaging/tests/lib.sh"
LOAD=$REPO/packaging/tests/http-load.py
BASE=${BATON_CHROOT_CACHE:-/var/tmp/baton-pkg-chroot/bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
START_ALL=$(date +%s)

# --- the two packages ------------------------------------------------------
if [ -z "${DEB_OLD:-}" ] || [ -z "${DEB_NEW:-}" ]; then
    OUT=${OUT:-/var/tmp/baton-deb-upgrade}
    rm -rf "$OUT/old" "$OUT/new"
    echo "# building N and N+1 in $OUT (two release builds)"
    LINTIAN=0 bash packaging/build-deb.sh "$OUT/old" >"$OUT.old.log" 2>&1 ||
        { tail -20 "$OUT.old.log"; exit 1; }
    LINTIAN=0 bash packaging/tests/build-next-deb.sh "$OUT/new" >"$OUT.new.log" 2>&1 ||
        { tail -20 "$OUT.new.log"; exit 1; }
    DEB_OLD=$(ls "$OUT"/old/baton_*_*.deb)
    DEB_NEW=$(ls "$OUT"/new/baton_*_*.deb)
    echo "# built in $(($(date +%s) - START_ALL))s"
fi
DEB_OLD=$(realpath "$DEB_OLD")
DEB_NEW=$(realpath "$DEB_NEW")
V_OLD=$(dpkg-deb -f "$DEB_OLD" Version)
V_NEW=$(dpkg-deb -f "$DEB_NEW" Version)
echo "# N = $V_OLD, N+1 = $V_NEW"
dpkg --compare-versions "$V_NEW" gt "$V_OLD" || { echo "deb-upgrade.sh: $V_NEW is not newer than $V_OLD" >&2; exit 1; }

# --- chroots -----------------------------------------------------------------
if [ ! -x "$BASE/usr/bin/dpkg" ]; then
    command -v debootstrap >/dev/null ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >/dev/null
    mkdir -p "$(dirname "$BASE")"
    debootstrap --variant=minbase --include=adduser,logrotate bookworm "$BASE" "$MIRROR" >/dev/null || exit 1
fi
in_base() { chroot "$1" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "${@:2}"; }
# with_packages DIR PACKAGE...: a cached copy of BASE with PACKAGEs
# installed from the mirror (once).
with_packages() {
    local dir=$1
    shift
    [ -x "$dir/usr/bin/dpkg" ] && return 0
    rm -rf "$dir.tmp"
    cp -a "$BASE" "$dir.tmp"
    cp /etc/resolv.conf "$dir.tmp/etc/resolv.conf"
    in_base "$dir.tmp" sh -c "apt-get update -q && apt-get install -y -q --no-install-recommends $*" \
        >"$dir.log" 2>&1 || { tail "$dir.log"; return 1; }
    mv "$dir.tmp" "$dir"
}

W=$(mktemp -d /var/tmp/baton-upg.XXXXXX)
NSPAWN=
HOLDER=
LOADPID=
cleanup() {
    [ -n "$LOADPID" ] && kill "$LOADPID" 2>/dev/null
    [ -n "$HOLDER" ] && kill "$HOLDER" 2>/dev/null
    if [ -n "$NSPAWN" ] && kill -0 "$NSPAWN" 2>/dev/null; then
        kill -TERM "$NSPAWN" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$NSPAWN" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$NSPAWN" 2>/dev/null
    fi
    # Anything still running in a chroot of this test was started by it.
    local root pid c
    for root in /proc/[0-9]*/root; do
        pid=${root#/proc/}
        pid=${pid%/root}
        c=$(readlink "$root" 2>/dev/null) || continue
        case $c in "$W"/*) kill -KILL "$pid" 2>/dev/null ;; esac
    done
    umount "$W/sysv/proc" 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT

# wait_for SECONDS COMMAND...: polls COMMAND every 100 ms until it succeeds.
wait_for() {
    local end=$(($(date +%s) + $1))
    shift
    until "$@"; do
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 0.1
    done
}
# progress FILE: "OK_KEEP OK_CLOSE FAILED" of the running load.
ok_total() { local k c f; { read -r k c f <"$1"; } 2>/dev/null || return 1; echo $((k + c)); }
both_modes_ok() { local k c f; { read -r k c f <"$1"; } 2>/dev/null && [ "$k" -ge "$2" ] && [ "$c" -ge "$2" ]; }
total_at_least() { local n; n=$(ok_total "$1") && [ "$n" -ge "$2" ]; }

# report NAME FILE: the checks on what a run recorded (key=value lines).
report() {
    local name=$1 f=$2
    val() { sed -n "s/^$1=//p" "$f" | tail -1; }
    sed -n 's/^say=/   /p' "$f"
    check "$name: N installed and serving on :80 ($(val v_before))" test "$(val serving_before)" = yes
    check "$name: dpkg -i N+1 (exit $(val dpkg_rc), $(val dpkg_ms) ms)" test "$(val dpkg_rc)" = 0
    check "$name: the postinst upgraded in place ($(val postinst))" bash -c "grep -q '^postinst=.*upgraded in place' '$f'"
    check "$name: load ran across the upgrade ($(val load_before) ok before dpkg, $(val load_during) during, $(val load_after) after)" \
        test "$(val load_before)" -ge 100 -a "$(val load_during)" -gt 0 -a "$(val load_after)" -ge 500
    check "$name: no failed request ($(val load))" bash -c "grep -q '^load=.*ok [1-9][0-9]* failed 0$' '$f'"
    check "$name: same master pid ($(val pid_before) -> $(val pid_after))" \
        bash -c "[ -n '$(val pid_before)' ] && [ '$(val pid_before)' = '$(val pid_after)' ]"
    check "$name: the master runs the installed N+1 binary (exe inode $(val exe_inode), /usr/sbin/baton $(val bin_inode); $(val v_after))" \
        bash -c "[ -n '$(val exe_inode)' ] && [ '$(val exe_inode)' = '$(val bin_inode)' ] && [ '$(val v_after)' != '$(val v_before)' ]"
    check "$name: the log says upgraded ($(val upgraded); $(val upgrade_ms) ms from the first upgrade line)" test -n "$(val upgraded)"
}

# The commands both runs use inside the system under test, given RUN (a
# command prefix that runs a command in it) and NET (one that runs a host
# command in its network namespace).
exercise() { # exercise RESULTFILE
    local f=$1 pid exe
    : >"$f"
    out=$($RUN dpkg -i /root/old.deb 2>&1) || { echo "say=dpkg -i N failed: $out" >>"$f"; return 1; }
    if wait_for 20 $NET bash -c 'exec 3<>/dev/tcp/127.0.0.1/80' 2>/dev/null; then
        echo serving_before=yes >>"$f"
    fi
    echo "v_before=$($RUN baton -V)" >>"$f"
    pid=$($RUN cat /run/baton/baton.pid)
    echo "pid_before=$pid" >>"$f"
    rm -f "$W/stop" "$W/progress"
    $NET python3 "$LOAD" --port 80 --progress "$W/progress" --stop "$W/stop" --max-seconds 300 \
        >"$W/load.out" 2>&1 &
    LOADPID=$!
    wait_for 30 both_modes_ok "$W/progress" 50 || echo "say=the load did not get going: $(cat "$W/load.out")" >>"$f"
    echo "load_before=$(ok_total "$W/progress")" >>"$f"
    local t0 t1
    t0=$(date +%s%N)
    $RUN dpkg -i /root/new.deb >"$W/dpkg.out" 2>&1
    echo "dpkg_rc=$?" >>"$f"
    t1=$(date +%s%N)
    echo "dpkg_ms=$(((t1 - t0) / 1000000))" >>"$f"
    local before after
    before=$(sed -n 's/^load_before=//p' "$f")
    after=$(ok_total "$W/progress")
    echo "load_during=$((after - before))" >>"$f"
    # Some more traffic on the new binary, then stop the load.
    wait_for 30 total_at_least "$W/progress" $((after + 500))
    touch "$W/stop"
    wait "$LOADPID"
    LOADPID=
    echo "load_after=$(($(ok_total "$W/progress") - after))" >>"$f"
    echo "load=$(tail -1 "$W/load.out")" >>"$f"
    sed 's/^/say=load: /' "$W/load.out" >>"$f"
    echo "postinst=$(grep -E '^baton: ' "$W/dpkg.out" | tr '\n' ' ')" >>"$f"
    sed 's/^/say=dpkg: /' "$W/dpkg.out" >>"$f"
    pid=$($RUN cat /run/baton/baton.pid)
    echo "pid_after=$pid" >>"$f"
    # /proc/PID/exe of the master against the installed binary, inside.
    exe=$($RUN stat -L -c %i "/proc/$pid/exe" 2>/dev/null)
    echo "exe_inode=$exe" >>"$f"
    echo "bin_inode=$($RUN stat -c %i /usr/sbin/baton)" >>"$f"
    # The running image's version: its /proc/PID/exe run with -V.
    echo "v_after=$($RUN "/proc/$pid/exe" -V)" >>"$f"
    echo "upgraded=$($RUN grep -o 'upgraded: .*' /var/log/baton/error.log | tail -1)" >>"$f"
    # From the master's first upgrade line to its last, by the log's clock.
    $RUN cat /var/log/baton/error.log | python3 -c '
import sys, datetime
t = lambda l: datetime.datetime.fromisoformat(l.split()[0].replace("Z", "+00:00"))
ls = [l for l in sys.stdin if " upgrade: checking the new binary" in l or " upgraded: " in l]
if len(ls) >= 2:
    print("upgrade_ms=%d" % ((t(ls[-1]) - t(ls[0])).total_seconds() * 1000))
' >>"$f"
    $RUN grep -E 'upgrade|new image|adopt' /var/log/baton/error.log | sed 's/^/say=log: /' >>"$f"
}

# --- sysvinit ------------------------------------------------------------
echo "# sysvinit: chroot in a private network namespace"
# sysvinit-core: a system with /sbin/init, where invoke-rc.d runs init
# scripts (it blocks them where there is no init and no policy-rc.d).
with_packages "$BASE-sysvinit" sysvinit-core || exit 1
C=$W/sysv
mkdir -p "$C"
cp -a "$BASE-sysvinit/." "$C/"
mount -t proc proc "$C/proc"
# invoke-rc.d asks /sbin/runlevel, which a chroot cannot answer (no utmp
# record of a boot): without a runlevel it refuses `start` (no S link "in
# the current one"). This is a booted sysvinit system in runlevel 2.
printf '#!/bin/sh\necho "N 2"\n' >"$C/sbin/runlevel"
cp "$DEB_OLD" "$C/root/old.deb"
cp "$DEB_NEW" "$C/root/new.deb"
# One network namespace for the chroot and the host-side load: a process
# that holds it (and a shell in it to run commands through nsenter).
unshare --net sh -c 'ip link set lo up && exec sleep 600' &
HOLDER=$!
holding() { [ "$(cat "/proc/$HOLDER/comm" 2>/dev/null)" = sleep ]; }
wait_for 10 holding ||
    { echo "deb-upgrade.sh: unshare --net failed" >&2; exit 1; }
RUN="nsenter -t $HOLDER -n chroot $C /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin"
NET="nsenter -t $HOLDER -n"
exercise "$W/sysv.res"
report sysvinit "$W/sysv.res"
$RUN /etc/init.d/baton stop >/dev/null 2>&1
kill "$HOLDER" 2>/dev/null
wait "$HOLDER" 2>/dev/null
HOLDER=

# --- systemd ---------------------------------------------------------------
if [ "${SYSTEMD:-auto}" = 0 ] || ! command -v systemd-nspawn >/dev/null; then
    echo "# systemd: skipped (${SYSTEMD:+SYSTEMD=$SYSTEMD, }systemd-nspawn: $(command -v systemd-nspawn || echo missing))"
else
    echo "# systemd: booted with systemd-nspawn --private-network"
    SDBASE=$BASE-systemd
    with_packages "$SDBASE" systemd systemd-sysv || exit 1
    S=$W/sd
    cp -a "$SDBASE" "$S"
    echo baton-upgrade-test >"$S/etc/hostname"
    : >"$S/etc/machine-id"
    # Not /tmp: systemd mounts a tmpfs over it.
    cp "$DEB_OLD" "$S/root/old.deb"
    cp "$DEB_NEW" "$S/root/new.deb"
    # --keep-unit --register=no: no systemd or D-Bus is needed on the host.
    SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=${SYSTEMD_NSPAWN_UNIFIED_HIERARCHY:-0} \
        systemd-nspawn -D "$S" -b --private-network --register=no --keep-unit -q >"$W/nspawn.log" 2>&1 &
    NSPAWN=$!
    leader() { pgrep -P "$NSPAWN" -x systemd | head -1; }
    booted() {
        local l
        l=$(leader) && [ -n "$l" ] &&
            case $(nsenter -t "$l" -m -u -i -n -p -r -w /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
                systemctl is-system-running 2>/dev/null) in running | degraded) true ;; *) false ;; esac
    }
    if wait_for 120 booted; then
        L=$(leader)
        RUN="nsenter -t $L -m -u -i -n -p -r -w /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin"
        NET="nsenter -t $L -n"
        exercise "$W/sd.res"
        show() { $RUN systemctl show -p "$1" --value baton.service; }
        echo "main_pid=$(show MainPID) restarts=$(show NRestarts) state=$(show ActiveState)/$(show SubState)" >>"$W/sd.res"
        report systemd "$W/sd.res"
        mp=$(show MainPID)
        check "systemd: MainPID is the master ($mp, pidfile $(sed -n 's/^pid_after=//p' "$W/sd.res"))" \
            test "$mp" = "$(sed -n 's/^pid_after=//p' "$W/sd.res")"
        check "systemd: baton.service active/running, never restarted (NRestarts=$(show NRestarts))" \
            test "$(show ActiveState)/$(show SubState)/$(show NRestarts)" = "active/running/0"
        out=$($RUN systemctl reload baton.service 2>&1)
        rc=$?
        check "systemd: systemctl reload after the upgrade (exit $rc$out), same MainPID" \
            test "$rc/$(show MainPID)/$(show ActiveState)" = "0/$mp/active"
        $RUN journalctl -u baton.service --no-pager -o cat 2>/dev/null | tail -8 | sed 's/^/   journal: /'
        $RUN systemctl stop baton.service
        check "systemd: systemctl stop (pidfile gone)" test ! -e "$S/run/baton/baton.pid"
        kill -RTMIN+4 "$L" 2>/dev/null # systemd: power off
        wait_for 30 bash -c "! kill -0 $NSPAWN 2>/dev/null"
    else
        nok "systemd: the container did not boot within 120s"
        tail -20 "$W/nspawn.log" | sed 's/^/   /'
    fi
fi
echo "# $(($(date +%s) - START_ALL))s in all"
summary
