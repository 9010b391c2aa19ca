#!/bin/sh
# Encoder-decoders (T5) through the real binary on the fixture checkpoints (tests/fixtures/t5):
# run with a source and a target (teacher forcing) and without one (greedy decoding), the
# decoder's logits and greedy output against the reference's expected.json, attn over the
# encoder, the decoder and the source (--cross), tokens of either stack, and the refusals.
set -u
LOUPE=${LOUPE:-./loupe}
DIR=tests/fixtures/t5
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export XDG_DATA_HOME="$tmp/data"

. tests/e2e/lib/check.sh
expected() { jq -c "$2" "$DIR/$1/expected.json"; }
refused() { # refused NAME PATTERN ARGS...: fails with one error line matching PATTERN
    name=$1; pat=$2; shift 2
    if "$LOUPE" -d :memory: "$@" >/dev/null 2>"$tmp/err"; then echo "FAIL $name (succeeded)"; fails=$((fails + 1))
    elif [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q -- "$pat" "$tmp/err"; then echo "ok   $name"
    else echo "FAIL $name"; cat "$tmp/err"; fails=$((fails + 1)); fi
}

for m in t5_relu_tied flan_gated_untied mt5_gated; do
    src=$(expected $m '.ids | join(",")' | tr -d '"')
    tgt=$(expected $m '.target_ids | join(",")' | tr -d '"')
    last=$(expected $m '.target_ids | length - 1')
    "$LOUPE" -d :memory: -m json "$DIR/$m" -e "run --ids $src --target-ids $tgt" -e "logits --pos $last" \
        -e 'attn 0 2' -e 'attn 0 2 --cross' -e 'attn 0 3 --stack dec' -e 'tokens --stack enc' -e tokens \
        -e "run --ids $src --max 8" -e info -e "run --ids $src --max 2" -e 'generate 3' >"$tmp/out" 2>"$tmp/err"
    check "$m: run (teacher-forced and greedy), logits, attn, tokens, info" test $? -eq 0
    check "$m: the decoder's input is the start id, then the target" \
        is 0 ".ids == ([0] + $(expected $m '.target_ids')) and .n_source == $(expected $m '.ids | length')"
    check "$m: logits within 1e-4 of the reference" \
        is 1 "[.logits, $(expected $m ".logits[$last]")] | transpose | map(.[0] - .[1] | fabs) | max < 1e-4"
    check "$m: attn is the encoder's by default (source x source)" \
        is 2 ".stack == \"enc\" and .kind == \"self\" and ([.pattern, $(expected $m '.enc.attn[0][2]')] | transpose | map([.[0], .[1]] | transpose | map(.[0] - .[1] | fabs) | max) | max < 1e-4)"
    check "$m: attn --cross is target x source, the reference's" \
        is 3 ".kind == \"cross\" and (.pattern | length) == $(expected $m '.target_ids | length + 1') and (.pattern[0] | length) == $(expected $m '.ids | length') and ([.pattern[:-1], $(expected $m '.dec.cross[0][2]')] | transpose | map([.[0], .[1]] | transpose | map(.[0] - .[1] | fabs) | max) | max < 1e-4)"
    check "$m: attn --stack dec is causal" is 4 '.stack == "dec" and ([.pattern | to_entries[] | .key as $i | .value[$i + 1:] | .[]] | all(. == 0))'
    check "$m: tokens --stack enc is the source, tokens the decoder's input" \
        is 5 "[.[].id] == $(expected $m .ids)" 
    check "$m: greedy decoding gives the reference's output" is 7 ".target == \"greedy\" and .target_ids == $(expected $m .greedy)"
    check "$m: generate continues the decoder through the cache (the greedy run's next tokens)" \
        is 10 ".prompt_tokens == 3 and .ids == $(expected $m '.greedy[2:5]') and .stop == \"length\""
    check "$m: info names the encoder-decoder" is 8 '.encoder_layers >= 1 and .positions == "relative buckets" and .attention == "causal"'
done

# relbias: the table each stack adds to its scores, by offset, against the reference's bias
# of query 0 (offsets 0..S-1) and of the last query (offsets -(S-1)..0)
m=t5_relu_tied
"$LOUPE" -d :memory: -m json "$DIR/$m" -e 'relbias --range 30' -e 'relbias --stack dec --range 30' >"$tmp/out" 2>"$tmp/err"
check "relbias: both stacks" test $? -eq 0
S=$(expected $m '.ids | length')
check "relbias: the encoder's bias at offsets 0..S-1 (query 0) and 1-S..0 (the last query)" \
    jq -e -s --argjson E "$(expected $m .enc.bias)" --argjson S "$S" \
    '.[0] | (-.offsets[0]) as $R | . as $r | all(range(0; 4) as $h | range(0; $S) as $j |
        (($r.bias[$h][$j + $R] - $E[$h][0][$j]) | fabs) < 1e-5 and
        (($r.bias[$h][$j - ($S - 1) + $R] - $E[$h][$S - 1][$j]) | fabs) < 1e-5)' "$tmp/out"
