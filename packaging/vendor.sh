#!/usr/bin/env bash
# Vendors every crate of Cargo.lock into DIR for the source package:
#
#   packaging/vendor.sh DIR        # e.g. the source tree's vendor/
#
# `cargo vendor --versioned-dirs --locked` (offline when the crates are
# already in cargo's cache, so a build machine without network can do it
# too), then the Windows-only crates are emptied: they are in Cargo.lock
# (cargo resolves for every platform) but never compiled on Linux, and
# `windows_*` ship prebuilt import libraries (.a/.lib) that a Debian
# source package must not carry. Each keeps its Cargo.toml, licence files
# and an empty src/lib.rs, with .cargo-checksum.json rewritten to match,
# so cargo still resolves the lock file against them. Every crate's
# Cargo.toml.orig goes too (see below). debian/rules builds
# from DIR with `--frozen` and source replacement given on the command
# line (no .cargo/config.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:?usage: packaging/vendor.sh DIR}
command -v cargo >/dev/null || export PATH=$HOME/.cargo/bin:$PATH

rm -rf "$DEST"
if ! cargo vendor --versioned-dirs --locked --offline "$DEST" >/dev/null 2>"$DEST.err"; then
    cargo vendor --versioned-dirs --locked "$DEST" >/dev/null
fi
rm -f "$DEST.err"

python3 - "$DEST" <<'PY'
import hashlib, json, os, re, shutil, sys

dest = sys.argv[1]
pruned = 0
for name in sorted(os.listdir(dest)):
    if not re.match(r"windows[-_]", name):
        continue
    crate = os.path.join(dest, name)
    keep = {"Cargo.toml", ".cargo-checksum.json"}
    for entry in os.listdir(crate):
        if entry in keep or re.match(r"(?i)licen[cs]e|copying|unlicense", entry):
            continue
        path = os.path.join(crate, entry)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    os.makedirs(os.path.join(crate, "src"))
    open(os.path.join(crate, "src", "lib.rs"), "w").close()
    sums = json.load(open(os.path.join(crate, ".cargo-checksum.json")))
    files = {}
    for root, _, names in os.walk(crate):
        for n in names:
            rel = os.path.relpath(os.path.join(root, n), crate)
            if rel == ".cargo-checksum.json":
                continue
            with open(os.path.join(crate, rel), "rb") as f:
                files[rel] = hashlib.sha256(f.read()).hexdigest()
    sums["files"] = files
    with open(os.path.join(crate, ".cargo-checksum.json"), "w") as f:
        json.dump(sums, f, sort_keys=True)
    pruned += 1
# Cargo.toml.orig (the manifest before cargo normalised it for the
# registry) is not needed to build, and lintian reads *.orig as a failed
# patch's leftover (source-contains-patch-failure-file): dropped, with its
# checksum entry.
for name in sorted(os.listdir(dest)):
    crate = os.path.join(dest, name)
    orig = os.path.join(crate, "Cargo.toml.orig")
    if not os.path.exists(orig):
        continue
    os.remove(orig)
    path = os.path.join(crate, ".cargo-checksum.json")
    sums = json.load(open(path))
    sums["files"].pop("Cargo.toml.orig", None)
    with open(path, "w") as f:
        json.dump(sums, f, sort_keys=True)
print(f"vendor.sh: {len(os.listdir(dest))} crates in {dest}, {pruned} Windows-only ones emptied")
PY
