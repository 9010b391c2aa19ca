/* The store's schema: an ordered list of migrations, each an SQL script that takes the
 * database from user_version N to N+1. A step is applied in one BEGIN IMMEDIATE transaction
 * together with its user_version bump, so a crash leaves the file at N or at N+1, never
 * between; and two processes opening a new file at once migrate it once. Never edit a
 * released step: add the next one. */
#include <stdio.h>

#include "loupe/error.h"
#include "store_impl.h"

#define NOW "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))" /* ISO-8601 UTC with milliseconds */

/* v1: models, sessions, runs with their tokens, predictions and head metrics, saved
 * tensors, findings; and the views that answer the common questions in one line. */
static const char V1[] =
    "CREATE TABLE models (\n"
    "  id          INTEGER PRIMARY KEY,\n"
    "  path        TEXT NOT NULL,\n"
    "  arch        TEXT,\n"
    "  n_layer     INTEGER,\n"
    "  n_head      INTEGER,\n"
    "  n_kv_head   INTEGER,\n"
    "  d_model     INTEGER,\n"
    "  d_mlp       INTEGER,\n"
    "  vocab       INTEGER,\n"
    "  n_ctx       INTEGER,\n"
    "  n_params    INTEGER,\n"
    "  dtype       TEXT,\n"
    "  fingerprint TEXT NOT NULL,         -- identifies the weights; '' when unknown\n"
    "  created_at  TEXT NOT NULL DEFAULT " NOW ",\n"
    "  UNIQUE (fingerprint, path)\n"
    ");\n"

    "CREATE TABLE sessions (\n"
    "  id          INTEGER PRIMARY KEY,\n"
    "  name        TEXT NOT NULL UNIQUE,\n"
    "  created_at  TEXT NOT NULL DEFAULT " NOW "\n"
    ");\n"

    "CREATE TABLE runs (\n"
    "  id          INTEGER PRIMARY KEY,\n"
    "  session_id  INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,\n"
    "  model_id    INTEGER REFERENCES models(id),\n"
    "  text        TEXT,                  -- NULL for runs given as token ids\n"
    "  n_tokens    INTEGER NOT NULL CHECK (n_tokens >= 0),\n"
    "  created_at  TEXT NOT NULL DEFAULT " NOW "\n"
    ");\n"
    "CREATE INDEX runs_by_session ON runs(session_id);\n"
    "CREATE INDEX runs_by_model ON runs(model_id);\n"

    "CREATE TABLE tokens (\n"
    "  run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,\n"
    "  pos         INTEGER NOT NULL,\n"
    "  token_id    INTEGER NOT NULL,\n"
    "  text        TEXT,                  -- the token's raw bytes (may be invalid UTF-8)\n"
    "  PRIMARY KEY (run_id, pos)\n"
    ") WITHOUT ROWID;\n"

    "CREATE TABLE predictions (           -- the top next tokens after position pos\n"
    "  run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,\n"
    "  pos         INTEGER NOT NULL,\n"
    "  rank        INTEGER NOT NULL,      -- 1 = most likely\n"
    "  token_id    INTEGER NOT NULL,\n"
    "  token       TEXT,\n"
    "  prob        REAL,\n"
    "  logit       REAL,\n"
    "  PRIMARY KEY (run_id, pos, rank)\n"
    ") WITHOUT ROWID;\n"

    "CREATE TABLE head_metrics (\n"
    "  run_id          INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,\n"
    "  layer           INTEGER NOT NULL,\n"
    "  head            INTEGER NOT NULL,\n"
    "  entropy         REAL,\n"
    "  prev_token      REAL,\n"
    "  first_token     REAL,\n"
    "  duplicate_token REAL,\n"
    "  induction       REAL,\n"
    "  max_attn        REAL,\n"
    "  PRIMARY KEY (run_id, layer, head)\n"
    ") WITHOUT ROWID;\n"

    "CREATE TABLE tensors (\n"
    "  id          INTEGER PRIMARY KEY,\n"
    "  run_id      INTEGER REFERENCES runs(id) ON DELETE CASCADE,\n"
    "  name        TEXT NOT NULL,         -- e.g. 'pattern', 'resid_post'\n"
    "  layer       INTEGER,               -- NULL: not per layer\n"
    "  head        INTEGER,               -- NULL: all heads\n"
    "  dtype       TEXT NOT NULL DEFAULT 'float32',\n"
    "  shape       TEXT NOT NULL,         -- JSON array, e.g. '[12,5,5]'\n"
    "  data        BLOB NOT NULL,         -- little-endian, row-major\n"
    "  created_at  TEXT NOT NULL DEFAULT " NOW "\n"
    ");\n"
    "CREATE INDEX tensors_by_run ON tensors(run_id, name);\n"

    "CREATE TABLE findings (\n"
    "  id          INTEGER PRIMARY KEY,\n"
    "  session_id  INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,\n"
    "  run_id      INTEGER REFERENCES runs(id) ON DELETE SET NULL,\n"
    "  kind        TEXT NOT NULL CHECK (kind IN ('note', 'tag')),\n"
    "  text        TEXT NOT NULL,         -- the note, or the tag's name\n"
    "  layer       INTEGER,\n"
    "  head        INTEGER,\n"
    "  pos         INTEGER,\n"
    "  token_id    INTEGER,               -- the run's token at pos, when both are known\n"
    "  created_at  TEXT NOT NULL DEFAULT " NOW "\n"
    ");\n"
    "CREATE INDEX findings_by_session ON findings(session_id);\n"
    "CREATE INDEX findings_by_run ON findings(run_id);\n"

    /* The views: `SELECT * FROM runs_view` and the like answer the usual questions. */
    "CREATE VIEW runs_view AS\n"
    "SELECT r.id, r.session_id, s.name AS session, r.model_id, m.path AS model, r.text, r.n_tokens,\n"
    "       p.token AS next_token, p.token_id AS next_token_id, p.prob AS next_prob, r.created_at\n"
    "FROM runs r\n"
    "JOIN sessions s ON s.id = r.session_id\n"
    "LEFT JOIN models m ON m.id = r.model_id\n"
    "LEFT JOIN predictions p ON p.run_id = r.id AND p.pos = r.n_tokens - 1\n"
    "  AND p.rank = (SELECT min(q.rank) FROM predictions q WHERE q.run_id = r.id AND q.pos = r.n_tokens - 1);\n"

    "CREATE VIEW findings_view AS\n"
    "SELECT f.id, f.session_id, s.name AS session, f.kind, f.text, f.layer, f.head, f.pos,\n"
    "       t.text AS token, f.token_id, f.run_id, r.text AS run_text, m.path AS model, f.created_at\n"
    "FROM findings f\n"
    "JOIN sessions s ON s.id = f.session_id\n"
    "LEFT JOIN runs r ON r.id = f.run_id\n"
    "LEFT JOIN models m ON m.id = r.model_id\n"
    "LEFT JOIN tokens t ON t.run_id = f.run_id AND t.pos = f.pos;\n"

    "CREATE VIEW head_metrics_view AS\n"
    "SELECT h.run_id, r.session_id, s.name AS session, m.path AS model, m.arch, r.text AS run_text,\n"
    "       h.layer, h.head, h.entropy, h.prev_token, h.first_token, h.duplicate_token, h.induction,\n"
    "       h.max_attn, r.created_at\n"
    "FROM head_metrics h\n"
    "JOIN runs r ON r.id = h.run_id\n"
    "JOIN sessions s ON s.id = r.session_id\n"
    "LEFT JOIN models m ON m.id = r.model_id;\n"

    "CREATE VIEW predictions_view AS\n"
    "SELECT p.run_id, r.text AS run_text, p.pos, t.text AS input_token, p.rank, p.token_id, p.token,\n"
    "       p.prob, p.logit\n"
    "FROM predictions p\n"
    "JOIN runs r ON r.id = p.run_id\n"
    "LEFT JOIN tokens t ON t.run_id = p.run_id AND t.pos = p.pos;\n";

/* v2: the analyses of the circuits issue. Input attributions get a row per (run, method,
 * objective) and a score per input position; other analyses of a run (DLA, patching, ...)
 * keep their parameters and result as JSON; head scans keep per-head scores and labels. */