check "relbias: the decoder's bias at offsets 1-T..0 (the last query)" \
    jq -e -s --argjson E "$(expected $m .dec.bias)" --argjson T "$(expected $m '.target_ids | length')" \
    '.[1] | (-.offsets[0]) as $R | . as $r | all(range(0; 4) as $h | range(0; $T) as $j |
        (($r.bias[$h][$j - ($T - 1) + $R] - $E[$h][$T - 1][$j]) | fabs) < 1e-5)' "$tmp/out"
check "relbias: a decoder sees no later keys" is 1 '.stack == "dec" and (.offsets | max) == 0 and .bidirectional == false'
refused "relbias on a model without one" "no relative position bias" tests/fixtures/encoders/bert_mlm -e relbias
# relbias L H: each score of the run split into content (q.k) and bias; the bias is the
# reference's, content + bias the score, the softmax of a row of scores the reference's pattern
"$LOUPE" -d :memory: -m json "$DIR/$m" -e "run --ids $(expected $m '.ids | join(",")') --target-ids $(expected $m '.decoder_input_ids[1:] | join(",")')" \
    -e 'relbias 1 2' -e 'relbias 2 1 --stack dec' >"$tmp/out" 2>"$tmp/err"
check "relbias L H: both stacks on the run" test $? -eq 0
softmax_is() { # softmax_is INDEX REFERENCE: every row's softmax of scores (nulls masked) within 1e-4 of it
    jq -e -s --argjson E "$2" ".[$1].scores | [.[] | ([.[] | select(. != null)] | max) as \$m |
        ([.[] | select(. != null) | . - \$m | exp] | add) as \$z | map(if . == null then 0 else ((. - \$m) | exp) / \$z end)] |
        [., \$E] | transpose | map(transpose[] | .[0] - .[1] | fabs) | max < 1e-4" "$tmp/out"
}
check "relbias L H: the encoder's bias is the reference's" \
    jq -e -s --argjson E "$(expected $m '.enc.bias[2]')" '[.[1].bias, $E] | transpose | map(transpose[] | .[0] - .[1] | fabs) | max < 1e-5' "$tmp/out"
check "relbias L H: content + bias = score" \
    is 1 '[.content, .bias, .scores] | transpose | map(transpose[]) | all(.[0] + .[1] - .[2] | fabs < 1e-5)'
check "relbias L H: softmax of the encoder's scores is the reference's pattern" softmax_is 1 "$(expected $m '.enc.attn[1][2]')"
check "relbias L H: the decoder's later keys are masked, its softmax the reference's pattern" softmax_is 2 "$(expected $m '.dec.attn[2][1]')"
check "relbias L H: the decoder's masked entries are null" is 2 '.stack == "dec" and .scores[0][1] == null and .scores[1][0] != null'
refused "relbias: a layer without a head" "give a layer and a head" "$DIR/$m" -e 'run --ids 5,1 --target-ids 4,1' -e 'relbias 1'
refused "relbias L H: --range is the curve's" "is for the curve" "$DIR/$m" -e 'run --ids 5,1 --target-ids 4,1' -e 'relbias 1 0 --range 3'
"$LOUPE" -d :memory: -m json "$DIR/t5_relu_tied" -e "run --ids $(expected t5_relu_tied '.ids | join(",")') --target-ids 44,310,9,1" \
    -e 'heads --kind cross --sort diagonal' -e 'heads' -e 'heads --stack dec' >"$tmp/out" 2>"$tmp/err"
