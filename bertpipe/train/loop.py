"""The pretraining loop: MLM + NSP on shards, resumable, data-parallel under torchrun.

Purpose: the paper's recipe (A.2) as one function, ``pretrain``, training in a run directory
(``bertpipe.train.stage`` names that directory by fingerprint and publishes it;
``bertpipe.train.launcher`` runs this loop in several processes under torchrun). Loss = mean
MLM + mean NSP (MLM only for ``nsp_mode=none`` shards), means over the whole global batch
(``global_predictions``, ``global_rows``), so any split into processes and micro-batches
gives the same gradient.
A causal model (``model.causal``, the paper's "LTR & No NSP" row) is trained as a
left-to-right LM instead: next-token loss over the original text (masked slots restored from
their labels), logged under the ``mlm_*`` names, without NSP.

Outputs under ``out_dir``: ``metrics.jsonl`` (train records every ``log_every`` steps with
``tokens_per_s`` and ``mfu``, eval records, a ``start`` record with the measured matmul peak,
a ``data`` record), ``checkpoints/step-NNNNNNN/`` (``model/`` as written by ``hf.save_checkpoint``;
``trainer.pt`` with optimizer, scheduler, grad-scaler state and data position; ``rng-rank{r}.pt``
per rank; ``state.json``), and ``final/``, a model directory ``hf.load_checkpoint`` reads. ``.pt`` files hold only tensors and plain
containers and are read with ``torch.load(weights_only=True)``: nothing is unpickled.

Choices and trade-offs
    * Exact resume: model, optimizer, scheduler, RNG states (torch, CUDA, numpy, python) and
      the data position (global batches consumed; ``ShardDataset`` jumps to it) are restored,
      and the DataLoader draws its seed from a private generator, so on CPU a resumed run
      repeats the uninterrupted run's losses bit for bit. A checkpoint also resumes on another
      world size with the same global batch (micro-batch x accumulation x processes): the same
      rows and masks at every step; only dropout draws (per rank) and float sums differ.
    * Checkpoints are written into a hidden temporary directory and renamed: a crash never
      leaves a half checkpoint, and a bad step (NaN/inf loss or gradient) raises before the
      update, so the newest checkpoint on disk is always good. ``keep_checkpoints`` are kept,
      plus those at ``keep_steps`` (fine-tuned later to plot downstream score against steps).
    * SIGTERM sets a flag; ranks agree on it in the per-step all-reduce of the metric sums
      (done anyway), checkpoint the same step and return; the launcher then exits with 143.
    * One lr schedule spans both phases (phase 2 continues the decay), as in the paper.
    * The per-step ``.item()`` that checks the loss costs a host sync on GPUs; accepted, since
      it is what lets a NaN stop the run at the step it appears.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from bertpipe.core.stagedir import atomic_dir
from bertpipe.data.loader import ShardDataset
from bertpipe.model import hf
from bertpipe.model.init import init_state
from bertpipe.model.bert import BertForPreTraining, pretraining_loss
from bertpipe.train.config import FREE_FIELDS, PretrainConfig
from bertpipe.train.flops import model_peak_stats, peak_dtype, train_flops
from bertpipe.train.hostmem import kept_freed_memory, trim_if_grown
from bertpipe.train.inputs import Phase, check_shared_run_dir, ltr_targets, read_inputs, sample_digest
from bertpipe.train.optim import build_optimizer, build_scheduler
from bertpipe.train.runstate import capture_rng, restore_rng, truncate_metrics

log = logging.getLogger(__name__)


# Per-step sums, all-reduced across ranks in one tensor; "stop" is any rank's SIGTERM (or stop_at_step), "flops" MFU's numerator.
STATS = ("loss", "mlm_loss", "nsp_loss", "mlm_correct", "mlm_count", "nsp_correct", "nsp_count", "tokens",
         "padded_tokens", "flops", "stop", "samples")
STAT = {name: i for i, name in enumerate(STATS)}


@dataclass
class PretrainResult:
    out_dir: Path
    step: int  # optimizer steps done
    final_dir: Path | None = None  # out_dir/final once all steps are done
    interrupted: bool = False  # stopped by SIGTERM or stop_at_step, with a checkpoint
    losses: dict[int, float] = field(default_factory=dict)  # step -> loss, for the steps this call ran
    train: dict[str, Any] | None = None  # last train record
    eval: dict[str, Any] | None = None  # last eval record
    parameters: int = 0  # of the model trained, heads included
    init_missing: list[str] = field(default_factory=list)  # tensors the init source lacked, initialised as BERT does


def pretrain(shards_dir: str | Path, cfg: PretrainConfig, out_dir: str | Path, shards_phase2: str | Path | None = None,
             resume: bool = True, on_metrics: Callable[[dict[str, Any]], None] | None = None, *,
             stop_at_step: int | None = None) -> PretrainResult:
    """Train per ``cfg``, continuing from ``out_dir/checkpoints`` when ``resume`` and there are any.

    ``on_metrics`` gets every record written to metrics.jsonl (rank 0 only). ``stop_at_step``
    ends this call after that step with a checkpoint, as SIGTERM would. Under torchrun the
    process group is created here from the environment (NCCL on CUDA, gloo on CPU).
    """
    with kept_freed_memory():  # no page faults for the step's large buffers, every step; given back after
        return _pretrain(shards_dir, cfg, out_dir, shards_phase2, resume, on_metrics, stop_at_step)


def _pretrain(shards_dir, cfg: PretrainConfig, out_dir, shards_phase2, resume: bool, on_metrics, stop_at_step) -> PretrainResult:
    own_pg = not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
    if own_pg:
        dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    device = torch.device(cfg.device if cfg.device != "auto" else "cuda" if cuda else "cpu")
    if device.type == "cuda":  # "cuda" without an index: this rank's card (torch.cuda.set_device refuses no index)
        device = device if device.index is not None else torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    try:
        return _Run(cfg, Path(out_dir), rank, world, device, on_metrics).run(shards_dir, shards_phase2, resume, stop_at_step)
    finally:
        if own_pg:
            dist.destroy_process_group()


class _Run:
    def __init__(self, cfg: PretrainConfig, out: Path, rank: int, world: int, device: torch.device, on_metrics) -> None:
        self.cfg, self.out, self.rank, self.world, self.device, self.on_metrics = cfg, out, rank, world, device, on_metrics
        self.ckpt_root, self.stop = out / "checkpoints", False

    def emit(self, record: dict[str, Any]) -> None:
        if self.rank == 0:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            if self.on_metrics is not None:
                self.on_metrics(record)
            if "loss" in record:
                log.info("%s step %d: %s", record["split"], record["step"],
                         ", ".join(f"{k} {v:.4g}" for k, v in record.items() if isinstance(v, float)))

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def run(self, shards: str | Path, shards2: str | Path | None, resume: bool, stop_at: int | None) -> PretrainResult:
        cfg = self.cfg
        if cfg.precision == "fp16" and self.device.type != "cuda":
            raise ValueError("precision fp16 needs CUDA (for its gradient scaling); use bf16 on CPU")
        n2 = round(cfg.steps * cfg.phase2_fraction) if shards2 is not None else 0
        self.phases = [Phase(Path(shards), cfg.steps - n2, cfg.batch_size)]
        if shards2 is not None:
            self.phases.append(Phase(Path(shards2), n2, cfg.phase2_batch_size or cfg.batch_size))
        self.inputs = read_inputs(cfg, self.phases)
        mcfg, self.use_nsp, self.ltr = self.inputs.model, self.inputs.use_nsp, self.inputs.ltr
        if not resume and list(self.ckpt_root.glob("step-*")):
            raise FileExistsError(f"{self.ckpt_root} holds checkpoints; resume, or choose another out_dir")
        self.out.mkdir(parents=True, exist_ok=True)
        if self.world > 1:
            check_shared_run_dir(self.out, self.rank, self.world)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        self.raw = BertForPreTraining(mcfg)
        self.init = self._load_init()
        self.raw.to(self.device)
        if self.rank:
            torch.manual_seed(cfg.seed + 1_000_003 * self.rank)  # own dropout masks per rank
        model: torch.nn.Module = self.raw
        if self.world > 1:  # without NSP the pooler and NSP head get no gradient
            model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=not self.use_nsp)
        if cfg.compile:
            model = torch.compile(model)
        self.opt = build_optimizer(self.raw, cfg.optim)
        self.sched = build_scheduler(self.opt, cfg.optim, max(cfg.steps, 1))  # 0 steps: an init evaluated as it is
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        step = self._resume()
        tokens = self.phases[0].batch_size * self.inputs.max_len  # MFU's denominator: a matmul at the model's FFN shape (about half a second)
        self.peak = (peak := model_peak_stats(mcfg, self.device, cfg.precision, tokens)).flops_per_s
        self.emit({"event": "start", "step": step, "world_size": self.world, "device": str(self.device),
                   "parameters": self.raw.num_parameters(), "model": mcfg.model_dump(), "config": cfg.model_dump(mode="json"),
                   "peak_tflops": self.peak / 1e12, "peak_matmul": [tokens, mcfg.hidden_size, mcfg.intermediate_size],
                   "peak_dtype": str(peak_dtype(cfg.precision)), "init": self.init, **peak.record()})
        main_thread = threading.current_thread() is threading.main_thread()
        prev = signal.signal(signal.SIGTERM, self._on_sigterm) if main_thread else None
        try:
            return self._train(model, step, stop_at)
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, prev if prev is not None else signal.SIG_DFL)

    def _load_init(self) -> dict[str, Any] | None:
        """The init source's weights over the fresh model; what it lacks stays as BERT initialises it."""
        if (src := self.inputs.init) is None:
            return None
        state, missing = init_state(src, self.raw.config)
        left = hf.load_into(self.raw, state)
        if left:
            log.warning("init %s lacks %d tensors, initialised as BERT does: %s", src.source, len(left), ", ".join(left))
        return {"source": src.source, "digest": src.digest, "left_at_init": left}

    def _on_sigterm(self, signum, frame) -> None:
        log.warning("SIGTERM: stopping after this step with a checkpoint")
        self.stop = True

    def _loader(self, phase: int, skip: int) -> Any:
        ph = self.phases[phase]
        ds = ShardDataset(ph.shards, "train", batch_size=ph.batch_size, accum=self.cfg.grad_accum, seed=self.cfg.seed + phase,
                          shuffle_buffer=self.cfg.shuffle_buffer, rank=self.rank, world_size=self.world, pad_to=self.cfg.pad_to,
                          masking=self.cfg.masking, skip_batches=skip)
        gen = torch.Generator().manual_seed(self.cfg.seed)  # the loader's seed draw leaves the global RNG alone
        return iter(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=self.cfg.num_workers,
                                                pin_memory=self.device.type == "cuda", generator=gen))

    def _forward(self, model, b: dict[str, torch.Tensor]) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """Losses, this micro-batch's share of the global batch's loss (to backpropagate), and
        its ``STATS`` as one float64 tensor (one all-reduce for them all)."""
        p = self.cfg.precision
        with nullcontext() if p == "fp32" else torch.autocast(self.device.type, torch.bfloat16 if p == "bf16" else torch.float16):
            if self.ltr:
                ids, labels = ltr_targets(b["input_ids"], b["attention_mask"], b["masked_positions"], b["masked_lm_labels"])
                o = model(ids, b["token_type_ids"], b["attention_mask"])  # logits at every position
                o = o._replace(mlm_logits=o.mlm_logits[:, :-1])  # (B, T-1, V): position t predicts token t+1
            else:
                o = model(b["input_ids"], b["token_type_ids"], b["attention_mask"], b["masked_positions"])
                labels = b["masked_lm_labels"]
        nsl = b["next_sentence_label"]
        lo = pretraining_loss(o.mlm_logits, o.nsp_logits, labels, nsl if self.use_nsp else None)
        n_mlm, zero = (labels != -100).sum(), torch.zeros((), device=nsl.device)
        B, T = b["input_ids"].shape  # LTR: the MLM head runs at every position
        if self.ltr or "global_predictions" not in b:  # LTR: each micro-batch's mean weighs the same
            share = lo.loss / self.cfg.grad_accum
        else:  # each prediction (and NSP row) of the global batch weighs the same; x world: DDP averages ranks
            share = lo.mlm_loss * (n_mlm / b["global_predictions"].clamp(min=1) * self.world)
            if lo.nsp_loss is not None:
                share = share + lo.nsp_loss * (B / b["global_rows"] * self.world)
        flops = train_flops(self.raw.config, B, T, T if self.ltr else b["masked_positions"].shape[1], self.use_nsp)
        stats = {"loss": lo.loss, "mlm_loss": lo.mlm_loss, "nsp_loss": zero if lo.nsp_loss is None else lo.nsp_loss,
                 "mlm_correct": (lo.mlm_accuracy * n_mlm).round(), "mlm_count": n_mlm,
                 "nsp_correct": (o.nsp_logits.argmax(-1) == nsl).sum() if self.use_nsp else zero,
                 "nsp_count": zero + (len(nsl) if self.use_nsp else 0),
                 "tokens": b["attention_mask"].sum(), "padded_tokens": zero + b["input_ids"].numel(), "stop": zero,
                 "samples": sample_digest(b),
                 "flops": torch.full((), float(flops), dtype=torch.float64, device=nsl.device)}
        return lo, share, torch.stack([stats[k].detach().double() for k in STATS])

    def _train(self, model, step: int, stop_at: int | None) -> PretrainResult:
        cfg, res = self.cfg, PretrainResult(self.out, step, parameters=self.raw.num_parameters(),
                                         init_missing=(self.init or {}).get("left_at_init", []))
        starts = np.cumsum([0] + [ph.steps for ph in self.phases])
        window, n_win, t_win, it, phase, first = torch.zeros(len(STATS), dtype=torch.float64), 0, 0.0, None, -1, True
        if step == 0 and (cfg.eval_every or cfg.steps == 0):  # the starting point of the held-out curves
            res.eval = self._evaluate(0, 0)
        while step < cfg.steps:
            if (ph := int(np.searchsorted(starts, step, side="right")) - 1) != phase:
                phase, it = ph, self._loader(ph, (step - int(starts[ph])) * cfg.grad_accum)
            t0, stats = time.perf_counter(), torch.zeros(len(STATS), dtype=torch.float64, device=self.device)
            for micro in range(cfg.grad_accum):
                b = {k: v.to(self.device, non_blocking=True) for k, v in next(it).items()}
                if first:  # evidence of the data partition: each rank's first rows
                    rows, first = [b["row_id"].tolist()] * self.world, False
                    if self.world > 1:
                        dist.all_gather_object(rows, rows[0])
                    self.emit({"event": "data", "step": step, "first_row_ids_by_rank": rows})
                with model.no_sync() if self.world > 1 and micro < cfg.grad_accum - 1 else nullcontext():
                    _, share, s = self._forward(model, b)
                    self.scaler.scale(share).backward()
                stats += s
            stats[STAT["stop"]] = float(self.stop or step + 1 == stop_at)  # any rank's stop stops all (summed)
            if self.world > 1:
                dist.all_reduce(stats)
            stats = stats.cpu()
            loss, lr = stats[STAT["loss"]].item() / (self.world * cfg.grad_accum), self.opt.param_groups[0]["lr"]
            if not math.isfinite(loss):
                good = sorted(self.ckpt_root.glob("step-*"))
                raise FloatingPointError(f"step {step + 1}: loss is {loss}; stopped before updating the weights. "
                                         f"Last good checkpoint: {good[-1] if good else 'none'}")
            if cfg.optim.clip_norm is not None:
                self.scaler.unscale_(self.opt)
                norm = torch.nn.utils.clip_grad_norm_(self.raw.parameters(), cfg.optim.clip_norm)
                if cfg.precision != "fp16" and not torch.isfinite(norm):  # fp16: the scaler skips such steps
                    raise FloatingPointError(f"step {step + 1}: gradient norm is {norm.item()}; stopped before updating")
            self.scaler.step(self.opt)
            self.scaler.update()
            self.opt.zero_grad(set_to_none=True)
            self.sched.step()
            trim_if_grown()  # batches of varying shape fragment the heap (bertpipe.train.hostmem)
            step += 1
            res.losses[step], stop = loss, bool(stats[STAT["stop"]].item())
            window, n_win, t_win = window + stats, n_win + 1, t_win + time.perf_counter() - t0
            if step % cfg.log_every == 0 or step == cfg.steps or stop:
                res.train = self._train_record(step, phase, window, n_win, t_win, lr)
                window, n_win, t_win = torch.zeros_like(window), 0, 0.0
            if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps:
                res.eval = self._evaluate(step, phase) or res.eval
            if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.steps or stop or step in cfg.keep_steps:
                self._save(step, {"phase": phase, "batches": (step - int(starts[phase])) * cfg.grad_accum})
            if stop:
                res.interrupted = True
                break
        res.step = step
        if step >= cfg.steps:
            res.final_dir = self.out / "final"
            if self.rank == 0:
                hf.save_checkpoint(self.raw, res.final_dir, self.inputs.vocab_file)
            self.barrier()
        return res

    def _train_record(self, step: int, phase: int, window: torch.Tensor, n: int, secs: float, lr: float) -> dict[str, Any]:
        per, w = self.world * self.cfg.grad_accum * n, dict(zip(STATS, window.tolist(), strict=True))
        rec = {"split": "train", "step": step, "phase": phase + 1, "loss": w["loss"] / per, "mlm_loss": w["mlm_loss"] / per,
               "mlm_acc": w["mlm_correct"] / max(w["mlm_count"], 1), "nsp_loss": w["nsp_loss"] / per if self.use_nsp else None,
               "nsp_acc": w["nsp_correct"] / max(w["nsp_count"], 1) if self.use_nsp else None, "lr": lr,
               "tokens_per_s": w["tokens"] / max(secs, 1e-9), "world_size": self.world,  # tokens: non-padding, all ranks
               "mfu": w["flops"] / max(secs, 1e-9) / (self.peak * self.world), "peak_tflops": self.peak / 1e12,  # all ranks' FLOPs
               "sample_digest": int(w["samples"])}  # which rows and masks the steps saw, however they were split
        self.emit(rec)
        return rec

    @torch.no_grad()
    def _evaluate(self, step: int, phase: int) -> dict[str, Any] | None:
        # Held-out rows keep the shards' own masking even when training masks differently
        # (cfg.masking), so runs that vary the masking are compared on the same task.
        ds = ShardDataset(self.phases[phase].shards, "eval", batch_size=self.phases[phase].batch_size, accum=self.cfg.grad_accum,
                          seed=self.cfg.seed, shuffle=False, epochs=1, rank=self.rank, world_size=self.world, pad_to=self.cfg.pad_to)
        if ds.num_rows == 0:
            return None
        self.raw.eval()
        # batch losses are means: weight them by their counts so the result is a mean over predictions
        sums = torch.zeros(len(STATS), dtype=torch.float64, device=self.device)
        for _, b in zip(range(self.cfg.eval_batches * self.cfg.grad_accum), ds):  # eval_batches global batches
            _, _, s = self._forward(self.raw, {k: v.to(self.device) for k, v in b.items()})
            s[STAT["mlm_loss"]] *= s[STAT["mlm_count"]]
            s[STAT["nsp_loss"]] *= s[STAT["nsp_count"]]
            sums += s
        self.raw.train()
        if self.world > 1:
            dist.all_reduce(sums)
        s = dict(zip(STATS, sums.tolist(), strict=True))
        mlm = s["mlm_loss"] / max(s["mlm_count"], 1)
        nsp = s["nsp_loss"] / max(s["nsp_count"], 1) if self.use_nsp else None
        rec = {"split": "eval", "step": step, "phase": phase + 1, "loss": mlm + (nsp or 0.0), "mlm_loss": mlm,
               "mlm_acc": s["mlm_correct"] / max(s["mlm_count"], 1), "nsp_loss": nsp,
               "nsp_acc": s["nsp_correct"] / max(s["nsp_count"], 1) if self.use_nsp else None, "predictions": int(s["mlm_count"])}
        self.emit(rec)
        return rec

    def _scheduled(self, step: int) -> bool:
        """A checkpoint every ``checkpoint_every`` steps and at the last one (not a stop's)."""
        return bool(self.cfg.checkpoint_every and step % self.cfg.checkpoint_every == 0) or step == self.cfg.steps

    def _save(self, step: int, data_pos: dict[str, int]) -> None:
        # every rank writes its RNG state into the same temporary directory, which rank 0 then renames
        final, tmp = self.ckpt_root / f"step-{step:07d}", self.ckpt_root / f".step-{step:07d}.tmp"
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)  # left by a crash during an earlier save
        with atomic_dir(final, replace=True, work=tmp) if self.rank == 0 else nullcontext():
            if self.rank == 0:
                hf.save_checkpoint(self.raw, tmp / "model", self.inputs.vocab_file)
                torch.save({"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                            "scaler": self.scaler.state_dict(), "step": step, "data": data_pos}, tmp / "trainer.pt")
                state = {"step": step, "data": data_pos, "world_size": self.world, "global_batch": self.cfg.global_batches(self.world),
                         "config": self.cfg.model_dump(mode="json"),
                         "shards": self.inputs.shards_fps}
                (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
            self.barrier()
            torch.save(capture_rng(self.device), tmp / f"rng-rank{self.rank}.pt")
            self.barrier()
        if self.rank == 0:
            # A stop's checkpoint (off the schedule) goes as soon as a newer one exists, so a stopped and
            # resumed run ends with the same checkpoints as one that never stopped.
            rolling = [p for p in sorted(self.ckpt_root.glob("step-*")) if int(p.name[5:]) not in self.cfg.keep_steps]
            off_schedule = [p for p in rolling[:-1] if not self._scheduled(int(p.name[5:]))]
            for old in off_schedule + [p for p in rolling if p not in off_schedule][: -self.cfg.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
            log.info("checkpoint %s", final)
        self.barrier()

    def _resume(self) -> int:
        """Load the newest checkpoint; drop metrics records past it. Returns the step to continue from."""
        found, mpath, step = sorted(self.ckpt_root.glob("step-*")), self.out / "metrics.jsonl", 0
        if found:
            d = found[-1]
            state = json.loads((d / "state.json").read_text())
            old = PretrainConfig.model_validate(state["config"]).model_dump(mode="json", exclude=FREE_FIELDS)
            diff = sorted(k for k, v in self.cfg.model_dump(mode="json", exclude=FREE_FIELDS).items() if old.get(k) != v)
            if diff:
                raise ValueError(f"{d} was written with a different config ({', '.join(diff)}); resuming would not "
                                 "continue that run. Use the same options or another out_dir")
            if "shards" in state and state["shards"] != self.inputs.shards_fps:  # older checkpoints did not record them
                raise ValueError(f"{d} was trained on the shards {state['shards']}, this run reads {self.inputs.shards_fps}: "
                                 "resuming would continue on other data. Use the same shards or another out_dir")
            if (gb := state.get("global_batch")) != (now := self.cfg.global_batches(self.world)):
                raise ValueError(f"{d} was written with global batches {gb}, this run's are {now} "
                                 "(micro-batch x grad_accum x processes): "
                                 "resuming would continue with another sample order")
            self.raw.load_state_dict(hf.load_state_dict(d / "model"), strict=True)
            tr = torch.load(d / "trainer.pt", map_location="cpu", weights_only=True)
            self.opt.load_state_dict(tr["optimizer"])
            self.sched.load_state_dict(tr["scheduler"])
            self.scaler.load_state_dict(tr["scaler"])
            step = int(tr["step"])
            if state["world_size"] == self.world:  # else the dropout streams start afresh, seeded per rank and step
                restore_rng(torch.load(d / f"rng-rank{self.rank}.pt", map_location="cpu", weights_only=True), self.device)
            else:
                torch.manual_seed(hash((self.cfg.seed, step, self.rank)) % 2**63)
            log.info("resumed from %s (%d processes) on %d%s", d, state["world_size"], self.world,
                        "" if state["world_size"] == self.world else ": same samples, fresh dropout streams")
        if self.rank == 0 and mpath.exists():
            truncate_metrics(mpath, step)
        self.barrier()
        return step
