#!/bin/sh
# The examples view (9) on a real terminal (tmux, 80x24) on the bundled model: the empty
# state on a store without datasets; then, after `dataset` on 20 prompts, the head's and
# a neuron's top example as `examples ... --k 2` gives it in json (value, item, the token
# drawn highlighted), moving to the second and Enter opening its item's stored run (the
# strip is that item's tokens, the activations view on its token; no new run recorded),
# resizing, and nothing past 80 columns; c and C cycle the metric ranking a head's examples
# (each the top of `examples head 0.0 --by METRIC`).
set -u
LOUPE=${LOUPE:-./loupe}
case $LOUPE in /*) ;; *) LOUPE=$(pwd)/$LOUPE ;; esac
M=$(pwd)/models/default
TEXT='When Mary and John went to the store, John gave a drink to'
PANE=ex LIMIT=90
. tests/e2e/lib/tmux.sh
start() { start_pane 80 24 "LANG=C.UTF-8 TERM=xterm-256color LOUPE_HISTORY='$tmp/hist' $*"; }
# The text drawn highlighted on screen row $1 (the selected colour's background, 221 on
# 256 colours), as far as the next change of style.
highlight() { t capture-pane -e -p -t ex | sed -n "$1p" | sed -n 's/.*48;5;221m\([^\x1b]*\).*/\1/p'; }
# expect_top NAME JSON: the view's first example row (screen row 4) is the json's first example
expect_top() {
    v=$(printf '%.4g' "$(jq -r '.[0].value' "$2")") item=$(jq -r '.[0].item' "$2")
    tok=$(shown "$(jq -r '.[0].token' "$2")")
    if poll shows 5 "  1 $(printf '%8s' "$v") #$item "; then ok "$1: value $v of item $item"
    else fail "$1: value $v of item $item"; screen | sed 's/^/  | /'; fi
    if [ "$(highlight 4)" = "$tok" ]; then ok "$1: its token '$tok' highlighted"
    else fail "$1: token '$tok' highlighted (got '$(highlight 4)')"; t capture-pane -e -p -t ex | sed -n 4p | cat -v; fi
}

# 20 prompts.
for a in Mary John Anna Tom Lily; do for p in store park school garden; do
    echo "When $a and Kate went to the $p, Kate gave a drink to" >>"$tmp/items.txt"
done; done

# 1. A store without datasets: the view says so and names the command.
start "'$LOUPE' -d '$tmp/empty.db' --tui '$M' -e 'run $TEXT'"
expect "the browser opens" 10 "rows: queries, columns: keys"
keys 9
expect "9: no dataset examples in this store" 5 "No dataset examples in this store"
expect "and the command that makes them" 5 ":dataset FILE"
within_80 "the empty state within 80 columns"
quit_with "q leaves (no datasets)" 0 q

# 2. With a dataset.
if "$LOUPE" -d "$tmp/ds.db" "$M" -e "dataset $tmp/items.txt --k 5" >"$tmp/out" 2>&1; then ok "dataset of 20 items"
else fail "dataset of 20 items"; sed 's/^/  | /' "$tmp/out"; fi
"$LOUPE" -d "$tmp/ds.db" -m json "$M" -e 'examples head 0.0 --k 2' >"$tmp/head.json"
"$LOUPE" -d "$tmp/ds.db" -m json "$M" -e 'examples neuron 1.7 --k 2' >"$tmp/neuron.json"
"$LOUPE" -d "$tmp/ds.db" -m json "$M" -e 'examples head 0.0 --by entropy --k 2' >"$tmp/entropy.json"
"$LOUPE" -d "$tmp/ds.db" -m json "$M" -e 'examples head 0.0 --by max_attn --k 2' >"$tmp/max_attn.json"
runs() { "$LOUPE" -d "$tmp/ds.db" -m csv -e 'sql SELECT count(*) AS n FROM runs' | tail -1 | tr -d '\r'; }
runs_before=$(runs)
start "'$LOUPE' -d '$tmp/ds.db' --tui '$M' -e 'run $TEXT'"
expect "the browser opens on the dataset's store" 10 "rows: queries, columns: keys"
keys 9
expect "9: the current head's examples, by its strongest key" 5 "head 0.0 by key  dataset 1 items.txt (20 items"
expect_top "head 0.0" "$tmp/head.json"
# c cycles the metric ranking a head's examples (key, entropy, prev_token, ..., max_attn), C back
keys c
expect "c: the head's examples by entropy" 5 "head 0.0 by entropy  dataset 1"
expect_top "head 0.0 by entropy" "$tmp/entropy.json"
keys C C
expect "C C: back past its key, round to max_attn" 5 "head 0.0 by max_attn  dataset 1"
expect_top "head 0.0 by max_attn" "$tmp/max_attn.json"
keys c
expect "c: round to its key again" 5 "head 0.0 by key  dataset 1"
expect_top "head 0.0 by key again" "$tmp/head.json"
keys : "examples neuron 1.7" Enter
expect ":examples neuron 1.7 shows that neuron here" 5 "neuron 1.7  dataset 1"
expect_top "neuron 1.7" "$tmp/neuron.json"
expect "the quantile samples" 5 "quantile samples"
expect "the density histogram" 5 "tokens > 0)"
keys j
item2=$(jq -r '.[1].item' "$tmp/neuron.json") pos2=$(jq -r '.[1].pos' "$tmp/neuron.json")
expect "j selects the second example" 5 "#2 item $item2: $pos2 "
t resize-window -t ex -x 120 -y 40
if poll size_is 5 120x40; then ok "resized to 120x40"; else fail "resize to 120x40"; fi
expect "redrawn wider, the title in full" 5 "9 Examples"
expect "the selection kept" 5 "#2 item $item2: $pos2 "
t resize-window -t ex -x 80 -y 24
if poll size_is 5 80x24; then ok "back to 80x24"; else fail "resize to 80x24"; fi
expect "redrawn at 80 columns" 5 "neuron 1.7  dataset 1"
within_80 "the examples view within 80 columns"
keys Enter
text2=$(jq -r '.[1].text' "$tmp/neuron.json")
strip2=" $("$LOUPE" -d :memory: -m json "$M" -e "run $text2" -e tokens | jq -s -r '.[1] | map(.text | gsub(" "; "·")) | join(" ")')"
tok2=$(shown "$(jq -r '.[1].token' "$tmp/neuron.json")")
expect "Enter: the activations view on the example's token" 10 "token $pos2 $tok2 "
expect "with the neuron's value there, the example's" 5 "neuron 7 $(printf '%+.4f' "$(jq -r '.[1].value' "$tmp/neuron.json")") "
if [ "$(screen | sed -n 2p | sed 's/ *$//')" = "$strip2" ]; then ok "the run shown is item $item2's text"
else fail "the run shown is item $item2's text"; screen | sed -n 2p; echo "  wanted: $strip2"; fi
within_80 "the activations view within 80 columns"
quit_with "q leaves" 0 q
# one new run: -e's, none for Enter
if [ "$(runs)" = $((runs_before + 1)) ]; then ok "Enter reused the stored run (no new run)"
else fail "Enter reused the stored run ($(runs) runs, were $runs_before before -e's run)"; fi

echo "took $(($(date +%s) - began)) s"
[ "$fails" -eq 0 ] && echo "all passed"
[ "$fails" -eq 0 ]
