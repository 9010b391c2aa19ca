#!/bin/sh
# The train command through the real binary (GPT-2, BERT, T5): a tiny model's loss falls, the checkpoint has
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
# The kill comes once steps are under way (the progress lines say so; the corpus and the
# tokenizer before them take seconds under a sanitizer on a loaded machine), not after a
# fixed delay.
"$LOUPE" -e "train $tmp/e $TINY --steps 100000" >/dev/null 2>"$tmp/err" &
pid=$!
k=0; while [ $k -lt 600 ] && ! grep -q 'step [0-9]*/100000' "$tmp/err" 2>/dev/null && kill -0 $pid 2>/dev/null; do sleep 0.2; k=$((k + 1)); done
sleep 0.5
kill -TERM $pid
wait $pid
status=$?
check "train: a kill stops with a failed command" test "$status" -ne 0
check "train: a kill says how to resume" grep -q -- '--resume' "$tmp/err"
step=$(jq .step "$tmp/e/train.json")
check "train: a kill saved the step reached ($step)" test "$step" -gt 0 -a "$step" -lt 100000
"$LOUPE" -e "train $tmp/e --resume --steps $((step + 50)) --quiet" >/dev/null 2>"$tmp/err"
check "train: resume continues to a new last step" jq -e ".step == $((step + 50))" "$tmp/e/train.json"

# kill -9 at any moment of a run that saves every step leaves a checkpoint that resumes (each
# save is one unit: staged, then committed) and whose pieces belong together: resumed after
# every kill, the run ends bit-identical to the uninterrupted one. Restarts go on until 12 kills have landed (at most 60 starts, or until the run is done).
# Before the first save a start is killed after a delay (corpus, tokenizer, first steps);
# after it, once the start has saved a new step and then a moment later (0-30 ms: in the
# next step, or in the middle of writing or committing a save), so that the number of
# kills does not depend on how fast the machine is.
kills=0 refused=0 starts=0 steps=
delays="0.1 0.25 0.4 0.2 0.3 0.15 0.45 0.25 0.3 0.15"
after="0 0.005 0.01 0.02 0.03 0.015 0.0 0.025"
step_k() { jq .step "$tmp/k/train.json" 2>/dev/null || echo -1; }
while [ "$kills" -lt 12 ] && [ "$starts" -lt 60 ] && [ "$(step_k)" != 300 ]; do
    before=$(step_k)
    if [ -f "$tmp/k/train.json" ]; then args="--resume --save-every 1 --quiet"; else args="$TINY --steps 300 --save-every 1 --quiet"; fi
    "$LOUPE" -e "train $tmp/k $args" >/dev/null 2>"$tmp/kerr" &
    pid=$!
    if [ "$before" = -1 ]; then sleep "$(echo $delays | cut -d' ' -f$((starts % 10 + 1)))"
    else
        n=0
        while [ "$(step_k)" = "$before" ] && [ $n -lt 500 ] && kill -0 $pid 2>/dev/null; do sleep 0.01; n=$((n + 1)); done
        sleep "$(echo $after | cut -d' ' -f$((starts % 8 + 1)))"
    fi
    kill -KILL $pid 2>/dev/null
    wait $pid 2>/dev/null
    status=$?
    starts=$((starts + 1))
    steps="$steps $(jq .step "$tmp/k/train.json" 2>/dev/null || echo -)"
    if [ "$status" -eq 137 ]; then kills=$((kills + 1)); elif [ "$status" -ne 0 ]; then refused=$((refused + 1)); cat "$tmp/kerr"; fi
done
# (A slow build, e.g. under sanitizers, may have been killed before its first save every time.)
if [ -f "$tmp/k/train.json" ]; then args="--resume --quiet"; else args="$TINY --steps 300 --quiet"; fi
"$LOUPE" -e "train $tmp/k $args" >/dev/null 2>"$tmp/err"
echo "     ($starts runs, $kills killed, $refused refused; the step saved after each:$steps)"
check "train: $kills kills -9 while saving every step, every checkpoint resumed ($refused refused)" test "$refused" -eq 0 -a "$kills" -ge 10
check "train: ... and the run ends bit-identical to one never killed (weights)" cmp "$tmp/a/model.safetensors" "$tmp/k/model.safetensors"
check "train: ... and optimiser state" cmp "$tmp/a/optimizer.safetensors" "$tmp/k/optimizer.safetensors"
check "train: ... and no staging is left behind" test ! -e "$tmp/k/.train-staging" -a ! -e "$tmp/k/.train-commit"

