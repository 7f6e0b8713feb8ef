"""``bertpipe bench quality``: from the same raw text, which pipeline gets a better model in the same time?

Ours (ingest → WordPiece → shards → pretrain, the preset's recipe: by default ``tiny-shared``,
bf16 autocast, length 64 then 128 for the last 10%, AdamW lr 1e-3, no dropout) against a plain
``transformers`` + ``datasets`` pipeline written as the ``run_mlm`` example and the masked
language modeling guide show it: ``load_dataset`` (json; text by paragraph), a
``BertTokenizerFast`` from our vocab.txt, ``map`` to tokenize, ``group_texts`` to the preset's
length, ``DataCollatorForLanguageModeling`` at 15%, ``BertForMaskedLM`` and ``Trainer``
(AdamW, ``bf16=True, use_cpu=True``).

Fairness, and the trade-offs taken:
    * Held-out documents: before either side starts, a seeded 5% of the documents of every
      input file (a JSONL line; a book chapter, i.e. text between 3+ blank lines) is set aside;
      both sides read the rest from the same raw files, in the same formats. Our shards hold
      nothing out (``eval_fraction`` 0, no in-training evaluation), so both train on the same text.
    * Same model (our final config.json builds the HF config), same vocabulary (ours, trained
      on the training text; its training time is charged to ours only; or the init model's),
      the same starting weights when the preset continues from published ones
      (``pretrain.init``: ``--preset minilm-shared --corpus ...`` continues MiniLM on both
      sides, ``BertForMaskedLM.from_pretrained`` on theirs), same token budget
      (steps × batch × length, the preset's), same optimizer and schedule (AdamW, lr, betas,
      eps, weight decay, clip, warmup, linear decay), same seed, same precision.
    * Clocks: each side's clock starts at its first data step; wall time therefore includes
      data preparation, process pools, model set-up, and the checkpoint saves both sides make
      at the same steps (full training state on both). A step's time stamp is taken when its
      optimizer step is done, before its checkpoint is saved. Evaluation runs after both
      runs, on the saved checkpoints, so it is charged to neither.
    * One evaluation for both: the held-out documents are tokenized with the fast tokenizer,
      cut into ``[CLS] + length-2 tokens + [SEP]`` windows, a seeded sample of them masked once
      (15%, 80/10/10, its own generator), and every checkpoint of either side is loaded into
      ``transformers.BertForMaskedLM`` and scored by ``evaluate`` in fp32: cross-entropy and
      accuracy at the masked positions. The SHA-256 of the tensors each evaluation fed is kept.
    * ``time_to_hf_final_loss_ratio``: the wall time ours needs to first reach the held-out
      loss the transformers run ends at, over the time transformers needs for it (linear
      interpolation between checkpoints), data preparation included on both sides.
    * Seeds: one training seed is one draw of the starting heads, masks, dropout and order; two
      runs of one side differ by more than the sides do at a few hundred steps of continued
      pretraining. ``train_seeds`` trains both sides once per seed (each afresh, data included)
      and compares the seeds' mean curves (mean time and loss at each checkpoint step; the
      target is transformers' mean final loss), and prints the paired 95% interval of the final
      loss difference.
    * Both sides run one after the other on a machine other processes may share: the
      1-minute load average is printed before and after each side. ``threads=1`` runs both
      sides' compute on one thread: two OpenMP threads on two cores slow down many times over
      when another process takes a core (a 2-thread run here fell to 1/16 of its speed).
      transformers' DataLoader worker (``loader_workers=1``, faster than none on 2 cores)
      then has the other core to itself; ours builds its batches in the training process.
The last printed line is one JSON object.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import random
import re
import shutil
import time
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import torch

_CHAPTER_BREAK = re.compile(r"\n(?:[ \t]*\n){3,}")  # 3+ blank lines: ingest's default document break


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _input_files(paths: list[str]) -> list[tuple[Path, Path]]:
    """(file, its name relative to the output corpus folder) for every input file or folder."""
    out = []
    for p in map(Path, paths):
        files = [(f, Path(p.name) / f.relative_to(p)) for f in sorted(p.rglob("*")) if f.is_file()] if p.is_dir() else [(p, Path(p.name))]
        out += [(f, rel) for f, rel in files if f.name.endswith((".txt", ".jsonl", ".jsonl.gz"))]
    return out


def split_corpus(paths: list[str], out: Path, fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Write the corpus less a seeded ``fraction`` of each file's documents under ``out``, same
    formats and names. Returns (training paths as given, held-out document texts)."""
    held: list[str] = []
    for f, rel in _input_files(paths):
        jsonl = ".jsonl" in f.name
        opener = gzip.open if f.name.endswith(".gz") else open
        with opener(f, "rt", encoding="utf-8") as fh:
            text = fh.read()
        docs = [ln for ln in text.splitlines() if ln.strip()] if jsonl else [d for d in _CHAPTER_BREAK.split(text) if d.strip()]
        k = max(1, round(fraction * len(docs))) if len(docs) > 1 and fraction > 0 else 0
        out_ids = set(random.Random(f"{seed}:{rel}").sample(range(len(docs)), k))
        held += [json.loads(d)["text"] if jsonl else d for i, d in enumerate(docs) if i in out_ids]
        kept = [d for i, d in enumerate(docs) if i not in out_ids]
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        with opener(out / rel, "wt", encoding="utf-8") as fh:
            fh.write("".join(d + "\n" for d in kept) if jsonl else "\n\n\n\n".join(kept) + "\n")
    return [str(out / Path(p).name) for p in paths], held


