#!/bin/sh
# The features view (0) on a real terminal (tmux, 80x24) on the bundled model and its
# dictionary: the one-line empty state, `a` typing `sae load `, then the heat map's columns
# (the features that fire over the run by their largest activation, as `features` gives
# them), the selected cell's activation in the status line, and the side panel's peak, logit
# effects and neighbours as `feature ID` prints them; ← → and ↑ ↓ moving the cursor, Enter
# printing `feature ID`, a second dictionary and d, `:feature ID` selecting that feature's
# column, resizing, nothing past 80 columns.
set -u
LOUPE=${LOUPE:-./loupe}
case $LOUPE in /*) ;; *) LOUPE=$(pwd)/$LOUPE ;; esac
M=$(pwd)/models/default
SAE=models/default-sae
TEXT='When Mary and John went to the store, John gave a drink to'
PANE=feat LIMIT=90
. tests/e2e/lib/tmux.sh
command -v jq >/dev/null || { echo "FAIL jq is not installed"; exit 1; }
export LC_NUMERIC=C
start() { start_pane 80 24 "LANG=C.UTF-8 TERM=xterm-256color LOUPE_HISTORY='$tmp/hist' $*"; }
f4() { printf '%.4f' "$1"; }

# What the commands print for the same run.
cli() { "$LOUPE" -d :memory: -m json "$M" -e "run $TEXT" -e "sae load $SAE" "$@" 2>&1 | tail -n 1; }
cli -e 'features --k 512' >"$tmp/features.json"
# the features that fire over the run, by their largest activation, ties by the smaller id
jq -c '[.[] | .features[]] | group_by(.id) | map({id: .[0].id, peak: (map(.act) | max)})
       | sort_by(-.peak, .id)' "$tmp/features.json" >"$tmp/ranked.json"
n_active=$(jq length "$tmp/ranked.json")
id1=$(jq '.[0].id' "$tmp/ranked.json") id2=$(jq '.[1].id' "$tmp/ranked.json")
cli -e "feature $id1" >"$tmp/f1.json"
cli -e "feature $id2" >"$tmp/f2.json"
id3=$(jq '.[2].id' "$tmp/ranked.json")
cli -e "feature $id3" >"$tmp/f3.json"
T=$(jq '.acts | length' "$tmp/f1.json") last=$(($(jq '.acts | length' "$tmp/f1.json") - 1))
if [ "$n_active" -gt 7 ] && [ "$T" = 14 ]; then ok "features and feature on the run ($n_active features fire)"
else fail "features and feature on the run ($n_active features, $T tokens)"; fi
# expect_feature NAME JSON: the panel shows the feature's peak, its first promoted and
# suppressed tokens and its nearest feature, as `feature ID` prints them
expect_feature() {
    id=$(jq '.feature' "$2") pos=$(jq '.logits.norm_scale_frozen_at_pos' "$2")
    peak=$(jq "[.acts[].act] | max" "$2")
    expect "$1: f$id's peak, where" 5 "f$id  peak $(f4 "$peak") at $pos "
    for part in promoted suppressed; do
        tok=$(shown "$(jq -r ".logits.$part[0].token" "$2")") v=$(f4 "$(jq ".logits.$part[0].effect" "$2")")
        expect_line "$1: $part first, $tok $v" " $tok $v"
    done
    expect_line "$1: nearest" " f$(jq '.nearest[0].id' "$2") $(f4 "$(jq '.nearest[0].cos' "$2")")"
}
# expect_line NAME TEXT: a line of the pane, its runs of blanks made one, ends with TEXT
squeezed() { screen | sed 's/  */ /g; s/ $//'; }
ends_with() { squeezed | T=$1 awk 'substr($0, length($0) - length(ENVIRON["T"]) + 1) == ENVIRON["T"] { f = 1 } END { exit !f }'; }
has() { squeezed | grep -qF -- "$1"; }
expect_line() { if poll ends_with 5 "$2"; then ok "$1"; else fail "$1 (no line ending '$2')"; screen | sed 's/^/  | /'; fi; }

