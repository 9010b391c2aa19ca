#!/bin/sh
# The circuits commands through the real binary on stories260K, in json mode: dla adds up,
# neurons and acts have their shapes, patch's identities and recovery table, scan labels the
# previous-token head, and what dla, neurons, patch and scan leave in the store.
set -u
LOUPE=${LOUPE:-./loupe}
STORIES=../shared/models/stories260K/stories260K.bin
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export XDG_DATA_HOME="$tmp/data"

. tests/e2e/lib/check.sh

CLEAN="Lily and Tim went to the park. Lily gave the ball to"
CORRUPT="Lily and Tim went to the park. Tim gave the ball to"   # differs at position 12 only
db=$tmp/c.db

"$LOUPE" -d "$db" -m json "$STORIES" -e "run $CLEAN" -e 'top 2' -e 'dla' -e 'dla --vs " a" --pos -1' \
    -e 'dla --target-id 311 --pos 5' -e 'neurons 3' -e 'neurons 2 4 --sort dla --vs " a"' -e 'acts 1' \
    -e 'acts 4 --site mlp_post --pos -1 --top 3' -e info >"$tmp/out" 2>"$tmp/err"
check "dla, neurons, acts run" test $? -eq 0
check "dla: default target is the top prediction" is 2 '.target.id == 265 and .contrast == null and .pos == 19'
check "dla: 40 heads, 5 MLPs" is 2 '(.heads | length) == 40 and (.mlp | length) == 5 and .heads[9] == {"layer":1,"head":1,"dla":.heads[9].dla}'
check "dla closure: total = logit within 1e-3" is 2 '(.total - .logit) | fabs < 1e-3'
check "dla closure: the parts add up to total" is 2 '(([.heads[].dla] | add) + ([.mlp[].dla] | add) + .embed + .bias - .total) | fabs < 1e-3'
check "dla: logit is the run's" is 2 "(.logit - $(jq -s '.[1][0].logit' "$tmp/out")) | fabs < 1e-4"
check "dla --vs: a logit difference" is 3 "(.contrast.token == \" a\") and ((.logit - $(jq -s '.[1][0].logit' "$tmp/out") + 12.25) | fabs < 0.01) and ((.total - .logit) | fabs < 1e-3)"
check "dla --target-id --pos" is 4 '.target.id == 311 and .pos == 5 and ((.total - .logit) | fabs < 1e-3)'
check "neurons: 10, by activation" is 5 '(.neurons | length) == 10 and .layer == 3 and ([.neurons[].act] | . == (sort | reverse))'
check "neurons --sort dla: by |dla|" is 6 '(.neurons | length) == 4 and ([.neurons[].dla | fabs] | . == (sort | reverse)) and .contrast.token == " a"'
check "acts: one row per position" is 7 '.site == "resid_post" and (.positions | length) == 20 and (.positions[0] | (.max >= .min) and .std >= 0 and (.top | length) == 5)'
check "acts: top dims by |value|" is 7 '[.positions[] | [.top[].value | fabs] | . == (sort | reverse)] | all'
check "acts --site mlp_post --pos" is 8 ".site == \"mlp_post\" and .width == $(jq -s '.[9].d_mlp' "$tmp/out") and (.positions | length) == 1 and .positions[0].pos == 19 and (.positions[0].top | length) == 3"

# patch: recovery tables and their identities.
"$LOUPE" -d "$db" -m json "$STORIES" -e "run $CLEAN" -e "patch --corrupt \"$CORRUPT\"" \
    -e "patch --corrupt \"$CORRUPT\" --site z" -e "patch --corrupt \"$CORRUPT\" --site attn_out" \
    -e "patch --corrupt \"$CORRUPT\" --denoise" -e "patch --corrupt \"$CLEAN\" --site mlp_out" \
    -e "patch --corrupt \"$CORRUPT\" --target ' the' --vs ' her'" >"$tmp/out" 2>"$tmp/err"
check "patch runs" test $? -eq 0
check "patch: the browser's shape (layer x position)" is 1 '.site == "resid_pre" and .metric == "logit_diff_recovery" and .rows == "layer" and .cols == "position" and (.values | length) == 5 and ([.values[] | length == 20] | all) and (.clean | type) == "number" and (.corrupt | type) == "number"'
check "patch: positions before the corruption recover fully" is 1 '[.values[][0:12][]] | all(. == 1)'
check "patch: the corrupted token at layer 0 is the corrupt run" is 1 '.values[0][12] | fabs < 1e-3'
check "patch: default contrast is the corrupted run's prediction" is 1 '.target.id == 265 and .contrast.id != 265 and .direction == "noising"'
check "patch --site z: layer x head" is 2 '.cols == "head" and (.values | length) == 5 and ([.values[] | length == 8] | all)'
check "patch --site attn_out: every position per layer too" is 3 '.cols == "position" and (.layer_all | length) == 5 and ([.values[][0:12][]] | all(. == 1))'
check "patch --denoise: the clean token at layer 0 is the clean run" is 4 '.direction == "denoising" and ((.values[0][12] - 1) | fabs < 1e-3) and ([.values[][0:12][]] | all(. == 0))'
check "patch with the clean prompt: recovery undefined (0/0)" is 5 '.undefined == true and ([.values[][]] | all(. == null)) and .clean == .corrupt'
check "patch with the clean prompt: every patch leaves the metric alone" is 5 '. as $r | [.raw[][]] | all(. == $r.clean)'
check "patch --target --vs" is 6 '.target.token == " the" and .contrast.token == " her" and (.values | length) == 5'

