"""Fine-tuning and evaluation: the four task types, fine-tuned or feature-based, and the stage.

``finetune(cfg, checkpoint, train, eval, out)`` reads the task files and tokenizes them with the
checkpoint's vocabulary (``prepare``), builds the head (``bertpipe.tasks.heads``) on the
checkpoint's encoder (or on a random initialization of the same architecture with
``init="random"``), trains with AdamW *with* bias correction (BERT's uncorrected Adam is
unstable for fine-tuning), linear warmup and decay, and evaluates with the task's usual
metrics (``bertpipe.tasks.metrics``). What differs between task types (readers, heads, loss,
scoring, the main metric) is the task's ``TaskSpec`` (``bertpipe.tasks.specs``); this module
has no task switches. Several seeds give mean and standard deviation; the paper's grid
(batch 16/32 x lr 5e-5/3e-5/2e-5 x 2-4 epochs) is available as ``grid=True`` and picks the
best setting on the eval file, as the paper does on GLUE dev sets.

Outputs in ``out``: ``metrics.json`` (the metrics by their usual names, mean over seeds,
plus ``*_std`` and per-seed values), ``model.safetensors`` + ``head.json`` for the first
seed's fine-tuned weights, and ``examples.json``: per seed, the eval set's per-example
columns (correct or not, per-question SQuAD scores, per-sentence entity counts) and how each
metric follows from them, so two evaluations on the same examples can be compared by a
bootstrap over examples (``read_examples``; ``bertpipe.experiments.stats``). It is an extra
output file, not an input: fingerprints are unchanged, and outputs cached before it lack it. ``FinetuneStage`` runs the same as a stage (``bertpipe.core.stage``)
into ``ROOT/<fingerprint>/``; its manifest is the summary. The fingerprint hashes the config
less the device (``canonical_finetune``), the checkpoint's weights (pretrained init only: a
random init shares one baseline per architecture), config and vocabulary, and the task
files' bytes. Trade-off: examples are tokenized once and held in memory as padded arrays,
fine for fine-tuning sets (10^3-10^5 examples), not for pretraining corpora.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer

from bertpipe.core.fingerprint import hash_file
from bertpipe.core.stage import PROTOCOL_KEYS, Stage, StageResult, run_stage
from bertpipe.model.hf import load_config, load_state_dict
from bertpipe.tasks import heads
from bertpipe.tasks.config import EvalTask, FinetuneConfig, Task  # noqa: F401  (EvalTask, Task: re-exported)
from bertpipe.tasks.data import label_vocab
from bertpipe.tasks.specs import Arrays, Batch, Prediction, concat_outputs, spec_for, take_rows
from bertpipe.train.hostmem import kept_freed_memory, trim_if_grown
from bertpipe.train.optim import OptimConfig, build_optimizer, build_scheduler

log = logging.getLogger(__name__)
STAGE = "finetune"
VERSION = 2  # bump when a change alters fine-tuning results for the same inputs
GRID = [{"batch_size": b, "lr": lr, "epochs": e} for b, lr, e in itertools.product((16, 32), (5e-5, 3e-5, 2e-5), (2, 3, 4))]
MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask")
_TENSORS = {*MODEL_INPUTS, "labels", "start_positions", "end_positions"}  # the arrays batches carry
LOSS_WINDOW = 20  # final_train_loss: mean loss of the last steps
PREDICT_BATCH = 64
EXAMPLES = "examples.json"  # per-example eval columns, beside metrics.json
# Summary keys that describe the run rather than measure it (the rest are metrics).
SUMMARY_ECHOES = ("task", "main_metric", "seeds", "grid_point", "init", "features")
CAUSAL_MARK = "causal-cls-is-last-token"  # heads changed for left-to-right encoders (was [CLS])


def load_tokenizer(checkpoint: str | Path, cased: bool) -> Tokenizer:
    """The checkpoint's WordPiece vocabulary as a BERT tokenizer."""
    vocab = Path(checkpoint) / "vocab.txt"
    if not vocab.is_file():
        raise FileNotFoundError(f"{checkpoint} has no vocab.txt; fine-tuning needs the pretraining vocabulary")
    return BertWordPieceTokenizer(str(vocab), lowercase=not cased)._tokenizer


@dataclass
class TaskData:
    """A task's training and evaluation files, read, labelled and encoded."""

    train_examples: list
    eval_examples: list
    labels: list[str] | None  # the training file's label vocabulary; None: the task has none
    train: Arrays
    eval: Arrays


