#!/bin/sh
# BERT-style encoders through the real binary on the fixture checkpoints
# (tests/fixtures/encoders): run adds [CLS]/[SEP] (or <s> </s>), --pair gives token types,
# --ids/--types, classify, top and fill at the masks, the tables and JSON shapes, the
# numbers against the fixtures' expected.json, and the analyses that refuse encoders.
set -u
LOUPE=${LOUPE:-./loupe}
ENC=tests/fixtures/encoders
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export XDG_DATA_HOME="$tmp/data"

. tests/e2e/lib/check.sh
# expected MODEL JQ: a value of the model's expected.json
expected() { jq -c "$2" "$ENC/$1/expected.json"; }

# A BERT sentence pair with a mask: the template, the token types, the fixture's ids and logits.
"$LOUPE" -d :memory: -m json "$ENC/bert_mlm" -e "run $(expected bert_mlm '.text[0]' | tr -d '"') --pair $(expected bert_mlm '.text[1]' | tr -d '"')" \
    -e tokens -e 'top 3' -e 'fill 2' -e 'logits' -e info >"$tmp/out" 2>"$tmp/err"
check "bert_mlm: run --pair, tokens, top, fill, logits, info" test $? -eq 0
check "run --pair: the fixture's ids and token types" is 0 ".ids == $(expected bert_mlm .ids) and .types == $(expected bert_mlm .token_type_ids)"
check "run: [CLS] first, [SEP] after each sentence" is 1 '.[0].text == "[CLS]" and .[-1].text == "[SEP]" and ([.[] | select(.text == "[SEP]")] | length) == 2'
check "run: the prediction is at the first mask" is 0 ".prediction.pos == $(expected bert_mlm '.mask_pos[0]')"
check "top: defaults to the first mask, the fixture's argmax" is 2 ".[0].id == $(expected bert_mlm "[.logits[$(expected bert_mlm '.mask_pos[0]')] | to_entries | max_by(.value) | .key][0]")"
check "fill: every mask, 2 candidates each" is 3 "([.[].pos] == $(expected bert_mlm .mask_pos)) and ([.[].candidates | length == 2] | all)"
check "logits: within 1e-4 of the reference at the mask" is 4 "[.logits, $(expected bert_mlm ".logits[$(expected bert_mlm '.mask_pos[0]')]")] | transpose | map(.[0] - .[1] | fabs) | max < 1e-4"
check "info: bidirectional, post-norm, masked-lm" is 5 '.attention == "bidirectional" and .blocks == "post-norm" and .head == "masked-lm" and .token_types == 2'

# Classifiers: classify's rows, by id, probabilities summing to 1, the fixture's logits.
for m in bert_cls roberta_cls distilbert_cls; do
    types=$(expected $m 'if .token_type_ids then "--types " + (.token_type_ids | join(",")) else "" end' | tr -d '"')
    "$LOUPE" -d :memory: -m json "$ENC/$m" -e "run --ids $(expected $m '.ids | join(",")') $types" -e classify -e info \
        >"$tmp/out" 2>"$tmp/err"
    check "$m: run --ids, classify, info" test $? -eq 0
    check "$m: classify rows are id, label, prob, logit" is 1 '(.[0] | keys) == ["id","label","logit","prob"] and ([.[].id] == [range(length)]) and (([.[].prob] | add) - 1 | fabs < 1e-5)'
    check "$m: labels as in config.json" is 1 "[.[].label] == $(expected $m .labels)"
    check "$m: logits within 1e-4 of the reference" is 1 "[[.[].logit], $(expected $m .logits)] | transpose | map(.[0] - .[1] | fabs) | max < 1e-4"
    check "$m: info lists the labels" is 2 ".head == \"classifier\" and .labels == $(expected $m .labels)"
