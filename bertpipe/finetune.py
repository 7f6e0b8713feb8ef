"""Fine-tuning and evaluation: the four task types, fine-tuned or feature-based.

``finetune(cfg, checkpoint, train, eval, out)`` reads the task files (``bertpipe.taskdata``),
tokenizes them with the checkpoint's vocabulary, builds the head (``bertpipe.heads``) on the
checkpoint's encoder (or on a random initialization of the same architecture with
``init="random"``), trains with AdamW *with* bias correction (BERT's uncorrected Adam is
unstable for fine-tuning), linear warmup and decay, and evaluates with the task's usual
metrics (``bertpipe.metrics``). Several seeds give mean and standard deviation; the
paper's grid (batch 16/32 x lr 5e-5/3e-5/2e-5 x 2-4 epochs) is available as ``grid=True``
and picks the best setting on the eval file, as the paper does on GLUE dev sets.

Outputs in ``out``: ``metrics.json`` (the metrics by their usual names, mean over seeds,
plus ``*_std`` and per-seed values) and ``model.safetensors`` + ``head.json`` for the first
seed's fine-tuned weights. Trade-off: examples are tokenized once and held in memory as
padded arrays, fine for fine-tuning sets (10^3-10^5 examples), not for pretraining corpora.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import statistics
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from safetensors.torch import save_file
from tokenizers import Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer

from bertpipe import heads, metrics, taskdata
from bertpipe.cache import (
    fingerprint,
    hash_file,
    is_complete,
    read_manifest,
    stage_dir,
    write_json_atomic,
)
from bertpipe.hf import load_config, load_state_dict
from bertpipe.optim import OptimConfig, build_optimizer, build_scheduler

log = logging.getLogger(__name__)
VERSION = 2  # bump when a change alters fine-tuning results for the same inputs
Task = Literal["classify", "pair", "qa", "tag"]


class FinetuneConfig(BaseModel):
    """One fine-tuning run (or grid) on one task."""

    task: Task = Field("classify", description="classify (single sentence), pair, qa (extractive), tag (token tagging)")
    # The paper's grid values; 3e-5 / 32 / 3 epochs sits in the middle of it.
    lr: float = Field(3e-5, gt=0, description="peak learning rate")
    batch_size: int = Field(32, ge=1, description="examples per step")
    epochs: float = Field(3, gt=0, description="passes over the training set")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="share of steps with linear warmup")
    weight_decay: float = Field(0.01, ge=0, description="AdamW decoupled weight decay (not on biases/LayerNorm)")
    max_seq_length: int = Field(128, ge=8, description="tokens per sequence (qa: question + context window)")
    doc_stride: int = Field(128, ge=1, description="qa: stride between context windows")
    max_query_length: int = Field(64, ge=1, description="qa: question tokens kept")
    max_answer_length: int = Field(30, ge=1, description="qa: longest predicted answer in tokens")
    seeds: list[int] = Field([0], min_length=1, description="one run per seed; metrics are mean and std")
    init: Literal["checkpoint", "random"] = Field("checkpoint", description="pretrained encoder or random init of its architecture")
    features: heads.Features | None = Field(None, description="feature-based: freeze the encoder, use these layers")
    # cls = the paper ([CLS] through the pretrained tanh pooler); mean/max pool the real tokens' states
    pooling: heads.Pooling = Field("cls", description="classify/pair: sentence vector from [CLS], mean or max of the tokens")
    cased: bool = Field(False, description="the vocabulary is cased (no lowercasing)")
    grid: bool = Field(False, description="search the paper's grid (batch 16/32, lr 5e-5/3e-5/2e-5, 2-4 epochs)")
    pair_layout: Literal["mrpc", "qnli", "rte", "mnli", "auto"] = Field("auto", description="pair: TSV layout")
    regression: bool = Field(False, description="classify/pair: float labels, one output, MSE (e.g. STS-B)")
    # None keeps the checkpoint's config: our presets pretrain without dropout (underfitting regime),
    # while the paper fine-tunes with 0.1 everywhere (A.3). Applies to random init too.
    dropout: float | None = Field(None, ge=0, lt=1, description="hidden and attention dropout while fine-tuning (default: the checkpoint's)")
    # bf16 autocast: ~1.4x faster on a CPU with AVX-512-BF16/AMX and on GPUs; fp32 is the reference.
    precision: Literal["fp32", "bf16"] = Field("fp32", description="fp32, or bf16 autocast for forward and loss")
    device: str = Field("auto", description="auto (cuda if available), cpu, cuda")


class EvalTask(BaseModel):
    """One downstream task for the flows: files and the fine-tuning options."""

    name: str = Field(description="label in MLflow and in the output folder")
    train: str = Field(description="training file (relative paths: project folder)")
    eval: str = Field(description="evaluation file")
    config: FinetuneConfig = Field(default_factory=FinetuneConfig)


def _tokenizer(ckpt: Path, cased: bool) -> Tokenizer:
    vocab = ckpt / "vocab.txt"
    if not vocab.is_file():
        raise FileNotFoundError(f"{ckpt} has no vocab.txt; fine-tuning needs the pretraining vocabulary")
    return BertWordPieceTokenizer(str(vocab), lowercase=not cased)._tokenizer


def _build(cfg: FinetuneConfig, ckpt: Path, n_labels: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    bcfg = load_config(ckpt)
    if cfg.dropout is not None:
        bcfg = bcfg.model_copy(update={"hidden_dropout_prob": cfg.dropout, "attention_probs_dropout_prob": cfg.dropout})
    if cfg.features is not None:
        if cfg.task == "tag":
            model = heads.BiLSTMTagger(bcfg, n_labels, cfg.features)
        elif cfg.task in ("classify", "pair"):
            model = heads.MLPClassifier(bcfg, n_labels, cfg.features, pooling=cfg.pooling)
        else:
            raise ValueError("the feature-based route covers classify, pair and tag")
    else:
        if cfg.task in ("classify", "pair"):
            model = heads.SequenceClassifier(bcfg, n_labels, pooling=cfg.pooling)
        else:
            model = heads.SpanExtractor(bcfg) if cfg.task == "qa" else heads.TokenTagger(bcfg, n_labels)
    if cfg.init == "checkpoint":
        heads.load_encoder(model, load_state_dict(ckpt))
    return model


def _loss(cfg: FinetuneConfig, out, b: dict[str, torch.Tensor], regression: bool) -> torch.Tensor:
    if cfg.task == "qa":
        start, end = out
        return (F.cross_entropy(start, b["start_positions"]) + F.cross_entropy(end, b["end_positions"])) / 2
    if cfg.task == "tag":
        return F.cross_entropy(out.flatten(0, 1), b["labels"].flatten(), ignore_index=-100)
    if regression:
        return F.mse_loss(out.squeeze(-1), b["labels"].float())
    return F.cross_entropy(out, b["labels"])


_MODEL_KEYS = {"input_ids", "token_type_ids", "attention_mask", "labels", "start_positions", "end_positions"}


def _batches(data: dict[str, np.ndarray], idx: np.ndarray, bs: int, device: torch.device):
    """Tensors of the rows ``idx`` in batches of ``bs``, cut to the batch's longest row.

    The arrays are padded to ``max_seq_length``; most task rows are far shorter (tweets
    ~30 tokens, verse pairs ~60), and the padding columns change nothing under the attention
    mask, so dropping them is the largest single speed-up of fine-tuning on a CPU.
    """
    width = data["input_ids"].shape[1]
    for lo in range(0, len(idx), bs):
        sel = idx[lo : lo + bs]
        t = max(1, int(data["attention_mask"][sel].sum(1).max()))  # rows are left-aligned: real tokens, then padding
        yield {k: torch.as_tensor((v[sel][:, :t] if v.ndim == 2 and v.shape[1] == width else v[sel])
                                  .astype(np.float32 if v.dtype.kind == "f" else np.int64)).to(device)
               for k, v in data.items() if k in _MODEL_KEYS}


def _autocast(cfg: FinetuneConfig, device: torch.device):
    return torch.autocast(device.type, torch.bfloat16, enabled=cfg.precision == "bf16")


def pad_width(x: np.ndarray, width: int, value: float) -> np.ndarray:
    """Per-position outputs (B, t[, C]) of a cut batch back to the arrays' full width."""
    pad = [(0, 0), (0, width - x.shape[1])] + [(0, 0)] * (x.ndim - 2)
    return np.pad(x, pad, constant_values=value)


