# Shared by the end-to-end scripts that check loupe's output: pass/fail bookkeeping on the
# sourcing script's $tmp (a private directory) and $fails (the count), which it sets first.
# Sourced, not run.

# check NAME COMMAND...: the command must succeed; its stderr is shown when it does not
check() {
    name=$1; shift
    if "$@" >/dev/null 2>"$tmp/err"; then echo "ok   $name"; else echo "FAIL $name"; cat "$tmp/err"; fails=$((fails + 1)); fi
}
# is N JQ: the N-th JSON value (from 0) of $tmp/out satisfies JQ
is() { jq -e -s ".[$1] | $2" "$tmp/out" >/dev/null; }