check "heads: cross, encoder, decoder" test $? -eq 0
check "heads --kind cross: every decoder head, its metrics, sorted by diagonal" \
    is 1 'length == 12 and (.[0] | keys) == ["coverage","diagonal","entropy","head","layer","max_attn","monotonic","source_eos"] and ([.[].diagonal] | . == (sort | reverse))'
check "heads: the encoder's by default (2 layers), the decoder's with --stack dec (3)" \
    is 2 'length == 8' && check "heads --stack dec: 3 layers" is 3 'length == 12 and ([.[].layer] | max) == 2'
refused "heads --kind cross on a one-stack model" "encoder-decoder" tests/fixtures/encoders/bert_mlm -e 'run --ids 2,5,3' -e 'heads --kind cross'
refused "heads --kind takes self or cross" "self or cross" "$DIR/t5_relu_tied" -e 'run --ids 5,1 --target-ids 4,1' -e 'heads --kind both'
refused "run without a target needs ids here (no tokenizer)" "no tokenizer" "$DIR/t5_relu_tied" -e 'run hello'
refused "--target-ids with --target" "either --target-ids or --target" "$DIR/t5_relu_tied" -e 'run --ids 5,1 --target-ids 4,1 --target x'
refused "--max with a target" "--max limits greedy decoding" "$DIR/t5_relu_tied" -e 'run --ids 5,1 --max 3 --target-ids 4,1'
refused "target ids outside the vocabulary" "--target-ids" "$DIR/t5_relu_tied" -e 'run --ids 5,1 --target-ids 4,600'
refused "--stack on a one-stack model" "encoder-decoder" tests/fixtures/encoders/bert_mlm -e 'run --ids 2,5,3' -e 'attn 0 0 --stack dec'
refused "--cross on a one-stack model" "encoder-decoder" tests/fixtures/encoders/bert_mlm -e 'run --ids 2,5,3' -e 'attn 0 0 --cross'
refused "cross-attention is the decoder's" "decoder's" "$DIR/t5_relu_tied" -e 'run --ids 5,1 --target-ids 4,1' -e 'attn 0 0 --cross --stack enc'
refused "--stack takes enc or dec" "enc or dec" "$DIR/t5_relu_tied" -e 'run --ids 5,1 --target-ids 4,1' -e 'attn 0 0 --stack middle'
# Text through T5's Unigram tokenizer (tests/fixtures/unigram, sentencepiece's ids): the
# source takes the template (</s> appended), the target is the decoder's prefix (no </s>).
uni=tests/fixtures/unigram.json
want() { jq -c ".cases[] | select(.text == \"$1\") | .ids" "$uni"; }
"$LOUPE" -d :memory: -m json --tokenizer tests/fixtures/unigram/tokenizer.json "$DIR/t5_relu_tied" \
    -e 'run hello world --target water is' -e 'run --max 3 -- bypark house' >"$tmp/out" 2>"$tmp/err"
check "text runs through the Unigram tokenizer" test $? -eq 0
check "run SOURCE --target TEXT: the source with </s>, the target without" \
    is 0 ".source_ids == $(want 'hello world') and .target_ids == ($(want 'water is') | .[:-1]) and .ids[0] == 0"
check "run SOURCE alone decodes greedily from the tokenized source" is 1 ".source_ids == $(want 'bypark house') and .target == \"greedy\""
"$LOUPE" -d :memory: -m json --tokenizer tests/fixtures/unigram/tokenizer.json "$DIR/t5_relu_tied" \
    -e 'run hello world --target water is' -e 'patch --corrupt "hello wurld" --corrupt-target "water as"' \
    -e 'patch --corrupt-target "water as" --stack dec --site z' >"$tmp/out" 2>"$tmp/err"
check "patch --corrupt TEXT --corrupt-target TEXT: tokenized as run does" test $? -eq 0
check "patch: the source's corrupted token is where the texts differ (</s> kept)" \
    is 1 '.stack == "enc" and ([.tokens, .corrupt_tokens] | transpose | map(.[0] != .[1]) | index(true)) == 8 and (.tokens | length) == 13'
