"""Independent float64 PyTorch reference of the CLaaS update step (sdpo.md): Qwen3 / Qwen2 decoder,
LoRA, the SDPO loss in every mode, gradient clipping and AdamW. Written from the equations with plain
torch ops and autograd; it shares no code with the engine."""
import json
import math
import struct

import numpy as np
import torch

MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# ----------------------------------------------------------------------------- safetensors
def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, np.ndarray) with dtype float32/float16/float64, or (name, ndarray, 'BF16')."""
    header, blobs, offset = {}, [], 0
    for item in tensors:
        name, arr = item[0], item[1]
        if len(item) == 3 and item[2] == "BF16":
            raw = arr.astype(np.uint16).tobytes()
            dtype = "BF16"
        else:
            arr = np.ascontiguousarray(arr)
            dtype = {np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("float64"): "F64"}[arr.dtype]
            raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":"))
    text += " " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text.encode())
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    """name -> float32 numpy array, for F32 / F16 / BF16 files."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        raw = np.frombuffer(data[b:e], dtype={"F32": "<f4", "F16": "<f2", "BF16": "<u2", "F64": "<f8"}[t["dtype"]])
        arr = bf16_bits_to_float(raw) if t["dtype"] == "BF16" else raw.astype(np.float32)
        out[name] = arr.reshape(t["shape"])
    return out


def to_bf16_bits(x):
    """Round float32 to bfloat16 (round to nearest even); returns the uint16 bit patterns."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def bf16_bits_to_float(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


# ----------------------------------------------------------------------------- the model
def rms_norm(x, w, eps):
    return w * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def rope(x, theta):
    """x: [T, heads, D]; positions 0..T-1; HF's rotate-half convention (angles in float64)."""
    T, _, D = x.shape
    inv = theta ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    emb = torch.cat([ang, ang], dim=-1)
    cos, sin = torch.cos(emb)[:, None, :].to(x.dtype), torch.sin(emb)[:, None, :].to(x.dtype)
    return x * cos + rotate_half(x) * sin


def project(x, weights, layer, module, lora, bias_on):
    W = weights[f"{layer}.{module}.weight"]
    y = x @ W.T
    if bias_on:
        y = y + weights[f"{layer}.{module}.bias"]
    if lora is not None and (layer, module) in lora["A"]:
        A, B = lora["A"][(layer, module)], lora["B"][(layer, module)]
        y = y + lora["scale"] * ((x @ A.T) @ B.T)
    return y


def forward(cfg, weights, ids, lora=None):
    """Logits [T, V] of the sequence ids, float64."""
    H, N, M, D = cfg["hidden"], cfg["heads"], cfg["kv_heads"], cfg["head_dim"]
    T = len(ids)
    x = weights["embed"][torch.tensor(ids)]
    mask = torch.full((T, T), float("-inf"), dtype=x.dtype).triu(1)
    for l in range(cfg["layers"]):
        p = f"model.layers.{l}"
        n = rms_norm(x, weights[f"{p}.input_layernorm.weight"], cfg["eps"])
        q = project(n, weights, f"{p}.self_attn", "q_proj", lora and lora.get(l), cfg["bias"]["q"]).view(T, N, D)
        k = project(n, weights, f"{p}.self_attn", "k_proj", lora and lora.get(l), cfg["bias"]["k"]).view(T, M, D)
        v = project(n, weights, f"{p}.self_attn", "v_proj", lora and lora.get(l), cfg["bias"]["v"]).view(T, M, D)
        if cfg["qk_norm"]:
            q = rms_norm(q, weights[f"{p}.self_attn.q_norm.weight"], cfg["eps"])
            k = rms_norm(k, weights[f"{p}.self_attn.k_norm.weight"], cfg["eps"])
        q, k = rope(q, cfg["theta"]), rope(k, cfg["theta"])
        rep = N // M
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        scores = torch.einsum("tnd,snd->nts", q, k) / math.sqrt(D) + mask
        att = torch.einsum("nts,snd->tnd", torch.softmax(scores, dim=-1), v).reshape(T, N * D)
        x = x + project(att, weights, f"{p}.self_attn", "o_proj", lora and lora.get(l), cfg["bias"]["o"])
        n = rms_norm(x, weights[f"{p}.post_attention_layernorm.weight"], cfg["eps"])
        g = project(n, weights, f"{p}.mlp", "gate_proj", lora and lora.get(l), False)
        u = project(n, weights, f"{p}.mlp", "up_proj", lora and lora.get(l), False)
        x = x + project(torch.nn.functional.silu(g) * u, weights, f"{p}.mlp", "down_proj", lora and lora.get(l), False)
    x = rms_norm(x, weights["final_norm"], cfg["eps"])
    return x @ weights["lm_head"].T


