#!/usr/bin/python3
"""make bench: the PyTorch side of issue 16's table for GPT-2 small, on loupe's bench checkpoint.

GPT2LMHeadModel written out in float32 eager torch (no transformers: Debian does not package
it), every attention pattern and residual kept, doing the work bench.c times:
  run T=128, 512, 1024: the forward keeping every layer's residual stream and attention
    patterns and all T x V logits, plus what a recorded run computes from them, vectorised
    (each head's attention entropy at every position, the top 5 tokens at every position);
  ig-32 T=32: integrated gradients of the logit of ids[0] at the last position, the token
    embeddings scaled from zero (positions kept: loupe's default baseline) at loupe's 32
    Gauss-Legendre nodes, as one batched autograd pass (32 steps x 32 tokens), plus the
    baseline's forward (for the completeness check);
  occlusion T=32: the same objective with each position's token embedding zeroed, all 32
    occluded inputs as one batch, forward only;
  generation: a 16-token prompt, then 128 tokens greedy with a key/value cache.
The objectives take the target's column of the unembedding only, as loupe does. The ids are
bench.c's fill_ids, so --compare-logits FILE (bench --save-logits: the T=128 run's logits)
and --compare-attr FILE (bench --save-attr: the T=32 ig scores, then occlusion's) check that
the two compute the same thing; --loupe FILE (bench's report) prints loupe's figures and the
ratios beside torch's; --only attr times ig-32 and occlusion alone (make bench's back-to-back
rounds, each beside a `bench --attr32` run just before it). Medians; threads: as many as CPUs
(as loupe's OpenBLAS).

usage: OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 tests/bench/torch_gpt2.py MODEL_DIR [--compare-logits FILE] [--compare-attr FILE] [--loupe FILE] [--only attr]
"""

import math
import os
import re
import sys
import time

import numpy as np
import torch

here = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [here]
from torch_bert import compare_file, fill_ids, gauss_legendre, start, timed  # noqa: E402  the same start, LCG, nodes, timer

F = torch.nn.functional


class GPT2:
    def __init__(self, cfg, W):
        self.W, self.L, self.H = W, cfg["n_layer"], cfg["n_head"]
        self.eps = cfg.get("layer_norm_epsilon", 1e-5)
        self.wte, self.wpe = W["wte.weight"], W["wpe.weight"]

    def lin(self, x, name):  # Conv1D: y = x W + b, W (in, out)
        return torch.addmm(self.W[name + ".bias"], x.reshape(-1, x.shape[-1]), self.W[name + ".weight"]).view(
            *x.shape[:-1], -1)

    def ln(self, x, name):
        return F.layer_norm(x, x.shape[-1:], self.W[name + ".weight"], self.W[name + ".bias"], self.eps)

    def attn(self, x, i, cache=None):
        """x (B, T, d) -> (B, T, d) and the pattern (B, H, T, keys); cache: [k, v] grown in place."""
        B, T, d = x.shape
        H, hd = self.H, d // self.H
        q, k, v = (t.view(B, T, H, hd).transpose(1, 2) for t in self.lin(x, f"h.{i}.attn.c_attn").split(d, -1))
        if cache is not None:
            if cache[0] is not None:
                k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            cache[0], cache[1] = k, v
        s = q @ k.transpose(-1, -2) / math.sqrt(hd)
        keys = k.shape[2]
        if T > 1:
            s = s.masked_fill(torch.ones(T, keys, dtype=torch.bool).triu(keys - T + 1), float("-inf"))
        a = torch.softmax(s, -1)
        return self.lin((a @ v).transpose(1, 2).reshape(B, T, d), f"h.{i}.attn.c_proj"), a

    def blocks(self, x, keep, caches=None):
        """x (B, T, d): the embeddings. Returns the final norm's output and, with keep, every
        layer's residual stream (in, mid) and attention pattern."""
        resid, pats = [], []
        for i in range(self.L):
            a, p = self.attn(self.ln(x, f"h.{i}.ln_1"), i, caches[i] if caches else None)
            mid = x + a
            x = mid + self.lin(F.gelu(self.lin(self.ln(mid, f"h.{i}.ln_2"), f"h.{i}.mlp.c_fc"), approximate="tanh"),
                               f"h.{i}.mlp.c_proj")
            if keep:
                resid += [mid, x]
                pats.append(p)
        return self.ln(x, "ln_f"), resid, pats

    def embed(self, ids, t0=0):
        return self.wte[ids] + self.wpe[t0:t0 + len(ids)]

    def run(self, ids):
        """A recorded run: every activation above kept, the logits of every position, and the
        metrics a recording computes from them."""
        h, resid, pats = self.blocks(self.embed(torch.tensor(ids))[None], True)
        logits = h[0] @ self.wte.T
        entropy = [-(p * torch.log(p.clamp_min(1e-30))).sum(-1) for p in pats]  # (1, H, T) per layer
        top = torch.topk(torch.log_softmax(logits, -1), 5, -1)
        return logits, resid, pats, entropy, top

    def objective(self, x, pos, target):
        """The logit of target at pos for inputs x (B, T, d): the target's column only."""
        return self.blocks(x, False)[0][:, pos] @ self.wte[target]

    def generate(self, prompt, n):
        caches = [[None, None] for _ in range(self.L)]
        ids, t = list(prompt), 0
        for _ in range(n):
            x = self.embed(torch.tensor(ids[t:]), t)[None]
            t = len(ids)
            h = self.blocks(x, False, caches)[0]
            ids.append(int(torch.argmax(h[0, -1] @ self.wte.T)))
        return ids[len(prompt):]