static const char V2[] =
    "CREATE TABLE attributions (\n"
    "  id          INTEGER PRIMARY KEY,\n"
    "  run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,\n"
    "  method      TEXT NOT NULL,         -- saliency, gxi, ig, occlusion, rollout, attnxnorm\n"
    "  objective   TEXT NOT NULL,         -- logit, logprob, logit_diff\n"
    "  pos         INTEGER NOT NULL,      -- the position whose prediction is explained\n"
    "  target_id   INTEGER,               -- NULL when the method has no target\n"
    "  contrast_id INTEGER,               -- the --vs token of logit_diff\n"
    "  params      TEXT NOT NULL DEFAULT '{}',  -- JSON: steps, baseline, window, ...\n"
    "  delta       REAL,                  -- completeness gap, NULL when the method has none\n"
    "  created_at  TEXT NOT NULL DEFAULT " NOW "\n"
    ");\n"
    "CREATE INDEX attributions_by_run ON attributions(run_id);\n"

    "CREATE TABLE attribution_scores (\n"
    "  attribution_id INTEGER NOT NULL REFERENCES attributions(id) ON DELETE CASCADE,\n"
    "  pos         INTEGER NOT NULL,      -- an input position\n"
    "  score       REAL,\n"
    "  PRIMARY KEY (attribution_id, pos)\n"
    ") WITHOUT ROWID;\n"

    "CREATE TABLE analyses (\n"
    "  id          INTEGER PRIMARY KEY,\n"
    "  run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,\n"
    "  kind        TEXT NOT NULL,         -- dla, patch, ...\n"
    "  params      TEXT NOT NULL DEFAULT '{}',\n"
    "  result      TEXT NOT NULL,         -- JSON\n"
    "  created_at  TEXT NOT NULL DEFAULT " NOW "\n"
    ");\n"
    "CREATE INDEX analyses_by_run ON analyses(run_id, kind);\n"

    "CREATE TABLE head_scans (\n"
    "  id          INTEGER PRIMARY KEY,\n"
    "  model_id    INTEGER REFERENCES models(id),\n"
    "  run_id      INTEGER REFERENCES runs(id) ON DELETE SET NULL,  -- NULL: generated sequences\n"
    "  created_at  TEXT NOT NULL DEFAULT " NOW "\n"
    ");\n"
    "CREATE TABLE head_scan_scores (\n"
    "  scan_id     INTEGER NOT NULL REFERENCES head_scans(id) ON DELETE CASCADE,\n"
    "  layer       INTEGER NOT NULL,\n"
    "  head        INTEGER NOT NULL,\n"
    "  prev_token  REAL,\n"
    "  duplicate_token REAL,\n"
    "  induction   REAL,\n"
    "  first_token REAL,\n"
    "  labels      TEXT NOT NULL DEFAULT '',  -- space-separated, e.g. 'induction prev_token'\n"
    "  PRIMARY KEY (scan_id, layer, head)\n"
    ") WITHOUT ROWID;\n"

    "CREATE VIEW attributions_view AS\n"
    "SELECT a.id, a.run_id, r.text AS run_text, a.method, a.objective, a.pos AS target_pos, a.target_id,\n"
    "       tp.token AS target_token, a.contrast_id, s.pos, t.text AS token, s.score, a.delta, a.params,\n"
    "       a.created_at\n"
    "FROM attributions a\n"
    "JOIN runs r ON r.id = a.run_id\n"
    "JOIN attribution_scores s ON s.attribution_id = a.id\n"
    "LEFT JOIN tokens t ON t.run_id = a.run_id AND t.pos = s.pos\n"
    "LEFT JOIN (SELECT DISTINCT token_id, token FROM predictions) tp ON tp.token_id = a.target_id;\n"

    "CREATE VIEW head_scans_view AS\n"
    "SELECT h.id AS scan_id, m.path AS model, m.arch, h.run_id, s.layer, s.head, s.prev_token,\n"
    "       s.duplicate_token, s.induction, s.first_token, s.labels, h.created_at\n"
    "FROM head_scans h\n"
    "JOIN head_scan_scores s ON s.scan_id = h.id\n"
    "LEFT JOIN models m ON m.id = h.model_id;\n";

/* v3: encoders (BERT, RoBERTa, DistilBERT). A model's head kind; a sentence pair's second
 * text; each token's type (segment id) and role ('cls', 'sep', 'mask', 'pad', 'unk', 'bos',
 * 'eos' or NULL), so that a stored run can be run again exactly and masks found by SQL.
 * Version 2 kept a pair as its text "A --pair B" and no types: what the files it wrote can
 * tell is filled in. Roles come from the token text for encoders (their specials have fixed
 * names); a run whose text has " --pair " and two SEPs or more was a pair (one SEP: a text
 * that held the words, `run -- a --pair b`), and on BERT (the one family with segment
 * embeddings) its tokens after the first [SEP] were type 1. Types given with `run --ids
 * --types` were not kept by version 2 and stay 0. Views for classifiers and masked LMs. */
static const char V3[] =
    "ALTER TABLE models ADD COLUMN head TEXT;  -- 'lm', 'masked-lm', 'classifier', 'none'\n"
    "UPDATE models SET head = CASE\n"
    "  WHEN arch LIKE '%ForMaskedLM' OR arch LIKE '%ForPreTraining' THEN 'masked-lm'\n"
    "  WHEN arch LIKE '%ForSequenceClassification' THEN 'classifier'\n"
    "  WHEN arch IN ('BertModel', 'RobertaModel', 'DistilBertModel') THEN 'none'\n"
    "  ELSE 'lm' END;\n"
    "ALTER TABLE runs ADD COLUMN pair TEXT;  -- a sentence pair's second text (run A --pair B)\n"
    "ALTER TABLE tokens ADD COLUMN type INTEGER NOT NULL DEFAULT 0;  -- token type (segment) id\n"
    "ALTER TABLE tokens ADD COLUMN special TEXT;  -- the token's role: cls, sep, mask, pad, unk, bos, eos; NULL: a word\n"

    "UPDATE tokens SET special = CASE text\n"
    "  WHEN '[CLS]' THEN 'cls' WHEN '<s>' THEN 'cls' WHEN '[SEP]' THEN 'sep' WHEN '</s>' THEN 'sep'\n"
    "  WHEN '[MASK]' THEN 'mask' WHEN '<mask>' THEN 'mask' WHEN '[PAD]' THEN 'pad' WHEN '<pad>' THEN 'pad'\n"
    "  WHEN '[UNK]' THEN 'unk' WHEN '<unk>' THEN 'unk' END\n"
    "WHERE run_id IN (SELECT r.id FROM runs r JOIN models m ON m.id = r.model_id WHERE m.head <> 'lm');\n"
    "UPDATE runs SET pair = substr(text, instr(text, ' --pair ') + 8), text = substr(text, 1, instr(text, ' --pair ') - 1)\n"
    "WHERE instr(text, ' --pair ') > 0\n"
    "  AND (SELECT count(*) FROM tokens t WHERE t.run_id = runs.id AND t.special = 'sep') >= 2;\n"
    "UPDATE tokens SET type = 1\n"
    "WHERE pos > (SELECT min(s.pos) FROM tokens s WHERE s.run_id = tokens.run_id AND s.special = 'sep')\n"
    "  AND run_id IN (SELECT r.id FROM runs r JOIN models m ON m.id = r.model_id\n"
    "                 WHERE r.pair IS NOT NULL AND m.arch LIKE 'Bert%');\n"
    "CREATE INDEX tokens_by_special ON tokens(special) WHERE special IS NOT NULL;\n"

    /* runs_view gains the pair, the head, and what the run's table calls the prediction. */
    "DROP VIEW runs_view;\n"
    "CREATE VIEW runs_view AS\n"
    "SELECT r.id, r.session_id, s.name AS session, r.model_id, m.path AS model, m.head, r.text, r.pair, r.n_tokens,\n"
    "       p.token AS next_token, p.token_id AS next_token_id, p.prob AS next_prob, r.created_at\n"
    "FROM runs r\n"
    "JOIN sessions s ON s.id = r.session_id\n"
    "LEFT JOIN models m ON m.id = r.model_id\n"
    "LEFT JOIN predictions p ON p.run_id = r.id AND p.rank = 1 AND p.pos = CASE m.head\n"
    "  WHEN 'classifier' THEN 0\n"
    "  WHEN 'masked-lm' THEN (SELECT min(t.pos) FROM tokens t WHERE t.run_id = r.id AND t.special = 'mask')\n"
    "  ELSE r.n_tokens - 1 END;\n"

    /* A label's name is the prediction's token of a classifier run; other targets are
     * tokens, named by any prediction of the same model (the target may be outside the
     * run's top few). Version 2 looked them up across all models. */
    "DROP VIEW attributions_view;\n"
    "CREATE VIEW attributions_view AS\n"
    "SELECT a.id, a.run_id, r.text AS run_text, r.pair AS run_pair, a.method, a.objective, a.pos AS target_pos,\n"
    "       a.target_id, coalesce((SELECT p.token FROM predictions p WHERE p.run_id = a.run_id AND p.token_id = a.target_id\n"
    "                              LIMIT 1),\n"
    "                             (SELECT p.token FROM predictions p JOIN runs q ON q.id = p.run_id\n"
    "                              WHERE p.token_id = a.target_id AND q.model_id IS r.model_id LIMIT 1)) AS target_token,\n"
    "       a.contrast_id, s.pos, t.text AS token, t.type, t.special, s.score, a.delta, a.params, a.created_at\n"
    "FROM attributions a\n"
    "JOIN runs r ON r.id = a.run_id\n"
    "JOIN attribution_scores s ON s.attribution_id = a.id\n"
    "LEFT JOIN tokens t ON t.run_id = a.run_id AND t.pos = s.pos;\n"

    /* Every label of every classifier run, and the one that won (rank 1) per run. */
    "CREATE VIEW labels_view AS\n"
    "SELECT p.run_id, r.session_id, m.path AS model, r.text, r.pair, p.token_id AS label_id, p.token AS label,\n"
    "       p.prob, p.logit, p.rank, r.created_at\n"
    "FROM predictions p\n"
    "JOIN runs r ON r.id = p.run_id\n"
    "JOIN models m ON m.id = r.model_id AND m.head = 'classifier';\n"
    "CREATE VIEW classifications AS\n"
    "SELECT run_id, session_id, model, text, pair, label_id, label, prob, logit, created_at\n"
    "FROM labels_view WHERE rank = 1;\n"

    /* Each classifier attribution with the word it credits most: the highest score among
     * the input's non-special tokens ([CLS] and [SEP] collect attention and gradient alike). */
    "CREATE VIEW classification_attributions AS\n"
    "SELECT c.run_id, c.session_id, c.model, c.text, c.pair, c.label AS predicted, c.prob, a.id AS attribution_id,\n"
    "       a.method, a.objective, a.target_id AS explained_id, e.label AS explained,\n"
    "       top.pos AS top_pos, top.text AS top_token, top.score AS top_score, a.created_at\n"
    "FROM classifications c\n"
    "JOIN attributions a ON a.run_id = c.run_id\n"
    "LEFT JOIN labels_view e ON e.run_id = a.run_id AND e.label_id = a.target_id\n"
    "LEFT JOIN (SELECT s.attribution_id, s.pos, t.text, max(s.score) AS score\n"
    "           FROM attribution_scores s JOIN attributions b ON b.id = s.attribution_id\n"
    "           JOIN tokens t ON t.run_id = b.run_id AND t.pos = s.pos\n"
    "           WHERE t.special IS NULL OR t.special = 'unk'\n"
    "           GROUP BY s.attribution_id) top ON top.attribution_id = a.id;\n"

    /* A masked LM's candidates at each mask. */
    "CREATE VIEW fills AS\n"
    "SELECT p.run_id, r.session_id, m.path AS model, r.text, r.pair, p.pos, p.rank, p.token_id, p.token, p.prob,\n"
    "       p.logit, r.created_at\n"
    "FROM predictions p\n"
    "JOIN runs r ON r.id = p.run_id\n"
    "JOIN models m ON m.id = r.model_id AND m.head = 'masked-lm'\n"
    "JOIN tokens t ON t.run_id = p.run_id AND t.pos = p.pos AND t.special = 'mask';\n"

    "DROP VIEW predictions_view;\n"
    "CREATE VIEW predictions_view AS\n"
    "SELECT p.run_id, r.text AS run_text, r.pair AS run_pair, p.pos, t.text AS input_token, t.special AS input_special,\n"
    "       p.rank, p.token_id, p.token, p.prob, p.logit\n"
    "FROM predictions p\n"
    "JOIN runs r ON r.id = p.run_id\n"
    "LEFT JOIN tokens t ON t.run_id = p.run_id AND t.pos = p.pos;\n";

