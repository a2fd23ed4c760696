"""Writes the engine's reference fixtures (test/reference/fixtures/<config>/): tiny Hugging Face model
folders (fp32 single file, bf16 sharded, fp16 Qwen2-style), a PEFT adapter with AdamW and EMA state,
SDPO cases, and what the float64 reference computes for them: logits, loss and metrics, every LoRA
gradient, and the adapter after the step. Run with Debian's python3-torch: /usr/bin/python3."""
import json
import os
import shutil
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sdpo_reference import (MODULES, adamw, bf16_bits_to_float, forward, lora_view, sample_terms,  # noqa: E402
                            to_bf16_bits, write_safetensors)

torch.set_default_dtype(torch.float64)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")

CONFIGS = {
    "tied": dict(model_type="qwen3", vocab=97, hidden=48, layers=2, heads=4, kv_heads=2, head_dim=16, inter=80,
                 tied=True, theta=10000.0, dtype="F32", shards=1, r=4, alpha=8, targets=MODULES, seed=1),
    "untied-gqa4": dict(model_type="qwen3", vocab=131, hidden=64, layers=3, heads=8, kv_heads=2, head_dim=12, inter=96,
                        tied=False, theta=1000000.0, dtype="BF16", shards=2, r=8, alpha=16,
                        targets=["q_proj", "v_proj", "down_proj"], seed=2),
    "qwen2-bias": dict(model_type="qwen2", vocab=80, hidden=32, layers=2, heads=2, kv_heads=1, head_dim=16, inter=64,
                       tied=False, theta=10000.0, dtype="F16", shards=1, r=4, alpha=4,
                       targets=["q_proj", "k_proj", "v_proj", "o_proj"], seed=3),
}
DEFAULTS = dict(alpha=0.5, topK=8, tail=True, teacher="current", sampledToken=False, isClip=2.0, beta=0.0,
                learningRate=1e-3, maxGradNorm=1.0, weightDecay=0.01, adamBeta1=0.9, adamBeta2=0.999,
                adamEps=1e-8, emaRate=0.05, steps=1)


def cases_for(name):
    out = []
    if name == "tied":
        for a in (0.0, 0.5, 1.0):
            for tail in (True, False):
                for teacher in ("base", "current", "ema"):
                    out.append((f"a{a:g}-{'tail' if tail else 'renorm'}-{teacher}", dict(alpha=a, tail=tail, teacher=teacher)))
        out += [("sampled-token", dict(sampledToken=True)),
                ("beta-isclip", dict(beta=0.1, isClip=1.5)),
                ("two-steps", dict(steps=2)),
                ("no-clip-a0.3", dict(maxGradNorm=1e9, alpha=0.3))]
    elif name == "untied-gqa4":
        for a in (0.0, 0.5, 1.0):
            for tail in (True, False):
                out.append((f"a{a:g}-{'tail' if tail else 'renorm'}-current", dict(alpha=a, tail=tail)))
        out += [("ema", dict(teacher="ema")), ("sampled-token-beta", dict(sampledToken=True, beta=0.05))]
    else:
        for teacher in ("base", "current", "ema"):
            out.append((f"a0.5-tail-{teacher}", dict(teacher=teacher)))
        out.append(("a0-renorm-base", dict(alpha=0.0, tail=False, teacher="base")))
    return [(n, {**DEFAULTS, **o}) for n, o in out]


