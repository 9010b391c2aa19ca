#!/bin/sh
# Queues a loupe dataset on a Slurm cluster: the array job dataset.sbatch (one shard a task)
# and merge.sbatch after it (--dependency=afterok), and prints both job ids.
usage() {
    cat <<'EOF'
usage: tests/slurm/submit.sh [-n SHARDS] [-o OUTDIR] [-c CPUS] [-l LOUPE] MODEL FILE [DATASET OPTIONS...]
  Runs `dataset FILE [DATASET OPTIONS...] --shard I/SHARDS` as array tasks 1..SHARDS, each
  into OUTDIR/shard-I.db, then `merge` into OUTDIR/merged.db once every task succeeded
  (if one fails, the merge job is cancelled). Logs: OUTDIR/logs/.
  -n SHARDS  shards, one array task each (default 4)
  -o OUTDIR  output directory, on storage every node sees (default ./loupe-out)
  -c CPUS    CPUs per task, and loupe's --threads (default 1)
  -l LOUPE   the loupe executable (default: loupe on PATH, else ./loupe)
  Partition, account, time limit...: sbatch's own variables (SBATCH_PARTITION, SBATCH_ACCOUNT,
  SBATCH_TIMELIMIT, ...), which apply to both jobs.
example: tests/slurm/submit.sh -n 8 -o $PWD/ioi models/default prompts.jsonl --each 'attr gxi'
EOF
    exit 2
}
set -u
here=$(cd "$(dirname "$0")" && pwd)
shards=4 out=./loupe-out cpus=1 loupe=
while getopts n:o:c:l:h opt; do
    case $opt in
        n) shards=$OPTARG ;;
        o) out=$OPTARG ;;
        c) cpus=$OPTARG ;;
        l) loupe=$OPTARG ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -ge 2 ] || usage
case $shards in '' | *[!0-9]* | 0) echo "error: submit.sh: -n takes a number of shards >= 1, not '$shards'" >&2; exit 2 ;; esac
command -v sbatch >/dev/null || { echo "error: submit.sh: sbatch is not on PATH: run this where Slurm's client commands are" >&2; exit 1; }
if [ -z "$loupe" ]; then loupe=$(command -v loupe || echo ./loupe); fi
abs() { case $1 in /*) echo "$1" ;; *) echo "$(pwd)/$1" ;; esac; }
loupe=$(abs "$loupe") model=$(abs "$1") file=$(abs "$2") out=$(abs "$out")
shift 2
[ -x "$loupe" ] || { echo "error: submit.sh: $loupe is not an executable; give -l LOUPE" >&2; exit 1; }
# The dataset options, each word quoted for loupe's command line as the shell gave it.
opts=
for a in "$@"; do
    case $a in *"'"*) echo "error: submit.sh: an option with a ' in it cannot be given to loupe's command line: $a" >&2; exit 2 ;; esac
    opts="$opts '$a'"
done
mkdir -p "$out/logs" || exit 1

export LOUPE="$loupe" LOUPE_MODEL="$model" LOUPE_DATASET="$file" LOUPE_OUT="$out" LOUPE_SHARDS="$shards" \
    LOUPE_DATASET_OPTS="$opts" LOUPE_THREADS="$cpus"
array=$(sbatch --parsable --export=ALL --array="1-$shards" --cpus-per-task="$cpus" \
    --output="$out/logs/shard-%a.out" "$here/dataset.sbatch") || exit 1
array=${array%%;*} # "id;cluster" on a federation
merge=$(sbatch --parsable --export=ALL --dependency="afterok:$array" --kill-on-invalid-dep=yes \
    --output="$out/logs/merge.out" "$here/merge.sbatch") || { scancel "$array"; exit 1; }
merge=${merge%%;*}
echo "dataset array job $array (tasks 1-$shards), merge job $merge after it"
echo "results: $out/merged.db; logs: $out/logs; progress: squeue -j $array,$merge"
