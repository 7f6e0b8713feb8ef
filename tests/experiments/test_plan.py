"""``explain_plan``: the reason for each miss against the nearest earlier output (config field,
input file, upstream output, stage version), and where each time estimate comes from. Stages
run through the library's ``run_pipeline`` (no Prefect) on a copy of a tiny corpus."""

from __future__ import annotations

import shutil
import time

import pytest

from bertpipe.core.stagedir import build_seconds
from bertpipe.experiments.plan import Change, explain_plan, render_markdown, render_text
from bertpipe.pipeline import load_pipeline_config, run_pipeline
from tests.conftest import SAMPLE

TINY_MODEL = {"hidden_size": 36, "num_attention_heads": 3, "num_hidden_layers": 2, "intermediate_size": 72}


def config(tmp, corpus, **over):
    base = {"corpus": [str(c) for c in corpus], "work_dir": str(tmp / "work"), "ingest": {"workers": 1},
            "wordpiece": {"vocab_size": 1500}, "shards": {"dupe_factor": 1, "max_seq_length": 64, "workers": 1},
            "pretrain": {"model": TINY_MODEL, "steps": 4, "batch_size": 8, "eval_every": 0, "eval_batches": 2,
                         "log_every": 1, "checkpoint_every": 0}}
    for k, v in over.items():
        base[k] = base[k] | v if isinstance(v, dict) else v
    return load_pipeline_config("tiny", base)


def run(cfg, upto: str = "pretrain"):
    return run_pipeline(cfg, until=upto).stages


@pytest.fixture
def corpus(tmp_path):
    src = tmp_path / "corpus"
    src.mkdir()
    shutil.copy(SAMPLE / "the-war-of-the-worlds-part.txt", src / "a.txt")
    return src / "a.txt"


def test_a_changed_or_added_input_file_is_named_by_its_content_hash(tmp_path, corpus):
    cfg = config(tmp_path, [corpus])
    before = run(cfg, upto="ingest")["ingest"].manifest["files"][0]["content_hash"]
    corpus.write_text(corpus.read_text() + "\n\nA new closing paragraph that was not there before. It has two sentences.\n")
    p = explain_plan(cfg)
    ingest = p.stage("ingest")
    assert ingest.status == "runs" and [(c.kind, c.name, c.old) for c in ingest.changes] == [("input", str(corpus), before)]
    assert ingest.why().startswith(f"input {corpus} changed (content {before[:8]} → ")
    assert p.stage("wordpiece").why() == f"nothing built under {tmp_path / 'work' / 'tokenizer'} yet"

    extra = corpus.with_name("b.txt")
    shutil.copy(SAMPLE / "the-war-of-the-worlds-part.txt", extra)
    both = explain_plan(config(tmp_path, [corpus.parent])).stage("ingest")
    assert [c.text() for c in both.changes][-1] == f"input {extra} added"


def test_the_nearest_output_is_the_one_with_fewest_differences_and_a_new_version_is_named(tmp_path, corpus, monkeypatch):
    run(config(tmp_path, [corpus], shards={"masking": {"masked_lm_prob": 0.3}, "dupe_factor": 2}), upto="shards")
    run(config(tmp_path, [corpus], shards={"masking": {"masked_lm_prob": 0.3}}), upto="shards")
    one_away = run(config(tmp_path, [corpus], shards={"masking": {"masked_lm_prob": 0.3}, "seed": 7}), upto="shards")
    p = explain_plan(config(tmp_path, [corpus], shards={"masking": {"masked_lm_prob": 0.3}, "dupe_factor": 2, "seed": 7}))
    shards = p.stage("shards")
    assert [(s.name, s.status) for s in p.stages][:2] == [("ingest", "cached"), ("wordpiece", "cached")]
    # two earlier outputs are one field away; of those the newest is taken
    assert shards.nearest == one_away["shards"].fingerprint and shards.why() == "dupe_factor 1 → 2"
    assert p.stage("pretrain").why() == f"nothing built under {tmp_path / 'work' / 'pretrain'} yet"

    from bertpipe.data.wordpiece import WordPieceStage

    monkeypatch.setattr(WordPieceStage, "version", WordPieceStage.version + 1)
    later = explain_plan(config(tmp_path, [corpus], shards={"masking": {"masked_lm_prob": 0.3}}))
    assert later.stage("wordpiece").changes == [Change(kind="version", name="version", old=WordPieceStage.version - 1,
                                                       new=WordPieceStage.version)]
    assert later.stage("wordpiece").why() == f"stage version {WordPieceStage.version - 1} → {WordPieceStage.version}"
    assert later.stage("shards").why() == "upstream wordpiece changed"


def test_estimates_scale_the_nearest_recorded_build_or_use_mlflow_or_reference_rates(tmp_path, corpus):
    cfg = config(tmp_path, [corpus])
    fresh = explain_plan(cfg)
    assert {s.estimate.basis for s in fresh.stages} == {"throughput"} and fresh.total_seconds() > 0
    done = run(cfg)
    took = build_seconds(done["pretrain"].path)
    assert took is not None and took > 0

    # twice the steps: the pretraining's recorded build time, scaled by the training FLOPs
    longer = explain_plan(config(tmp_path, [corpus], pretrain={"steps": 8})).stage("pretrain")
    assert longer.estimate.basis == "comparable" and longer.estimate.seconds == pytest.approx(2 * took)
    assert longer.why() == "steps 4 → 8" and f"{done['pretrain'].fingerprint} took" in longer.estimate.detail
    wider = explain_plan(config(tmp_path, [corpus], pretrain={"batch_size": 16, "steps": 2})).stage("pretrain")
    assert wider.estimate.seconds == pytest.approx(took) and wider.estimate.basis == "comparable"

    # the same fingerprint built elsewhere, recorded in MLflow: its duration
    from mlflow.entities import RunStatus

    from bertpipe.tracking import client_for, tags

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert explain_plan(cfg, uri).running() == [] and not (tmp_path / "mlflow.db").exists(), "the store is never created"
    moved = config(tmp_path, [corpus], work_dir=str(tmp_path / "other"))
    target = moved.pretrain.model_copy(update={"steps": 4})
    client = client_for(uri)
    exp = client.create_experiment("elsewhere")
    start = int(time.time() * 1000)
    r = client.create_run(exp, start_time=start, tags={tags.FINGERPRINT: done["pretrain"].fingerprint, tags.CACHE_HIT: "false",
                                                       tags.STAGE: "pretrain"})
    client.set_terminated(r.info.run_id, RunStatus.to_string(RunStatus.FINISHED), end_time=start + 123_000)
    recorded = explain_plan(moved.model_copy(update={"pretrain": target}), uri).stage("pretrain")
    assert recorded.estimate.basis == "recorded" and recorded.estimate.seconds == pytest.approx(123.0)
    assert recorded.estimate.detail == "this fingerprint was built before (MLflow)"


def test_renderings_show_every_stage_with_its_reason_and_estimate(tmp_path, corpus):
    run(config(tmp_path, [corpus]), upto="shards")
    p = explain_plan(config(tmp_path, [corpus], shards={"masking": {"masked_lm_prob": 0.4}}))
    text = render_text(p, "plan tiny")
    assert text.splitlines()[0].startswith("plan tiny: 2 of 4 stages run (shards, pretrain), about ")
    assert "why:  masking.masked_lm_prob 0.15 → 0.4 (vs " in text and "time: comparable: " in text
    assert "time: throughput: no earlier build" in text  # nothing pretrained yet
    md = render_markdown(p, "Plan")
    assert md.count("\n| ") == 5 and "| shards | **runs** |" in md and "| ingest | **cached** |" in md