def _train_one(cfg: FinetuneConfig, model: torch.nn.Module, train: dict[str, np.ndarray], seed: int,
               regression: bool, device: torch.device) -> list[float]:
    n = len(train["input_ids"])
    steps = max(1, math.ceil(cfg.epochs * math.ceil(n / cfg.batch_size)))
    ocfg = OptimConfig(optimizer="adamw", lr=cfg.lr, eps=1e-8, weight_decay=cfg.weight_decay,
                       warmup_ratio=cfg.warmup_ratio, clip_norm=1.0)
    opt, model = build_optimizer(model, ocfg), model.to(device).train()
    sched = build_scheduler(opt, ocfg, steps)
    rng, losses, step = np.random.default_rng(seed), [], 0
    while step < steps:
        for b in _batches(train, rng.permutation(n), cfg.batch_size, device):
            with _autocast(cfg, device):
                loss = _loss(cfg, model(b["input_ids"], b["token_type_ids"], b["attention_mask"]), b, regression)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
            if step >= steps:
                break
    return losses


@torch.no_grad()
def _predict(cfg: FinetuneConfig, model: torch.nn.Module, data: dict[str, np.ndarray], device: torch.device):
    model.eval()
    outs, width = [], data["input_ids"].shape[1]
    for b in _batches(data, np.arange(len(data["input_ids"])), 64, device):
        with _autocast(cfg, device):
            out = model(b["input_ids"], b["token_type_ids"], b["attention_mask"])
        if cfg.task == "qa":  # start/end logits (B, t): padding can never be an answer
            outs.append(tuple(pad_width(o.float().cpu().numpy(), width, -1e4) for o in out))
        else:
            o = out.float().cpu().numpy()
            outs.append(pad_width(o, width, 0.0) if cfg.task == "tag" else o)
    if cfg.task == "qa":
        return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])
    return np.concatenate(outs)


