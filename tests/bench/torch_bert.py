#!/usr/bin/python3
"""make bench: the PyTorch equivalent of loupe's BERT figures, on the same checkpoint.

BertForSequenceClassification written out in float32 torch.nn.functional (the reader and
the layer wiring of tests/fixtures/encoder_reference.py, without transformers, which Debian
does not package): the forward at T=128 and T=512 keeping every layer's hidden states and
attention patterns (what HF's output_hidden_states and output_attentions keep; loupe
captures more), and integrated gradients with 32 steps for label 0 at T=128 as Captum runs
them (the 32 interpolated inputs as one batch, forward and backward, plus the baseline's
forward), with loupe's Gauss-Legendre nodes and weights. The ids are bench.c's fill_ids, so
with --compare-logits FILE (bench --save-logits) the label logits are checked against
loupe's: the two compute the same thing.

usage: OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 tests/bench/torch_bert.py MODEL_DIR [--compare-logits FILE]
"""

import json
import math
import mmap
import os
import statistics
import struct
import sys
import time

import numpy as np
import torch

F = torch.nn.functional


def load(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(model_dir, "model.safetensors"), "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    n = struct.unpack("<Q", mm[:8])[0]
    header = json.loads(mm[8:8 + n])
    W = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        if t["dtype"] != "F32":
            sys.exit(f"error: {name} is {t['dtype']}; this bench reads the F32 checkpoints mkmodel writes")
        a, b = t["data_offsets"]
        W[name] = torch.from_numpy(np.frombuffer(mm, dtype="<f4", count=(b - a) // 4, offset=8 + n + a)
                                   .reshape(t["shape"]).copy())
    return cfg, W


def fill_ids(n, vocab):
    """bench.c's fill_ids: the same 64-bit LCG."""
    x, out = 12345, []
    for _ in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out.append((x >> 33) % vocab)
    return out


def gauss_legendre(n):
    """Nodes on [0, 1] and weights (numpy's leggauss, mapped), as lp_gauss_legendre."""
    x, w = np.polynomial.legendre.leggauss(n)
    return (x + 1) / 2, w / 2


class Bert:
    def __init__(self, cfg, W):
        self.cfg, self.W = cfg, W
        self.L, self.H = cfg["num_hidden_layers"], cfg["num_attention_heads"]
        self.eps = cfg.get("layer_norm_eps", 1e-12)

    def lin(self, x, name):
        return F.linear(x, self.W[name + ".weight"], self.W[name + ".bias"])

    def ln(self, x, name):
        return F.layer_norm(x, x.shape[-1:], self.W[name + ".weight"], self.W[name + ".bias"], self.eps)

    def embed_rest(self, T):
        """Position and token-type (0) embeddings: the part of the summed embeddings IG keeps."""
        W = self.W
        return W["bert.embeddings.position_embeddings.weight"][:T] + W["bert.embeddings.token_type_embeddings.weight"][0]

    def forward(self, tok_emb, keep):
        """tok_emb (B, T, d): word embeddings. Returns the label logits (B, n_labels) and, with
        keep, every layer's hidden states and attention patterns."""
        B, T, d = tok_emb.shape
        H, hd = self.H, d // self.H
        x = self.ln(tok_emb + self.embed_rest(T), "bert.embeddings.LayerNorm")
        hidden, attns = [x], []
        for i in range(self.L):
            p = f"bert.encoder.layer.{i}."
            q, k, v = (self.lin(x, p + "attention.self." + n).view(B, T, H, hd).transpose(1, 2)
                       for n in ("query", "key", "value"))
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
            ctx = (a @ v).transpose(1, 2).reshape(B, T, d)
            mid = self.ln(self.lin(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            h = F.gelu(self.lin(mid, p + "intermediate.dense"))
            x = self.ln(self.lin(h, p + "output.dense") + mid, p + "output.LayerNorm")
            if keep:
                hidden.append(x)
                attns.append(a)
        pooled = torch.tanh(self.lin(x[:, 0], "bert.pooler.dense"))
        return self.lin(pooled, "classifier"), hidden, attns


def compare_file(what, got, path, tol):
    """Prints max |got - loupe's| for loupe's float32 values in path, against tol times the
    largest of them (at least 1)."""
    want = np.fromfile(path, dtype="<f4").astype(np.float64)
    got = np.asarray(got, dtype=np.float64).ravel()
    if want.shape != got.shape:
        print(f"  {what}: cannot compare: {path} holds {want.size} values, not {got.size}")
        return
    diff, mag = np.abs(got - want).max(), np.abs(want).max()
    print(f"  {what} vs loupe's: max |diff| {diff:.2e} (values up to {mag:.2f}; tolerance {tol:g}"
          f"{' x that' if mag > 1 else ''}: {'same' if diff <= tol * max(mag, 1.0) else 'DIFFERENT'})")


def start(doc, names):
    """The decoder scripts' start: MODEL_DIR then pairs `--name VALUE` (names: those allowed;
    else the usage line of doc), no gradients, as many threads as CPUs (as loupe's OpenBLAS),
    the checkpoint, and the header line. Returns cfg, W and the options given."""
    args, opts = sys.argv[1:], {}
    while len(args) >= 3 and args[-2] in names:
        opts[args[-2]] = args[-1]
        args = args[:-2]
    if len(args) != 1 or args[0].startswith("-"):
        sys.exit(doc.strip().splitlines()[-1])
    torch.set_grad_enabled(False)
    torch.set_num_threads(os.cpu_count())
    cfg, W = load(args[0])
    print(f"torch {torch.__version__}, float32, {torch.get_num_threads()} threads, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, load average {os.getloadavg()[0]:.2f}")
    return cfg, W, opts


def timed(fn, reps, warm=True):
    if warm:
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def main():
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        sys.exit(__doc__.strip().splitlines()[-1])
    model_dir, compare = args[0], None
    if len(args) == 3 and args[1] == "--compare-logits":
        compare = args[2]
    elif len(args) != 1:
        sys.exit(__doc__.strip().splitlines()[-1])
    torch.set_grad_enabled(False)
    torch.set_num_threads(os.cpu_count())  # as many as loupe's OpenBLAS takes (Debian's torch may start with one)
    cfg, W = load(model_dir)
    m = Bert(cfg, W)
    wte = W["bert.embeddings.word_embeddings.weight"]
    print(f"torch {torch.__version__}, float32, {torch.get_num_threads()} threads, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    for T, reps in ((128, 5), (512, 3)):
        e = wte[torch.tensor(fill_ids(T, cfg["vocab_size"]))][None]
        med, best = timed(lambda: m.forward(e, True), reps)
        print(f"torch forward T={T}: {med * 1e3:.1f} ms (median of {reps}, best {best * 1e3:.1f}), "
              "hidden states and attention patterns kept")
        if T == 128 and compare:
            compare_file("label logits", m.forward(e, False)[0][0], compare, 1e-4)

    # Integrated gradients, label 0, zero baseline for the word embeddings, T=128.
    T, steps = 128, 32
    x = wte[torch.tensor(fill_ids(T, cfg["vocab_size"]))]
    alpha, w = gauss_legendre(steps)
    alpha = torch.tensor(alpha, dtype=torch.float32)[:, None, None]
    wts = torch.tensor(w, dtype=torch.float32)

    def ig():
        with torch.enable_grad():
            inp = (alpha * x[None]).requires_grad_(True)
            logits = m.forward(inp, False)[0]
            (logits[:, 0] * wts).sum().backward()
        m.forward(torch.zeros_like(x)[None], False)  # the baseline's value, for the completeness check
        return (inp.grad.sum(0) * x).sum(-1)

    fwd, _ = timed(lambda: m.forward(x[None], True), 5)
    med, _ = timed(ig, 1, warm=False)
    print(f"torch ig-32 T={T}: {med:.2f} s = {med / fwd:.1f}x its forward of "
          f"{fwd * 1e3:.1f} ms, {(steps + 1) * T / med:.0f} tokens/s (the 32 steps as one batch of {steps}x{T})")


if __name__ == "__main__":
    main()
