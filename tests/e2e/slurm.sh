#!/bin/sh
# A dataset as a 3-task Slurm array job and its dependent merge job, queued by the shipped
# tests/slurm/submit.sh on a single-node Slurm that this script configures and starts, as
# root, on this machine; the merged database must equal one process's row for row. Then
# dataset.sbatch's task-id rules and its rerun of a finished shard, outside Slurm.
# The cluster is private: its own munged (socket, key), slurmctld and slurmd on free ports,
# conf and state in a temporary directory; all stopped on every exit, nothing left running.
# When Slurm cannot start here it prints one line "skip ..." saying why and exits 77, which
# tests/run.sh counts as skipped. make test installs slurmctld, slurmd, slurm-client, munge.
set -u
LOUPE=${LOUPE:-./loupe}
case $LOUPE in /*) ;; *) LOUPE=$(pwd)/$LOUPE ;; esac
M=$(pwd)/models/default
fails=0
t0=$(date +%s)
tmp=$(mktemp -d)
chmod 711 "$tmp" # munged wants its socket's directory searchable by all
. tests/e2e/lib/check.sh
. tests/e2e/lib/dataset.sh
skip() { echo "skip $*"; exit 77; }
pids="" jobs=""
alive() { # any of $pids still running (a zombie is not)
    for p in $pids; do s=$(sed 's/.*) \(.\).*/\1/' "/proc/$p/stat" 2>/dev/null) && [ "$s" != Z ] && return 0; done
    return 1
}
stop() {
    [ -n "$jobs" ] && SLURM_CONF="$tmp/slurm.conf" scancel $jobs 2>/dev/null
    if [ -n "$pids" ]; then
        kill $pids 2>/dev/null
        k=0; while [ $k -lt 50 ] && alive; do sleep 0.1; k=$((k + 1)); done
        kill -9 $pids 2>/dev/null
        wait $pids 2>/dev/null
    fi
    # Anything still running with this cluster's conf in its environment (a job whose
    # slurmd is gone, the reference run) is ours.
    for e in /proc/[0-9]*/environ; do
        p=${e#/proc/}; p=${p%/environ}
        [ "$p" != $$ ] && env -u SLURM_CONF grep -qzx "SLURM_CONF=$tmp/slurm.conf" "$e" 2>/dev/null && kill -9 "$p" 2>/dev/null
    done
    rm -rf "$tmp"
}
trap 'stop' EXIT
trap 'exit 1' INT TERM HUP

# What it needs, else a skip that says what is missing.
missing=""
for c in munged slurmctld slurmd sbatch squeue scontrol; do
    command -v "$c" >/dev/null 2>&1 || [ -x "/usr/sbin/$c" ] || missing="$missing $c"
done
[ -z "$missing" ] || skip "Slurm is not installed (no$missing); make test installs slurmctld, slurmd, slurm-client and munge"
[ "$(id -u)" = 0 ] || skip "starting slurmd needs root"
PATH=$PATH:/usr/sbin

# Two free TCP ports, side by side, for slurmctld and slurmd.
listening() {
    for f in /proc/net/tcp /proc/net/tcp6; do [ -r $f ] && awk 'NR > 1 && $4 == "0A" { split($2, a, ":"); print a[2] }' $f; done |
        while read -r h; do printf '%d\n' "0x$h"; done
}
used=" $(listening | tr '\n' ' ') "
port=$((20000 + $$ % 3000 * 2)) # from the pid: two runs at once seldom try the same ports
while [ $port -lt 28000 ]; do
    case $used in *" $port "* | *" $((port + 1)) "*) port=$((port + 2)) ;; *) break ;; esac
done

# munged: its own key, socket, pid, log and seed.
mkdir -m 711 "$tmp/munge"
if command -v mungekey >/dev/null 2>&1; then mungekey --create --keyfile="$tmp/munge/key" 2>"$tmp/err"
else dd if=/dev/urandom of="$tmp/munge/key" bs=1024 count=1 2>"$tmp/err"; fi
chmod 600 "$tmp/munge/key"
munged -F --force --socket="$tmp/munge/socket" --key-file="$tmp/munge/key" --pid-file="$tmp/munge/pid" \
    --log-file="$tmp/munge/log" --seed-file="$tmp/munge/seed" >>"$tmp/err" 2>&1 & pids=$!
k=0; while [ $k -lt 50 ] && ! [ -S "$tmp/munge/socket" ] && alive; do sleep 0.1; k=$((k + 1)); done
[ -S "$tmp/munge/socket" ] || skip "munged did not start: $(cat "$tmp/err" "$tmp/munge/log" 2>/dev/null | grep -i 'error' | tail -n 1)"

