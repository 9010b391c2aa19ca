#!/bin/sh
# The browser on a real terminal (tmux, private socket, 120x40) on stories260K: opening with
# -e, every view, layer/head/token keys, the help, resizing (and a too-small window), the
# model view's thumbnails at 80x24 and 160x48 and its Enter into the attention view, a
# command from `:` with its output, an error, a note seen in the findings view and in the
# store, cancelling a long command with Esc and Ctrl-C, NO_COLOR shading, `tui` from the
# REPL and back, the `:` history shared with the REPL's file, an encoder-decoder's run (both
# token lines, cross-attention, the attention keys; its attribution on both lines, its scan
# per attention, notes that say their attention), and quitting.
set -u
BUILD=${BUILD:-build}
LOUPE=${LOUPE:-./loupe}
case $LOUPE in /*) ;; *) LOUPE=$(pwd)/$LOUPE ;; esac
STORIES=$(pwd)/../shared/models/stories260K/stories260K.bin
TEXT='Once upon a time, Lily found a ball. Lily liked the ball.'
# LIMIT caps the whole script (so a broken build fails it quickly): about 40 s alone, it
# passed 100 s under make check beside two training runs and builds (load 6).
PANE=tui LIMIT=300
. tests/e2e/lib/tmux.sh
# start ARGS...: a command in a fresh 120x40 pane; its exit status lands in $tmp/status
start() { start_pane 120 40 "LANG=C.UTF-8 LOUPE_HISTORY='$tmp/hist' $*"; }

# 1. Open on a run (as make run does), every view, keys, help, resize, `:`, a note, the
# token search (/ n g G), `:attn L H` opening its view, quit.
start "'$LOUPE' -d '$tmp/db' --tui '$STORIES' -e 'run $TEXT'"
expect "opens on the attention view" 10 "1 Attention"
expect "the status line names the cursor's tokens and value" 5 "query 20 . "
expect "the strip shows the run's tokens" 5 "·Once ·upon ·a ·time , ·Lily"
for v in "2 Heads" "3 Activations" "4 Attributions" "5 Logit lens" "6 Findings" "7 Patching" "8 Model view" "9 Examples" \
    "0 Features"; do
    keys "${v%% *}"
    expect "view $v" 5 "$v"
    [ "$v" = "5 Logit lens" ] && expect "the lens shows its rows" 5 " emb "
done
keys 0 Tab
expect "Tab wraps to the first view" 5 "1 Attention"
keys ']' '}' '}'
expect "] and } change layer and head" 5 "L1 H2 "
keys h h
expect "h moves the token (the query row)" 5 "query 18 "
keys Left
expect "Left moves it too" 5 "query 17 "
keys 2
expect "the heads grid" 5 "colour: prev_token"
keys c Enter
expect "Enter on a head opens its pattern" 5 "1 Attention"
keys '?'
expect "? shows the help from the key table" 5 "Keys (from the key table)"
expect "the help lists the global keys" 5 "previous layer"
keys q
expect_gone "q closes the help" 5 "Keys (from the key table)"
t resize-window -t tui -x 80 -y 24
if poll size_is 5 80x24; then ok "window resized to 80x24"; else fail "resize to 80x24"; fi
expect "redrawn at 80 columns" 5 "L1 H2"
if [ "$(screen | LC_ALL=C.UTF-8 wc -L)" -le 80 ]; then
    ok "nothing drawn past 80 columns"; else fail "lines past 80 columns"; fi
t resize-window -t tui -x 30 -y 8
expect "a tiny window gets a message" 5 "Terminal too small"
t resize-window -t tui -x 120 -y 40
expect "back to full size" 5 "1 Attention"
expect_gone "the message goes" 5 "Terminal too small"
keys : "tok" Tab Enter
expect "a command from : shows its output" 5 "output: 23 lines"
expect "the output is the command's table" 5 "403  ·Once"
keys o
expect_gone "o hides the output" 5 "output: 23 lines"
if "$LOUPE" -d :memory: -e 'help attr' >/dev/null 2>&1; then # the attribution commands are there
    keys : "attr ig" Enter 4
    expect "after :attr ig the attributions view shows it" 10 "[1/1] ig  target"
    expect "with its completeness delta" 5 "delta "
    keys 1
    expect "back to the attention view" 5 "1 Attention"
fi
keys : "atn 0 0" Enter
expect "an error goes to the message line" 5 "error: unknown command 'atn' (did you mean 'attn'?)"
keys : Up
expect "Up on the : line recalls the history" 5 ":atn 0 0"
keys Escape
keys m
expect "m asks for the note" 5 "note:"
keys "induction candidate «日本»" Enter
expect "the note is written" 5 "finding written"
keys 6
expect "the findings view lists it" 5 "induction candidate «日本»"
expect "with where it points" 5 "L1 H2 @17"
keys 1 / "Lily" Enter
expect "/ finds a token (wrapping round)" 5 "query 6 ·Lily"
keys n
expect "n goes to the next match" 5 "query 14 ·Lily"
keys g
expect "g goes to the first token" 5 "query 0 "
keys G
expect "G goes to the last token" 5 "query 20 "
keys 2 : "attn 0 3" Enter
expect ":attn L H shows the head in the attention view" 5 "attn 0 3: shown in view 1"
expect "on that head" 5 "L0 H3  query 20"
quit_with "q leaves (status 1: one command failed, as at the prompt)" 1 q
if "$LOUPE" -d "$tmp/db" -m csv -e 'sql SELECT text, layer, head, pos FROM findings' 2>&1 |
    grep -qF 'induction candidate «日本»,1,2,17'; then ok "the finding is in the store"
else fail "the finding is in the store"; "$LOUPE" -d "$tmp/db" -e 'sql SELECT * FROM findings' 2>&1 | sed 's/^/  | /'; fi
if grep -q '^tokens *$' "$tmp/hist" && grep -qx 'atn 0 0' "$tmp/hist"; then ok ": lines go to the REPL's history file"
else fail ": lines go to the REPL's history file"; sed 's/^/  | /' "$tmp/hist" 2>/dev/null; fi

# 1b. The model view (8): every layer x head a thumbnail, at 120x40, 80x24 and 160x48; the
# cursor moves with the arrows and hjkl, and Enter zooms into the attention view.
# layers_heads: every layer's label down the left and every head's along the top.
layers_heads() {
    s=$(screen)
    for l in 0 1 2 3 4; do printf '%s\n' "$s" | grep -Eq "^L$l( |\$)" || return 1; done
    for h in 0 1 2 3 4 5 6 7; do printf '%s\n' "$s" | sed -n 4p | grep -q "H$h" || return 1; done
}
start "'$LOUPE' -d :memory: --tui '$STORIES' -e 'run $TEXT'"
expect "opens for the model view" 10 "1 Attention"
keys 8
expect "8 opens the model view" 5 "8 Model view"
expect "with its legend" 5 "max-pooled: a cell is the largest of up to "
if poll layers_heads 5 x; then ok "5 layers x 8 heads labelled"; else fail "5 layers x 8 heads labelled"; screen | sed 's/^/  | /'; fi
keys j l Right
expect "j l Right move the cursor (the title bar follows)" 5 "L1 H2 "
expect "the status line names the head and the token's strongest key" 5 "L1 H2  query 20 . → strongest key"
keys Enter
expect "Enter zooms into the head" 5 "1 Attention"
expect "on the same layer and head" 5 "L1 H2  query 20 . → key"
keys 8
t resize-window -t tui -x 80 -y 24
if poll size_is 5 80x24; then ok "model view at 80x24"; else fail "resize to 80x24"; fi
if poll layers_heads 5 x; then ok "every thumbnail at 80x24"; else fail "every thumbnail at 80x24"; screen | sed 's/^/  | /'; fi
if [ "$(screen | LC_ALL=C.UTF-8 wc -L)" -le 80 ]; then ok "the model view stays within 80 columns"
else fail "the model view stays within 80 columns"; fi
if screen | head -1 | grep -q " 1 attn 2 heads 3 acts 4 attr 5 lens 6 notes 7 patch 8 model 9 ex 0 feat .*L1 H2"; then
    ok "the title bar lists every view at 80 columns (the current one by its name)"
else fail "the title bar lists every view at 80 columns"; screen | head -1 | sed 's/^/  | /'; fi
t resize-window -t tui -x 160 -y 48
if poll size_is 5 160x48; then ok "model view at 160x48"; else fail "resize to 160x48"; fi
expect "larger thumbnails pool fewer tokens" 5 "up to 3 queries × 2 keys"
if poll layers_heads 5 x; then ok "every thumbnail at 160x48"; else fail "every thumbnail at 160x48"; screen | sed 's/^/  | /'; fi
keys Up h
expect "Up h move back" 5 "L0 H1 "
quit_with "q leaves the model view" 0 q

# 2. A long command shows progress and Esc or Ctrl-C cancel it; the browser goes on.
mkmodel="$BUILD/tools/mkmodel"
[ -x "$mkmodel" ] || make --no-print-directory "$mkmodel" >/dev/null 2>&1
if "$mkmodel" "$tmp/big" --arch llama --layers 8 --d-model 512 --heads 8 --vocab 512 --ctx 4096 --seed 1 \
    >"$tmp/mk.log" 2>&1; then
    start "'$LOUPE' -d :memory: --tui '$tmp/big' -e 'run --ids 1,5,9'"
    expect "the big model opens" 10 "1 Attention"
    # generate 1000 takes about 12 s on 2 cores; it must not get to finish.
    keys : "generate 1000 --no-stop" Enter
    expect "a progress line while it runs" 5 "Esc or Ctrl-C cancels"
    keys Escape
    expect "Esc cancels" 3 "cancelled: generate 1000 --no-stop"
    keys : "generate 1000 --no-stop" Enter
    expect "progress again" 5 "Esc or Ctrl-C cancels"
    keys C-c
    expect "Ctrl-C cancels" 3 "cancelled: generate 1000 --no-stop"
    keys l
    expect "the browser still answers" 5 "query 2 "
    quit_with "q after cancelling (status 1: two commands did not finish)" 1 q
else
    fail "mkmodel"
    sed 's/^/  | /' "$tmp/mk.log"
fi

# 2b. A long command's own progress (train's bar) shows in the spinner line, and nothing it
# reports reaches the terminal behind the browser: the title bar and token strip stay put.
start "'$LOUPE' -d :memory: --tui '$STORIES' -e 'run $TEXT'"
expect "opens for training" 10 "1 Attention"
keys : "train $tmp/tr --layers 1 --heads 2 --d-model 32 --d-mlp 64 --ctx 32 --vocab 280 --corpus-mb 0.05 --steps 2000 --eval-every 1000 --batch 8 --seq 32 --threads 1" Enter
expect "train's progress bar in the spinner line" 10 "step "
expect "train finishes with its lines in the output pane" 120 "train: step 2000/2000"
if screen | head -1 | grep -q "^ loupe .*1 Attention"; then ok "the title bar stays on the first row"
else fail "the title bar stays on the first row"; screen | sed 's/^/  | /'; fi
if screen | sed -n 2p | grep -qF "(no run: :run TEXT)"; then ok "the token strip stays on the second row"
else fail "the token strip stays on the second row"; screen | sed 's/^/  | /'; fi
quit_with "q after training" 0 q

# 3. Colours by what the terminal has: 256, 8 (tmux's default TERM, screen), none.
colours() { t capture-pane -e -p -t tui 2>/dev/null | grep -c "$1"; }
start "TERM=xterm-256color '$LOUPE' -d :memory: --tui '$STORIES' -e 'run $TEXT'"
expect "opens on a 256-colour terminal" 10 "1 Attention"
if [ "$(colours '48;5;')" -gt 0 ]; then ok "256-colour scales"; else fail "256-colour scales"; fi
quit_with "q" 0 q
start "TERM=screen '$LOUPE' -d :memory: --tui '$STORIES' -e 'run $TEXT'"
expect "opens on an 8-colour terminal" 10 "1 Attention"
if [ "$(colours '48;5;')" -eq 0 ] && [ "$(colours '\[4[1-7]m')" -gt 0 ]; then ok "8-colour scales"
else fail "8-colour scales"; fi
quit_with "q" 0 q
# NO_COLOR: the heat map is shading characters.
start "NO_COLOR=1 '$LOUPE' -d :memory: --tui '$STORIES' -e 'run $TEXT'"
expect "opens without colour" 10 "1 Attention"
if poll shows 5 "█" || poll shows 2 "▓" || poll shows 2 "▒"; then ok "NO_COLOR draws shading characters"
else fail "NO_COLOR draws shading characters"; screen | sed 's/^/  | /'; fi
keys 8
expect "the model view without colour" 5 "8 Model view"
if poll shows 5 "max-pooled" && screen | grep -q '^L0 .*[░▒▓█]'; then ok "NO_COLOR thumbnails are shading characters"
else fail "NO_COLOR thumbnails are shading characters"; screen | sed 's/^/  | /'; fi
quit_with "q" 0 q

# 4. `tui` from the REPL, and back to the prompt; `quit` on the : line leaves loupe.
start "'$LOUPE' -d :memory: '$STORIES'"
expect "the REPL" 10 "loupe>"
keys "run $TEXT" Enter "tui" Enter
expect "tui opens the browser on the REPL's run" 5 "query 20 . "
keys q
expect "q comes back to the prompt" 5 "loupe>"
keys "top 1" Enter
expect "and the prompt works" 5 "rank"
keys "tui" Enter
expect "and again" 5 "1 Attention"
quit_with ":quit leaves loupe" 0 : "quit" Enter

# 5. Encoders: the strip marks [CLS]/[SEP] and masks and underlines the pair's second text
# (in colour and without), and the attribution view names the label it explains; t steps on.
ENC=$(pwd)/tests/fixtures/encoders
strip() { t capture-pane -e -p -t tui 2>/dev/null | sed -n 2p; } # the strip's row, with its escapes
start "TERM=xterm-256color '$LOUPE' -d :memory: --tui '$ENC/bert_mlm' -e 'run the [MASK] was good --pair a [MASK] film'"
expect "an encoder pair in the strip" 10 "[CLS] the [MASK] was good [SEP] a [MASK] film [SEP]"
if strip | grep -q '38;5;246m\[CLS\]'; then ok "[CLS] in the specials' colour"; else fail "[CLS] in the specials' colour"; strip | od -c | head; fi
if strip | grep -q '48;5;177m\[MASK\]'; then ok "masks in the mask colour"; else fail "masks in the mask colour"; strip | od -c | head; fi
if strip | grep -q '4;38;5;117m\?a\|\[4m[^ ]*a'; then ok "the second text underlined in its colour"; else fail "the second text underlined"; strip | od -c | head -20; fi
if strip | sed 's/\[SEP\].*//' | grep -q '4m'; then fail "the first text is not underlined"; else ok "the first text is not underlined"; fi
quit_with "q" 0 q
start "NO_COLOR=1 '$LOUPE' -d :memory: --tui '$ENC/bert_mlm' -e 'run the [MASK] was good --pair a [MASK] film'"
expect "an encoder pair without colour" 10 "[CLS] the [MASK]"
if strip | grep -q '\[4ma' && strip | grep -q '\[4mfilm' && ! strip | sed 's/\[SEP\].*//' | grep -q '4m'; then
    ok "without colour the second text is still underlined"; else fail "underline without colour"; strip | od -c | head -20; fi
