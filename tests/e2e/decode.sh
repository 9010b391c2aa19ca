#!/bin/sh
# One-row steps (a run of one token, every generated token) go through loupe's own kernels
# (src/kernels/decode.c), not OpenBLAS's sgemv: their logits are the same bytes under any
# OpenBLAS kernel and thread count, where OpenBLAS's Sandybridge and Haswell sgemv differ.
set -u
BUILD=${BUILD:-build}
LOUPE=${LOUPE:-./loupe}
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export XDG_DATA_HOME="$tmp/data"

. tests/e2e/lib/check.sh

mkmodel="$BUILD/tools/mkmodel"
[ -x "$mkmodel" ] || make --no-print-directory "$mkmodel" >/dev/null 2>&1
# Conv1D (in, out) weights with biases, and Llama's (out, in) ones with grouped keys; wide
# enough that the pool splits each matrix.
"$mkmodel" "$tmp/gpt2" --arch gpt2 --d-model 256 --d-mlp 1024 --heads 4 --layers 2 --vocab 5000 --ctx 64 --std 0.3 \
    --seed 3 >/dev/null
"$mkmodel" "$tmp/llama" --arch llama --d-model 256 --d-mlp 640 --heads 4 --kv-heads 2 --layers 2 --vocab 5000 \
    --ctx 64 --std 0.3 --seed 4 >/dev/null

# Sandybridge's kernels run wherever AVX does; Haswell's need AVX2 and FMA.
cores=Sandybridge
grep -q avx2 /proc/cpuinfo && grep -q fma /proc/cpuinfo && cores="$cores Haswell"
for m in gpt2 llama; do
    for core in $cores; do
        for t in 1 2; do
            OPENBLAS_CORETYPE=$core "$LOUPE" --threads $t "$tmp/$m" -e 'run --ids 17' \
                -e "export logits $tmp/$m-$core-$t.npy" >/dev/null
        done
    done
    first=$tmp/$m-Sandybridge-1.npy
    check "$m: a run of one token exported its logits" test -s "$first"
    for f in "$tmp/$m"-*.npy; do
        check "$m: $(basename "$f" .npy | cut -d- -f2-) gives the same logits as Sandybridge on one thread" cmp "$first" "$f"
    done
    # generation: the same ids on one thread and two
    a=$("$LOUPE" -m json --threads 1 "$tmp/$m" -e 'run --ids 17' -e 'generate 12 --no-stop' | tail -n 1 | jq -c .ids)
    b=$("$LOUPE" -m json --threads 2 "$tmp/$m" -e 'run --ids 17' -e 'generate 12 --no-stop' | tail -n 1 | jq -c .ids)
    check "$m: greedy ids on one thread and two" test "$a" = "$b"
done

echo "$fails failed"
[ "$fails" -eq 0 ]
