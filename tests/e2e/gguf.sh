#!/bin/sh
# GGUF files through the binary: info says the weights were dequantised and from what, the
# metadata's tokenizer runs, and broken or unsupported files fail with one "error: FILE: ..."
# line and a non-zero exit.
set -u
BUILD=${BUILD:-build}
LOUPE=${LOUPE:-./loupe}
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export XDG_DATA_HOME="$tmp/data"

. tests/e2e/lib/check.sh

g=tests/fixtures/gguf
"$LOUPE" -d :memory: -m json "$g/llama_gqa_untied.q8_0.gguf" -e info >"$tmp/out" 2>"$tmp/err"
check "Q8_0 file: info says gguf" is 0 '.format == "gguf" and .dtype == "Q8_0" and .arch == "LlamaForCausalLM"'
check "Q8_0 file: info says the weights were dequantised to float32, and from which types" \
    is 0 '.weights | test("dequantised on load from F32, Q8_0, F16 to float32")'
"$LOUPE" -d :memory: -m json "$g/llama_gqa_untied.f32.gguf" -e 'run hello world' -e tokens >"$tmp/out" 2>"$tmp/err"
check "llama tokenizer from the metadata: BOS, then the reference's pieces" \
    is 1 '[.[].id] == [1, 23, 26, 10, 14] and .[1].text == " hello"'
"$LOUPE" -d :memory: -m json "$g/gpt2.f32.gguf" -e 'run hello world' -e tokens >"$tmp/out" 2>"$tmp/err"
check "gpt2 tokenizer from the metadata" is 1 '[.[].id] == [17, 22]'
"$LOUPE" -d :memory: -m json "$g/gemma2.f32.gguf" -e info -e 'run hello world' -e tokens >"$tmp/out" 2>"$tmp/err"
check "gemma2 file: info shows llama.cpp's Gemma 2 (even layers slide, derived scale, caps)" is 0 \
    '.arch == "Gemma2ForCausalLM" and .sliding_layers == "0,2" and .sliding_window == 3 and .tied_unembed
     and (.attn_scale - 0.353553385 | fabs) < 1e-7 and .attn_softcap == 3 and .final_softcap == 4'
check "gemma2 tokenizer: no space prefix (tokenizer.ggml.add_space_prefix false)" \
    is 2 '[.[].id] == [1, 19, 21, 26, 10, 14] and .[1].text == "he"'
"$LOUPE" -d :memory: -m json "$g/gpt2.f16.gguf" -e info >"$tmp/out" 2>"$tmp/err"
check "a file without a tokenizer loads without one" is 0 '.tokenizer == null and .dtype == "F16"'
"$LOUPE" -d :memory: -m json "$g/neox_parallel.f32.gguf" -e info -e 'run hello world' -e tokens -e 'dla' \
    >"$tmp/out" 2>"$tmp/err"
check "gptneox file: parallel blocks, a quarter of each head rotated" is 0 \
    '.arch == "GPTNeoXForCausalLM" and .blocks == "parallel" and .rope_dims == 4 and .format == "gguf"'
check "gptneox tokenizer (tokenizer.ggml.pre olmo): GPT-2's split" is 2 '[.[].id] == [17, 22]'
"$LOUPE" -d :memory: -m json "$g/bert_mlm.f32.gguf" -e info -e 'run the cat sat on the [MASK].' -e tokens \
    >"$tmp/out" 2>"$tmp/err"
check "bert file: a BertModel, bidirectional" is 0 '.arch == "BertModel" and .attention == "bidirectional"'
check "bert tokenizer: [CLS] A [SEP], [MASK] whole" is 2 \
    '[.[].text] == ["[CLS]", "the", "cat", "sat", "on", "the", "[MASK]", ".", "[SEP]"]'
"$LOUPE" -d :memory: -m json "$g/llama_split.f32-00001-of-00003.gguf" -e 'run hello</s>world' -e tokens \
    >"$tmp/out" 2>"$tmp/err"
check "split file and specials in text: </s> matched whole, each stretch with its prefix" \
    is 1 '[.[].id] == [1, 23, 2, 26, 10, 14] and .[3].text == " wor"'

# broken files: one error line naming the file, exit status 1
head -c 200 "$g/gpt2.f32.gguf" >"$tmp/cut.gguf"
printf 'GGUF\001\000\000\000' >"$tmp/v1.gguf"
printf 'not a model' >"$tmp/text.gguf"
for f in cut v1 text; do
    "$LOUPE" -d :memory: "$tmp/$f.gguf" -e info >"$tmp/stdout" 2>"$tmp/stderr"
    rc=$?
    check "$f.gguf: fails" test "$rc" -ne 0
    check "$f.gguf: one line, error: FILE: ..." test "$(wc -l <"$tmp/stderr")" -eq 1
    check "$f.gguf: the line names the file" grep -q "^error: $tmp/$f.gguf: " "$tmp/stderr"
done
"$LOUPE" -d :memory: "$tmp/cut.gguf" -e info 2>&1 | grep -q 'truncated or corrupt GGUF' && ok=1 || ok=0
check "cut.gguf: says it may be truncated" test $ok -eq 1

echo "$fails failed"
[ "$fails" -eq 0 ]
