#!/bin/sh
# Generated datasets (generate:KIND:N[:SEED]) and --each commands with the item's fields put
# in ({NAME}), through the real binary on the bundled model: each templated command does
# for its item what the same command typed by hand does; shards of a generated dataset merge
# to one process's rows; a missing field fails its item alone; the refusals.
set -u
LOUPE=${LOUPE:-./loupe}
M=models/default
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export XDG_DATA_HOME="$tmp/data"
. tests/e2e/lib/check.sh
. tests/e2e/lib/dataset.sh

G=generate:ioi:24:5
EACH="--each 'dla --target {target}' --each 'patch --corrupt {corrupt} --target {target} --vs {subject}'"
"$LOUPE" -d "$tmp/one.db" -m json $M -e "dataset $G $EACH --k 3" >"$tmp/out" 2>"$tmp/err"
check "generated ioi: 24 items, none failed" jq -e '.items == 24 and .failed == 0 and .finished' "$tmp/out"
check "the dataset is named by its spec, label the target" test "$(q "$tmp/one.db" "SELECT d.name, d.path, count(*) AS n, sum(i.label LIKE ' %') AS l FROM datasets d JOIN dataset_items i ON i.dataset_id = d.id" '.[0] | "\(.name) \(.path) \(.n) \(.l)"')" = "$G $G 24 24"
check "a dla and a patch per item" test "$(q "$tmp/one.db" "SELECT group_concat(kind || ' ' || n) AS k FROM (SELECT kind, count(*) AS n FROM analyses GROUP BY kind ORDER BY kind)" '.[0].k')" = "dla 24,patch 24"
# Item 7 by hand: the same text, the same target, the corrupt prompt the item's JSON has
"$LOUPE" -d "$tmp/one.db" -m json -e "sql SELECT i.text, i.label, json_extract(a.params, '\$.corrupt') AS c, a.result AS patch, (SELECT result FROM analyses WHERE run_id = i.run_id AND kind = 'dla') AS dla FROM dataset_items i JOIN analyses a ON a.run_id = i.run_id AND a.kind = 'patch' WHERE i.item = 7" >"$tmp/item" 2>"$tmp/err"
text=$(jq -r '.[0].text' "$tmp/item"); label=$(jq -r '.[0].label' "$tmp/item"); corrupt=$(jq -r '.[0].c' "$tmp/item")
# the subject: the name other than the target mentioned twice
subject=$(printf '%s\n' "$text" | tr -c 'A-Za-z\n' ' ' | tr ' ' '\n' | grep '^[A-Z][a-z]*$' | sort | uniq -d | grep -v "^${label# }\$" | head -1)
check "item 7's corrupt prompt: as many words, the subject's second mention replaced" sh -c "test \"\$(printf '%s' \"\$1\" | wc -w)\" = \"\$(printf '%s' \"\$2\" | wc -w)\" && test \"\$1\" != \"\$2\" && test \"\$(printf '%s' \"\$2\" | grep -o \"\$3\" | wc -l)\" = 1" - "$text" "$corrupt" "$subject"
"$LOUPE" -d :memory: -m json $M -e "run $text" -e "patch --corrupt \"$corrupt\" --target \"$label\" --vs \" $subject\"" -e "dla --target \"$label\"" >"$tmp/hand" 2>"$tmp/err"
# The dataset's items share packed forwards, whose values are a lone run's within float
# rounding (dataset.sh checks 1e-4 of max(|v|, 1)): numbers compared so, all else exactly.
CLOSE='def close($a; $b): if ($a | type) == "number" and ($b | type) == "number" then (($a - $b) | fabs) <= 1e-4 * ([1, ($a | fabs)] | max)
  elif ($a | type) == "array" and ($b | type) == "array" then ($a | length) == ($b | length) and all(range($a | length); close($a[.]; $b[.]))
  elif ($a | type) == "object" and ($b | type) == "object" then ($a | keys) == ($b | keys) and all($a | keys[]; close($a[.]; $b[.]))
  else $a == $b end;'
check "item 7's patch is the one typed by hand (target '$label', vs ' $subject')" jq -e -n --slurpfile h "$tmp/hand" --slurpfile i "$tmp/item" "$CLOSE"' close($h[1] | del(.analysis_id); $i[0][0].patch | fromjson)'
check "item 7's dla is the one typed by hand" jq -e -n --slurpfile h "$tmp/hand" --slurpfile i "$tmp/item" "$CLOSE"' close($h[2] | del(.analysis_id); $i[0][0].dla | fromjson)'