def prepare(cfg: FinetuneConfig, checkpoint: str | Path, train_path: str | Path, eval_path: str | Path) -> TaskData:
    """Read both files, build the label vocabulary (an eval label not in it is an error with its
    line) and encode both with the checkpoint's vocabulary."""
    spec = spec_for(cfg)
    tok = load_tokenizer(checkpoint, cfg.cased)
    train_ex, eval_ex = spec.read(cfg, Path(train_path)), spec.read(cfg, Path(eval_path))
    labels = None
    if spec.labelled:
        labels = label_vocab(train_ex)
        label_vocab(eval_ex, known=labels)
    return TaskData(train_ex, eval_ex, labels, spec.encode(cfg, tok, train_ex, labels), spec.encode(cfg, tok, eval_ex, labels))


def build_model(cfg: FinetuneConfig, checkpoint: str | Path, n_outputs: int, seed: int) -> torch.nn.Module:
    """The task model for ``cfg`` seeded with ``seed``: the checkpoint's architecture (dropout
    overridden by ``cfg.dropout``), its encoder weights with ``init="checkpoint"``."""
    torch.manual_seed(seed)
    bcfg = load_config(Path(checkpoint))
    if cfg.dropout is not None:
        bcfg = bcfg.model_copy(update={"hidden_dropout_prob": cfg.dropout, "attention_probs_dropout_prob": cfg.dropout})
    model = spec_for(cfg).build_head(bcfg, n_outputs, cfg)
    if cfg.init == "checkpoint":
        heads.load_encoder(model, load_state_dict(Path(checkpoint)))
    return model