done
# --types reaches the model (the pair's segments), and is checked.
ids=$(expected bert_cls '.ids | join(",")'); types=$(expected bert_cls '.token_type_ids | join(",")')
"$LOUPE" -d :memory: -m json "$ENC/bert_cls" -e "run --ids $ids --types $types" -e classify >"$tmp/out" 2>"$tmp/err"
check "run --ids --types: the fixture's pair logits" is 1 "[[.[].logit], $(expected bert_cls .logits)] | transpose | map(.[0] - .[1] | fabs) | max < 1e-4"
check "run --types: kept with the run" is 0 ".types == $(expected bert_cls .token_type_ids)"
"$LOUPE" -d :memory: "$ENC/bert_cls" -e 'run --ids 2,10,3 --types 0,2,0' >/dev/null 2>"$tmp/e2"
check "run --types out of range is refused" grep -q "token type 2 at position 1" "$tmp/e2"
"$LOUPE" -d :memory: "$ENC/bert_cls" -e 'run --ids 2,10,3 --types 0,1' >/dev/null 2>"$tmp/e2"
check "run --types must match the ids" grep -q "2 types for 3 ids" "$tmp/e2"

# A multi-label classifier: each label's probability is its sigmoid.
mkdir "$tmp/multi" && cp "$ENC"/bert_cls/* "$tmp/multi"/ &&
    jq '.problem_type = "multi_label_classification"' "$ENC/bert_cls/config.json" >"$tmp/multi/config.json"
"$LOUPE" -d :memory: -m json "$tmp/multi" -e 'run the movie was good' -e classify >"$tmp/out" 2>"$tmp/err"
check "multi-label classify: sigmoid per label" is 1 '[.[] | (.prob - 1 / (1 + ((-.logit) | exp))) | fabs < 1e-6] | all'

# RoBERTa: <s> ... </s>, <mask> taking the space before it, the pair template.
"$LOUPE" -d :memory: -m json "$ENC/roberta_mlm" -e "run $(expected roberta_mlm '.text' | tr -d '"')" -e tokens -e fill \
    >"$tmp/out" 2>"$tmp/err"
check "roberta_mlm: run, tokens, fill" test $? -eq 0
check "roberta: the fixture's ids (<s> ... </s>, <mask>)" is 0 ".ids == $(expected roberta_mlm .ids)"
check "roberta: fill at <mask>" is 2 ".[0].pos == $(expected roberta_mlm '.mask_pos[0]')"
"$LOUPE" -d :memory: -m json "$ENC/roberta_cls" -e "run $(expected roberta_cls '.text[0]' | tr -d '"') --pair $(expected roberta_cls '.text[1]' | tr -d '"')" \
    >"$tmp/out" 2>"$tmp/err"
check "roberta --pair: <s> A </s></s> B </s>, types 0" is 0 ".ids == $(expected roberta_cls .ids) and (.types | all(. == 0))"

# Tables: a masked LM's run names the mask, a classifier's the label; BertModel predicts nothing.
"$LOUPE" -d :memory: "$ENC/distilbert_mlm" -e 'run the [MASK] was good' -e fill >"$tmp/out" 2>"$tmp/err"
check "distilbert_mlm table: run shows the mask's prediction" grep -q "^run  tokens  pos  mask" "$tmp/out"
"$LOUPE" -d :memory: "$ENC/distilbert_cls" -e 'run the movie was good' -e classify >"$tmp/out" 2>"$tmp/err"
check "distilbert_cls table: classify has id, label, prob, logit" grep -q "^id  label" "$tmp/out"
"$LOUPE" -d :memory: -m json "$ENC/bert_model" -e 'run the movie' -e 'attn 1 1' -e heads -e 'acts 0' \
    -e "export pooled $tmp/pooled.npy" -e 'save attn' >"$tmp/out" 2>"$tmp/err"
check "bert_model: attn, heads, acts, export, save" test $? -eq 0
check "attn: full rows (no causal mask), each summing to 1" is 1 '(.pattern | length) == 4 and ([.pattern[] | (add - 1 | fabs) < 1e-5] | all) and .pattern[0][3] > 0'
check "heads: every head, finite entropy" is 2 'length == 4 and ([.[].entropy | . > 0] | all)'
check "export pooled: (1, d)" is 4 '.shape == [1,32]'

# Refusals: one line each, naming the command and the architecture.
for c in 'generate 3|generate'; do
    cmd=${c%%|*} name=${c#*|}
    "$LOUPE" -d :memory: "$ENC/bert_mlm" -e 'run the [MASK] was good' -e "$cmd" >/dev/null 2>"$tmp/e2"
    check "$cmd refuses encoders in one line" sh -c "test \$(wc -l < '$tmp/e2') -eq 1 && grep -q '^error: $name.*: not yet available for encoder models (BertForMaskedLM)' '$tmp/e2'"
done
# Attribution works on encoders: every method, against the reference's scores.
for m in bert_mlm roberta_cls distilbert_cls; do
    g=$ENC/$m/grad.json
    ids=$(jq -r '.ids | join(",")' "$g")
    types=$(jq -r 'if .token_type_ids then "--types " + (.token_type_ids | join(",")) else "" end' "$g")
    "$LOUPE" -d :memory: -m json "$ENC/$m" -e "run --ids $ids $types" \
        -e "attr saliency --pos $(jq .pos "$g") --target-id $(jq .target "$g")" \
        -e "attr gxi --pos $(jq .pos "$g") --target-id $(jq .target "$g") --vs-id $(jq .contrast "$g")" >"$tmp/out" 2>"$tmp/err"
    check "$m: attr saliency and gxi run" test $? -eq 0
    check "$m: saliency within 1e-4 of the reference" is 1 "[.scores, $(jq -c '[.attr[] | select(.method == "saliency" and .objective == "logit")][0].scores' "$g")] | transpose | map(.[0] - .[1] | fabs) | max < 1e-4"
    check "$m: gxi of the logit difference within 1e-4" is 2 "[.scores, $(jq -c '[.attr[] | select(.method == "gxi" and .objective == "logit_diff")][0].scores' "$g")] | transpose | map(.[0] - .[1] | fabs) | max < 1e-4"
    "$LOUPE" -d :memory: -m json "$ENC/$m" -e "run --ids $ids $types" -e "attr rollout --pos $(jq .pos "$g")" \
        -e "attr attnxnorm --pos $(jq .pos "$g") --layer 0" >"$tmp/out" 2>"$tmp/err"
    check "$m: rollout over every key, within 1e-4" is 1 "[.scores, $(jq -c '[.attr[] | select(.method == "rollout")][0].scores' "$g")] | transpose | map(.[0] - .[1] | fabs) | max < 1e-4"
    "$LOUPE" -d :memory: -m json "$ENC/$m" -e "run --ids $ids $types" \
        -e "attr ig --pos $(jq .pos "$g") --target-id $(jq .target "$g") --steps 16 --max-steps 16" \
        -e "attr occlusion --pos $(jq .pos "$g") --target-id $(jq .target "$g") --window 2 --baseline-id $(jq '[.attr[] | select(.method == "occlusion" and .window == 2)][0].baseline' "$g")" >"$tmp/o2" 2>"$tmp/err"
    check "$m: ig (zero baseline, 16 steps) and its delta within 1e-4" jq -e -s ".[1] | ([.scores, $(jq -c '[.attr[] | select(.method == "ig" and .objective == "logit" and .baseline == -1)][0].scores' "$g")] | transpose | map(.[0] - .[1] | fabs) | max < 1e-4) and ((.delta - $(jq '[.attr[] | select(.method == "ig" and .objective == "logit" and .baseline == -1)][0].delta' "$g")) | fabs < 1e-4)" "$tmp/o2"
    check "$m: occlusion (window 2, the pad baseline) within 1e-4" jq -e -s ".[2] | [.scores, $(jq -c '[.attr[] | select(.method == "occlusion" and .objective == "logit" and .window == 2)][0].scores' "$g")] | transpose | map(.[0] - .[1] | fabs) | max < 1e-4" "$tmp/o2"
    check "$m: attnxnorm within 1e-4" is 2 "[.scores, $(jq -c '[.attr[] | select(.method == "attnxnorm" and .layer == 0)][0].scores' "$g")] | transpose | map(.[0] - .[1] | fabs) | max < 1e-4"
done
"$LOUPE" -d :memory: -m json "$ENC/bert_cls" -e 'run the movie was good' -e 'attr gxi --target positive' >"$tmp/out" 2>"$tmp/err"
check "attr on a classifier: the target is a label" is 1 '.target == {"id":2,"label":"positive"} and .pos == 0'
"$LOUPE" -d :memory: "$ENC/bert_cls" -e 'run the movie was good' -e 'attr gxi --pos 2' >/dev/null 2>"$tmp/e2"
check "attr on a classifier at another position is refused" grep -q "prediction is at position 0" "$tmp/e2"
"$LOUPE" -d :memory: -m json "$ENC/bert_mlm" -e 'run the [MASK] was good' -e 'lens --pos 2' -e 'top 1' >"$tmp/out" 2>"$tmp/err"
check "lens on a masked LM: the last layer's row is the model's output" is 1 "(length == 3) and (.[2].top[0].id == $(jq -s '.[2][0].id' "$tmp/out"))"
"$LOUPE" -d :memory: -m json "$ENC/bert_mlm" -e 'run the [MASK] was good' -e 'neurons 1 3' >"$tmp/out" 2>"$tmp/err"
check "neurons on a masked LM: activations and dla at the mask" is 1 '(.neurons | length) == 3 and ([.neurons[].dla] | all(type == "number")) and ([.neurons[].act] | . == (sort | reverse)) and .pos == 2 and .target.id >= 0'
"$LOUPE" -d :memory: "$ENC/bert_cls" -e 'run the movie' -e lens >/dev/null 2>"$tmp/e2"
check "lens on a classifier is refused" grep -q "lens: BertForSequenceClassification is a sequence classifier" "$tmp/e2"
"$LOUPE" -d :memory: "$ENC/bert_mlm" -e 'run the [MASK] was good' -e classify >/dev/null 2>"$tmp/e2"
check "classify on a masked LM is refused" grep -q "classify: BertForMaskedLM is not a sequence classifier" "$tmp/e2"
"$LOUPE" -d :memory: "$ENC/bert_cls" -e 'run the movie' -e top >/dev/null 2>"$tmp/e2"
check "top on a classifier is refused" grep -q "top: BertForSequenceClassification is a sequence classifier" "$tmp/e2"
"$LOUPE" -d :memory: "$ENC/bert_cls" -e 'run the movie' -e fill >/dev/null 2>"$tmp/e2"
check "fill on a classifier is refused" grep -q "fill: BertForSequenceClassification is not a masked language model" "$tmp/e2"
"$LOUPE" -d :memory: "$ENC/bert_mlm" -e 'run the movie' -e top >/dev/null 2>"$tmp/e2"
check "top without a mask asks for --pos" grep -q "no mask token (\[MASK\]); give --pos P" "$tmp/e2"
"$LOUPE" -d :memory: "$ENC/bert_model" -e 'run the movie' -e logits >/dev/null 2>"$tmp/e2"
check "logits on BertModel is refused" grep -q "BertModel has no output head" "$tmp/e2"

# The store records encoder runs (predictions: a masked LM's tokens, a classifier's labels).
"$LOUPE" -d "$tmp/s.db" "$ENC/bert_cls" -e 'run the movie was good' >/dev/null 2>"$tmp/err"
check "a classifier's run is stored" test "$(sqlite3 "$tmp/s.db" "SELECT count(*) FROM predictions")" -eq 3

# patch on encoders: a masked LM's mask logit, a classifier's label, sentence pairs.
"$LOUPE" -d :memory: -m json "$ENC/bert_mlm" -e 'run the quick [MASK] jumped .' -e 'patch --corrupt "the lazy [MASK] jumped ."' \
    -e 'patch --corrupt "the lazy [MASK] jumped ." --site z --denoise' >"$tmp/out" 2>"$tmp/err"
check "patch on a masked LM runs (resid_pre, z --denoise)" test $? -eq 0
check "patch: reads the first mask, layers x positions" is 1 '.pos == 3 and (.values | length) == 2 and ([.values[] | length == 8] | all)'
check "patch: the one changed token at layer 0 gives the corrupted run (0), the others change nothing (1)" \
    is 1 '(.values[0][2] | fabs) < 1e-4 and ([.values[0][0,1,3,4,5,6,7]] | all(. == 1))'
check "patch: the changed token reaches every position at layer 1 (attention is bidirectional)" is 1 '.values[1][0] != 1 and .values[1][7] != 1'
check "patch --site z --denoise: layers x heads" is 2 '.direction == "denoising" and .cols == "head" and ([.values[] | length == 4] | all)'
"$LOUPE" -d :memory: -m json "$ENC/bert_cls" -e 'run this movie was not good. --pair i liked the film.' \
    -e 'patch --corrupt "this film was very good." --target negative --vs positive --site attn_out' \
    -e 'patch --corrupt "this movie was very good." --pair "i liked the film ." --site mlp_out' >"$tmp/out" 2>"$tmp/err"
check "patch on a classifier's sentence pair runs" test $? -eq 0
check "patch: the label objective at position 0" is 1 '.pos == 0 and .target == {"id":0,"label":"negative"} and .contrast == {"id":2,"label":"positive"} and (.layer_all | length) == 2'
check "patch: the corrupted text replaces the first segment, the pair's second is kept" is 1 '.corrupt_tokens[1:3] == ["this","film"] and .corrupt_tokens[7:] == .tokens[7:]'
check "patch --pair: the corrupted prompt's own second text" is 2 '.corrupt_tokens[4] == "very" and .corrupt_tokens[8:] == .tokens[8:]'
"$LOUPE" -d :memory: "$ENC/bert_cls" -e 'run this movie was not good. --pair i liked the film.' \
    -e 'patch --corrupt "this movie was good." --pair "i liked the film very."' >/dev/null 2>"$tmp/e2"
check "patch: segments of other lengths (token types differ) are refused" grep -q "^error: patch: the corrupted prompt's token type at position 7 is 1, the run's 0" "$tmp/e2"
"$LOUPE" -d :memory: "$ENC/bert_cls" -e 'run this movie was not good.' -e 'patch --corrupt "this movie was very good." --pos 3' >/dev/null 2>"$tmp/e2"
check "patch: a classifier reads position 0 only" grep -q "^error: patch: a classifier's prediction is at position 0" "$tmp/e2"
"$LOUPE" -d :memory: "$ENC/bert_model" -e 'run the movie' -e 'patch --corrupt "the film"' >/dev/null 2>"$tmp/e2"
check "patch: BertModel has nothing to read" grep -q "^error: patch: BertModel has no output head" "$tmp/e2"
"$LOUPE" -d :memory: "$ENC/roberta_mlm" -e 'run the cat <mask> on the mat' -e 'patch --corrupt "the dog <mask> on the mat" --site mlp_out' >"$tmp/out" 2>"$tmp/err"
check "patch on RoBERTa's masked LM" grep -q "^layer  0:<s>" "$tmp/out"

"$LOUPE" -d :memory: -m json "$ENC/bert_cls" -e 'run this movie was not good. --pair i liked the film.' \
    -e 'patch --corrupt-ids 2,94,83,72,80,81,5,3,14,99,106,65,84,5,3 --site mlp_out' >"$tmp/out" 2>"$tmp/err"
check "patch --corrupt-ids on a pair: the run's token types" is 1 '.corrupt_tokens[4] == "very" and .corrupt_tokens[12] == "film"'
"$LOUPE" -d :memory: "$ENC/bert_cls" -e 'run this movie was not good. --pair i liked the film.' \
    -e 'patch --corrupt-ids 2,94,83,72,80,81,5,3,14,99,106,65,84,5,3 --pair "i hated it"' >/dev/null 2>"$tmp/e2"
check "patch --pair with --corrupt-ids is refused" grep -q "^error: patch: --pair goes with --corrupt TEXT" "$tmp/e2"
"$LOUPE" -d :memory: ../shared/models/stories260K/stories260K.bin -e 'run Tim had a ball.' -e 'patch --corrupt "Sam had a ball." --pair "x"' >/dev/null 2>"$tmp/e2"
check "patch --pair on a decoder is refused" grep -q "^error: patch: --pair is for encoders' sentence pairs" "$tmp/e2"

# dla on encoders: linearised in the head, the closure rows, labels as targets.
"$LOUPE" -d :memory: -m json "$ENC/bert_mlm" -e 'run the quick [MASK] jumped .' -e 'dla' -e 'dla --pos 2 --target-id 65 --vs-id 66' \
    -e 'neurons 1 4 --sort dla' >"$tmp/out" 2>"$tmp/err"
check "dla on a masked LM runs (first mask, --pos)" test $? -eq 0
check "dla: linearised, at the first mask, parts adding up to total, remainder = logit - total" \
    is 1 '.linearised == true and .pos == 3 and (((.embed + .bias + .heads_total + .mlp_total) - .total) | fabs) < 1e-4 and (((.logit - .total) - .remainder) | fabs) < 1e-6 and (.bias_parts | keys) == ["attn_out","norms"]'
check "dla --pos --target-id --vs-id" is 2 '.pos == 2 and .target.id == 65 and .contrast.id == 66'
check "neurons --sort dla on an encoder: by |dla|" is 3 '[.neurons[].dla | fabs] | . == (sort | reverse)'
"$LOUPE" -d :memory: "$ENC/bert_mlm" -e 'run the quick [MASK] jumped .' -e 'dla' >"$tmp/out" 2>"$tmp/err"
check "dla table: says it is linearised and shows the remainder" sh -c "grep -q '^layer (linearised at the run)' '$tmp/out' && grep -q '^remainder' '$tmp/out'"
"$LOUPE" -d :memory: -m json "$ENC/distilbert_cls" -e 'run this movie was not good.' -e 'dla --target negative --vs positive' \
    -e 'neurons 0 2 --pos 3' -e 'classify' >"$tmp/out" 2>"$tmp/err"
check "dla on a classifier: labels, position 0" is 1 '.pos == 0 and .target.label == "negative" and .contrast.label == "positive"'
check "dla's logit is the label logit difference" jq -e -s '(.[1].logit - (.[3][0].logit - .[3][2].logit)) | fabs < 1e-5' "$tmp/out"
check "neurons on a classifier away from 0: activations only" is 2 '.pos == 3 and ([.neurons[].dla] | all(. == null))'
"$LOUPE" -d :memory: "$ENC/bert_cls" -e 'run the movie' -e 'dla --pos 2' >/dev/null 2>"$tmp/e2"
check "dla on a classifier away from 0 is refused" grep -q "^error: dla: a classifier's prediction is at position 0" "$tmp/e2"
"$LOUPE" -d :memory: "$ENC/bert_cls" -e 'run the movie' -e 'dla --target happy' >/dev/null 2>"$tmp/e2"
check "dla --target with an unknown label is refused" grep -q "'happy' is not one of this classifier's labels" "$tmp/e2"
"$LOUPE" -d :memory: "$ENC/bert_model" -e 'run the movie' -e 'dla' >/dev/null 2>"$tmp/e2"
check "dla on BertModel is refused" grep -q "^error: dla: BertModel has no output head" "$tmp/e2"
"$LOUPE" -d :memory: "$ENC/bert_model" -e 'run the movie' -e 'neurons 0 --sort dla' >/dev/null 2>"$tmp/e2"
check "neurons --sort dla on BertModel is refused" grep -q "^error: neurons: BertModel has no output head" "$tmp/e2"

# heads and scan on encoders: Clark et al.'s metrics (next token, [CLS] and [SEP] sinks, broad).
"$LOUPE" -d :memory: -m json "$ENC/bert_mlm" -e 'run the quick [MASK] jumped . --pair the dog' -e 'heads --sort sep_sink' \
    -e 'scan --len 10 --seqs 2' -e 'scan --len 10 --seqs 2 --threshold 0.5 --labelled' >"$tmp/out" 2>"$tmp/err"
check "heads and scan on an encoder run" test $? -eq 0
check "heads: the encoder metrics, sorted by sep_sink" is 1 '(.[0] | has("next_token") and has("cls_sink") and has("sep_sink") and has("broad")) and ([.[].sep_sink] | . == (sort | reverse)) and ([.[] | .broad > 0 and .broad <= 1] | all)'
check "scan: [CLS] + random tokens + [SEP], the encoder scores, stored" is 2 '.sequence == "cls_random_sep" and .seq_len == 10 and .scan_id == 1 and (.heads | length) == 8 and (.heads[0] | keys) == ["broad","cls_sink","head","labels","layer","next_token","prev_token","sep_sink"]'
check "scan: labels are the scores at or above the threshold" is 2 '[.heads[] | (.labels | split(" ") | map(select(. != ""))) as $l | [("prev_token","next_token","cls_sink","sep_sink","broad") as $k | select(.[$k] >= 0.4) | $k] == $l] | all'
check "scan --labelled: only labelled heads" is 3 '[.heads[].labels != ""] | all'
# stored: stack 'enc', kind 'self', the printed scores in the encoder's columns, the decoder's NULL
"$LOUPE" -d "$tmp/escan.db" -m json "$ENC/bert_mlm" -e 'scan --len 10 --seqs 2' >"$tmp/out" 2>"$tmp/err"
sqlite3 -json "$tmp/escan.db" "SELECT layer, head, prev_token, next_token, cls_sink, sep_sink, broad, labels, stack, kind,
    duplicate_token, induction, first_token FROM head_scans_view ORDER BY layer, head" >"$tmp/rows"
check "scan on an encoder is stored: its rows are the printed ones" jq -e -s '.[0].heads as $p | .[1] as $s |
    ($s | length) == 8 and all($s[]; .stack == "enc" and .kind == "self" and .duplicate_token == null and
        .induction == null and .first_token == null) and
    ([$p, $s] | transpose | all(.[0] as $a | .[1] as $b | $a.layer == $b.layer and $a.head == $b.head and
        $a.labels == $b.labels and all(("prev_token","next_token","cls_sink","sep_sink","broad");
            (($a[.] - $b[.]) | fabs) < 1e-6)))' "$tmp/out" "$tmp/rows"
"$LOUPE" -d :memory: "$ENC/roberta_cls" -e 'scan --len 8' >"$tmp/out" 2>"$tmp/err"
check "scan table on RoBERTa" grep -q "^layer  head  prev_token  next_token  cls_sink  sep_sink  broad  labels" "$tmp/out"
"$LOUPE" -d :memory: "$ENC/bert_mlm" -e 'scan --len 63' >/dev/null 2>"$tmp/e2"
check "scan --len past the context is refused" grep -q "^error: scan: --len 63 is out of range (2..62): the sequence is \[CLS\], 63 distinct random tokens and \[SEP\]" "$tmp/e2"
"$LOUPE" -d :memory: ../shared/models/stories260K/stories260K.bin -e 'run hi there' -e 'heads --sort broad' >/dev/null 2>"$tmp/e2"
check "heads --sort with an encoder metric on a decoder is refused" grep -q "^error: heads: --sort broad is an encoder's metric" "$tmp/e2"

# tokens marks each token's role and the text of a pair it is in, as the browser's strip does:
# BERT by token type, RoBERTa (no second type) after </s></s>; decoders' rows are as before.
"$LOUPE" -d :memory: -m json "$ENC/bert_mlm" -e 'run the [MASK] --pair a film' -e tokens >"$tmp/out" 2>"$tmp/err"
check "tokens: roles and segments of a BERT pair" is 1 '[.[] | "\(.special // "-")\(.segment)"] | join(" ") == "clsA -A maskA sepA -B -B sepB"'
"$LOUPE" -d :memory: -m json "$ENC/roberta_mlm" -e 'run go --pair no' -e tokens >"$tmp/out" 2>"$tmp/err"
check "tokens: a RoBERTa pair's second text after </s></s>" is 1 '([.[] | .segment] | join("")) == "AAAAABBB" and ([.[] | select(.special == "sep")] | length) == 3'
"$LOUPE" -d :memory: -m json "$(pwd)/../shared/models/stories260K/stories260K.bin" -e 'run Once' -e tokens >"$tmp/out" 2>"$tmp/err"
check "tokens: a decoder's rows keep their columns" is 1 '[.[0] | keys] == [["id","pos","text"]]'

[ "$fails" -eq 0 ] || { echo "$fails failed"; exit 1; }
