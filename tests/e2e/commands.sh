#!/bin/sh
# What a new user tripped over: the free-text rule, help at 80 columns, lens options, scan's
# range, why generation stopped, sql for sqlite3-shell users, number formats, TransformerLens
# hook names. Each check names the behaviour it protects.
set -u
LOUPE=${LOUPE:-./loupe}
MODEL=models/default
STORIES=../shared/models/stories260K/stories260K.bin
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export XDG_DATA_HOME="$tmp/data"

. tests/e2e/lib/check.sh
json() { "$LOUPE" -d :memory: -m json "$@"; }
# refused NAME PATTERN ARGS...: loupe exits 1 with one error line matching PATTERN
refused() {
    name=$1 pat=$2; shift 2
    "$LOUPE" -d :memory: "$@" >"$tmp/ro" 2>"$tmp/re"; rc=$?
    if [ $rc -eq 1 ] && [ "$(wc -l <"$tmp/re")" -eq 1 ] && grep -q -- "$pat" "$tmp/re"; then
        echo "ok   $name"
    else
        echo "FAIL $name (exit $rc)"; cat "$tmp/ro" "$tmp/re"; fails=$((fails + 1))
    fi
}

# ---- free text: options first, -- ends them, the rest is the text ----
n0=$(json $MODEL -e 'run When Mary' | jq .n_tokens)
n1=$(json $MODEL -e 'run --bos When Mary' | jq .n_tokens)
check "run --bos TEXT adds BOS" test "$n1" -eq $((n0 + 1))
refused "run TEXT --bos: the option must come first" "error: run: --bos must come before the text" $MODEL -e 'run When Mary --bos'
refused "run --bogus TEXT: unknown option refused" "error: run: unknown option --bogus" $MODEL -e 'run --bogus When Mary'
t=$(json $MODEL -e 'run -- When Mary --bos' | jq -r .text)
check "run -- TEXT keeps --bos in the text" test "$t" = "When Mary --bos"
t=$(json $MODEL -e 'run "When Mary"' | jq -r .text)
check "run \"TEXT\": a wholly quoted text loses its quotes" test "$t" = "When Mary"
t=$(json $MODEL -e 'run a "b"' | jq -r .text)
check "run a \"b\": other quotes are text" test "$t" = 'a "b"'
t=$(json $MODEL -e "run ' Mary'" | jq -r .text)
check "run ' Mary': quotes keep a leading space" test "$t" = " Mary"
refused "note TEXT --layer: the option must come first" "error: note: --layer must come before the text" \
    $MODEL -e 'run When Mary' -e 'note head 1.1 moves names --layer 1'
note=$(json $MODEL -e 'run When Mary' -e 'note --layer 1 --head 1 head 1.1 moves names' | tail -n 1 | jq -r '.[0] | "\(.layer) \(.head) \(.text)"')
check "note --layer L --head H TEXT" test "$note" = "1 1 head 1.1 moves names"
refused "sql --bogus refused" "error: sql: unknown option --bogus" -e 'sql --bogus SELECT 1'

# ---- lens: options apply to the whole table, ranks count from 1, layer has one type ----
IOI='run When Mary and John went to the store, John gave a drink to'
"$LOUPE" -d :memory: $MODEL -e "$IOI" -e 'lens --k 2' | sed -n '/^layer/,$p' >"$tmp/lens"
check "lens --k 2 without --pos: two tokens per cell" sh -c "sed -n 3p '$tmp/lens' | grep -q 'When 0\.[0-9][0-9]  [^ ]* 0\.[0-9][0-9]'"
"$LOUPE" -d :memory: $MODEL -e "$IOI" -e 'lens --target " Mary"' | sed -n '/^layer/,$p' >"$tmp/lens"
check "lens --target without --pos: probability and rank per cell" grep -q ' #1 ' "$tmp/lens"
"$LOUPE" -d :memory: $MODEL -e "$IOI" -e 'lens --pos -1 --target " Mary"' | sed -n '/^layer/,$p' >"$tmp/lens"
check "lens --pos --target: a rank column" sh -c "head -n 1 '$tmp/lens' | grep -q 'rank\$' && tail -n 1 '$tmp/lens' | grep -q ' 1\$'"
refused "lens --k with --target across positions refused" "error: lens: .*add --pos P" $MODEL -e "$IOI" -e 'lens --k 2 --target " Mary"'
json $MODEL -e "$IOI" -e 'lens --target " Mary"' -e 'top 1' | tail -n 2 >"$tmp/lens.json"
check "lens: the top token has rank 1, as in top" sh -c "jq -s -e '(.[0] | map(select(.layer == 1 and .pos == 13)) | .[0].target_rank) == .[1][0].rank' '$tmp/lens.json'"
check "lens json: layer is an integer in every row (-1: embed)" sh -c "jq -s -e '.[0] | all(.layer | type == \"number\") and (map(select(.layer == -1)) | all(.site == \"embed\"))' '$tmp/lens.json'"

