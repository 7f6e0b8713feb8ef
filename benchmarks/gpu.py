"""``bertpipe bench gpu``: the GPU check, ready for the first time a GPU is lent.

Purpose: in one command and under 5 minutes on one GPU, measure what the CPU machines cannot
and exercise every GPU code path once, so a first GPU session ends with figures, not bugs:

    throughput  BERT-Base and BERT-Large at lengths 128 and 512, bf16 autocast and fp16
                autocast with a GradScaler: sequences/s, tokens/s and MFU (model FLOPs from
                ``bertpipe.train.flops`` over a matmul peak measured at the same shapes and
                dtype; over the card's datasheet peak too where it is known), against the
                anchor: NVIDIA's BERT-Large phase-1 rate on an A100 80GB, 580 sequences/s at
                length 128, which is 45% MFU of its 312 TFLOP/s by the same count.
    pretrain    ingest -> WordPiece -> shards of the bundled sample corpus (the library's
                stages, reused by the next run) and a 200-step pretraining from them
                (``bertpipe.train.loop``): the loss must fall and the records carry MFU.
    compile     ``torch.compile`` on the model: the loss equals eager's (same weights, same
                batch, no dropout) and the compiled step time is reported beside eager's.
    torchrun    a 1-process launch through ``bertpipe.train.launcher`` (what ``--devices``
                uses), 10 steps to a final model, checkpointed at step 5; that checkpoint
                resumed on another split of the global batch (half the micro-batch, 2
                accumulation steps) must train on the same samples at every later step.

The result is one JSON object, written to ``--out`` and printed as the last line; every part
has ``ok`` and its own seconds, and a part that fails records its error while the others
still run (the first run on new hardware should report everything it can).

Trade-offs: every part also runs on a CPU at a tiny size (odd-sized models, lengths 32 and
64, a few steps; automatic without CUDA, ``--tiny`` forces it), so CI runs this very code;
there torch.compile uses the ``aot_eager`` backend (graph capture and autograd tracing
without code generation: inductor's C++ build takes a minute on 2 cores), on a GPU
``inductor``. Batches are synthetic for throughput (shapes decide the cost), real shards
for the pretraining. Batch sizes hold 16k (Large) or 32k (Base) tokens: enough to fill an
H100-class card, small enough for 40 GB.
"""

from __future__ import annotations

import json
import math
import statistics
import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks.paths import SAMPLE as SAMPLE_CORPUS
from bertpipe.model.bert import BertConfig, BertForPreTraining, pretraining_loss
from bertpipe.train.flops import model_peak, peak_dtype, train_flops
from bertpipe.train.optim import OptimConfig, build_optimizer
from bertpipe.train.runstate import peak_flops

SAMPLE = [SAMPLE_CORPUS / "gutenberg", SAMPLE_CORPUS / "sotu.jsonl.gz"]  # the bundled corpus, 3.3M characters
ANCHOR = {"source": "NVIDIA DeepLearningExamples BERT-Large phase 1, A100 80GB", "sequences_per_s": 580, "length": 128,
          "predictions": 20, "peak_tflops": 312.0}  # A100 dense bf16/fp16 datasheet peak
TINY_MODELS = {"base": dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=100),
               "large": dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=132)}


