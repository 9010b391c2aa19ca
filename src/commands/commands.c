/* The command table (dispatch, help and completion read it), word splitting and option
 * parsing, and the commands about loupe itself: mode, help, source, quit. Each command
 * parses its words, computes, and hands one result (a JSON value, and a table where the
 * value is not one) to the output; the model commands live in cmd_model.c. */
#include "loupe/commands.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "commands/cmd.h"
#include "loupe/error.h"
#include "loupe/fileio.h"
#include "loupe/generate.h"
#include "loupe/tokenizer.h"

/* ---- words and options ---- */

/* Reads the word at *pp (quotes and escapes as lp_split_words says) into *outp, advancing
 * both; the word is not terminated. -1 (with a message) for an unterminated quote. */
static int read_word(const char **pp, char **outp) {
    const char *p = *pp;
    char *out = *outp;
    while (*p && !isspace((unsigned char)*p)) {
        if (*p == '"' || *p == '\'') {
            char q = *p++;
            while (*p && *p != q) {
                if (q == '"' && *p == '\\' && p[1]) {
                    p++;
                    *out++ = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p == 'r' ? '\r' : *p;
                    p++;
                } else {
                    *out++ = *p++;
                }
            }
            if (*p != q) return lp_error(LP_EINVAL, "unterminated %c quote", q), -1;
            p++;
        } else {
            *out++ = *p++;
        }
    }
    *pp = p;
    *outp = out;
    return 0;
}

int lp_split_words(const char *line, char ***words) {
    size_t len = strlen(line);
    /* Worst case: every other byte starts a word. Pointers first, then the text. */
    size_t max_words = len / 2 + 2;
    char **w = malloc(max_words * sizeof *w + len + max_words + 1);
    if (!w) return lp_error(LP_ENOMEM, "out of memory"), -1;
    char *out = (char *)(w + max_words);
    int n = 0;
    const char *p = line;
    for (;;) {
        while (*p && isspace((unsigned char)*p)) p++;
        if (!*p) break;
        w[n++] = out;
        if (read_word(&p, &out) < 0) {
            free(w);
            *words = NULL;
            return -1;
        }
        *out++ = '\0';
    }
    w[n] = NULL;
    *words = w;
    return n;
}

static bool blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/* CMD [OPTIONS] [--] TEXT: see cmd.h. One allocation: the text, then the option values. */
int lp_cmd_text(const char *cmd, const char *rest, lp_opt *spec, int nspec, char **text) {
    size_t len = strlen(rest);
    char *buf = malloc(2 * len + 2), *vals = buf + len + 1;
    *text = NULL;
    if (!buf) return lp_error(LP_ENOMEM, "out of memory");
    const char *p = rest;
    bool ended = false;
    for (;;) {
        while (blank(*p)) p++;
        if (p[0] != '-' || p[1] != '-') break;
        const char *w = p;
        while (*p && !blank(*p)) p++;
        size_t wl = (size_t)(p - w);
        if (wl == 2) { /* "--": the text follows, as it is */
            ended = true;
            break;
        }
        int k = 0;
        while (k < nspec && (strlen(spec[k].name) != wl - 2 || strncmp(w + 2, spec[k].name, wl - 2) != 0)) k++;
        if (k == nspec) {
            free(buf);
            return lp_error(LP_EINVAL, "%s: unknown option %.*s (options come before the text; put -- before a text "
                            "that starts with --; see 'help %s')", cmd, (int)wl, w, cmd);
        }
        if (spec[k].flag) {
            spec[k].value = "";
            continue;
        }
        while (blank(*p)) p++;
        if (!*p) {
            free(buf);
            return lp_error(LP_EINVAL, "%s: option --%s needs a value", cmd, spec[k].name);
        }
        spec[k].value = vals;
        if (read_word(&p, &vals) < 0) {
            free(buf);
            return LP_EINVAL;
        }
        *vals++ = '\0';
    }
    while (blank(*p)) p++;
    size_t n = strlen(p);
    while (n > 0 && blank(p[n - 1])) n--;
    /* An option written after the text would silently become part of it. */
    for (size_t i = 0; !ended && i < n; i++) {
        if ((i > 0 && !blank(p[i - 1])) || p[i] != '-' || p[i + 1] != '-') continue;
        size_t wl = 2;
        while (i + wl < n && !blank(p[i + wl])) wl++;
        for (int k = 0; k < nspec; k++)
            if (strlen(spec[k].name) == wl - 2 && strncmp(p + i + 2, spec[k].name, wl - 2) == 0) {
                free(buf);
                return lp_error(LP_EINVAL, "%s: --%s must come before the text ('%s --%s ... TEXT'); to keep it in "
                                "the text, put -- before the text", cmd, spec[k].name, cmd, spec[k].name);
            }
    }
    /* A text that is one quoted word is read as an option value is: "..." or '...' removed,
     * escapes in "..." applied. Anything else is taken as it is, quotes and all. */
    const char *q = p;
    char *out = buf;
    if (n >= 2 && (p[0] == '"' || p[0] == '\'') && p[n - 1] == p[0]) {
        const char *save_q = q;
        char *save_out = out;
        if (read_word(&q, &out) < 0 || (size_t)(q - p) != n) {
            lp_error_clear();
            q = save_q, out = save_out;
        }
    }
    if (q == p) {
        memcpy(buf, p, n);
        out = buf + n;
    }
    *out = '\0';
    *text = buf;
    return LP_OK;
}

int lp_cmd_int(const char *s, const char *what, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end)
        return lp_error(LP_EINVAL, "%s must be an integer, not '%s'", what, s);
    if (v < lo || v > hi) return lp_error(LP_EINVAL, "%s %ld is out of range (%ld..%ld)", what, v, lo, hi);
    *out = v;
    return LP_OK;
}

