# Shared by the end-to-end scripts that run datasets (dataset*.sh, slurm.sh): the items, a
# query, the aggregate tables for diff, the merged dataset's id, and a refusal's check. $LOUPE
# is set first (and $tmp, $fails for refused).
# Sourced, not run.

# ioi_items N FILE: N IOI-style prompts as JSONL with a label (N <= 64); with a third
# argument, one blank line (not an item) after the item of that index.
ioi_items() {
    i=0
    for a in Mary John Anna Tom Lily Sam Kate Ben; do for p in store park school garden; do for b in John Kate; do
        [ $i -lt "$1" ] && printf '{"text": "When %s and %s went to the %s, %s gave a drink to", "label": "%s"}\n' "$a" "$b" "$p" "$b" "$a" >>"$2"
        [ $i -eq "${3:--1}" ] && echo >>"$2"
        i=$((i + 1))
    done; done; done
}

q() { "$LOUPE" -d "$1" -m json -e "sql $2" | jq -r "$3"; } # q DB QUERY JQ-FILTER

# agg DB ID: every aggregate row of dataset ID in DB, values with all their digits, for diff.
agg() {
    sqlite3 "$1" "SELECT unit_kind, layer, unit, metric, rank, item, pos, key_pos, token_id, hex(token), key_token_id, printf('%.17g', value) FROM unit_examples WHERE dataset_id = $2 ORDER BY 1, 2, 3, 4, 5;
SELECT unit_kind, layer, unit, bin, printf('%.17g', lower), count FROM unit_histograms WHERE dataset_id = $2 ORDER BY 1, 2, 3, 4;
SELECT unit_kind, layer, unit, metric, bin, hash, item, pos, key_pos, token_id, printf('%.17g', value) FROM unit_quantile_samples WHERE dataset_id = $2 ORDER BY 1, 2, 3, 4, 5, 6;
SELECT layer, head, metric, n, printf('%.17g', mean), printf('%.17g', std) FROM head_metric_stats WHERE dataset_id = $2 ORDER BY 1, 2, 3;
SELECT item, line, text, label, n_tokens, skipped, error FROM dataset_items WHERE dataset_id = $2 ORDER BY item;
SELECT item, method, pos, printf('%.17g', score) FROM dataset_attributions WHERE dataset_id = $2 ORDER BY item, pos;
SELECT i.item, t.pos, t.token_id FROM dataset_items i JOIN tokens t ON t.run_id = i.run_id WHERE i.dataset_id = $2 ORDER BY 1, 2;"
}

merged_id() { q "$1" "SELECT id FROM datasets WHERE shard_i = 0" '.[0].id'; } # merged_id DB

# refused NAME PATTERN LOUPE-ARGS...: loupe exits 1 with one line "error: ...PATTERN"
refused() { # NAME PATTERN LOUPE-ARGS...
    name=$1; pat=$2; shift 2
    "$LOUPE" "$@" >/dev/null 2>"$tmp/e"; rc=$?
    if [ $rc -eq 1 ] && [ "$(wc -l <"$tmp/e")" -eq 1 ] && grep -q "^error: .*$pat" "$tmp/e"; then echo "ok   $name"
    else echo "FAIL $name (exit $rc)"; cat "$tmp/e"; fails=$((fails + 1)); fi
}