@dataclass(frozen=True)
class Sizes:
    """What the check runs: full size on a GPU, or ``tiny()`` on a CPU."""

    models: dict[str, dict[str, Any]] = field(default_factory=lambda: {"base": {}, "large": {}})  # preset -> overrides
    vocab_size: int = 30522
    lengths: tuple[int, ...] = (128, 512)
    precisions: tuple[str, ...] = ("bf16", "fp16")
    tokens_per_batch: dict[str, int] = field(default_factory=lambda: {"base": 32768, "large": 16384})
    warmup_steps: int = 3
    timed_steps: int = 10
    corpus_vocab: int = 8000
    shard_length: int = 128
    pretrain_preset: str = "mini"
    pretrain_model: dict[str, Any] = field(default_factory=dict)
    pretrain_batch: int = 64
    pretrain_steps: int = 200
    compile_preset: str = "small"  # 4 layers: inductor builds its kernels in well under a minute
    compile_model: dict[str, Any] = field(default_factory=dict)
    compile_batch: int = 64
    compile_backend: str = "inductor"
    torchrun_steps: int = 10

    @classmethod
    def tiny(cls) -> Sizes:
        small = dict(hidden_size=36, num_hidden_layers=2, num_attention_heads=3, intermediate_size=72)
        return cls(models=TINY_MODELS, vocab_size=1000, lengths=(32, 64), tokens_per_batch={"base": 256, "large": 256},
                   warmup_steps=1, timed_steps=2, corpus_vocab=1000, shard_length=64, pretrain_preset="tiny",
                   pretrain_model=small, pretrain_batch=16, compile_preset="tiny", compile_model=small, compile_batch=4,
                   compile_backend="aot_eager", torchrun_steps=4)


