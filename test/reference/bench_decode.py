"""The PyTorch side of `npm run bench:decode`: greedy decoding with a KV cache, float32, batch 1, on the
reference's layers (projections, q/k norm, RoPE, grouped attention over the cache, SwiGLU).
Usage: /usr/bin/python3 bench_decode.py <modelDir> <prompt ids, comma separated> <new tokens> <threads>
Prints one JSON line: {"tok_s", "tokens", "ids"} (ids: the generated tokens, to compare with the engine)."""
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sdpo_reference import load_model, rms_norm, rotate_half  # noqa: E402


def rope_at(x, pos, theta):
    """x: [heads, D] at one position."""
    D = x.shape[-1]
    inv = theta ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    ang = torch.cat([pos * inv, pos * inv]).to(x.dtype)
    return x * torch.cos(ang) + rotate_half(x) * torch.sin(ang)


@torch.no_grad()
def step(cfg, w, token, pos, cache):
    N, M, D = cfg["heads"], cfg["kv_heads"], cfg["head_dim"]
    x = w["embed"][token]
    for l in range(cfg["layers"]):
        p = f"model.layers.{l}"
        n = rms_norm(x, w[f"{p}.input_layernorm.weight"], cfg["eps"])
        q = (w[f"{p}.self_attn.q_proj.weight"] @ n).view(N, D)
        k = (w[f"{p}.self_attn.k_proj.weight"] @ n).view(M, D)
        v = (w[f"{p}.self_attn.v_proj.weight"] @ n).view(M, D)
        if cfg["qk_norm"]:
            q = rms_norm(q, w[f"{p}.self_attn.q_norm.weight"], cfg["eps"])
            k = rms_norm(k, w[f"{p}.self_attn.k_norm.weight"], cfg["eps"])
        q, k = rope_at(q, pos, cfg["theta"]), rope_at(k, pos, cfg["theta"])
        ks, vs = cache[l]
        ks[pos], vs[pos] = k, v
        K = ks[:pos + 1].repeat_interleave(N // M, dim=1)  # [T, N, D]
        V = vs[:pos + 1].repeat_interleave(N // M, dim=1)
        att = torch.softmax(torch.einsum("nd,tnd->nt", q, K) / math.sqrt(D), dim=-1)
        o = torch.einsum("nt,tnd->nd", att, V).reshape(N * D)
        x = x + w[f"{p}.self_attn.o_proj.weight"] @ o
        n = rms_norm(x, w[f"{p}.post_attention_layernorm.weight"], cfg["eps"])
        h = torch.nn.functional.silu(w[f"{p}.mlp.gate_proj.weight"] @ n) * (w[f"{p}.mlp.up_proj.weight"] @ n)
        x = x + w[f"{p}.mlp.down_proj.weight"] @ h
    return w["lm_head"] @ rms_norm(x, w["final_norm"], cfg["eps"])


def main():
    model_dir, prompt, new_tokens, threads = sys.argv[1], [int(t) for t in sys.argv[2].split(",")], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    cfg, w = load_model(model_dir)
    total = len(prompt) + new_tokens
    cache = [(torch.zeros(total, cfg["kv_heads"], cfg["head_dim"]), torch.zeros(total, cfg["kv_heads"], cfg["head_dim"])) for _ in range(cfg["layers"])]
    for pos, t in enumerate(prompt[:-1]):
        step(cfg, w, t, pos, cache)
    token, pos, out = prompt[-1], len(prompt) - 1, []
    t0 = time.perf_counter()
    for _ in range(new_tokens):
        token = int(torch.argmax(step(cfg, w, token, pos, cache)))
        out.append(token)
        pos += 1
    elapsed = time.perf_counter() - t0
    print(json.dumps({"tok_s": new_tokens / elapsed, "tokens": new_tokens, "ids": out}))


if __name__ == "__main__":
    main()
