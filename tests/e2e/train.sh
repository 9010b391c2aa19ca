#!/bin/sh
# The train command through the real binary: a tiny model's loss falls, the checkpoint has
# every file (and loads), a run stopped half-way and resumed ends bit-identical to an
# uninterrupted one, Ctrl-C (SIGINT) keeps a resumable checkpoint, and bad requests fail
# with one error line and leave existing checkpoints alone.
set -u
LOUPE=${LOUPE:-./loupe}
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export XDG_DATA_HOME="$tmp/data"

ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; [ -s "$tmp/err" ] && head -5 "$tmp/err"; fails=$((fails + 1)); }
check() { # check NAME COMMAND...: the command must succeed
    name=$1; shift
    if "$@" >/dev/null 2>&1; then ok "$name"; else bad "$name"; fi
}
# fails_with NAME PATTERN COMMAND...: non-zero exit and one error line matching PATTERN
fails_with() {
    name=$1; pat=$2; shift 2
    if "$@" >/dev/null 2>"$tmp/err"; then bad "$name (succeeded)"; return; fi
    if [ "$(grep -c '^error: ' "$tmp/err")" -eq 1 ] && grep -q -e "$pat" "$tmp/err"; then ok "$name"; else bad "$name"; fi
}

TINY="--layers 1 --heads 2 --d-model 32 --d-mlp 64 --ctx 32 --vocab 300 --corpus-mb 0.25 --mix 0.4,0.3,0.3 --random-tokens 0 --batch 8 --lr 3e-3 --eval-every 50 --seed 3"

"$LOUPE" -m json -e "train $tmp/a $TINY --steps 300" >"$tmp/out" 2>"$tmp/err"
check "train: a tiny model trains" test $? -eq 0
check "train: the result names the directory and the steps" jq -e ".trained == \"$tmp/a\" and .steps == 300" "$tmp/out"
first=$(jq '.log[0].heldout' "$tmp/a/train.json")
last=$(jq '.log[-1].heldout' "$tmp/a/train.json")
check "train: held-out loss falls by a wide margin ($first at step 50 -> $last; uniform: ln 300 = 5.70)" \
    awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < 0.6 * a && b < log(300) - 1) }'
for f in config.json model.safetensors vocab.json merges.txt optimizer.safetensors train.json; do
    check "train: checkpoint has $f" test -s "$tmp/a/$f"
done
check "train: progress lines go to stderr with loss, tokens/s and ETA" grep -q 'step 300/300 loss .* tok/s .*ETA' "$tmp/err"
check "train: config.json says GPT-2" jq -e '.model_type == "gpt2" and .n_layer == 1 and .n_embd == 32 and .vocab_size == 300' "$tmp/a/config.json"
"$LOUPE" -m json "$tmp/a" -e info -e 'run When Mary and John went to the store' >"$tmp/out2" 2>"$tmp/err"
check "train: the checkpoint loads and runs" jq -e -s '.[0].arch == "GPT2LMHeadModel" and .[0].vocab == 300' "$tmp/out2"

# The same recipe and seed give the same bytes.
"$LOUPE" -e "train $tmp/b $TINY --steps 300 --quiet" >/dev/null 2>&1
check "train: the same recipe twice gives the same weights" cmp "$tmp/a/model.safetensors" "$tmp/b/model.safetensors"

# Resume is exact: 150 steps, stopped (--stop-at keeps the 300-step schedule), resumed to
# 300, equals 300 in one go, weights and optimiser state alike.
"$LOUPE" -e "train $tmp/g $TINY --steps 300 --stop-at 150 --quiet" >/dev/null 2>"$tmp/err"
check "train: --stop-at stops with a checkpoint at 150" jq -e '.step == 150' "$tmp/g/train.json"
"$LOUPE" -e "train $tmp/g --resume --quiet" >/dev/null 2>"$tmp/err"
check "train: 150 + resumed 150 = 300 in one go, bit for bit (weights)" cmp "$tmp/a/model.safetensors" "$tmp/g/model.safetensors"
check "train: ... and optimiser state" cmp "$tmp/a/optimizer.safetensors" "$tmp/g/optimizer.safetensors"
check "train: ... and the log continues" jq -e '[.log[].step] == [50,100,150,200,250,300]' "$tmp/g/train.json"

# Ctrl-C or a kill stops training with a failed command and a checkpoint to resume (a
# background job of a script ignores SIGINT, so this sends SIGTERM, caught the same way).
"$LOUPE" -e "train $tmp/e $TINY --steps 100000 --quiet" >/dev/null 2>"$tmp/err" &
pid=$!
sleep 2
kill -TERM $pid
wait $pid
status=$?
check "train: a kill stops with a failed command" test "$status" -ne 0
check "train: a kill says how to resume" grep -q -- '--resume' "$tmp/err"
step=$(jq .step "$tmp/e/train.json")
check "train: a kill saved the step reached ($step)" test "$step" -gt 0 -a "$step" -lt 100000
"$LOUPE" -e "train $tmp/e --resume --steps $((step + 50)) --quiet" >/dev/null 2>"$tmp/err"
check "train: resume continues to a new last step" jq -e ".step == $((step + 50))" "$tmp/e/train.json"

# Bad requests: one error line, nothing lost.
cp "$tmp/a/model.safetensors" "$tmp/a.keep"
fails_with "train: an existing checkpoint is not overwritten" 'already holds a checkpoint' \
    "$LOUPE" -e "train $tmp/a $TINY --steps 10"
check "train: ... and is unchanged" cmp "$tmp/a/model.safetensors" "$tmp/a.keep"
fails_with "train: --resume needs a checkpoint" 'no checkpoint to resume' "$LOUPE" -e "train $tmp/none --resume"
fails_with "train: the recipe cannot change on resume" 'cannot change when resuming' \
    "$LOUPE" -e "train $tmp/a --resume --layers 3"
fails_with "train: heads must divide d_model" 'multiple of heads' "$LOUPE" -e "train $tmp/x --d-model 30 --heads 4"
fails_with "train: a bad number" '--lr' "$LOUPE" -e "train $tmp/x --lr fast"
fails_with "train: a bad mix" 'IOI,REPEAT,FILLER' "$LOUPE" -e "train $tmp/x --mix 1,2"
echo '{"recipe": {"model": {"n_layer": "two"}}, "step": 0}' >"$tmp/a/train.json"
fails_with "train: a damaged train.json is named" 'n_layer' "$LOUPE" -e "train $tmp/a --resume"

[ $fails -eq 0 ]
