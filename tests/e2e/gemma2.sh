#!/bin/sh
# Gemma 2 through the real binary: a random Gemma2ForCausalLM (soft caps that bite, a sliding
# window shorter than the prompt, head_dim x heads != d_model) with the Gemma-layout
# tokenizer.json of tests/fixtures beside it. info shows the Gemma knobs; the tokenizer adds
# <bos> and no dummy prefix; dla adds up to the logit before the final cap; the lens' last
# layer is the model's prediction; attr (ig from a token baseline: the zero one is the RMSNorm
# case README describes), patch, heads and generate run.
set -u
LOUPE=${LOUPE:-./loupe}
BUILD=${BUILD:-build}
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export XDG_DATA_HOME="$tmp/data"

. tests/e2e/lib/check.sh

M="$tmp/gemma2"
"$BUILD/tools/mkmodel" "$M" --arch gemma2 --vocab 287 --d-model 32 --heads 4 --head-dim 12 --kv-heads 2 --layers 3 \
    --ctx 64 --window 3 --query-scalar 12 --attn-cap 2 --final-cap 3 --std 0.3 --seed 9 2>"$tmp/err"
check "mkmodel --arch gemma2" test $? -eq 0
cp tests/fixtures/gemma2_tokenizer.json "$M/tokenizer.json"
CLEAN="hello world hello world hello"
CORRUPT="hello hello hello world hello"   # differs at position 2
"$LOUPE" -d :memory: -m json "$M" -e info -e "run $CLEAN" -e 'top 1' -e dla -e 'lens --k 1' \
    -e "patch --corrupt \"$CORRUPT\" --site attn_out" -e "patch --corrupt \"$CLEAN\" --site mlp_out" \
    -e 'attr ig --baseline-id 0' -e 'attr saliency' -e heads -e 'attn 0 1' -e 'generate 3' >"$tmp/out" 2>"$tmp/err"
check "info, run, dla, lens, patch, attr, heads, attn, generate" test $? -eq 0
check "info" is 0 '.arch == "Gemma2ForCausalLM" and .blocks == "pre- and post-norm" and .d_head == 12 and .mlp == "geglu" and .tied_unembed == true and .sliding_window == 3 and .sliding_layers == "0,2" and .attn_softcap == 2 and .final_softcap == 3'
check "the tokenizer adds <bos> and no dummy prefix" is 1 '.ids == [2,284,281,276,281,276]'
check "dla closure before the final cap within 1e-3" is 3 '(.total - .logit | fabs) < 1e-3 and (.heads | length) == 12 and (.mlp | length) == 3'
check "dla's capped logit is the model's" is 3 "(.capped_logit - $(jq -s '.[2][0].logit' "$tmp/out") | fabs) < 1e-3 and ((3 * ((.logit / 3) | tanh)) - .capped_logit | fabs) < 1e-4"
check "lens' last layer is the prediction" is 4 "[.[] | select(.pos == 5 and .layer == 2)][0].top[0].id == $(jq -s '.[2][0].id' "$tmp/out")"
check "patch before the corruption recovers fully" is 5 '[.values[][0:2][]] | all(. == 1)'
check "patching the clean run changes nothing" is 6 '. as $r | [.raw[][]] | all(. == $r.clean)'
check "ig from token 0 is complete" is 7 '(.scores | length) == 6 and (.delta | fabs) < 1e-3'
check "saliency scores every position" is 8 '(.scores | length) == 6 and all(.scores[]; . >= 0)'
check "heads: 3 layers x 4" is 9 'length == 12'
check "a sliding layer's row sees its last 3 positions" is 10 '.pattern[5][0:3] == [0,0,0] and (.pattern[5][3:6] | add - 1 | fabs) < 1e-5'
check "generate continues" is 11 '(.ids | length) == 3'

echo "$fails failed"
[ "$fails" -eq 0 ]