# Pieces of different checkpoints put together by hand are refused on resume, and left alone.
"$LOUPE" -e "train $tmp/m1 $TINY --steps 300 --stop-at 20 --quiet" >/dev/null 2>&1
"$LOUPE" -e "train $tmp/m2 $TINY --steps 300 --stop-at 21 --quiet" >/dev/null 2>&1
cp "$tmp/m2/optimizer.safetensors" "$tmp/m1/optimizer.safetensors"
cp "$tmp/m1/model.safetensors" "$tmp/m1.keep"
fails_with "train: --resume refuses an optimiser state from another step" 'optimizer.safetensors is not the one' \
    "$LOUPE" -e "train $tmp/m1 --resume --quiet"
check "train: ... and writes nothing" cmp "$tmp/m1/model.safetensors" "$tmp/m1.keep"
cp "$tmp/m1/train.json" "$tmp/m2/train.json"
fails_with "train: --resume refuses a train.json from another step" 'is not the one saved with train.json at step 20' \
    "$LOUPE" -e "train $tmp/m2 --resume --quiet"

# A commit interrupted half-way (the new model moved in, the rest still in .train-commit) is
# finished by the next train: the pieces then belong together and resume.
"$LOUPE" -e "train $tmp/c $TINY --steps 300 --stop-at 20 --quiet" >/dev/null 2>&1
"$LOUPE" -e "train $tmp/c21 $TINY --steps 300 --stop-at 21 --quiet" >/dev/null 2>&1
mkdir "$tmp/c/.train-commit"
for f in config.json optimizer.safetensors train.json; do cp "$tmp/c21/$f" "$tmp/c/.train-commit/$f"; done
cp "$tmp/c21/model.safetensors" "$tmp/c/model.safetensors"
check "train: an interrupted commit is finished, and the checkpoint resumes" \
    "$LOUPE" -e "train $tmp/c --resume --stop-at 25 --quiet"
check "train: ... from the committed step" jq -e '.step == 25 and .log == []' "$tmp/c/train.json"

# A model directory that loupe did not train (no train.json) is never written.
mkdir "$tmp/hf"
for f in config.json model.safetensors vocab.json merges.txt; do cp "$tmp/a/$f" "$tmp/hf/$f"; done
fails_with "train: a Hugging Face model directory is refused" 'holds a model that loupe did not train' \
    "$LOUPE" -e "train $tmp/hf $TINY --steps 10"
for f in config.json model.safetensors vocab.json merges.txt; do
    check "train: ... and its $f is unchanged" cmp "$tmp/a/$f" "$tmp/hf/$f"
done
check "train: ... and nothing is added to it" test "$(ls -A "$tmp/hf" | wc -l)" -eq 4
mkdir "$tmp/hf2" && echo '{}' >"$tmp/hf2/tokenizer.json"
fails_with "train: a directory with only a tokenizer.json is refused" 'tokenizer.json' "$LOUPE" -e "train $tmp/hf2 $TINY --steps 10"
mkdir "$tmp/notes" && echo mine >"$tmp/notes/notes.txt"
fails_with "train: a non-empty directory of other files is refused" 'is not empty (notes.txt)' \
    "$LOUPE" -e "train $tmp/notes $TINY --steps 10"
cp "$tmp/a/train.json" "$tmp/hf/train.json"
fails_with "train: --resume on a model with a train.json from elsewhere is refused" 'cannot resume' \
    "$LOUPE" -e "train $tmp/hf --resume --quiet"
check "train: ... and its weights are unchanged" cmp "$tmp/a/model.safetensors" "$tmp/hf/model.safetensors"
mkdir "$tmp/empty"
check "train: an empty directory is fine" "$LOUPE" -e "train $tmp/empty $TINY --steps 10 --quiet"