start "'$LOUPE' -d '$tmp/db' --tui '$M' -e 'run $TEXT'"
expect "the browser opens" 10 "rows: queries, columns: keys"
keys 0
expect "0: no dictionary, and the command that loads one" 5 "No dictionary loaded: :sae load PATH"
within_80 "the empty state within 80 columns"
keys a
expect "a types 'sae load ' on the command line" 5 ":sae load "
keys "$SAE" Enter
expect "the dictionary loads" 10 "sae load $SAE: "
keys Escape
expect "its site and how many of its features fire" 5 "blocks.1.resid_pre  $n_active of 512 fire"
header=$(jq -r '.[0:7] | map(.id | tostring | (" " * (4 - length)) + .) | join(" ")' "$tmp/ranked.json")
expect "the columns: the strongest seven features by peak" 5 "feature $header"
pos=$(jq '.logits.norm_scale_frozen_at_pos' "$tmp/f1.json")
cell="$pos $(shown "$(jq -r ".acts[$pos].token" "$tmp/f1.json")") $(printf '%.2f' "$(jq ".acts[$pos].act" "$tmp/f1.json")") "
if poll has 5 "$cell"; then ok "the strongest cell: token $pos, its number in the first column"
else fail "the strongest cell: '$cell'"; screen | sed 's/^/  | /'; fi
act=$(f4 "$(jq ".acts[$last].act" "$tmp/f1.json")")
expect "the cursor: the last token, the strongest feature, its activation" 5 "token $last ·to  f$id1 $act  column 1/$n_active"
expect_feature "f$id1" "$tmp/f1.json"
keys l
act=$(f4 "$(jq ".acts[$last].act" "$tmp/f2.json")")
expect "l: the next feature" 5 "token $last ·to  f$id2 $act  column 2/$n_active"
expect_feature "f$id2" "$tmp/f2.json"
keys Up
act=$(f4 "$(jq ".acts[$((last - 1))].act" "$tmp/f2.json")")
expect "Up: the token before" 5 "token $((last - 1)) ·drink  f$id2 $act"
keys Enter
expect "Enter prints feature ID in the pane" 5 "feature $id2 --sae \"blocks.1.resid_pre\": "
expect "its table" 5 "promotes"
keys Escape
t resize-window -t feat -x 120 -y 40
if poll size_is 5 120x40; then ok "resized to 120x40"; else fail "resize to 120x40"; fi
expect "redrawn wider, the title in full" 5 "0 Features"
header=$(jq -r '.[0:10] | map(.id | tostring | (" " * (4 - length)) + .) | join(" ")' "$tmp/ranked.json")
expect "ten columns" 5 "feature $header"
tok=$(shown "$(jq -r '.logits.promoted[9].token' "$tmp/f2.json")") v=$(f4 "$(jq '.logits.promoted[9].effect' "$tmp/f2.json")")
expect_line "the tenth promoted token, $tok $v" " $tok $v"
t resize-window -t feat -x 80 -y 24
if poll size_is 5 80x24; then ok "back to 80x24"; else fail "resize to 80x24"; fi
expect "the selection kept" 5 "token $((last - 1)) ·drink  f$id2 "
within_80 "the features view within 80 columns"
keys : "sae load tests/fixtures/sae/saelens_jumprelu --name jr" Enter
keys Escape
expect "a second dictionary is shown once loaded" 5 "jr (blocks.1.resid_pre)  [2/2, d: next]"
keys d
expect "d: the first again" 5 "blocks.1.resid_pre  [1/2, d: next]"
within_80 "two dictionaries within 80 columns"
keys : "feature $id3 --sae blocks.1.resid_pre" Enter
expect ":feature ID prints its table" 5 "feature $id3 --sae blocks.1.resid_pre: "
keys Escape
act=$(f4 "$(jq ".acts[$((last - 1))].act" "$tmp/f3.json")")
expect ":feature ID selects its column" 5 "token $((last - 1)) ·drink  f$id3 $act  column 3/$n_active"
keys : "feature 2" Enter
keys Escape
expect ":feature ID without --sae: the last loaded, jr" 5 "jr (blocks.1.resid_pre)  [2/2, d: next]"
expect "its feature 2 selected" 5 "  f2 "
quit_with "q leaves" 0 q

echo "took $(($(date +%s) - began)) s"
[ "$fails" -eq 0 ] && echo "all passed"
[ "$fails" -eq 0 ]
