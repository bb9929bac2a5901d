#!/usr/bin/env bash
# The interop harness itself: under CI=true (as .ci/run sets it) a test that
# skips fails the run, and a test run without root fails instead of skipping.
source "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)

mkdir -p "$WORK/suite"
cp "$HERE/run.sh" "$HERE/lib.sh" "$WORK/suite/"
printf '#!/usr/bin/env bash\necho "SKIP skipper: nothing to do here"\nexit 77\n' >"$WORK/suite/skipper_test.sh"

skip_passes_outside_ci() {
    local out
    out=$(env -u CI bash "$WORK/suite/run.sh" 2>&1) || { echo "$out"; return 1; }
    grep -q "1 skipped" <<<"$out"
}
skip_fails_under_ci() {
    local out
    if out=$(CI=true bash "$WORK/suite/run.sh" 2>&1); then echo "$out"; return 1; fi
    grep -q "FAIL skipper_test.sh: skipped, and CI=true forbids skipping" <<<"$out"
}
check "outside CI a skipped test is reported as skipped" skip_passes_outside_ci
check "under CI=true a skipped test fails the run" skip_fails_under_ci

not_root_fails_under_ci() {
    printf '#!/usr/bin/env bash\nsource "$(dirname "$0")/lib.sh"\nfinish\n' >"$WORK/suite/needsroot_test.sh"
    rm -f "$WORK/suite/skipper_test.sh"
    chmod -R a+rX "$WORK"
    local out status
    out=$(CI=true setpriv --reuid=65534 --regid=65534 --clear-groups bash "$WORK/suite/needsroot_test.sh" 2>&1); status=$?
    echo "$out"
    [ "$status" -ne 0 ] && [ "$status" -ne 77 ] && grep -q "CI=true forbids skipping" <<<"$out"
}
check "under CI=true a test without root fails instead of skipping" not_root_fails_under_ci
finish
