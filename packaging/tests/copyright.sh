#!/usr/bin/env bash
# debian/copyright is generated (packaging/gen-copyright.py, from cargo
# metadata): checks that the committed file is exactly the script's output
# for the current Cargo.lock, that the script refuses what it cannot
# license (an unknown licence, a crate without one), turns SPDX into DEP-5
# the documented way, and, given a vendor directory (VENDOR=dir, as
# build-deb.sh makes), that every vendored crate has its paragraph.
#
#   bash packaging/tests/copyright.sh
#   VENDOR=/tmp/src/vendor bash packaging/tests/copyright.sh
#
# Prints "N passed, N failed" last. Needs python3 and cargo (and crates.io, for manifests not in cargo's cache).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
REPO=$PWD
# shellcheck source=packaging/tests/lib.sh
. "$REPO/packaging/tests/lib.sh"

T=$(mktemp -d /tmp/baton-copyright.XXXXXX)
trap 'rm -rf "$T"' EXIT

check "gen-copyright.py runs" bash -c "python3 packaging/gen-copyright.py >'$T/copyright'"
if diff -u packaging/debian/copyright "$T/copyright" >"$T/diff"; then
    ok "packaging/debian/copyright is the script's output (regenerate: python3 packaging/gen-copyright.py > packaging/debian/copyright)"
else
    nok "packaging/debian/copyright differs from the script's output:"
    head -40 "$T/diff"
fi
crates=$(cargo metadata --format-version 1 --locked --offline 2>/dev/null |
    python3 -c 'import json,sys; m=json.load(sys.stdin); print(sum(p["id"] not in set(m["workspace_members"]) for p in m["packages"]))')
paras=$(grep -c '^Files: vendor/' packaging/debian/copyright)
check "one paragraph per crate in the dependency graph ($paras of $crates)" test "$paras" = "$crates"
# Every licence named in a Files paragraph has its stand-alone paragraph.
missing=$(python3 - packaging/debian/copyright <<'PY'
import re, sys
text = open(sys.argv[1]).read()
paras = text.split("\n\n")
standalone = {p.split("\n")[0][9:] for p in paras if p.startswith("License: ")}
used = set()
for p in paras:
    if p.startswith("Files: "):
        lic = re.search(r"^License: (.*)$", p, re.M).group(1)
        for part in re.split(r",? and | or ", lic):
            used.add(part.strip())
print(" ".join(sorted(used - standalone)))
PY
)
check "every licence named has a stand-alone paragraph (${missing:-none missing})" test -z "$missing"

# The conversion, on made-up metadata.
meta() { # meta NAME LICENSE: one crate besides the workspace member
    printf '{"workspace_members":["w"],"packages":[{"id":"w","name":"baton","version":"0"},{"id":"c","name":"%s","version":"1.0.0","authors":[],"license":%s}]}' "$1" "$2" >"$T/meta.json"
}
meta x '"(MIT OR Apache-2.0) AND Unicode-3.0"'
out=$(python3 packaging/gen-copyright.py --metadata "$T/meta.json")
check "SPDX (A OR B) AND C becomes DEP-5 'A or B, and C'" grep -qx 'License: MIT or Apache-2.0, and Unicode-3.0' <<<"$out"
check "a crate without authors: 'the NAME authors'" grep -qx 'Copyright: the x authors' <<<"$out"
meta y '"BSD-3-Clause/MIT"'
out=$(python3 packaging/gen-copyright.py --metadata "$T/meta.json")
check "old-style A/B becomes 'A or B'" grep -qx 'License: BSD-3-clause or MIT' <<<"$out"
meta z '"WTFPL"'
if python3 packaging/gen-copyright.py --metadata "$T/meta.json" >/dev/null 2>"$T/err"; then
    nok "an unknown licence is refused"
else
    ok "an unknown licence is refused"
fi
check "  naming the crate and the licence" grep -q "z 1.0.0: unknown licence 'WTFPL'" "$T/err"
meta n null
if python3 packaging/gen-copyright.py --metadata "$T/meta.json" >/dev/null 2>"$T/err"; then
    nok "a crate without a licence is refused"
else
    ok "a crate without a licence is refused"
fi

if [ -n "${VENDOR:-}" ]; then
    n=0
    bad=
    for d in "$VENDOR"/*/; do
        d=${d%/}
        n=$((n + 1))
        grep -qxF "Files: vendor/${d##*/}/*" packaging/debian/copyright || bad="$bad ${d##*/}"
    done
    check "every one of the $n vendored crates has its paragraph${bad:+ (missing:$bad)}" test -z "$bad"
fi

summary
