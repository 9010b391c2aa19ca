#!/bin/sh
# A dictionary's features as dataset units (dataset --track features) on the bundled model
# and its SAE: top examples, density histograms and quantile samples per feature, exact
# against what `feature` prints; shards merged and a stopped run resumed give one process's
# rows; the refusals.
set -u
LOUPE=${LOUPE:-./loupe}
M=models/default
SAE="sae load models/default-sae --name ds"
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export XDG_DATA_HOME="$tmp/data"
. tests/e2e/lib/check.sh
. tests/e2e/lib/dataset.sh

ioi_items 40 "$tmp/items.jsonl"
OPTS="--label-field label --k 4 --samples 3"

# (a) one process, features alone and with the model's own units
"$LOUPE" -d "$tmp/one.db" -m json $M -e "$SAE" -e "dataset $tmp/items.jsonl $OPTS --track features" >"$tmp/out" 2>"$tmp/err"
check "features alone: every item run" jq -e -s '.[1].items == 40 and .[1].finished' "$tmp/out"
check "features alone: a row for each of the 512 features, nothing else" test "$(q "$tmp/one.db" "SELECT count(*) AS n, count(DISTINCT unit_kind) AS k, min(unit) AS a, max(unit) AS b, max(layer) AS l FROM unit_stats" '.[0] | "\(.n) \(.k) \(.a) \(.b) \(.l)"')" = "512 1 0 511 0"
check "histograms: every position of every item, once per feature" test "$(q "$tmp/one.db" "SELECT count(DISTINCT n) AS d, max(n) = (SELECT sum(n_tokens) FROM dataset_items) AS ok FROM (SELECT unit, sum(value) AS n FROM unit_stats, json_each(histogram) GROUP BY unit)" '.[0] | "\(.d) \(.ok)"')" = "1 1"
check "examples: only where a feature fires, at most 4, by value" test "$(q "$tmp/one.db" "SELECT sum(value <= 0) AS z, max(rank) AS r, sum(n) AS bad FROM (SELECT value, rank, (SELECT count(*) FROM unit_examples b WHERE b.unit = a.unit AND b.unit_kind = 'feature' AND b.rank = a.rank + 1 AND b.value > a.value) AS n FROM unit_examples a WHERE unit_kind = 'feature')" '.[0] | "\(.z) \(.r) \(.bad)"')" = "0 4 0"
check "a feature that never fires: no example, every position in bin 0" test "$(q "$tmp/one.db" "SELECT count(*) AS n FROM unit_stats WHERE examples = '[]' AND histogram ->> 0 != (SELECT sum(n_tokens) FROM dataset_items)" '.[0].n')" = 0
check "samples: in the bin of their value, only firing items" test "$(q "$tmp/one.db" "SELECT count(*) AS n, sum(bin = 0) AS z, sum(value < (SELECT coalesce(lower, -1e30) FROM unit_bins WHERE unit_kind = 'feature' AND unit_bins.bin = q.bin)) AS low FROM unit_quantile_samples q WHERE unit_kind = 'feature'" '.[0] | "\(.n > 0) \(.z) \(.low)"')" = "true 0 0"

# The top example of a feature: the item's largest activation, at the position and with the
# value `feature` prints for its text (the same dictionary on the same run).
f=$(q "$tmp/one.db" "SELECT unit FROM unit_examples WHERE unit_kind = 'feature' AND rank = 1 ORDER BY value DESC LIMIT 1" '.[0].unit')
"$LOUPE" -d "$tmp/one.db" -m json $M -e "$SAE" -e "examples feature $f --k 4" >"$tmp/out" 2>"$tmp/err"
check "examples feature $f: from the dataset's units, rank order, token in its context" jq -e -s '.[1] | length >= 1 and length <= 4 and .[0].rank == 1 and all(.metric == "activation") and (.[0].context[.[0].pos - .[0].context_start] == .[0].token) and (.[0] | has("key_pos") | not)' "$tmp/out"
text=$(jq -r -s '.[1][0].text' "$tmp/out"); pos=$(jq -s '.[1][0].pos' "$tmp/out"); val=$(jq -s '.[1][0].value' "$tmp/out")
"$LOUPE" -d :memory: -m json $M -e "run $text" -e "$SAE" -e "feature $f --k 1" >"$tmp/out" 2>"$tmp/err"
check "examples feature $f: the activation feature prints there (1e-6)" jq -e -s --argjson p "$pos" --argjson v "$val" '.[2].acts[$p].act - $v | fabs < 1e-6' "$tmp/out"
check "examples feature $f: the largest over the item's positions, its first" jq -e -s --argjson p "$pos" '[.[2].acts[].act] as $a | ($a | max) as $m | ($a | index($m)) == $p' "$tmp/out"
# the density: the positions where it fires over the dataset, counted again one item at a time
fires=0
while IFS= read -r line; do
    t=$(printf '%s' "$line" | jq -r .text)
    n=$("$LOUPE" -d :memory: -m json $M -e "run $t" -e "$SAE" -e "feature $f --k 1" | jq -s '[.[2].acts[] | select(.act > 0)] | length')
    fires=$((fires + n))
