#!/usr/bin/env bash
# Two release builds of this checkout in two different directories, with a
# distribution's flags and without .cargo/config.toml, must give the same
# bytes, and the binary must hold neither build directory.
#
#   bash packaging/tests/reproducible.sh
#
# Slow (two cold release builds: ~10 min on 2 busy cores): not in .ci/run.
# The flags are packaging/build-flags.sh's, as debian/rules uses them, on
# top of flags like Debian's own (RUSTFLAGS with relro/now, a profile set
# by environment: debuginfo 2). Prints "N passed, N failed" last.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
REPO=$PWD
. "$REPO/packaging/tests/lib.sh"
command -v cargo >/dev/null || export PATH=$HOME/.cargo/bin:$PATH

WORK=$(mktemp -d /tmp/baton-repro.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
# The tracked files as they are in the work tree (uncommitted edits too).
copy_tree() {
    mkdir -p "$1"
    git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$1"
    # The distribution's RUSTFLAGS replace the file's flags anyway; prove
    # the build does not rely on it.
    rm -rf "$1/.cargo"
}
build() { # build DIR
    (
        cd "$1" || exit 1
        export SRC=$PWD CARGO_TARGET_DIR=$PWD/target
        export RUSTFLAGS="-Clink-arg=-Wl,-z,relro -Clink-arg=-Wl,-z,now"
        export CFLAGS="-g -O2 -fstack-protector-strong"
        export CARGO_PROFILE_RELEASE_DEBUG=2
        RUSTFLAGS=$("$REPO/packaging/build-flags.sh" rustflags)
        CFLAGS=$("$REPO/packaging/build-flags.sh" cflags)
        export BATON_SAMPLE_ROOT=/usr/share/baton/sample-site
        cargo build --release --locked --bin baton 2>&1 | tail -3
    )
}
A=$WORK/a/baton
B=$WORK/b/somewhere-else/baton-0.1.0
copy_tree "$A"
copy_tree "$B"
start=$(date +%s)
build "$A" && build "$B"
echo "(two builds: $(( $(date +%s) - start ))s)"
BA=$A/target/release/baton
BB=$B/target/release/baton
check "both builds produced a binary" test -x "$BA" -a -x "$BB"
ha=$(sha256sum <"$BA" | cut -c1-64)
hb=$(sha256sum <"$BB" | cut -c1-64)
echo "   a: $ha $(stat -c %s "$BA")"
echo "   b: $hb $(stat -c %s "$BB")"
check "byte-identical binaries" test "$ha" = "$hb"
no_path() { ! grep -q -a -F -e "$WORK" -e "$HOME/.cargo" -e "$REPO" "$1"; }
check "no build directory, CARGO_HOME or checkout path in the binary" no_path "$BA"
if [ "$ha" != "$hb" ] && command -v cmp >/dev/null; then
    cmp -l "$BA" "$BB" | head -5
fi
# The code layout still applies without .cargo/config.toml.
has_layout() { readelf -SW "$1" | grep -q '\.text\.baton_worker'; }
check "code layout (src/layout.ld) applied: .text.baton_worker section present" has_layout "$BA"
check "the sample site's place is the packager's /usr/share/baton/sample-site" grep -q -a -F /usr/share/baton/sample-site "$BA"
summary
