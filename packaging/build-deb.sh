#!/usr/bin/env bash
# Builds the Debian package from this checkout:
#
#   packaging/build-deb.sh [OUTDIR]        # default OUTDIR: ./dist
#
# Copies the tracked files (git ls-files) to a scratch source tree, puts
# packaging/debian/ there as debian/ and every crate of Cargo.lock in
# vendor/ (packaging/vendor.sh), runs `dpkg-buildpackage` (source and
# binary packages; the build is offline from vendor/, with an empty
# CARGO_HOME to prove it), copies the .deb (and the -dbgsym .deb), the
# .dsc and the source tarball to OUTDIR and runs lintian on both
# (OUTDIR/lintian.txt; LINTIAN=0 skips it). TMPDIR is where the scratch
# tree is made. Needs dpkg-dev, debhelper (installed from apt if
# missing, as root), lintian (optional) and a Rust toolchain (cargo in PATH,
# e.g. from rustup). CARGO_TARGET_DIR is honoured, so an existing build
# directory is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=$(realpath -m "${1:-$REPO/dist}")

need=()
command -v dpkg-buildpackage >/dev/null || need+=(dpkg-dev)
command -v dh >/dev/null || need+=(debhelper)
if [ "${#need[@]}" -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi
command -v cargo >/dev/null || export PATH=$HOME/.cargo/bin:$PATH

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
DEBVERSION=$(sed -n '1s/^baton (\([^)]*\)).*/\1/p' packaging/debian/changelog)
if [ "$VERSION" != "$DEBVERSION" ]; then
    echo "build-deb.sh: Cargo.toml says $VERSION, packaging/debian/changelog $DEBVERSION" >&2
    exit 1
fi

# TMPDIR: where the scratch tree goes (reproducible.sh builds in two).
WORK=$(mktemp -d "${TMPDIR:-/tmp}/baton-deb.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
SRC=$WORK/baton-$VERSION
mkdir -p "$SRC"
git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$SRC"
cp -a packaging/debian "$SRC/debian"
packaging/vendor.sh "$SRC/vendor"
# The package's copyright must cover what it vendors.
VENDOR=$SRC/vendor bash packaging/tests/copyright.sh | tail -1

# An empty CARGO_HOME: nothing from cargo's cache or the network.
mkdir -p "$WORK/cargo-home"
(cd "$SRC" && CARGO_HOME=$WORK/cargo-home dpkg-buildpackage -us -uc)

mkdir -p "$OUT"
cp "$WORK"/*.deb "$OUT"/ 2>/dev/null || true
cp "$WORK"/*.ddeb "$OUT"/ 2>/dev/null || true
cp "$WORK"/*.dsc "$WORK"/*.tar.* "$OUT"/ 2>/dev/null || true
DEB=$(ls "$OUT"/baton_"$VERSION"_*.deb)
echo "== built $DEB"
dpkg-deb --info "$DEB" | sed -n '/Package:/,$p'
dpkg-deb --contents "$DEB"

if [ "${LINTIAN:-1}" = 0 ]; then
    echo "== lintian skipped (LINTIAN=0)"
elif command -v lintian >/dev/null; then
    echo "== lintian"
    # lintian exits non-zero on errors; report them, docs/packaging.md
    # explains each remaining tag.
    lintian --info --display-info --pedantic "$WORK"/*.changes 2>&1 | tee "$OUT/lintian.txt" || true
else
    echo "== lintian not installed: skipped"
fi