"$LOUPE" -d :memory: "$STORIES" -e "run $CLEAN" -e 'patch --corrupt "Lily went to the park."' 2>"$tmp/e" >/dev/null; rc=$?
check "patch: a prompt of another length is refused" test $rc -eq 1
check "patch: the refusal says why" grep -q '^error: patch: the corrupted prompt is 10 tokens and the run 20; patching needs the same length' "$tmp/e"
"$LOUPE" -d :memory: "$STORIES" -e "run $CLEAN" -e "patch --corrupt \"$CORRUPT\" --site pattern" 2>"$tmp/e" >/dev/null
check "patch: unknown site" grep -q "^error: unknown patching site 'pattern'" "$tmp/e"

# scan: stories260K's previous-token head 3.6; the scan is stored.
"$LOUPE" -d "$db" -m json "$STORIES" -e 'scan --seqs 2 --seed 1' >"$tmp/out" 2>"$tmp/err"
check "scan runs" test $? -eq 0
check "scan: every head scored" is 0 '(.heads | length) == 40 and .seq_len == 50 and .bos == 1 and .threshold == 0.4 and (.scan_id | type) == "number"'
check "scan: head 3.6 is labelled prev_token" is 0 '.heads[30] | .layer == 3 and .head == 6 and .prev_token > 0.4 and (.labels | test("prev_token"))'
check "scan: labels follow the threshold" is 0 '[.heads[] | (.labels | test("induction")) == (.induction >= 0.4)] | all'

# The store: dla, neurons and patch as analyses of their run, the scan per head.
q() { "$LOUPE" -d "$db" -m json -e "sql $1" | jq -e "$2" >/dev/null; }
check "store: analyses by kind" q "SELECT kind, count(*) AS n FROM analyses GROUP BY kind ORDER BY kind" '. == [{"kind":"dla","n":3},{"kind":"neurons","n":2},{"kind":"patch","n":6}]'
check "store: a patch result the browser can read" q "SELECT result FROM analyses WHERE kind = 'patch' ORDER BY id LIMIT 1" '.[0].result | fromjson | .site == "resid_pre" and .rows == "layer" and .cols == "position" and (.values | length) == 5 and (.clean | type) == "number"'
check "store: patch params name the corrupted prompt" q "SELECT params FROM analyses WHERE kind = 'patch' ORDER BY id LIMIT 1" ".[0].params | fromjson | .corrupt == \"$CORRUPT\" and .site == \"resid_pre\" and (.corrupt_ids | length) == 20"
check "store: the head scan" q "SELECT count(*) AS n, sum(labels LIKE '%prev_token%') AS prev FROM head_scans_view" '.[0].n == 40 and .[0].prev >= 1'

# Table mode: the DLA grid ends with the sums; patch puts positions across.
"$LOUPE" -d :memory: "$STORIES" -e "run $CLEAN" -e dla -e "patch --corrupt \"$CORRUPT\"" >"$tmp/t" 2>"$tmp/err"
check "dla table: heads across, then the mlp" grep -q '^layer  *h0  *h1 .* mlp$' "$tmp/t"
check "dla table: total and logit rows" sh -c "grep -q '^total ' '$tmp/t' && grep -q '^logit ' '$tmp/t'"
check "patch table: positions across" grep -q '12:·Lily' "$tmp/t"

# README's Circuits examples: each `$ ./loupe ...` line, run in a fresh data directory (so
# its run is run 1), prints exactly the lines shown under it.
sed -n '/^## Circuits$/,/^## /p' README.md >"$tmp/section"
awk -v dir="$tmp" '
    /^```text$/ { inblock = 1; next }
    /^```$/ { if (inblock && n) close(out); inblock = 0; next }
    inblock && /^\$ \.\/loupe / { n++; out = dir "/ex" n ".want"; sub(/^\$ \.\/loupe /, ""); print > (dir "/ex" n ".cmd"); next }
    inblock && n { print > out }
' "$tmp/section"
n=0
for cmd in "$tmp"/ex*.cmd; do
    [ -e "$cmd" ] || continue
    n=$((n + 1))
    want=${cmd%.cmd}.want
    mkdir -p "$tmp/x$n"
    XDG_DATA_HOME="$tmp/x$n" sh -c "\"\$1\" $(cat "$cmd")" sh "$LOUPE" >"$tmp/got" 2>"$tmp/err"
    check "README example $n: $(sed 's/.*-e //' "$cmd" | cut -c1-50)" cmp -s "$want" "$tmp/got"
    cmp -s "$want" "$tmp/got" || diff "$want" "$tmp/got" | head -10
done
check "README has the circuits examples ($n)" test "$n" -ge 4

[ "$fails" -eq 0 ] || { echo "$fails failed"; exit 1; }
echo "all passed"
