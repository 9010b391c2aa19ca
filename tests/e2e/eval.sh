#!/bin/sh
# eval through the real binary: the JSON's identities (curve ends, last bins, the best of
# each measure), occlusion agreeing with leave-one-out by construction, llama2.c's BOS
# never removed and its unk token as the mask, a T5 run and the BERT classifier (both sides
# ranked together; the frame kept), the table's marks, csv, and every refusal as one `error:`
# line with exit status 1.
set -u
LOUPE=${LOUPE:-./loupe}
STORIES=../shared/models/stories260K/stories260K.bin
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export XDG_DATA_HOME="$tmp/data"

. tests/e2e/lib/check.sh

IOI="When Mary and John went to the store, John gave a drink to"

"$LOUPE" -m json models/default -e "run $IOI" -e "eval all --target ' Mary'" \
    -e "eval occlusion --target ' Mary' --vs ' John' --remove baseline" -e "eval gxi --bins 4 --logodds 50" -e "eval gxi --pos 5" \
    >"$tmp/out" 2>"$tmp/err"
check "eval runs on models/default" test $? -eq 0
check "six methods, the target's probability" is 1 '(.methods | length) == 6 and .f == "prob" and .target.token == " Mary" and .remove == "delete"'
check "f(x) is the run's probability" is 1 "(.f_x - $(jq -s '.[0].next.prob' "$tmp/out")) | fabs < 1e-5"
check "13 removable positions, the last one kept" is 1 '.removable == [range(0; 13)] and (.loo | length) == 13'
check "curves start at f(x), end at f(empty)" is 1 '. as $x | [.methods[] | (.deletion[0] == $x.f_x and .deletion[-1] == $x.f_empty and .insertion[0] == $x.f_empty and .insertion[-1] == $x.f_x)] | all'
check "the last bin removes everything" is 1 '. as $x | [.methods[] | ((.comprehensiveness[-1] - ($x.f_x - $x.f_empty)) | fabs < 1e-9) and .sufficiency[-1] == 0] | all'
check "AOPC is the mean of the bins" is 1 '[.methods[] | ((.comprehensiveness | add / length) - .comprehensiveness_aopc | fabs < 1e-9)] | all'
check "best comprehensiveness is the largest" is 1 '.best.comprehensiveness_aopc == (.methods | max_by(.comprehensiveness_aopc) | .method)'
check "best deletion AUC is the smallest" is 1 '.best.deletion_auc == (.methods | min_by(.deletion_auc) | .method)'
check "occlusion is leave-one-out under baseline removal: tau 1" is 2 '.f == "logit_diff" and .methods[0].loo_tau == 1 and .contrast.token == " John"'
check "--pos 5: the prefix 0..5, position 5 kept" is 4 '.pos == 5 and .removable == [0,1,2,3,4] and (.methods[0].scores | length) == 6'
check "infidelity: settings stated, beta-scaled at most the raw" is 1 '.infidelity_settings == {"samples":10,"sigma":0.1,"seed":1} and ([.methods[] | .infidelity <= .infidelity_raw] | all)'
check "max-sensitivity: settings stated, all finite" is 1 '.sensitivity_settings == {"samples":10,"radius":0.02,"seed":1} and ([.methods[] | .max_sensitivity >= 0] | all)'
check "--bins 4 --logodds 50" is 3 '(.bins == [25,50,75,100]) and .logodds_pct == 50 and (.methods[0].comprehensiveness | length) == 4'

# llama2.c: BOS (position 0) is never removed; --remove mask puts <unk> (id 0) in.
"$LOUPE" -m json "$STORIES" -e "run Once upon a time, Lily found a ball. Lily liked the" -e "eval all --remove mask" \
    >"$tmp/out" 2>"$tmp/err"
check "eval runs on stories260K" test $? -eq 0
check "stories: BOS kept, unk as the mask" is 1 '.removable[0] == 1 and (.removable | index(0)) == null and .remove_token == 0'

# T5: the source's tokens and the decoder's, ranked together; </s>, the decoder's start and
# the judged position stay; the table prints.
"$LOUPE" -m json tests/fixtures/t5/t5_relu_tok -e "run hello world --target water is" -e "eval all --samples 3" \
    -e "eval gxi --remove mask --pos 1" >"$tmp/out" 2>"$tmp/err"
check "eval runs on T5" test $? -eq 0
check "T5: 13 source + 3 decoder positions judged, their scores" is 1 '.n_source == 13 and .pos == 2 and ([.methods[] | .scores | length] | unique) == [16]'
check "T5: removable = the source but </s>, decoder position 1" is 1 '.removable == [range(0; 12)] + [14] and (.loo | length) == 13'
check "T5: curves start at f(x), end at f(empty)" is 1 '. as $x | [.methods[] | (.deletion[0] == $x.f_x and .deletion[-1] == $x.f_empty and .insertion[-1] == $x.f_x)] | all'
check "T5: every measure computed" is 1 '[.methods[] | .infidelity, .max_sensitivity, .comprehensiveness_aopc | numbers] | length == 18'
check "T5 --pos 1 --remove mask: the source only, <pad> in" is 2 '.removable == [range(0; 12)] and .remove_token == 0 and (.methods[0].scores | length) == 15'
"$LOUPE" tests/fixtures/t5/t5_relu_tok -e "run hello world --target water is" -e "eval all --samples 2" >"$tmp/table" 2>"$tmp/err"
check "T5: the table, eight marks" test "$(grep -o ' \*' "$tmp/table" | wc -l)" -eq 8