done <"$tmp/items.jsonl"
check "feature $f's histogram: its $fires firing positions outside bin 0" test "$(q "$tmp/one.db" "SELECT sum(count) AS n FROM unit_histograms WHERE unit_kind = 'feature' AND unit = $f AND bin > 0" '.[0].n')" = "$fires"

"$LOUPE" -d "$tmp/all.db" $M -e "$SAE" -e "dataset $tmp/items.jsonl $OPTS" >/dev/null 2>"$tmp/err"
check "a dictionary loaded: features tracked beside neurons and heads by default" test "$(q "$tmp/all.db" "SELECT group_concat(k) AS k FROM (SELECT unit_kind || ' ' || count(*) AS k FROM unit_stats GROUP BY unit_kind ORDER BY unit_kind)" '.[0].k')" = "feature 512,head 56,neuron 512"
check "the same feature rows as features alone" test "$(sqlite3 "$tmp/all.db" "SELECT examples, samples, histogram FROM unit_stats WHERE unit_kind = 'feature' ORDER BY unit" | md5sum)" = "$(sqlite3 "$tmp/one.db" "SELECT examples, samples, histogram FROM unit_stats WHERE unit_kind = 'feature' ORDER BY unit" | md5sum)"
check "settings name the dictionary" test "$(q "$tmp/all.db" "SELECT settings ->> '\$.features[0].name' AS n, settings ->> '\$.features[0].d_sae' AS d, settings ->> '\$.track' AS t FROM datasets" '.[0] | "\(.n) \(.d) \(.t)"')" = "ds 512 neurons,heads,features"

# (b) three shards merged == one process, row for row
for s in 1 2 3; do
    "$LOUPE" -d "$tmp/s$s.db" $M -e "$SAE" -e "dataset $tmp/items.jsonl $OPTS --shard $s/3" >/dev/null 2>"$tmp/err" || { echo "FAIL shard $s"; cat "$tmp/err"; fails=$((fails + 1)); }
done
"$LOUPE" -d "$tmp/m.db" -e "merge $tmp/s1.db $tmp/s2.db $tmp/s3.db" >/dev/null 2>"$tmp/err"
agg "$tmp/all.db" 1 >"$tmp/all.agg"
check "merged shards == one process with features ($(grep -c '^feature' "$tmp/all.agg") feature rows)" test "$(agg "$tmp/m.db" "$(merged_id "$tmp/m.db")" | md5sum)" = "$(md5sum <"$tmp/all.agg")"
"$LOUPE" -d "$tmp/one.db" $M -e "$SAE" -e "dataset $tmp/items.jsonl $OPTS --shard 1/3" >/dev/null 2>&1
"$LOUPE" -d "$tmp/x.db" $M -e "dataset $tmp/items.jsonl $OPTS --shard 2/3" >/dev/null 2>&1
refused "merge a shard made without the dictionary" "other options" -d "$tmp/m.db" -e "merge $tmp/x.db"