# A per-run score's mean and spread over the set, from the view dataset_analyses (README's query)
"$LOUPE" -d "$tmp/one.db" -m json -e "sql SELECT count(*) AS n, avg(v) AS mean, sqrt(avg(v * v) - avg(v) * avg(v)) AS std FROM (SELECT result ->> '\$.total' AS v FROM dataset_analyses WHERE kind = 'dla')" >"$tmp/mean" 2>"$tmp/err"
sqlite3 "$tmp/one.db" "SELECT result FROM analyses WHERE kind = 'dla'" | jq -s '[.[].total] | {n: length, mean: (add / length)}' >"$tmp/jqmean"
check "dataset_analyses: dla's total over the 24 items, mean as jq computes it (1e-6: sql prints 9 digits)" jq -e -n --slurpfile a "$tmp/mean" --slurpfile b "$tmp/jqmean" '$a[0][0].n == 24 and $b[0].n == 24 and ($a[0][0].mean - $b[0].mean | fabs) < 1e-6 and $a[0][0].std > 0'

# The same spec, the same items; shards merge to one process's rows
"$LOUPE" -d "$tmp/two.db" $M -e "dataset $G --k 3 --limit 4" >/dev/null 2>&1
check "the same spec gives the same items (and fingerprint)" test "$(sqlite3 "$tmp/two.db" "SELECT file_fingerprint FROM datasets")|$(sqlite3 "$tmp/two.db" "SELECT group_concat(text, '|') FROM dataset_items")" = "$(sqlite3 "$tmp/one.db" "SELECT file_fingerprint FROM datasets")|$(sqlite3 "$tmp/one.db" "SELECT group_concat(text, '|') FROM (SELECT text FROM dataset_items ORDER BY item LIMIT 4)")"
for s in 1 2 3; do "$LOUPE" -d "$tmp/s$s.db" $M -e "dataset $G $EACH --k 3 --shard $s/3" >/dev/null 2>"$tmp/err"; done
"$LOUPE" -d "$tmp/m.db" -e "merge $tmp/s1.db $tmp/s2.db $tmp/s3.db" >/dev/null 2>"$tmp/err"
check "shards of a generated dataset merge to one process's rows" test "$(agg "$tmp/m.db" "$(merged_id "$tmp/m.db")" | md5sum)" = "$(agg "$tmp/one.db" 1 | md5sum)"
"$LOUPE" -d "$tmp/r.db" -m json $M -e "dataset generate:repeat:5:2 --label-field span" >"$tmp/out" 2>"$tmp/err"
check "generated repeated spans: 5 items, each with its span twice" sh -c "jq -e '.items == 5' '$tmp/out' >/dev/null && test \"\$(sqlite3 '$tmp/r.db' \"SELECT count(*) FROM dataset_items WHERE length(label) > 0 AND instr(substr(text, instr(text, label) + length(label)), label) > 0\")\" = 5"

# Fields of a JSONL file, quoted as the command line reads them (quotes, a newline); {{ is {
printf '%s\n' '{"text": "When Mary and John went to the store, John gave a drink to", "io": " Mary", "c": "When Mary and John went to the store, Tom gave a drink to", "q": "say \"hi\"\n\tthen go"}' \
    '{"text": "When Tom and Kate went to the park, Kate gave a ball to", "io": " Tom", "q": "x"}' >"$tmp/f.jsonl"
"$LOUPE" -d "$tmp/f.db" -m json $M -e "dataset $tmp/f.jsonl --each 'note -- {q}' --each 'note {{x}} {io}' --each 'patch --corrupt {c} --target {io}'" >"$tmp/out" 2>"$tmp/err"
check "a missing field fails its item alone, naming the field" test "$(q "$tmp/f.db" "SELECT item, error FROM dataset_failures" '.[] | "\(.item) \(.error)"')" = '1 patch --corrupt {c} --target {io}: item has no field "c" for {c}'
check "the other item's patch: its corrupt field" test "$(q "$tmp/f.db" "SELECT json_extract(params, '\$.corrupt') AS c FROM analyses WHERE kind = 'patch'" '.[0].c')" = 'When Mary and John went to the store, Tom gave a drink to'
q "$tmp/f.db" "SELECT text FROM findings ORDER BY id" '.[].text | tojson' >"$tmp/notes"
printf '%s\n' '"say \"hi\"\n\tthen go"' '"{x} \" Mary\""' >"$tmp/want"
check "a field's text as given (quotes, newline, tab), one quoted word in a text; {{ }} braces" diff "$tmp/want" "$tmp/notes"

refused "a generator that does not exist" "no generator 'nope'" -d "$tmp/b.db" $M -e "dataset generate:nope:3"
refused "a generated dataset read as another format" "generated as JSONL; leave out --format csv" -d "$tmp/b.db" $M -e "dataset generate:ioi:3 --format csv"
refused "a generated dataset of 0 items" "generate:KIND:N\[:SEED\]" -d "$tmp/b.db" $M -e "dataset generate:ioi:0"

echo "$fails failed"
[ "$fails" -eq 0 ]
