#!/bin/sh
# Hostile input and failing output through the real binary: scripts that are not text
# (NUL bytes, /dev/zero, directories, endless lines), -e and -f in the order given, exports
# that fail midway, and token ids edited into the database.
set -u
LOUPE=${LOUPE:-./loupe}
STORIES=../shared/models/stories260K/stories260K.bin
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export XDG_DATA_HOME="$tmp/data"
. tests/e2e/lib/check.sh
# refused NAME PATTERN COMMAND...: within 20 s, exit 1, and one error line matching PATTERN
refused() {
    what=$1 pattern=$2; shift 2
    timeout 20 "$@" >/dev/null 2>"$tmp/e"; rc=$?
    check "$what: exit 1 (got $rc)" test $rc -eq 1
    check "$what: message" grep -q -- "$pattern" "$tmp/e"
    check "$what: one line" test "$(wc -l <"$tmp/e")" -eq 1
}

# A NUL byte in a script would silently cut the line short: refused, naming file and line.
printf 'run --ids 1\nnote before\0after\n' >"$tmp/nul.loupe"
refused "NUL in -f" "^error: $tmp/nul.loupe:2: a NUL byte at column 12" "$LOUPE" -d :memory: "$STORIES" -f "$tmp/nul.loupe"
printf 'run Once\0 upon a time\n' >"$tmp/nul2"
refused "NUL on stdin" "^error: stdin:1: a NUL byte" sh -c "'$LOUPE' -d :memory: '$STORIES' <'$tmp/nul2'"
refused "NUL in source" "nul.loupe:2: a NUL byte" "$LOUPE" -d :memory: "$STORIES" -e "source $tmp/nul.loupe"

# Endless input: refused at once, not read until memory runs out.
refused "-f /dev/zero" "^error: /dev/zero:1: a NUL byte" "$LOUPE" -d :memory: -f /dev/zero
refused "source /dev/zero" "^error: /dev/zero:1: a NUL byte" "$LOUPE" -d :memory: -e 'source /dev/zero'
refused "stdin /dev/zero" "^error: stdin:1: a NUL byte" sh -c "'$LOUPE' -d :memory: </dev/zero"
refused "a line over 1 MiB" "^error: stdin:2: line longer than 1048576 bytes" \
    sh -c "{ echo help; head -c 3000000 /dev/zero | tr '\\0' a; } | '$LOUPE' -d :memory:"
# A line of exactly 1 MiB is still read.
{ printf 'note '; head -c 1048571 /dev/zero | tr '\0' a; echo; } >"$tmp/mib"
"$LOUPE" -d :memory: "$STORIES" -e 'run --ids 1' -f "$tmp/mib" 2>"$tmp/e" >/dev/null
check "a line of 1 MiB is run" test ! -s "$tmp/e"

# Directories are read errors, not empty scripts.
refused "-f DIR" "^error: $tmp:1: cannot read: Is a directory" "$LOUPE" -d :memory: -f "$tmp"
refused "source DIR" "^error: $tmp:1: cannot read: Is a directory" "$LOUPE" -d :memory: -e "source $tmp"

# -e and -f run in the order given.
printf 'run --ids 1,403\n' >"$tmp/run.loupe"
n=$("$LOUPE" -d :memory: -m json "$STORIES" -f "$tmp/run.loupe" -e tokens 2>"$tmp/e" | tail -n 1 | jq length)
check "-f then -e: in that order" test "$n" = 2
n=$("$LOUPE" -d :memory: -m json "$STORIES" -e 'run --ids 1,403,407' -f "$tmp/run.loupe" -e tokens 2>/dev/null | tail -n 1 | jq length)
check "-e, -f, -e: in that order" test "$n" = 2

# export goes through a temporary file: a write that fails midway (a file size limit)
# leaves the old file whole, and no temporary file behind.
out=$tmp/out
mkdir "$out"
"$LOUPE" -d :memory: "$STORIES" -e 'run Once upon a time' -e "export logits $out/l.npy" -e "export logits $out/l.csv" >/dev/null
cp "$out/l.npy" "$tmp/good.npy" && cp "$out/l.csv" "$tmp/good.csv"
(ulimit -f 4; "$LOUPE" -d :memory: "$STORIES" -e 'run Once upon a time there' -e "export logits $out/l.npy" \
    -e "export logits $out/l.csv" >/dev/null 2>"$tmp/e"); rc=$?
check "export over the size limit exits 1" test $rc -eq 1
check "export names the file" grep -q "^error: $out/l.npy: cannot write: File too large" "$tmp/e"
check "old .npy intact" cmp "$out/l.npy" "$tmp/good.npy"
check "old .csv intact" cmp "$out/l.csv" "$tmp/good.csv"
check "no temporary file left" test "$(ls "$out")" = "$(printf 'l.csv\nl.npy')"

# Token ids edited into the database are refused by rerun, not read as other ids.
db=$tmp/ids.db
"$LOUPE" -d "$db" "$STORIES" -e 'run --ids 1,403,407' -e 'run --ids 1,403' -e 'run --ids 1,5' >/dev/null
"$LOUPE" -d "$db" -e "sql --write UPDATE tokens SET token_id = 4294967297 WHERE run_id = 1 AND pos = 1" \
    -e "sql --write UPDATE tokens SET token_id = 'abc' WHERE run_id = 2 AND pos = 1" \
    -e "sql --write UPDATE tokens SET token_id = 600 WHERE run_id = 3 AND pos = 1" >/dev/null
refused "rerun of id 2^32+1" "^error: run 1: the token id at position 1 is '4294967297'" "$LOUPE" -d "$db" "$STORIES" -e 'rerun 1'
refused "rerun of id 'abc'" "^error: run 2: the token id at position 1 is 'abc'" "$LOUPE" -d "$db" "$STORIES" -e 'rerun 2'
refused "rerun of id >= vocab" "^error: rerun: run 3 has token id 600 at position 1, outside" "$LOUPE" -d "$db" "$STORIES" -e 'rerun 3'

echo "$fails failed"
[ "$fails" -eq 0 ]