check "patch --corrupt-target alone: the source is the run's, the decoder's heads" is 2 '.stack == "dec" and .cols == "head"'
printf 'not a protobuf' >"$tmp/garbage.model"
refused "--tokenizer with a .model file that is not sentencepiece's" "garbage.model" \
    --tokenizer "$tmp/garbage.model" "$DIR/t5_relu_tied" -e info

"$LOUPE" -d :memory: -m json "$DIR/t5_relu_tied" -e 'run --ids 37,5,212,90,1 --target-ids 44,310,9' -e 'dla' \
    -e 'dla --target-id 44 --vs-id 9 --pos 1' -e 'neurons 2 3 --sort dla' >"$tmp/out" 2>"$tmp/err"
check "dla and neurons --sort dla on the decoder" test $? -eq 0
check "dla: self heads, cross heads (3 layers x 4), MLPs add up to the logit" \
    is 1 '(.heads | length) == 12 and (.cross | length) == 12 and (.mlp | length) == 3 and ((.total - .logit) | fabs) < 1e-4 and .linearised == false and (([.cross[].dla] | add) - .cross_total | fabs) < 1e-4'
check "dla --vs at a position: a difference that closes" is 2 '.pos == 1 and .contrast.id == 9 and ((.total - .logit) | fabs) < 1e-4'
check "neurons --sort dla: the decoder's neurons with their parts" is 3 '(.neurons | length) == 3 and (.neurons[0].dla | type) == "number"'
# patch on both stacks against the float64 reference (tests/fixtures/t5_patch_reference.py's
# patch.json): the source and the target corrupted, encoder sites re-run the encoder and the
# whole decoder, decoder sites the decoder over the clean encoder output, cross_z per head
for m in t5_relu_tied flan_gated_untied; do
    P="$DIR/$m/patch.json"
    pj() { jq -c "$1" "$P" | tr -d '"'; }
    corrupt="--corrupt-ids $(pj '.corrupt_src | join(",")') --corrupt-target-ids $(pj '.corrupt_dec[1:] | join(",")')"
    tv="--target-id $(pj .target) --vs-id $(pj .contrast)"
    "$LOUPE" -d :memory: -m json "$DIR/$m" -e "run --ids $(pj '.clean_src | join(",")') --target-ids $(pj '.clean_dec[1:] | join(",")')" \
        -e "patch $corrupt $tv" -e "patch $corrupt $tv --stack enc --site attn.hook_z" \
        -e "patch $corrupt $tv --stack dec --site mlp_out" -e "patch $corrupt $tv --site cross_z" \
        -e "patch $corrupt $tv --site hook_cross_attn_out" -e "patch $corrupt $tv --stack dec --denoise" \
        >"$tmp/out" 2>"$tmp/err"
    check "$m: patch on both stacks, cross sites, TransformerLens names, denoising" test $? -eq 0
    close() { # close INDEX STACK.SITE: the raw sweep within 1e-4 of the reference's
        is "$1" "[.raw, $(jq -c ".$2" "$P")] | transpose | map(transpose | map(.[0] - .[1] | fabs) | max) | max < 1e-4"
    }
    check "$m: patch is the encoder's resid_pre by default, says its stack" \
        is 1 '.stack == "enc" and .kind == "self" and .site == "resid_pre" and .cols == "position" and (.tokens | length) == 10'
    check "$m:   ... values" close 1 enc.resid_pre
    check "$m: encoder z per head (attn.hook_z)" close 2 enc.z
    check "$m: decoder mlp_out" close 3 dec.mlp_out
    check "$m: cross_z per head is the decoder's cross-attention" is 4 '.stack == "dec" and .kind == "cross" and .cols == "head"'
    check "$m:   ... values" close 4 dec.cross_z
    check "$m: hook_cross_attn_out is cross_out, with every position at once" close 5 dec.cross_out
    check "$m:   ... layer_all: one value a decoder layer" is 5 "(.layer_all | length) == (.raw | length)"
    check "$m: the clean and corrupted metrics are the reference's" \
        is 1 "((.clean - $(pj .clean)) | fabs) < 1e-4 and ((.corrupt - $(pj .corrupt)) | fabs) < 1e-4"
    check "$m: denoising patches the clean run into the corrupted one" \
        is 6 '.direction == "denoising" and .stack == "dec" and (.values[0][0] | type) == "number"'