def _read(cfg: FinetuneConfig, path: Path):
    if cfg.task == "classify":
        return taskdata.read_single_tsv(path, float_labels=cfg.regression)
    if cfg.task == "pair":
        return taskdata.read_pair_tsv(path, cfg.pair_layout, float_labels=cfg.regression)
    if cfg.task == "qa":
        return taskdata.read_squad(path)
    return taskdata.read_conll(path)


def _encode(cfg: FinetuneConfig, tok: Tokenizer, examples, labels: list[str] | None) -> dict[str, np.ndarray]:
    if cfg.task == "qa":
        return taskdata.encode_squad(tok, examples, cfg.max_seq_length, cfg.doc_stride, cfg.max_query_length)
    if cfg.task == "tag":
        return taskdata.encode_tags(tok, examples, labels, cfg.max_seq_length)
    return taskdata.encode_pairs(tok, examples, cfg.max_seq_length, labels)


def _score(cfg: FinetuneConfig, pred, data: dict[str, np.ndarray], examples, labels: list[str] | None,
           regression: bool) -> dict[str, float]:
    if cfg.task == "qa":
        return _score_qa(cfg, pred, data, examples)
    if cfg.task == "tag":
        true_seqs, pred_seqs = [], []
        ids = pred.argmax(-1)
        for i, ex in enumerate(examples):
            first = (data["labels"][i] != -100)  # first piece of each kept word
            words = data["word_ids"][i][first]
            tags = ["O"] * len(ex.tokens)  # words cut by truncation are predicted O
            for w, k in zip(words.tolist(), ids[i][first].tolist(), strict=True):
                tags[w] = labels[k]
            true_seqs.append(ex.tags)
            pred_seqs.append(tags)
        flat_t = [t for s in true_seqs for t in s]
        flat_p = [t for s in pred_seqs for t in s]
        return metrics.entity_scores(true_seqs, pred_seqs) | {"accuracy": metrics.accuracy(flat_t, flat_p)}
    y = data["labels"]
    if regression:
        p = pred.squeeze(-1)
        return {"pearson": float(np.corrcoef(p, y)[0, 1]), "mse": float(np.mean((p - y) ** 2))}
    p = pred.argmax(-1)
    out = {"accuracy": metrics.accuracy(y, p), "mcc": metrics.matthews_corrcoef(y, p), "macro_f1": metrics.macro_f1(y, p)}
    if len(labels) == 2:
        out["f1"] = metrics.f1_binary(y, p, positive=1)
    return out