/* v4: encoder-decoders (T5). A run keeps its source and its target: runs.text is the source
 * (what `run` was given, as for every model), runs.target the decoder's text and
 * runs.target_kind how it came ('given': teacher-forced on --target; 'greedy': decoded;
 * NULL: a one-stack model), runs.n_source the source's tokens. tokens, head_metrics,
 * attribution_scores and head_scan_scores gain the side or stack and kind that tell an
 * encoder's row from a decoder's, and so their primary keys change: SQLite cannot alter a
 * key, so each is rebuilt (new table, copy, drop, rename), with the views that read them
 * dropped first and made again at the end (a rename re-reads the views). The
 * key's columns come first, in its order: SQLite 3.40's integrity_check reports NOT NULL
 * columns of a WITHOUT ROWID table as NULL when they sit between or before its key's.
 * One-stack models: their tokens are side 'target' (the positions the run predicts from, as
 * an encoder-decoder's decoder), their heads stack 'dec' for an LM and 'enc' otherwise.
 * cross_maxima keeps where each decoder position looked most in the source, per layer and
 * head and for the heads' mean, so that the `alignments` view answers "which source token
 * did each target token attend to most in layer L".
 * Version 3 kept a T5 run's text as "SOURCE --target TARGET" and its decoder's tokens only:
 * the texts are split; a run without --target was greedy, and one given as ids was greedy
 * exactly when every target token is the previous position's top prediction; the source
 * tokens were never kept (n_source NULL: such a run cannot be run again). */