quit_with "q" 0 q
start "'$LOUPE' -d '$tmp/enc.db' --tui '$ENC/bert_cls' -e 'run this movie was not good. --pair i liked the film.'"
expect "a classifier's pair" 10 "[CLS] this movie"
keys 4 t
expect "t explains the top label" 10 "saliency  label negative"
expect "the status names it too" 5 "saliency  label negative: token"
keys t
expect "t again: the next label" 10 "[1/2] saliency  label neutral"
quit_with "q" 0 q

# 5b. An encoder-decoder's run (the ReLU T5 fixture with a tokenizer): the strip's two lines,
# the cross-attention as a target x source heat map with both axes' tokens, x through the
# three attentions, s between the strip's lines (the attention follows), the encoder's fewer
# layers, the model view's rows by stack and kind, the help, and all of it at 80x24.
T5=tests/fixtures/t5/t5_relu_tok
start "'$LOUPE' -d '$tmp/t5.db' --tui '$T5' -e 'run the cat sat on the mat --target le chat'"
expect "a T5 run opens on its cross-attention" 10 "cross L0 H0   rows: target, columns: source"
expect "the title bar names the attention" 5 "L0 H0 cross"
expect "the strip's source line" 5 "src  ·the ·cat · s a t ·on ·the · m a t </s>"
expect "the strip's target line" 5 "tgt  <pad> · l e · c h a t"
expect "the heat map's rows are the target's tokens" 5 "   0 <pad>"
expect "its columns the source's (13 of them)" 5 "  9 10 11 12"
expect "the source's tokens across the top" 5 "·  ·  ·  s  a  t  ·  ·  ·  m  a  t  <"
expect "the status names a target query and a source key" 5 "cross L0 H0  query 8 t → key "
keys k
expect "k moves the target query" 5 "cross L0 H0  query 7 a → key "
keys x
expect "x: the encoder's self-attention" 5 "enc self L0 H0   rows: source, columns: source"
expect "its query is the source's selection" 5 "enc self L0 H0  query 0 ·the → key "
keys l l
expect "the token keys move the source selection" 5 "enc self L0 H0  query 2 · → key "
keys x
expect "x: the decoder's self-attention" 5 "dec self L0 H0   rows: target, columns: target"
expect "back on the target's selection" 5 "dec self L0 H0  query 7 a → key "
keys s
expect "s: the source line, and the encoder's attention" 5 "enc self L0 H0  query 2 · → key "
keys s
expect "s again: the target line, and the decoder's attention last shown" 5 "dec self L0 H0  query 7 a → key "
keys x ']' ']'
expect "the decoder's three layers" 5 "cross L2 H0   rows: target"
keys x
expect "the encoder has two: the layer follows" 5 "enc self L1 H0   rows: source"
keys 8
expect "the model view names each stack and kind" 5 "E encoder self, D decoder self, X cross"
if screen | grep -Eq '^E1( |$)' && screen | grep -Eq '^D0( |$)' && screen | grep -Eq '^X2( |$)'; then ok "its rows: E, D and X"
else fail "its rows: E, D and X"; screen | sed 's/^/  | /'; fi
keys j j
expect "j goes down the rows: encoder, then decoder self, then cross" 5 "cross L0 H0  query 7 a → strongest key"
keys Enter
expect "Enter zooms into that cross-attention head" 5 "cross L0 H0   rows: target, columns: source"
t resize-window -t tui -x 80 -y 24
if poll size_is 5 80x24; then ok "the T5 run at 80x24"; else fail "resize to 80x24"; fi
expect "80x24: the strip's two lines" 5 "tgt  <pad> · l e · c h a t"
expect "80x24: the heat map's source columns" 5 "  9 10 11 12"
expect "80x24: the title bar still names the attention" 5 "L0 H0 cross"
if [ "$(screen | LC_ALL=C.UTF-8 wc -L)" -le 80 ]; then ok "the T5 views stay within 80 columns"
else fail "the T5 views stay within 80 columns"; screen | sed 's/^/  | /'; fi
keys '?'
expect "the help has s" 5 "encoder-decoders: the selection to the other strip line"
# long descriptions wrap onto rows of their own: x is a page or more further down
for i in 1 2 3 4 5 6; do
    keys PgDn; sleep 0.3
    screen | grep -q "encoder-decoders: next attention" && break
