#!/usr/bin/env bash
# Builds "version N+1" of the package for packaging/tests/deb-upgrade.sh:
# the tracked files of this checkout with the version bumped to
# VERSION+SUFFIX (Cargo.toml, the workspace crates in Cargo.lock, a new
# debian/changelog entry), so `baton -V` and the package version differ
# from the checkout's, built with packaging/build-deb.sh.
#
#   bash packaging/tests/build-next-deb.sh OUTDIR [SUFFIX]   # SUFFIX default +upgradetest1
#
# "+SUFFIX" sorts after the plain version for dpkg and is valid semver
# build metadata for cargo.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
OUT=$(realpath -m "${1:?usage: build-next-deb.sh OUTDIR [SUFFIX]}")
SUFFIX=${2:-+upgradetest1}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
NEXT=$VERSION$SUFFIX

WORK=$(mktemp -d /tmp/baton-next.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$WORK"
cd "$WORK"
python3 - "$VERSION" "$NEXT" <<'PY'
import re, sys
old, new = sys.argv[1], sys.argv[2]
toml = open("Cargo.toml").read()
toml = toml.replace(f'\nversion = "{old}"\n', f'\nversion = "{new}"\n', 1)
open("Cargo.toml", "w").write(toml)
# The workspace's own crates in the lock file (build-deb.sh builds
# --frozen): the packages without a source (registry crates have one),
# as many as the workspace has members.
members = re.search(r'members = \[([^\]]*)\]', toml).group(1).count('"') // 2
blocks = open("Cargo.lock").read().split("\n[[package]]\n")
n = 0
for i, b in enumerate(blocks):
    if "\nsource = " not in b and f'\nversion = "{old}"\n' in b:
        blocks[i] = b.replace(f'\nversion = "{old}"\n', f'\nversion = "{new}"\n', 1)
        n += 1
assert n == members + 1, f"expected {members + 1} workspace crates in Cargo.lock, found {n}"
open("Cargo.lock", "w").write("\n[[package]]\n".join(blocks))
PY
{
    printf 'baton (%s) unstable; urgency=medium\n\n' "$NEXT"
    printf '  * Test build for packaging/tests/deb-upgrade.sh.\n\n'
    printf ' -- Baton developers <baton@example.org>  %s\n\n' "$(date -R -u -d @"${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct)}")"
    cat packaging/debian/changelog
} >changelog.new
mv changelog.new packaging/debian/changelog
# build-deb.sh copies what git tracks.
git init -q && git add -A && git -c user.name=t -c user.email=t@localhost commit -qm "version $NEXT"
bash packaging/build-deb.sh "$OUT"
