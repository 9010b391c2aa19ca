#!/usr/bin/python3
"""make bench: the PyTorch equivalent of loupe's T5 figures (bench_seq2seq), on the same checkpoint.

T5ForConditionalGeneration written out in float32 eager torch (the wiring of
tests/fixtures/t5_reference.py, from modeling_t5.py, without transformers, which Debian does
not package), doing the same work as bench_seq2seq:
  teacher-forced: the encoder over 128 ids, the decoder over the start id and 32 target ids,
    keeping every layer's hidden states and all three kinds of attention pattern (what HF's
    output_hidden_states and output_attentions keep; loupe captures more);
  greedy: the encoder, then 64 tokens one at a time with HF's cache (self keys and values
    grow by one row a step, cross keys and values computed once, the position bias of the
    new query row only).
The ids are bench_seq2seq's (fill_ids), so --compare-logits FILE (bench_seq2seq
--save-logits) checks the teacher-forced logits against loupe's and --compare-ids FILE
(--save-ids) the greedy tokens. Minimum over runs, as bench_seq2seq reports.

usage: OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 tests/bench/torch_t5.py MODEL_DIR [--compare-logits FILE] [--compare-ids FILE]
"""

import os
import sys
import time

import numpy as np
import torch

here = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [here, os.path.join(here, "..", "fixtures")]
from torch_bert import fill_ids, load, timed  # noqa: E402  the same safetensors reader, LCG and timer
from t5_reference import relative_position_bucket as bucket, t5_norm  # noqa: E402  the fixtures' float64 reference

SRC, TGT, NEW = 128, 32, 64


