#!/bin/sh
# The real binary on real models: JSON shapes from DESIGN.md, exit statuses, error lines,
# scripts from -f and stdin, and the stories260K known text.
set -u
BUILD=${BUILD:-build}
LOUPE=${LOUPE:-./loupe}
STORIES=../shared/models/stories260K/stories260K.bin
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export XDG_DATA_HOME="$tmp/data"  # the default database goes there, not into $HOME

. tests/e2e/lib/check.sh
json() { "$LOUPE" -m json "$@"; }

# stories260K: greedy from BOS gives the README's ids and text.
want="403,407,261,378,432,383,286,261,376,298,315,421,395,317,426,338,401,396,267,337,410,408,419,292,411,322"
got=$(json "$STORIES" -e 'run --ids 1' -e 'generate 26' | tail -n 1 | jq -r '.ids | map(tostring) | join(",")')
check "stories260K greedy ids" test "$got" = "$want"
# (The README's sentence runs five tokens past its 26 ids: " the park.")
text=$(json "$STORIES" -e 'run --ids 1' -e 'generate 31' | tail -n 1 | jq -r .text)
check "stories260K greedy text" test "$text" = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park."

# JSON shapes.
json "$STORIES" -e 'run Once upon a time' -e tokens -e 'top 3' -e 'logits --pos 2' -e 'attn 1 2' -e info >"$tmp/out"
shape() { jq -e -s "$1" "$tmp/out" >/dev/null; }
check "run shape" shape '.[0] | .n_tokens==5 and .ids==[1,403,407,261,378] and .text=="Once upon a time" and .next.token==","'
check "tokens shape" shape '.[1] | length==5 and .[0]=={"pos":0,"id":1,"text":"\n<s>\n"} and .[1].text==" Once"'
check "top shape" shape '.[2] | length==3 and .[0].rank==1 and .[0].token=="," and .[0].prob>0.9 and (.[0].logit|type)=="number" and .[0].id==432'
check "logits shape" shape '.[3] | .pos==2 and (.logits|length)==512'
check "attn shape, rows sum to 1, causal" shape '.[4] | .layer==1 and .head==2 and (.tokens|length)==5 and (.pattern|length)==5 and ([.pattern[] | add] | all(. > 0.9999 and . < 1.0001)) and .pattern[0][1]==0'
check "info fields" shape '.[5] | .arch=="llama2.c" and .layers==5 and .heads==8 and .kv_heads==4 and .d_model==64 and .vocab==512 and .params==260032 and .dtype=="F32"'

# jsonl: one object per line for list results.
n=$("$LOUPE" -m jsonl "$STORIES" -e 'run --ids 1,403,407' -e tokens | tail -n 3 | jq -c . | wc -l)
check "jsonl rows" test "$n" -eq 3

# csv quotes per RFC 4180.
"$LOUPE" -m csv "$STORIES" -e 'run Hi, "you"' -e 'top 1' >"$tmp/csv"
check "csv header" grep -q '^rank,id,token,prob,logit' "$tmp/csv"

# Errors: one line on stderr, nothing on stdout, exit 1; bad usage exits 2.
"$LOUPE" "$STORIES" -e 'atn 0 0' >"$tmp/o" 2>"$tmp/e"; rc=$?
check "unknown command exits 1" test $rc -eq 1
check "did-you-mean" grep -q "^error: unknown command 'atn' (did you mean 'attn'?)" "$tmp/e"
check "errors stay off stdout" test ! -s "$tmp/o"
"$LOUPE" "$STORIES" -e 'run --ids 1' -e 'attn 9 0' 2>"$tmp/e" >/dev/null; rc=$?
check "layer out of range exits 1" test $rc -eq 1
check "layer range message" grep -q '^error: layer 9 is out of range' "$tmp/e"
"$LOUPE" --bogus 2>"$tmp/e"; rc=$?
check "bad option exits 2" test $rc -eq 2
"$LOUPE" /nonexistent/model -e info 2>"$tmp/e"; rc=$?
check "missing model exits 1" test $rc -eq 1
check "missing model names the path" grep -q '^error: /nonexistent/model' "$tmp/e"
check "one error line" test "$(wc -l <"$tmp/e")" -eq 1
"$LOUPE" -e info 2>"$tmp/e"; rc=$?
check "no model: clear message" grep -q 'no model loaded' "$tmp/e"