# Training that diverges (the weights grow 99-fold a step) stops with an error and never
# writes non-finite weights: the last checkpoint saved holds finite ones.
fails_with "train: divergence stops training with an error" 'diverged at step' \
    "$LOUPE" -e "train $tmp/nan $TINY --lr 10 --weight-decay 10 --warmup 0 --steps 200 --save-every 1 --quiet"
check "train: ... after a checkpoint of an earlier step" jq -e '.step > 0 and .step < 200' "$tmp/nan/train.json"
check "train: ... whose weights are all finite" \
    sh -c "od -A n -v -t f4 '$tmp/nan/model.safetensors' | grep -qi 'nan\|inf' && exit 1 || exit 0"
fails_with "train: train.json's weight decay of 1e300 (inf as a float) is refused" 'train.weight_decay' \
    sh -c "jq '.recipe.train.weight_decay = 1e300' '$tmp/g/train.json' >'$tmp/wd.json' && mv '$tmp/wd.json' '$tmp/g/train.json' && '$LOUPE' -e 'train $tmp/g --resume --steps 400 --quiet'"
cp "$tmp/a/train.json" "$tmp/nb.json"
jq '.recipe.corpus.n_bytes = 1125899906842624' "$tmp/nb.json" >"$tmp/a/train.json"
fails_with "train: train.json's corpus of 2^50 bytes is refused" 'corpus.n_bytes' "$LOUPE" -e "train $tmp/a --resume --steps 400"
cp "$tmp/nb.json" "$tmp/a/train.json"
fails_with "train: --corpus-mb has the same cap" 'corpus-mb' "$LOUPE" -e "train $tmp/x --corpus-mb 5000"
fails_with "train: --scrambled is a share, 0..1" '--scrambled 2: use 0..1' "$LOUPE" -e "train $tmp/x --scrambled 2"
check "train: --scrambled goes into the recipe" sh -c "'$LOUPE' -e 'train $tmp/scr $TINY --scrambled 0.5 --steps 2 --quiet' >/dev/null && jq -e '.recipe.corpus.scrambled == 0.5' '$tmp/scr/train.json' >/dev/null"
fails_with "train: --random-ioi is a share, 0..1" '--random-ioi 1.5: use 0..1' "$LOUPE" -e "train $tmp/x --random-ioi 1.5"
check "train: --random-ioi goes into the recipe" sh -c "'$LOUPE' -e 'train $tmp/rioi $TINY --vocab 1024 --random-ioi 0.5 --steps 2 --quiet' >/dev/null && jq -e '.recipe.corpus.random_ioi == 0.5' '$tmp/rioi/train.json' >/dev/null"
fails_with "train: --random-ioi needs names of a few tokens" 'takes more than 4 tokens of this vocabulary: use a larger --vocab' "$LOUPE" -e "train $tmp/rioi2 $TINY --random-ioi 0.5 --steps 2 --quiet"
fails_with "train: --ioi-probe needs its prompts to fit the context" 'its prompts run to [0-9]* tokens, more than the context (--ctx 32): give a longer context' "$LOUPE" -e "train $tmp/probe1 $TINY --ioi-probe --steps 2"
fails_with "train: --ioi-probe is a GPT-2's" 'ioi-probe scores a GPT-2' "$LOUPE" -e "train $tmp/probe2 --arch bert --corpus-mb 0.25 --vocab 300 --ioi-probe --steps 2"
"$LOUPE" -e "train $tmp/probe3 $TINY --ctx 128 --steps 60 --eval-every 30 --ioi-probe" >"$tmp/probe.out" 2>&1
check "train --ioi-probe: a line per evaluation" sh -c "grep -c 'train: IOI probe: IO beats S on [0-9]*/200 in training frames, [0-9]*/200 in held-out frames (ABBA [0-9]*/100, BABA [0-9]*/100)' '$tmp/probe.out' | grep -qx 2"
check "train --ioi-probe: the counts go into the log" jq -e '[.log[] | .ioi.training_n == 200 and .ioi.heldout_n == 200 and .ioi.heldout >= 0] == [true, true]' "$tmp/probe3/train.json"

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