done
expect "and x" 5 "encoder-decoders: next attention"
quit_with "q after the T5 run" 0 q q

# 5b2. An attribution series (generate --attr): the attributions view shows the step, its
# probability and entropy and the series' matrix (a column per generated token); t walks the steps.
start "TERM=xterm-256color '$LOUPE' -d '$tmp/series.db' --tui models/default -e 'run When Mary and John went to the store, John gave a drink to' -e 'generate 3 --no-stop --attr gxi'"
expect "generate --attr in the browser" 10 "run 2"
keys 4
expect "the newest step of the series" 5 "series 1 step 3/3"
expect "the series' matrix: its header" 5 "explained:"
expect "the series' matrix: a row per input token" 5 "·drink      +0.81"
keys t
expect "t: the series' next step (wrapping to the first)" 5 "series 1 step 1/3: p 0.996"
quit_with "q after the series" 0 q q

# 5b3. An attribution eval judged: its measures and its deletion/insertion plot under the tokens.
start "TERM=xterm-256color '$LOUPE' -d '$tmp/eval.db' --tui models/default -e 'run When Mary and John went to the store, John gave a drink to' -e 'eval gxi --samples 2'"
expect "eval in the browser" 10 "run 1"
keys 4
expect "the judged attribution's measures" 5 "eval (delete, f prob = 0.9963)"
expect "its curves' plot" 5 "positions removed (d: deletion) or kept (i: insertion)"
quit_with "q after eval" 0 q q

