#!/bin/sh
# Every fuzz corpus (the seeds, and each input that once crashed a harness) replayed through
# its harness's entry code, built without libFuzzer ($BUILD/fuzz-replay/fuzz_NAME, made by
# make check): the inputs fuzzing found must stay fixed without a fuzzing run.
set -u
BUILD=${BUILD:-build}
fails=0
for f in tests/fuzz/fuzz_*.c; do
    name=$(basename "$f" .c)
    bin=$BUILD/fuzz-replay/$name
    corpus=tests/fuzz/corpus/${name#fuzz_}
    if [ ! -x "$bin" ]; then echo "FAIL $name: $bin not built (make check builds it)"; fails=$((fails + 1)); continue; fi
    [ -d "$corpus" ] || continue
    if out=$(timeout 300 "$bin" "$corpus" 2>&1); then echo "ok   $name: $out"
    else echo "FAIL $name"; echo "$out" | tail -20; fails=$((fails + 1)); fi
done
echo "$fails failed"
[ "$fails" -eq 0 ]