static const char V4[] =
    "DROP VIEW runs_view;\n"
    "DROP VIEW findings_view;\n"
    "DROP VIEW head_metrics_view;\n"
    "DROP VIEW predictions_view;\n"
    "DROP VIEW attributions_view;\n"
    "DROP VIEW head_scans_view;\n"
    "DROP VIEW classification_attributions;\n"
    "DROP VIEW fills;\n"

    "ALTER TABLE runs ADD COLUMN target TEXT;       -- an encoder-decoder's target text; NULL: none, or given as ids\n"
    "ALTER TABLE runs ADD COLUMN target_kind TEXT CHECK (target_kind IN ('given', 'greedy'));  -- NULL: one stack\n"
    "ALTER TABLE runs ADD COLUMN n_source INTEGER;  -- the source's tokens (side 'source'); NULL: one stack\n"
    "UPDATE runs SET target_kind = 'given', target = substr(text, instr(text, ' --target ') + 10),\n"
    "  text = substr(text, 1, instr(text, ' --target ') - 1)\n"
    "WHERE instr(text, ' --target ') > 0\n"
    "  AND model_id IN (SELECT id FROM models WHERE arch LIKE '%ForConditionalGeneration');\n"
    "UPDATE runs SET target_kind = CASE WHEN text IS NOT NULL OR NOT EXISTS (\n"
    "    SELECT 1 FROM tokens t WHERE t.run_id = runs.id AND t.pos >= 1 AND t.token_id IS NOT\n"
    "      (SELECT p.token_id FROM predictions p WHERE p.run_id = runs.id AND p.pos = t.pos - 1 AND p.rank = 1))\n"
    "  THEN 'greedy' ELSE 'given' END\n"
    "WHERE target_kind IS NULL AND model_id IN (SELECT id FROM models WHERE arch LIKE '%ForConditionalGeneration');\n"

    /* A finding's place: which stack and kind of attention its layer and head are (its pos
     * is then on that stack's side: the encoder's is the source). 'kind' is note or tag. */
    "ALTER TABLE findings ADD COLUMN stack TEXT CHECK (stack IN ('enc', 'dec'));  -- NULL: no place, or from v3\n"
    "ALTER TABLE findings ADD COLUMN attn_kind TEXT CHECK (attn_kind IN ('self', 'cross'));\n"
    "UPDATE findings SET attn_kind = 'self', stack = (SELECT CASE WHEN coalesce(m.head, 'lm') = 'lm' THEN 'dec'\n"
    "  ELSE 'enc' END FROM runs r LEFT JOIN models m ON m.id = r.model_id WHERE r.id = findings.run_id)\n"
    "WHERE run_id IS NOT NULL AND (layer IS NOT NULL OR head IS NOT NULL OR pos IS NOT NULL);\n"

    "CREATE TABLE tokens_v4 (\n"
    "  run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,\n"
    "  side        TEXT NOT NULL DEFAULT 'target' CHECK (side IN ('source', 'target')),\n"
    "                                     -- 'source': an encoder-decoder's encoder input; 'target': the run's positions\n"
    "  pos         INTEGER NOT NULL,      -- from 0 on each side\n"
    "  token_id    INTEGER NOT NULL,\n"
    "  text        TEXT,                  -- the token's raw bytes (may be invalid UTF-8)\n"
    "  type        INTEGER NOT NULL DEFAULT 0,  -- token type (segment) id\n"
    "  special     TEXT,                  -- cls, sep, mask, pad, unk, bos, eos; NULL: a word\n"
    "  PRIMARY KEY (run_id, side, pos)\n"
    ") WITHOUT ROWID;\n"
    "INSERT INTO tokens_v4 (run_id, pos, token_id, text, type, special, side)\n"
    "  SELECT run_id, pos, token_id, text, type, special, 'target' FROM tokens;\n"
    "DROP TABLE tokens;\n"
    "ALTER TABLE tokens_v4 RENAME TO tokens;\n"
    "CREATE INDEX tokens_by_special ON tokens(special) WHERE special IS NOT NULL;\n"

    "CREATE TABLE head_metrics_v4 (\n"
    "  run_id          INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,\n"
    "  stack           TEXT NOT NULL DEFAULT 'dec' CHECK (stack IN ('enc', 'dec')),\n"
    "  kind            TEXT NOT NULL DEFAULT 'self' CHECK (kind IN ('self', 'cross')),\n"
    "  layer           INTEGER NOT NULL,\n"
    "  head            INTEGER NOT NULL,\n"
    "  entropy         REAL,\n"
    "  prev_token      REAL,              -- self-attention's metrics: NULL for cross\n"
    "  first_token     REAL,\n"
    "  duplicate_token REAL,\n"
    "  induction       REAL,\n"
    "  max_attn        REAL,\n"
    "  source_eos      REAL,              -- cross-attention's metrics (heads.h): NULL for self\n"
    "  diagonal        REAL,\n"
    "  monotonic       REAL,\n"
    "  coverage        REAL,\n"
    "  PRIMARY KEY (run_id, stack, kind, layer, head)\n"
    ") WITHOUT ROWID;\n"
    "INSERT INTO head_metrics_v4 (run_id, layer, head, entropy, prev_token, first_token, duplicate_token, induction,\n"
    "                             max_attn, stack)\n"
    "  SELECT h.run_id, h.layer, h.head, h.entropy, h.prev_token, h.first_token, h.duplicate_token, h.induction,\n"
    "         h.max_attn, CASE WHEN coalesce(m.head, 'lm') = 'lm' THEN 'dec' ELSE 'enc' END\n"
    "  FROM head_metrics h JOIN runs r ON r.id = h.run_id LEFT JOIN models m ON m.id = r.model_id;\n"
    "DROP TABLE head_metrics;\n"
    "ALTER TABLE head_metrics_v4 RENAME TO head_metrics;\n"

    "CREATE TABLE attribution_scores_v4 (\n"
    "  attribution_id INTEGER NOT NULL REFERENCES attributions(id) ON DELETE CASCADE,\n"
    "  side        TEXT NOT NULL DEFAULT 'target' CHECK (side IN ('source', 'target')),\n"
    "  pos         INTEGER NOT NULL,      -- an input position on its side\n"
    "  score       REAL,\n"
    "  PRIMARY KEY (attribution_id, side, pos)\n"
    ") WITHOUT ROWID;\n"
    "INSERT INTO attribution_scores_v4 (attribution_id, pos, score) SELECT attribution_id, pos, score FROM attribution_scores;\n"
    "DROP TABLE attribution_scores;\n"
    "ALTER TABLE attribution_scores_v4 RENAME TO attribution_scores;\n"

    "CREATE TABLE head_scan_scores_v4 (\n"
    "  scan_id     INTEGER NOT NULL REFERENCES head_scans(id) ON DELETE CASCADE,\n"
    "  stack       TEXT NOT NULL DEFAULT 'dec' CHECK (stack IN ('enc', 'dec')),\n"
    "  kind        TEXT NOT NULL DEFAULT 'self' CHECK (kind IN ('self', 'cross')),\n"
    "  layer       INTEGER NOT NULL,\n"
    "  head        INTEGER NOT NULL,\n"
    "  prev_token  REAL,\n"
    "  duplicate_token REAL,\n"
    "  induction   REAL,\n"
    "  first_token REAL,\n"
    "  labels      TEXT NOT NULL DEFAULT '',  -- space-separated, e.g. 'induction prev_token'\n"
    "  next_token  REAL,                  -- an encoder's (Clark et al.) and an encoder-decoder's scores\n"
    "  cls_sink    REAL,\n"
    "  sep_sink    REAL,\n"
    "  broad       REAL,\n"
    "  source_eos  REAL,\n"
    "  aligned     REAL,                  -- cross-attention on the copy task's alignment\n"
    "  diagonal    REAL,\n"
    "  monotonic   REAL,\n"
    "  coverage    REAL,\n"
    "  PRIMARY KEY (scan_id, stack, kind, layer, head)\n"
    ") WITHOUT ROWID;\n"
    "INSERT INTO head_scan_scores_v4 (scan_id, layer, head, prev_token, duplicate_token, induction, first_token, labels,\n"
    "                                 stack)\n"
    "  SELECT s.scan_id, s.layer, s.head, s.prev_token, s.duplicate_token, s.induction, s.first_token, s.labels,\n"
    "         CASE WHEN coalesce(m.head, 'lm') = 'lm' THEN 'dec' ELSE 'enc' END\n"
    "  FROM head_scan_scores s JOIN head_scans h ON h.id = s.scan_id LEFT JOIN models m ON m.id = h.model_id;\n"
    "DROP TABLE head_scan_scores;\n"
    "ALTER TABLE head_scan_scores_v4 RENAME TO head_scan_scores;\n"

    "CREATE TABLE cross_maxima (          -- where each decoder position attends most in the source\n"
    "  run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,\n"
    "  layer       INTEGER NOT NULL,      -- a decoder layer\n"
    "  head        INTEGER,               -- NULL: the mean of the layer's heads\n"
    "  target_pos  INTEGER NOT NULL,      -- the decoder position (query), tokens side 'target'\n"
    "  source_pos  INTEGER NOT NULL,      -- its most attended source position, tokens side 'source'\n"
    "  weight      REAL                   -- the attention there\n"
    ");\n"
    "CREATE INDEX cross_maxima_by_run ON cross_maxima(run_id, layer, target_pos);\n"

    /* The views again, reading the new columns; a token is joined on its side. */
    "CREATE VIEW runs_view AS\n"
    "SELECT r.id, r.session_id, s.name AS session, r.model_id, m.path AS model, m.head, r.text, r.pair,\n"
    "       CASE WHEN r.target_kind IS NOT NULL THEN r.text END AS source, r.target, r.target_kind, r.n_source,\n"
    "       r.n_tokens, p.token AS next_token, p.token_id AS next_token_id, p.prob AS next_prob, r.created_at\n"
    "FROM runs r\n"
    "JOIN sessions s ON s.id = r.session_id\n"
    "LEFT JOIN models m ON m.id = r.model_id\n"
    "LEFT JOIN predictions p ON p.run_id = r.id AND p.rank = 1 AND p.pos = CASE m.head\n"
    "  WHEN 'classifier' THEN 0\n"
    "  WHEN 'masked-lm' THEN (SELECT min(t.pos) FROM tokens t WHERE t.run_id = r.id AND t.side = 'target'\n"
    "                         AND t.special = 'mask')\n"
    "  ELSE r.n_tokens - 1 END;\n"

    "CREATE VIEW findings_view AS\n"
    "SELECT f.id, f.session_id, s.name AS session, f.kind, f.text, f.stack, f.attn_kind, f.layer, f.head, f.pos,\n"
    "       t.text AS token, f.token_id, f.run_id, r.text AS run_text, m.path AS model, f.created_at\n"
    "FROM findings f\n"
    "JOIN sessions s ON s.id = f.session_id\n"
    "LEFT JOIN runs r ON r.id = f.run_id\n"
    "LEFT JOIN models m ON m.id = r.model_id\n"
    "LEFT JOIN tokens t ON t.run_id = f.run_id AND t.pos = f.pos\n"
    "  AND t.side = CASE WHEN f.stack = 'enc' AND r.target_kind IS NOT NULL THEN 'source' ELSE 'target' END;\n"

    "CREATE VIEW head_metrics_view AS\n"
    "SELECT h.run_id, r.session_id, s.name AS session, m.path AS model, m.arch, r.text AS run_text,\n"
    "       h.stack, h.kind, h.layer, h.head, h.entropy, h.prev_token, h.first_token, h.duplicate_token, h.induction,\n"
    "       h.max_attn, h.source_eos, h.diagonal, h.monotonic, h.coverage, r.created_at\n"
    "FROM head_metrics h\n"
    "JOIN runs r ON r.id = h.run_id\n"
    "JOIN sessions s ON s.id = r.session_id\n"
    "LEFT JOIN models m ON m.id = r.model_id;\n"

    "CREATE VIEW predictions_view AS\n"
    "SELECT p.run_id, r.text AS run_text, r.pair AS run_pair, p.pos, t.text AS input_token, t.special AS input_special,\n"
    "       p.rank, p.token_id, p.token, p.prob, p.logit\n"
    "FROM predictions p\n"
    "JOIN runs r ON r.id = p.run_id\n"
    "LEFT JOIN tokens t ON t.run_id = p.run_id AND t.side = 'target' AND t.pos = p.pos;\n"

    "CREATE VIEW attributions_view AS\n"
    "SELECT a.id, a.run_id, r.text AS run_text, r.pair AS run_pair, a.method, a.objective, a.pos AS target_pos,\n"
    "       a.target_id, coalesce((SELECT p.token FROM predictions p WHERE p.run_id = a.run_id AND p.token_id = a.target_id\n"
    "                              LIMIT 1),\n"
    "                             (SELECT p.token FROM predictions p JOIN runs q ON q.id = p.run_id\n"
    "                              WHERE p.token_id = a.target_id AND q.model_id IS r.model_id LIMIT 1)) AS target_token,\n"
    "       a.contrast_id, s.side, s.pos, t.text AS token, t.type, t.special, s.score, a.delta, a.params, a.created_at\n"
    "FROM attributions a\n"
    "JOIN runs r ON r.id = a.run_id\n"
    "JOIN attribution_scores s ON s.attribution_id = a.id\n"
    "LEFT JOIN tokens t ON t.run_id = a.run_id AND t.side = s.side AND t.pos = s.pos;\n"

    "CREATE VIEW head_scans_view AS\n"
    "SELECT h.id AS scan_id, m.path AS model, m.arch, h.run_id, s.stack, s.kind, s.layer, s.head, s.prev_token,\n"
    "       s.duplicate_token, s.induction, s.first_token, s.next_token, s.cls_sink, s.sep_sink, s.broad,\n"
    "       s.source_eos, s.aligned, s.diagonal, s.monotonic, s.coverage, s.labels, h.created_at\n"
    "FROM head_scans h\n"
    "JOIN head_scan_scores s ON s.scan_id = h.id\n"
    "LEFT JOIN models m ON m.id = h.model_id;\n"

    "CREATE VIEW classification_attributions AS\n"
    "SELECT c.run_id, c.session_id, c.model, c.text, c.pair, c.label AS predicted, c.prob, a.id AS attribution_id,\n"
    "       a.method, a.objective, a.target_id AS explained_id, e.label AS explained,\n"
    "       top.pos AS top_pos, top.text AS top_token, top.score AS top_score, a.created_at\n"
    "FROM classifications c\n"
    "JOIN attributions a ON a.run_id = c.run_id\n"
    "LEFT JOIN labels_view e ON e.run_id = a.run_id AND e.label_id = a.target_id\n"
    "LEFT JOIN (SELECT s.attribution_id, s.pos, t.text, max(s.score) AS score\n"
    "           FROM attribution_scores s JOIN attributions b ON b.id = s.attribution_id\n"
    "           JOIN tokens t ON t.run_id = b.run_id AND t.side = s.side AND t.pos = s.pos\n"
    "           WHERE t.special IS NULL OR t.special = 'unk'\n"
    "           GROUP BY s.attribution_id) top ON top.attribution_id = a.id;\n"

    "CREATE VIEW fills AS\n"
    "SELECT p.run_id, r.session_id, m.path AS model, r.text, r.pair, p.pos, p.rank, p.token_id, p.token, p.prob,\n"
    "       p.logit, r.created_at\n"
    "FROM predictions p\n"
    "JOIN runs r ON r.id = p.run_id\n"
    "JOIN models m ON m.id = r.model_id AND m.head = 'masked-lm'\n"
    "JOIN tokens t ON t.run_id = p.run_id AND t.side = 'target' AND t.pos = p.pos AND t.special = 'mask';\n"

    /* Which source token each target token attended to most: per layer and head, and for
     * the layer's heads together (head NULL: the argmax of their mean). */
    "CREATE VIEW alignments AS\n"
    "SELECT x.run_id, x.layer, x.head, x.target_pos, tt.text AS target_token, x.source_pos, st.text AS source_token,\n"
    "       x.weight\n"
    "FROM cross_maxima x\n"
    "LEFT JOIN tokens tt ON tt.run_id = x.run_id AND tt.side = 'target' AND tt.pos = x.target_pos\n"
    "LEFT JOIN tokens st ON st.run_id = x.run_id AND st.side = 'source' AND st.pos = x.source_pos;\n";

