#!/bin/sh
# The store through the real binary and a real file: recording, SQL, the README's example
# queries, two writers at once, kill -9 in the middle of recording, and files it must refuse.
set -u
LOUPE=${LOUPE:-./loupe}
STORIES=../shared/models/stories260K/stories260K.bin
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. tests/e2e/lib/check.sh
q() { "$LOUPE" -d "$1" -m json -e "sql $2" | jq -r "$3"; } # q DB QUERY JQ-FILTER

db=$tmp/a.db
"$LOUPE" -d "$db" "$STORIES" -e 'session new demo' -e 'run Once upon a time' \
    -e "note --layer 1 --head 2 --pos 3 -- it's \"quoted\"; DROP TABLE runs; --" -e 'tag prev-token' \
    -e 'run --ids 1,403,407' -e 'save attn' >/dev/null 2>"$tmp/err"
check "record runs and findings" test $? -eq 0
check "runs recorded" test "$(q "$db" 'SELECT count(*) AS n FROM runs' '.[0].n')" = 2
check "note stored verbatim" test "$(q "$db" "SELECT text FROM findings WHERE kind='note'" '.[0].text')" = "it's \"quoted\"; DROP TABLE runs; --"
check "note points at layer/head/pos and its token" test "$(q "$db" 'SELECT layer, head, pos, token FROM findings_view WHERE kind="note"' '.[0] | "\(.layer) \(.head) \(.pos) \(.token)"')" = "1 2 3  a"
check "head metrics per run" test "$(q "$db" 'SELECT count(*) AS n FROM head_metrics WHERE run_id = 1' '.[0].n')" = 40
check "saved tensors" test "$(q "$db" "SELECT count(*) AS n FROM tensors WHERE name='pattern' AND shape='[8,3,3]'" '.[0].n')" = 5
check "sql without a model" "$LOUPE" -d "$db" -e 'sql SELECT name FROM sessions'
"$LOUPE" -d "$db" -e "sql DELETE FROM runs" 2>"$tmp/e"; rc=$?
check "sql is read-only by default" test $rc -eq 1
check "read-only message" grep -q -- '--write' "$tmp/e"
check "sql --write" "$LOUPE" -d "$db" -e "sql --write UPDATE sessions SET name = 'demo2' WHERE name = 'demo'"

# Every example query in README.md runs.
sed -n '/^```sql$/,/^```$/p' README.md | grep -v '^```' | grep -v '^--' | grep -v '^$' >"$tmp/queries"
n=0
while IFS= read -r query; do
    n=$((n + 1))
    if ! "$LOUPE" -d "$db" -e "sql $query" >/dev/null 2>"$tmp/e"; then echo "FAIL README query: $query"; cat "$tmp/e"; fails=$((fails + 1)); fi
done <"$tmp/queries"
check "README has example queries ($n)" test "$n" -ge 3

# Two loupe processes writing to one file at once: both succeed, nothing is lost.
shared=$tmp/shared.db
i=0; : >"$tmp/script"
while [ $i -lt 25 ]; do echo "run --ids 1,$((300 + i))" >>"$tmp/script"; echo "note writer note $i" >>"$tmp/script"; i=$((i + 1)); done
"$LOUPE" -d "$shared" "$STORIES" -f "$tmp/script" --bail >/dev/null 2>"$tmp/w1" & p1=$!
"$LOUPE" -d "$shared" "$STORIES" -f "$tmp/script" --bail >/dev/null 2>"$tmp/w2" & p2=$!
wait $p1; r1=$?; wait $p2; r2=$?
check "two writers both succeed" test $r1 -eq 0 -a $r2 -eq 0
check "two writers: all 50 runs" test "$(q "$shared" 'SELECT count(*) AS n FROM runs' '.[0].n')" = 50
check "two writers: all 50 notes" test "$(q "$shared" 'SELECT count(*) AS n FROM findings' '.[0].n')" = 50

# kill -9 in the middle of recording: the file is intact and holds what was committed.
killed=$tmp/killed.db
i=0; : >"$tmp/long"
while [ $i -lt 3000 ]; do echo "run --ids 1,$((260 + i % 200)),$((300 + i % 100))" >>"$tmp/long"; i=$((i + 1)); done
"$LOUPE" -d "$killed" "$STORIES" -f "$tmp/long" >/dev/null 2>&1 & pk=$!
k=0
while [ $k -lt 100 ]; do
    sleep 0.05
    n=$("$LOUPE" -d "$killed" -m json -e 'sql SELECT count(*) AS n FROM runs' 2>/dev/null | jq -r '.[0].n' 2>/dev/null)
    [ "${n:-0}" -ge 30 ] && break
    k=$((k + 1))