# ---- scan: the range --len gives is the range that works ----
ctx=$(json $MODEL -e info | jq .context)
max=$("$LOUPE" -d :memory: $MODEL -e "scan --len $ctx" 2>&1 | sed -n 's/.*(2\.\.\([0-9]*\)).*/\1/p')
check "scan --len past the context: refused with a range" test -n "$max"
check "scan --len at the top of the range works" sh -c "'$LOUPE' -d :memory: -m json $MODEL -e 'scan --len $max --seqs 1' | jq -e '.seq_len == $max'"
refused "scan --len one past the range is refused" "error: scan: --len $((max + 1)) is out of range (2..$max)" $MODEL -e "scan --len $((max + 1))"

# ---- generate says why it stopped and keeps end-of-text visible ----
json $MODEL -e "$IOI" -e 'generate 20' -e 'generate 20 --no-stop' -e "generate $ctx --no-stop" | tail -n 3 >"$tmp/gen"
check "generate: stop eos at end-of-text, which stays in the text" sh -c "jq -s -e '.[0] | .stop == \"eos\" and (.text | endswith(\"<|endoftext|>\"))' '$tmp/gen'"
check "generate --no-stop: stop length, end-of-text kept between texts" sh -c "jq -s -e '.[1] | .stop == \"length\" and (.ids | length) == 20 and (.text | test(\"[.]<[|]endoftext[|]>[A-Z]\"))' '$tmp/gen'"
check "generate past the context: stop context" sh -c "jq -s -e '.[2] | .stop == \"context\" and .prompt_tokens + (.ids | length) == $ctx' '$tmp/gen'"
check "generate: the table says why" sh -c "'$LOUPE' -d :memory: $MODEL -e '$IOI' -e 'generate 20' | grep -q 'end-of-text'"

# ---- sql for sqlite3-shell users ----
"$LOUPE" -d :memory: $MODEL -e 'sql .tables' >"$tmp/sql"
check "sql .tables lists tables and views" sh -c "grep -q '^runs  *table' '$tmp/sql' && grep -q '^runs_view  *view' '$tmp/sql'"
check "sql .schema runs: its CREATE TABLE" sh -c "'$LOUPE' -d :memory: $MODEL -e 'sql .schema runs' | grep -q '^CREATE TABLE runs ('"
refused "sql .dump: a hint, not an SQL syntax error" "error: sql: '.dump' is a sqlite3 shell command" -e 'sql .dump'
n=$(json -e 'sql SELECT 1 AS a; SELECT 2 AS b' | jq -s -c .)
check "sql: several statements print in order" test "$n" = '[[{"a":1}],[{"b":2}]]'
"$LOUPE" -d :memory: $MODEL -e 'run When Mary and' -e "sql SELECT token AS predicted, run_text AS prev_token FROM predictions_view WHERE pos = 2 AND rank = 1" >"$tmp/sql"
check "sql: a token column keeps · under another name" grep -q '^·[A-Z]' "$tmp/sql"
check "sql: a text column named like a token shows spaces" grep -q 'When Mary and$' "$tmp/sql"
v=$(json -e 'sql PRAGMA user_version' | jq '.[0].user_version')
check "README gives the schema version the file has" grep -q "schema version $v," README.md
check "store/README gives the schema version the file has" grep -q "^## Schema (version $v)" store/README.md