# 5c. An encoder-decoder's analyses in the browser: attr's source and target lines coloured
# on one scale (both lines carry the diverging scale's colours), the decoder position named,
# t to the next one; the heads view's stored scan rows for each attention (x); m recording
# the attention in the store; all at 80x24 too.
start "TERM=xterm-256color '$LOUPE' -d '$tmp/t5b.db' --tui '$T5' -e 'run the cat sat on the mat --target le chat' -e 'attr ig --pos 4' -e 'scan --len 6 --seqs 1'"
expect "T5 run with an attribution and a scan" 10 "cross L0 H0"
keys 4
expect "the attribution names the decoder position and its input" 5 "at dec 4 (·)"
# the view's own lines (below the strip): the diverging scale's 256-colour backgrounds (not its neutral 250)
div_colours() { t capture-pane -e -p -t tui | sed -n '6,$p' | grep -m1 "$1" | grep -cE '48;5;(18|26|68|110|217|203|160|88)[m;]'; }
if [ "$(div_colours 'src')" -gt 0 ] && [ "$(div_colours 'tgt')" -gt 0 ]; then ok "attr: the source and the target line both coloured"
else fail "attr: the source and the target line both coloured"; t capture-pane -e -p -t tui | sed -n '6,12p' | cat -v | sed 's/^/  | /'; fi
expect "attr: the table's rows say their side" 5 "s  1 ·cat"
keys t
expect "t: the next decoder position, computed" 10 "at dec 5 (c)"
keys 2
expect "heads: the cross-attention's grid and scan" 5 "[cross, x: next]"
expect "heads: the cross scan's scores beside the grid" 5 "aligned"
keys x
expect "heads: x, the encoder's heads and its scan rows" 5 "[enc self, x: next]"
expect "heads: the encoder's scan scores" 5 "next_token"
keys m "an encoder head" Enter
expect "m in the heads view" 5 "finding written"
keys 1 x
expect "the decoder's self-attention" 5 "dec self L0 H0"
keys m "a decoder head" Enter
expect "m in the attention view" 5 "finding written"
if [ "$("$LOUPE" -d "$tmp/t5b.db" -m csv -e 'sql SELECT stack, attn_kind FROM findings ORDER BY id' 2>&1 | tr -d '\r' | tr '\n' ' ')" = "stack,attn_kind enc,self dec,self " ]
then ok "m recorded each note's stack and kind"
else fail "m recorded each note's stack and kind"; "$LOUPE" -d "$tmp/t5b.db" -e 'sql SELECT * FROM findings_view' 2>&1 | sed 's/^/  | /'; fi
t resize-window -t tui -x 80 -y 24
if poll size_is 5 80x24; then ok "80x24 for the T5 analyses"; else fail "resize to 80x24"; fi
keys 2
expect "80x24: the heads grid of the decoder's self-attention" 5 "[dec self, x: next]"
keys 4
expect "80x24: the attribution's lines" 5 "tgt <pad>"
if [ "$(screen | LC_ALL=C.UTF-8 wc -L)" -le 80 ]; then ok "the T5 analyses stay within 80 columns"
else fail "the T5 analyses stay within 80 columns"; screen | sed 's/^/  | /'; fi
quit_with "q after the T5 analyses" 0 q

# 6. Without a terminal --tui refuses at once.
if "$LOUPE" -d :memory: --tui "$STORIES" </dev/null >"$tmp/out" 2>&1; then fail "--tui without a terminal"
elif grep -qF "needs a terminal" "$tmp/out"; then ok "--tui without a terminal says so"
else fail "--tui without a terminal"; sed 's/^/  | /' "$tmp/out"; fi

echo "took $(($(date +%s) - began)) s"
[ "$fails" -eq 0 ] && echo "all passed"
[ "$fails" -eq 0 ]