class T5:
    def __init__(self, cfg, W):
        self.W, self.cfg = W, cfg
        self.L, self.H, self.dk = cfg["num_layers"], cfg["num_heads"], cfg["d_kv"]
        self.eps = cfg.get("layer_norm_epsilon", 1e-6)
        self.gated = cfg.get("feed_forward_proj", "relu").startswith("gated")
        self.tied = cfg.get("tie_word_embeddings", True)
        self.nb, self.md = cfg["relative_attention_num_buckets"], cfg["relative_attention_max_distance"]

    def bias(self, stack, q0, q_len, k_len):
        """compute_bias for query rows q0 .. q0 + q_len over keys 0 .. k_len: (H, q, k)."""
        ctx = torch.arange(q0, q0 + q_len)[:, None]
        mem = torch.arange(k_len)[None, :]
        b = bucket(mem - ctx, stack == "encoder", self.nb, self.md)
        return self.W[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"][b].permute(2, 0, 1)

    def heads(self, x, w):
        return (x @ self.W[w].T).view(x.shape[0], self.H, self.dk).transpose(0, 1)

    def attend(self, p, q, k, v, bias, mask):
        s = q @ k.transpose(1, 2)
        if bias is not None:
            s = s + bias
        if mask is not None:
            s = s.masked_fill(mask, float("-inf"))
        a = torch.softmax(s, dim=-1)
        z = (a @ v).transpose(0, 1).reshape(q.shape[1], self.H * self.dk)
        return a, z @ self.W[p + ".o.weight"].T

    def ff(self, p, x):
        W = self.W
        if self.gated:  # gated-gelu: the tanh GELU
            h = torch.nn.functional.gelu(x @ W[p + ".wi_0.weight"].T, approximate="tanh") * (x @ W[p + ".wi_1.weight"].T)
        else:
            h = torch.relu(x @ W[p + ".wi.weight"].T)
        return h @ W[p + ".wo.weight"].T

    def logits(self, out):
        if self.tied:
            return (out * self.cfg["d_model"] ** -0.5) @ self.W["shared.weight"].T
        return out @ self.W["lm_head.weight"].T

    def encoder(self, ids, keep):
        W = self.W
        x = W["shared.weight"][torch.tensor(ids)]
        bias = self.bias("encoder", 0, len(ids), len(ids))
        hidden, attns = [x], []
        for l in range(self.L):
            p = f"encoder.block.{l}.layer"
            xn = t5_norm(x, W[p + ".0.layer_norm.weight"], self.eps)
            sa = p + ".0.SelfAttention"
            a, o = self.attend(sa, self.heads(xn, sa + ".q.weight"), self.heads(xn, sa + ".k.weight"),
                               self.heads(xn, sa + ".v.weight"), bias, None)
            x = x + o
            x = x + self.ff(p + ".1.DenseReluDense", t5_norm(x, W[p + ".1.layer_norm.weight"], self.eps))
            if keep:
                hidden.append(x)
                attns.append(a)
        return t5_norm(x, W["encoder.final_layer_norm.weight"], self.eps), hidden, attns

    def cross_kv(self, enc):
        return [(self.heads(enc, f"decoder.block.{l}.layer.1.EncDecAttention.k.weight"),
                 self.heads(enc, f"decoder.block.{l}.layer.1.EncDecAttention.v.weight")) for l in range(self.L)]

    def decoder(self, ids, xkv, cache, keep):
        """The decoder over ids at positions len(cache) .. ; cache: per layer [k, v] (H, t, dk),
        grown in place. Returns the logits of every new position."""
        W = self.W
        t0, T = (cache[0][0].shape[1] if cache[0] else 0), len(ids)
        x = W["shared.weight"][torch.tensor(ids)]
        bias = self.bias("decoder", t0, T, t0 + T)
        mask = torch.ones(T, t0 + T, dtype=torch.bool).triu(t0 + 1) if T > 1 else None
        hidden, attns, cross = [x], [], []
        for l in range(self.L):
            p = f"decoder.block.{l}.layer"
            xn = t5_norm(x, W[p + ".0.layer_norm.weight"], self.eps)
            sa = p + ".0.SelfAttention"
            k, v = self.heads(xn, sa + ".k.weight"), self.heads(xn, sa + ".v.weight")
            if cache[l]:
                k, v = torch.cat([cache[l][0], k], 1), torch.cat([cache[l][1], v], 1)
            cache[l] = [k, v]
            a, o = self.attend(sa, self.heads(xn, sa + ".q.weight"), k, v, bias, mask)
            x = x + o
            ca = p + ".1.EncDecAttention"
            xn = t5_norm(x, W[p + ".1.layer_norm.weight"], self.eps)
            c, o = self.attend(ca, self.heads(xn, ca + ".q.weight"), xkv[l][0], xkv[l][1], None, None)
            x = x + o
            x = x + self.ff(p + ".2.DenseReluDense", t5_norm(x, W[p + ".2.layer_norm.weight"], self.eps))
            if keep:
                hidden.append(x)
                attns.append(a)
                cross.append(c)
        return self.logits(t5_norm(x, W["decoder.final_layer_norm.weight"], self.eps)), hidden, attns, cross

    def teacher_forced(self, src, dec):
        enc, _, _ = self.encoder(src, True)
        return self.decoder(dec, self.cross_kv(enc), [None] * self.L, True)[0]

    def greedy(self, src, n):
        enc, _, _ = self.encoder(src, False)
        xkv, cache = self.cross_kv(enc), [None] * self.L
        logits = self.decoder([self.cfg.get("decoder_start_token_id", 0)], xkv, cache, False)[0]
        out = []
        t = time.perf_counter()
        for i in range(n):
            out.append(int(torch.argmax(logits[-1])))
            if i + 1 < n:
                logits = self.decoder([out[-1]], xkv, cache, False)[0]
        return out, time.perf_counter() - t


def main():
    args = sys.argv[1:]
    if not args or args[0].startswith("-") or len(args) % 2 == 0:
        sys.exit(__doc__.strip().splitlines()[-1])
    model_dir, opts = args[0], dict(zip(args[1::2], args[2::2]))
    if set(opts) - {"--compare-logits", "--compare-ids"}:
        sys.exit(__doc__.strip().splitlines()[-1])
    torch.set_grad_enabled(False)
    torch.set_num_threads(os.cpu_count())
    cfg, W = load(model_dir)
    m = T5(cfg, W)
    V = cfg["vocab_size"]
    print(f"torch {torch.__version__}, float32, {torch.get_num_threads()} threads, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    src = fill_ids(SRC, V)
    dec = [cfg.get("decoder_start_token_id", 0)] + [(i * 7 + 3) % V for i in fill_ids(TGT, V)]
    t = timed(lambda: m.teacher_forced(src, dec), 7)[1]
    t_enc = timed(lambda: m.encoder(src, True), 7)[1]
    print(f"torch teacher-forced S={SRC} T={TGT} (+ start): {t * 1e3:.1f} ms (min of 7; encoder alone "
          f"{t_enc * 1e3:.1f} ms), hidden states and attention patterns kept")
    if "--compare-logits" in opts:
        got = m.teacher_forced(src, dec).double().flatten()
        want = torch.from_numpy(np.fromfile(opts["--compare-logits"], dtype="<f4").astype(np.float64))
        if want.shape != got.shape:
            print(f"  logits: cannot compare: the file holds {want.numel()} values, not {got.numel()}")
        else:
            diff, mag = (got - want).abs().max().item(), want.abs().max().item()
            print(f"  logits vs loupe's: max |diff| {diff:.2e} (logits up to {mag:.2f}; tolerance 1e-4: "
                  f"{'same' if diff <= 1e-4 else 'DIFFERENT'})")
    best, ids = 1e30, None
    for _ in range(3):
        ids, secs = m.greedy(src, NEW)
        best = min(best, secs)
    print(f"torch greedy S={SRC}, {NEW} new tokens: {(NEW - 1) / best:.1f} tokens/s (best of 3, HF-style cache)")
    if "--compare-ids" in opts:
        with open(opts["--compare-ids"]) as f:
            want = [int(w) for w in f.read().split()]
        same = sum(a == b for a, b in zip(ids, want))
        print(f"  greedy ids vs loupe's: {same} of {len(want)} the same")


if __name__ == "__main__":
    main()
