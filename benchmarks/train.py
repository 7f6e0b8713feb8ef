"""``bertpipe bench train``: training throughput of our model vs ``transformers`` at one config.

Both models get the same config (hidden 256, 4 layers, 4 heads, vocab 30,522, length 128,
batch 32), the same synthetic batches (real shards are not needed to time a step: shapes
decide the cost), AdamW and fp32. Ours computes the MLM head only at the 20 masked
positions per sequence, as pretraining does with BERT's max_predictions_per_seq;
``transformers.BertForPreTraining`` computes it at every position, which is what its
pretraining examples do. Repetitions alternate between the two so machine noise hits both;
medians are reported, with CPU seconds beside wall time. Our bf16-autocast figure is
printed as well. On CUDA the script also times BERT-Base at length 128 in bf16.

MFU beside every figure: model FLOPs per token (``bertpipe.train.flops``: the exact matmul
count, MLM head at the 20 masked positions) × tokens/s ÷ a matmul peak measured in each
repetition at the model's FFN shape ([4096, 256] × [256, 1024]) in the same dtype (fp32 for
ours and transformers, bf16 for our autocast run). transformers' MFU uses the same model
FLOPs: its decoder at the 108 unmasked positions is work the objective does not need; its
hardware FLOPs utilization (``hfu_hf``, decoder at all 128 positions) is given beside.

Our step is what pretraining runs: ``build_optimizer``'s AdamW (torch's fused kernel), the
blockwise MLM cross-entropy on the head's logits (``bertpipe.model.kernels``), and the process
keeps freed memory in its heap (``bertpipe.train.hostmem``; that applies to the transformers
step too, which shares the process). ``--profile`` adds, for our fp32 and bf16 steps, the
share of operator time by kind of work (``benchmarks.profile``), in the JSON too;
``--compile`` times our bf16 step under ``torch.compile`` beside the eager one.

The ceiling beside each MFU: the step's own matrix products (forward and backward, every
shape and layout it calls) timed alone in each repetition (``profile.MatmulReplay``). Model
FLOPs over that time, over the same peak, is the MFU the step would have if everything else
(elementwise work, casts, dropout, the loss, the optimizer) cost nothing; the gap between
MFU and ceiling is what such work costs, the gap between ceiling and 1 is torch's matmul
kernels at these shapes against the FFN-shaped peak.

``transformers`` is a dev dependency: the script says so and skips the comparison when it is
absent. The last printed line is one JSON object. ``--size base`` / ``--size minilm`` measure
real sizes instead, both sides in both precisions (``benchmarks.realsize``).
"""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext

import torch

from benchmarks.profile import MatmulReplay, profile_step
from bertpipe.model.bert import BertConfig, BertForPreTraining, pretraining_loss
from bertpipe.train.flops import flops_per_token, model_peak, train_flops
from bertpipe.train.hostmem import keep_freed_memory
from bertpipe.train.optim import OptimConfig, build_optimizer

SEQ, BATCH, PREDS = 128, 32, 20


