"""The transformers + PEFT side of bench/cuda-step.ts: the same SDPO step on the same shapes on the
GPU (random-initialized Qwen3 in bf16, LoRA on all 7 projections, teacher with the adapter, base with
it disabled, top-K + tail generalized JSD, clip, AdamW, EMA), then greedy decoding with a KV cache.
Usage: python3 bench/hf_peft_step.py <spec.json>   (written by bench/cuda-step.ts)
Prints one JSON line: {"step_ms" (median), "peak_gb", "decode_tok_s", "versions"}."""
import json
import statistics
import sys
import time

import torch
import transformers
import peft
from peft import LoraConfig, get_peft_model
from transformers import Qwen3Config, Qwen3ForCausalLM

MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main():
    spec = json.load(open(sys.argv[1]))
    c, opt = spec["config"], spec["options"]
    dev = torch.device("cuda")
    cfg = Qwen3Config(
        vocab_size=c["vocab"], hidden_size=c["hidden"], intermediate_size=c["intermediate"],
        num_hidden_layers=c["layers"], num_attention_heads=c["heads"], num_key_value_heads=c["kvHeads"],
        head_dim=c["headDim"], rope_theta=c["ropeTheta"], rms_norm_eps=c["rmsEps"],
        tie_word_embeddings=c["tieEmbeddings"], max_position_embeddings=40960, attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with dev:
        model = Qwen3ForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    model = get_peft_model(model, LoraConfig(r=spec["rank"], lora_alpha=spec["alpha"], target_modules=MODULES,
                                             lora_dropout=0.0, bias="none"))
    if spec["checkpoint"]:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    params = [p for p in model.parameters() if p.requires_grad]
    ema = [p.detach().clone() for p in params]
    optim = torch.optim.AdamW(params, lr=opt["learningRate"], betas=(0.9, 0.999), eps=1e-8,
                              weight_decay=opt["weightDecay"])

    prompt, teacher, resp = spec["prompt"], spec["teacherPrompt"], spec["response"]
    R, K, a = len(resp), opt["topK"], opt["alpha"]
    student_ids = torch.tensor([prompt + resp], device=dev)
    teacher_ids = torch.tensor([teacher + resp], device=dev)
    y = torch.tensor(resp, device=dev)

    def response_logprobs(ids):
        # Only the R + 1 last positions are projected to the vocabulary (rows P-1 .. T-1; the last is dropped).
        logits = model(input_ids=ids, logits_to_keep=R + 1).logits[0, :R].float()
        return torch.log_softmax(logits, dim=-1)

    def tail(lp_top):
        return torch.log(torch.clamp(1 - lp_top.exp().sum(-1, keepdim=True), min=1e-12))

    def step():
        with torch.no_grad():
            t_lp = response_logprobs(teacher_ids)
            top, idx = t_lp.topk(K, dim=-1)
            log_p = torch.cat([top, tail(top)], dim=-1)
            with model.disable_adapter():
                b_lp = response_logprobs(student_ids).gather(-1, y[:, None])[:, 0]
        s = response_logprobs(student_ids)
        s_top = s.gather(-1, idx)
        log_q = torch.cat([s_top, tail(s_top)], dim=-1)
        log_m = torch.logaddexp(torch.log(torch.tensor(a)) + log_p, torch.log(torch.tensor(1 - a)) + log_q)
        d = (a * log_p.exp() * (log_p - log_m) + (1 - a) * log_q.exp() * (log_q - log_m)).sum(-1)
        r = torch.clamp(s.gather(-1, y[:, None])[:, 0] - b_lp, -20, 20)
        loss = d.mean() + opt.get("beta", 0.0) * (r.exp() - 1 - r).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, opt["maxGradNorm"])
        optim.step()
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.mul_(1 - opt["emaRate"]).add_(p, alpha=opt["emaRate"])

    for _ in range(2):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(spec["steps"]):
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000)
    peak_gb = torch.cuda.max_memory_allocated() / 2**30

    n = spec["decodeTokens"]
    prompt_ids = torch.tensor([prompt], device=dev)
    with torch.no_grad():
        model.generate(input_ids=prompt_ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)  # warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model.generate(input_ids=prompt_ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True)
        torch.cuda.synchronize()
        decode_s = time.perf_counter() - t0
    assert out.shape[1] == len(prompt) + n, "generate stopped early"
    print(json.dumps({
        "step_ms": statistics.median(times),
        "peak_gb": peak_gb,
        "decode_tok_s": n / decode_s,
        "versions": f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}",
    }))


if __name__ == "__main__":
    main()