def predictions(length: int) -> int:
    """MLM slots per sequence: BERT's max_predictions_per_seq, 20 at 128 and 80 at 512."""
    return max(1, round(length * 20 / 128))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batch(vocab: int, batch: int, length: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    p = predictions(length)
    ids = torch.randint(5, vocab, (batch, length), generator=g)
    positions = torch.sort(torch.rand(batch, length - 2, generator=g).argsort(1)[:, :p] + 1, dim=1).values
    out = dict(ids=ids, types=(torch.arange(length) >= length // 2).long().expand(batch, length).contiguous(),
               mask=torch.ones_like(ids), positions=positions, labels=torch.gather(ids, 1, positions),
               nsp=torch.randint(0, 2, (batch,), generator=g))
    return {k: v.to(device) for k, v in out.items()}


def _step_fn(model: torch.nn.Module, b: dict[str, torch.Tensor], device: torch.device, precision: str) -> Callable[[], float]:
    """One training step as pretraining takes it: autocast, loss, backward, clip at 1.0, the
    paper's optimizer; fp16 through a GradScaler."""
    opt = build_optimizer(model, OptimConfig())
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    dtype = peak_dtype(precision)

    def step() -> float:
        with torch.autocast(device.type, dtype=dtype) if precision != "fp32" else nullcontext():
            o = model(b["ids"], b["types"], b["mask"], b["positions"])
        loss = pretraining_loss(o.mlm_logits, o.nsp_logits, b["labels"], b["nsp"]).loss
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def _time(step: Callable[[], Any], device: torch.device, warmup: int, steps: int) -> float:
    """Seconds per step: the median of ``steps`` single-step timings after ``warmup`` steps."""
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _sig(x: float) -> float:
    """Four significant digits: TFLOP/s range from 0.001 (a loaded CPU) to 1000 (a GPU)."""
    return float(f"{x:.4g}")


def _config(preset: str, overrides: dict[str, Any], vocab: int, **kw: Any) -> BertConfig:
    return BertConfig.from_preset(preset, **{"vocab_size": vocab, **overrides, **kw})


def throughput_entry(sizes: Sizes, name: str, length: int, precision: str, device: torch.device) -> dict[str, Any]:
    cfg = _config(name, sizes.models[name], sizes.vocab_size)
    batch, p = max(1, sizes.tokens_per_batch[name] // length), predictions(length)
    torch.manual_seed(0)
    with device:  # initialize on the device: BERT-Large's init on a CPU takes seconds
        model = BertForPreTraining(cfg).train()
    secs = _time(_step_fn(model, _batch(cfg.vocab_size, batch, length, device), device, precision), device,
                 sizes.warmup_steps, sizes.timed_steps)
    flops = train_flops(cfg, batch, length, p)
    peak = model_peak(cfg, device, precision, batch * length)
    sheet = peak_flops(device, precision) if device.type == "cuda" else None
    out = {"model": name, "length": length, "precision": precision, "batch": batch, "predictions": p,
           "step_ms": round(secs * 1e3, 2), "sequences_per_s": round(batch / secs, 1),
           "tokens_per_s": round(batch * length / secs), "model_tflops": _sig(flops / secs / 1e12),
           "peak_tflops": _sig(peak / 1e12), "mfu": round(flops / secs / peak, 4),
           "mfu_datasheet": round(flops / secs / sheet, 4) if sheet else None}
    if device.type == "cuda":
        out["max_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 1)
    return out


def part_throughput(sizes: Sizes, device: torch.device, deadline: float) -> dict[str, Any]:
    entries, errors = [], []
    for precision in sizes.precisions:  # bf16 first: when time runs short, fp16 shapes are the ones skipped
        for name in sizes.models:
            for length in sizes.lengths:
                if time.perf_counter() > deadline:
                    errors.append(f"{name}/{length}/{precision}: skipped, out of time")
                    continue
                try:
                    e = throughput_entry(sizes, name, length, precision, device)
                    entries.append(e)
                    sheet = f", {e['mfu_datasheet']:.1%} of the datasheet peak" if e["mfu_datasheet"] else ""
                    print(f"  {name:5s} length {length:3d} {precision}: batch {e['batch']:3d}, {e['sequences_per_s']:9,.1f} seq/s, "
                          f"{e['tokens_per_s']:10,d} tokens/s, MFU {e['mfu']:.1%} of {e['peak_tflops']} TFLOP/s measured{sheet}",
                          flush=True)
                except Exception as exc:  # noqa: BLE001 - one failing shape (OOM, kernel) must not hide the others
                    errors.append(f"{name}/{length}/{precision}: {type(exc).__name__}: {exc}"[:500])
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
    return {"ok": not errors, "entries": entries, "errors": errors, "anchor": _anchor(entries, min(sizes.lengths))}


def _anchor(entries: list[dict[str, Any]], length: int) -> dict[str, Any]:
    """NVIDIA's BERT-Large figure as MFU by our count, beside our BERT-Large bf16 at the shortest length."""
    a = ANCHOR
    mfu = a["sequences_per_s"] * train_flops(_config("large", {}, 30522), 1, a["length"], a["predictions"]) / (a["peak_tflops"] * 1e12)
    here = next((e for e in entries if (e["model"], e["length"], e["precision"]) == ("large", length, "bf16")), None)
    line = f"  anchor: {a['source']}: {a['sequences_per_s']} seq/s at length {a['length']} = {mfu:.1%} MFU by our count; "
    if here is None:
        line += "no BERT-Large bf16 figure here"
    else:
        line += f"here (length {length}): {here['sequences_per_s']:,.1f} seq/s = {here['mfu']:.1%} of the measured peak"
        line += f", {here['mfu_datasheet']:.1%} of the datasheet peak" if here["mfu_datasheet"] else ""
    print(line, flush=True)
    return {**a, "mfu": round(mfu, 4), "here_length": length, "here_sequences_per_s": here and here["sequences_per_s"],
            "here_mfu": here and here["mfu"], "here_mfu_datasheet": here and here["mfu_datasheet"]}


def _shards(sizes: Sizes, corpus: list[Path], work: Path) -> Path:
    """ingest -> WordPiece -> shards with the library's stages (an unchanged rerun reuses them)."""
    from bertpipe.data.ingest import IngestConfig, ingest
    from bertpipe.data.masking import MaskingConfig
    from bertpipe.data.shards import ShardsConfig, build_shards
    from bertpipe.data.wordpiece import WordPieceConfig, train_wordpiece

    docs = ingest(corpus, IngestConfig(on_bad_file="skip"), work / "docs")
    tok = train_wordpiece(docs.path, WordPieceConfig(vocab_size=sizes.corpus_vocab), work / "tok")
    cfg = ShardsConfig(max_seq_length=sizes.shard_length, dupe_factor=1, eval_fraction=0.05,
                       masking=MaskingConfig(max_predictions_per_seq=predictions(sizes.shard_length)))
    return build_shards(docs.path, tok.path, cfg, work / "shards", progress=False).path


def _pretrain_cfg(sizes: Sizes, device: torch.device, steps: int, **kw: Any):
    from bertpipe.train.config import PretrainConfig

    # adamw at 1e-3 with 10% warmup: leaves the first plateau within 200 steps at these sizes
    return PretrainConfig(preset=sizes.pretrain_preset, model=sizes.pretrain_model, batch_size=sizes.pretrain_batch,
                          steps=steps, precision="bf16", log_every=10, eval_every=0, eval_batches=5, checkpoint_every=0,
                          device=device.type, optim=OptimConfig(optimizer="adamw", lr=1e-3, warmup_ratio=0.1), **kw)


def part_pretrain(sizes: Sizes, device: torch.device, shards: Path, work: Path) -> dict[str, Any]:
    import shutil

    from bertpipe.train.loop import pretrain

    run = work / "pretrain-run"
    shutil.rmtree(run, ignore_errors=True)  # a fresh run every time: a resumed one would train nothing
    t0 = time.perf_counter()
    res = pretrain(shards, _pretrain_cfg(sizes, device, sizes.pretrain_steps), run, resume=False)
    losses = [res.losses[s] for s in sorted(res.losses)]
    first, last = statistics.mean(losses[:5]), statistics.mean(losses[-10:])
    tr = res.train or {}
    return {"ok": last < first - 0.5 and res.final_dir is not None and "mfu" in tr, "steps": res.step,
            "first_loss": round(first, 3), "last_loss": round(last, 3), "eval_mlm_acc": (res.eval or {}).get("mlm_acc"),
            "tokens_per_s": round(tr.get("tokens_per_s", 0)), "mfu": tr.get("mfu"), "peak_tflops": tr.get("peak_tflops"),
            "seconds": round(time.perf_counter() - t0, 1)}


def part_compile(sizes: Sizes, device: torch.device) -> dict[str, Any]:
    cfg = _config(sizes.compile_preset, sizes.compile_model, sizes.vocab_size, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0)  # no dropout: eager and compiled see the same computation
    length = min(sizes.lengths)
    b = _batch(cfg.vocab_size, sizes.compile_batch, length, device)
    torch.manual_seed(0)
    with device:
        model = BertForPreTraining(cfg).train()
    compiled = torch.compile(model, backend=sizes.compile_backend)

    def loss_of(m: torch.nn.Module) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            o = m(b["ids"], b["types"], b["mask"], b["positions"])
        return pretraining_loss(o.mlm_logits, o.nsp_logits, b["labels"], b["nsp"]).loss

    eager = loss_of(model).item()
    t0 = time.perf_counter()
    got = loss_of(compiled)
    got.backward()  # compiles forward and backward
    _sync(device)
    compile_s = time.perf_counter() - t0
    model.zero_grad(set_to_none=True)
    secs = {name: _time(_step_fn(m, b, device, "bf16"), device, 2, sizes.timed_steps)
            for name, m in (("eager", model), ("compiled", compiled))}
    return {"ok": math.isclose(got.item(), eager, rel_tol=2e-2), "backend": sizes.compile_backend, "eager_loss": round(eager, 4),
            "compiled_loss": round(got.item(), 4), "compile_s": round(compile_s, 1), "eager_step_ms": round(secs["eager"] * 1e3, 2),
            "compiled_step_ms": round(secs["compiled"] * 1e3, 2), "speedup": round(secs["eager"] / secs["compiled"], 2)}


def part_torchrun(sizes: Sizes, device: torch.device, shards: Path, work: Path) -> dict[str, Any]:
    """A 1-process torchrun launch (NCCL on a GPU) checkpointing halfway, then that checkpoint
    resumed in a fresh run directory on another split of the same global batch (half the
    micro-batch, 2 accumulation steps): every later step must train on the same rows and masks."""
    import shutil

    from bertpipe.train.launcher import torchrun

    n, half = sizes.torchrun_steps, sizes.torchrun_steps // 2
    run, resumed = work / "torchrun-run", work / "torchrun-resumed"
    for d in (run, resumed):
        shutil.rmtree(d, ignore_errors=True)
    t0 = time.perf_counter()
    cfg = _pretrain_cfg(sizes, device, n, devices=1).model_copy(update={"log_every": 1, "checkpoint_every": half,
                                                                         "keep_checkpoints": 3})
    res = torchrun(cfg, shards, None, run, resume=False)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    start = next(r for r in records if r.get("event") == "start")
    out = {"ok": res.step == n and res.final_dir is not None and (res.final_dir / "config.json").is_file()
           and "mfu" in (res.train or {}), "steps": res.step, "device": start["device"], "world_size": start["world_size"],
           "seconds": round(time.perf_counter() - t0, 1)}
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(run / "checkpoints" / f"step-{half:07d}", resumed / "checkpoints" / f"step-{half:07d}")
    shutil.copy(run / "metrics.jsonl", resumed / "metrics.jsonl")
    split = cfg.model_copy(update={"batch_size": cfg.batch_size // 2, "grad_accum": 2})
    torchrun(split, shards, None, resumed, resume=True)

    def digests(d: Path) -> dict[int, int]:
        recs = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if line]
        return {r["step"]: r["sample_digest"] for r in recs if r.get("split") == "train" and r["step"] > half}

    same = digests(run) == digests(resumed) and len(digests(run)) == n - half
    return out | {"ok": out["ok"] and same, "resumed_on_another_split_same_samples": same,
                  "seconds": round(time.perf_counter() - t0, 1)}


PARTS = ("throughput", "pretrain", "compile", "torchrun")


def bench_gpu(device: str = "auto", tiny: bool | None = None, work: Path = Path("cache/bench-gpu"), out: Path | None = None,
              corpus: list[Path] | None = None, parts: tuple[str, ...] = PARTS, budget_s: float = 280.0) -> dict[str, Any]:
    """Run the check; returns (and writes to ``out``) its JSON object."""
    t_start = time.perf_counter()
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else "cpu" if device == "auto" else device)
    tiny = dev.type != "cuda" if tiny is None else tiny
    sizes = Sizes.tiny() if tiny else Sizes()
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"bertpipe GPU check on {name} ({'tiny sizes' if tiny else 'full sizes'}), torch {torch.__version__}", flush=True)
    result: dict[str, Any] = {"device": name, "device_type": dev.type, "tiny": tiny, "torch": torch.__version__,
                              "cuda": torch.version.cuda, "sizes": json.loads(json.dumps(asdict(sizes)))}
    work.mkdir(parents=True, exist_ok=True)
    shards: Path | None = None
    for part in parts:
        print(f"[{part}]", flush=True)
        t0 = time.perf_counter()
        try:
            if part == "throughput":
                r = part_throughput(sizes, dev, deadline=t_start + budget_s * 0.45)  # leaves the rest for the other parts
            elif part == "compile":
                r = part_compile(sizes, dev)
            else:
                shards = shards or _shards(sizes, corpus or SAMPLE, work)
                r = part_pretrain(sizes, dev, shards, work) if part == "pretrain" else part_torchrun(sizes, dev, shards, work)
        except Exception as exc:  # noqa: BLE001 - record it, run the other parts
            r = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000], "traceback": traceback.format_exc()[-3000:]}
        r["part_seconds"] = round(time.perf_counter() - t0, 1)
        result[part] = r
        if part != "throughput":
            print("  " + json.dumps({k: v for k, v in r.items() if k != "traceback"}), flush=True)
    result["failed"] = [p for p in parts if not result[p]["ok"]]
    result["ok"] = not result["failed"]
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    return result
