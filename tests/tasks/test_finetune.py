"""Fine-tuning end to end on small real slices: every task's loss falls and its metrics are those
of the saved model; a classifier fits its training set; regression learns; the feature-based
route leaves the encoder as it was; init options are honoured; the stage's fingerprint is the
formula results were cached under."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bertpipe.core.fingerprint import fingerprint, hash_file
from bertpipe.core.stagedir import resolve_stage_dir
from bertpipe.model.bert import BertConfig, BertForPreTraining
from bertpipe.model.hf import load_config, load_state_dict, save_checkpoint
from bertpipe.tasks import metrics
from bertpipe.tasks.data import TaskDataError
from bertpipe.tasks.finetune import (
    FinetuneConfig,
    FinetuneStage,
    batches,
    build_model,
    canonical_finetune,
    finetune,
    finetune_stage,
    model_inputs,
    predict,
    prepare,
    task_metrics,
)
from bertpipe.tasks.specs import spec_for
from tests.conftest import ROOT, SHARED, minilm_dir

TASKS = ROOT / "tests" / "fixtures" / "tasks"
FILES = {"classify": "finefoods.tsv", "pair": "bible.tsv", "qa": "squad.json", "tag": "wnut16.conll"}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A small random encoder with the real bert-base-uncased vocabulary."""
    torch.manual_seed(123)  # not a fine-tuning seed, so "random" init really differs
    cfg = BertConfig(vocab_size=30522, hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=96)
    out = tmp_path_factory.mktemp("ckpt") / "c"
    save_checkpoint(BertForPreTraining(cfg), out, minilm_dir() / "vocab.txt")
    return out


def saved_model(cfg: FinetuneConfig, ckpt: Path, out: Path) -> torch.nn.Module:
    """The model ``finetune`` saved in ``out``, rebuilt and loaded."""
    labels = json.loads((out / "head.json").read_text())["labels"]
    model = build_model(cfg, ckpt, spec_for(cfg).n_outputs(labels), seed=0)
    model.load_state_dict(load_file(out / "model.safetensors"))
    return model.eval()


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
def test_every_task_trains_and_its_loss_falls(ckpt, tmp_path, task, keys):
    f = TASKS / FILES[task]
    cfg = FinetuneConfig(task=task, lr=3e-3, epochs=15, batch_size=4, max_seq_length=96, doc_stride=32, max_query_length=16)
    m = finetune(cfg, ckpt, f, f, tmp_path)
    assert keys <= set(m) and m["main_metric"] in m
    # the same seed's model before training, its loss over the whole training set
    data, spec = prepare(cfg, ckpt, f, f), spec_for(cfg)
    untrained = build_model(cfg, ckpt, spec.n_outputs(data.labels), seed=0).eval()
    (everything,) = batches(data.train, np.arange(len(data.train["input_ids"])), 10_000, CPU)
    with torch.no_grad():
        initial = spec.loss(untrained(**model_inputs(everything)), everything).item()
    assert m["final_train_loss"] < 0.75 * initial, (m["final_train_loss"], initial)


def test_tagging_scores_are_the_saved_models_entities(ckpt, tmp_path):
    """entity_f1/precision/recall/accuracy are the saved model's predictions, read per word at
    its first piece (decoded here by hand), scored by ``metrics``."""
    f = TASKS / FILES["tag"]
    cfg = FinetuneConfig(task="tag", lr=3e-3, epochs=40, batch_size=4, max_seq_length=64)
    m = finetune(cfg, ckpt, f, f, tmp_path)
    data = prepare(cfg, ckpt, f, f)
    logits = predict(cfg, saved_model(cfg, ckpt, tmp_path), data.eval, CPU)  # (N, T, C)
    true, pred = [], []
    for i, ex in enumerate(data.eval_examples):
        tags = []
        for w in range(len(ex.tokens)):
            at = np.nonzero(data.eval["word_ids"][i] == w)[0]
            tags.append(data.labels[int(logits[i, at[0]].argmax())] if len(at) else "O")
        true.append(ex.tags)
        pred.append(tags)
    expected = metrics.entity_scores(true, pred)
    assert expected["entity_f1"] > 0  # the model found entities, so a wrong decoding shows
    for k in ("entity_f1", "precision", "recall"):
        assert m[k] == pytest.approx(expected[k]), k
    assert m["accuracy"] == pytest.approx(np.mean([t == p for ts, ps in zip(true, pred) for t, p in zip(ts, ps)]))