def loupe_figures(path):
    """bench's report: forward ms by T, ig-32 and occlusion ms at T=32, generation tokens/s."""
    text = open(path).read()
    fig = {f"run T={t}": float(ms) for t, ms in re.findall(r"^forward T=(\d+): ([0-9.]+) ms", text, re.M)}
    m = re.search(r"^attr T=32 .*?ig-32 [0-9.]+x = ([0-9.]+) s", text, re.M)
    if m:
        fig["ig-32 T=32"] = float(m.group(1)) * 1e3
    m = re.search(r"^attr T=32 .*?occlusion [0-9.]+x = ([0-9.]+) ms", text, re.M)
    if m:
        fig["occlusion T=32"] = float(m.group(1))
    m = re.search(r"^generate: ([0-9.]+) tokens/s", text, re.M)
    if m:
        fig["generation"] = float(m.group(1))
    return fig


def main():
    cfg, W, opts = start(__doc__, ("--compare-logits", "--compare-attr", "--loupe", "--only"))
    m, V = GPT2(cfg, W), cfg["vocab_size"]
    loupe = loupe_figures(opts["--loupe"]) if "--loupe" in opts else {}
    rows = []
    attr_only = opts.get("--only") == "attr"

    for T, reps in () if attr_only else ((128, 5), (512, 3), (1024, 1)):
        ids = fill_ids(T, V)
        med, best = timed(lambda: m.run(ids), reps)
        print(f"torch run T={T}: {med * 1e3:.1f} ms (median of {reps}, best {best * 1e3:.1f}), residuals, "
              "patterns, logits, entropies and top-5 kept")
        rows.append((f"run T={T}", med * 1e3, "ms"))
        if T == 128 and "--compare-logits" in opts:
            compare_file("logits", m.run(ids)[0], opts["--compare-logits"], 1e-4)

    # Attribution at T=32: the logit of ids[0] at the last position, as bench_attr.
    T, steps = 32, 32
    ids = torch.tensor(fill_ids(T, V))
    e, pos_emb, pos, target = m.wte[ids], m.wpe[:T], T - 1, int(ids[0])
    alpha, w = gauss_legendre(steps)
    alpha = torch.tensor(alpha, dtype=torch.float32)[:, None, None]
    wts = torch.tensor(w, dtype=torch.float32)

    def ig():
        with torch.enable_grad():
            inp = (pos_emb + alpha * e[None]).requires_grad_(True)
            (m.objective(inp, pos, target) * wts).sum().backward()
        fb = m.objective(pos_emb[None], pos, target)[0]
        return (inp.grad.sum(0) * e).sum(-1), fb

    def occlusion():
        x = (pos_emb + e).expand(T, T, -1).clone()
        x[torch.arange(T), torch.arange(T)] = pos_emb
        return m.objective(x, pos, target)

    for name, fn, reps in (("ig-32 T=32", ig, 5), ("occlusion T=32", occlusion, 5)):
        med, best = timed(fn, reps)
        how = "32 steps x 32 tokens as one batch, forward and backward, and the baseline's forward" if "ig" in name \
            else "the 32 occluded inputs as one batch, forward only"
        print(f"torch {name}: {med * 1e3:.1f} ms (median of {reps}, best {best * 1e3:.1f}; {how})")
        rows.append((name, med * 1e3, "ms"))
    fx = m.objective((pos_emb + e)[None], pos, target)[0]
    scores, fb = ig()
    print(f"  ig completeness: sum of scores - (f(x) - f(baseline)) = {scores.sum().item() - (fx - fb).item():.2e}")
    if "--compare-attr" in opts:  # ig's scores are the gradients' dot products with the inputs
        compare_file("ig and occlusion scores", np.concatenate([scores.numpy(), (fx - occlusion()).numpy()]),
                     opts["--compare-attr"], 1e-3)

    if not attr_only:
        prompt, n = fill_ids(16, V), 128
        t = time.perf_counter()
        m.generate(prompt, n)
        t = time.perf_counter() - t
        print(f"torch generate: {n / t:.1f} tokens/s (prompt 16, then {n} new tokens, greedy, key/value cache)")
        rows.append(("generation", n / t, "tokens/s"))

    if loupe:
        print("loupe vs torch (loupe's figures from its report; a ratio > 1: loupe is faster):")
        for name, tv, unit in rows:
            lv = loupe.get(name)
            if lv is None:
                print(f"  {name}: torch {tv:.1f} {unit}; loupe's report has no figure")
                continue
            ratio = tv / lv if unit == "ms" else lv / tv
            print(f"  {name}: loupe {lv:.1f} {unit}, torch {tv:.1f} {unit}: loupe {ratio:.2f}x"
                  f"{' (target >= 1.25: ' + ('met' if ratio >= 1.25 else 'MISSED') + ')' if 'T=32' in name else ''}")


if __name__ == "__main__":
    main()