def _score_qa(cfg: FinetuneConfig, pred, data: dict[str, np.ndarray], examples) -> dict[str, float]:
    """Best valid span per example over its windows: start <= end, length <= max_answer_length,
    both inside the context and at max-context positions; text cut from the context by offsets."""
    start, end = pred
    best: dict[int, tuple[float, str]] = {}
    for f in range(len(start)):
        x = int(data["example_index"][f])
        ok = data["max_context"][f] & (data["offsets"][f, :, 0] >= 0)
        cand = np.nonzero(ok)[0]
        if not len(cand):
            continue
        s_top = cand[np.argsort(-start[f][cand])[:20]]
        e_top = cand[np.argsort(-end[f][cand])[:20]]
        for s_i, e_i in itertools.product(s_top, e_top):
            if e_i < s_i or e_i - s_i + 1 > cfg.max_answer_length:
                continue
            score = float(start[f][s_i] + end[f][e_i])
            if x not in best or score > best[x][0]:
                ctx = examples[x].context
                best[x] = (score, ctx[data["offsets"][f, s_i, 0] : data["offsets"][f, e_i, 1]])
    predictions = {examples[x].qid: text for x, (_, text) in best.items()}
    answers = {e.qid: [a for a, _ in e.answers] for e in examples}
    return metrics.squad_scores(predictions, answers)