def build_model(name, c, folder):
    rng = np.random.default_rng(c["seed"])
    H, N, M, D, F, V = c["hidden"], c["heads"], c["kv_heads"], c["head_dim"], c["inter"], c["vocab"]
    qwen3 = c["model_type"] == "qwen3"
    named = []

    def add(key, shape, kind):
        if kind == "norm":
            a = 1 + 0.1 * rng.standard_normal(shape)
        elif kind == "bias":
            a = 0.1 * rng.standard_normal(shape)
        else:
            a = 0.2 * rng.standard_normal(shape)
        named.append((key, a.astype(np.float32)))

    add("model.embed_tokens.weight", (V, H), "w")
    for l in range(c["layers"]):
        p = f"model.layers.{l}"
        add(f"{p}.input_layernorm.weight", (H,), "norm")
        add(f"{p}.self_attn.q_proj.weight", (N * D, H), "w")
        add(f"{p}.self_attn.k_proj.weight", (M * D, H), "w")
        add(f"{p}.self_attn.v_proj.weight", (M * D, H), "w")
        add(f"{p}.self_attn.o_proj.weight", (H, N * D), "w")
        if not qwen3:
            add(f"{p}.self_attn.q_proj.bias", (N * D,), "bias")
            add(f"{p}.self_attn.k_proj.bias", (M * D,), "bias")
            add(f"{p}.self_attn.v_proj.bias", (M * D,), "bias")
        if qwen3:
            add(f"{p}.self_attn.q_norm.weight", (D,), "norm")
            add(f"{p}.self_attn.k_norm.weight", (D,), "norm")
        add(f"{p}.post_attention_layernorm.weight", (H,), "norm")
        add(f"{p}.mlp.gate_proj.weight", (F, H), "w")
        add(f"{p}.mlp.up_proj.weight", (F, H), "w")
        add(f"{p}.mlp.down_proj.weight", (H, F), "w")
    add("model.norm.weight", (H,), "norm")
    if not c["tied"]:
        add("lm_head.weight", (V, H), "w")

    # Round to the stored dtype; the reference computes with exactly the stored values.
    stored, values = [], {}
    for key, a in named:
        if c["dtype"] == "BF16":
            bits = to_bf16_bits(a)
            stored.append((key, bits, "BF16"))
            values[key] = bf16_bits_to_float(bits)
        elif c["dtype"] == "F16":
            h = a.astype(np.float16)
            stored.append((key, h))
            values[key] = h.astype(np.float32)
        else:
            stored.append((key, a))
            values[key] = a
    os.makedirs(folder)
    if c["shards"] == 1:
        write_safetensors(os.path.join(folder, "model.safetensors"), stored, {"format": "pt"})
    else:
        half = len(stored) // 2
        parts = [stored[:half], stored[half:]]
        weight_map, total = {}, 0
        for i, part in enumerate(parts):
            fname = f"model-{i + 1:05d}-of-{len(parts):05d}.safetensors"
            write_safetensors(os.path.join(folder, fname), part, {"format": "pt"})
            for item in part:
                weight_map[item[0]] = fname
                total += item[1].nbytes
        with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    config = {
        "architectures": ["Qwen3ForCausalLM" if qwen3 else "Qwen2ForCausalLM"],
        "model_type": c["model_type"], "vocab_size": V, "hidden_size": H, "intermediate_size": F,
        "num_hidden_layers": c["layers"], "num_attention_heads": N, "num_key_value_heads": M,
        "rms_norm_eps": 1e-6, "rope_theta": c["theta"], "rope_scaling": None, "tie_word_embeddings": c["tied"],
        "max_position_embeddings": 32768, "hidden_act": "silu",
        "torch_dtype": {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}[c["dtype"]],
        "bos_token_id": 0, "eos_token_id": 1, "use_sliding_window": False,
    }
    if qwen3:
        config["head_dim"] = D
        config["attention_bias"] = False
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)

    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in values.items()}
    weights = dict(t)
    weights["embed"] = t["model.embed_tokens.weight"]
    weights["final_norm"] = t["model.norm.weight"]
    weights["lm_head"] = t["model.embed_tokens.weight"] if c["tied"] else t["lm_head.weight"]
    ref_cfg = dict(hidden=H, heads=N, kv_heads=M, head_dim=D, layers=c["layers"], eps=1e-6, theta=c["theta"],
                   qk_norm=qwen3, bias=dict(q=not qwen3, k=not qwen3, v=not qwen3, o=False))
    return weights, ref_cfg