/* Version 5: attribution series, every token of a run from one position on explained in turn
 * (attr --from, generate --attr): a step per token, each an attribution with its own scores,
 * plus the step's probability, entropy and contrast; attribution_matrix lays them out. And
 * eval's judgements of attributions (evaluations, their curves, evaluations_view). */
static const char V5[] =
    "CREATE TABLE attribution_series (\n"
    "  id          INTEGER PRIMARY KEY,\n"
    "  run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,\n"
    "  method      TEXT NOT NULL,\n"
    "  from_pos    INTEGER NOT NULL,      -- the first token explained (a decoder position)\n"
    "  generated   INTEGER NOT NULL DEFAULT 0 CHECK (generated IN (0, 1)),  -- 1: generate --attr made them\n"
    "  created_at  TEXT NOT NULL DEFAULT " NOW "\n"
    ");\n"
    "CREATE INDEX attribution_series_by_run ON attribution_series(run_id);\n"
    "CREATE TABLE attribution_steps (\n"
    "  series_id      INTEGER NOT NULL REFERENCES attribution_series(id) ON DELETE CASCADE,\n"
    "  step           INTEGER NOT NULL,   -- 0: the token at from_pos\n"
    "  attribution_id INTEGER NOT NULL REFERENCES attributions(id) ON DELETE CASCADE,\n"
    "  prob           REAL,               -- the token's probability where it was predicted\n"
    "  entropy        REAL,               -- of that distribution, in nats\n"
    "  contrast_diff  REAL,               -- p(token) - p(contrast), with --vs\n"
    "  PRIMARY KEY (series_id, step)\n"
    ") WITHOUT ROWID;\n"
    "CREATE VIEW attribution_matrix AS\n"
    "SELECT g.id AS series_id, g.run_id, g.method, g.generated, st.step, a.pos + 1 AS explained_pos,\n"
    "       a.target_id AS explained_id, x.text AS explained_token, st.prob, st.entropy, st.contrast_diff, s.side,\n"
    "       s.pos, t.text AS token, s.score, a.delta, a.id AS attribution_id\n"
    "FROM attribution_series g\n"
    "JOIN attribution_steps st ON st.series_id = g.id\n"
    "JOIN attributions a ON a.id = st.attribution_id\n"
    "JOIN attribution_scores s ON s.attribution_id = a.id\n"
    "LEFT JOIN tokens x ON x.run_id = g.run_id AND x.side = 'target' AND x.pos = a.pos + 1\n"
    "LEFT JOIN tokens t ON t.run_id = g.run_id AND t.side = s.side AND t.pos = s.pos;\n"

    /* eval: how faithful an attribution is, with the attribution it judges; its curves. */
    "CREATE TABLE evaluations (\n"
    "  id             INTEGER PRIMARY KEY,\n"
    "  attribution_id INTEGER NOT NULL REFERENCES attributions(id) ON DELETE CASCADE,\n"
    "  f              TEXT NOT NULL,      -- what is judged: 'prob' (the target's) or 'logit_diff'\n"
    "  remove         TEXT NOT NULL,      -- what removing a position means: delete, mask or baseline\n"
    "  remove_token   INTEGER,            -- the token put in (mask, baseline); NULL: none or the zero vector\n"
    "  bins           INTEGER NOT NULL,\n"
    "  f_x            REAL,               -- f on the whole input\n"
    "  f_empty        REAL,               -- f with every removable position removed\n"
    "  comprehensiveness_aopc REAL,\n"
    "  sufficiency_aopc       REAL,\n"
    "  deletion_auc           REAL,\n"
    "  insertion_auc          REAL,\n"
    "  logodds_drop           REAL,\n"
    "  logodds_pct            INTEGER,\n"
    "  loo_tau                REAL,       -- Kendall's tau-b against leave-one-out\n"
    "  infidelity             REAL,\n"
    "  max_sensitivity        REAL,\n"
    "  settings       TEXT NOT NULL DEFAULT '{}',  -- JSON: infidelity's and max-sensitivity's samples, sigma, radius, seed\n"
    "  created_at     TEXT NOT NULL DEFAULT " NOW "\n"
    ");\n"
    "CREATE INDEX evaluations_by_attribution ON evaluations(attribution_id);\n"
    "CREATE TABLE evaluation_curves (\n"
    "  evaluation_id  INTEGER NOT NULL REFERENCES evaluations(id) ON DELETE CASCADE,\n"
    "  curve          TEXT NOT NULL,      -- comprehensiveness, sufficiency (x: percent removed or kept),\n"
    "                                     -- deletion, insertion (x: positions removed or kept)\n"
    "  i              INTEGER NOT NULL,\n"
    "  x              REAL NOT NULL,\n"
    "  value          REAL,\n"
    "  PRIMARY KEY (evaluation_id, curve, i)\n"
    ") WITHOUT ROWID;\n"
    "CREATE VIEW evaluations_view AS\n"
    "SELECT e.id, a.run_id, r.session_id, r.text AS run_text, m.path AS model, a.method, a.objective, a.pos AS target_pos,\n"
    "       a.target_id, a.contrast_id, e.attribution_id, e.f, e.remove, e.remove_token, e.bins, e.f_x, e.f_empty,\n"
    "       e.comprehensiveness_aopc, e.sufficiency_aopc, e.deletion_auc, e.insertion_auc, e.logodds_drop, e.logodds_pct,\n"
    "       e.loo_tau, e.infidelity, e.max_sensitivity, e.settings, a.params, e.created_at\n"
    "FROM evaluations e\n"
    "JOIN attributions a ON a.id = e.attribution_id\n"
    "JOIN runs r ON r.id = a.run_id\n"
    "LEFT JOIN models m ON m.id = r.model_id;\n";

/* Version 6: datasets (`dataset FILE`): a dataset run's settings and identity, its items
 * (each linked to the run it made), the aggregates kept over its items (each unit's top
 * examples, token histograms and quantile samples, head metrics' means and spreads), the
 * checkpoint that --resume continues from, and which shards a merged dataset holds. */