# The BERT classifier: a label's probability at position 0; [CLS] and both [SEP] stay; the
# sanity check runs; stored with the run.
"$LOUPE" -m json -d "$tmp/enc.db" models/encoder/polarity -e "run this movie was not good --pair i liked it" \
    -e "eval all --samples 3 --sanity" -e "eval occlusion --vs positive --remove baseline" >"$tmp/out" 2>"$tmp/err"
check "eval runs on the BERT classifier" test $? -eq 0
check "BERT: the label judged at position 0" is 1 '.pos == 0 and .target.label == "negative" and .f == "prob" and (.methods | length) == 6'
check "BERT: every position but [CLS] and the two [SEP]" is 1 '(.removable | length) == 16 and .removable[0] == 1 and (.removable | index(0)) == null and ([.methods[] | .scores | length] | unique) == [19]'
check "BERT: the randomisation check per layer" is 1 '[.methods[] | .randomisation.rho | length] | unique == [2]'
check "BERT: occlusion is leave-one-out under baseline removal" is 2 '.f == "logit_diff" and .methods[0].loo_tau == 1'
check "BERT: stored" test "$("$LOUPE" -d "$tmp/enc.db" -m csv -e "sql SELECT count(*) FROM evaluations" | tail -n 1 | tr -d '\r')" = 7
"$LOUPE" models/encoder/polarity -e "run this movie was not good --pair i liked it" -e "eval all --samples 2" >"$tmp/table" 2>"$tmp/err"
check "BERT: the table names the label" grep -q "p('negative') = " "$tmp/table"

# The table marks the best of each of the six columns; csv carries plain numbers.
"$LOUPE" models/default -e "run $IOI" -e "eval all --target ' Mary'" >"$tmp/table" 2>"$tmp/err"
check "table: eight marks" test "$(grep -o ' \*' "$tmp/table" | wc -l)" -eq 8
check "table: f in the first header" grep -q "p('·Mary') = 0.99" "$tmp/table"
"$LOUPE" -m csv models/default -e "run $IOI" -e "eval all --target ' Mary'" >"$tmp/csv" 2>"$tmp/err"
check "csv: header and six rows" test "$(sed -n 3p "$tmp/csv" | tr -d "\r")" = "method,comprehensiveness_aopc,sufficiency_aopc,deletion_auc,insertion_auc,logodds_drop,loo_tau,infidelity,max_sensitivity" -a "$(wc -l <"$tmp/csv")" -eq 9

# Refusals: one line on stderr starting with error:, exit status 1, nothing on stdout.
refuse() { # NAME EXPECTED-TEXT MODEL COMMAND...
    name=$1 want=$2 model=$3; shift 3
    "$LOUPE" -m json "$model" "$@" >"$tmp/rout" 2>"$tmp/rerr"
    st=$?
    last=$(tail -n 1 "$tmp/rerr")
    if [ $st -eq 1 ] && [ "$(wc -l <"$tmp/rerr")" -eq 1 ] && case $last in "error: "*"$want"*) true ;; *) false ;; esac; then
        echo "ok   refuses: $name"
    else
        echo "FAIL refuses: $name (status $st): $(cat "$tmp/rerr")"; fails=$((fails + 1))
    fi
}
refuse "mask on GPT-2" "use --remove delete or --remove baseline" models/default -e "run $IOI" -e "eval --remove mask"
refuse "unknown removal" "use delete, mask or baseline" models/default -e "run $IOI" -e "eval --remove cut"
refuse "unknown method" "use all, saliency" models/default -e "run $IOI" -e "eval lime"
refuse "--bins 0" "--bins" models/default -e "run $IOI" -e "eval --bins 0"
refuse "nothing to remove" "no token to remove" models/default -e "run Mary" -e "eval"
refuse "no run" "run" models/default -e "eval"
refuse "--sanity on an encoder-decoder" "--sanity" tests/fixtures/t5/t5_relu_tok -e "run hello world --target water is" -e "eval gxi --sanity"
refuse "nothing to remove on T5" "no token to remove" tests/fixtures/t5/t5_relu_tok -e "run --ids 1 --target-ids 5" -e "eval --pos 0"
refuse "nothing to remove around a mask" "no token to remove" models/encoder/mlm -e "run [MASK]" -e "eval"
refuse "a bare encoder" "no output head" tests/fixtures/encoders/bert_model -e "run --ids 2,10,3" -e "eval"

n=$(grep -c "eval " README.md)
check "README shows eval ($n)" test "$n" -ge 3

[ "$fails" -eq 0 ] || { echo "$fails failed"; exit 1; }
echo "all passed"
