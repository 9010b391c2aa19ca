#!/bin/sh
# The REPL on a real terminal (tmux, private socket, 120x40): the prompt, a command's output,
# the history file and Up arrow, Tab completion from the command table, Ctrl-C at the
# prompt and during a long command, Ctrl-D; and that scripts never write the history.
set -u
BUILD=${BUILD:-build}
LOUPE=${LOUPE:-./loupe}
case $LOUPE in /*) ;; *) LOUPE=$(pwd)/$LOUPE ;; esac
STORIES=$(pwd)/../shared/models/stories260K/stories260K.bin
PANE=repl LIMIT=50
. tests/e2e/lib/tmux.sh
# The cursor's line up to the cursor (trailing blanks kept: "attn " is not "attn").
at_cursor() {
    x=$(t display-message -p -t repl '#{cursor_x}' 2>/dev/null) || return
    y=$(t display-message -p -t repl '#{cursor_y}')
    [ "$x" -gt 0 ] && t capture-pane -p -N -t repl -S "$y" -E "$y" | cut -c "1-$x"
}
cursor_is() { [ "$(at_cursor)" = "$1" ]; }
# expect_cursor NAME TEXT: the cursor's line reads TEXT (up to the cursor) within 5 s
expect_cursor() {
    if poll cursor_is 5 "$2"; then ok "$1"; else fail "$1 (cursor line '$(at_cursor)', wanted '$2')"; fi
}
# start ARGS...: loupe in a fresh pane; its exit status lands in $tmp/status
start() { start_pane 120 40 "LOUPE_HISTORY='$tmp/hist' XDG_STATE_HOME='$tmp/state' $*"; }

# 1. Prompt, output, completion, history written, Ctrl-D.
start "'$LOUPE' '$STORIES'"
expect_cursor "prompt appears" "loupe> "
keys "run Once upon a time" Enter
keys "top 3" Enter
expect "top shows the ',' row" 10 "1  432  ,"
keys "top 3" Enter "   " Enter
expect_cursor "prompt after blank line" "loupe> "
keys "tok" Tab
expect_cursor "command name completes" "loupe> tokens "
keys C-u "top --p" Tab
expect_cursor "option completes" "loupe> top --pos "
keys C-u "mode js" Tab
expect_cursor "choice completes as far as it is unique" "loupe> mode json"
keys Tab Tab
expect "choices are offered" 5 "json   jsonl"
keys C-u "attn " Tab Tab
expect "layers are offered" 5 "0  1  2  3  4"
keys C-u "help gen" Tab
expect_cursor "command argument completes" "loupe> help generate "
keys C-u "load ../shared/models/stories260K/stories260K.b" Tab
expect_cursor "path completes" "loupe> load ../shared/models/stories260K/stories260K.bin "
keys C-u "session op" Tab
expect_cursor "subcommand completes" "loupe> session open "
keys C-u "atn 0 0" Enter
expect "errors print as one line" 5 "error: unknown command 'atn'"
keys "# a comment" Enter
quit_with "Ctrl-D quits (status 1: one command failed)" 1 C-d
printf 'run Once upon a time\ntop 3\natn 0 0\n# a comment\n' >"$tmp/want"
if cmp -s "$tmp/hist" "$tmp/want"; then ok "history file holds the lines, no blanks or repeats"
else fail "history file"; diff "$tmp/want" "$tmp/hist" 2>&1 | sed 's/^/  | /'; fi

# 2. A new session recalls history; Ctrl-C at the prompt drops the line; quit.
start "'$LOUPE' '$STORIES'"
expect_cursor "prompt again" "loupe> "
keys Up
expect_cursor "Up recalls the last line" "loupe> # a comment"
keys Up
expect_cursor "Up again goes further back" "loupe> atn 0 0"
keys C-c
expect_cursor "Ctrl-C clears the line" "loupe> "
expect "Ctrl-C shows ^C" 5 "loupe> atn 0 0^C"
keys "top 1" Enter
expect "a command still works after Ctrl-C at the prompt" 5 "error: no run yet"
keys "session new alpha-one" Enter "session open alp" Tab
expect_cursor "session names complete from the store" "loupe> session open alpha-one "
keys C-u
quit_with "quit quits" 1 "quit" Enter

# 3. Ctrl-C cancels a long command; the prompt comes back and works.
mkmodel="$BUILD/tools/mkmodel"
[ -x "$mkmodel" ] || make --no-print-directory "$mkmodel" >/dev/null 2>&1
if "$mkmodel" "$tmp/big" --arch llama --layers 8 --d-model 512 --heads 8 --vocab 512 --ctx 4096 --seed 1 \
    >"$tmp/mk.log" 2>&1; then
    start "'$LOUPE' '$tmp/big'"
    expect_cursor "big model loads" "loupe> "
    keys "run --ids 1" Enter
    expect "run on the big model" 10 "tokens"
    # generate 1000 takes about 12 s on 2 cores; it must not get to finish.
    keys "generate 1000 --no-stop" Enter
    sleep 1
    keys C-c
    expect "Ctrl-C cancels within 2 s" 2 "error: cancelled"
    expect_cursor "prompt is back" "loupe> "
    keys "top 1 --pos 0" Enter
    expect "next command works" 5 "rank"
    quit_with "Ctrl-D after a cancelled command" 1 C-d
else
    fail "mkmodel"
    sed 's/^/  | /' "$tmp/mk.log"
fi

# 4. Scripts never touch the history; the default history path is made with its directories.
rm -f "$tmp/hist"
LOUPE_HISTORY="$tmp/hist" XDG_DATA_HOME="$tmp/data" "$LOUPE" "$STORIES" -e 'run Hi' -e 'top 1' >/dev/null 2>&1
echo 'top 1' | LOUPE_HISTORY="$tmp/hist" XDG_DATA_HOME="$tmp/data" "$LOUPE" "$STORIES" >/dev/null 2>&1
if [ -e "$tmp/hist" ]; then fail "-e and piped stdin leave no history"; else ok "-e and piped stdin leave no history"; fi
start "'$LOUPE' '$STORIES' -e 'run Hi'"
if poll exists 10 "$tmp/status" && [ ! -e "$tmp/hist" ]; then ok "-e on a terminal runs no prompt, writes no history"
else fail "-e on a terminal runs no prompt, writes no history"; fi
t kill-server
rm -f "$tmp/status"
tmux -L "$sock" -f /dev/null new-session -d -s repl -x 120 -y 40 -c "$(pwd)" \
    "env -u LOUPE_HISTORY INPUTRC=/dev/null XDG_DATA_HOME='$tmp/data' XDG_STATE_HOME='$tmp/state' '$LOUPE' ; echo \$? >'$tmp/status'"
expect_cursor "prompt without MODEL" "loupe> "
keys "info" Enter
expect "without MODEL the prompt opens the bundled model" 5 "models/default"
quit_with "quit" 0 "quit" Enter
if [ "$(cat "$tmp/state/loupe/history" 2>/dev/null)" = "$(printf 'info\nquit')" ]; then
    ok "history at \$XDG_STATE_HOME/loupe/history, directory created"
else fail "history at \$XDG_STATE_HOME/loupe/history"; fi

[ "$fails" -eq 0 ] && echo "all passed"
[ "$fails" -eq 0 ]