done
kill -9 $pk 2>/dev/null; wait $pk 2>/dev/null
check "killed writer had recorded runs" test "${n:-0}" -ge 30
check "integrity after kill -9" test "$(q "$killed" 'PRAGMA integrity_check' '.[0].integrity_check')" = ok
after=$(q "$killed" 'SELECT count(*) AS n FROM runs' '.[0].n')
check "runs committed before the kill are there" test "$after" -ge "$n"
check "every run is whole" test "$(q "$killed" 'SELECT count(*) AS n FROM runs r WHERE (SELECT count(*) FROM tokens t WHERE t.run_id = r.id) != 3 OR (SELECT count(*) FROM head_metrics h WHERE h.run_id = r.id) != 40' '.[0].n')" = 0

# Files to refuse: one error line, exit 1, the file untouched.
printf 'not a database, just text\n%.0s' 1 2 3 4 5 6 7 8 >"$tmp/text.db"
sum=$(md5sum <"$tmp/text.db")
"$LOUPE" -d "$tmp/text.db" -e 'runs' >/dev/null 2>"$tmp/e"; rc=$?
check "not SQLite: exit 1" test $rc -eq 1
check "not SQLite: one error line naming the file" sh -c "test \$(wc -l <'$tmp/e') -eq 1 && grep -q '^error: .*text.db' '$tmp/e'"
check "not SQLite: untouched" test "$(md5sum <"$tmp/text.db")" = "$sum"
check "not SQLite: no -wal or -shm" test ! -e "$tmp/text.db-wal" -a ! -e "$tmp/text.db-shm"
cp "$db" "$tmp/new.db"
"$LOUPE" -d "$tmp/new.db" -e 'sql --write PRAGMA user_version = 99' >/dev/null 2>&1
sum=$(md5sum <"$tmp/new.db")
"$LOUPE" -d "$tmp/new.db" -e 'runs' >/dev/null 2>"$tmp/e"; rc=$?
check "newer schema: refused" sh -c "test $rc -eq 1 && grep -q '^error: .*version 99' '$tmp/e'"
check "newer schema: untouched" test "$(md5sum <"$tmp/new.db")" = "$sum"
cp "$db" "$tmp/ro.db"; chmod 0444 "$tmp/ro.db"; sum=$(md5sum <"$tmp/ro.db")
"$LOUPE" -d "$tmp/ro.db" "$STORIES" -e 'run --ids 1' >/dev/null 2>"$tmp/e"; rc=$?
check "read-only file: refused" sh -c "test $rc -eq 1 && grep -q '^error: .*read-only' '$tmp/e'"
check "read-only file: untouched" test "$(md5sum <"$tmp/ro.db")" = "$sum"

# Encoders (schema 3): a pair's two texts, token types and roles, a classifier's labels and a
# masked LM's fills are recorded; rerun runs the pair again with its types (the same label
# probabilities), also from a file written by schema 2 (tests/fixtures/store_v2.db).
ENC=tests/fixtures/encoders
enc=$tmp/enc.db
"$LOUPE" -d "$enc" -m json $ENC/bert_cls -e 'run this movie was not good. --pair i liked the film.' -e classify \
    -e 'attr saliency --target positive' -e 'rerun 1' -e classify -e tokens >"$tmp/out" 2>"$tmp/err"