def lora_keys(c):
    """(key, shape) of every LoRA tensor, in layer order then module order."""
    dims = {"q_proj": (c["hidden"], c["heads"] * c["head_dim"]), "k_proj": (c["hidden"], c["kv_heads"] * c["head_dim"]),
            "v_proj": (c["hidden"], c["kv_heads"] * c["head_dim"]), "o_proj": (c["heads"] * c["head_dim"], c["hidden"]),
            "gate_proj": (c["hidden"], c["inter"]), "up_proj": (c["hidden"], c["inter"]), "down_proj": (c["inter"], c["hidden"])}
    out = []
    for l in range(c["layers"]):
        for m in MODULES:
            if m not in c["targets"]:
                continue
            group = "mlp" if m in ("gate_proj", "up_proj", "down_proj") else "self_attn"
            fan_in, fan_out = dims[m]
            base = f"base_model.model.model.layers.{l}.{group}.{m}"
            out.append((f"{base}.lora_A.weight", (c["r"], fan_in)))
            out.append((f"{base}.lora_B.weight", (fan_out, c["r"])))
    return out


def build_adapter(c, folder):
    rng = np.random.default_rng(100 + c["seed"])
    keys = lora_keys(c)
    params = {k: (0.1 * rng.standard_normal(s)).astype(np.float32) for k, s in keys}
    ema = {k: (0.1 * rng.standard_normal(s)).astype(np.float32) for k, s in keys}
    m = {k: (1e-3 * rng.standard_normal(s)).astype(np.float32) for k, s in keys}
    # A state a real AdamW could have reached: sqrt(v) >= |m| (an arbitrary v can make one update many
    # times the learning rate, where float32 rounding alone exceeds any sensible tolerance).
    v = {k: ((np.abs(m[k]) + 1e-3 * np.abs(rng.standard_normal(s))) ** 2).astype(np.float32) for k, s in keys}
    os.makedirs(folder)
    with open(os.path.join(folder, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": c["r"], "lora_alpha": c["alpha"],
                   "lora_dropout": 0.0, "target_modules": c["targets"], "bias": "none", "fan_in_fan_out": False,
                   "inference_mode": True, "use_rslora": False, "modules_to_save": None, "init_lora_weights": True,
                   "base_model_name_or_path": "../model"}, f, indent=2)
    write_safetensors(os.path.join(folder, "adapter_model.safetensors"), list(params.items()), {"format": "pt"})
    write_safetensors(os.path.join(folder, "ema_model.safetensors"), list(ema.items()), {"format": "pt"})
    write_safetensors(os.path.join(folder, "optimizer.safetensors"),
                      [(k + ".exp_avg", a) for k, a in m.items()] + [(k + ".exp_avg_sq", a) for k, a in v.items()],
                      {"step": "3"})
    as_t = lambda d: {k: torch.tensor(a, dtype=torch.float64) for k, a in d.items()}  # noqa: E731
    return as_t(params), as_t(ema), as_t(m), as_t(v), 3


def make_samples(c, weights, ref_cfg, params, rng):
    shape = {"r": c["r"], "alpha": c["alpha"]}
    samples = []
    for i in range(2):
        P = int(rng.integers(5, 13))
        prompt = [int(x) for x in rng.integers(0, c["vocab"], P)]
        extra = [int(x) for x in rng.integers(0, c["vocab"], int(rng.integers(3, 7)))]
        teacher = prompt[:-2] + extra + prompt[-2:]
        resp = [int(x) for x in rng.integers(0, c["vocab"], int(rng.integers(3, 8)))]
        old = None
        if i == 1:
            with torch.no_grad():
                logits = forward(ref_cfg, weights, prompt + resp, lora_view(params, shape))
                lp = torch.log_softmax(logits[P - 1:P - 1 + len(resp)], -1)
                cur = lp[torch.arange(len(resp)), torch.tensor(resp)].numpy()
            old = [float(x) for x in cur + rng.uniform(-1.5, 1.5, len(resp))]
        samples.append({"promptIds": prompt, "teacherPromptIds": teacher, "responseIds": resp, "oldLogprobs": old})
    return samples


def response_logprobs(ref_cfg, weights, prompt, resp, lora):
    logits = forward(ref_cfg, weights, prompt + resp, lora)
    return torch.log_softmax(logits[len(prompt) - 1:len(prompt) - 1 + len(resp)], dim=-1)