done
m=t5_relu_tied
run_ids="run --ids 37,5,212,90,41,7,300,12,64,1 --target-ids 44,310,9,520"
refused "patch: a corrupted source of another length" "corrupted source is 3 tokens and the run's 10" \
    "$DIR/$m" -e "$run_ids" -e 'patch --corrupt-ids 6,7,1'
refused "patch: a corrupted target of another length" "corrupted target is 2 tokens and the run's 4" \
    "$DIR/$m" -e "$run_ids" -e 'patch --corrupt-target-ids 6,7'
refused "patch: nothing corrupted" "give the corrupted source" "$DIR/$m" -e "$run_ids" -e 'patch --site z'
refused "patch: cross sites are the decoder's" "cross_z is the decoder's" \
    "$DIR/$m" -e "$run_ids" -e 'patch --corrupt-target-ids 44,311,9,520 --site cross_z --stack enc'
refused "patch: --corrupt-target on a one-stack model" "encoder-decoder" \
    tests/fixtures/encoders/bert_mlm -e 'run --ids 2,5,3' -e 'patch --corrupt-target-ids 4'
refused "patch: --stack on a one-stack model" "one stack" tests/fixtures/encoders/bert_mlm -e 'run --ids 2,4,3' -e 'patch --corrupt-ids 2,5,3 --stack enc'
refused "patch: cross_out on a one-stack model" "only the decoder of an encoder-decoder" \
    tests/fixtures/encoders/bert_mlm -e 'run --ids 2,4,3' -e 'patch --corrupt-ids 2,5,3 --site cross_out'
# scan: the copy task, every head of both stacks and the cross-attention, with stack and kind
"$LOUPE" -d "$tmp/scan.db" -m json "$DIR/$m" -e 'scan --len 6 --seqs 2' -e 'scan --len 6 --seqs 2 --labelled --threshold 0' \
    >"$tmp/out" 2>"$tmp/scan.err"
check "scan on an encoder-decoder" test $? -eq 0
check "scan: 8 encoder, 12 decoder and 12 cross heads, each with its kind's scores" \
    is 0 '.sequence == "copy" and .seq_len == 6 and (.heads | length) == 32 and
          ([.heads[] | select(.stack == "enc" and .kind == "self")] | length) == 8 and
          ([.heads[] | select(.kind == "cross")] | length) == 12 and
          (.heads[0] | has("next_token") and has("source_eos") and (has("aligned") | not)) and
          (.heads[-1] | has("aligned") and has("diagonal") and has("monotonic") and has("coverage") and (has("prev_token") | not))'
check "scan --threshold 0 labels every head" is 1 '(.heads | length) == 32 and all(.heads[]; .labels != "")'
check "scan: stored, nothing said on stderr" test ! -s "$tmp/scan.err"
check "scan: both scans stored, every head (--labelled shows fewer, stores all)" \
    test "$(sqlite3 "$tmp/scan.db" 'select count(*) from head_scans; select count(*) from head_scan_scores')" = "2
64"
check "scan: the scan's id in the JSON" is 0 '.scan_id == 1' && is 1 '.scan_id == 2'
# every stored row equals its printed one, score by score, per stack and kind (NULL: the kind has no such score)
sqlite3 -json "$tmp/scan.db" "SELECT stack, kind, layer, head, prev_token, next_token, first_token, broad, source_eos,
    aligned, diagonal, monotonic, coverage, labels, duplicate_token, induction, cls_sink, sep_sink
    FROM head_scans_view WHERE scan_id = 1 ORDER BY stack = 'dec', kind = 'cross', layer, head" >"$tmp/scan.rows"
check "scan: the stored rows are the printed ones, per stack and kind" \
    jq -e -s '(.[0].heads | map(to_entries | map(select(.value != null)) | from_entries)) as $p |
        (.[2] | map(to_entries | map(select(.value != null)) | from_entries)) as $s |
        ($p | length) == 32 and ($s | length) == 32 and
        ([$p, $s] | transpose | all(.[0] as $a | .[1] as $b | ($a | keys) == ($b | keys) and
            all($a | to_entries[]; if (.value | type) == "number" then ((.value - $b[.key]) | fabs) < 1e-6
                                   else .value == $b[.key] end)))' "$tmp/out" "$tmp/scan.rows"