def load_model(model_dir, dtype=torch.float32):
    """A single-file Qwen3 folder as (cfg, weights) for forward(); used by the benchmarks."""
    raw = json.load(open(f"{model_dir}/config.json"))
    w = {k: torch.from_numpy(v.copy()).to(dtype) for k, v in read_safetensors(f"{model_dir}/model.safetensors").items()}
    w["embed"], w["final_norm"] = w["model.embed_tokens.weight"], w["model.norm.weight"]
    w["lm_head"] = w["embed"] if raw.get("tie_word_embeddings") else w["lm_head.weight"]
    qwen3 = raw["model_type"] == "qwen3"
    cfg = dict(hidden=raw["hidden_size"], heads=raw["num_attention_heads"], kv_heads=raw["num_key_value_heads"],
               head_dim=raw.get("head_dim") or raw["hidden_size"] // raw["num_attention_heads"],
               layers=raw["num_hidden_layers"], eps=raw["rms_norm_eps"], theta=raw["rope_theta"], qk_norm=qwen3,
               bias=dict(q=not qwen3, k=not qwen3, v=not qwen3, o=False), inter=raw["intermediate_size"])
    return cfg, w


def lora_view(params, shape):
    """params: dict peft_key -> tensor. Returns {layer: {'A': {(prefix, module): A}, ...}} for forward()."""
    out = {}
    for key, value in params.items():
        # base_model.model.model.layers.{l}.{group}.{module}.lora_{A|B}.weight
        parts = key.split(".")
        l, group, module, which = int(parts[4]), parts[5], parts[6], parts[7][-1]
        entry = out.setdefault(l, {"A": {}, "B": {}, "scale": shape["alpha"] / shape["r"]})
        entry[which][(f"model.layers.{l}.{group}", module)] = value
    return out


# ----------------------------------------------------------------------------- the SDPO loss
def divergence(logP, logQ, alpha):
    """Per-row D over the category axis (last). logP constant, logQ differentiable."""
    P, Q = logP.exp(), logQ.exp()
    if alpha == 0:
        return (P * (logP - logQ)).sum(-1)
    if alpha == 1:
        return (Q * (logQ - logP)).sum(-1)
    M = alpha * P + (1 - alpha) * Q
    logM = M.log()
    return alpha * (P * (logP - logM)).sum(-1) + (1 - alpha) * (Q * (logQ - logM)).sum(-1)


def categories(logp_full, idx, tail):
    """logp_full [T, V] log-probs; idx [T, K]. Returns [T, K(+1)] log-probs of the categories."""
    top = torch.gather(logp_full, 1, idx)
    if tail:
        mass = top.exp().sum(-1, keepdim=True)
        rest = torch.clamp(1 - mass, min=1e-12)
        return torch.cat([top, rest.log()], dim=-1)
    return top - torch.logsumexp(top, dim=-1, keepdim=True)


def sample_terms(s, teacher, base_lp, resp, old, opt):
    """s: student log-probs [T, V] (grad); teacher: log-probs [T, V] (const). Returns (wD mean, k mean, D mean, w, clipped)."""
    y = torch.tensor(resp)
    s_y = s[torch.arange(len(resp)), y]
    if old is None:
        w = torch.ones_like(s_y)
        clipped = torch.zeros_like(s_y, dtype=torch.bool)
    else:
        ratio = torch.exp(torch.clamp(s_y.detach() - torch.tensor(old, dtype=s.dtype), -20, 20))
        clipped = ratio > opt["isClip"]
        w = torch.clamp(ratio, max=opt["isClip"])
    if opt["sampledToken"]:
        t_y = teacher[torch.arange(len(resp)), y]
        D = (s_y - t_y).detach() * s_y
    else:
        idx = torch.topk(teacher, opt["topK"], dim=-1).indices
        D = divergence(categories(teacher, idx, opt["tail"]), categories(s, idx, opt["tail"]), opt["alpha"])
    r = torch.clamp(s_y - base_lp, -20, 20)
    k3 = r.exp() - 1 - r
    return (w * D).mean(), k3.mean(), D.mean(), w, clipped


# ----------------------------------------------------------------------------- AdamW
def adamw(p, g, m, v, step, lr, b1, b2, eps, wd):
    """torch.optim.AdamW, written out; step is the count after this update (1-based)."""
    p = p * (1 - lr * wd)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    mhat = m / (1 - b1 ** step)
    vhat = v / (1 - b2 ** step)
    return p - lr * mhat / (vhat.sqrt() + eps), m, v
