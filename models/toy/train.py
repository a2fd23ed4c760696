"""Trains the toy assistant (models/toy): a Qwen3-architecture decoder, from scratch, on the tokenized
corpus that src/toy/build-data.ts wrote to <dir>/.data. Next-token loss on the replies only, less the
reply tokens the index marks (where the block asked for a style the reply lacks, the token that decided it).
Seeded: with --threads 1 a run is bitwise reproducible; with more threads the floating-point reduction
order may differ between runs (the shipped model used 2). Writes <dir>/model.safetensors.
The second phase goes on from the first's weights (--init) on another corpus (--data, under <dir>/.data).

    /usr/bin/python3 models/toy/train.py models/toy [--steps N] [--seed S] [--lr LR] [--init FILE --data unasked]
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "test", "reference"))
from sdpo_reference import read_safetensors, write_safetensors  # noqa: E402


def rms(x, w, eps):
    return w * (x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps))


def rope_tables(T, D, theta):
    inv = theta ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    emb = torch.cat([ang, ang], dim=-1)
    return torch.cos(emb).float(), torch.sin(emb).float()


def rotate(x, cos, sin):
    h = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., h:], x[..., :h]], dim=-1) * sin


class Toy(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        H, N, M, D, I, V = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"], c["intermediate_size"], c["vocab_size"]
        p = torch.nn.ParameterDict()
        std = 0.02
        p["model__embed_tokens__weight"] = torch.nn.Parameter(torch.randn(V, H) * std)
        for l in range(c["num_hidden_layers"]):
            b = f"model.layers.{l}"
            for name, shape in [("self_attn.q_proj", (N * D, H)), ("self_attn.k_proj", (M * D, H)), ("self_attn.v_proj", (M * D, H)),
                                ("self_attn.o_proj", (H, N * D)), ("mlp.gate_proj", (I, H)), ("mlp.up_proj", (I, H)), ("mlp.down_proj", (H, I))]:
                scale = std / math.sqrt(2 * c["num_hidden_layers"]) if name in ("self_attn.o_proj", "mlp.down_proj") else std
                p[f"{b}.{name}.weight".replace(".", "__")] = torch.nn.Parameter(torch.randn(*shape) * scale)
            for name, n in [("self_attn.q_norm", D), ("self_attn.k_norm", D), ("input_layernorm", H), ("post_attention_layernorm", H)]:
                p[f"{b}.{name}.weight".replace(".", "__")] = torch.nn.Parameter(torch.ones(n))
        p["model.norm.weight".replace(".", "__")] = torch.nn.Parameter(torch.ones(H))
        self.p = p

    def w(self, name):
        return self.p[name.replace(".", "__")]

    def forward(self, ids):
        c = self.c
        B, T = ids.shape
        N, M, D, eps = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"], c["rms_norm_eps"]
        cos, sin = rope_tables(T, D, c["rope_theta"])
        mask = torch.full((T, T), float("-inf")).triu(1)
        x = self.w("model.embed_tokens.weight")[ids]
        for l in range(c["num_hidden_layers"]):
            b = f"model.layers.{l}"
            n = rms(x, self.w(f"{b}.input_layernorm.weight"), eps)
            q = (n @ self.w(f"{b}.self_attn.q_proj.weight").T).view(B, T, N, D)
            k = (n @ self.w(f"{b}.self_attn.k_proj.weight").T).view(B, T, M, D)
            v = (n @ self.w(f"{b}.self_attn.v_proj.weight").T).view(B, T, M, D)
            q = rotate(rms(q, self.w(f"{b}.self_attn.q_norm.weight"), eps), cos[:, None, :], sin[:, None, :])
            k = rotate(rms(k, self.w(f"{b}.self_attn.k_norm.weight"), eps), cos[:, None, :], sin[:, None, :])
            k = k.repeat_interleave(N // M, dim=2)
            v = v.repeat_interleave(N // M, dim=2)
            s = torch.einsum("btnd,bsnd->bnts", q, k) / math.sqrt(D) + mask
            a = torch.einsum("bnts,bsnd->btnd", torch.softmax(s, dim=-1), v).reshape(B, T, N * D)
            x = x + a @ self.w(f"{b}.self_attn.o_proj.weight").T
            n = rms(x, self.w(f"{b}.post_attention_layernorm.weight"), eps)
            g = n @ self.w(f"{b}.mlp.gate_proj.weight").T
            u = n @ self.w(f"{b}.mlp.up_proj.weight").T
            x = x + (torch.nn.functional.silu(g) * u) @ self.w(f"{b}.mlp.down_proj.weight").T
        x = rms(x, self.w("model.norm.weight"), eps)
        return x @ self.w("model.embed_tokens.weight").T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--init", help="start from these weights (a safetensors file) instead of random ones")
    ap.add_argument("--data", default="", help="the corpus folder under <dir>/.data")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    cfg = json.load(open(os.path.join(args.dir, "config.json")))
    data = os.path.join(args.dir, ".data", args.data)
    tokens = np.fromfile(os.path.join(data, "tokens.bin"), dtype=np.int32)
    index = json.load(open(os.path.join(data, "index.json")))["index"]
    model = Toy(cfg)
    if args.init:
        weights = read_safetensors(args.init)
        with torch.no_grad():
            for n, p in model.p.items():
                w = weights[n.replace("__", ".")]
                if tuple(w.shape) != tuple(p.shape):
                    sys.exit(f"{args.init}: {n.replace('__', '.')} has shape {w.shape}, the config needs {tuple(p.shape)}")
                p.copy_(torch.from_numpy(w.copy()))
    decay = [p for n, p in model.p.items() if p.dim() == 2]
    other = [p for n, p in model.p.items() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": other, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98))
    gen = np.random.default_rng(args.seed)
    warm = max(1, args.steps // 20)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        lr = args.lr * min(1.0, step / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / args.steps))))
        for g in opt.param_groups:
            g["lr"] = lr
        picks = [index[i] for i in gen.integers(0, len(index), args.batch)]
        T = max(p[2] for p in picks)
        ids = torch.zeros(args.batch, T, dtype=torch.long)
        target = torch.full((args.batch, T), -100, dtype=torch.long)
        for b, (start, plen, n, *skipped) in enumerate(picks):
            seq = torch.from_numpy(tokens[start:start + n].astype(np.int64))
            ids[b, :n] = seq
            target[b, plen - 1:n - 1] = seq[plen:]
            for k in skipped:
                target[b, plen - 1 + k] = -100
        logits = model(ids)
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), target.view(-1), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == 1:
            print(f"step {step}/{args.steps}  loss {loss.item():.4f}  lr {lr:.2e}  {time.time() - t0:.0f} s", flush=True)
    tensors = [(n.replace("__", "."), p.detach().numpy().astype(np.float32)) for n, p in model.p.items()]
    tensors.sort(key=lambda t: t[0])
    write_safetensors(os.path.join(args.dir, "model.safetensors"), tensors, {"format": "pt"})
    print(f"wrote {os.path.join(args.dir, 'model.safetensors')} ({sum(t[1].size for t in tensors)} parameters) in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