def batch_loss(c, ref_cfg, weights, leaf, samples, targets, opt):
    shape = {"r": c["r"], "alpha": c["alpha"]}
    loss, distill, kl, ts, ws, clips, n = 0, 0, 0, 0, [], [], 0
    for s, (teacher_lp, base_lp) in zip(samples, targets):
        st = response_logprobs(ref_cfg, weights, s["promptIds"], s["responseIds"], lora_view(leaf, shape))
        wd, km, dm, w, clipped = sample_terms(st, teacher_lp, base_lp, s["responseIds"], s["oldLogprobs"], opt)
        loss = loss + wd + opt["beta"] * km
        distill += float(wd)
        kl += float(km)
        ts += float(dm)
        ws.append(w)
        clips.append(clipped)
    B = len(samples)
    w_all, c_all = torch.cat(ws), torch.cat(clips)
    metrics = {"distillLoss": distill / B, "klToBase": kl / B, "teacherStudentKl": ts / B,
               "meanIsWeight": float(w_all.mean()), "clipFraction": float(c_all.double().mean())}
    return loss / B, metrics


def run_case(c, ref_cfg, weights, adapter, samples, opt):
    params, ema, m, v, step = [{k: t.clone() for k, t in d.items()} if isinstance(d, dict) else d for d in adapter]
    shape = {"r": c["r"], "alpha": c["alpha"]}
    with torch.no_grad():
        teacher_lora = {"base": None, "current": lora_view(params, shape), "ema": lora_view(ema, shape)}[opt["teacher"]]
        targets = []
        for s in samples:
            t_lp = response_logprobs(ref_cfg, weights, s["teacherPromptIds"], s["responseIds"], teacher_lora)
            b_lp = response_logprobs(ref_cfg, weights, s["promptIds"], s["responseIds"], None)
            b_y = b_lp[torch.arange(len(s["responseIds"])), torch.tensor(s["responseIds"])]
            targets.append((t_lp, b_y))
    keys = list(params.keys())
    first = None
    for k_step in range(opt["steps"]):
        leaf = {k: params[k].clone().requires_grad_(True) for k in keys}
        loss, metrics = batch_loss(c, ref_cfg, weights, leaf, samples, targets, opt)
        grads = torch.autograd.grad(loss, [leaf[k] for k in keys])
        grads = dict(zip(keys, grads))
        norm = float(torch.sqrt(sum((g * g).sum() for g in grads.values())))
        if first is None:
            first = {"loss": float(loss), **metrics, "gradNorm": norm, "grads": grads}
        coef = opt["maxGradNorm"] / (norm + 1e-6)
        clipped = {k: g * coef for k, g in grads.items()} if coef < 1 else grads
        step += 1
        new = {}
        for k in keys:
            p2, m2, v2 = adamw(params[k], clipped[k], m[k], v[k], step, opt["learningRate"], opt["adamBeta1"],
                               opt["adamBeta2"], opt["adamEps"], opt["weightDecay"])
            check_against_torch(params[k], clipped[k], m[k], v[k], step, opt, p2)
            new[k], m[k], v[k] = p2, m2, v2
        params = new
        ema = {k: (1 - opt["emaRate"]) * ema[k] + opt["emaRate"] * params[k] for k in keys}
    return first, params, ema


def check_against_torch(p, g, m, v, step, opt, expected):
    """The hand-written AdamW must equal torch.optim.AdamW continued from the same state."""
    t = p.clone().requires_grad_(True)
    o = torch.optim.AdamW([t], lr=opt["learningRate"], betas=(opt["adamBeta1"], opt["adamBeta2"]),
                          eps=opt["adamEps"], weight_decay=opt["weightDecay"])
    o.state[t] = {"step": torch.tensor(float(step - 1)), "exp_avg": m.clone(), "exp_avg_sq": v.clone()}
    t.grad = g.clone()
    o.step()
    err = float((t.detach() - expected).abs().max())
    assert err < 1e-12, f"hand-written AdamW differs from torch.optim.AdamW by {err}"