int lp_cmd_float(const char *s, const char *what, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return lp_error(LP_EINVAL, "%s must be a number, not '%s'", what, s);
    *out = v;
    return LP_OK;
}

/* Sorts argv[1..argc) into options (spec) and positionals (argv order kept). */
int lp_cmd_opts(const char *cmd, int argc, char **argv, lp_opt *spec, int nspec, char **pos, int max_pos,
                      int *npos) {
    *npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool is_opt = a[0] == '-' && a[1] == '-' && a[2];
        if (is_opt) {
            int k = 0;
            while (k < nspec && strcmp(a + 2, spec[k].name) != 0) k++;
            if (k == nspec) return lp_error(LP_EINVAL, "%s: unknown option %s (see 'help %s')", cmd, a, cmd);
            if (spec[k].flag) {
                spec[k].value = "";
            } else {
                if (i + 1 >= argc) return lp_error(LP_EINVAL, "%s: option %s needs a value", cmd, a);
                spec[k].value = argv[++i];
            }
        } else {
            if (*npos >= max_pos) return lp_error(LP_EINVAL, "%s: unexpected argument '%s' (see 'help %s')", cmd, a, cmd);
            pos[(*npos)++] = argv[i];
        }
    }
    return LP_OK;
}

/* ---- shared pieces ---- */

int lp_cmd_need_model(lp_session *s) {
    if (!s->model) return lp_error(LP_EINVAL, "no model loaded; use 'load PATH' or start loupe with a model path");
    return LP_OK;
}

int lp_cmd_need_run(lp_session *s) {
    int rc = lp_cmd_need_model(s);
    if (rc) return rc;
    if (!s->run) return lp_error(LP_EINVAL, "no run yet; use 'run TEXT' (or 'run --ids 1,2,3') first");
    return LP_OK;
}

/* A token as a JSON string of its raw bytes (made valid UTF-8 when printed as JSON). */
json_t *lp_cmd_token(const lp_session *s, int id) {
    const lp_tokenizer *t = lp_model_tokenizer(s->model);
    size_t len = 0;
    const char *b = t ? lp_tokenizer_token_bytes(t, id, &len) : NULL;
    if (!b) return json_null();
    return json_stringn_nocheck(b, len);
}

/* --pos P: default the last position; negative counts from the end. */
int lp_cmd_pos(const lp_session *s, const char *arg, int *pos) {
    int T = lp_run_len(s->run);
    *pos = T - 1;
    if (!arg) return LP_OK;
    long v;
    int rc = lp_cmd_int(arg, "--pos", -T, T - 1, &v);
    if (rc) return rc;
    *pos = (int)(v < 0 ? T + v : v);
    return LP_OK;
}

int lp_cmd_first_mask(const lp_session *s) {
    const lp_tokenizer *t = lp_model_tokenizer(s->model);
    int mask = t ? lp_tokenizer_special(t, LP_SPECIAL_MASK) : -1;
    const int *ids = lp_run_ids(s->run);
    for (int i = 0; mask >= 0 && i < lp_run_len(s->run); i++)
        if (ids[i] == mask) return i;
    return -1;
}

json_t *lp_cmd_labels(const lp_session *s) {
    const float *lg = lp_run_logits(s->run, 0);
    int n = lp_run_out_width(s->run);
    double mx = lg[0], z = 0;
    for (int i = 1; i < n; i++) mx = lg[i] > mx ? lg[i] : mx;
    for (int i = 0; i < n; i++) z += exp(lg[i] - mx);
    json_t *arr = json_array();
    bool multi = lp_model_config(s->model)->multi_label;
    for (int i = 0; i < n; i++) {
        json_t *p = multi ? lp_json_number(1.0 / (1.0 + exp(-(double)lg[i]))) : n > 1 ? lp_json_number(exp(lg[i] - mx) / z)
                                                                                   : json_null();
        json_array_append_new(arr, json_pack("{s:i,s:s,s:o,s:o}", "id", i, "label", lp_model_label(s->model, i), "prob",
                                             p, "logit", lp_json_number(lg[i])));
    }
    return arr;
}

int lp_cmd_need_token_head(lp_session *s, const char *what) {
    int rc = lp_cmd_need_run(s);
    if (rc) return rc;
    const lp_config *c = lp_model_config(s->model);
    if (c->head == LP_HEAD_CLASSIFIER)
        return lp_error(LP_EUNSUPPORTED, "%s: %s is a sequence classifier: it predicts labels, not tokens; use classify",
                        what, c->arch);
    if (c->head == LP_HEAD_NONE)
        return lp_error(LP_EUNSUPPORTED, "%s: %s has no output head (no logits); attn, heads, acts and export show what "
                        "it computes", what, c->arch);
    return LP_OK;
}

int lp_cmd_out_pos(const lp_session *s, const char *what, const char *arg, int *pos) {
    if (arg || lp_model_config(s->model)->head != LP_HEAD_MLM) return lp_cmd_pos(s, arg, pos);
    if ((*pos = lp_cmd_first_mask(s)) >= 0) return LP_OK;
    const lp_tokenizer *t = lp_model_tokenizer(s->model);
    int mask = t ? lp_tokenizer_special(t, LP_SPECIAL_MASK) : -1;
    size_t len = 0;
    const char *name = mask >= 0 ? lp_tokenizer_token_bytes(t, mask, &len) : NULL;
    return lp_error(LP_EINVAL, "%s: the run has no mask token%s%.*s%s; give --pos P", what, name ? " (" : "",
                    (int)len, name ? name : "", name ? ")" : "");
}

void lp_cmd_emit(lp_session *s, json_t *value, json_t *table) {
    lp_output(s->out, s->mode, value, table);
    json_decref(value);
    json_decref(table);
}

