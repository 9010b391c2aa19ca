# Shared by the end-to-end scripts that drive loupe on a real terminal (repl.sh, tui*.sh):
# a private tmux server, polling with an overall time limit, and pass/fail bookkeeping.
# The sourcing script sets PANE (the session's name) and LIMIT (seconds for the whole
# script) first; it gets $sock, $tmp, $fails and these functions. Sourced, not run.
sock=loupe-$PANE-$$
tmp=$(mktemp -d)
fails=0
began=$(date +%s)
cleanup() {
    tmux -L "$sock" kill-server 2>/dev/null
    rm -f "${TMUX_TMPDIR:-/tmp}/tmux-$(id -u)/$sock" # a server that ended by itself leaves it
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

command -v tmux >/dev/null || { echo "FAIL tmux is not installed"; exit 1; }

ok() { echo "ok   $1"; }
fail() { echo "FAIL $1"; fails=$((fails + 1)); }
t() { tmux -L "$sock" "$@" 2>/dev/null; }
screen() { t capture-pane -p -t "$PANE" 2>/dev/null; }
keys() { t send-keys -t "$PANE" "$@"; }
# poll WHAT SECONDS ARG: until WHAT ARG succeeds, every 0.1 s; gives up at once past LIMIT
# seconds in all, so that a broken build fails the script in under a minute.
poll() {
    n=$(($2 * 10))
    while [ "$n" -gt 0 ] && [ $(($(date +%s) - began)) -lt "$LIMIT" ]; do
        "$1" "$3" && return 0
        sleep 0.1
        n=$((n - 1))
    done
    return 1
}
shows() { screen | grep -qF -- "$1"; }
hides() { ! screen | grep -qF -- "$1"; }
exists() { [ -e "$1" ]; }
# expect NAME SECONDS TEXT: the pane shows TEXT within SECONDS
expect() { if poll shows "$2" "$3"; then ok "$1"; else fail "$1 (no '$3' on screen)"; screen | sed 's/^/  | /'; fi; }
# start_pane W H COMMAND: COMMAND (with its environment first: 'LANG=C.UTF-8 loupe ...') in a
# fresh W x H pane named $PANE, with no inputrc and a private data folder; its exit status
# lands in $tmp/status.
start_pane() {
    rm -f "$tmp/status"
    t kill-server
    tmux -L "$sock" -f /dev/null new-session -d -s "$PANE" -x "$1" -y "$2" -c "$(pwd)" \
        "env INPUTRC=/dev/null XDG_DATA_HOME='$tmp/data' $3 ; echo \$? >'$tmp/status'"
}
expect_gone() { if poll hides "$2" "$3"; then ok "$1"; else fail "$1 ('$3' still on screen)"; screen | sed 's/^/  | /'; fi; }
# quit_with NAME STATUS KEYS...: the keys end loupe within 5 s with STATUS
quit_with() {
    name=$1 want=$2
    shift 2
    keys "$@"
    if poll exists 5 "$tmp/status" && [ "$(cat "$tmp/status")" = "$want" ]; then ok "$name"
    else fail "$name (exit status '$(cat "$tmp/status" 2>/dev/null)', wanted $want)"; screen | sed 's/^/  | /'; fi
}
# size_is WxH: the pane's size as tmux reports it
size_is() { [ "$(t display-message -p -t "$PANE" '#{pane_width}x#{pane_height}')" = "$1" ]; }
# within_80 NAME: no line of the pane is wider than 80 columns
within_80() {
    if [ "$(screen | LC_ALL=C.UTF-8 wc -L)" -le 80 ]; then ok "$1"; else fail "$1"; screen | sed 's/^/  | /'; fi
}
# shown TOKEN: the token as the browser draws it (spaces as ·)
shown() { printf '%s' "$1" | sed 's/ /·/g'; }
