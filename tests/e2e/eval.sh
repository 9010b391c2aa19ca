#!/bin/sh
# eval through the real binary: the JSON's identities (curve ends, last bins, the best of
# each measure), occlusion agreeing with leave-one-out by construction, llama2.c's BOS
# never removed and its unk token as the mask, the table's marks, csv, and every refusal as
# one `error:` line with exit status 1.
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

# The table marks the best of each of the six columns; csv carries plain numbers.
"$LOUPE" models/default -e "run $IOI" -e "eval all --target ' Mary'" >"$tmp/table" 2>"$tmp/err"
check "table: eight marks" test "$(grep -o ' \*' "$tmp/table" | wc -l)" -eq 8
check "table: f in the first header" grep -q "p('·Mary') = 0.96" "$tmp/table"
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
refuse "an encoder" "decoder" models/encoder/mlm -e "run the [MASK] sat" -e "eval"
refuse "an encoder-decoder" "decoder" models/seq2seq/digits -e "run copy: 123" -e "eval"

n=$(grep -c "eval " README.md)
check "README shows eval ($n)" test "$n" -ge 3

[ "$fails" -eq 0 ] || { echo "$fails failed"; exit 1; }
echo "all passed"