json_t *lp_cmd_top_k(const lp_session *s, const float *logits, int V, int k) {
    json_t *arr = json_array();
    if (k > V) k = V;
    int *ids = malloc((size_t)k * sizeof *ids);
    double *probs = malloc((size_t)k * sizeof *probs);
    if (!ids || !probs || lp_top_k_rows(ids, probs, logits, 1, V, k)) {
        free(ids);
        free(probs);
        return arr;
    }
    for (int r = 0; r < k; r++) {
        double p = probs[r];
        json_array_append_new(arr, json_pack("{s:i,s:i,s:o,s:o,s:o}", "rank", r + 1, "id", ids[r], "token",
                                             lp_cmd_token(s, ids[r]), "prob", lp_json_number(p), "logit",
                                             lp_json_number(logits[ids[r]])));
    }
    free(ids);
    free(probs);
    return arr;
}

int lp_cmd_target(const lp_session *s, const char *token, const char *id, int *out) {
    int V = lp_model_config(s->model)->vocab;
    *out = -1;
    if (token && id) return lp_error(LP_EINVAL, "give --target or --target-id, not both");
    if (id) {
        long v;
        int rc = lp_cmd_int(id, "--target-id", 0, V - 1, &v);
        if (!rc) *out = (int)v;
        return rc;
    }
    if (!token) return LP_OK;
    const lp_tokenizer *t = lp_model_tokenizer(s->model);
    if (!t) return lp_error(LP_EINVAL, "this model has no tokenizer; use --target-id");
    int hit = lp_tokenizer_piece_to_id(t, token);
    if (hit >= 0) {
        *out = hit;
        return LP_OK;
    }
    size_t len = strlen(token);
    int *ids = malloc((len + 3) * sizeof *ids), n = 0;
    if (!ids) return lp_error(LP_ENOMEM, "out of memory");
    int rc = lp_tokenizer_encode(t, token, len, false, ids, (int)len + 3, &n);
    /* SentencePiece-style tokenizers prepend a space marker to text: the piece is what counts. */
    if (!rc && n == 1) *out = ids[0];
    else if (!rc)
        rc = lp_error(LP_EINVAL, "'%s' is %d tokens, not one; give one token (e.g. with its leading space) or --target-id",
                      token, n);
    free(ids);
    return rc;
}

/* ---- commands ---- */

static int cmd_mode(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    if (argc == 1) {
        lp_cmd_emit(s, json_pack("{s:s}", "mode", lp_mode_name(s->mode)), NULL);
        return LP_OK;
    }
    if (argc != 2) return lp_error(LP_EINVAL, "mode: give one of table, box, markdown, csv, json, jsonl");
    lp_mode m;
    int rc = lp_mode_from_name(argv[1], &m);
    if (rc) return rc;
    s->mode = m;
    return LP_OK;
}

static int cmd_help(lp_session *s, int argc, char **argv, const char *rest);

#define SOURCE_MAX_DEPTH 16

