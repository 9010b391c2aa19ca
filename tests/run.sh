#!/bin/sh
# Runs every cmocka suite given as arguments, then tests/e2e/*.sh, and prints one total line.
# Suites run from the project root; ../shared must sit beside it.
passed=0; failed=0; failed_names=""
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
    if BUILD="${BUILD:-build}" LOUPE="${LOUPE:-./loupe}" sh "$s" >"$log" 2>&1; then
        echo "[       OK ] e2e $(basename "$s")"; passed=$((passed + 1))
    else
        cat "$log"; echo "[  FAILED  ] e2e $(basename "$s")"
        failed=$((failed + 1)); failed_names="$failed_names $(basename "$s")"
    fi
done
echo
[ -z "$failed_names" ] || echo "failing:$failed_names"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ -z "$failed_names" ]