static const char V6[] =
    "CREATE TABLE datasets (\n"
    "  id          INTEGER PRIMARY KEY,\n"
    "  uid         TEXT NOT NULL UNIQUE,  -- this dataset run's fingerprint: what merge knows a shard by\n"
    "  name        TEXT NOT NULL,         -- the file's base name\n"
    "  path        TEXT NOT NULL,\n"
    "  file_fingerprint TEXT NOT NULL,    -- 64-bit FNV-1a of the file's bytes, 16 hex digits\n"
    "  format      TEXT NOT NULL CHECK (format IN ('text', 'jsonl', 'csv')),\n"
    "  model_id    INTEGER REFERENCES models(id),\n"
    "  model_fingerprint TEXT NOT NULL,\n"
    "  session_id  INTEGER REFERENCES sessions(id),  -- where its runs are\n"
    "  commands    TEXT NOT NULL DEFAULT '[]',  -- JSON: the --each command lines, in order\n"
    "  settings    TEXT NOT NULL DEFAULT '{}',  -- JSON: format, fields, skip, limit, sample, seed, track, k, samples\n"
    "  shard_i     INTEGER NOT NULL,      -- 1..shard_n; 0: merged from shards (dataset_shards)\n"
    "  shard_n     INTEGER NOT NULL CHECK (shard_n >= 1),\n"
    "  k           INTEGER NOT NULL,      -- top examples kept per unit\n"
    "  n_items     INTEGER NOT NULL DEFAULT 0,  -- items done (run or skipped)\n"
    "  n_skipped   INTEGER NOT NULL DEFAULT 0,  -- items not run (longer than the context)\n"
    "  n_tokens    INTEGER NOT NULL DEFAULT 0,  -- tokens run\n"
    "  created_at  TEXT NOT NULL DEFAULT " NOW ",\n"
    "  finished_at TEXT                   -- NULL while it runs, or when it was interrupted (--resume)\n"
    ");\n"
    "CREATE TABLE dataset_shards (        -- the shards a merged dataset (shard_i 0) holds\n"
    "  dataset_id  INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,\n"
    "  shard_i     INTEGER NOT NULL,\n"
    "  shard_n     INTEGER NOT NULL,\n"
    "  uid         TEXT NOT NULL,         -- the shard's datasets.uid\n"
    "  source      TEXT NOT NULL,         -- the shard's database file, as merge was given it\n"
    "  merged_at   TEXT NOT NULL DEFAULT " NOW ",\n"
    "  PRIMARY KEY (dataset_id, shard_i)\n"
    ") WITHOUT ROWID;\n"
    "CREATE TABLE dataset_items (\n"
    "  dataset_id  INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,\n"
    "  item        INTEGER NOT NULL,      -- its index among the file's items, from 0\n"
    "  line        INTEGER,               -- the line it starts on\n"
    "  text        TEXT NOT NULL,\n"
    "  pair        TEXT,\n"
    "  label       TEXT,\n"
    "  run_id      INTEGER REFERENCES runs(id) ON DELETE SET NULL,\n"
    "  n_tokens    INTEGER,\n"
    "  skipped     TEXT,                  -- why it was not run; NULL: it was\n"
    "  PRIMARY KEY (dataset_id, item)\n"
    ") WITHOUT ROWID;\n"
    "CREATE INDEX dataset_items_by_run ON dataset_items(run_id);\n"
    "CREATE TABLE dataset_checkpoints (   -- the aggregates as of the last committed item\n"
    "  dataset_id  INTEGER PRIMARY KEY REFERENCES datasets(id) ON DELETE CASCADE,\n"
    "  last_item   INTEGER NOT NULL,      -- -1: none yet\n"
    "  state       BLOB NOT NULL\n"
    ");\n"
    "CREATE TABLE unit_examples (         -- each unit's top examples, rank 1 the highest value\n"
    "  dataset_id  INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,\n"
    "  unit_kind   TEXT NOT NULL CHECK (unit_kind IN ('neuron', 'head')),\n"
    "  layer       INTEGER NOT NULL,\n"
    "  unit        INTEGER NOT NULL,      -- the neuron, or the head\n"
    "  rank        INTEGER NOT NULL,\n"
    "  item        INTEGER NOT NULL,\n"
    "  pos         INTEGER NOT NULL,      -- the neuron's position, the head's query\n"
    "  key_pos     INTEGER,               -- the head's key; NULL for neurons\n"
    "  token_id    INTEGER NOT NULL,\n"
    "  token       TEXT,\n"
    "  key_token_id INTEGER,\n"
    "  key_token   TEXT,\n"
    "  value       REAL NOT NULL,         -- the activation, or the attention weight\n"
    "  PRIMARY KEY (dataset_id, unit_kind, layer, unit, rank)\n"
    ") WITHOUT ROWID;\n"
    "CREATE TABLE unit_histograms (       -- tokens per value bin (zero counts left out)\n"
    "  dataset_id  INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,\n"
    "  unit_kind   TEXT NOT NULL DEFAULT 'neuron',\n"
    "  layer       INTEGER NOT NULL,\n"
    "  unit        INTEGER NOT NULL,\n"
    "  bin         INTEGER NOT NULL,      -- 0: <= 0; 1: (0, 1e-3); 2..25: quarter decades; 26: >= 1e3\n"
    "  lower       REAL,                  -- the bin's lower edge (NULL: -inf)\n"
    "  count       INTEGER NOT NULL,\n"
    "  PRIMARY KEY (dataset_id, unit_kind, layer, unit, bin)\n"
    ") WITHOUT ROWID;\n"
    "CREATE TABLE unit_quantile_samples ( -- per unit and bin of the item's value, the items of smallest hash\n"
    "  dataset_id  INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,\n"
    "  unit_kind   TEXT NOT NULL CHECK (unit_kind IN ('neuron', 'head')),\n"
    "  layer       INTEGER NOT NULL,\n"
    "  unit        INTEGER NOT NULL,\n"
    "  bin         INTEGER NOT NULL,\n"
    "  hash        INTEGER NOT NULL,\n"
    "  item        INTEGER NOT NULL,\n"
    "  pos         INTEGER NOT NULL,\n"
    "  key_pos     INTEGER,\n"
    "  token_id    INTEGER NOT NULL,\n"
    "  token       TEXT,\n"
    "  key_token_id INTEGER,\n"
    "  key_token   TEXT,\n"
    "  value       REAL NOT NULL,\n"
    "  PRIMARY KEY (dataset_id, unit_kind, layer, unit, bin, hash, item)\n"
    ") WITHOUT ROWID;\n"
    "CREATE TABLE head_metric_stats (     -- a head metric over the dataset's runs\n"
    "  dataset_id  INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,\n"
    "  layer       INTEGER NOT NULL,\n"
    "  head        INTEGER NOT NULL,\n"
    "  metric      TEXT NOT NULL,         -- entropy, prev_token, first_token, duplicate_token, induction, max_attn\n"
    "  n           INTEGER NOT NULL,      -- runs with a value\n"
    "  mean        REAL,\n"
    "  std         REAL,                  -- population standard deviation\n"
    "  PRIMARY KEY (dataset_id, layer, head, metric)\n"
    ") WITHOUT ROWID;\n"

    "CREATE VIEW dataset_runs AS\n"
    "SELECT i.dataset_id, d.name AS dataset, i.item, i.text, i.pair, i.label, i.run_id, i.n_tokens, i.skipped\n"
    "FROM dataset_items i JOIN datasets d ON d.id = i.dataset_id;\n"
    "CREATE VIEW unit_examples_view AS\n"
    "SELECT e.dataset_id, d.name AS dataset, e.unit_kind, e.layer, e.unit, e.rank, e.item, i.text, i.run_id, e.pos,\n"
    "       e.token, e.key_pos, e.key_token, e.value\n"
    "FROM unit_examples e\n"
    "JOIN datasets d ON d.id = e.dataset_id\n"
    "LEFT JOIN dataset_items i ON i.dataset_id = e.dataset_id AND i.item = e.item;\n"
    "CREATE VIEW neuron_density AS\n"
    "SELECT dataset_id, layer, unit AS neuron, sum(count) AS tokens,\n"
    "       1.0 - coalesce(sum(CASE WHEN bin = 0 THEN count END), 0) * 1.0 / sum(count) AS density\n"
    "FROM unit_histograms WHERE unit_kind = 'neuron' GROUP BY dataset_id, layer, unit;\n"
    "CREATE VIEW dataset_attributions AS\n"
    "SELECT i.dataset_id, i.item, i.text AS item_text, i.label, a.run_id, a.id AS attribution_id, a.method, a.objective,\n"
    "       a.pos AS target_pos, a.target_id, s.side, s.pos, t.text AS token, s.score\n"
    "FROM dataset_items i\n"
    "JOIN attributions a ON a.run_id = i.run_id\n"
    "JOIN attribution_scores s ON s.attribution_id = a.id\n"
    "LEFT JOIN tokens t ON t.run_id = a.run_id AND t.side = s.side AND t.pos = s.pos;\n";

/* Version 7: an item whose --each command failed is kept with its error (its run undone)
 * and counted in datasets.n_failed; a unit's examples and samples are kept per metric
 * (a head's by its strongest key and by each head metric), so unit_examples and
 * unit_quantile_samples are rebuilt with `metric` in their keys; unit_histograms also holds
 * heads' attention weights (unit_kind 'head', its own bins: `lower` gives each edge). */
