#!/usr/bin/python3
"""make bench: the PyTorch side of the GPT-NeoX forward, on loupe's Pythia-160M-shaped checkpoint.

GPTNeoXForCausalLM in float32 eager torch (no transformers: Debian does not package it;
tests/fixtures/reference.py's forward_neox, in float64, cites modeling_gpt_neox.py for each
step), doing what bench --forward times: a run at T=128, 512 and 1024 keeping every layer's
residual stream and attention pattern and all T x V logits, plus each head's attention
entropy and the top 5 tokens at every position. The ids are bench.c's fill_ids, so
--compare-logits FILE (bench --save-logits: the T=128 run's logits) checks that the two
compute the same thing; --loupe FILE (bench's report) sets loupe's wall and CPU medians
beside torch's. Medians; CPU time is the process's (all threads); threads: as many as CPUs.

usage: OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 tests/bench/torch_neox.py MODEL_DIR [--compare-logits FILE] [--loupe FILE]
"""

import math
import os
import re
import statistics
import sys
import time

import torch

here = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [here]
from torch_bert import compare_file, fill_ids, start  # noqa: E402  the same start and LCG

F = torch.nn.functional


class NeoX:
    def __init__(self, cfg, W):
        self.W, self.L, self.H = W, cfg["num_hidden_layers"], cfg["num_attention_heads"]
        self.eps = cfg.get("layer_norm_eps", 1e-5)
        self.parallel = cfg.get("use_parallel_residual", True)
        self.hd = cfg["hidden_size"] // self.H
        self.rot = int(self.hd * cfg.get("rotary_pct", 0.25))
        self.base = cfg.get("rotary_emb_base", 10000.0)
        self.emb = W["gpt_neox.embed_in.weight"]
        self.out = W["embed_out.weight"] if "embed_out.weight" in W else self.emb

    def lin(self, x, name):  # nn.Linear: y = x W^T + b, W (out, in)
        return F.linear(x, self.W[name + ".weight"], self.W.get(name + ".bias"))

    def ln(self, x, name):
        return F.layer_norm(x, x.shape[-1:], self.W[name + ".weight"], self.W[name + ".bias"], self.eps)

    def rope(self, x, cos, sin):
        r, half = self.rot, self.rot // 2
        a = x[..., :r]
        rotated = torch.cat([-a[..., half:], a[..., :half]], -1)
        return torch.cat([a * cos + rotated * sin, x[..., r:]], -1)

    def run(self, ids):
        T, H, hd = len(ids), self.H, self.hd
        inv = 1.0 / self.base ** (torch.arange(0, self.rot, 2, dtype=torch.float32) / self.rot)
        freqs = torch.outer(torch.arange(T, dtype=torch.float32), inv)
        cos, sin = torch.cat([freqs, freqs], -1).cos(), torch.cat([freqs, freqs], -1).sin()
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)
        x = self.emb[torch.tensor(ids)]
        resid, pats = [x], []
        for i in range(self.L):
            p = f"gpt_neox.layers.{i}."
            qkv = self.lin(self.ln(x, p + "input_layernorm"), p + "attention.query_key_value")
            qkv = qkv.view(T, H, 3 * hd).transpose(0, 1)
            q, k, v = self.rope(qkv[..., :hd], cos, sin), self.rope(qkv[..., hd:2 * hd], cos, sin), qkv[..., 2 * hd:]
            a = torch.softmax((q @ k.transpose(-1, -2) / math.sqrt(hd)).masked_fill(mask, float("-inf")), -1)
            attn = self.lin((a @ v).transpose(0, 1).reshape(T, -1), p + "attention.dense")
            mid = x + attn
            m_in = self.ln(x if self.parallel else mid, p + "post_attention_layernorm")
            x = mid + self.lin(F.gelu(self.lin(m_in, p + "mlp.dense_h_to_4h")), p + "mlp.dense_4h_to_h")
            resid += [mid, x]
            pats.append(a)
        logits = self.ln(x, "gpt_neox.final_layer_norm") @ self.out.T
        entropy = [-(a * torch.log(a.clamp_min(1e-30))).sum(-1) for a in pats]
        top = torch.topk(torch.log_softmax(logits, -1), 5, -1)
        return logits, resid, pats, entropy, top


def timed(fn, reps):
    fn()
    wall, cpu = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), min(wall), statistics.median(cpu)


def main():
    cfg, W, opts = start(__doc__, ("--compare-logits", "--loupe"))
    m, V = NeoX(cfg, W), cfg["vocab_size"]
    loupe = {}
    if "--loupe" in opts:
        text = open(opts["--loupe"]).read()
        loupe = {int(t): (float(w), float(c)) for t, w, c in
                 re.findall(r"^forward T=(\d+): ([0-9.]+) ms .*?CPU ([0-9.]+) ms", text, re.M)}
    for T, reps in ((128, 5), (512, 3), (1024, 1)):
        ids = fill_ids(T, V)
        med, best, cpu = timed(lambda: m.run(ids), reps)
        line = (f"torch run T={T}: {med * 1e3:.1f} ms (median of {reps}, best {best * 1e3:.1f}; CPU {cpu * 1e3:.1f} ms), "
                "residuals, patterns, logits, entropies and top-5 kept")
        if T in loupe:
            lw, lc = loupe[T]
            line += (f"; loupe {lw:.1f} ms (CPU {lc:.1f} ms): torch / loupe {med * 1e3 / lw:.2f}x wall, "
                     f"{cpu * 1e3 / lc:.2f}x CPU (> 1: loupe is faster)")
        print(line)
        if T == 128 and "--compare-logits" in opts:
            compare_file("logits", m.run(ids)[0], opts["--compare-logits"], 1e-4)


if __name__ == "__main__":
    main()