def finite_difference_check(c, ref_cfg, weights, adapter, samples):
    """Central differences of a few LoRA parameters against autograd (teacher fixed: EMA)."""
    opt = {**DEFAULTS, "teacher": "ema", "beta": 0.1}
    samples = [{**s, "oldLogprobs": None} for s in samples]  # w = 1, so the loss is smooth in the parameters
    params, ema = adapter[0], adapter[1]
    shape = {"r": c["r"], "alpha": c["alpha"]}
    with torch.no_grad():
        targets = []
        for s in samples:
            t_lp = response_logprobs(ref_cfg, weights, s["teacherPromptIds"], s["responseIds"], lora_view(ema, shape))
            b_lp = response_logprobs(ref_cfg, weights, s["promptIds"], s["responseIds"], None)
            targets.append((t_lp, b_lp[torch.arange(len(s["responseIds"])), torch.tensor(s["responseIds"])]))
    leaf = {k: t.clone().requires_grad_(True) for k, t in params.items()}
    loss, _ = batch_loss(c, ref_cfg, weights, leaf, samples, targets, opt)
    loss.backward()
    worst, h = 0.0, 1e-6
    for key in list(params.keys())[::5]:
        for idx in [(0, 0), (1, 2)]:
            def at(delta):
                p = {k: t.clone() for k, t in params.items()}
                p[key][idx] += delta
                with torch.no_grad():
                    return float(batch_loss(c, ref_cfg, weights, p, samples, targets, opt)[0])
            fd = (at(h) - at(-h)) / (2 * h)
            an = float(leaf[key].grad[idx])
            worst = max(worst, abs(fd - an) / max(abs(fd), 1e-8))
    assert worst < 1e-6, f"finite differences disagree with autograd: {worst}"
    return worst


def main():
    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    for name, c in CONFIGS.items():
        folder = os.path.join(OUT, name)
        weights, ref_cfg = build_model(name, c, os.path.join(folder, "model"))
        adapter = build_adapter(c, os.path.join(folder, "adapter"))
        rng = np.random.default_rng(1000 + c["seed"])
        shape = {"r": c["r"], "alpha": c["alpha"]}
        logit_ids = [int(x) for x in rng.integers(0, c["vocab"], 11)]
        with torch.no_grad():
            tensors = [("logits.adapter", forward(ref_cfg, weights, logit_ids, lora_view(adapter[0], shape)).float().numpy()),
                       ("logits.base", forward(ref_cfg, weights, logit_ids, None).float().numpy())]
        cases, expected = [], {}
        for case_name, opt in cases_for(name):
            samples = make_samples(c, weights, ref_cfg, adapter[0], rng)
            first, after, ema = run_case(c, ref_cfg, weights, adapter, samples, opt)
            expected[case_name] = {k: first[k] for k in ("loss", "distillLoss", "klToBase", "meanIsWeight",
                                                         "clipFraction", "gradNorm", "teacherStudentKl")}
            for k, g in first["grads"].items():
                tensors.append((f"{case_name}/grad/{k}", g.float().numpy()))
            for k, p in after.items():
                tensors.append((f"{case_name}/after/{k}", p.float().numpy()))
            if opt["teacher"] == "ema":
                for k, p in ema.items():
                    tensors.append((f"{case_name}/ema_after/{k}", p.float().numpy()))
            cases.append({"name": case_name, "options": opt, "samples": samples})
        with open(os.path.join(folder, "cases.json"), "w") as f:
            json.dump({"logits": {"ids": logit_ids}, "cases": cases}, f)
        with open(os.path.join(folder, "expected.json"), "w") as f:
            json.dump(expected, f, indent=1)
        write_safetensors(os.path.join(folder, "expected.safetensors"), tensors)
        msg = f"{name}: {len(cases)} cases"
        if name == "tied":
            msg += f"; finite differences vs autograd: worst relative error {finite_difference_check(c, ref_cfg, weights, adapter, cases[0]['samples']):.2e}"
        print(msg)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print(f"fixtures: {total / 1024:.0f} KiB in {OUT}")


if __name__ == "__main__":
    main()
