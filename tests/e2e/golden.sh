#!/bin/sh
# Golden output of batch mode in every output mode, and reproducibility: the same script
# on the same model prints the same bytes twice (same binary, kernel and threads: loupe
# promises that). Against the golden files, which another machine's OpenBLAS kernel wrote,
# text is compared exactly and numbers within a tolerance (tests/tools/numdiff.c): relative
# 1e-4, or 1e-6 absolute near zero, or one unit in the last printed digit. Worst measured
# between the Haswell and SkylakeX kernels: 7.8e-6 relative (a top-3 probability in json:
# the logits differ in their 7th digit, and the softmax carries that into the probability).
# Regenerate after a deliberate change with
#   UPDATE_GOLDEN=1 sh tests/e2e/golden.sh
set -u
LOUPE=${LOUPE:-./loupe}
NUMDIFF=${BUILD:-build}/tools/numdiff
STORIES=../shared/models/stories260K/stories260K.bin
dir=tests/e2e/golden
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for mode in table box markdown csv json jsonl; do
    "$LOUPE" -d :memory: -m "$mode" "$STORIES" -f "$dir/script.loupe" >"$tmp/$mode.1" 2>"$tmp/err" || { cat "$tmp/err"; fails=$((fails + 1)); }
    "$LOUPE" -d :memory: -m "$mode" "$STORIES" -f "$dir/script.loupe" >"$tmp/$mode.2" 2>/dev/null
    if [ "${UPDATE_GOLDEN:-0}" = 1 ]; then cp "$tmp/$mode.1" "$dir/$mode.out"; fi
    if cmp -s "$tmp/$mode.1" "$tmp/$mode.2"; then echo "ok   $mode reproducible"; else echo "FAIL $mode differs between two runs"; fails=$((fails + 1)); fi
    if "$NUMDIFF" "$dir/$mode.out" "$tmp/$mode.1" >"$tmp/diff"; then echo "ok   $mode matches golden"; else
        echo "FAIL $mode differs from $dir/$mode.out:"; cat "$tmp/diff"; fails=$((fails + 1)); fi
done
# json and jsonl carry the same data: every jsonl line is an element or value of the json output.
if command -v jq >/dev/null; then
    a=$(jq -c 'if type=="array" then .[] else . end' "$tmp/json.1" | md5sum)
    b=$(jq -c . "$tmp/jsonl.1" | md5sum)
    if [ "$a" = "$b" ]; then echo "ok   json and jsonl agree"; else echo "FAIL json and jsonl differ"; fails=$((fails + 1)); fi
fi
echo "$fails failed"
[ "$fails" -eq 0 ]