# BERT (--arch bert): a masked LM on the corpus, then classifiers (IOI, polarity) started from it.
BERT="--arch bert --layers 1 --heads 2 --d-model 32 --d-mlp 64 --ctx 64 --vocab 1000 --corpus-mb 0.25 --batch 8 --seq 32 --lr 2e-3 --eval-every 40 --seed 3"
"$LOUPE" -m json -e "train $tmp/bm $BERT --steps 120" >"$tmp/out" 2>"$tmp/err"
check "train --arch bert: a tiny masked LM trains" test $? -eq 0
check "train --arch bert: the result names the directory and the steps" jq -e ".trained == \"$tmp/bm\" and .steps == 120" "$tmp/out"
first=$(jq '.log[0].heldout' "$tmp/bm/train.json")
last=$(jq '.log[-1].heldout' "$tmp/bm/train.json")
check "train --arch bert: held-out loss falls ($first at step 40 -> $last; uniform: ln 1000 = 6.91)" \
    awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a && b < log(1000) - 1) }'
for f in config.json model.safetensors vocab.txt tokenizer_config.json optimizer.safetensors train.json; do
    check "train --arch bert: checkpoint has $f" test -s "$tmp/bm/$f"
done
check "train --arch bert: config.json says BertForMaskedLM" \
    jq -e '.architectures == ["BertForMaskedLM"] and .model_type == "bert" and .hidden_size == 32 and .vocab_size <= 1000' "$tmp/bm/config.json"
check "train --arch bert: vocab.txt starts with the special tokens" \
    sh -c "head -5 '$tmp/bm/vocab.txt' | tr '\n' ' ' | grep -qx '\[PAD\] \[UNK\] \[CLS\] \[SEP\] \[MASK\] '"
"$LOUPE" -m json "$tmp/bm" -e 'run When Mary and John went to the store, John gave a drink to [MASK].' -e 'fill 3' >"$tmp/out2" 2>"$tmp/err"
check "train --arch bert: the checkpoint loads and fills a mask" jq -e -s '.[0].ids[.[1][0].pos] == 4 and (.[1][0].candidates | length) == 3' "$tmp/out2"
"$LOUPE" -e "train $tmp/bm2 $BERT --steps 120 --stop-at 60 --quiet" >/dev/null 2>"$tmp/err"
"$LOUPE" -e "train $tmp/bm2 --resume --quiet" >/dev/null 2>"$tmp/err"
check "train --arch bert: 60 + resumed 60 = 120 in one go, bit for bit (weights)" cmp "$tmp/bm/model.safetensors" "$tmp/bm2/model.safetensors"
check "train --arch bert: ... and optimiser state" cmp "$tmp/bm/optimizer.safetensors" "$tmp/bm2/optimizer.safetensors"
"$LOUPE" -m json -e "train $tmp/bc --arch bert --task ioi --from $tmp/bm --examples 500 --batch 8 --seq 64 --steps 40 --eval-every 20 --seed 3 --quiet" >"$tmp/out" 2>"$tmp/err"
check "train --task ioi --from: a classifier trains from the masked LM" test $? -eq 0
check "train --task ioi --from: the result names the directory" jq -e ".trained == \"$tmp/bc\"" "$tmp/out"
check "train --task ioi: config.json says BertForSequenceClassification with id2label" \
    jq -e '.architectures == ["BertForSequenceClassification"] and .id2label == {"0": "subject", "1": "io"} and .hidden_size == 32' "$tmp/bc/config.json"
check "train --task ioi --from: the vocabulary is --from's" cmp "$tmp/bm/vocab.txt" "$tmp/bc/vocab.txt"
check "train --task ioi --from: the encoder starts from --from's weights (recorded)" jq -e ".recipe.from == \"$tmp/bm\" and .recipe.task == \"ioi\"" "$tmp/bc/train.json"
"$LOUPE" -m json "$tmp/bc" -e 'run When Mary and John went to the store, John gave a drink to Mary.' -e classify >"$tmp/out2" 2>"$tmp/err"
check "train --task ioi: the classifier loads and classifies" jq -e -s '[.[1][].label] == ["subject", "io"]' "$tmp/out2"
"$LOUPE" -m json -e "train $tmp/bp --arch bert --task polarity --from $tmp/bm --examples 300 --batch 8 --seq 32 --steps 30 --eval-every 15 --seed 3 --quiet" >"$tmp/out" 2>"$tmp/err"
check "train --task polarity --from: a polarity classifier trains from the masked LM" test $? -eq 0
check "train --task polarity: config.json has id2label negative, positive" \
    jq -e '.architectures == ["BertForSequenceClassification"] and .id2label == {"0": "negative", "1": "positive"}' "$tmp/bp/config.json"
