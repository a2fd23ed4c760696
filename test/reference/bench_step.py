"""The PyTorch side of `npm run bench:cpu-step`: one SDPO step (teacher and base forwards, student
forward and backward, clip, AdamW, EMA) in float32 with the reference's model and loss.
Usage: /usr/bin/python3 bench_step.py <modelDir> <sample.json> <threads> <steps>
Prints one JSON line: {"load_ms", "step_ms" (median), "steps", "blas", "torch"}."""
import json
import math
import os
import statistics
import sys
import time

t_start = time.perf_counter()
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sdpo_reference import MODULES, forward, load_model, lora_view, sample_terms  # noqa: E402


def loaded_blas():
    """The BLAS library this process really mapped (after a matmul forced it in)."""
    torch.randn(64, 64) @ torch.randn(64, 64)
    with open("/proc/self/maps") as f:
        libs = {line.split()[-1] for line in f if "blas" in line.split()[-1].lower()}
    return ", ".join(sorted(os.path.realpath(p) for p in libs)) or "none found"


def main():
    model_dir, sample_file, threads, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    cfg, w = load_model(model_dir)
    spec = json.load(open(sample_file))
    sample, lora_cfg, options = spec["sample"], spec["lora"], spec["options"]
    opt = {**dict(alpha=0.5, topK=100, tail=True, sampledToken=False, isClip=2.0, beta=0.0, learningRate=1e-5,
                  maxGradNorm=1.0, weightDecay=0.01, emaRate=0.05), **options}
    shape = {"r": lora_cfg["rank"], "alpha": lora_cfg["alpha"]}
    dims = {"q_proj": (cfg["hidden"], cfg["heads"] * cfg["head_dim"]), "k_proj": (cfg["hidden"], cfg["kv_heads"] * cfg["head_dim"]),
            "v_proj": (cfg["hidden"], cfg["kv_heads"] * cfg["head_dim"]), "o_proj": (cfg["heads"] * cfg["head_dim"], cfg["hidden"]),
            "gate_proj": (cfg["hidden"], cfg["inter"]), "up_proj": (cfg["hidden"], cfg["inter"]),
            "down_proj": (cfg["inter"], cfg["hidden"])}
    params = {}
    for l in range(cfg["layers"]):
        for m in MODULES:
            group = "mlp" if m in ("gate_proj", "up_proj", "down_proj") else "self_attn"
            base = f"base_model.model.model.layers.{l}.{group}.{m}"
            fan_in, fan_out = dims[m]
            bound = 1 / math.sqrt(fan_in)
            params[base + ".lora_A.weight"] = ((torch.rand(shape["r"], fan_in) * 2 - 1) * bound).requires_grad_(True)
            params[base + ".lora_B.weight"] = torch.zeros(fan_out, shape["r"]).requires_grad_(True)
    ema = {k: v.detach().clone() for k, v in params.items()}
    optim = torch.optim.AdamW(list(params.values()), lr=opt["learningRate"], betas=(0.9, 0.999), eps=1e-8, weight_decay=opt["weightDecay"])
    prompt, teacher_prompt, resp = sample["promptIds"], sample["teacherPromptIds"], sample["responseIds"]
    load_ms = (time.perf_counter() - t_start) * 1000

    def rows(logits, p):
        return torch.log_softmax(logits[len(p) - 1:len(p) - 1 + len(resp)], dim=-1)

    def step():
        with torch.no_grad():
            view = lora_view({k: v.detach() for k, v in params.items()}, shape)
            t_lp = rows(forward(cfg, w, teacher_prompt + resp, view), teacher_prompt)
            b_lp = rows(forward(cfg, w, prompt + resp, None), prompt)[torch.arange(len(resp)), torch.tensor(resp)]
        s = rows(forward(cfg, w, prompt + resp, lora_view(params, shape)), prompt)
        wd, km, _, _, _ = sample_terms(s, t_lp, b_lp, resp, None, opt)
        loss = wd + opt["beta"] * km
        optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), opt["maxGradNorm"])
        optim.step()
        with torch.no_grad():
            for k, v in params.items():
                ema[k].mul_(1 - opt["emaRate"]).add_(v, alpha=opt["emaRate"])

    for _ in range(3):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1000)
    print(json.dumps({"load_ms": load_ms, "step_ms": statistics.median(times), "steps": steps, "blas": loaded_blas(), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