@pytest.mark.parametrize("features", [None, "last", "concat_last4", "sum_all"])
def test_only_fine_tuning_changes_the_encoder(ckpt, tmp_path, features):
    """Feature-based: the saved encoder is the checkpoint's, only the head learned; fine-tuned: both changed."""
    f = TASKS / FILES["tag"]
    cfg = FinetuneConfig(task="tag", features=features, lr=1e-3, epochs=2, batch_size=4, max_seq_length=64)
    finetune(cfg, ckpt, f, f, tmp_path)
    saved = {k.removeprefix("encoder."): v for k, v in load_file(tmp_path / "model.safetensors").items()}
    pretrained = {k: v for k, v in load_state_dict(ckpt).items() if k.startswith("bert.")}
    changed = [k for k, v in pretrained.items() if k in saved and not torch.equal(saved[k], v)]
    assert set(pretrained) <= set(saved)
    assert bool(changed) == (features is None), changed[:3]
    untrained = build_model(cfg, ckpt, len(json.loads((tmp_path / "head.json").read_text())["labels"]), seed=0).state_dict()
    assert not torch.equal(saved["classifier.weight"], untrained["classifier.weight"])  # the head did learn


def test_init_checkpoint_vs_random(ckpt):
    state = load_state_dict(ckpt)
    pretrained = build_model(FinetuneConfig(task="classify"), ckpt, 2, seed=0)
    random = build_model(FinetuneConfig(task="classify", init="random"), ckpt, 2, seed=0)
    w = state["bert.encoder.layer.0.attention.self.query.weight"]
    assert torch.equal(pretrained.bert.encoder.layer[0].attention.self.query.weight, w)
    assert not torch.equal(random.bert.encoder.layer[0].attention.self.query.weight, w)


def test_unknown_eval_label_is_reported_with_file_and_line(ckpt, tmp_path):
    bad = tmp_path / "eval.tsv"
    bad.write_text("sentence\tlabel\ngood food\t1\nodd one\tmaybe\n")
    with pytest.raises(TaskDataError, match=r"eval.tsv.*3.*maybe"):
        finetune(FinetuneConfig(task="classify", epochs=1), ckpt, TASKS / FILES["classify"], bad, tmp_path / "o")


def test_feature_based_qa_is_an_error_before_reading(ckpt, tmp_path):
    with pytest.raises(ValueError, match="'qa' has no feature-based head"):
        finetune(FinetuneConfig(task="qa", features="last"), ckpt, tmp_path / "absent.json", tmp_path / "absent.json", tmp_path)