static const char V7[] =
    "DROP VIEW unit_examples_view;\n"
    "DROP VIEW dataset_runs;\n"
    "ALTER TABLE datasets ADD COLUMN n_failed INTEGER NOT NULL DEFAULT 0;  -- items whose --each failed\n"
    "ALTER TABLE dataset_items ADD COLUMN error TEXT;  -- why its --each failed (its run undone); NULL: it did not\n"
    "CREATE TABLE unit_examples_v7 (      -- each unit's top examples, rank 1 the highest value\n"
    "  dataset_id  INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,\n"
    "  unit_kind   TEXT NOT NULL CHECK (unit_kind IN ('neuron', 'head')),\n"
    "  layer       INTEGER NOT NULL,\n"
    "  unit        INTEGER NOT NULL,      -- the neuron, or the head\n"
    "  metric      TEXT NOT NULL,         -- what value ranks them: 'activation' (neurons), 'key' (a head's\n"
    "                                     -- strongest key) or a head metric (entropy, prev_token, induction, ...)\n"
    "  rank        INTEGER NOT NULL,\n"
    "  item        INTEGER NOT NULL,\n"
    "  pos         INTEGER NOT NULL,      -- the neuron's position, the head's query\n"
    "  key_pos     INTEGER,               -- the head's key; NULL for neurons (and entropy)\n"
    "  token_id    INTEGER NOT NULL,\n"
    "  token       TEXT,\n"
    "  key_token_id INTEGER,\n"
    "  key_token   TEXT,\n"
    "  value       REAL NOT NULL,         -- the activation, the attention weight, or the metric on the item\n"
    "  PRIMARY KEY (dataset_id, unit_kind, layer, unit, metric, rank)\n"
    ") WITHOUT ROWID;\n"
    "INSERT INTO unit_examples_v7 SELECT dataset_id, unit_kind, layer, unit,\n"
    "  CASE unit_kind WHEN 'neuron' THEN 'activation' ELSE 'key' END, rank, item, pos, key_pos, token_id, token,\n"
    "  key_token_id, key_token, value FROM unit_examples;\n"
    "DROP TABLE unit_examples;\n"
    "ALTER TABLE unit_examples_v7 RENAME TO unit_examples;\n"
    "CREATE TABLE unit_quantile_samples_v7 ( -- per unit, metric and bin of the item's value, the items of smallest hash\n"
    "  dataset_id  INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,\n"
    "  unit_kind   TEXT NOT NULL CHECK (unit_kind IN ('neuron', 'head')),\n"
    "  layer       INTEGER NOT NULL,\n"
    "  unit        INTEGER NOT NULL,\n"
    "  metric      TEXT NOT NULL,\n"
    "  bin         INTEGER NOT NULL,\n"
    "  hash        INTEGER NOT NULL,\n"
    "  item        INTEGER NOT NULL,\n"
    "  pos         INTEGER NOT NULL,\n"
    "  key_pos     INTEGER,\n"
    "  token_id    INTEGER NOT NULL,\n"
    "  token       TEXT,\n"
    "  key_token_id INTEGER,\n"
    "  key_token   TEXT,\n"
    "  value       REAL NOT NULL,\n"
    "  PRIMARY KEY (dataset_id, unit_kind, layer, unit, metric, bin, hash, item)\n"
    ") WITHOUT ROWID;\n"
    "INSERT INTO unit_quantile_samples_v7 SELECT dataset_id, unit_kind, layer, unit,\n"
    "  CASE unit_kind WHEN 'neuron' THEN 'activation' ELSE 'key' END, bin, hash, item, pos, key_pos, token_id, token,\n"
    "  key_token_id, key_token, value FROM unit_quantile_samples;\n"
    "DROP TABLE unit_quantile_samples;\n"
    "ALTER TABLE unit_quantile_samples_v7 RENAME TO unit_quantile_samples;\n"
    "CREATE VIEW dataset_runs AS\n"
    "SELECT i.dataset_id, d.name AS dataset, i.item, i.text, i.pair, i.label, i.run_id, i.n_tokens, i.skipped, i.error\n"
    "FROM dataset_items i JOIN datasets d ON d.id = i.dataset_id;\n"
    "CREATE VIEW unit_examples_view AS\n"
    "SELECT e.dataset_id, d.name AS dataset, e.unit_kind, e.layer, e.unit, e.metric, e.rank, e.item, i.text, i.run_id,\n"
    "       e.pos, e.token, e.key_pos, e.key_token, e.value\n"
    "FROM unit_examples e\n"
    "JOIN datasets d ON d.id = e.dataset_id\n"
    "LEFT JOIN dataset_items i ON i.dataset_id = e.dataset_id AND i.item = e.item;\n"
    "CREATE VIEW dataset_failures AS\n"
    "SELECT i.dataset_id, d.name AS dataset, i.item, i.line, i.text, i.error\n"
    "FROM dataset_items i JOIN datasets d ON d.id = i.dataset_id WHERE i.error IS NOT NULL;\n"
    "CREATE VIEW head_density AS\n"
    "SELECT dataset_id, layer, unit AS head, sum(count) AS weights,\n"
    "       sum(CASE WHEN lower >= 0.5 THEN count ELSE 0 END) * 1.0 / sum(count) AS strong\n"
    "FROM unit_histograms WHERE unit_kind = 'head' GROUP BY dataset_id, layer, unit;\n";

/* Version 8: feature activations. A run recorded while dictionaries are loaded (sae load)
 * keeps, per dictionary and position, its k strongest active features (k per dictionary,
 * sae load --store-k, default 32); saes names the dictionaries, run_saes says which a run
 * kept and with which k (so that a position with no row had no active feature, rather than
 * was not recorded), and an index by (sae, feature, act) answers "where does feature F fire
 * most". */
static const char V8[] =
    "CREATE TABLE saes (\n"
    "  id           INTEGER PRIMARY KEY,\n"
    "  name         TEXT NOT NULL,        -- the session's name for it (sae load --name)\n"
    "  path         TEXT NOT NULL,        -- as given to sae load\n"
    "  site         TEXT NOT NULL,        -- the site read, blocks.L.KIND\n"
    "  out_site     TEXT,                 -- a transcoder's written site; NULL for an SAE\n"
    "  architecture TEXT NOT NULL,        -- standard, jumprelu, topk, gated, groupmax\n"
    "  d_in         INTEGER NOT NULL,\n"
    "  d_sae        INTEGER NOT NULL,\n"
    "  created_at   TEXT NOT NULL DEFAULT " NOW ",\n"
    "  UNIQUE (name, path, site)\n"
    ");\n"
    "CREATE TABLE run_saes (              -- the dictionaries whose features a run kept\n"
    "  run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,\n"
    "  sae_id      INTEGER NOT NULL REFERENCES saes(id),\n"
    "  k           INTEGER NOT NULL CHECK (k >= 1),  -- at most k features kept per position\n"
    "  PRIMARY KEY (run_id, sae_id)\n"
    ") WITHOUT ROWID;\n"
    "CREATE TABLE feature_activations (   -- per position its strongest active features, rank 1 the strongest\n"
    "  run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,\n"
    "  sae_id      INTEGER NOT NULL REFERENCES saes(id),\n"
    "  pos         INTEGER NOT NULL,\n"
    "  rank        INTEGER NOT NULL,\n"
    "  feature     INTEGER NOT NULL,\n"
    "  act         REAL NOT NULL,         -- its activation (non-zero)\n"
    "  PRIMARY KEY (run_id, sae_id, pos, rank)\n"
    ") WITHOUT ROWID;\n"
    "CREATE INDEX feature_activations_by_feature ON feature_activations(sae_id, feature, act DESC);\n"
    "CREATE VIEW feature_acts AS\n"
    "SELECT f.run_id, s.name AS sae, s.site, f.pos, t.token_id, t.text AS token, f.feature, f.act, f.rank\n"
    "FROM feature_activations f\n"
    "JOIN saes s ON s.id = f.sae_id\n"
    "LEFT JOIN tokens t ON t.run_id = f.run_id AND t.side = 'target' AND t.pos = f.pos;\n"
    "CREATE VIEW feature_summary AS       -- per dictionary and feature: where it was kept, and how strongly\n"
    "SELECT s.id AS sae_id, s.name AS sae, s.site, f.feature, count(*) AS tokens, count(DISTINCT f.run_id) AS runs,\n"
    "       max(f.act) AS max_act, avg(f.act) AS mean_act\n"
    "FROM feature_activations f JOIN saes s ON s.id = f.sae_id GROUP BY f.sae_id, f.feature;\n";

/* Version 9: a unit's aggregates in one row (unit_stats: its top examples, quantile samples
 * and histogram as JSON arrays, unit_rows.h), written at a dataset's end in a few tens of
 * thousands of rows where a row per example, sample and bin took 1.6 million for GPT-2 small.
 * unit_examples, unit_quantile_samples and unit_histograms become views that expand them into
 * the rows and columns they had (the tokens' text from the items' runs); every row of a
 * schema-8 file is kept. */
