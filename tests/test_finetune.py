"""Fine-tuning end to end on small real slices: every task trains, evaluates and writes its
metrics; a classifier fits its training set; init and feature options are honoured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, minilm_dir

from bertpipe.finetune import FinetuneConfig, _build, finetune
from bertpipe.hf import load_config, load_state_dict, save_checkpoint
from bertpipe.model import BertConfig, BertForPreTraining
from bertpipe.taskdata import TaskDataError

TASKS = ROOT / "tests" / "data" / "tasks"
FILES = {"classify": "finefoods.tsv", "pair": "bible.tsv", "qa": "squad.json", "tag": "wnut16.conll"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A small random encoder with the real bert-base-uncased vocabulary."""
    torch.manual_seed(123)  # not a fine-tuning seed, so "random" init really differs
    cfg = BertConfig(vocab_size=30522, hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=96)
    out = tmp_path_factory.mktemp("ckpt") / "c"
    save_checkpoint(BertForPreTraining(cfg), out, minilm_dir() / "vocab.txt")
    return out


def test_classifier_fits_its_training_set(ckpt, tmp_path):
    f = TASKS / FILES["classify"]
    cfg = FinetuneConfig(task="classify", lr=2e-3, epochs=40, batch_size=8, max_seq_length=64, seeds=[0, 1])
    m = finetune(cfg, ckpt, f, f, tmp_path)
    assert m["accuracy"] >= 0.99 and m["accuracy_std"] == 0.0
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["accuracy"] == m["accuracy"] and len(saved["per_seed"]) == 2
    assert (tmp_path / "model.safetensors").is_file() and json.loads((tmp_path / "head.json").read_text())["labels"] == ["0", "1"]


@pytest.mark.parametrize("task,keys", [("pair", {"accuracy", "f1", "mcc"}), ("qa", {"exact_match", "f1"}),
                                       ("tag", {"entity_f1", "precision", "recall"})])
def test_every_task_trains_and_reports_its_metrics(ckpt, tmp_path, task, keys):
    f = TASKS / FILES[task]
    cfg = FinetuneConfig(task=task, lr=1e-3, epochs=3, batch_size=4, max_seq_length=96, doc_stride=32, max_query_length=16)
    m = finetune(cfg, ckpt, f, f, tmp_path)
    assert keys <= set(m) and m["main_metric"] in m
    for k in keys:
        assert 0.0 <= m[k] <= (100.0 if task == "qa" else 1.0)
    assert m["final_train_loss"] > 0


@pytest.mark.parametrize("features", ["last", "concat_last4", "sum_all"])
def test_feature_based_tagging(ckpt, tmp_path, features):
    f = TASKS / FILES["tag"]
    m = finetune(FinetuneConfig(task="tag", features=features, lr=1e-3, epochs=2, batch_size=4, max_seq_length=64), ckpt, f, f, tmp_path)
    assert m["features"] == features and 0.0 <= m["entity_f1"] <= 1.0


def test_init_checkpoint_vs_random(ckpt):
    state = load_state_dict(ckpt)
    pretrained = _build(FinetuneConfig(task="classify"), ckpt, 2, seed=0)
    random = _build(FinetuneConfig(task="classify", init="random"), ckpt, 2, seed=0)
    w = state["bert.encoder.layer.0.attention.self.query.weight"]
    assert torch.equal(pretrained.bert.encoder.layer[0].attention.self.query.weight, w)
    assert not torch.equal(random.bert.encoder.layer[0].attention.self.query.weight, w)


def test_unknown_eval_label_is_reported_with_file_and_line(ckpt, tmp_path):
    bad = tmp_path / "eval.tsv"
    bad.write_text("sentence\tlabel\ngood food\t1\nodd one\tmaybe\n")
    with pytest.raises(TaskDataError, match=r"eval.tsv.*3.*maybe"):
        finetune(FinetuneConfig(task="classify", epochs=1), ckpt, TASKS / FILES["classify"], bad, tmp_path / "o")