def test_command_line_writes_metrics_json(ckpt, tmp_path):
    f = TASKS / FILES["classify"]
    done = subprocess.run([sys.executable, "-m", "bertpipe.cli.main", "finetune", "classify", "--checkpoint", str(ckpt),
                           "--train", str(f), "--eval", str(f), "--out", str(tmp_path), "--epochs", "1",
                           "--seeds", "0", "1", "--max-seq-length", "32", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = resolve_stage_dir(tmp_path, "finetune")  # --out is the stage root
    assert "accuracy" in json.loads((out / "metrics.json").read_text()) and "MLflow run" in done.stdout


def test_regression_learns_a_learnable_target(ckpt, tmp_path):
    """Float labels train one output with MSE: on a set where one word sets the score, the
    predictions follow the labels (Pearson near 1, MSE far below the labels' variance)."""
    f = tmp_path / "sts.tsv"
    word = {0.0: "awful", 1.0: "okay", 2.0: "great"}
    subject = ["the food", "this soup", "our dinner", "that cake"]
    rows = [(f"{subject[i % 4]} was {word[i % 3 * 1.0]}", i % 3 * 1.0) for i in range(24)]
    f.write_text("sentence\tlabel\n" + "".join(f"{text}\t{y}\n" for text, y in rows))
    cfg = FinetuneConfig(task="classify", regression=True, epochs=20, batch_size=8, lr=3e-3, max_seq_length=16)
    m = finetune(cfg, ckpt, f, f, tmp_path / "o")
    variance = float(np.var([y for _, y in rows]))
    assert m["pearson"] > 0.9 and m["mse"] < 0.1 * variance, (m["pearson"], m["mse"], variance)
    assert load_file(tmp_path / "o" / "model.safetensors")["classifier.weight"].shape[0] == 1


@pytest.mark.parametrize("task", ["pair", "qa", "tag"])
def test_batches_cut_to_the_longest_row_predict_as_full_width(ckpt, task):
    """Dropping the all-padding columns of a batch, and predicting shortest rows first,
    changes no prediction (up to float rounding) and keeps the rows' order."""
    f = TASKS / FILES[task]
    cfg = FinetuneConfig(task=task, max_seq_length=96, doc_stride=32, max_query_length=16)
    task_data = prepare(cfg, ckpt, f, f)
    data = task_data.train
    model = build_model(cfg, ckpt, spec_for(cfg).n_outputs(task_data.labels), seed=0).eval()
    widths = [b["input_ids"].shape[1] for b in batches(data, np.arange(len(data["input_ids"])), 4, CPU)]
    assert max(widths) < 96 and min(widths) >= 1, "rows are short: batches must be cut"
    lengths = data["attention_mask"].sum(1)
    assert (np.diff(lengths) < 0).any(), "rows out of length order: predict must sort them and put them back"
    cut = predict(cfg, model, data, CPU)
    with torch.no_grad():
        full = model(*(torch.as_tensor(data[k].astype(np.int64)) for k in ("input_ids", "token_type_ids", "attention_mask")))
    real = data["attention_mask"].astype(bool)  # per-position outputs: compare the real tokens
    for a, b in zip(cut if task == "qa" else (cut,), full if task == "qa" else (full,), strict=True):
        assert a.shape == tuple(b.shape)
        b = b.numpy()
        np.testing.assert_allclose(a if task == "pair" else a[real], b if task == "pair" else b[real], atol=1e-4)


def test_sample_tsv_rows_keeps_header_and_order_and_is_seeded(tmp_path):
    from benchmarks.finetune import sample_tsv_rows

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

    kept = build_model(FinetuneConfig(task="tag"), ckpt, 3, seed=0)
    assert rates(kept) == {BertConfig.model_fields["hidden_dropout_prob"].default}  # the fixture keeps the model default
    assert rates(build_model(FinetuneConfig(task="tag", dropout=0.25), ckpt, 3, seed=0)) == {0.25}
    assert rates(build_model(FinetuneConfig(task="classify", dropout=0.0, init="random"), ckpt, 2, seed=0)) == {0.0}


def test_bf16_fine_tuning_predicts_like_fp32(ckpt, tmp_path):
    """bf16 autocast trains and scores; before training its predictions match fp32's to bf16 precision."""
    f = TASKS / FILES["classify"]
    cfg = FinetuneConfig(task="classify", max_seq_length=64)
    data = prepare(cfg, ckpt, f, f).train
    model = build_model(cfg, ckpt, 2, seed=0)
    fp32 = predict(cfg, model, data, CPU)
    bf16 = predict(cfg.model_copy(update={"precision": "bf16"}), model, data, CPU)
    assert fp32.dtype == bf16.dtype == np.float32 and not np.array_equal(fp32, bf16)  # autocast really ran
    np.testing.assert_allclose(bf16, fp32, atol=0.05)
    m = finetune(FinetuneConfig(task="classify", precision="bf16", lr=2e-3, epochs=40, batch_size=8, max_seq_length=64), ckpt, f, f, tmp_path)
    assert m["accuracy"] >= 0.99


def test_new_options_at_their_defaults_keep_the_fingerprint(ckpt):
    """Results cached before ``dropout``/``precision`` existed keep their names; setting either renames."""
    f = TASKS / FILES["classify"]
    base = FinetuneConfig(task="classify")
    assert not {"dropout", "precision", "device"} & set(canonical_finetune(base))

    def fp(**kw) -> str:
        return FinetuneStage(FinetuneConfig(task="classify", **kw), ckpt, f, f).fingerprint()

    fps = {fp(**kw) for kw in ({}, {"dropout": None}, {"precision": "fp32"}, {"device": "cpu"})}
    assert len(fps) == 1
    assert len(fps | {fp(dropout=0.1), fp(precision="bf16")}) == 3


# Computed with the code before the stage protocol (finetune_fingerprint's formula), upstream ["a", "b", "c"].
PINNED = [({}, "5e90efb22b725c01"), ({"task": "pair", "init": "random"}, "6ebfb3ad8eab84e4"), ({"dropout": 0.1}, "5a251345dcc63a8d"),
          ({"precision": "bf16", "device": "cpu"}, "ec1db250783857b6"), ({"task": "tag", "features": "last"}, "3fe95af38fe0bd76"),
          ({"task": "qa", "doc_stride": 64}, "bf31bea6dfaeb300"), ({"regression": True, "grid": True, "seeds": [0, 1, 2]}, "1854ce878c34ffc3")]


@pytest.mark.parametrize("kw,expected", PINNED)
def test_stage_fingerprint_formula_is_pinned(kw, expected):
    cfg = FinetuneConfig(**kw)
    assert FinetuneStage.fingerprint_of(cfg, ["a", "b", "c"]) == expected
    assert fingerprint("finetune", 2, canonical_finetune(cfg), ["a", "b", "c"]) == expected


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("init", ["checkpoint", "random"])
def test_stage_upstream_hashes_weights_config_vocab_files_and_the_causal_mark(ckpt, tmp_path, init, causal):
    if causal:
        save_checkpoint(BertForPreTraining(load_config(ckpt).model_copy(update={"causal": True})), tmp_path / "c", ckpt / "vocab.txt")
    c, f, g = (tmp_path / "c" if causal else ckpt), TASKS / FILES["classify"], TASKS / FILES["pair"]
    cfg = FinetuneConfig(init=init)
    expected = ([hash_file(c / "model.safetensors")] if init == "checkpoint" else []) + [
        hash_file(c / "config.json"), hash_file(c / "vocab.txt"), hash_file(f), hash_file(g)] + (["causal-cls-is-last-token"] if causal else [])
    stage = FinetuneStage(cfg, c, f, g)
    assert stage.upstream() == expected
    assert stage.fingerprint() == fingerprint("finetune", 2, canonical_finetune(cfg), expected)


def test_finetune_stage_publishes_the_summary_once(ckpt, tmp_path):
    f = TASKS / FILES["classify"]
    cfg = FinetuneConfig(task="classify", lr=1e-3, epochs=1, batch_size=8, max_seq_length=32)
    first = finetune_stage(ckpt, f, f, cfg, tmp_path)
    fp = FinetuneStage(cfg, ckpt, f, f).fingerprint()
    assert not first.cached and first.path == tmp_path / fp and first.fingerprint == fp
    summary = json.loads((first.path / "metrics.json").read_text())
    assert first.manifest == {"stage": "finetune", "version": 2, "fingerprint": fp} | summary
    assert (first.path / "model.safetensors").is_file() and (first.path / "head.json").is_file()
    again = finetune_stage(ckpt, f, f, cfg, tmp_path)
    assert again.cached and again.manifest == first.manifest
    tracked = task_metrics(again.manifest)
    assert {"accuracy", "accuracy_std", "final_train_loss", "train_seconds", "train_examples"} <= set(tracked)
    assert not {"stage", "version", "fingerprint", "task", "main_metric", "seeds", "init", "features", "per_seed"} & set(tracked)
    assert tracked["accuracy"] == summary["accuracy"] and tracked["train_examples"] == summary["train_examples"]


def test_task_metrics_keeps_the_measured_numbers_only():
    manifest = {"stage": "finetune", "version": 2, "fingerprint": "abc", "task": "qa", "main_metric": "f1", "seeds": [0],
                "grid_point": {}, "init": "checkpoint", "features": None, "per_seed": [{"f1": 1.0}], "f1": 50.0,
                "f1_std": 0.0, "eval_examples": 7, "flag": True}
    assert task_metrics(manifest) == {"f1": 50.0, "f1_std": 0.0, "eval_examples": 7.0}


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data (Fine Food reviews)")
def test_bench_init_picks_each_inits_lr_and_caches_every_run(ckpt, tmp_path):
    from benchmarks.finetune import bench_init

    kw = dict(tasks=["finefoods"], seeds=(0, 1), settings={"finefoods": {"epochs": 1, "max_seq_length": 16, "batch_size": 16}},
              train_rows={"finefoods": 48}, lrs=[1e-5, 3e-3])
    first = bench_init(ckpt, tmp_path, **kw)["rows"][0]
    assert first["pretrained_lr"] in kw["lrs"] and first["random_lr"] in kw["lrs"]
    assert len(first["pretrained_per_seed"]) == len(first["random_per_seed"]) == 2
    assert first["pretrained"] == pytest.approx(np.mean(first["pretrained_per_seed"]), abs=1e-4)
    # the gap's interval: paired t over the two seeds, by hand (df 1, t 12.706)
    d = [p - r for p, r in zip(first["pretrained_per_seed"], first["random_per_seed"], strict=True)]
    half = 12.7062 * abs(d[0] - d[1]) / np.sqrt(2) / np.sqrt(2)  # sd of two values = |a - b| / sqrt(2)
    assert first["gap_method"] == "paired t, n=2"
    assert first["gap_ci95"] == pytest.approx([np.mean(d) - half, np.mean(d) + half], abs=2e-4)
    assert first["distinguishable"] == (not first["gap_ci95"][0] <= 0 <= first["gap_ci95"][1])
    (single,) = bench_init(ckpt, tmp_path, **(kw | {"seeds": (0,)}))["rows"]  # seed 0's runs are cached
    assert single["gap_method"].startswith("paired bootstrap") and single["gap_ci95"][0] <= single["gap"] <= single["gap_ci95"][1]

    def runs() -> list[str]:
        return sorted(p.name for p in (tmp_path / "runs").iterdir() if p.is_dir())

    before = runs()
    assert len(before) == 2 * (2 + 1)  # per init: 2 lrs on seed 0, then seed 1 at the chosen lr
    again = bench_init(ckpt, tmp_path, **kw)["rows"][0]
    assert runs() == before  # nothing new was trained
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in first.items() if k != "seconds"}


def test_random_init_ignores_the_weights_and_so_does_its_fingerprint(ckpt, tmp_path):
    """Same architecture and vocabulary, other weights: a random-init run is the same run (same
    metrics), so it shares the fingerprint; a pretrained-init run does not."""
    torch.manual_seed(7)
    other = tmp_path / "other"
    save_checkpoint(BertForPreTraining(load_config(ckpt)), other, ckpt / "vocab.txt")
    f = TASKS / FILES["classify"]
    rand = FinetuneConfig(task="classify", init="random", lr=1e-3, epochs=1, batch_size=8, max_seq_length=32)
    pre = rand.model_copy(update={"init": "checkpoint"})

    def fp(cfg: FinetuneConfig, c: Path) -> str:
        return FinetuneStage(cfg, c, f, f).fingerprint()

    assert fp(rand, ckpt) == fp(rand, other)
    assert fp(pre, ckpt) != fp(pre, other)
    assert fp(rand, ckpt) != fp(pre, ckpt)
    a, b = (finetune(rand, c, f, f, tmp_path / c.name) for c in (ckpt, other))
    assert a["final_train_loss"] == b["final_train_loss"] and a["accuracy"] == b["accuracy"]


def _random_prediction(spec, data, rng: np.random.Generator):
    """Random outputs of the right shape: non-trivial predictions (tags form entities, spans answer)."""
    n, width = data.eval["input_ids"].shape
    if spec.name == "qa":
        from bertpipe.tasks.heads import SpanLogits

        return SpanLogits(start=rng.normal(size=(n, width)), end=rng.normal(size=(n, width)))
    k = spec.n_outputs(data.labels)
    return rng.normal(size=(n, width, k) if spec.name == "tag" else (n, k))


@pytest.mark.parametrize("task,regression", [("classify", False), ("pair", False), ("qa", False), ("tag", False),
                                             ("classify", True)])
def test_per_example_columns_give_back_every_metric_with_a_recipe(ckpt, tmp_path, task, regression):
    """Each recipe over the per-example columns equals the spec's own score of the same
    predictions, so a bootstrap over the columns resamples the reported metric."""
    from bertpipe.experiments.stats import Recipe

    f = _regression_file(tmp_path / "scores.tsv") if regression else TASKS / FILES[task]
    cfg = FinetuneConfig(task=task, regression=regression, max_seq_length=96, doc_stride=32, max_query_length=16)
    data, spec = prepare(cfg, ckpt, f, f), spec_for(cfg)
    pred = _random_prediction(spec, data, np.random.default_rng(3))
    scores = spec.score(cfg, pred, data.eval, data.eval_examples, data.labels)
    cols = spec.per_example(cfg, pred, data.eval, data.eval_examples, data.labels)
    assert spec.recipes and all(len(v) == len(data.eval_examples) for v in cols.values())
    for metric, (kind, columns) in spec.recipes.items():
        assert Recipe(kind, columns).evaluate(cols) == pytest.approx(scores[metric]), metric
    assert 0 < scores[spec.main_metric if not regression else "mse"]  # random outputs still score something


def _regression_file(path: Path) -> Path:
    rows = [f"{i / 4:.2f}\tsentence number {i} is here\n" for i in range(12)]
    path.write_text("label\tsentence\n" + "".join(rows))
    return path


def test_finetune_writes_examples_and_two_runs_compare_by_paired_bootstrap(ckpt, tmp_path):
    from bertpipe.experiments.stats import compare_examples
    from bertpipe.tasks.finetune import read_examples

    f = TASKS / FILES["classify"]
    cfg = FinetuneConfig(task="classify", lr=2e-3, epochs=2, batch_size=8, max_seq_length=32, seeds=[0, 1])
    fp_before = FinetuneStage(cfg, ckpt, f, f).fingerprint()
    a = finetune_stage(ckpt, f, f, cfg, tmp_path / "a")
    assert FinetuneStage(cfg, ckpt, f, f).fingerprint() == fp_before == a.fingerprint  # an output, not an input
    doc = read_examples(a.path)
    assert [s["seed"] for s in doc["per_seed"]] == [0, 1] and doc["eval_sha256"] == hash_file(f)
    for s, scores in zip(doc["per_seed"], a.manifest["per_seed"], strict=True):
        assert s["columns"]["correct"].mean() == pytest.approx(scores["accuracy"])
    b = finetune_stage(ckpt, f, f, cfg.model_copy(update={"init": "random"}), tmp_path / "b")
    d = compare_examples(doc, read_examples(b.path), "accuracy")
    assert d.method == "paired bootstrap" and d.n_variant == len(doc["per_seed"][0]["columns"]["correct"])
    assert d.diff == pytest.approx(a.manifest["per_seed"][0]["accuracy"] - b.manifest["per_seed"][0]["accuracy"])
    assert d.low <= d.diff <= d.high
    assert compare_examples(doc, read_examples(b.path), "mcc") is None  # not a sum over examples
    assert read_examples(tmp_path) is None  # an output cached before examples.json existed