check "encoder pair recorded and rerun" test $? -eq 0
check "rerun: the pair's token types" jq -e -s '.[0].types == .[3].types and (.[3].types | add) == 7' "$tmp/out"
check "rerun: the same labels as the pair run" jq -e -s '.[1] == .[4]' "$tmp/out"
check "rerun: printed as it was typed" jq -e -s '.[3].text == "this movie was not good. --pair i liked the film."' "$tmp/out"
check "runs: text and pair apart" test "$(q "$enc" 'SELECT text, pair FROM runs WHERE id = 1' '.[0] | "\(.text)|\(.pair)"')" = "this movie was not good.|i liked the film."
check "tokens: types and roles" test "$(q "$enc" "SELECT group_concat(type, '') AS t, group_concat(coalesce(special, '-'), '') AS s FROM (SELECT * FROM tokens WHERE run_id = 2 ORDER BY pos)" '.[0] | "\(.t) \(.s)"')" = "000000001111111 cls------sep------sep"
check "models: head kind" test "$(q "$enc" 'SELECT head FROM models' '.[0].head')" = classifier
check "classifications: every label of the run, one winner" test "$(q "$enc" 'SELECT count(*) AS n FROM labels_view WHERE run_id = 1' '.[0].n') $(q "$enc" 'SELECT label FROM classifications WHERE run_id = 1' '.[0].label')" = "3 negative"
check "classification_attributions: the explained label and its top word" test "$(q "$enc" 'SELECT explained, predicted, top_token FROM classification_attributions' '.[0] | "\(.explained) \(.predicted) \(.top_token != null)"')" = "positive negative true"
"$LOUPE" -d "$enc" $ENC/bert_mlm -e 'run the quick [MASK] jumped . --pair the [MASK] was good' >/dev/null 2>"$tmp/err"
check "fills: the candidates at both masks" test "$(q "$enc" 'SELECT group_concat(DISTINCT pos) AS p FROM fills' '.[0].p')" = "3,9"
check "masked LM: masks by SQL" test "$(q "$enc" "SELECT count(*) AS n FROM tokens WHERE special = 'mask'" '.[0].n')" = 2
"$LOUPE" -d "$enc" $ENC/bert_mlm -e 'rerun 1' >/dev/null 2>"$tmp/e"; rc=$?
check "rerun with another model: refused in one line" sh -c "test $rc -eq 1 && test \$(wc -l <'$tmp/e') -eq 1 && grep -q '^error: rerun: run 1 was made with another model' '$tmp/e'"
"$LOUPE" -d "$enc" $ENC/bert_cls -e 'sql --write UPDATE tokens SET type = 2 WHERE run_id = 1 AND pos = 9' -e 'rerun 1' >/dev/null 2>"$tmp/e"; rc=$?
check "rerun of a type the model lacks: refused in one line" sh -c "test $rc -eq 1 && test \$(wc -l <'$tmp/e') -eq 1 && grep -q '^error: rerun: run 1 has token type 2 at position 9, and this model.s types are 0..1' '$tmp/e'"
cp tests/fixtures/store_v2.db "$tmp/v2.db"
"$LOUPE" -d "$tmp/v2.db" -m json $ENC/bert_cls -e 'rerun 1' -e classify >"$tmp/out" 2>"$tmp/err"
check "schema 2 file: migrated and its pair rerun" test $? -eq 0
check "schema 2 file: the pair's types restored" jq -e -s '(.[0].types | add) == 7 and .[0].types[8] == 1' "$tmp/out"
check "schema 2 file: the label probability recorded then" test "$(jq -s '.[1][0].prob * 10000 | round' "$tmp/out")" = "$(q "$tmp/v2.db" 'SELECT prob FROM predictions WHERE run_id = 1 AND token_id = 0' '.[0].prob * 10000 | round')"
check "schema 2 file: version 10" test "$(q "$tmp/v2.db" 'PRAGMA user_version' '.[0].user_version')" = 10

# Encoder-decoders (schema 4): a T5 run keeps its source and target, both sides' tokens, the
# heads of both stacks and the cross-attention's, and the alignment; rerun runs it again
# (the same decoder tokens and logits), greedy runs too; a file written by schema 3
# (tests/fixtures/store_v3.db) is migrated and its T5 runs, whose source it did not keep,
# are refused in one line.
T5=tests/fixtures/t5/t5_relu_tok
s2s=$tmp/s2s.db
"$LOUPE" -d "$s2s" -m json $T5 -e 'run the cat sat --target the dog sat' -e 'run --max 4 hello world' -e 'top 3' \
    -e 'rerun 1' -e 'rerun 2' -e 'top 3' -e 'runs' >"$tmp/out" 2>"$tmp/err"
