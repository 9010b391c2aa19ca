#!/usr/bin/python3
"""A PyTorch pilot of `train --arch t5` on the synthetic seq2seq task (loupe/s2s_task.h),
to size the model and the budget before loupe's own T5 backward exists: can a small T5
learn the task on this machine's CPU in 15-25 minutes, and does its cross-attention show
the alignment? Not part of make check.

The examples are loupe's (s2s_examples prints them), the model is T5 v1.0's wiring (RMS
norms, relative position buckets in layer 0 of each stack, no 1/sqrt(d_kv), ReLU, tied
embeddings with the d_model^-0.5 rescale), batches hold examples of one length (no
padding). Every --eval-every steps it prints the held-out loss, the share of held-out
examples decoded exactly (greedy), and the share of target words whose best cross-attention
head in the last decoder layer puts its largest weight on the aligned source position
(lp_s2s_alignment_hits, the best head of that layer).

usage: /usr/bin/python3 tests/tools/s2s_pilot.py [--minutes M] [--threads N] [--d 128] [--layers 2] [--repeats]
       (run from the repository, after make build/tools/s2s_examples)
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "fixtures"))
from t5_reference import relative_position_bucket  # noqa: E402  the fixtures' bucket arithmetic

F = torch.nn.functional


def bucket(rel, bidirectional):
    return relative_position_bucket(rel, bidirectional, 32, 128)


def examples(n, seed, heldout, rules, repeats):
    args = ["build/tools/s2s_examples", "--n", str(n), "--seed", str(seed), "--rules", rules]
    if repeats:
        args.append("--repeats")
    if heldout:
        args.append("--heldout")
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        _, src, tgt, align = line.split("\t")
        rows.append((src.split(), tgt.split(), [int(a) for a in align.split(",")]))
    return rows


class T5(torch.nn.Module):
    def __init__(self, V, d, H, dk, dff, L):
        super().__init__()
        self.d, self.H, self.dk = d, H, dk
        self.emb = torch.nn.Parameter(torch.randn(V, d))
        lin = lambda i, o: torch.nn.Linear(i, o, bias=False)  # noqa: E731
        def attn():
            return torch.nn.ModuleDict({k: lin(d, H * dk) for k in "qkv"} | {"o": lin(H * dk, d)})
        self.enc = torch.nn.ModuleList([torch.nn.ModuleDict({"sa": attn(), "wi": lin(d, dff), "wo": lin(dff, d)})
                                        for _ in range(L)])
        self.dec = torch.nn.ModuleList([torch.nn.ModuleDict({"sa": attn(), "xa": attn(), "wi": lin(d, dff),
                                                             "wo": lin(dff, d)}) for _ in range(L)])
        self.norms = torch.nn.Parameter(torch.ones(5 * L + 2, d))
        self.rel_enc = torch.nn.Parameter(torch.randn(32, H) * 0.1)
        self.rel_dec = torch.nn.Parameter(torch.randn(32, H) * 0.1)

    def norm(self, x, i):
        return self.norms[i] * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)

    def mha(self, m, x, kv, bias, mask=None):
        B, T, _ = x.shape
        S = kv.shape[1]
        q = m["q"](x).view(B, T, self.H, self.dk).transpose(1, 2)
        k = m["k"](kv).view(B, S, self.H, self.dk).transpose(1, 2)
        v = m["v"](kv).view(B, S, self.H, self.dk).transpose(1, 2)
        s = q @ k.transpose(-1, -2)
        if bias is not None:
            s = s + bias
        if mask is not None:
            s = s.masked_fill(mask, float("-inf"))
        a = s.softmax(-1)
        return m["o"]((a @ v).transpose(1, 2).reshape(B, T, -1)), a

    def forward(self, src, dec_in):
        S, T = src.shape[1], dec_in.shape[1]
        pos = lambda n: torch.arange(n)  # noqa: E731
        eb = self.rel_enc[bucket(pos(S)[None] - pos(S)[:, None], True)].permute(2, 0, 1)
        db = self.rel_dec[bucket(pos(T)[None] - pos(T)[:, None], False)].permute(2, 0, 1)
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)
        x, i = self.emb[src], 0
        for blk in self.enc:
            x = x + self.mha(blk["sa"], self.norm(x, i), self.norm(x, i), eb)[0]
            x = x + blk["wo"](F.relu(blk["wi"](self.norm(x, i + 1))))
            i += 2
        enc = self.norm(x, i)
        i += 1
        y, cross = self.emb[dec_in], []
        for blk in self.dec:
            yn = self.norm(y, i)
            y = y + self.mha(blk["sa"], yn, yn, db, mask)[0]
            o, a = self.mha(blk["xa"], self.norm(y, i + 1), enc, None)
            y = y + o
            cross.append(a)
            y = y + blk["wo"](F.relu(blk["wi"](self.norm(y, i + 2))))
            i += 3
        return (self.norm(y, i) * self.d ** -0.5) @ self.emb.T, cross


def batches(rows, B, ids, rng):
    by_len = {}
    for r in rows:
        by_len.setdefault(len(r[1]), []).append(r)
    lens = sorted(by_len)
    while True:
        group = by_len[lens[int(torch.randint(len(lens), (1,), generator=rng))]]
        pick = torch.randint(len(group), (B,), generator=rng)
        yield [group[int(k)] for k in pick]


def tensors(batch, ids):
    src = torch.tensor([[ids[w] for w in r[0]] + [1] for r in batch])
    tgt = torch.tensor([[ids[w] for w in r[1]] + [1] for r in batch])
    dec_in = torch.cat([torch.zeros(len(batch), 1, dtype=torch.long), tgt[:, :-1]], 1)
    return src, dec_in, tgt


def evaluate(model, rows, ids):
    model.eval()
    loss = exact = hits = words = 0
    by_len = {}
    for r in rows:
        by_len.setdefault(len(r[1]), []).append(r)
    with torch.no_grad():
        for group in by_len.values():
            src, dec_in, tgt = tensors(group, ids)
            logits, cross = model(src, dec_in)
            loss += F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), reduction="sum").item() / tgt.shape[1]
            # greedy, without a cache: the model is tiny
            out = torch.zeros(len(group), 1, dtype=torch.long)
            for _ in range(tgt.shape[1]):
                out = torch.cat([out, model(src, out)[0][:, -1].argmax(-1, keepdim=True)], 1)
            exact += (out[:, 1:] == tgt).all(1).sum().item()
            # the last decoder layer's best head: argmax over sources at rows 0..n-1
            n = tgt.shape[1] - 1
            align = torch.tensor([r[2] for r in group])
            best = cross[-1][:, :, :n].argmax(-1)  # (B, H, n)
            hits += max((best[:, h] == align).sum().item() for h in range(best.shape[1]))
            words += len(group) * n
    model.train()
    return loss / len(rows), exact / len(rows), hits / words


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--rules", default="copy,reverse")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--bias-lr-mult", type=float, default=10)
    ap.add_argument("--repeats", action="store_true", help="digits may repeat in a string")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:  # the task's tokenizer, for its id order
        subprocess.run(["build/tools/s2s_examples", "--n", "0", "--tokenizer", tmp], check=True)
        with open(os.path.join(tmp, "tokenizer.json")) as f:
            vocab = [p for p, _ in json.load(f)["model"]["vocab"]]
    ids = {p.lstrip("\u2581"): i for i, p in enumerate(vocab)}
    train = examples(50000, 1, False, args.rules, args.repeats)
    held = examples(400, 2, True, args.rules, args.repeats)
    model = T5(len(vocab), args.d, args.heads, args.d // args.heads, 4 * args.d, args.layers)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"T5 {args.layers}+{args.layers} layers, d {args.d}, {args.heads} heads, d_ff {4 * args.d}, vocab "
          f"{len(vocab)}: {n_params / 1e6:.2f} M parameters, {4 * n_params / 1e6:.1f} MB float32; "
          f"{args.threads} threads, batch {args.batch}, Adam lr {args.lr} (x{args.bias_lr_mult:g} for the relative "
          f"biases; warmup {args.warmup}, clip 1), rules "
          f"{args.rules}{', repeats' if args.repeats else ''}", flush=True)
    # The relative position biases are the model's only sense of order, and Adam moves a
    # parameter by about lr a step: at 1e-3 they need thousands of steps to reach the few
    # units a sharp "the previous position" head needs, so they learn --bias-lr-mult faster.
    bias = [model.rel_enc, model.rel_dec]
    rest = [p for p in model.parameters() if all(p is not b for b in bias)]
    opt = torch.optim.Adam([{"params": rest}, {"params": bias, "lr": args.lr * args.bias_lr_mult}], lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / args.warmup))
    rng = torch.Generator().manual_seed(0)
    start, step = time.time(), 0
    for batch in batches(train, args.batch, ids, rng):
        src, dec_in, tgt = tensors(batch, ids)
        logits, _ = model(src, dec_in)
        loss = F.cross_entropy(logits.flatten(0, 1), tgt.flatten())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        done = time.time() - start > args.minutes * 60
        if step % args.eval_every == 0 or done:
            hl, exact, align = evaluate(model, held, ids)
            print(f"step {step:6d} {((time.time() - start) / 60):5.1f} min  train loss {loss.item():.4f}  held-out "
                  f"loss {hl:.4f}  exact {exact:.3f}  alignment {align:.3f}", flush=True)
        if done:
            break


if __name__ == "__main__":
    main()
