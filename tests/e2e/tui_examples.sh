#!/bin/sh
# The examples view (9) on a real terminal (tmux, 80x24) on the bundled model: the empty
# state on a store without datasets; then, after `dataset` on 20 prompts, the head's and
# a neuron's top example as `examples ... --k 2` gives it in json (value, item, the token
# drawn highlighted), moving to the second and Enter opening its item's stored run (the
# strip is that item's tokens, the activations view on its token; no new run recorded),
# resizing, and nothing past 80 columns; c and C cycle the metric ranking a head's examples
# (each the top of `examples head 0.0 --by METRIC`). A dictionary's feature (3, after a
# dataset with the bundled SAE loaded): the feature selected in view 0 shown on coming to
# view 9, its top example, density and samples as `examples feature ID` and the store give
# them, H L u f, Enter opening the item in view 0 on the feature's column, :examples feature
# ID; (4) the lines when no dataset tracked the dictionary, or there is none.
set -u
LOUPE=${LOUPE:-./loupe}
case $LOUPE in /*) ;; *) LOUPE=$(pwd)/$LOUPE ;; esac
M=$(pwd)/models/default
SAE=models/default-sae
TEXT='When Mary and John went to the store, John gave a drink to'
PANE=ex LIMIT=180
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
runs() { "$LOUPE" -d "$tmp/$1" -m csv -e 'sql SELECT count(*) AS n FROM runs' | tail -1 | tr -d '\r'; }
runs_before=$(runs ds.db)
start "'$LOUPE' -d '$tmp/ds.db' --tui '$M' -e 'run $TEXT'"
expect "the browser opens on the dataset's store" 10 "rows: queries, columns: keys"
keys 9
expect "9: the current head's examples, by its strongest key" 5 "head 0.0 by key  dataset 1 items.txt (20 items"
expect_top "head 0.0" "$tmp/head.json"
# at 80 columns the header keeps the unit and its dataset whole; the keys only where they fit
hdr=$(screen | grep "dataset 1 items.txt" | head -n 1)
case "$hdr" in
*"(20 items, 1 of 1)"*"u neuron/head"*"Enter opens"* | *"(20 items, 1 of 1)") ok "80x24: the header whole, its keys whole or left out" ;;
*) fail "80x24: the header whole, its keys whole or left out: '$hdr'" ;;
esac
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
if [ "$(runs ds.db)" = $((runs_before + 1)) ]; then ok "Enter reused the stored run (no new run)"
else fail "Enter reused the stored run ($(runs ds.db) runs, were $runs_before before -e's run)"; fi

# 3. Features: a dataset made with the dictionary loaded tracks every feature.
if "$LOUPE" -d "$tmp/feat.db" "$M" -e "sae load $SAE" -e "dataset $tmp/items.txt --k 5" >"$tmp/out" 2>&1
then ok "dataset of 20 items with the dictionary loaded"
else fail "dataset of 20 items with the dictionary loaded"; sed 's/^/  | /' "$tmp/out"; fi
sql() { "$LOUPE" -d "$tmp/feat.db" -m csv -e "sql $1" | tail -1 | tr -d '\r'; }
fex() { "$LOUPE" -d "$tmp/feat.db" -m json "$M" -e "sae load $SAE" -e "examples feature $1 --k 2" | jq -s '.[1]'; }
fex 390 >"$tmp/f390.json"
fex 389 >"$tmp/f389.json"
fired=$(sql "SELECT sum(count) FROM unit_histograms WHERE unit_kind = 'feature' AND unit = 390 AND bin > 0")
total=$(sql "SELECT sum(count) FROM unit_histograms WHERE unit_kind = 'feature' AND unit = 390")
silent=$(sql "SELECT min(unit) FROM unit_stats WHERE unit_kind = 'feature' AND examples = '[]'")
f4() { printf '%.4f' "$1"; }
runs_before=$(runs feat.db)
start "'$LOUPE' -d '$tmp/feat.db' --tui '$M' -e 'run $TEXT' -e 'sae load $SAE'"
expect "the browser opens with the dictionary" 10 "rows: queries, columns: keys"
keys 9
expect "9 before any feature is chosen: the head" 5 "head 0.0 by key  dataset 1 items.txt"
keys 0 : "feature 390" Enter
keys Escape
expect "view 0 on feature 390" 5 " f390 "
keys 9
expect "from view 0, 9 shows the feature selected there" 5 "feature 390 of blocks.1.resid_pre  dataset 1 items.txt"
expect_top "feature 390" "$tmp/f390.json"
expect "its density: the positions where it fires, from the store" 5 "($fired/$total tokens > 0)"
expect "the quantile samples" 5 "quantile samples"
within_80 "a feature's examples within 80 columns"
keys H
expect "H: the previous feature" 5 "feature 389 of blocks.1.resid_pre  dataset 1"
if [ "$(jq length "$tmp/f389.json")" -gt 0 ]; then expect_top "feature 389" "$tmp/f389.json"
else expect "feature 389 fired on no item: the view says so" 5 "it fired on none of the dataset's items"; fi
keys L u
expect "L then u: back to the head" 5 "head 0.0 by key  dataset 1"
keys f
expect "f: the feature selected in view 0 again" 5 "feature 390 of blocks.1.resid_pre  dataset 1"
expect_top "feature 390 again" "$tmp/f390.json"
keys j
item2=$(jq -r '.[1].item' "$tmp/f390.json") pos2=$(jq -r '.[1].pos' "$tmp/f390.json")
expect "j selects the second example" 5 "#2 item $item2: $pos2 "
keys Enter
text2=$(jq -r '.[1].text' "$tmp/f390.json")
strip2=" $("$LOUPE" -d :memory: -m json "$M" -e "run $text2" -e tokens | jq -s -r '.[1] | map(.text | gsub(" "; "·")) | join(" ")')"
tok2=$(shown "$(jq -r '.[1].token' "$tmp/f390.json")")
expect "Enter: view 0 on the example's token, the feature's column, its value" 10 "token $pos2 $tok2  f390 $(f4 "$(jq -r '.[1].value' "$tmp/f390.json")")  column"
if [ "$(screen | sed -n 2p | sed 's/ *$//')" = "$strip2" ]; then ok "the run shown is item $item2's text"
else fail "the run shown is item $item2's text"; screen | sed -n 2p; echo "  wanted: $strip2"; fi
keys Escape l
# the feature of the column right of f390's, from the status line
status_feature() { screen | sed -n 's/.*  f\([0-9]*\) [0-9.-]*  column [0-9]*\/.*/\1/p' | head -1; }
moved() { next=$(status_feature); [ -n "$next" ] && [ "$next" != 390 ]; }
poll moved 5 x
keys 9
if [ -n "$next" ] && poll shows 5 "feature $next of blocks.1.resid_pre  dataset 1"; then ok "l in view 0, then 9: that feature (f$next)"
else fail "l in view 0, then 9: that feature ('$next')"; screen | sed 's/^/  | /'; fi
keys : "examples feature $silent" Enter
expect ":examples feature $silent: a feature that never fired" 5 "feature $silent of blocks.1.resid_pre  dataset 1"
expect "says so, with its histogram" 5 "it fired on none of the dataset's items"
expect "every token in bin 0" 5 "density 0 (0/$total tokens > 0)"
quit_with "q leaves (features)" 0 q
if [ "$(runs feat.db)" = $((runs_before + 1)) ]; then ok "Enter reused the stored run (no new run)"
else fail "Enter reused the stored run ($(runs feat.db) runs, were $runs_before before -e's run)"; fi