# slurm.conf: one node, this machine, no cgroups (a container seldom has usable ones), no
# accounting; everything it writes under $tmp.
host=$(hostname -s)
mem=$(awk '/^MemTotal:/ { print int($2 / 2048) }' /proc/meminfo) # half of it, in MB
mkdir "$tmp/state" "$tmp/spool"
cat >"$tmp/slurm.conf" <<EOF
ClusterName=loupetest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$tmp/munge/socket
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
SlurmdParameters=config_overrides
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$tmp/slurm.conf"
slurmctld -D -f "$SLURM_CONF" >"$tmp/slurmctld.out" 2>&1 & pids="$pids $!"
slurmd -D -f "$SLURM_CONF" -N "$host" >"$tmp/slurmd.out" 2>&1 & pids="$pids $!"
k=0; state=""
while [ $k -lt 150 ]; do # 30 s
    state=$(scontrol -o show node "$host" 2>/dev/null | sed -n 's/.* State=\([A-Z+_]*\).*/\1/p')
    case $state in IDLE*) break ;; esac
    for p in $pids; do kill -0 "$p" 2>/dev/null || skip "a daemon stopped on starting: $(cat "$tmp"/slurm*.out | grep -i 'error\|fatal' | grep -v 'mpi\|MPI\|state file\|Trying backup' | tail -n 1)"; done
    sleep 0.2; k=$((k + 1))
done
case $state in IDLE*) ;; *) skip "the node is not idle after 30 s (state '$state'): $(tail -n 1 "$tmp/slurmd.out")" ;; esac
echo "slurm: $(sinfo -V) on $host, ports $port and $((port + 1)), node idle after $(($(date +%s) - t0)) s"

# The same 45 items in one process, while the jobs run, on one thread as each task runs (a
# packed forward's products may round differently on another OpenBLAS thread count).
ioi_items 45 "$tmp/items.jsonl"
"$LOUPE" -d "$tmp/one.db" --threads 1 $M -e "dataset $tmp/items.jsonl --label-field label --k 5 --samples 3 --each 'attr gxi'" >/dev/null 2>"$tmp/one.err" & one=$!