check "T5 runs recorded and rerun" test $? -eq 0
check "rerun: the same source and decoder tokens" jq -e -s '.[0].source_ids == .[3].source_ids and .[0].ids == .[3].ids and .[1].ids == .[4].ids and .[4].target == "greedy"' "$tmp/out"
check "rerun of the greedy run: the same predictions" jq -e -s '.[2] == .[5]' "$tmp/out"
check "runs: the source and the target as typed" jq -e -s '.[6][0].text == "the cat sat --target the dog sat" and .[6][1].text == "hello world" and .[6][0].n_source == 7' "$tmp/out"
check "runs_view: source, target and kind" test "$(q "$s2s" 'SELECT source, target, target_kind, n_source FROM runs_view WHERE id = 1' '.[0] | "\(.source)|\(.target)|\(.target_kind)|\(.n_source)"')" = "the cat sat|the dog sat|given|7"
check "tokens: the source's and the decoder's" test "$(q "$s2s" "SELECT sum(side = 'source') AS s, sum(side = 'target') AS t FROM tokens WHERE run_id = 1" '.[0] | "\(.s) \(.t)"')" = "7 7"
check "head metrics: encoder self, decoder self and cross" test "$(q "$s2s" "SELECT group_concat(n, ' ') AS g FROM (SELECT stack || '/' || kind || '=' || count(*) AS n FROM head_metrics WHERE run_id = 1 GROUP BY stack, kind ORDER BY stack, kind)" '.[0].g')" = "dec/cross=12 dec/self=12 enc/self=8"
check "head metrics: cross metrics on cross rows only" test "$(q "$s2s" "SELECT sum(diagonal IS NOT NULL AND kind = 'cross') AS c, sum(diagonal IS NOT NULL AND kind = 'self') AS s FROM head_metrics WHERE run_id = 1" '.[0] | "\(.c) \(.s)"')" = "12 0"
check "alignments: every decoder layer, head and the mean, every position" test "$(q "$s2s" 'SELECT count(*) AS n FROM alignments WHERE run_id = 1' '.[0].n')" = $((3 * 5 * 7))
"$LOUPE" -d "$s2s" -m json $T5 -e 'rerun 1' -e 'attn 2 0 --cross' >"$tmp/out" 2>"$tmp/err"
check "alignments: the cross-attention's argmax" jq -e -s --argjson a "$(q "$s2s" 'SELECT source_pos FROM alignments WHERE run_id = 1 AND layer = 2 AND head = 0 ORDER BY target_pos' '[.[].source_pos]')" '[.[1].pattern[] | . as $r | index($r | max)] == $a' "$tmp/out"
# store/README.md's example queries run in SQLite's own shell, and its printed output is what the shell prints.
sed -n '/^```sql$/,/^```$/p' store/README.md | grep -v '^```' | grep -v '^$' >"$tmp/squeries"
n=0
while IFS= read -r query; do
    n=$((n + 1))
    for d in "$s2s" "$enc"; do
        if ! sqlite3 "$d" "$query" >/dev/null 2>"$tmp/e" || [ -s "$tmp/e" ]; then echo "FAIL store/README query on $d: $query"; cat "$tmp/e"; fails=$((fails + 1)); fi
    done
done <"$tmp/squeries"
check "store/README has example queries ($n)" test "$n" -ge 10
mkdir "$tmp/readme"
"$LOUPE" -d "$tmp/readme/s2s.db" $T5 -e 'run the cat sat --target the dog sat' -e 'run --max 4 hello world' >/dev/null
s2s_block() { sed -n '/^```text$/,/^```$/p' store/README.md | sed -n '/^\$ sqlite3 -header -column s2s.db/,/^```$/p' | grep -v '^```'; }
: >"$tmp/shell"
s2s_block | grep '^\$ sqlite3' | while IFS= read -r line; do
    echo "$line" >>"$tmp/shell"
    (cd "$tmp/readme" && eval "${line#\$ }") >>"$tmp/shell"
done
s2s_block >"$tmp/readme_out"
check "store/README: the T5 example's output ($(wc -l <"$tmp/readme_out") lines)" sh -c "test \$(wc -l <'$tmp/readme_out') -ge 12 && diff '$tmp/readme_out' '$tmp/shell'"
cp tests/fixtures/store_v3.db "$tmp/v3.db"
"$LOUPE" -d "$tmp/v3.db" -m json models/default -e 'rerun 1' >"$tmp/out" 2>"$tmp/err"
check "schema 3 file: migrated and its decoder run rerun" test $? -eq 0
check "schema 3 file: version 10" test "$(q "$tmp/v3.db" 'PRAGMA user_version' '.[0].user_version')" = 10
"$LOUPE" -d "$tmp/v3.db" $T5 -e 'rerun 2' >/dev/null 2>"$tmp/e"; rc=$?
check "schema 3 file: its T5 run is refused in one line" sh -c "test $rc -eq 1 && test \$(wc -l <'$tmp/e') -eq 1 && grep -q '^error: rerun: run 2 was recorded without its source tokens' '$tmp/e'"
"$LOUPE" -d "$tmp/v3.db" $T5 -e 'rerun 1' >/dev/null 2>"$tmp/e"; rc=$?
check "rerun of a decoder's run on a T5: refused in one line" sh -c "test $rc -eq 1 && test \$(wc -l <'$tmp/e') -eq 1 && grep -q '^error: rerun: run 1 was made with another model' '$tmp/e'"