check "scan: head_scans_view counts per stack and kind" \
    test "$(sqlite3 "$tmp/scan.db" "select stack || kind || count(*) from head_scans_view where scan_id = 2 group by stack, kind order by 1" | tr '\n' ' ')" = "deccross12 decself12 encself8 "
refused "scan --len beyond the vocabulary" "out of range" "$DIR/$m" -e 'scan --len 5000'
"$LOUPE" -d :memory: -m json "$DIR/t5_relu_tied" -e 'run --ids 5,1 --target-ids 4,1' -e 'neurons 2 3' >"$tmp/out" 2>"$tmp/err"
check "neurons by activation: the decoder's MLP" is 1 '(.neurons | length) == 3 and .dla == null and (.neurons[0].act | type) == "number"'
# T5EncoderModel is an encoder: run takes one sequence
"$LOUPE" -d :memory: -m json "$DIR/t5_encoder" -e "run --ids $(expected t5_encoder '.ids | join(",")')" -e 'attn 1 0' >"$tmp/out" 2>"$tmp/err"
check "t5_encoder: run, attn (bidirectional)" test $? -eq 0
check "t5_encoder: attn is the reference's" is 1 "[.pattern, $(expected t5_encoder '.enc.attn[1][0]')] | transpose | map([.[0], .[1]] | transpose | map(.[0] - .[1] | fabs) | max) | max < 1e-4"

# attr on a decoder token (the run's decoder: the start id, then the whole target): S + T scores, the source's first (sides.source, sides.target), against
# the autograd reference's gradients (grad.json), IG complete across both sides, rollout a
# distribution over both; stored with each score's side
for m in t5_relu_tied flan_gated_untied; do
    G="$DIR/$m/grad.json"
    src=$(jq -r '.ids | join(",")' "$G"); tgt=$(jq -r '.target_ids | join(",")' "$G")
    p=$(jq .pos "$G"); y=$(jq .target "$G"); S=$(jq '.ids | length' "$G")
    "$LOUPE" -d :memory: -m json "$DIR/$m" -e "run --ids $src --target-ids $tgt" -e "attr saliency --pos $p --target-id $y" \
        -e "attr ig --pos $p --target-id $y --objective logprob --baseline-id 0 --steps 64" -e "attr rollout --pos $p" \
        -e "attr occlusion --pos $p --target-id $y --window 2" -e "attr attnxnorm --pos $p --layer 0" -e 'attr gxi' >"$tmp/out" 2>"$tmp/err"
    check "$m: attr, six methods on a decoder token" test $? -eq 0
    check "$m: attr saliency is the norm of the reference's gradient rows, source then target" \
        jq -e -s --slurpfile G "$G" --argjson S "$S" --argjson p "$p" '.[1] | . as $a |
            ($G[0].grad_src.logit + $G[0].grad_tgt.logit[:$p + 1] | map(map(. * .) | add | sqrt)) as $want |
            ($a.scores | length) == $S + ($G[0].target_ids | length) + 1 and ($a.sides.source | length) == $S and
            $a.n_source == $S and ([$a.scores[:$S] + $a.scores[$S:$S + $p + 1], $want] | transpose |
            map(.[0] - .[1] | fabs) | max) < 1e-4 * ($want | max) and ($a.sides.target[$p + 1:] | all(. == 0))' "$tmp/out"
    check "$m: attr ig from pad is complete across source and target (|delta| < 5e-3)" \
        is 2 '(.delta | fabs) < 5e-3 and ((.sides.source + .sides.target | add) - .delta | isnormal)'
    check "$m: attr rollout sums to 1 over both sides" is 3 '((.sides.source + .sides.target | add) - 1 | fabs) < 1e-5'
    check "$m: attr on an encoder-decoder is stored (attribution_id), nothing says otherwise" \
        is 1 '(has("not_stored") | not) and .attribution_id == 1'
    check "$m: attr occlusion, attnxnorm, gxi: S + T scores" \
        is 4 "(.scores | length) == $S + $(jq '.target_ids | length + 1' "$G") and .params.window == 2" && \
        is 5 ".params.layer == 0 and (.sides.source | length) == $S" && is 6 '.pos == 6 and .method == "gxi"'