# (c) stopped (SIGTERM) after a few items, then --resume: the uninterrupted run's rows
SLOW="$OPTS --each 'attr ig --steps 32' --commit-every 2 --limit 24"
"$LOUPE" -d "$tmp/ref.db" $M -e "$SAE" -e "dataset $tmp/items.jsonl $SLOW" >/dev/null 2>"$tmp/err"
"$LOUPE" -d "$tmp/term.db" $M -e "$SAE" -e "dataset $tmp/items.jsonl $SLOW" >/dev/null 2>"$tmp/e" & pt=$!
k=0; n=0
while [ $k -lt 600 ] && [ "${n:-0}" -lt 4 ]; do sleep 0.02; k=$((k + 1)); n=$(sqlite3 "$tmp/term.db" "SELECT n_items FROM datasets" 2>/dev/null); done
kill -TERM $pt; wait $pt; rc=$?
check "stopped after $n items" test $rc -eq 1
refused "resume without the dictionary" "other options" -d "$tmp/term.db" $M -e "dataset $tmp/items.jsonl $SLOW --resume"
"$LOUPE" -d "$tmp/term.db" $M -e "$SAE" -e "dataset $tmp/items.jsonl $SLOW --resume" >/dev/null 2>"$tmp/err"
check "stopped and resumed == uninterrupted, features included" test "$(agg "$tmp/term.db" 1 | md5sum)" = "$(agg "$tmp/ref.db" 1 | md5sum)"

# (e) packed forwards with a dictionary loaded (as in (a)): each feature's top values within
# rounding of every item run alone (--batch 1; items with one prefix tie, so ranks are
# compared by value); a dictionary spliced in runs every item alone, through the splice
"$LOUPE" -d "$tmp/b1.db" $M -e "$SAE" -e "dataset $tmp/items.jsonl $OPTS --track features --batch 1" >/dev/null 2>"$tmp/err"
cmp_top=$(sqlite3 "$tmp/one.db" "ATTACH '$tmp/b1.db' AS b; SELECT count(*) = (SELECT count(*) FROM unit_examples WHERE unit_kind = 'feature' AND dataset_id = 1) AND count(*) = (SELECT count(*) FROM b.unit_examples WHERE unit_kind = 'feature') AND max(abs(a.value - c.value)) < 1e-5 FROM unit_examples a JOIN b.unit_examples c ON c.unit_kind = a.unit_kind AND c.unit = a.unit AND c.rank = a.rank WHERE a.unit_kind = 'feature' AND a.dataset_id = 1")
check "packed with a dictionary loaded: top values within 1e-5 of each item alone" test "$cmp_top" = 1
for b in 8 1; do
    "$LOUPE" -d "$tmp/splice$b.db" $M -e "$SAE" -e "sae splice ds --no-error" -e "dataset $tmp/items.jsonl $OPTS --limit 12 --batch $b" >/dev/null 2>"$tmp/err"
done
"$LOUPE" -d "$tmp/plain.db" $M -e "$SAE" -e "dataset $tmp/items.jsonl $OPTS --limit 12 --batch 1" >/dev/null 2>"$tmp/err"
check "spliced in: every item alone, --batch 8 == --batch 1 to the bit" test "$(agg "$tmp/splice8.db" 1 | md5sum)" = "$(agg "$tmp/splice1.db" 1 | md5sum)"
neurons() { sqlite3 "$1" "SELECT examples FROM unit_stats WHERE unit_kind = 'neuron' ORDER BY layer, unit" | md5sum; }
check "spliced in (no error term): the neurons after it differ from the plain forward's" test "$(neurons "$tmp/splice8.db")" != "$(neurons "$tmp/plain.db")"

# (d) refusals
refused "an --each that splices a dictionary" "spliced or unspliced a dictionary; do that before 'dataset'" -d "$tmp/b.db" $M -e "$SAE" -e "dataset $tmp/items.jsonl --each 'sae splice ds'"
refused "an --each that drops one" "loaded, dropped" -d "$tmp/b.db" $M -e "$SAE" -e "dataset $tmp/items.jsonl --each 'sae drop ds'"
refused "--track features without a dictionary" "--track features: no dictionary is loaded" -d "$tmp/b.db" $M -e "dataset $tmp/items.jsonl --track features"
refused "--track with an unknown unit" "not neurons, heads or features" -d "$tmp/b.db" $M -e "dataset $tmp/items.jsonl --track neuron"
refused "examples feature of a dictionary the dataset did not track" "tracked other dictionaries" -d "$tmp/all.db" $M -e "sae load models/default-sae --site blocks.0.hook_resid_pre" -e "examples feature 3"
refused "examples feature past the dictionary" "feature" -d "$tmp/all.db" $M -e "$SAE" -e "examples feature 512"

echo "$fails failed"
[ "$fails" -eq 0 ]