# A schema-4 file (tests/fixtures/store_v4.db, made by the version-4 binary) is migrated to 5,
# keeps its runs and attribution, and takes an attribution series of its run.
cp tests/fixtures/store_v4.db "$tmp/v4.db"
"$LOUPE" -d "$tmp/v4.db" -m json models/default -e 'rerun 1' -e 'attr gxi --from 12' >"$tmp/out" 2>"$tmp/err"
check "schema 4 file: migrated, rerun and a series recorded" test $? -eq 0
check "schema 4 file: version 10" test "$(q "$tmp/v4.db" 'PRAGMA user_version' '.[0].user_version')" = 10
check "schema 4 file: its attribution kept beside the series' two" test "$(q "$tmp/v4.db" 'SELECT group_concat(run_id || ":" || pos) AS a FROM attributions' '.[0].a')" = "1:13,3:11,3:12"
check "schema 4 file: the series' matrix" test "$(q "$tmp/v4.db" 'SELECT count(*) AS n, min(explained_pos) AS a, max(explained_pos) AS b FROM attribution_matrix WHERE series_id = 1' '.[0] | "\(.n) \(.a) \(.b)"')" = "28 12 13"
"$LOUPE" -d "$tmp/v4.db" tests/fixtures/t5/t5_relu_tok -e 'rerun 2' >/dev/null 2>"$tmp/err"
check "schema 4 file: its T5 run rerun" test $? -eq 0

# A schema-5 file (tests/fixtures/store_v5.db, made by the version-5 binary) is migrated to 6,
# keeps its runs, attributions and series, and takes a dataset beside them.
cp tests/fixtures/store_v5.db "$tmp/v5.db"
printf 'When Mary and John went to the store, John gave a drink to\nOnce upon a time\n' >"$tmp/items.txt"
"$LOUPE" -d "$tmp/v5.db" -m json models/default -e 'rerun 1' -e "dataset $tmp/items.txt --each 'attr gxi' --k 3" >"$tmp/out" 2>"$tmp/err"
check "schema 5 file: migrated, rerun and a dataset recorded" test $? -eq 0
check "schema 5 file: version 10" test "$(q "$tmp/v5.db" 'PRAGMA user_version' '.[0].user_version')" = 10
check "schema 5 file: its runs, attributions and series kept" test "$(q "$tmp/v5.db" 'SELECT (SELECT count(*) FROM attributions WHERE run_id <= 2) AS a, (SELECT count(*) FROM attribution_series) AS s, (SELECT count(*) FROM runs WHERE id <= 2) AS r' '.[0] | "\(.a) \(.s) \(.r)"')" = "3 1 2"
check "schema 5 file: the dataset's items and their runs" test "$(q "$tmp/v5.db" 'SELECT count(*) AS n FROM dataset_runs r JOIN runs x ON x.id = r.run_id' '.[0].n')" = 2