static const char V9[] =
    "CREATE TABLE unit_stats (            -- one row per unit and metric: its aggregates over the dataset\n"
    "  id          INTEGER PRIMARY KEY,   -- (a rowid table: a unit's row fits its page, where a WITHOUT ROWID\n"
    "                                     -- table's rows over 1 kB spill into overflow pages)\n"
    "  dataset_id  INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,\n"
    "  unit_kind   TEXT NOT NULL CHECK (unit_kind IN ('neuron', 'head', 'feature')),\n"
    "  layer       INTEGER NOT NULL,\n"
    "  unit        INTEGER NOT NULL,      -- the neuron, or the head\n"
    "  metric      TEXT NOT NULL,         -- 'activation', 'key' or a head metric (as unit_examples.metric)\n"
    "  examples    TEXT NOT NULL DEFAULT '[]',  -- JSON, rank order: [[item, pos, key_pos, value], ...]\n"
    "  samples     TEXT NOT NULL DEFAULT '[]',  -- JSON, by bin, hash, item: [[bin, hash, item, pos, key_pos, value], ...]\n"
    "  histogram   TEXT,                  -- JSON: every bin's count from bin 0; NULL: none (a head by a metric)\n"
    "  UNIQUE (dataset_id, unit_kind, layer, unit, metric)\n"
    ");\n"
    "CREATE TABLE unit_bins (             -- the histograms' bins: their lower edges\n"
    "  unit_kind   TEXT NOT NULL,\n"
    "  bin         INTEGER NOT NULL,\n"
    "  lower       REAL,                  -- NULL: -inf\n"
    "  PRIMARY KEY (unit_kind, bin)\n"
    ") WITHOUT ROWID;\n"
    "INSERT OR IGNORE INTO unit_bins SELECT DISTINCT unit_kind, bin, lower FROM unit_histograms;\n"
    "INSERT INTO unit_stats (dataset_id, unit_kind, layer, unit, metric, examples)\n"
    "  SELECT dataset_id, unit_kind, layer, unit, metric, json_group_array(json_array(item, pos, key_pos, value)) FROM (SELECT * FROM unit_examples ORDER BY dataset_id, unit_kind, layer, unit, metric, rank)\n"
    "  GROUP BY dataset_id, unit_kind, layer, unit, metric;\n"
    "INSERT INTO unit_stats (dataset_id, unit_kind, layer, unit, metric, samples)\n"
    "  SELECT dataset_id, unit_kind, layer, unit, metric, json_group_array(json_array(bin, hash, item, pos, key_pos, value)) FROM (SELECT * FROM unit_quantile_samples ORDER BY dataset_id, unit_kind, layer,\n"
    "    unit, metric, bin, hash, item)\n"
    "  GROUP BY dataset_id, unit_kind, layer, unit, metric\n"
    "  ON CONFLICT (dataset_id, unit_kind, layer, unit, metric) DO UPDATE SET samples = excluded.samples;\n"
    "WITH RECURSIVE b(bin) AS (SELECT 0 UNION ALL SELECT bin + 1 FROM b WHERE bin < 26),\n"
    "  u AS (SELECT DISTINCT dataset_id, unit_kind, layer, unit FROM unit_histograms)\n"
    "INSERT INTO unit_stats (dataset_id, unit_kind, layer, unit, metric, histogram)\n"
    "  SELECT dataset_id, unit_kind, layer, unit, CASE unit_kind WHEN 'head' THEN 'key' ELSE 'activation' END,\n"
    "    json_group_array(n) FROM (SELECT u.dataset_id, u.unit_kind, u.layer, u.unit, b.bin, coalesce(h.count, 0) AS n\n"
    "    FROM u JOIN b ON b.bin < CASE u.unit_kind WHEN 'head' THEN 20 ELSE 27 END LEFT JOIN unit_histograms h\n"
    "    ON h.dataset_id = u.dataset_id AND h.unit_kind = u.unit_kind AND h.layer = u.layer AND h.unit = u.unit\n"
    "    AND h.bin = b.bin ORDER BY 1, 2, 3, 4, 5)\n"
    "  GROUP BY dataset_id, unit_kind, layer, unit\n"
    "  ON CONFLICT (dataset_id, unit_kind, layer, unit, metric) DO UPDATE SET histogram = excluded.histogram;\n"
    "DROP TABLE unit_examples;\n"
    "DROP TABLE unit_quantile_samples;\n"
    "DROP TABLE unit_histograms;\n"
    "CREATE VIEW unit_examples AS         -- unit_stats.examples, a row each\n"
    "SELECT s.dataset_id, s.unit_kind, s.layer, s.unit, s.metric, e.key + 1 AS rank, e.value ->> 0 AS item,\n"
    "       e.value ->> 1 AS pos, e.value ->> 2 AS key_pos, t.token_id, t.text AS token,\n"
    "       k.token_id AS key_token_id, k.text AS key_token, CAST(e.value ->> 3 AS REAL) AS value\n"
    "FROM unit_stats s JOIN json_each(s.examples) e\n"
    "LEFT JOIN dataset_items i ON i.dataset_id = s.dataset_id AND i.item = e.value ->> 0\n"
    "LEFT JOIN tokens t ON t.run_id = i.run_id AND t.side = 'target' AND t.pos = e.value ->> 1\n"
    "LEFT JOIN tokens k ON k.run_id = i.run_id AND k.side = 'target' AND k.pos = e.value ->> 2;\n"
    "CREATE VIEW unit_quantile_samples AS -- unit_stats.samples, a row each\n"
    "SELECT s.dataset_id, s.unit_kind, s.layer, s.unit, s.metric, q.value ->> 0 AS bin, q.value ->> 1 AS hash,\n"
    "       q.value ->> 2 AS item, q.value ->> 3 AS pos, q.value ->> 4 AS key_pos, t.token_id,\n"
    "       t.text AS token, k.token_id AS key_token_id, k.text AS key_token, CAST(q.value ->> 5 AS REAL) AS value\n"
    "FROM unit_stats s JOIN json_each(s.samples) q\n"
    "LEFT JOIN dataset_items i ON i.dataset_id = s.dataset_id AND i.item = q.value ->> 2\n"
    "LEFT JOIN tokens t ON t.run_id = i.run_id AND t.side = 'target' AND t.pos = q.value ->> 3\n"
    "LEFT JOIN tokens k ON k.run_id = i.run_id AND k.side = 'target' AND k.pos = q.value ->> 4;\n"
    "CREATE VIEW unit_histograms AS       -- unit_stats.histogram, a row per bin with tokens (or weights)\n"
    "SELECT s.dataset_id, s.unit_kind, s.layer, s.unit, h.key AS bin, b.lower, h.value AS count\n"
    "FROM unit_stats s JOIN json_each(s.histogram) h\n"
    "LEFT JOIN unit_bins b ON b.unit_kind = s.unit_kind AND b.bin = h.key\n"
    "WHERE h.value > 0;\n";

/* Version 10: every --each result of a dataset's items in one view, for means and spreads of
 * any per-run score over a dataset (dla's total, patch's recovery, ...); a run made through
 * a spliced dictionary, steering or clamps says so (runs.edits). */
static const char V10[] =
    "ALTER TABLE runs ADD COLUMN edits TEXT;  -- JSON: the dictionaries spliced in, steering, clamps; NULL: the model alone\n"
    "CREATE VIEW dataset_analyses AS      -- the dataset's items' analyses (dla, patch, ...): params and result JSON\n"
    "SELECT i.dataset_id, i.item, i.text, i.label, a.run_id, a.id AS analysis_id, a.kind, a.params, a.result\n"
    "FROM dataset_items i JOIN analyses a ON a.run_id = i.run_id;\n";

static const char *const MIGRATIONS[] = {V1, V2, V3, V4, V5, V6, V7, V8, V9, V10};
#define N_MIGRATIONS ((int)(sizeof MIGRATIONS / sizeof *MIGRATIONS))

int store_schema_latest(void) { return N_MIGRATIONS; }

static int exec(lp_store *st, const char *sql, const char *what) {
    int rc = sqlite3_exec(st->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? LP_OK : store_fail(st, rc, what);
}

static int read_version(lp_store *st, int *version) {
    sqlite3_stmt *s;
    int rc = sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &s, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        *version = sqlite3_column_int(s, 0);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(s);
    return rc == SQLITE_OK ? LP_OK : store_fail(st, rc, "reading the schema version");
}

/* One step, from st->version to st->version + 1, inside BEGIN IMMEDIATE. */
static int migrate_step(lp_store *st, const char *what) {
    char bump[96];
    int now = 0, rc = read_version(st, &now);
    if (rc) return rc;
    if (now != st->version) { /* another process migrated while we waited for the lock */
        st->version = now;
        if (now > N_MIGRATIONS)
            return lp_error(LP_EUNSUPPORTED, "%s has schema version %d; this loupe knows up to %d: use a newer loupe",
                            st->path, now, N_MIGRATIONS);
        return exec(st, "COMMIT", what);
    }
    snprintf(bump, sizeof bump, "PRAGMA user_version = %d; PRAGMA application_id = %d", now + 1, STORE_APPLICATION_ID);
    if ((rc = exec(st, MIGRATIONS[now], what)) || (rc = exec(st, bump, what)) || (rc = exec(st, "COMMIT", what)))
        return rc;
    st->version = now + 1;
    return LP_OK;
}

int store_migrate(lp_store *st) {
    char what[64];
    while (st->version < N_MIGRATIONS) {
        snprintf(what, sizeof what, "migrating the schema to version %d", st->version + 1);
        int rc = exec(st, "BEGIN IMMEDIATE", what);
        if (!rc) rc = migrate_step(st, what);
        if (rc) {
            if (!sqlite3_get_autocommit(st->db)) sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
            return rc;
        }
    }
    return LP_OK;
}