done
"$LOUPE" -d :memory: "$DIR/t5_relu_tied" -e 'run --ids 37,5,1 --target-ids 44,1' -e 'attr gxi --pos 0' >"$tmp/out" 2>"$tmp/err"
check "attr's table has a side column" grep -q '^  0  target' "$tmp/out"
check "attr's table says nothing of not being stored" test "$(grep -c 'not stored' "$tmp/out")" -eq 0
# stored: S source rows and T target rows, each score the printed one
"$LOUPE" -d "$tmp/attr.db" -m json "$DIR/t5_relu_tied" -e 'run --ids 37,5,1 --target-ids 44,1' -e 'attr ig --pos 1' \
    -e 'attr saliency --pos 2' >"$tmp/out" 2>"$tmp/err"
check "attr on an encoder-decoder with a database" test $? -eq 0
for k in 1 2; do
    sqlite3 -json "$tmp/attr.db" "SELECT side, pos, token, score, target_pos FROM attributions_view WHERE id = $k
        ORDER BY side = 'target', pos" >"$tmp/attr.rows"
    check "attr $k stored: 3 source + 3 target rows, scores and sides as printed" \
        jq -e -s --argjson k "$k" '.[$k] as $a | .[3] as $s | $a.attribution_id == $k and
            ($s | length) == 6 and ([$s[] | select(.side == "source")] | length) == $a.n_source and
            ([$s[].side] == ["source","source","source","target","target","target"]) and
            ([$s[].pos] == [0,1,2,0,1,2]) and ($s[0].target_pos == $a.pos) and
            ([[$s[].score], $a.scores] | transpose | map(.[0] - .[1] | fabs) | max) < 1e-6' \
            "$tmp/out" "$tmp/attr.rows"
done
# note: the stack and kind its layer, head and pos are in; the encoder's pos is a source position
"$LOUPE" -d "$tmp/note.db" "$DIR/t5_relu_tied" -e 'run --ids 37,5,1 --target-ids 44,1' \
    -e 'note --stack enc --layer 1 --head 2 --pos 1 -- source token' -e 'note --cross --layer 0 --pos 2 -- aligns' \
    -e 'note --kind cross --head 3 -- kind cross' -e 'note --layer 0 -- the decoder by default' -e 'note no place' \
    >/dev/null 2>"$tmp/err"
check "note with --stack, --cross and --kind" test $? -eq 0
check "note: findings_view has each note's stack, kind and token (the source's for the encoder)" \
    test "$(sqlite3 -separator ' ' "$tmp/note.db" "select stack, attn_kind, layer, head, pos, token_id from findings_view order by id" | tr '\n' '|')" = \
    "enc self 1 2 1 5|dec cross 0  2 1|dec cross  3  |dec self 0   |     |"
refused "note --stack on a one-stack model" "one stack" tests/fixtures/encoders/bert_mlm -e 'run --ids 2,5,3' -e 'note --stack enc -- x'
refused "note --cross --stack enc" "decoder's" "$DIR/t5_relu_tied" -e 'run --ids 37,5,1 --target-ids 44,1' -e 'note --cross --stack enc -- x'
refused "note --kind other" "self or cross" "$DIR/t5_relu_tied" -e 'run --ids 37,5,1 --target-ids 44,1' -e 'note --kind both -- x'
refused "note --pos past the source" "--pos" "$DIR/t5_relu_tied" -e 'run --ids 37,5,1 --target-ids 44,1' -e 'note --stack enc --pos 3 -- x'
refused "note --layer past the encoder" "--layer" "$DIR/t5_relu_tied" -e 'run --ids 37,5,1 --target-ids 44,1' -e 'note --stack enc --layer 9 -- x'
refused "attr --window longer than either side" "--window" "$DIR/t5_relu_tied" -e 'run --ids 37,5,1 --target-ids 44,1' -e 'attr occlusion --window 4'
refused "attr --layer past the decoder's" "--layer" "$DIR/t5_relu_tied" -e 'run --ids 37,5,1 --target-ids 44,1' -e 'attr attnxnorm --layer 3'

[ "$fails" -eq 0 ]