def test_command_line_writes_metrics_json(ckpt, tmp_path):
    f = TASKS / FILES["classify"]
    done = subprocess.run([sys.executable, "-m", "bertpipe.cli", "finetune", "classify", "--checkpoint", str(ckpt),
                           "--train", str(f), "--eval", str(f), "--out", str(tmp_path), "--epochs", "1",
                           "--seeds", "0", "1", "--max-seq-length", "32", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "accuracy" in json.loads((tmp_path / "metrics.json").read_text()) and "MLflow run" in done.stdout


def test_regression_labels_use_one_output_and_mse(ckpt, tmp_path):
    f = tmp_path / "sts.tsv"
    f.write_text("sentence\tlabel\n" + "".join(f"text number {i} here\t{i % 5 * 0.5}\n" for i in range(24)))
    m = finetune(FinetuneConfig(task="classify", regression=True, epochs=2, batch_size=8, lr=1e-3), ckpt, f, f, tmp_path / "o")
    assert m["main_metric"] == "pearson" and "mse" in m


@pytest.mark.parametrize("task", ["pair", "qa", "tag"])
def test_batches_cut_to_the_longest_row_predict_as_full_width(ckpt, task):
    """Dropping the all-padding columns of a batch changes no prediction (up to float rounding)."""
    from bertpipe import finetune as ft

    cfg = FinetuneConfig(task=task, max_seq_length=96, doc_stride=32, max_query_length=16)
    examples = ft._read(cfg, TASKS / FILES[task])
    labels = None if task == "qa" else ft.taskdata.label_vocab(examples)
    data = ft._encode(cfg, ft._tokenizer(ckpt, False), examples, labels)
    model = _build(cfg, ckpt, len(labels or []), seed=0).eval()
    widths = [b["input_ids"].shape[1] for b in ft._batches(data, np.arange(len(data["input_ids"])), 4, torch.device("cpu"))]
    assert max(widths) < 96 and min(widths) >= 1, "rows are short: batches must be cut"
    cut = ft._predict(cfg, model, data, torch.device("cpu"))
    with torch.no_grad():
        full = model(*(torch.as_tensor(data[k].astype(np.int64)) for k in ("input_ids", "token_type_ids", "attention_mask")))
    real = data["attention_mask"].astype(bool)  # per-position outputs: compare the real tokens
    for a, b in zip(cut if task == "qa" else (cut,), full if task == "qa" else (full,), strict=True):
        assert a.shape == tuple(b.shape)
        b = b.numpy()
        np.testing.assert_allclose(a if task == "pair" else a[real], b if task == "pair" else b[real], atol=1e-4)


def test_sample_tsv_rows_keeps_header_and_order_and_is_seeded(tmp_path):
    from bertpipe.bench_finetune import sample_tsv_rows

    src = tmp_path / "t.tsv"
    src.write_text("sentence\tlabel\n" + "".join(f"row {i}\t{i % 2}\n" for i in range(50)))
    out = sample_tsv_rows(src, 20, tmp_path / "s.tsv", seed=3)
    lines = out.read_text().splitlines()
    assert lines[0] == "sentence\tlabel" and len(lines) == 21
    ids = [int(line.split("\t")[0].split()[1]) for line in lines[1:]]
    assert ids == sorted(ids) and len(set(ids)) == 20
    assert sample_tsv_rows(src, 20, tmp_path / "again.tsv", seed=3).read_text() == out.read_text()
    assert sample_tsv_rows(src, 20, tmp_path / "other.tsv", seed=4).read_text() != out.read_text()
    assert sample_tsv_rows(src, 50, tmp_path / "all.tsv") == src  # asking for every row reads the file itself


def test_dropout_option_overrides_the_checkpoints_config(ckpt):
    """Our presets pretrain without dropout; ``dropout`` restores the paper's 0.1 for fine-tuning."""
    def rates(m: torch.nn.Module) -> set[float]:
        return {mod.p for mod in m.modules() if isinstance(mod, torch.nn.Dropout)} | {
            mod.dropout_p for mod in m.modules() if hasattr(mod, "dropout_p")}

    kept = _build(FinetuneConfig(task="tag"), ckpt, 3, seed=0)
    assert rates(kept) == {BertConfig.model_fields["hidden_dropout_prob"].default}  # the fixture keeps the model default
    assert rates(_build(FinetuneConfig(task="tag", dropout=0.25), ckpt, 3, seed=0)) == {0.25}
    assert rates(_build(FinetuneConfig(task="classify", dropout=0.0, init="random"), ckpt, 2, seed=0)) == {0.0}


def test_bf16_fine_tuning_predicts_like_fp32(ckpt, tmp_path):
    """bf16 autocast trains and scores; before training its predictions match fp32's to bf16 precision."""
    from bertpipe import finetune as ft

    f = TASKS / FILES["classify"]
    cfg = FinetuneConfig(task="classify", max_seq_length=64)
    examples = ft._read(cfg, f)
    labels = ft.taskdata.label_vocab(examples)
    data = ft._encode(cfg, ft._tokenizer(ckpt, False), examples, labels)
    model = _build(cfg, ckpt, 2, seed=0)
    fp32 = ft._predict(cfg, model, data, torch.device("cpu"))
    bf16 = ft._predict(cfg.model_copy(update={"precision": "bf16"}), model, data, torch.device("cpu"))
    assert fp32.dtype == bf16.dtype == np.float32 and not np.array_equal(fp32, bf16)  # autocast really ran
    np.testing.assert_allclose(bf16, fp32, atol=0.05)
    m = finetune(FinetuneConfig(task="classify", precision="bf16", lr=2e-3, epochs=40, batch_size=8, max_seq_length=64), ckpt, f, f, tmp_path)
    assert m["accuracy"] >= 0.99


def test_new_options_at_their_defaults_keep_the_fingerprint(ckpt):
    """Results cached before ``dropout``/``precision`` existed keep their names; setting either renames."""
    from bertpipe.finetune import canonical_finetune, finetune_fingerprint

    f = TASKS / FILES["classify"]
    base = FinetuneConfig(task="classify")
    assert not {"dropout", "precision", "device"} & set(canonical_finetune(base))
    fps = {finetune_fingerprint(FinetuneConfig(task="classify", **kw), ckpt, f, f)
           for kw in ({}, {"dropout": None}, {"precision": "fp32"}, {"device": "cpu"})}
    assert len(fps) == 1
    assert len(fps | {finetune_fingerprint(FinetuneConfig(task="classify", dropout=0.1), ckpt, f, f),
                      finetune_fingerprint(FinetuneConfig(task="classify", precision="bf16"), ckpt, f, f)}) == 3


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data").is_dir(), reason="needs ../shared/data (Fine Food reviews)")
def test_bench_init_picks_each_inits_lr_and_caches_every_run(ckpt, tmp_path):
    from bertpipe.bench_finetune import bench_init

    kw = dict(tasks=["finefoods"], seeds=(0, 1), settings={"finefoods": {"epochs": 1, "max_seq_length": 16, "batch_size": 16}},
              train_rows={"finefoods": 48}, lrs=[1e-5, 3e-3])
    first = bench_init(ckpt, tmp_path, **kw)["rows"][0]
    assert first["pretrained_lr"] in kw["lrs"] and first["random_lr"] in kw["lrs"]
    assert len(first["pretrained_per_seed"]) == len(first["random_per_seed"]) == 2
    assert first["pretrained"] == pytest.approx(np.mean(first["pretrained_per_seed"]), abs=1e-4)
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(runs) == 2 * (2 + 1)  # per init: 2 lrs on seed 0, then seed 1 at the chosen lr
    again = bench_init(ckpt, tmp_path, **kw)["rows"][0]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == runs  # nothing new was trained
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in first.items() if k != "seconds"}


def test_random_init_ignores_the_weights_and_so_does_its_fingerprint(ckpt, tmp_path):
    """Same architecture and vocabulary, other weights: a random-init run is the same run (same
    metrics), so it shares the fingerprint; a pretrained-init run does not."""
    from bertpipe.finetune import finetune_fingerprint

    torch.manual_seed(7)
    other = tmp_path / "other"
    save_checkpoint(BertForPreTraining(load_config(ckpt)), other, ckpt / "vocab.txt")
    f = TASKS / FILES["classify"]
    rand = FinetuneConfig(task="classify", init="random", lr=1e-3, epochs=1, batch_size=8, max_seq_length=32)
    pre = rand.model_copy(update={"init": "checkpoint"})
    assert finetune_fingerprint(rand, ckpt, f, f) == finetune_fingerprint(rand, other, f, f)
    assert finetune_fingerprint(pre, ckpt, f, f) != finetune_fingerprint(pre, other, f, f)
    assert finetune_fingerprint(rand, ckpt, f, f) != finetune_fingerprint(pre, ckpt, f, f)
    a, b = (finetune(rand, c, f, f, tmp_path / c.name) for c in (ckpt, other))
    assert a["final_train_loss"] == b["final_train_loss"] and a["accuracy"] == b["accuracy"]