check "train --task polarity: train.json records the task" jq -e '.recipe.task == "polarity" and .recipe.examples == 300' "$tmp/bp/train.json"
"$LOUPE" -m json "$tmp/bp" -e 'run The park was not nice.' -e classify >"$tmp/out2" 2>"$tmp/err"
check "train --task polarity: the classifier loads and classifies" jq -e -s '[.[1][].label] == ["negative", "positive"]' "$tmp/out2"
fails_with "train: --task lm is not an encoder's" 'use mlm' "$LOUPE" -e "train $tmp/x --arch bert --task lm"
fails_with "train: --task needs --arch bert" 'add --arch bert' "$LOUPE" -e "train $tmp/x --task ioi"
fails_with "train: an unknown --arch" 'use gpt2' "$LOUPE" -e "train $tmp/x --arch t6"
fails_with "train: an unknown --task" 'use mlm' "$LOUPE" -e "train $tmp/x --arch bert --task ner"
# --from a GPT-2 loupe trained: its weights, shape and tokenizer, on another corpus.
"$LOUPE" -m json -e "train $tmp/gf --from $tmp/b --corpus-mb 0.25 --mix 0.2,0.4,0.4 --random-tokens 0 --batch 8 --lr 1e-3 --steps 20 --eval-every 10 --seed 4 --quiet" >"$tmp/out" 2>"$tmp/err"
check "train --from a GPT-2: trains on from its weights" test $? -eq 0
check "train --from a GPT-2: the tokenizer is --from's" sh -c "cmp '$tmp/b/vocab.json' '$tmp/gf/vocab.json' && cmp '$tmp/b/merges.txt' '$tmp/gf/merges.txt'"
check "train --from a GPT-2: the shape is --from's, from recorded" \
    jq -e ".recipe.from == \"$tmp/b\" and .recipe.model.d_model == 32 and .recipe.model.n_layer == 1" "$tmp/gf/train.json"
# The first held-out loss is the trained model's (a fresh one starts near ln 300 = 5.7).
check "train --from a GPT-2: starts where --from ended" \
    sh -c "jq -n --slurpfile a '$tmp/b/train.json' --slurpfile b '$tmp/gf/train.json' -e '(\$b[0].log[0].heldout - \$a[0].log[-1].heldout) | fabs < 0.5'"
fails_with "train: --from a BERT for a GPT-2" 'give a GPT-2 that loupe trained' "$LOUPE" -e "train $tmp/x --from $tmp/bm"
fails_with "train: --from a GPT-2 fixes the shape" 'shape and vocabulary' "$LOUPE" -e "train $tmp/x --from $tmp/b --d-model 64"
fails_with "train: --from a GPT-2" 'is a GPT2LMHeadModel: give a BERT' "$LOUPE" -e "train $tmp/x --arch bert --task ioi --from $tmp/b"
fails_with "train: --from fixes the shape" 'shape and vocabulary' "$LOUPE" -e "train $tmp/x --arch bert --task ioi --from $tmp/bm --layers 3"
fails_with "train: --attn-only is GPT-2's" 'a BERT has MLPs' "$LOUPE" -e "train $tmp/x $BERT --attn-only"
fails_with "train: the arch cannot change on resume" 'cannot change when resuming' "$LOUPE" -e "train $tmp/bm --resume --arch gpt2"

