# packaging/tests/lib.sh: the TAP-like reporting the packaging tests share.
# Sourced, not run. Each test prints "ok   - WHAT" or "FAIL - WHAT", and
# `summary` prints "N passed, N failed" last and fails if anything did.

PASS=0
FAIL=0
ok() { PASS=$((PASS + 1)); echo "ok   - $*"; }
nok() { FAIL=$((FAIL + 1)); echo "FAIL - $*"; }
check() { # check DESCRIPTION COMMAND...
    local what=$1
    shift
    if "$@"; then ok "$what"; else nok "$what"; fi
}
summary() {
    echo "$PASS passed, $FAIL failed"
    [ "$FAIL" = 0 ]
}