# ---- TransformerLens hook names are aliases of loupe's sites ----
"$LOUPE" -d :memory: $MODEL -e "$IOI" -e "export blocks.1.hook_resid_post $tmp/a.npy" -e "export resid_post 1 $tmp/b.npy" \
    -e "export blocks.0.attn.hook_z 2 $tmp/c.npy" -e "export z 0 2 $tmp/d.npy" -e "export ln_final.hook_normalized $tmp/e.npy" \
    -e "export ln_final $tmp/f.npy" >/dev/null 2>"$tmp/err"
check "export blocks.L.hook_resid_post = export resid_post L" cmp "$tmp/a.npy" "$tmp/b.npy"
check "export blocks.L.attn.hook_z H = export z L H" cmp "$tmp/c.npy" "$tmp/d.npy"
check "export ln_final.hook_normalized = export ln_final" cmp "$tmp/e.npy" "$tmp/f.npy"
a=$(json $MODEL -e "$IOI" -e 'acts --site blocks.1.hook_mlp_out --pos -1' | tail -n 1 | jq -c '.positions')
b=$(json $MODEL -e "$IOI" -e 'acts 1 --site mlp_out --pos -1' | tail -n 1 | jq -c '.positions')
check "acts --site blocks.L.hook_mlp_out = acts L --site mlp_out" test -n "$a" -a "$a" = "$b"
check "save blocks.L.mlp.hook_post" sh -c "'$LOUPE' -d :memory: -m json $MODEL -e '$IOI' -e 'save blocks.0.mlp.hook_post' | tail -n 1 | jq -e '.[0].name == \"mlp_post\" and .[0].layer == 0'"
P='patch --corrupt "When John and Mary went to the store, Mary gave a drink to"'
a=$(json $MODEL -e "$IOI" -e "$P --site attn.hook_z" | tail -n 1 | jq -c .values)
b=$(json $MODEL -e "$IOI" -e "$P --site z" | tail -n 1 | jq -c .values)
check "patch --site attn.hook_z = patch --site z" test -n "$a" -a "$a" = "$b"
refused "patch --site blocks.0.hook_resid_pre: patch sweeps every layer" "error: patch: --site blocks.0.hook_resid_pre names one layer.*give hook_resid_pre" \
    $MODEL -e "$IOI" -e "$P --site blocks.0.hook_resid_pre"
refused "hook_embed: not captured, and what to use" "error: hook_embed is not captured: .*blocks.0.hook_resid_pre" $MODEL -e "$IOI" -e "export hook_embed $tmp/x.npy"
refused "hook_q on a rotary model: use hook_rot_q" "error: blocks.0.attn.hook_q is not captured: .*hook_rot_q" $STORIES -e 'run Hi' -e "export blocks.0.attn.hook_q $tmp/x.npy"
refused "blocks.L past the last layer" "error: blocks.9.hook_resid_post: layer 9 is out of range" $MODEL -e "$IOI" -e "export blocks.9.hook_resid_post $tmp/x.npy"