# A schema-6 file (tests/fixtures/store_v6.db, made by the version-6 binary: a finished dataset
# of 6 items) is migrated to 7: its examples and samples keep every row under their metric
# (activation for neurons, key for heads), its items get no error, and the examples command
# reads them as before; a new dataset beside it has its heads by metric and their histograms.
cp tests/fixtures/store_v6.db "$tmp/v6.db"
before=$(sqlite3 tests/fixtures/store_v6.db "SELECT unit_kind, layer, unit, rank, item, pos, key_pos, token_id, value FROM unit_examples ORDER BY 1, 2, 3, 4; SELECT unit_kind, layer, unit, bin, hash, item, value FROM unit_quantile_samples ORDER BY 1, 2, 3, 4, 5" | md5sum)
"$LOUPE" -d "$tmp/v6.db" -m json models/default -e 'examples head 1.2 --k 2' >"$tmp/out" 2>"$tmp/err"
check "schema 6 file: migrated, its examples read" jq -e 'length == 2 and all(.metric == "key")' "$tmp/out"
check "schema 6 file: version 10" test "$(q "$tmp/v6.db" 'PRAGMA user_version' '.[0].user_version')" = 10
check "schema 6 file: every example and sample kept" test "$(sqlite3 "$tmp/v6.db" "SELECT unit_kind, layer, unit, rank, item, pos, key_pos, token_id, value FROM unit_examples ORDER BY 1, 2, 3, 4; SELECT unit_kind, layer, unit, bin, hash, item, value FROM unit_quantile_samples ORDER BY 1, 2, 3, 4, 5" | md5sum)" = "$before"
check "schema 6 file: under their metric, items without error" test "$(q "$tmp/v6.db" "SELECT (SELECT group_concat(DISTINCT unit_kind || ':' || metric) FROM unit_examples) AS m, (SELECT count(*) FROM dataset_runs WHERE error IS NULL) AS i, (SELECT n_failed FROM datasets) AS f" '.[0] | "\(.m) \(.i) \(.f)"')" = "head:key,neuron:activation 6 0"
"$LOUPE" -d "$tmp/v6.db" -m json models/default -e "dataset $tmp/items.txt --k 3" -e 'examples head 1.2 --by induction --k 2' >"$tmp/out" 2>"$tmp/err"
check "schema 6 file: a new dataset beside it, by metric" jq -e -s '.[0].finished and (.[1] | all(.metric == "induction"))' "$tmp/out"
check "schema 6 file: the new dataset's head histograms" test "$(sqlite3 "$tmp/v6.db" "SELECT count(DISTINCT unit) FROM unit_histograms WHERE unit_kind = 'head' AND dataset_id = 2")" = 4

# A schema-7 file (tests/fixtures/store_v7.db, made by the version-7 binary: two runs made with
# the bundled dictionary loaded, and a patch) is migrated to 8: its runs, tokens and analysis
# are kept, without feature rows (version 7 kept none); a run made now with a dictionary
# loaded keeps, per position, its --store-k strongest features; --store-k 0 keeps none.
cp tests/fixtures/store_v7.db "$tmp/v7.db"
RUN7="id, session_id, model_id, text, n_tokens, created_at, pair, target, target_kind, n_source" # version 7's columns
before=$(sqlite3 tests/fixtures/store_v7.db "SELECT $RUN7 FROM runs; SELECT * FROM tokens; SELECT * FROM analyses" | md5sum)
"$LOUPE" -d "$tmp/v7.db" -m json models/default -e 'sae load models/default-sae --name ds --store-k 3' -e 'rerun 1' \
    -e 'sae load models/default-sae --name off --store-k 0' -e 'run When Mary and' >"$tmp/out" 2>"$tmp/err"
check "schema 7 file: migrated, a run rerun beside its runs" test $? -eq 0
check "schema 7 file: version 10" test "$(q "$tmp/v7.db" 'PRAGMA user_version' '.[0].user_version')" = 10
check "schema 7 file: runs, tokens and the analysis kept" test "$(sqlite3 "$tmp/v7.db" "SELECT $RUN7 FROM runs WHERE id <= 2; SELECT * FROM tokens WHERE run_id <= 2; SELECT * FROM analyses" | md5sum)" = "$before"
check "schema 7 file: old runs without features, new ones with 3 a position" test "$(q "$tmp/v7.db" "SELECT (SELECT count(*) FROM feature_activations WHERE run_id <= 2) AS o, (SELECT count(*) FROM feature_acts WHERE run_id = 3) AS n, (SELECT count(*) FROM feature_acts WHERE run_id = 4) AS m, (SELECT group_concat(DISTINCT sae) FROM feature_acts) AS s" '.[0] | "\(.o) \(.n) \(.m) \(.s)"')" = "0 42 9 ds"
check "feature_acts: where feature 390 fires most" test "$(q "$tmp/v7.db" "SELECT pos, token FROM feature_acts WHERE sae = 'ds' AND feature = 390 ORDER BY act DESC LIMIT 1" '.[0] | "\(.pos) \(.token)"')" = "13  to"
"$LOUPE" -d "$tmp/v7.db" models/default -e 'sae load models/default-sae --store-k 5000' >/dev/null 2>"$tmp/e"; rc=$?
check "sae load --store-k out of range: refused in one line" sh -c "test $rc -eq 1 && test \$(wc -l <'$tmp/e') -eq 1 && grep -q '^error: --store-k' '$tmp/e'"

