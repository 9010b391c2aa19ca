#!/bin/sh
# Runs every cmocka suite given as arguments, then tests/e2e/*.sh, and prints one total line.
# Suites run from the project root; ../shared must sit beside it. An e2e script that exits 77
# could not run here (a service that cannot start): it is counted as skipped, with its
# last "skip ..." line saying why, never as passed.
passed=0; failed=0; skipped=0; failed_names=""; skipped_names=""
count() { # $1 = log file: cmocka's "[  PASSED  ] N test(s)." and "[  FAILED  ] N test(s)..."
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$1" | tail -n 1)
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test(s), listed.*/\1/p' "$1" | tail -n 1)
    passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
}
mkdir -p "${BUILD:-build}/logs"
for t in "$@"; do
    log="${BUILD:-build}/logs/$(basename "$t").log"
    if "$t" >"$log" 2>&1; then :; else
        failed_names="$failed_names $(basename "$t")"
        grep -q '^\[  FAILED  \]' "$log" || failed=$((failed + 1))  # crashed before a summary
    fi
    cat "$log"
    count "$log"
done
for s in tests/e2e/*.sh; do
    [ -e "$s" ] || continue
    log="${BUILD:-build}/logs/e2e-$(basename "$s").log"
    BUILD="${BUILD:-build}" LOUPE="${LOUPE:-./loupe}" sh "$s" >"$log" 2>&1; rc=$?
    if [ $rc -eq 0 ]; then
        echo "[       OK ] e2e $(basename "$s")"; passed=$((passed + 1))
    elif [ $rc -eq 77 ]; then
        why=$(grep "^skip " "$log" | tail -n 1); why=${why#skip }
        echo "[  SKIPPED ] e2e $(basename "$s"): ${why:-no reason given}"; skipped=$((skipped + 1))
        skipped_names="$skipped_names $(basename "$s")"
    else
        cat "$log"; echo "[  FAILED  ] e2e $(basename "$s")"
        failed=$((failed + 1)); failed_names="$failed_names $(basename "$s")"
    fi
done
echo
[ -z "$failed_names" ] || echo "failing:$failed_names"
[ -z "$skipped_names" ] || echo "skipped (could not run here, see above):$skipped_names"
echo "$passed passed, $failed failed$([ $skipped -eq 0 ] || echo ", $skipped skipped")"
[ "$failed" -eq 0 ] && [ -z "$failed_names" ]