# ---- numbers: a column's values share their decimals, right-aligned; csv and json keep full precision ----
"$LOUPE" -d :memory: $STORIES -e 'run Once upon a time' -e 'top 3' | tail -n 3 >"$tmp/top"
check "top: one number of decimals per column" sh -c "awk '{ print \$4 }' '$tmp/top' | sed 's/.*[.]//' | awk '{ print length }' | sort -u | wc -l | grep -qx 1"
check "top: a small probability is not in %g's exponent form" sh -c "! grep -q 'e-' '$tmp/top'"
"$LOUPE" -d :memory: $STORIES -e 'run Tim had a ball. Tim gave the ball to' -e 'neurons 4 5 --sort dla --vs " her"' | tail -n 5 >"$tmp/neu"
check "neurons: negatives right-aligned (every row ends at one column)" sh -c "awk '{ print length }' '$tmp/neu' | sort -u | wc -l | grep -qx 1"
check "neurons: act and dla columns keep one number of decimals" sh -c "awk '{ print \$3; print \$4 }' '$tmp/neu' | sed 's/.*[.]//' | awk '{ print length }' | sort -u | wc -l | grep -qx 2"
"$LOUPE" -d :memory: $MODEL -e "$IOI" -e 'patch --corrupt "When John and Mary went to the store, Mary gave a drink to" --site attn_out' -e dla >"$tmp/zero"
check "no -0.00 in a table" sh -c "! grep -q -- '-0[.]0*\\( \\|\$\\)' '$tmp/zero'"
p=$("$LOUPE" -d :memory: -m csv $STORIES -e 'run Once upon a time' -e 'top 3' | tail -n 1 | cut -d, -f4 | tr -d '\r')
check "csv keeps full precision ($p)" sh -c "echo '$p' | grep -q '^0[.]000[0-9]\\{5,\\}'"

# ---- dictionaries in the forward: splice, steer, clamp, attribution, from the command line ----
SAE=tests/fixtures/sae/saelens_standard
same=$(json $MODEL -e 'run When Mary and John' -e "sae load $SAE" -e 'logits' -e 'sae splice' -e 'logits' |
    jq -s '[.[2].logits, .[4].logits] | transpose | map(.[0] - .[1] | fabs) | max < 1e-5')
check "sae splice with the error term leaves the logits" test "$same" = true
moved=$(json $MODEL -e "sae load $SAE" -e 'run --steer 3:4 When Mary and John' -e 'run When Mary and John' |
    jq -s '.[1].next.id != .[2].next.id or .[1].next.prob != .[2].next.prob')
check "run --steer changes the prediction" test "$moved" = true
said=$(json $MODEL -e "sae load $SAE --name std" -e 'run --steer 3:4 When' -e 'sae splice --no-error' -e 'run When' |
    jq -s -c '[.[1].edits, .[3].edits.spliced]')
check "a steered or spliced run says so (edits)" test "$said" = \
    '[{"spliced":[],"sae":"std","steer":"3:4","clamp":null},[{"sae":"std","splice":"no_error"}]]'
gap=$(json $MODEL -e 'run When Mary and John' -e "sae load $SAE" -e 'sae attr --vs " Mary"' |
    jq -s '.[2].closure.gap | fabs < 1e-4')
check "sae attr: features + error + constant = grad . x" test "$gap" = true
refused "run --steer F without a value refused" "error: --steer: '3' is not a list of FEATURE:VALUE pairs" $MODEL \
    -e "sae load $SAE" -e 'run --steer 3 When Mary'
refused "run --steer without a dictionary refused" "error: --steer: no dictionary loaded" $MODEL -e 'run --steer 3:1 When'
refused "generate --clamp on a feature out of range refused" "error: feature 32 is out of range" $MODEL \
    -e "sae load $SAE" -e 'run When' -e 'generate 3 --clamp 32:1'

# ---- help fits 80 columns: one line per command; help CMD gives the whole usage ----
widest() { awk '{ if (length($0) > m) m = length($0) } END { print m + 0 }' "$1"; }
"$LOUPE" -e help >"$tmp/help"
ncmd=$("$LOUPE" -m json -e help | jq length)
check "help: one line per command" test "$(wc -l <"$tmp/help")" -eq $((ncmd + 2))
check "help fits 80 columns" test "$(widest "$tmp/help")" -le 80
"$LOUPE" -e 'help train' >"$tmp/help"
check "help train fits 80 columns" test "$(widest "$tmp/help")" -le 80
check "help train gives the whole usage" grep -q -- '--threads N\] \[--quiet\]' "$tmp/help"
check "help train in json: the usage whole" sh -c "'$LOUPE' -m json -e 'help train' | jq -e '.usage | endswith(\"[--quiet]\")'"

echo "$fails failed"
[ "$fails" -eq 0 ]