# A schema-8 file (tests/fixtures/store_v8.db, made by the version-8 binary: a finished dataset
# of 6 items, its aggregates a row per example, sample and histogram bin) is migrated to 9:
# every unit's aggregates in one unit_stats row, and the views of the old tables' names give
# back every row and column they held (values to the 15 digits sqlite3 prints; a float's
# 9 digits are kept), and examples reads them.
dump8() {
    sqlite3 "$1" "SELECT unit_kind, layer, unit, metric, rank, item, pos, key_pos, token_id, hex(token), key_token_id, hex(key_token), value FROM unit_examples ORDER BY 1, 2, 3, 4, 5;
SELECT unit_kind, layer, unit, bin, lower, count FROM unit_histograms ORDER BY 1, 2, 3, 4;
SELECT unit_kind, layer, unit, metric, bin, hash, item, pos, key_pos, token_id, hex(token), key_token_id, value FROM unit_quantile_samples ORDER BY 1, 2, 3, 4, 5, 6;
SELECT * FROM neuron_density ORDER BY 1, 2, 3; SELECT * FROM head_density ORDER BY 1, 2, 3; SELECT * FROM unit_examples_view ORDER BY 1, 3, 4, 5, 6, 7"
}
cp tests/fixtures/store_v8.db "$tmp/v8.db"
before=$(dump8 tests/fixtures/store_v8.db | md5sum)
rows8=$(sqlite3 tests/fixtures/store_v8.db "SELECT count(*) FROM unit_examples")
"$LOUPE" -d "$tmp/v8.db" -m json models/default -e 'examples head 1.2 --by induction --k 2' >"$tmp/out" 2>"$tmp/err"
check "schema 8 file: migrated, its examples by a metric read" jq -e 'length == 2 and all(.metric == "induction") and .[0].value >= .[1].value' "$tmp/out"
check "schema 8 file: version 10" test "$(q "$tmp/v8.db" 'PRAGMA user_version' '.[0].user_version')" = 10
check "schema 8 file: the views give every row of the old tables ($rows8 examples)" test "$(dump8 "$tmp/v8.db" | md5sum)" = "$before"
check "schema 8 file: one unit_stats row per unit and metric (512 neurons, 8 heads by 7)" test "$(sqlite3 "$tmp/v8.db" "SELECT count(*), sum(histogram IS NOT NULL) FROM unit_stats")" = "568|520"

# A dataset's runs keep their features too, and merge brings them with the runs, the
# dictionary's row shared by the shards.
for s in 1 2; do
    "$LOUPE" -d "$tmp/f$s.db" models/default -e 'sae load models/default-sae --name ds --store-k 2' -e "dataset $tmp/items.txt --k 2 --shard $s/2 --track neurons,heads" >/dev/null 2>"$tmp/err"