static int cmd_source(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    if (argc != 2) return lp_error(LP_EINVAL, "source: give one file of commands");
    if (s->source_depth >= SOURCE_MAX_DEPTH)
        return lp_error(LP_ERANGE, "source: nested more than %d deep (does %s source itself?)", SOURCE_MAX_DEPTH, argv[1]);
    FILE *f = fopen(argv[1], "r");
    if (!f) return lp_error(LP_EIO, "source: cannot open '%s': %s", argv[1], strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0, rc = LP_OK;
    bool eof = false;
    s->source_depth++;
    while (!s->quit) {
        if ((rc = lp_line_read(f, argv[1], lineno + 1, &line, &cap, NULL, &eof)) || eof) break;
        lineno++;
        if ((rc = lp_exec(s, line))) {
            /* Say where, keeping the innermost location first. */
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", lp_errmsg());
            rc = lp_error(rc, "%s:%d: %s", argv[1], lineno, msg);
            break;
        }
    }
    s->source_depth--;
    free(line);
    fclose(f);
    return rc;
}

static int cmd_quit(lp_session *s, int argc, char **argv, const char *rest) {
    (void)argc, (void)argv, (void)rest;
    s->quit = true;
    return LP_OK;
}

static lp_tui_fn g_tui;

void lp_cmd_set_tui(lp_tui_fn fn) { g_tui = fn; }

static int cmd_tui(lp_session *s, int argc, char **argv, const char *rest) {
    (void)argv, (void)rest;
    if (argc > 1) return lp_error(LP_EINVAL, "tui takes no arguments");
    if (!g_tui) return lp_error(LP_EUNSUPPORTED, "tui: this program has no full-screen browser");
    int failures;
    return g_tui(s, &failures);
}

static const lp_command COMMANDS[] = {
    {"load", "PATH [--tokenizer FILE]", "load a model: a Hugging Face directory, a .gguf or a llama2.c .bin",
     "load ../shared/models/stories260K/stories260K.bin", lp_cmd_load, false, NULL},
    {"info", "", "describe the model: architecture, sizes, parameters, dtype, path", "info", lp_cmd_info, false, NULL},
    {"run", "[--bos|--no-bos] [--sae NAME] [--steer F:A,...] [--clamp F:V,...] [--] TEXT [--pair TEXT2 | --target TEXT2] | --ids 1,2,3 [--types 0,0,1 | --target-ids 4,5] [--max N]",
     "tokenize (or take ids), run the model, capture every activation",
     "run Once upon a time", lp_cmd_run, true, "It becomes the current run. Options come first; -- ends them; the rest of the line is the text. Encoders: --pair adds a second sentence (token types 0 then 1 for BERT), [MASK] or <mask> in the text is the mask token, --types gives ids their token types. Encoder-decoders (T5): TEXT is the source, --target the decoder's "
     "text (teacher-forced); without one the decoder's greedy output (at most --max tokens, default 32). With a "
     "dictionary loaded (sae load): --steer F:A adds A * W_dec[F] at its site at every position, --clamp F:V sets "
     "feature F to V there (encode, set, decode, plus the error term); --sae names the dictionary (default: the last "
     "loaded). Spliced dictionaries (sae splice) apply to every run."},
    {"tokens", "[--stack enc|dec]", "position, id and text of each token of the current run", "tokens", lp_cmd_tokens,
     false, "Encoder-decoders: the decoder's input by default, --stack enc the source."},
    {"top", "[K] [--pos P]", "the K (default 10) most likely next tokens at position P",
     "top 5 --pos 2", lp_cmd_top, false, "Default P: the last position; on a masked LM, the first mask."},
    {"fill", "[K]", "a masked LM's top K (default 5) candidates for every mask of the run", "fill 3", lp_cmd_fill,
     false, "For BERT-style masked LMs: run a text with [MASK] (or <mask>) first."},
    {"classify", "", "a sequence classifier's labels with probability and logit", "classify", lp_cmd_classify, false,
     "For ...ForSequenceClassification models; the probabilities are the softmax over the labels."},
    {"logits", "[--pos P]", "the full logit vector at position P (default: last)", "logits --pos -1", lp_cmd_logits, false, NULL},
    {"attn", "L H [--stack enc|dec] [--cross]", "the T x T attention pattern of head H in layer L", "attn 0 1",
     lp_cmd_attn, false, "Rows are queries, columns keys. Encoder-decoders: the encoder's by default; --stack dec the "
     "decoder's self-attention; --cross its attention over the source (target rows, source columns)."},
    {"relbias", "[L H] [--stack enc|dec] [--range R]", "a relative-position model's bias per head against key offset",
     "relbias --stack dec", lp_cmd_relbias, false, "T5: the learned bias each head adds to a score, by the offset of "
     "the key from the query (negative: earlier), offsets -R..R (default: the model's max distance + 2). With L H, "
     "head H of layer L on the current run: each score it gives a key split into content (q.k) and bias, with the "
     "score and the attention weight."},
    {"generate", "[N] [--temp T] [--top-k K] [--top-p P] [--seed S] [--no-stop] [--sae NAME] [--steer F:A,...] "
     "[--clamp F:V,...] [--attr METHOD [attr options]]",
     "continue the current run by N tokens (default 20)", "generate 20 --temp 0.8 --seed 1",
     lp_cmd_generate, false, "Greedy unless --temp > 0; stops at end-of-text unless --no-stop, and at the context's end. "
     "--attr METHOD: the prompt and its continuation become the run and each generated token is explained "
     "(attr METHOD --from, with --vs, --objective, --steps, --max-steps, --baseline, --baseline-id, --window, --layer). "
     "--steer and --clamp as run's, at every generated token; spliced dictionaries (sae splice) apply."},
    {"heads", "[--sort METRIC] [--layer L] [--stack enc|dec] [--kind self|cross]",
     "per-head attention metrics of the current run",
     "heads --sort prev_token", lp_cmd_heads, false, "METRIC: entropy, prev_token, first_token, duplicate_token, induction, max_attn; "
     "encoders also next_token, cls_sink, sep_sink, broad (Clark et al. 2019). Encoder-decoders: the encoder's by "
     "default; --stack dec the decoder's; --kind cross its cross-attention (entropy, max_attn, source_eos, diagonal, "
     "monotonic, coverage)."},
    {"lens", "[--k K] [--pos P] [--target TOKEN|--target-id ID]",
     "logit lens: each layer's top tokens at each position",
     "lens --k 3 --pos -1", lp_cmd_lens, false, "Rows: embed, then the residual stream after each layer. With --target, its probability and rank (1 = top)."},
    {"attr",
     "METHOD [--target TOKEN|--target-id ID] [--vs TOKEN|--vs-id ID] [--objective logit|logprob|logit_diff] [--pos P] "
     "[--steps N] [--max-steps N] [--baseline zero|pad|bos|TOKEN] [--baseline-id ID] [--window W] [--layer L] "
     "[--from P]",
     "input attribution: a score per input position for one prediction",
     "attr ig --target ' Mary' --vs ' John' --steps 64", lp_cmd_attr, false,
     "METHOD: saliency, gxi, ig, occlusion, rollout, attnxnorm. The prediction at P (default: last); default target: "
     "the top prediction; TOKEN: a vocabulary string or text of one token. Encoder-decoders: P is a decoder position and "
     "the scores cover the source, then the target prefix (side column; JSON source and target), stored by side. "
     "ig refines its integral until delta is within 1% of f(x) - f(baseline) or --max-steps gradients (default 16 x "
     "--steps) are spent; --max-steps equal to --steps is Captum's rule alone. --from P: every token from P on, each by "
     "the prediction before it (a series: a column per token, its probability and entropy; stored)."},
    {"eval",
     "[METHOD|all] [--target TOKEN|--target-id ID] [--vs TOKEN|--vs-id ID] [--pos P] [--remove delete|mask|baseline] "
     "[--bins N] [--logodds K] [--samples N] [--sigma S] [--radius R] [--seed S] [--steps N] "
     "[--baseline zero|pad|bos|TOKEN] "
     "[--baseline-id ID] [--sanity]",
     "faithfulness of attributions: removing the positions they rank first",
     "eval all --target ' Mary' --remove delete", lp_cmd_eval, false,
     "Per method (attr's defaults; all six by default): comprehensiveness and sufficiency AOPC over N bins (default "
     "10), deletion and insertion AUC, log-odds drop at the top K% (default 20), Kendall tau against leave-one-out, "
     "infidelity (beta-scaled; --samples N (10) Gaussian moves of each token toward its removal, --sigma S (0.1) "
     "of the way, --seed), max-sensitivity (Captum's: --samples draws within --radius R (0.02), the attributions "
     "recomputed). "
     "f: the target's probability, or with --vs the logit difference. Specials and the predicting position are never "
     "removed. --sanity: the cascading model-randomisation check (Spearman's rho per depth; FAIL at rho >= 0.5, the ranking kept). "
     "Stored with the attribution judged on a recorded run (evaluations_view). Encoders: a masked LM's candidate "
     "(default P: the first mask) or a classifier's label (--target LABEL), every position judged. Encoder-decoders "
     "(T5): the source and the decoder's 0..P together, </s> and the decoder start kept; --sanity refused."},
    {"dla", "[--target TOKEN|--target-id ID] [--vs TOKEN|--vs-id ID] [--pos P]",
     "direct logit attribution: each head's and MLP's part of the logit",
     "dla --target ' the' --vs ' a'", lp_cmd_dla, false,
     "Also the embeddings' and the biases' parts; default target: the top prediction. Encoders: a masked LM's token "
     "(default P: the first mask) or a classifier's label (--target LABEL); linearised in the head, with its remainder."},
    {"neurons", "L [K] [--pos P] [--sort act|abs|dla] [--target TOKEN|--target-id ID] [--vs TOKEN|--vs-id ID]",
     "the K (default 10) most active MLP neurons of layer L",
     "neurons 3 5 --sort dla", lp_cmd_neurons, false, "Each with its direct part of the target's logit."},
    {"acts", "L [--site resid_pre|attn_out|mlp_out|resid_post] [--pos P] [--top K]",
     "activation summaries per position (norm, mean, std, min, max, top)",
     "acts 2 --site mlp_out", lp_cmd_acts, false, "Default site: resid_post; any per-position activation works."},
    {"patch",
     "--corrupt TEXT|--corrupt-ids 1,2,3 [--site resid_pre|attn_out|mlp_out|z|cross_out|cross_z] "
     "[--target TOKEN|--target-id ID] [--vs TOKEN|--vs-id ID] [--pos P] [--pair TEXT2] [--denoise] "
     "[--corrupt-target TEXT|--corrupt-target-ids 4,5] [--stack enc|dec]",
     "activation patching from a corrupted prompt of the same length",
     "patch --corrupt \"Lily had a ball. Lily gave the ball to\" --site z", lp_cmd_patch, false,
     "The logit-difference recovery per layer and position (per layer and head for z). Encoders: read at --pos (a "
     "masked LM's, default the first mask) or a classifier's label; --pair: the corrupted prompt's own second text. "
     "Encoder-decoders: --corrupt is the source, --corrupt-target the target (either or both); --stack enc (default) "
     "or dec sweeps that stack's sites; cross_out, cross_z are the decoder's; read at the decoder's last position."},
    {"train",
     "DIR [--resume] [--steps N] [--layers N] [--heads N] [--d-model D] [--d-mlp D] [--ctx N] [--attn-only] "
     "[--vocab V] [--corpus-mb MB] [--mix IOI,REPEAT,FILLER] [--spans MIN,MAX] [--letter-words X] [--scrambled X] "
     "[--random-ioi X] [--ioi-probe] [--random-tokens X] [--embed-std X] [--batch B] [--seq T] [--lr X] [--min-lr X] "
     "[--warmup N] [--weight-decay X] [--clip X] [--eval-every N] [--save-every N] [--stop-at N] [--seed S] "
     "[--arch gpt2|bert|t5] [--task mlm|ioi|polarity] [--from DIR] [--examples N] [--mask-prob X] "
     "[--rules copy,reverse,swap] [--digits MIN,MAX] [--enc-layers N] [--threads N] [--quiet]",
     "train a GPT-2, a BERT or (digits to words) a T5, and load it",
     "train /tmp/toy --layers 1 --d-model 64 --steps 300 --corpus-mb 1", lp_cmd_train, false,
     "Defaults: models/default's first stage. DIR gets config.json, model.safetensors, vocab.json, merges.txt, "
     "optimizer.safetensors, train.json. --from DIR: start from a GPT-2 loupe trained (its weights, shape and "
     "tokenizer). --arch bert: a masked LM, or with --task ioi|polarity a classifier, "
     "started --from a masked LM (vocab.txt instead of vocab.json, merges.txt). --arch t5: a T5 rewriting digits "
     "as number words under --rules (\"reverse 4 0 7\" -> \"seven zero four\"), --examples training pairs of "
     "--digits MIN,MAX digits (tokenizer.json instead); each evaluation and the end score held-out pairs: greedy "
     "exact match, token accuracy, and how often each cross-attention head looks at the digit a word comes from."},
    {"scan", "[--len N] [--seqs B] [--seed S] [--threshold X] [--labelled]",
     "classify heads on repeated random tokens",
     "scan --labelled", lp_cmd_scan, false, "Scores: previous-token, duplicate-token, induction, first-token (sink). "
     "Encoders: previous and next token, [CLS] and [SEP] sinks, broad, on [CLS] + random tokens + [SEP]. "
     "Encoder-decoders: a copy task (random tokens + </s>, the decoder teacher-forced on them): each stack's "
     "self-attention and the cross-attention (aligned, source_eos, diagonal, monotonic, coverage), each stored with "
     "its stack and kind."},
    {"session", "[new NAME | list | open ID]", "show, start, list or switch sessions (runs, findings belong to one)",
     "session new induction-hunt", lp_cmd_session, false, NULL},
    {"note", "[--layer L] [--head H] [--pos P] [--stack enc|dec] [--cross | --kind self|cross] [--] TEXT",
     "write down a finding about the current run",
     "note --layer 1 --head 4 head 1.4 copies the previous token", lp_cmd_note, true,
     "Encoder-decoders: the place is the decoder's self-attention unless --stack enc (P then a source position) or "
     "--cross (decoder layer L's attention over the source; P the decoder's query); findings_view has stack and "
     "attn_kind."},
    {"tag", "NAME", "tag the current run", "tag induction", lp_cmd_tag, false, NULL},
    {"findings", "[--all]", "notes and tags of this session (or of all)", "findings", lp_cmd_findings, false, NULL},
    {"runs", "[--all]", "past runs of this session (or of all)", "runs --all", lp_cmd_runs, false, NULL},
    {"rerun", "ID [--reuse]", "run a stored run again with the loaded model", "rerun 3", lp_cmd_rerun, false,
     "--reuse: run it as that run itself, in its session (which becomes current), recording no new run."},
    {"save", "attn | acts L | TENSOR", "store tensors of the current run (float32 BLOBs with their shape)",
     "save acts 2", lp_cmd_save, false, NULL},
    {"export", "TENSOR FILE", "write a tensor of the current run as .npy or .csv",
     "export attn 0 1 pattern.npy", lp_cmd_export, false,
     "TENSOR: attn L [H], logits, resid_post L, mlp_post L, ..., or a TransformerLens hook name."},
    {"sql", "[--write] [--] QUERY", "run SQL on the database (read-only unless --write)",
     "sql SELECT * FROM runs_view ORDER BY id DESC LIMIT 5", lp_cmd_sql, true, NULL},
    {"dataset",
     "FILE [--format text|jsonl|csv] [--field F] [--pair-field F] [--label-field F] [--skip N] [--limit N] "
     "[--sample N [--seed S]] [--each CMD]... [--track neurons,heads,features] [--k K] [--samples S] [--shard I/N] [--resume] "
     "[--commit-every N] [--batch B] [--bos|--no-bos] [--stop-on-error]",
     "run every item of a file with commands, keeping each unit's top items",
     "dataset generate:ioi:200 --each 'dla --target {target}'", lp_cmd_dataset, false,
     "Each item (a line; a JSONL object's --field, default text; a CSV column) is run as 'run' runs text, recorded in "
     "session 'dataset NAME', then each --each command runs on it as typed, {NAME} replaced by the item's field NAME "
     "as a quoted word (its output goes to the store only). FILE generate:KIND:N[:SEED] is the corpus generator's N "
     "items: ioi or ioi-heldout (fields text, target, subject, corrupt) or repeat (text, span). An "
     "item whose --each fails is undone and kept as failed, with the error (view dataset_failures), and the dataset goes "
     "on; --stop-on-error stops it there instead. "
     "Tracked: every MLP neuron's and head's top K (default 20) items (a head's by its strongest key and by each head "
     "metric) and every loaded dictionary's features' (the default with one loaded), neurons' and features' value "
     "and heads' weight histograms, S (default 5) quantile samples per bin, head metrics' mean and std (tables unit_examples, unit_histograms, "
     "unit_quantile_samples, head_metric_stats). Items over the context are skipped and counted. Items go in groups of "
     "B (default 8; counted over the items chosen) that share packed forwards (2048 tokens, 1 GB at most): values equal a "
     "lone run's within float rounding, and any split or resume gives the same. --shard I/N takes the groups g with "
     "g % N == I - 1; merge combines shard databases. Groups are committed with the aggregates once N items (default "
     "64) are in; --resume continues an interrupted run of the same file, model and options."},
    {"examples", "neuron L.N | head L.H [--by METRIC] | feature ID [--sae NAME] [--k K] [--dataset ID] "
     "[--context C]",
     "a unit's top examples over a dataset, with the tokens around them",
     "examples neuron 1.42 --k 5", lp_cmd_examples, false,
     "From the latest finished dataset of this model (or --dataset ID): item, text, position, token and value (a "
     "head's: the query position, the key and the weight), with C (default 8) tokens each side ([the token] in the "
     "table). A head's examples are by its strongest key (--by key) or by a head metric (--by induction, prev_token, "
     "duplicate_token, first_token, entropy, max_attn: the metric on the item, where its term is largest). A "
     "feature's (of the loaded dictionary --sae, default the last; the dataset run with it loaded, which tracks its "
     "features) are the items where it is strongest, at its largest activation."},
    {"merge", "SHARD.db...", "merge the datasets of shard databases into this one (-d)",
     "merge shard1.db shard2.db shard3.db", lp_cmd_merge, false,
     "Runs, their analyses and the items are copied (renumbered); top examples, histograms, samples and head "
     "statistics merged exactly. A shard merged twice changes nothing; one made with another file, model, options, "
     "commands or split is refused."},
    {"sae", "load PATH [--site S] [--name N] [--store-k K] | list | stats [NAME] | splice [NAME] [--no-error] | unsplice [NAME] | "
     "attr [--sae NAME[,NAME...]] [--target T|--target-id ID] [--vs T|--vs-id ID] [--objective O] [--pos P] [--k K] | "
     "patch --corrupt TEXT|--corrupt-ids 1,2,3 [--sae NAME[,NAME...]] [--pos P] [--target T|--target-id ID] [--vs T|--vs-id ID] "
     "[--denoise] [--k K] | drop NAME",
     "sparse autoencoders and transcoders beside the model",
     "sae load tests/fixtures/sae/saelens_standard --name std", lp_cmd_sae, false,
     "load reads SAELens (cfg.json + sae_weights.safetensors), Gemma Scope (params.npz), sparsify (cfg.json + "
     "sae.safetensors) and Llama Scope (hyperparams.json + checkpoints/final.safetensors) dictionaries; the site is "
     "the config's hook_name (Llama Scope's hook_point_in; a TransformerLens name such as "
     "blocks.0.hook_resid_post) unless --site gives one; its width must be the dictionary's d_in. Runs recorded while "
     "it is loaded keep their K strongest active features per position (--store-k, default 32; 0: none; SQL view "
     "feature_acts). On load, and by "
     "stats: L0 (mean active features per position), explained variance 1 - sum|x - x_hat|^2 / sum|x - mean x|^2, "
     "MSE and relative error over the current run's positions; stats adds the CE loss recovered, (ce_zero - ce_sae) / "
     "(ce_zero - ce_orig): the run's mean next-token cross-entropy with the dictionary spliced in alone and with its "
     "site zeroed. splice puts it into every later forward (run, generate, dataset) as x_hat + (x - x_hat), the "
     "original, or with --no-error x_hat alone; the current run is made again. attr: an objective (as attr's) "
     "attributed to each active feature at each position, a_f * dO/da_f, the error node and the decoder's constant "
     "part; they sum to the site's grad . x (closure); with several dictionaries (--sae A,B) one backward pass "
     "attributes to all of them, each with its own error node and closure. patch: the dictionary spliced with its error term into the run "
     "and a corrupted prompt of the same length; each feature whose activation differs, and the error term, taken "
     "from the corrupted run at --pos (default every position) one at a time (--denoise: the other way), the change "
     "of the logit difference target - contrast at the last position, strongest first (K, default 20), and all of "
     "them at once; with several dictionaries (--sae A,B) each node patches its own dictionary alone (A/f6, as "
     "patch --sae A gives it), all of them ranked together, then each one's all and every one at once. Several may "
     "be loaded, at several sites; a new model drops "
     "them."},
    {"features", "[--sae NAME] [--pos P] [--k K]", "the active features at each position, strongest first",
     "features --pos -1 --k 5", lp_cmd_features, false,
     "Every position unless --pos; at most K (default 10) per position. --sae picks the dictionary (default: the "
     "last loaded)."},
    {"feature", "ID [--sae NAME] [--k K]", "one feature: its activations, logit effects and nearest features",
     "feature 12 --k 5", lp_cmd_feature, false,
     "Its activation at every position; its decoder row written into the residual stream (through W_O for z, "
     "W_down for mlp_post) and through the final norm with the scale frozen at the position where it is strongest "
     "(as dla does), dotted with the unembedding: the K tokens it promotes and suppresses most, per unit of "
     "activation; and the K features whose decoder rows are nearest by cosine."},
    {"train-sae",
     "DIR [--site S] [--d-sae N] [--arch standard|topk] [--k K] [--l1 X] [--lr X] [--steps N] [--batch ROWS] "
     "[--seq T] [--corpus FILE] [--seed S] [--quiet]",
     "train a sparse autoencoder on a site of the model (SAELens's files)",
     "train-sae /tmp/sae --site blocks.1.hook_resid_pre --steps 500", lp_cmd_train_sae, false,
     "The model runs windows of --seq tokens (default 128) of the corpus (--corpus FILE, or the synthetic corpus "
     "of 'train'); each window's rows at --site (default blocks.L.hook_resid_pre, L the middle layer) but its "
     "first go into a shuffled buffer, --batch rows (default 4096) per step. standard: ReLU, loss = sum of "
     "squared errors + --l1 (default 1) x sum of activations, per row; topk: the --k (default 32) largest, no "
     "penalty. Decoder rows kept at unit norm; Adam at --lr (default 4e-4) for --steps (default 2000); --d-sae "
     "default 8 x the site's width. One batch is held out and measured at every tenth of the run and at the end. "
     "DIR gets cfg.json and sae_weights.safetensors ('sae load DIR' reads them); Ctrl-C saves what is trained."},
    {"source", "FILE", "run the commands in FILE (nested up to 16 deep)", "source setup.loupe", cmd_source, false, NULL},
    {"mode", "[table|box|markdown|csv|json|jsonl]", "show or set the output mode", "mode json", cmd_mode, false, NULL},
    {"help", "[COMMAND]", "list the commands, or show one command's usage and an example", "help attn", cmd_help, false, NULL},
    {"tui", "", "open the full-screen browser on the current run (q comes back)", "tui", cmd_tui, false, NULL},
    {"quit", "", "leave loupe", "quit", cmd_quit, false, NULL},
};
#define N_COMMANDS ((int)(sizeof COMMANDS / sizeof *COMMANDS))

const lp_command *lp_command_table(int *n) {
    *n = N_COMMANDS;
    return COMMANDS;
}

static int edit_distance(const char *a, const char *b) {
    int la = (int)strlen(a), lb = (int)strlen(b);
    if (la > 32 || lb > 32) return 99;
    int d[33][33];
    for (int i = 0; i <= la; i++) d[i][0] = i;
    for (int j = 0; j <= lb; j++) d[0][j] = j;
    for (int i = 1; i <= la; i++)
        for (int j = 1; j <= lb; j++) {
            int sub = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            int del = d[i - 1][j] + 1, ins = d[i][j - 1] + 1;
            d[i][j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
    return d[la][lb];
}

const lp_command *lp_command_find(const char *name) {
    const lp_command *hit = NULL;
    int hits = 0;
    for (int i = 0; i < N_COMMANDS; i++) {
        if (strcmp(COMMANDS[i].name, name) == 0) return &COMMANDS[i];
        if (strncmp(COMMANDS[i].name, name, strlen(name)) == 0) {
            hit = &COMMANDS[i];
            hits++;
        }
    }
    if (hits == 1) return hit;
    if (hits > 1) {
        char list[256] = "";
        for (int i = 0; i < N_COMMANDS; i++)
            if (strncmp(COMMANDS[i].name, name, strlen(name)) == 0)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", list[0] ? ", " : "", COMMANDS[i].name);
        lp_error(LP_EINVAL, "ambiguous command '%s' (%s)", name, list);
        return NULL;
    }
    int best = -1, best_d = 3;
    for (int i = 0; i < N_COMMANDS; i++) {
        int d = edit_distance(name, COMMANDS[i].name);
        if (d < best_d) best_d = d, best = i;
    }
    if (best >= 0) lp_error(LP_EINVAL, "unknown command '%s' (did you mean '%s'?)", name, COMMANDS[best].name);
    else lp_error(LP_EINVAL, "unknown command '%s' (type 'help' for the list)", name);
    return NULL;
}

/* Width of help's text column: with "example  " before it, a line fits 80 columns. */
#define HELP_WIDTH 70

/* Appends rows (field, line) to table, text wrapped at HELP_WIDTH: at blanks outside [...]
 * where it can (an option group stays whole), else at any blank. */
static void help_rows(json_t *table, const char *field, const char *text) {
    while (*text) {
        size_t n = strlen(text), cut = n, any = 0;
        if (n > HELP_WIDTH) {
            int depth = 0;
            cut = 0;
            for (size_t i = 0; i <= HELP_WIDTH; i++) {
                if (text[i] == '[') depth++;
                else if (text[i] == ']') depth--;
                else if (text[i] == ' ') {
                    any = i;
                    if (depth == 0) cut = i;
                }
            }
            if (!cut) cut = any ? any : HELP_WIDTH;
        }
        lp_table_row(table, json_pack("[s,s#]", field, text, (int)cut));
        field = "";
        text += cut;
        while (*text == ' ') text++;
    }
}

/* help: one line per command (name and summary); help CMD: its whole usage, what it does,
 * and an example, wrapped to 80 columns in the table modes (json keeps each whole). */
static int cmd_help(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    if (argc > 2) return lp_error(LP_EINVAL, "help: give at most one command name");
    json_t *table = lp_table_new();
    if (argc == 2) {
        const lp_command *c = lp_command_find(argv[1]);
        if (!c) {
            json_decref(table);
            return LP_EINVAL;
        }
        size_t n = strlen(c->name) + strlen(c->usage) + 2;
        char *usage = malloc(n);
        if (!usage) {
            json_decref(table);
            return lp_error(LP_ENOMEM, "out of memory");
        }
        snprintf(usage, n, "%s%s%s", c->name, c->usage[0] ? " " : "", c->usage);
        json_t *v = json_pack("{s:s,s:s,s:s,s:s,s:s}", "command", c->name, "usage", usage, "summary", c->summary,
                              "detail", c->detail ? c->detail : "", "example", c->example);
        lp_table_column(table, "", 0, NULL);
        lp_table_column(table, c->name, 0, NULL);
        help_rows(table, "usage", usage);
        help_rows(table, "does", c->summary);
        if (c->detail) help_rows(table, "", c->detail);
        help_rows(table, "example", c->example);
        free(usage);
        lp_cmd_emit(s, v, table);
        return LP_OK;
    }
    json_t *arr = json_array();
    lp_table_column(table, "command", 0, NULL);
    lp_table_column(table, "does (help COMMAND: its usage)", 0, NULL);
    for (int i = 0; i < N_COMMANDS; i++) {
        json_array_append_new(arr, json_pack("{s:s,s:s,s:s}", "command", COMMANDS[i].name, "usage", COMMANDS[i].usage,
                                             "summary", COMMANDS[i].summary));
        lp_table_row(table, json_pack("[s,s]", COMMANDS[i].name, COMMANDS[i].summary));
    }
    lp_cmd_emit(s, arr, table);
    return LP_OK;
}

/* In a script, Ctrl-C or a kill (SIGINT, SIGTERM) would end the process and lose the work since
 * the last checkpoint: while training or running a dataset, they stop it with a checkpoint instead. Only
 * signals left at their default are caught (the prompt and the browser have their own
 * Ctrl-C; an ignored signal stays ignored). */
static void on_stop_signal(int sig) {
    (void)sig;
    lp_cancel_request();
}

void lp_cmd_catch_stop_signals(struct sigaction old[2]) {
    static const int sigs[2] = {SIGINT, SIGTERM};
    for (int i = 0; i < 2; i++) {
        sigaction(sigs[i], NULL, &old[i]);
        if (old[i].sa_handler != SIG_DFL || (old[i].sa_flags & SA_SIGINFO)) continue;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_stop_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(sigs[i], &sa, NULL);
    }
}

void lp_cmd_restore_stop_signals(const struct sigaction old[2]) {
    sigaction(SIGINT, &old[0], NULL);
    sigaction(SIGTERM, &old[1], NULL);
}

void lp_cmd_progress(lp_session *s, lp_progress_kind kind, const char *fmt, ...) {
    if (!s->progress) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    s->progress(s->progress_ctx, kind, line);
}

void lp_session_init(lp_session *s, FILE *out) {
    memset(s, 0, sizeof *s);
    s->out = out;
    s->mode = LP_MODE_TABLE;
}

void lp_session_free(lp_session *s) {
    lp_cmd_sae_clear(s);
    lp_run_free(s->run);
    lp_run_release_cache();
    lp_cmd_record_free(s);
    lp_model_free(s->model);
    free(s->tokenizer_path);
    memset(s, 0, sizeof *s);
}

int lp_exec(lp_session *s, const char *line) {
    lp_error_clear();
    const char *p = line;
    while (*p == ' ' || *p == '\t') p++;
    if (*p == '\0' || *p == '\n' || *p == '#') return LP_OK;
    /* The command's name ends at the first blank; what follows, raw, is `rest`. */
    const char *name_end = p;
    while (*name_end && !isspace((unsigned char)*name_end)) name_end++;
    char name[64];
    size_t nl = (size_t)(name_end - p);
    if (nl >= sizeof name) nl = sizeof name - 1;
    memcpy(name, p, nl);
    name[nl] = '\0';
    const lp_command *cmd = lp_command_find(name);
    if (!cmd) return LP_EINVAL;
    char **argv;
    int argc = lp_split_words(p, &argv);
    if (argc < 0 && cmd->raw_text) {
        /* Quotes are part of the text here: hand over the name alone and the raw rest. */
        char *name_only[2] = {(char *)cmd->name, NULL};
        lp_error_clear();
        return cmd->fn(s, 1, name_only, name_end);
    }
    if (argc < 0) return LP_EINVAL;
    int rc = cmd->fn(s, argc, argv, name_end);
    free(argv);
    return rc;
}