# 4. No dataset tracked the dictionary (ds.db's was made without it), then no dataset at all.
start "'$LOUPE' -d '$tmp/ds.db' --tui '$M' -e 'run $TEXT' -e 'sae load $SAE'"
expect "the browser opens on a store without features" 10 "rows: queries, columns: keys"
keys 0
expect "view 0 selects the strongest feature" 5 "column 1/"
keys 9
expect "9: no dataset tracked the dictionary" 5 "No dataset of this model tracked this dictionary's features"
expect "and how to make one" 5 "run :dataset FILE with the dictionary loaded"
within_80 "the line within 80 columns"
keys u
expect "u: the head's examples of the dataset" 5 "head 0.0 by key  dataset 1"
quit_with "q leaves (no features tracked)" 0 q
start "'$LOUPE' -d '$tmp/empty.db' --tui '$M' -e 'sae load $SAE'"
expect "the browser opens without a run" 10 "No run yet"
keys : "examples feature 3" Enter
expect ":examples feature 3 on a store without datasets" 5 "No dataset examples in this store"
expect "names the command, with the dictionary loaded" 5 ":dataset FILE with the dictionary loaded"
keys f
expect "f with no feature selected in view 0 (no run)" 5 "f: no feature selected in view 0"
quit_with "q leaves (empty)" 0 q

echo "took $(($(date +%s) - began)) s"
[ "$fails" -eq 0 ] && echo "all passed"
[ "$fails" -eq 0 ]
