#!/bin/sh
# GPT-NeoX (Pythia's architecture) through the real binary: a random GPTNeoXForCausalLM with
# GPT-2's vocabulary files beside it (no GPT-NeoX tokenizer.json is at hand: see README), in
# the parallel and the sequential form. info names the block and the rotary width; dla adds
# up to the logit; the lens' last layer is the model's prediction; patching's identities hold.
set -u
LOUPE=${LOUPE:-./loupe}
BUILD=${BUILD:-build}
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export XDG_DATA_HOME="$tmp/data"

. tests/e2e/lib/check.sh

TOK=../shared/tokenizers/gpt2
CLEAN="When Mary and John went to the store, John gave a drink to"
CORRUPT="When Mary and John went to the store, Mary gave a drink to"   # differs at position 9
for form in parallel sequential; do
    flag=$([ $form = sequential ] && echo --sequential)
    # shellcheck disable=SC2086
    "$BUILD/tools/mkmodel" "$tmp/$form" --arch neox $flag --vocab 50257 --d-model 64 --heads 4 --layers 3 --ctx 128 \
        --rotary-pct 0.25 --std 0.3 --seed 9 --gpt2-tokenizer "$TOK" 2>"$tmp/err"
    check "$form: mkmodel --arch neox" test $? -eq 0
    "$LOUPE" -d :memory: -m json "$tmp/$form" -e info -e "run $CLEAN" -e 'top 1' -e dla -e 'lens --k 1' \
        -e "patch --corrupt \"$CORRUPT\" --site attn_out" -e "patch --corrupt \"$CLEAN\" --site mlp_out" \
        -e 'acts 1 --site resid_mid --pos -1' >"$tmp/out" 2>"$tmp/err"
    check "$form: info, run, dla, lens, patch, acts" test $? -eq 0
    want=$([ $form = parallel ] && echo parallel || echo pre-norm)
    check "$form: info" is 0 ".arch == \"GPTNeoXForCausalLM\" and .blocks == \"$want\" and .rope_dims == 4 and .d_head == 16 and .mlp == \"gelu (erf)\" and .tied_unembed == false"
    check "$form: GPT-2's ids for the prompt" is 1 '.ids == [2215,5335,290,1757,1816,284,262,3650,11,1757,2921,257,4144,284]'
    check "$form: dla closure within 1e-3" is 3 '(.total - .logit | fabs) < 1e-3 and (.heads | length) == 12 and (.mlp | length) == 3'
    check "$form: dla parts add up" is 3 '(([.heads[].dla] | add) + ([.mlp[].dla] | add) + .embed + .bias - .total) | fabs < 1e-3'
    check "$form: dla's target is the top token" is 3 ".target.id == $(jq -s '.[2][0].id' "$tmp/out")"
    check "$form: lens' last layer is the prediction" is 4 "[.[] | select(.pos == 13 and .layer == 2)][0].top[0].id == $(jq -s '.[2][0].id' "$tmp/out")"
    check "$form: patch before the corruption recovers fully" is 5 '[.values[][0:9][]] | all(. == 1)'
    check "$form: patching the clean run changes nothing" is 6 '. as $r | [.raw[][]] | all(. == $r.clean)'
    check "$form: resid_mid is shown" is 7 '.site == "resid_mid" and (.positions | length) == 1'
done

echo "$fails failed"
[ "$fails" -eq 0 ]
