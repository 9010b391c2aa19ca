/* Writing checkpoints in Hugging Face layout: config.json + model.safetensors (or shards
 * with model.safetensors.index.json). Used to make random test and bench models of any
 * shape, and later to save trained ones. */
#ifndef LOUPE_CHECKPOINT_H
#define LOUPE_CHECKPOINT_H

#include <stdint.h>

#include "loupe/dtype.h"
#include "loupe/model.h"

typedef struct {
    lp_config cfg;       /* arch: "GPT2LMHeadModel", "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM" */
    lp_dtype dtype;      /* what the file stores: F32, F16 or BF16 */
    lp_dtype round_to;   /* values rounded to this precision first (F16/BF16), or LP_DT_F32 for none;
                            an F32 file rounded like an F16 one holds exactly the F16 file's upcast */
    uint64_t seed;
    float std;           /* scale of the random weights (0.02 as GPT-2 initialises) */
    int shards;          /* 1: model.safetensors; > 1: that many shards and an index */
    const char *gpt2_prefix; /* GPT-2 tensor-name prefix: "" or "transformer." */
} lp_random_spec;

/* Writes a random model of spec's shape into dir (created if missing). Norm weights are
 * near 1 and biases small, so that every parameter matters to the output. */
int lp_checkpoint_random(const char *dir, const lp_random_spec *spec);

/* Writes dir/config.json for a model of shape c (c->arch as in lp_random_spec) whose weights
 * are stored as dtype; dir must exist. */
int lp_checkpoint_write_config(const char *dir, const lp_config *c, lp_dtype dtype);

#endif
