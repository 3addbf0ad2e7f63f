#!/usr/bin/env bash
# The package builds reproducibly: two runs of packaging/build-deb.sh on
# this checkout, in two different directories (of different depths), with a
# distribution's extra flags in the environment, must give byte-identical
# .debs (and -dbgsym .debs, and source tarballs), and the binary must hold
# neither build directory, CARGO_HOME nor the checkout's path.
#
#   sudo bash packaging/tests/reproducible.sh            # OUT=DIR keeps the .debs there
#
# Each build is what the archive would do: the source package with every
# crate vendored, built offline (--frozen) with an empty CARGO_HOME,
# SOURCE_DATE_EPOCH from debian/changelog (dpkg-buildpackage), and no
# .cargo/config.toml (build-deb.sh copies only tracked files and
# debian/rules does not rely on it; RUSTFLAGS from the environment would
# replace it anyway). On top: RUSTFLAGS like a distribution's (relro, now)
# and its own profile setting (debuginfo 2). Needs root for build-deb.sh's
# apt fallback only. Slow (two cold release builds): not in .ci/run.
# Prints "N passed, N failed" last.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
REPO=$PWD
. "$REPO/packaging/tests/lib.sh"
command -v cargo >/dev/null || export PATH=$HOME/.cargo/bin:$PATH

W=$(mktemp -d /var/tmp/baton-repro.XXXXXX)
trap 'rm -rf "$W"' EXIT
OUT=${OUT:-$W/out}
A=$W/a
B=$W/b/somewhere/much/deeper
mkdir -p "$A" "$B" "$OUT"
export RUSTFLAGS="-Clink-arg=-Wl,-z,relro -Clink-arg=-Wl,-z,now"
export CARGO_PROFILE_RELEASE_DEBUG=2
unset CARGO_TARGET_DIR
# One snapshot of the tracked files (as they are in the work tree) for both
# builds, so that editing the checkout meanwhile changes neither.
SNAP=$W/snapshot
mkdir -p "$SNAP"
git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$SNAP"
(cd "$SNAP" && git init -q && git add -A && git -c user.name=t -c user.email=t@localhost commit -qm snapshot) || exit 1
build() { # build TMPDIR OUTDIR LINTIAN
    TMPDIR=$1 LINTIAN=$3 bash "$SNAP/packaging/build-deb.sh" "$2" >"$2.log" 2>&1
    local rc=$?
    grep -E 'Finished|^== built' "$2.log" | sed 's/^/   /'
    [ "$rc" = 0 ] || tail -20 "$2.log"
    return "$rc"
}
start=$(date +%s)
check "build A in $A" build "$A" "$OUT/a" 1
check "build B in $B" build "$B" "$OUT/b" 0
echo "   (two builds: $(($(date +%s) - start))s)"
[ "$FAIL" = 0 ] || { summary; exit 1; }

same() { # same FILE-GLOB: the file is in both outputs and identical
    local fa fb
    fa=$(ls "$OUT"/a/$1 2>/dev/null | head -1)
    fb=$(ls "$OUT"/b/$1 2>/dev/null | head -1)
    [ -n "$fa" ] && [ -n "$fb" ] || { echo "   $1: missing"; return 1; }
    echo "   $(sha256sum <"$fa" | cut -c1-16)… $(sha256sum <"$fb" | cut -c1-16)… $(stat -c %s "$fa") $(basename "$fa")"
    cmp -s "$fa" "$fb"
}
check "byte-identical .deb" same 'baton_*_*.deb'
check "byte-identical -dbgsym .deb" same 'baton-dbgsym_*.deb'
check "byte-identical source tarball" same 'baton_*.tar.xz'

mkdir -p "$W/xa" "$W/xb"
dpkg-deb -x "$(ls "$OUT"/a/baton_*_*.deb | head -1)" "$W/xa"
dpkg-deb -x "$(ls "$OUT"/b/baton_*_*.deb | head -1)" "$W/xb"
BA=$W/xa/usr/sbin/baton
BB=$W/xb/usr/sbin/baton
check "byte-identical /usr/sbin/baton ($(sha256sum <"$BA" | cut -c1-16)…, $(stat -c %s "$BA") bytes)" cmp -s "$BA" "$BB"
if ! cmp -s "$BA" "$BB"; then
    cmp -l "$BA" "$BB" | head -5
    diff <(readelf -SW "$BA") <(readelf -SW "$BB") | head -20
fi
# The binary and its debug info (the -dbgsym package) hold no build path.
mkdir -p "$W/da"
dpkg-deb -x "$(ls "$OUT"/a/baton-dbgsym_*.deb | head -1)" "$W/da"
no_path() { [ -e "$1" ] && ! grep -r -q -a -F -e "$W" -e "$HOME/.cargo" -e "$REPO" "$@"; }
check "no build directory, CARGO_HOME or checkout path in the binary" no_path "$BA"
check "  nor in its debug info (-dbgsym)" no_path "$W/da"
# SOURCE_DATE_EPOCH (dpkg-buildpackage takes it from debian/changelog)
# clamps every file's time in the package.
EPOCH=$(cd "$SNAP" && dpkg-parsechangelog -l packaging/debian/changelog -S Timestamp)
newest() { dpkg-deb --fsys-tarfile "$1" | TZ=UTC tar -tv --full-time | awk '{print $4 " " $5}' | sort | tail -1; }
NEWEST=$(newest "$(ls "$OUT"/a/baton_*_*.deb | head -1)")
check "no file in the .deb newer than the changelog's date ($(date -u -d @"$EPOCH" '+%F %T'); newest $NEWEST)" \
    test "$(date -u -d "$NEWEST UTC" +%s)" -le "$EPOCH"
has_layout() { readelf -SW "$1" | grep -q '\.text\.baton_worker'; }
check "code layout (src/layout.ld) applied: .text.baton_worker section present" has_layout "$BA"
check "the sample site's place is the packager's /usr/share/baton/sample-site" grep -q -a -F /usr/share/baton/sample-site "$BA"
if [ -s "$OUT/a/lintian.txt" ]; then
    echo "   lintian (build A):"
    sed 's/^/     /' "$OUT/a/lintian.txt"
fi
summary