def _batch(vocab: int, device: torch.device, batch: int = BATCH) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (batch, SEQ), generator=g)
    positions = torch.sort(torch.rand(batch, SEQ - 2, generator=g).argsort(1)[:, :PREDS] + 1, dim=1).values
    labels = torch.gather(ids, 1, positions)
    full_labels = torch.full_like(ids, -100).scatter(1, positions, labels)
    types = (torch.arange(SEQ) >= SEQ // 2).long().expand(batch, SEQ).contiguous()
    out = dict(ids=ids, types=types, mask=torch.ones_like(ids), positions=positions, labels=labels,
               full_labels=full_labels, nsp=torch.randint(0, 2, (batch,), generator=g))
    return {k: v.to(device) for k, v in out.items()}


def _time_steps(step, steps: int, device: torch.device, warmup: bool = True) -> tuple[float, float]:
    if warmup:
        step()  # warm-up (allocator, kernels)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps


def _ours_step(cfg: BertConfig, device: torch.device, precision: str, batch: int = BATCH, with_compile: bool = False):
    torch.manual_seed(0)
    model = BertForPreTraining(cfg).to(device).train()
    if with_compile:
        model.compile()  # inductor; the padded path (Unpadded is off under compile)
    opt = build_optimizer(model, OptimConfig(optimizer="adamw", lr=1e-4))
    b = _batch(cfg.vocab_size, device, batch)
    dtype = {"bf16": torch.bfloat16, "fp32": None}[precision]

    def step() -> None:
        ctx = torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()
        with ctx:
            out = model(b["ids"], b["types"], b["mask"], masked_positions=b["positions"])
        loss = pretraining_loss(out.mlm_logits, out.nsp_logits, b["labels"], b["nsp"]).loss  # as the training loop
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, sum(p.numel() for p in model.parameters())


def _hf_step(cfg: BertConfig, device: torch.device):
    import transformers

    hf_cfg = transformers.BertConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
                                     num_attention_heads=cfg.num_attention_heads, intermediate_size=cfg.intermediate_size)
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(hf_cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    b = _batch(cfg.vocab_size, device)

    def step() -> None:
        out = model(input_ids=b["ids"], token_type_ids=b["types"], attention_mask=b["mask"],
                    labels=b["full_labels"], next_sentence_label=b["nsp"])
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def bench_train(steps: int | None = None, repeats: int | None = None, profile: bool = False, with_compile: bool = False,
                size: str = "small") -> dict:
    """``size`` "small" (the default: hidden 256, 4 layers, our fp32 and bf16 beside transformers' fp32), or a real
    size, "base" or "minilm" (``benchmarks.realsize``: both sides in both precisions); steps and repeats default to
    the size's own counts."""
    if size != "small":
        from benchmarks.realsize import bench_real_size, real_size

        if with_compile:
            raise ValueError("--compile is measured at the small size only")
        return bench_real_size(real_size(size, steps, repeats), profile=profile)
    steps, repeats = steps or 8, repeats or 3
    keep_freed_memory()
    device = torch.device("cpu")
    cfg = BertConfig(vocab_size=30522, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)
    tokens = BATCH * SEQ
    print(f"CPU, {torch.get_num_threads()} threads; hidden 256, 4 layers, 4 heads, vocab 30522, length {SEQ}, batch {BATCH}, AdamW")
    try:
        hf = _hf_step(cfg, device)
    except ImportError:
        hf = None
        print("transformers is not installed (pip install -e '.[dev]'): comparison skipped")
    ours32, _ = _ours_step(cfg, device, "fp32")
    ours16, _ = _ours_step(cfg, device, "bf16")
    times: dict[str, list[tuple[float, float]]] = {"ours": [], "ours_bf16": [], "hf": []}
    if with_compile:  # our bf16 step under torch.compile, timed beside the eager one
        ours16c, _ = _ours_step(cfg, device, "bf16", with_compile=True)
        t0 = time.perf_counter()
        ours16c()
        print(f"torch.compile of our bf16 step: {time.perf_counter() - t0:.0f} s")
        times["ours_bf16_compiled"] = []
    peaks: dict[str, list[float]] = {"fp32": [], "bf16": []}
    replays = {"fp32": MatmulReplay(ours32), "bf16": MatmulReplay(ours16)}  # the steps' matrix products, recorded once
    matmul_s: dict[str, list[float]] = {"fp32": [], "bf16": []}  # and timed alone in each repetition
    for r in range(repeats):  # alternate so that noise hits every variant, and the peaks
        for precision in peaks:
            peaks[precision].append(model_peak(cfg, device, precision, tokens))
        times["ours"].append(_time_steps(ours32, steps, device))
        if hf is not None:
            times["hf"].append(_time_steps(hf, steps, device))
        times["ours_bf16"].append(_time_steps(ours16, steps, device))
        if with_compile:
            times["ours_bf16_compiled"].append(_time_steps(ours16c, steps, device))
        for precision, replay in replays.items():
            matmul_s[precision].append(replay.seconds(repeats=3))
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items() if v}
    peak = {k: statistics.median(v) for k, v in peaks.items()}
    fpt = flops_per_token(cfg, SEQ, PREDS)  # model FLOPs per token, for every variant
    mfu = {k: fpt * tokens / wall / peak["bf16" if k.startswith("ours_bf16") else "fp32"] for k, (wall, _) in med.items()}
    print(f"model FLOPs per token {fpt / 1e6:.1f} M; matmul peak at [{tokens}, 256] x [256, 1024]: "
          f"{peak['fp32'] / 1e12:.3f} TFLOP/s fp32, {peak['bf16'] / 1e12:.3f} TFLOP/s bf16")
    mm = {k: statistics.median(v) for k, v in matmul_s.items()}
    ceiling = {k: fpt * tokens / mm[k] / peak[k] for k in mm}  # MFU if only the matrix products took time
    for k, (wall, cpu) in med.items():
        print(f"{k:10s} {tokens / wall:9,.0f} tokens/s  MFU {mfu[k]:6.1%}  ({wall * 1e3:.0f} ms/step wall, {cpu * 1e3:.0f} ms CPU)")
    for k, name in (("fp32", "ours"), ("bf16", "ours_bf16")):
        print(f"{name:10s} its matrix products alone: {mm[k] * 1e3:.0f} ms/step ({fpt * tokens / mm[k] / 1e12:.2f} TFLOP/s), "
              f"MFU ceiling {ceiling[k]:.1%}; the step runs at {mfu[name] / ceiling[k]:.0%} of it")
    result = {"ours_tokens_per_s": round(tokens / med["ours"][0]), "ours_bf16_tokens_per_s": round(tokens / med["ours_bf16"][0]),
              "flops_per_token": round(fpt), "peak_tflops_fp32": round(peak["fp32"] / 1e12, 4),
              "peak_tflops_bf16": round(peak["bf16"] / 1e12, 4), "mfu_fp32": round(mfu["ours"], 3),
              "mfu_bf16": round(mfu["ours_bf16"], 3), "matmul_ms_fp32": round(mm["fp32"] * 1e3, 1),
              "matmul_ms_bf16": round(mm["bf16"] * 1e3, 1), "mfu_ceiling_fp32": round(ceiling["fp32"], 3),
              "mfu_ceiling_bf16": round(ceiling["bf16"], 3)}
    if with_compile:
        result |= {"ours_bf16_compiled_tokens_per_s": round(tokens / med["ours_bf16_compiled"][0]),
                   "mfu_bf16_compiled": round(mfu["ours_bf16_compiled"], 3)}
    if hf is not None:
        hfu = train_flops(cfg, BATCH, SEQ, SEQ) / med["hf"][0] / peak["fp32"]  # the work it does: decoder everywhere
        result |= {"hf_tokens_per_s": round(tokens / med["hf"][0]), "ratio_vs_hf": round(med["hf"][0] / med["ours"][0], 2),
                   "bf16_ratio_vs_hf": round(med["hf"][0] / med["ours_bf16"][0], 2), "mfu_hf": round(mfu["hf"], 3),
                   "hfu_hf": round(hfu, 3), "mfu_ratio_vs_hf": round(mfu["ours"] / mfu["hf"], 2),
                   "bf16_mfu_ratio_vs_hf": round(mfu["ours_bf16"] / mfu["hf"], 2)}
        print(f"ours / transformers: {result['ratio_vs_hf']:.2f}x fp32, {result['bf16_ratio_vs_hf']:.2f}x with bf16 autocast "
              f"(tokens/s); MFU {result['mfu_ratio_vs_hf']:.2f}x fp32, {result['bf16_mfu_ratio_vs_hf']:.2f}x bf16 "
              f"(transformers' hardware FLOPs utilization, decoder at every position: {hfu:.1%})")
    if profile:
        for name, step in (("fp32", ours32), ("bf16", ours16)):
            prof = profile_step(step)
            print(prof.format(f"ours {name}, profiled"))
            result[f"profile_{name}"] = prof.shares()
    if torch.cuda.is_available():
        result |= _bench_cuda_base()
    return result


def _bench_cuda_base(batch: int = 128, steps: int = 20) -> dict:
    """BERT-Base at length 128 in bf16 (``bertpipe bench gpu`` measures more: sizes, lengths, fp16, compile)."""
    device = torch.device("cuda")
    cfg = BertConfig.from_preset("base")
    step, _ = _ours_step(cfg, device, "bf16", batch)
    wall, _ = _time_steps(step, steps, device)
    tps = batch * SEQ / wall
    mfu = flops_per_token(cfg, SEQ, PREDS) * tps / model_peak(cfg, device, "bf16", batch * SEQ)
    print(f"CUDA {torch.cuda.get_device_name(device)}: BERT-Base length {SEQ} bf16 batch {batch}: {tps:,.0f} tokens/s, MFU {mfu:.1%}")
    return {"gpu": torch.cuda.get_device_name(device), "gpu_base_tokens_per_s": round(tps), "gpu_base_mfu": round(mfu, 3)}