@dataclass
class HeldOut:
    """Masked held-out windows: what every evaluation of either side feeds the model."""

    input_ids: torch.Tensor  # (N, T)
    labels: torch.Tensor  # (N, T): the original id at masked positions, -100 elsewhere
    documents: int
    windows: int  # full windows the documents gave, before sampling


def fast_tokenizer(vocab: Path, folder: Path, lower: bool = True):
    """``BertTokenizerFast`` from a folder holding only ``vocab.txt``. (transformers 5 ignores
    ``vocab_file=`` and silently builds a 5-token vocabulary: the size is checked.)"""
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(vocab, folder / "vocab.txt")
    tok = BertTokenizerFast.from_pretrained(str(folder), do_lower_case=lower)
    if len(tok) != (n := len(vocab.read_text(encoding="utf-8").splitlines())):
        raise RuntimeError(f"the tokenizer from {vocab} has {len(tok)} tokens, the file {n}")
    return tok


def heldout_windows(texts: list[str], tok, length: int, n: int, seed: int, prob: float = 0.15) -> HeldOut:
    body = length - 2
    wins = [ids[i:i + body] for ids in tok(texts, add_special_tokens=False)["input_ids"] for i in range(0, len(ids) - body + 1, body)]
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(wins), generator=g)[:n].sort().values.tolist()
    ids = torch.tensor([[tok.cls_token_id, *wins[i], tok.sep_token_id] for i in pick], dtype=torch.long)
    labels = torch.full_like(ids, -100)
    masked = torch.rand(ids.shape, generator=g) < prob
    masked[:, 0] = masked[:, -1] = False
    labels[masked] = ids[masked]
    r = torch.rand(ids.shape, generator=g)
    inputs = ids.clone()
    inputs[masked & (r < 0.8)] = tok.mask_token_id
    rand = masked & (r >= 0.8) & (r < 0.9)
    inputs[rand] = torch.randint(len(tok), ids.shape, generator=g)[rand]
    return HeldOut(inputs, labels, len(texts), len(wins))


def load_mlm(model_dir: Path, hf_cfg: dict):
    """Either side's saved weights in ``transformers.BertForMaskedLM`` (the referee for both)."""
    from safetensors.torch import load_file
    from transformers import BertConfig, BertForMaskedLM

    model = BertForMaskedLM(BertConfig(**hf_cfg))
    missing, unexpected = model.load_state_dict(load_file(model_dir / "model.safetensors"), strict=False)
    assert set(missing) <= {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}, missing
    assert all(k.startswith(("bert.pooler.", "cls.seq_relationship.")) for k in unexpected), unexpected  # our NSP parts
    dec = model.cls.predictions.decoder
    assert torch.equal(dec.weight, model.bert.embeddings.word_embeddings.weight) and torch.equal(dec.bias, model.cls.predictions.bias)
    return model.eval()