done
"$LOUPE" -d "$tmp/fm.db" -e "merge $tmp/f1.db $tmp/f2.db" >/dev/null 2>"$tmp/err"
want=$(( $(sqlite3 "$tmp/f1.db" 'SELECT count(*) FROM feature_activations') + $(sqlite3 "$tmp/f2.db" 'SELECT count(*) FROM feature_activations') ))
check "merge: every run's features, under one dictionary" test "$(q "$tmp/fm.db" "SELECT (SELECT count(*) FROM feature_acts) AS n, (SELECT count(*) FROM saes) AS s, (SELECT count(*) FROM run_saes) AS r, (SELECT count(*) FROM runs) AS u, (SELECT count(*) FROM feature_acts f JOIN tokens t ON t.run_id = f.run_id AND t.pos = f.pos AND t.token_id = f.token_id) AS j" '.[0] | "\(.n) \(.s) \(.r) \(.u) \(.j)"')" = "$want 1 2 2 $want"
check "merge: as many as the runs have positions, 2 each" test "$want" = "$(( 2 * $(sqlite3 "$tmp/fm.db" 'SELECT sum(n_tokens) FROM runs') ))"
# examples feature: a feature's strongest activations over the merged dataset's runs, each the
# activation feature prints for that item at that position (a dataset that did not track
# features as units: every position its runs kept, from feature_activations).
"$LOUPE" -d "$tmp/fm.db" -m json models/default -e 'sae load models/default-sae --name ds' -e 'examples feature 390 --k 3' >"$tmp/out" 2>"$tmp/err"
check "examples feature: by activation, the token in its context" jq -e -s '.[1] | length >= 2 and length <= 3 and .[0].rank == 1 and .[1].rank == 2 and .[0].value >= .[1].value and (.[0].context[.[0].pos - .[0].context_start] == .[0].token)' "$tmp/out"
text=$(jq -r -s '.[1][0].text' "$tmp/out"); pos=$(jq -s '.[1][0].pos' "$tmp/out"); val=$(jq -s '.[1][0].value' "$tmp/out")
"$LOUPE" -d :memory: -m json models/default -e "run $text" -e 'sae load models/default-sae' -e 'feature 390 --k 1' >"$tmp/out" 2>"$tmp/err"
check "examples feature: the value is feature's activation there" jq -e -s --argjson p "$pos" --argjson v "$val" '.[2].acts[$p].act - $v | fabs < 1e-5' "$tmp/out"
"$LOUPE" -d "$tmp/v6.db" models/default -e 'sae load models/default-sae' -e 'examples feature 390' >/dev/null 2>"$tmp/e"; rc=$?
check "examples feature on a dataset that kept none: refused in one line" sh -c "test $rc -eq 1 && test \$(wc -l <'$tmp/e') -eq 1 && grep -q '^error: examples feature: dataset 2 kept no features' '$tmp/e'"
"$LOUPE" -d "$tmp/fm.db" models/default -e 'sae load models/default-sae' -e 'examples feature 512' >/dev/null 2>"$tmp/e"; rc=$?
check "examples feature past the dictionary: refused in one line" sh -c "test $rc -eq 1 && test \$(wc -l <'$tmp/e') -eq 1 && grep -q '^error: feature' '$tmp/e'"
"$LOUPE" -d "$tmp/fm.db" models/default -e "dataset $tmp/items.txt --track features" >/dev/null 2>"$tmp/e"; rc=$?
check "dataset --track features without a dictionary: refused, saying to load one" sh -c "test $rc -eq 1 && test \$(wc -l <'$tmp/e') -eq 1 && grep -q \"no dictionary is loaded; 'sae load PATH' first\" '$tmp/e'"

# A run made through a spliced dictionary or steering is kept as one (runs.edits), and rerun
# makes it again only through the same edits.
"$LOUPE" -d "$tmp/ed.db" models/default -e 'sae load models/default-sae --name ds' -e 'run Once upon a time' \
    -e 'sae splice ds --no-error' -e 'run Once upon a time' -e 'sae unsplice ds' -e 'run --sae ds --steer 390:4 Once upon a time' >/dev/null 2>"$tmp/err"
check "runs.edits: none for the model alone, the splice, the steering" test "$(sqlite3 "$tmp/ed.db" "SELECT coalesce(edits ->> '\$.spliced[0].splice', edits ->> '\$.steer', 'none') FROM runs ORDER BY id" | sort -u | tr '\n' ' ')" = "390:4 no_error none "
spliced=$(sqlite3 "$tmp/ed.db" "SELECT min(id) FROM runs WHERE edits ->> '\$.spliced[0].splice' = 'no_error'")
"$LOUPE" -d "$tmp/ed.db" models/default -e "rerun $spliced" >/dev/null 2>"$tmp/e"; rc=$?
check "rerun of a spliced run without the splice: refused in one line, naming it" sh -c "test $rc -eq 1 && test \$(wc -l <'$tmp/e') -eq 1 && grep -q 'rerun: run $spliced was made through .*no_error.* the model alone' '$tmp/e'"
"$LOUPE" -d "$tmp/ed.db" -m json models/default -e 'sae load models/default-sae --name ds' -e 'sae splice ds --no-error' -e "rerun $spliced" -e 'sql SELECT text, edits FROM runs ORDER BY id DESC LIMIT 1' >"$tmp/out" 2>"$tmp/err"
check "rerun with the same splice: the same tokens, recorded with its edits" jq -e -s '.[-1][0].edits | fromjson | .spliced[0].splice == "no_error"' "$tmp/out"

echo "$fails failed"
[ "$fails" -eq 0 ]