def finetune(cfg: FinetuneConfig, checkpoint: str | Path, train_path: str | Path, eval_path: str | Path,
             out_dir: str | Path) -> dict[str, Any]:
    """Fine-tune (or train the feature-based head) and evaluate; write metrics.json and weights."""
    ckpt, out = Path(checkpoint), Path(out_dir)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          "cpu" if cfg.device == "auto" else cfg.device)
    tok = _tokenizer(ckpt, cfg.cased)
    train_ex, eval_ex = _read(cfg, Path(train_path)), _read(cfg, Path(eval_path))
    regression = cfg.regression and cfg.task in ("classify", "pair")
    labels = None
    if cfg.task in ("classify", "pair", "tag") and not regression:
        labels = taskdata.label_vocab(train_ex)
        taskdata.label_vocab(eval_ex, known=labels)  # an unknown eval label is an error, with its line
    train, evaluation = _encode(cfg, tok, train_ex, labels), _encode(cfg, tok, eval_ex, labels)
    n_out = 1 if regression else len(labels or [])
    grid = ([dict(batch_size=b, lr=lr, epochs=e) for b, lr, e in itertools.product((16, 32), (5e-5, 3e-5, 2e-5), (2, 3, 4))]
            if cfg.grid else [{}])
    results: list[dict[str, Any]] = []
    for point in grid:
        run_cfg = cfg.model_copy(update=point)
        per_seed, first_model = [], None
        for seed in cfg.seeds:
            t0 = time.perf_counter()
            model = _build(run_cfg, ckpt, n_out, seed)
            losses = _train_one(run_cfg, model, train, seed, regression, device)
            scores = _score(run_cfg, _predict(run_cfg, model, evaluation, device), evaluation, eval_ex, labels, regression)
            scores["train_seconds"] = time.perf_counter() - t0
            scores["final_train_loss"] = float(np.mean(losses[-20:]))
            log.info("%s seed %d %s: %s", cfg.task, seed, point or "", {k: round(v, 4) for k, v in scores.items()})
            per_seed.append(scores)
            first_model = model if first_model is None else first_model
        results.append({"point": point, "per_seed": per_seed, "model": first_model})
    main_metric = {"qa": "f1", "tag": "entity_f1"}.get(cfg.task, "pearson" if regression else "accuracy")
    best = max(results, key=lambda r: statistics.mean(s[main_metric] for s in r["per_seed"]))
    summary: dict[str, Any] = {"task": cfg.task, "main_metric": main_metric, "seeds": cfg.seeds, "grid_point": best["point"],
                               "init": cfg.init, "features": cfg.features, "train_examples": len(train_ex),
                               "eval_examples": len(eval_ex), "per_seed": best["per_seed"]}
    for k in best["per_seed"][0]:
        vals = [s[k] for s in best["per_seed"]]
        summary[k] = statistics.mean(vals)
        summary[f"{k}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
    if cfg.grid:
        summary["grid"] = [{"point": r["point"], main_metric: statistics.mean(s[main_metric] for s in r["per_seed"])} for r in results]
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in best["model"].state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    (out / "head.json").write_text(json.dumps({"task": cfg.task, "labels": labels, "config": cfg.model_dump(mode="json")}, indent=2))
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    return summary


def finetune_fingerprint(cfg: FinetuneConfig, checkpoint: str | Path, train_path: str | Path, eval_path: str | Path) -> str:
    """Content fingerprint of a fine-tuning: its config (less the device), the checkpoint's
    weights and vocabulary, and the task files' bytes. A random init reads only the
    checkpoint's architecture and vocabulary, so its weights are left out: the baseline is
    then shared by every checkpoint of that architecture instead of recomputed for each."""
    ckpt = Path(checkpoint)
    names = (["model.safetensors"] if cfg.init == "checkpoint" else []) + ["config.json", "vocab.txt"]
    inputs = [hash_file(ckpt / name) for name in names if (ckpt / name).is_file()]
    inputs += [hash_file(Path(train_path)), hash_file(Path(eval_path))]
    if load_config(ckpt).causal:
        inputs.append("causal-cls-is-last-token")  # heads changed for left-to-right encoders (was [CLS])
    return fingerprint("finetune", VERSION, canonical_finetune(cfg), inputs)


def canonical_finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """The config as fingerprinted: less the device, and less options left at their defaults
    that were added after results were cached (``dropout`` None, ``precision`` fp32), so
    those results keep their names."""
    exclude = {"device"} | ({"dropout"} if cfg.dropout is None else set()) | ({"precision"} if cfg.precision == "fp32" else set())
    return cfg.model_dump(mode="json", exclude=exclude)


def finetune_cached(cfg: FinetuneConfig, checkpoint: str | Path, train_path: str | Path, eval_path: str | Path,
                    root: str | Path, fp: str | None = None) -> tuple[dict[str, Any], Path, bool]:
    """``finetune`` into ``root/<fingerprint>`` (published atomically), or the finished result
    found there. ``fp``: the fingerprint, when the caller has already hashed the inputs.
    Returns (summary, directory, cached)."""
    out = Path(root) / (fp or finetune_fingerprint(cfg, checkpoint, train_path, eval_path))
    if is_complete(out):
        return read_manifest(out), out, True
    with stage_dir(out) as tmp:
        summary = finetune(cfg, checkpoint, train_path, eval_path, tmp)
        write_json_atomic(tmp / "manifest.json", summary)
    return summary, out, False


def track_finetune(tracking_uri: str, args: Any, summary: dict[str, Any], experiment: str = "finetune") -> str:
    """One MLflow run for a fine-tuning: config as params, eval metrics, the metrics.json artifact."""
    from bertpipe import tracking

    client = tracking.client_for(tracking_uri)
    exp = tracking.experiment_id(client, experiment)
    params = {"task": summary["task"], "checkpoint": str(args.checkpoint), "train": str(args.train), "eval": str(args.eval),
              **tracking.flatten("", json.loads((Path(args.out) / "head.json").read_text())["config"])}
    run = tracking.start_parent(client, exp, f"{summary['task']} {Path(args.train).parent.name}", {"bertpipe.stage": "finetune"}, params)
    tracking.log_metrics(client, run, {k: v for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)})
    client.log_artifact(run, str(Path(args.out) / "metrics.json"))
    tracking.finish(client, run)
    return run