@torch.no_grad()
def evaluate(model, held: HeldOut, batch: int = 128) -> dict[str, Any]:
    """Held-out MLM cross-entropy and accuracy at the masked positions, fp32, one code for both sides."""
    sha, loss, correct, count = hashlib.sha256(), 0.0, 0, 0
    for i in range(0, len(held.input_ids), batch):
        ids, labels = held.input_ids[i:i + batch], held.labels[i:i + batch]
        mask, types = torch.ones_like(ids), torch.zeros_like(ids)
        for t in (ids, mask, types, labels):
            sha.update(t.numpy().tobytes())
        h = model.bert(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        sel = labels != -100
        logits = model.cls(h[sel]).float()
        loss += torch.nn.functional.cross_entropy(logits, labels[sel], reduction="sum").item()
        correct += int((logits.argmax(-1) == labels[sel]).sum())
        count += int(sel.sum())
    return {"mlm_loss": loss / count, "mlm_acc": correct / count, "predictions": count, "inputs_sha256": sha.hexdigest()}


def run_ours(cfg, log) -> dict[str, Any]:
    from bertpipe.pipeline import in_process, plan, run_pipeline

    stamps: dict[int, float] = {}
    log(f"ours: data stages ({', '.join(s.name for s in plan(cfg)[:-1])}), load {_load()}")
    t0 = time.perf_counter()

    def on_metrics(rec: dict) -> None:
        if rec.get("split") == "train":
            stamps[rec["step"]] = time.perf_counter() - t0

    outcome = run_pipeline(cfg, submit=in_process(on_metrics=on_metrics), until="pretrain",
                           log=lambda msg: log(f"ours: {msg}, load {_load()}"))
    total = time.perf_counter() - t0
    done, result = outcome.stages, outcome.stages["pretrain"]
    parts = {name: t.wall_s for name, t in outcome.timings.items() if name != "pretrain"}
    data_s = sum(parts.values())
    log(f"ours: data {data_s:.1f} s ({', '.join(f'{k} {v:.1f}' for k, v in parts.items())}); "
        f"pretraining {cfg.pretrain.steps} steps {outcome.timings['pretrain'].wall_s:.1f} s")
    kept = {int(s): result.file(p) for s, p in result.manifest["kept"].items()} | {cfg.pretrain.steps: result.file("final")}
    return {"data_s": data_s, "data_parts_s": parts, "total_s": total, "vocab": done["wordpiece"].path / "vocab.txt",
            "points": [{"step": s, "time_s": stamps[s], "dir": kept[s]} for s in sorted(kept)]}


def run_hf(files: list[Path], vocab: Path, cfg, hf_cfg: dict, eval_steps: list[int], work: Path, log,
           map_workers: int | None, loader_workers: int) -> dict[str, Any]:
    from datasets import concatenate_datasets, load_dataset
    from transformers import (BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling, Trainer, TrainerCallback,
                              TrainingArguments)

    import datasets
    import transformers

    datasets.disable_progress_bars()  # the bars only clutter the output; set before the clock starts
    transformers.utils.logging.disable_progress_bar()
    length, p, o = cfg.shards.max_seq_length, cfg.pretrain, cfg.pretrain.optim
    cache, stamps = str(work / "datasets-cache"), {}
    log(f"transformers: data (load_dataset, tokenize, group_texts to {length}), load {_load()}")
    t0 = time.perf_counter()
    tokenizer = fast_tokenizer(vocab, work / "tokenizer", not cfg.wordpiece.cased)
    parts = []
    if js := [str(f) for f in files if ".jsonl" in f.name]:
        parts.append(load_dataset("json", data_files=js, split="train", cache_dir=cache).select_columns(["text"]))
    if txt := [str(f) for f in files if f.name.endswith(".txt")]:
        parts.append(load_dataset("text", data_files=txt, sample_by="paragraph", split="train", cache_dir=cache))
    raw = concatenate_datasets(parts)
    steps_s = {"load_dataset": time.perf_counter() - t0}

    def group_texts(examples):  # run_mlm.py's, verbatim but for the names
        concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
        total = (len(concatenated[list(examples.keys())[0]]) // length) * length
        return {k: [t[i:i + length] for i in range(0, total, length)] for k, t in concatenated.items()}

    tokenized = raw.map(lambda ex: tokenizer(ex["text"], return_special_tokens_mask=True), batched=True,
                        num_proc=map_workers, remove_columns=["text"])
    steps_s["tokenize"] = time.perf_counter() - t0 - steps_s["load_dataset"]
    lm = tokenized.map(group_texts, batched=True, num_proc=map_workers)
    data_s = time.perf_counter() - t0
    steps_s["group_texts"] = data_s - sum(steps_s.values())
    log(f"transformers: data {data_s:.1f} s ({', '.join(f'{k} {v:.1f}' for k, v in steps_s.items())}), {len(lm)} sequences; "
        f"Trainer {p.steps} steps, load {_load()}")

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step in eval_steps:
                stamps[state.global_step] = time.perf_counter() - t0
                control.should_save = True

    if cfg.pretrain.init is None:
        model = BertForMaskedLM(BertConfig(**hf_cfg))
    else:  # continued pretraining: the same published weights (heads they lack at transformers' init), our config
        from bertpipe.model.init import open_init

        model = BertForMaskedLM.from_pretrained(str(open_init(cfg.pretrain.init).path), config=BertConfig(**hf_cfg))
    warmup = math.ceil(o.warmup_ratio * p.steps) if o.warmup_ratio is not None else o.warmup_steps
    args = TrainingArguments(output_dir=str(work / "trainer"), per_device_train_batch_size=p.batch_size, max_steps=p.steps,
                             learning_rate=o.lr, warmup_steps=warmup, lr_scheduler_type=o.schedule, weight_decay=o.weight_decay,
                             adam_beta1=o.betas[0], adam_beta2=o.betas[1], adam_epsilon=o.eps, max_grad_norm=o.clip_norm or 0.0,
                             bf16=p.precision == "bf16", use_cpu=True, save_strategy="steps", save_steps=eval_steps[0],
                             logging_steps=eval_steps[0], report_to="none", disable_tqdm=True, seed=p.seed,
                             dataloader_num_workers=loader_workers)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    trainer = Trainer(model=model, args=args, train_dataset=lm, data_collator=collator, callbacks=[Clock()])
    trainer.train()
    total = time.perf_counter() - t0
    return {"data_s": data_s, "data_parts_s": steps_s, "total_s": total, "sequences": len(lm),
            "points": [{"step": s, "time_s": stamps[s], "dir": work / "trainer" / f"checkpoint-{s}"} for s in eval_steps]}


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def mean_curve(curves: list[list[dict]]) -> list[dict]:
    """The seeds' mean curve: at each checkpoint step, the mean time, loss and accuracy."""
    return [{"step": qs[0]["step"], **{k: _mean([q[k] for q in qs]) for k in ("time_s", "mlm_loss", "mlm_acc")},
             "predictions": qs[0]["predictions"]} for qs in zip(*curves, strict=True)]


def time_to_loss(points: list[dict], target: float) -> float | None:
    """First wall time a curve reaches ``target`` (linear between checkpoints), or None."""
    for i, q in enumerate(points):
        if q["mlm_loss"] <= target:
            if i == 0:
                return q["time_s"]
            a = points[i - 1]
            return a["time_s"] + (a["mlm_loss"] - target) / (a["mlm_loss"] - q["mlm_loss"]) * (q["time_s"] - a["time_s"])
    return None


def plot(curves: dict[str, list[dict]], target: float, reach: dict[str, float | None], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (name, pts), c in zip(curves.items(), ("C0", "C1"), strict=False):
        t = [q["time_s"] / 60 for q in pts]
        ax.plot(t, [q["mlm_loss"] for q in pts], "o-", color=c, label=name)
        bx.plot(t, [q["mlm_acc"] for q in pts], "o-", color=c, label=name)
        if reach.get(name) is not None:
            ax.axvline(reach[name] / 60, color=c, ls=":", lw=1)
    ax.axhline(target, color="grey", ls="--", lw=1, label=f"transformers' final loss {target:.3f}")
    ax.set(xlabel="wall-clock minutes (data preparation included)", ylabel="held-out MLM loss", title="loss vs time")
    bx.set(xlabel="wall-clock minutes (data preparation included)", ylabel="held-out MLM accuracy", title="accuracy vs time")
    ax.legend(), bx.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bench_quality(work: Path, preset: str = "tiny-shared", overrides: dict | None = None, corpus: list[str] | None = None,
                  eval_points: int = 15, eval_sequences: int = 2048, heldout_fraction: float = 0.05, seed: int = 12345,
                  plot_path: Path | None = None, map_workers: int | None = None, loader_workers: int = 1,
                  threads: int | None = None, train_seeds: list[int] | None = None) -> dict[str, Any]:
    from bertpipe.experiments.stats import paired_t
    from bertpipe.pipeline import load_pipeline_config, with_overrides
    from bertpipe.model.hf import hf_config, load_config

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f} s] {msg}", flush=True)

    if threads:  # for both sides alike (and the processes they start)
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
    start, load_before = time.perf_counter(), _load()
    given = {"corpus": corpus, "corpus_tasks": []} if corpus else {}  # a corpus given replaces the preset's text
    base = load_pipeline_config(preset, {**(overrides or {}), **given}, source="bench quality")
    steps = base.pretrain.steps
    every = max(1, steps // eval_points)  # one cadence: ours logs, both sides checkpoint at these steps and the last
    eval_steps = sorted({*range(every, steps + 1, every), steps})
    shutil.rmtree(work, ignore_errors=True)  # every figure timed afresh: no stage served from a cache
    train_paths, held_texts = split_corpus(base.corpus_paths(), work / "corpus", heldout_fraction, seed)
    log(f"corpus split: {len(held_texts)} held-out documents ({sum(map(len, held_texts)):,} characters)")
    pre = {"eval_every": 0, "checkpoint_every": 0, "keep_checkpoints": 1, "keep_steps": eval_steps[:-1], "log_every": every}
    cfg = with_overrides(base, {"corpus": train_paths, "corpus_tasks": [], "work_dir": str(work / "ours"), "evaluate": [],
                                "evaluate_steps": [],
                                "shards": {"eval_fraction": 0.0}, "pretrain": pre}
                         | ({"phase2": {"eval_fraction": 0.0}} if base.phase2 is not None else {}))
    loads, runs = {"before": load_before}, []
    files = [f for p in map(Path, train_paths) for f in ([p] if p.is_file() else sorted(p.rglob("*"))) if f.is_file()]
    for s in train_seeds or [base.pretrain.seed]:  # each seed: both sides afresh, data preparation included
        cs = with_overrides(cfg, {"work_dir": str(work / f"seed-{s}" / "ours"), "pretrain": {"seed": s}})
        log(f"training seed {s}")
        ours = run_ours(cs, log)
        loads[f"after_ours_seed{s}"] = _load()
        model_cfg = load_config(ours["points"][-1]["dir"])
        hf_cfg = {k: v for k, v in hf_config(model_cfg).items() if k not in ("architectures", "dtype")}
        hf = run_hf(files, ours["vocab"], cs, hf_cfg, eval_steps, work / f"seed-{s}" / "hf", log, map_workers, loader_workers)
        loads[f"after_transformers_seed{s}"] = _load()
        runs.append((s, ours, hf))

    tok = fast_tokenizer(runs[0][1]["vocab"], work / "eval-tokenizer", not cfg.wordpiece.cased)
    held = heldout_windows(held_texts, tok, cfg.shards.max_seq_length, eval_sequences, seed)
    log(f"evaluating {len(eval_steps)} checkpoints per side and seed on {len(held.input_ids)} held-out windows "
        f"(of {held.windows}), {int((held.labels != -100).sum())} masked tokens")
    for _, ours, hf in runs:
        for side in (ours, hf):
            for q in side["points"]:
                q.update(evaluate(load_mlm(q.pop("dir"), hf_cfg), held))
    # the seeds' mean curve per side (time and loss at each checkpoint step): the target is transformers' mean final loss
    ours = {"points": mean_curve([o["points"] for _, o, _ in runs])} | {k: _mean([o[k] for _, o, _ in runs]) for k in ("data_s", "total_s")}
    hf = {"points": mean_curve([h["points"] for _, _, h in runs])} | {k: _mean([h[k] for _, _, h in runs]) for k in ("data_s", "total_s")}
    ours["data_parts_s"], hf["data_parts_s"] = runs[0][1]["data_parts_s"], runs[0][2]["data_parts_s"]
    hf["sequences"] = runs[0][2]["sequences"]
    target = hf["points"][-1]["mlm_loss"]
    reach = {"ours": time_to_loss(ours["points"], target), "transformers": time_to_loss(hf["points"], target)}
    ratio = reach["ours"] / reach["transformers"] if reach["ours"] is not None else None
    if plot_path is not None:
        plot({"ours": ours["points"], "transformers": hf["points"]}, target, reach, plot_path)
    gap = [o["points"][-1]["mlm_loss"] - h["points"][-1]["mlm_loss"] for _, o, h in runs]  # per seed, ours - transformers
    gap_ci = paired_t([o["points"][-1]["mlm_loss"] for _, o, _ in runs],
                      [h["points"][-1]["mlm_loss"] for _, _, h in runs]) if len(runs) > 1 else None

    tokens = cfg.pretrain.batch_size * cfg.shards.max_seq_length
    print(f"{preset} recipe, {model_cfg.num_hidden_layers} layers, hidden {model_cfg.hidden_size}, vocabulary "
          f"{model_cfg.vocab_size}; {steps} steps of {tokens} tokens (nominal) on both sides; {torch.get_num_threads()} threads")
    print(f"data preparation: ours {ours['data_s']:.1f} s (ingest, WordPiece training, shards), transformers "
          f"{hf['data_s']:.1f} s (load_dataset, tokenize, group_texts; our vocab.txt given)")
    if len(runs) > 1:
        print("per seed, final checkpoint: " + "; ".join(
            f"seed {s}: ours {o['points'][-1]['mlm_loss']:.3f} in {o['points'][-1]['time_s']:.0f} s, transformers "
            f"{h['points'][-1]['mlm_loss']:.3f} in {h['points'][-1]['time_s']:.0f} s" for s, o, h in runs))
        print(f"final held-out loss, ours - transformers, paired over {len(runs)} seeds: {gap_ci.diff:+.4f} "
              f"(95% interval {gap_ci.low:+.4f} .. {gap_ci.high:+.4f})")
    print(("  step | ours s | ours loss | ours acc | transformers s | transformers loss | transformers acc"
           + (f"   (means over {len(runs)} seeds)" if len(runs) > 1 else "")))
    for a, b in zip(ours["points"], hf["points"], strict=True):
        print(f"{a['step']:6d} | {a['time_s']:6.0f} | {a['mlm_loss']:9.3f} | {a['mlm_acc']:8.3f} | {b['time_s']:14.0f} | "
              f"{b['mlm_loss']:17.3f} | {b['mlm_acc']:16.3f}")
    fmt = lambda s: "not reached" if s is None else f"{s:.0f} s"  # noqa: E731
    print(f"time to transformers' final held-out loss {target:.3f}: ours {fmt(reach['ours'])}, transformers "
          f"{fmt(reach['transformers'])}; ratio {ratio if ratio is None else round(ratio, 3)} "
          f"(goal <= {0.6 if cfg.pretrain.init else 0.33}: {'continued pretraining' if cfg.pretrain.init else 'from scratch'})")
    print(f"1-minute load: {loads}; plot: {plot_path}")
    shas = {side: sorted({q["inputs_sha256"] for r in runs for q in r[i]["points"]}) for i, side in ((1, "ours"), (2, "transformers"))}
    rnd = lambda pts: [{k: round(v, 2 if k == "time_s" else 4) if isinstance(v, float) else v for k, v in q.items() if k != "inputs_sha256"} for q in pts]  # noqa: E731
    return {"bench": "quality", "preset": preset, "time_to_hf_final_loss_ratio": None if ratio is None else round(ratio, 4),
            "hf_final_loss": round(target, 4), "ours_final_loss": round(ours["points"][-1]["mlm_loss"], 4),
            "hf_final_acc": round(hf["points"][-1]["mlm_acc"], 4), "ours_final_acc": round(ours["points"][-1]["mlm_acc"], 4),
            "ours_time_to_hf_final_loss_s": None if reach["ours"] is None else round(reach["ours"], 2),
            "hf_time_to_hf_final_loss_s": None if reach["transformers"] is None else round(reach["transformers"], 2),
            "ours_data_s": round(ours["data_s"], 2), "hf_data_s": round(hf["data_s"], 2),
            "ours_data_parts_s": {k: round(v, 2) for k, v in ours["data_parts_s"].items()},
            "hf_data_parts_s": {k: round(v, 2) for k, v in hf["data_parts_s"].items()},
            "ours_total_s": round(ours["total_s"], 2), "hf_total_s": round(hf["total_s"], 2), "steps": steps,
            "tokens_per_step": tokens, "hf_sequences": hf["sequences"], "heldout_documents": held.documents,
            "heldout_windows": len(held.input_ids), "heldout_predictions": int((held.labels != -100).sum()),
            "heldout_sha256": shas, "load_1min": loads, "plot": str(plot_path) if plot_path else None,
            "wall_s": round(time.perf_counter() - start, 1), "curve_ours": rnd(ours["points"]), "curve_hf": rnd(hf["points"]),
            "train_seeds": [r[0] for r in runs], "final_loss_gap_by_seed": [round(g, 4) for g in gap],
            "final_loss_gap_95": [round(gap_ci.low, 4), round(gap_ci.high, 4)] if gap_ci else None,
            "curves_by_seed": {r[0]: {"ours": rnd(r[1]["points"]), "transformers": rnd(r[2]["points"])} for r in runs}}