def resolve_device(cfg: FinetuneConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def batches(data: Arrays, idx: np.ndarray, batch_size: int, device: torch.device) -> Iterator[Batch]:
    """Tensors of the rows ``idx`` in batches of ``batch_size``, cut to the batch's longest row.

    The arrays are padded to ``max_seq_length``; most task rows are far shorter (tweets
    ~30 tokens, verse pairs ~60), and the padding columns change nothing under the attention
    mask, so dropping them is the largest single speed-up of fine-tuning on a CPU.
    """
    width = data["input_ids"].shape[1]
    for lo in range(0, len(idx), batch_size):
        rows = idx[lo : lo + batch_size]
        t = max(1, int(data["attention_mask"][rows].sum(1).max()))  # rows are left-aligned: real tokens, then padding
        yield {k: torch.as_tensor((v[rows][:, :t] if v.ndim == 2 and v.shape[1] == width else v[rows])
                                  .astype(np.float32 if v.dtype.kind == "f" else np.int64)).to(device)
               for k, v in data.items() if k in _TENSORS}


def model_inputs(b: Batch) -> dict[str, torch.Tensor]:
    """The keyword arguments of every task head's ``forward``."""
    return {k: b[k] for k in MODEL_INPUTS}


def autocast(cfg: FinetuneConfig, device: torch.device):
    return torch.autocast(device.type, torch.bfloat16, enabled=cfg.precision == "bf16")


def train_steps(cfg: FinetuneConfig, n_examples: int) -> int:
    """Optimizer steps of one fine-tuning run: ``cfg.epochs`` passes of ``cfg.batch_size`` rows."""
    return max(1, math.ceil(cfg.epochs * math.ceil(n_examples / cfg.batch_size)))


def optimizer(cfg: FinetuneConfig, model: torch.nn.Module, steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW with bias correction (torch's fused kernel), linear warmup and decay over ``steps``."""
    ocfg = OptimConfig(optimizer="adamw", lr=cfg.lr, eps=1e-8, weight_decay=cfg.weight_decay, warmup_ratio=cfg.warmup_ratio)
    opt = build_optimizer(model, ocfg)
    return opt, build_scheduler(opt, ocfg, steps)


def train_step(cfg: FinetuneConfig, model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any, b: Batch) -> torch.Tensor:
    """One update on the batch ``b`` (gradient norm clipped at 1.0); returns its loss."""
    with autocast(cfg, b["input_ids"].device):
        loss = spec_for(cfg).loss(model(**model_inputs(b)), b)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def fit(cfg: FinetuneConfig, model: torch.nn.Module, train: Arrays, seed: int, device: torch.device,
        on_step: Callable[[int], None] | None = None) -> list[float]:
    """Train ``model`` in place for ``cfg.epochs`` (the rows reshuffled each epoch with ``seed``);
    the loss of every step. ``on_step(steps_done)`` is called after each step."""
    n = len(train["input_ids"])
    steps = train_steps(cfg, n)
    model = model.to(device).train()
    opt, sched = optimizer(cfg, model, steps)
    rng, losses = np.random.default_rng(seed), []
    with kept_freed_memory():  # as pretraining: no page faults for the step's buffers; given back after
        while len(losses) < steps:
            for b in batches(train, rng.permutation(n), cfg.batch_size, device):
                losses.append(train_step(cfg, model, opt, sched, b).item())
                trim_if_grown()  # varying batch shapes fragment the heap (bertpipe.train.hostmem)
                if on_step is not None:
                    on_step(len(losses))
                if len(losses) >= steps:
                    break
    return losses


@torch.no_grad()
def predict(cfg: FinetuneConfig, model: torch.nn.Module, data: Arrays, device: torch.device) -> Prediction:
    """The model's outputs for every row of ``data`` in its order, as numpy arrays at the
    arrays' full width.

    Rows are run shortest first, so that a batch of similar lengths is cut to little more
    than its rows (one long row no longer pads 63 short ones): 1.3-1.8x fewer token
    positions on the four shared eval sets. The outputs are put back in the rows' order.
    """
    spec, width = spec_for(cfg), data["input_ids"].shape[1]
    model.eval()
    order = np.argsort(data["attention_mask"].sum(1), kind="stable")
    outs = []
    for b in batches(data, order, PREDICT_BATCH, device):
        with autocast(cfg, device):
            out = model(**model_inputs(b))
        outs.append(spec.collect(out, width))
    return take_rows(concat_outputs(outs), np.argsort(order))


@dataclass
class GridRun:
    """One grid point's seeds: their scores, and the first seed's model."""

    point: dict[str, Any]
    per_seed: list[dict[str, float]] = field(default_factory=list)
    model: torch.nn.Module | None = None
    examples: list[dict[str, list]] = field(default_factory=list)  # per seed: per-example columns

    def mean(self, metric: str) -> float:
        return statistics.mean(s[metric] for s in self.per_seed)


def finetune(cfg: FinetuneConfig, checkpoint: str | Path, train_path: str | Path, eval_path: str | Path,
             out_dir: str | Path, on_metrics: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Fine-tune (or train the feature-based head) and evaluate; write metrics.json and weights.
    Returns the summary (what metrics.json holds). ``on_metrics`` gets progress records as
    pretraining's: ``{"split": "train", "step", "steps"}`` over all seeds and grid points, and
    ``{"split": "eval", "step", "seed", **scores}`` as each run is scored."""
    spec, ckpt, out, device = spec_for(cfg), Path(checkpoint), Path(out_dir), resolve_device(cfg)
    task = prepare(cfg, ckpt, train_path, eval_path)
    n_outputs = spec.n_outputs(task.labels)
    points = GRID if cfg.grid else [{}]
    total = sum(train_steps(cfg.model_copy(update=p), len(task.train_examples)) for p in points) * len(cfg.seeds)
    done = 0
    runs: list[GridRun] = []
    for point in points:
        run_cfg, run = cfg.model_copy(update=point), GridRun(point)
        for seed in cfg.seeds:
            t0 = time.perf_counter()
            model = build_model(run_cfg, ckpt, n_outputs, seed)
            report = None if on_metrics is None else (lambda k, base=done: on_metrics({"split": "train", "step": base + k,
                                                                                         "steps": total}))
            losses = fit(run_cfg, model, task.train, seed, device, on_step=report)
            done += len(losses)
            pred = predict(run_cfg, model, task.eval, device)
            scores = spec.score(run_cfg, pred, task.eval, task.eval_examples, task.labels)
            if spec.per_example is not None:
                cols = spec.per_example(run_cfg, pred, task.eval, task.eval_examples, task.labels)
                run.examples.append({k: v.tolist() for k, v in cols.items()})
            scores["train_seconds"] = time.perf_counter() - t0
            scores["final_train_loss"] = float(np.mean(losses[-LOSS_WINDOW:]))
            log.info("%s seed %d %s: %s", cfg.task, seed, point or "", {k: round(v, 4) for k, v in scores.items()})
            if on_metrics is not None:
                on_metrics({"split": "eval", "step": done, "steps": total, "seed": seed, **scores})
            run.per_seed.append(scores)
            if run.model is None:
                run.model = model
        runs.append(run)
    best = max(runs, key=lambda r: r.mean(spec.main_metric))
    summary: dict[str, Any] = {"task": cfg.task, "main_metric": spec.main_metric, "seeds": cfg.seeds, "grid_point": best.point,
                               "init": cfg.init, "features": cfg.features, "train_examples": len(task.train_examples),
                               "eval_examples": len(task.eval_examples), "per_seed": best.per_seed}
    for k in best.per_seed[0]:
        vals = [s[k] for s in best.per_seed]
        summary[k] = statistics.mean(vals)
        summary[f"{k}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
    if cfg.grid:
        summary["grid"] = [{"point": r.point, spec.main_metric: r.mean(spec.main_metric)} for r in runs]
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in best.model.state_dict().items()}, str(out / "model.safetensors"))
    (out / "head.json").write_text(json.dumps({"task": cfg.task, "labels": task.labels, "config": cfg.model_dump(mode="json")}, indent=2))
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    if best.examples:
        (out / EXAMPLES).write_text(json.dumps({
            "task": cfg.task, "eval_sha256": hash_file(eval_path), "recipes": spec.recipes,
            "per_seed": [{"seed": seed, "columns": cols} for seed, cols in zip(cfg.seeds, best.examples, strict=True)]}))
    return summary


def read_examples(out_dir: str | Path) -> dict[str, Any] | None:
    """A fine-tuning output's ``examples.json`` (task, eval file hash, recipes, per-seed
    columns as numpy arrays), or None for an output written before it existed."""
    path = Path(out_dir) / EXAMPLES
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    for s in doc["per_seed"]:
        s["columns"] = {k: np.asarray(v) for k, v in s["columns"].items()}
    doc["recipes"] = {m: (kind, tuple(cols)) for m, (kind, cols) in doc["recipes"].items()}
    return doc


def canonical_finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """The config as fingerprinted: less the device, and less options left at their defaults
    that were added after results were cached (``dropout`` None, ``precision`` fp32), so
    those results keep their names."""
    exclude = {"device"} | ({"dropout"} if cfg.dropout is None else set()) | ({"precision"} if cfg.precision == "fp32" else set())
    return cfg.model_dump(mode="json", exclude=exclude)


def task_metrics(manifest: dict[str, Any]) -> dict[str, float]:
    """The numbers a fine-tuning measured (metrics, their ``*_std``, example counts, seconds)
    from its summary or manifest: not the protocol keys, the config echoes or booleans."""
    skip = {*PROTOCOL_KEYS, *SUMMARY_ECHOES}
    return {k: float(v) for k, v in manifest.items() if k not in skip and isinstance(v, int | float) and not isinstance(v, bool)}


class FinetuneStage(Stage[FinetuneConfig]):
    """One fine-tuning (all its seeds and grid points) as a single unit."""

    name, version = STAGE, VERSION

    def __init__(self, cfg: FinetuneConfig, checkpoint: str | Path, train: str | Path, eval: str | Path,  # noqa: A002
                 on_metrics: Callable[[dict[str, Any]], None] | None = None) -> None:
        super().__init__(cfg)
        self.checkpoint, self.train_path, self.eval_path = Path(checkpoint), Path(train), Path(eval)
        self.on_metrics = on_metrics  # progress records (see ``finetune``)

    @classmethod
    def fingerprint_config(cls, cfg: FinetuneConfig) -> dict[str, Any]:
        return canonical_finetune(cfg)

    def upstream(self) -> list[str]:
        """Content hashes of the checkpoint's weights (pretrained init only), config and
        vocabulary (those present), of the two task files, and a mark for causal encoders."""
        names = (["model.safetensors"] if self.cfg.init == "checkpoint" else []) + ["config.json", "vocab.txt"]
        inputs = [hash_file(self.checkpoint / name) for name in names if (self.checkpoint / name).is_file()]
        inputs += [hash_file(self.train_path), hash_file(self.eval_path)]
        if load_config(self.checkpoint).causal:
            inputs.append(CAUSAL_MARK)
        return inputs

    def plan(self, out: Path) -> list[Path]:
        return [out]

    def run_unit(self, out: Path) -> dict[str, Any]:
        return finetune(self.cfg, self.checkpoint, self.train_path, self.eval_path, out, on_metrics=self.on_metrics)

    def publish(self, out: Path, reports: list[dict[str, Any]]) -> dict[str, Any]:
        (summary,) = reports
        return summary


def finetune_stage(checkpoint: str | Path, train: str | Path, eval: str | Path, cfg: FinetuneConfig,  # noqa: A002
                   out_root: str | Path) -> StageResult:
    """``finetune`` into ``out_root/<fingerprint>/`` (published atomically), or the finished output found there."""
    return run_stage(FinetuneStage(cfg, checkpoint, train, eval), out_root)