# T5 (--arch t5): digits rewritten as number words; the result scores held-out pairs.
T5="--arch t5 --layers 1 --heads 2 --d-model 32 --d-mlp 64 --rules copy --digits 2,4 --examples 2000 --batch 8 --lr 3e-3 --eval-every 30 --seed 3"
"$LOUPE" -m json -e "train $tmp/t5 $T5 --steps 60" >"$tmp/out" 2>"$tmp/err"
check "train --arch t5: a tiny T5 trains" test $? -eq 0
check "train --arch t5: the result scores held-out pairs (exact, token accuracy, alignment per head)" \
    jq -e ".trained == \"$tmp/t5\" and .steps == 60 and .scored == 1000 and (.token_accuracy | type) == \"number\" and (.alignment_by_head | length) == 1 and (.alignment_by_head[0] | length) == 3" "$tmp/out"
first=$(jq '.log[0].heldout' "$tmp/t5/train.json")
last=$(jq '[.log[] | select(.heldout)][-1].heldout' "$tmp/t5/train.json")
check "train --arch t5: held-out loss falls ($first at step 30 -> $last)" awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }'
check "train --arch t5: progress lines score the held-out pairs" grep -q 'held-out pairs: greedy exact .*cross-attention aligned' "$tmp/err"
for f in config.json model.safetensors tokenizer.json optimizer.safetensors train.json; do
    check "train --arch t5: checkpoint has $f" test -s "$tmp/t5/$f"
done
check "train --arch t5: config.json says T5ForConditionalGeneration" \
    jq -e '.architectures == ["T5ForConditionalGeneration"] and .d_model == 32 and .num_layers == 1 and .num_decoder_layers == 1 and .num_heads == 2 and .d_kv == 16 and .d_ff == 64 and .feed_forward_proj == "relu" and .tie_word_embeddings == false and .vocab_size == 26 and .decoder_start_token_id == 0 and .eos_token_id == 1' "$tmp/t5/config.json"
check "train --arch t5: train.json records the task" jq -e '.recipe.arch == "t5" and .recipe.task == "s2s" and .recipe.s2s.rules == 1 and .recipe.s2s.max_digits == 4' "$tmp/t5/train.json"
"$LOUPE" -m json "$tmp/t5" -e 'run copy 4 0 7 --target four zero seven' -e 'attn 0 1 --cross' >"$tmp/out2" 2>"$tmp/err"
check "train --arch t5: the checkpoint loads and runs a source and target" jq -e -s '(.[1].pattern | length) == 4' "$tmp/out2"
"$LOUPE" -e "train $tmp/t5b $T5 --steps 60 --stop-at 30 --quiet" >/dev/null 2>"$tmp/err"
"$LOUPE" -e "train $tmp/t5b --resume --quiet" >/dev/null 2>"$tmp/err"
check "train --arch t5: 30 + resumed 30 = 60 in one go, bit for bit (weights)" cmp "$tmp/t5/model.safetensors" "$tmp/t5b/model.safetensors"
check "train --arch t5: ... and optimiser state" cmp "$tmp/t5/optimizer.safetensors" "$tmp/t5b/optimizer.safetensors"
fails_with "train --arch t5: an unknown rule" 'give one or more of copy, reverse, swap' "$LOUPE" -e "train $tmp/x --arch t5 --rules copy,rotate"
fails_with "train --arch t5: a trailing comma in --rules" 'give one or more' "$LOUPE" -e "train $tmp/x --arch t5 --rules copy,"
fails_with "train --arch t5: --digits out of range" '1 <= MIN <= MAX <= 16' "$LOUPE" -e "train $tmp/x --arch t5 --digits 0,4"
fails_with "train --arch t5: --digits the wrong way round" '1 <= MIN <= MAX' "$LOUPE" -e "train $tmp/x --arch t5 --digits 5,4"
fails_with "train --arch t5: a corpus option" 'not for --arch t5' "$LOUPE" -e "train $tmp/x --arch t5 --vocab 300"
fails_with "train --arch t5: --rules needs --arch t5" 'add --arch t5' "$LOUPE" -e "train $tmp/x --rules copy"
fails_with "train --arch t5: sequences shorter than the sources" 'a source of 8 digits takes 10' "$LOUPE" -e "train $tmp/x --arch t5 --seq 6"
fails_with "train --arch t5: heads must divide d_model" 'multiple of heads' "$LOUPE" -e "train $tmp/x --arch t5 --heads 3"

[ $fails -eq 0 ]