# A prompt longer than the context is refused, not truncated.
long=$(yes 'once upon a time' | head -n 300 | tr '\n' ' ')
"$LOUPE" "$STORIES" -e "run $long" 2>"$tmp/e" >/dev/null; rc=$?
check "too long prompt exits 1" test $rc -eq 1
check "too long prompt message" grep -q 'exceed the model.s context of 512' "$tmp/e"

# Scripts: -f with comments, stdin, --bail.
printf '# a comment\nrun --ids 1,403\n\ntokens\n' >"$tmp/script"
check "-f script" sh -c "'$LOUPE' -m json '$STORIES' -f '$tmp/script' | tail -n 1 | jq -e 'length==2'"
check "stdin script" sh -c "printf 'run --ids 1\ntop 2\n' | '$LOUPE' -m json '$STORIES' | tail -n 1 | jq -e 'length==2'"
printf 'bogus\nrun --ids 1\n' | "$LOUPE" "$STORIES" --bail >"$tmp/o" 2>"$tmp/e"; rc=$?
check "--bail stops at the first failure" test $rc -eq 1 -a ! -s "$tmp/o"
check "-f error names file and line" sh -c "printf 'info\nnope\n' >'$tmp/s2'; '$LOUPE' '$STORIES' -f '$tmp/s2' 2>&1 >/dev/null | grep -q 's2:2: unknown command'"

# source nests, and a file that sources itself stops at the depth limit.
printf 'run --ids 1,403\n' >"$tmp/inner.loupe"
printf 'source %s\ntokens\n' "$tmp/inner.loupe" >"$tmp/outer.loupe"
check "source nests" sh -c "'$LOUPE' -m json '$STORIES' -e 'source $tmp/outer.loupe' | tail -n 1 | jq -e 'length==2'"
printf 'source %s\n' "$tmp/self.loupe" >"$tmp/self.loupe"
"$LOUPE" "$STORIES" -e "source $tmp/self.loupe" 2>"$tmp/e" >/dev/null; rc=$?
check "self-sourcing stops" sh -c "test $rc -eq 1 && grep -q 'nested more than 16 deep' '$tmp/e'"

# Generation is reproducible for a seed.
a=$(json "$STORIES" -e 'run --ids 1' -e 'generate 20 --temp 1 --top-k 40 --seed 7' | tail -n 1)
b=$(json "$STORIES" -e 'run --ids 1' -e 'generate 20 --temp 1 --top-k 40 --seed 7' | tail -n 1)
check "seeded sampling reproducible" test "$a" = "$b"

# A GPT-2 directory with the real GPT-2 tokenizer: text in, the tokenizer's ids out.
"$BUILD/tools/mkmodel" "$tmp/g" --arch gpt2 --vocab 50257 --d-model 16 --heads 2 --layers 1 --ctx 32 --gpt2-tokenizer ../shared/tokenizers/gpt2
ids=$(json "$tmp/g" -e 'run Hello world' -e tokens | tail -n 1 | jq -c '[.[].id]')
check "gpt2 tokenizer via run" test "$ids" = "[15496,995]"

# Without MODEL, an interactive session opens $LOUPE_MODEL (else models/default); a script does not.
arch=$(LOUPE_MODEL=$STORIES "$LOUPE" -m json -i -e info </dev/null 2>/dev/null | jq -r .arch)
check "interactive without MODEL opens \$LOUPE_MODEL" test "$arch" = "llama2.c"
check "a script without MODEL loads none" sh -c "! LOUPE_MODEL=$STORIES $LOUPE -e info 2>/dev/null"

echo "$fails failed"
[ "$fails" -eq 0 ]