# queue OUT OPTIONS...: submit.sh's 3 shards of the items into OUT, its job ids in $array and
# $merge; then waits, at most 120 s, for both to leave the queue.
queue() {
    out=$1; shift
    sh tests/slurm/submit.sh -n 3 -o "$out" -l "$LOUPE" "$M" "$tmp/items.jsonl" "$@" >"$tmp/submit" 2>"$tmp/err" || return 1
    array=$(sed -n 's/^dataset array job \([0-9]*\) .*, merge job [0-9]* after it$/\1/p' "$tmp/submit")
    merge=$(sed -n 's/^dataset array job [0-9]* .*, merge job \([0-9]*\) after it$/\1/p' "$tmp/submit")
    jobs="$jobs $array $merge"
    k=0
    while [ $k -lt 600 ] && [ -n "$(squeue -h -j "$array,$merge" 2>/dev/null)" ]; do sleep 0.2; k=$((k + 1)); done
    echo "jobs $array and $merge: queued and gone in $((k / 5)) s" >>"$tmp/timing"
    [ $k -lt 600 ]
}
check "submit.sh queues the array and the merge, both end within 120 s" queue "$tmp/out" --label-field label --k 5 --samples 3 --each 'attr gxi'
cat "$tmp/submit"
scontrol -o show job "$array" >"$tmp/array.jobs"
states=$(sed -n 's/.* ArrayTaskId=\([0-9]*\) .*JobState=\([A-Z]*\) .* ExitCode=\([0-9:]*\) .*/\1 \2 \3/p' "$tmp/array.jobs" | sort | tr '\n' ,)
check "three array tasks, each completed with exit 0 ($states)" test "$states" = "1 COMPLETED 0:0,2 COMPLETED 0:0,3 COMPLETED 0:0,"
check "the merge job completed" sh -c "scontrol -o show job '$merge' | grep -q 'JobState=COMPLETED .* ExitCode=0:0'"
last=$(sed -n 's/.* EndTime=\([^ ]*\) .*/\1/p' "$tmp/array.jobs" | sort | tail -n 1)
began=$(scontrol -o show job "$merge" | sed -n 's/.* StartTime=\([^ ]*\) .*/\1/p')
check "the merge began when the last task had ended ($began >= $last)" test -n "$last" -a ! "$began" \< "$last"
for f in "$tmp"/out/logs/*.out; do [ -e "$f" ] && sed "s|^|  $(basename "$f"): |" "$f"; done

wait $one
check "one process ran the same items" test $? -eq 0
agg "$tmp/one.db" 1 >"$tmp/one.agg"
check "each shard ran its third of the groups of 8 items" test "$(for s in 1 2 3; do q "$tmp/out/shard-$s.db" "SELECT count(*) AS n, sum(item / 8 % 3 != $s - 1) AS w FROM dataset_items" '.[0] | "\(.n) \(.w)"'; done | tr '\n' ,)" = "16 0,16 0,13 0,"
mid=$(merged_id "$tmp/out/merged.db")
agg "$tmp/out/merged.db" "${mid:-0}" >"$tmp/m.agg"
check "merged by the Slurm job == one process, row for row ($(wc -l <"$tmp/one.agg") rows)" diff "$tmp/one.agg" "$tmp/m.agg"
check "merged: every run once, with its attribution" test "$(q "$tmp/out/merged.db" "SELECT (SELECT count(*) FROM runs) AS r, (SELECT count(*) FROM attributions) AS a, (SELECT count(DISTINCT run_id) FROM dataset_items) AS d, (SELECT n_items FROM datasets WHERE shard_i = 0) AS n" '.[0] | "\(.r) \(.a) \(.d) \(.n)"')" = "45 45 45 45"

# A failing task: the merge job is cancelled, not left waiting.
queue "$tmp/bad" --field prompt
check "tasks that fail: the merge job is cancelled, and nothing merged" sh -c "scontrol -o show job '$merge' | grep -q 'JobState=CANCELLED' && test ! -e '$tmp/bad/merged.db' && grep -q 'no field \"prompt\"' '$tmp/bad/logs/shard-1.out'"
t_slurm=$(($(date +%s) - t0))

# dataset.sbatch's rules without the scheduler: the task ids, and a task run again.
task() { # ID MIN MAX COUNT [SHARDS]: runs dataset.sbatch as that array task would be run
    env SLURM_ARRAY_TASK_ID="$1" SLURM_ARRAY_TASK_MIN="$2" SLURM_ARRAY_TASK_MAX="$3" SLURM_ARRAY_TASK_COUNT="$4" \
        LOUPE_SHARDS="${5:-}" LOUPE="${task_loupe:-$LOUPE}" LOUPE_MODEL="$M" LOUPE_DATASET="$tmp/items.jsonl" LOUPE_OUT="$tmp/out" \
        LOUPE_DATASET_OPTS="--label-field label --k 5 --samples 3 --each 'attr gxi'" sh tests/slurm/dataset.sbatch >"$tmp/task.out" 2>"$tmp/task.err"
}
task 0 0 2 3
check "task id 0 refused: ids are shard numbers 1..N" sh -c "test $? -eq 1 && grep -q 'task ids are shard numbers 1..N' '$tmp/task.err'"
task 2 2 2 1
check "a part of the array without LOUPE_SHARDS refused" sh -c "test $? -eq 1 && grep -q 'set LOUPE_SHARDS=N' '$tmp/task.err'"
sum=$(md5sum <"$tmp/out/shard-2.db")
task 2 2 2 1 3
check "task 2 of 3 again: finished, nothing done" sh -c "test $? -eq 0 && grep -q 'is finished' '$tmp/task.out' && test \"\$(md5sum <'$tmp/out/shard-2.db')\" = '$sum'"
cp "$tmp/out/shard-2.db" "$tmp/out/shard-3.db"
"$LOUPE" -d "$tmp/out/shard-3.db" -e "sql --write UPDATE datasets SET finished_at = NULL, shard_i = 3" >/dev/null 2>"$tmp/err"
printf '#!/bin/sh\ncase "$*" in *"sql "*) exec "%s" "$@" ;; esac\necho "ran: $*"\n' "$LOUPE" >"$tmp/stub"
chmod +x "$tmp/stub"
task_loupe=$tmp/stub; task 3 1 3 3
check "task 3 again, its shard unfinished: resumed" grep -q "^ran: .* --shard 3/3 --resume$" "$tmp/task.out"
cat "$tmp/timing"
echo "e2e slurm: $t_slurm s for Slurm (start, jobs, comparison), $(($(date +%s) - t0)) s in all"

echo "$fails failed"
[ "$fails" -eq 0 ]
