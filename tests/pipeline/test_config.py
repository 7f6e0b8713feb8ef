"""The pipeline config: a misspelt key in a preset or sweep file fails naming the file's name,
the key's path and its neighbour; rules that join stages fail when the config is loaded."""

from __future__ import annotations

import json

import pytest

from bertpipe.core.config import ConfigError
from bertpipe.pipeline import load_pipeline_config, stage_fingerprints, with_overrides
from tests.conftest import SAMPLE


def test_a_misspelt_key_in_a_preset_file_is_blamed_on_the_file(tmp_path, monkeypatch):
    preset = json.loads(load_pipeline_config("tiny").model_dump_json())
    preset["pretrain"]["optim"]["warmup_step"] = 10  # warmup_steps
    (tmp_path / "mine.json").write_text(json.dumps(preset))
    monkeypatch.setenv("BERTPIPE_PRESETS", str(tmp_path))
    with pytest.raises(ConfigError) as e:
        load_pipeline_config("mine", {"pretrain": {"steps": 5}})
    assert str(e.value) == "preset mine: `pretrain.optim.warmup_step` is not a field; did you mean `warmup_steps` or `warmup_ratio`?"
    # a preset may name a corpus that only the overrides make real: only its unknown keys are its own fault
    preset["corpus"] = ["/nowhere/corpus.txt"]
    (tmp_path / "mine.json").write_text(json.dumps(preset))
    with pytest.raises(ConfigError) as e:
        load_pipeline_config("mine", {"corpus": [str(SAMPLE)]})
    assert str(e.value) == "preset mine: `pretrain.optim.warmup_step` is not a field; did you mean `warmup_steps` or `warmup_ratio`?"
    del preset["pretrain"]["optim"]["warmup_step"]
    (tmp_path / "mine.json").write_text(json.dumps(preset))
    assert load_pipeline_config("mine", {"corpus": [str(SAMPLE)]}).corpus == [str(SAMPLE)]
    with pytest.raises(ConfigError, match=r"^preset mine: `corpus`: /nowhere/corpus.txt: no such file"):
        load_pipeline_config("mine")


def test_a_misspelt_key_in_a_sweep_file_fails_before_any_run(tmp_path, monkeypatch):
    from bertpipe.experiments.sweep import load_sweep, validate

    sweep = {"preset": "tiny", "grid": {"shards.masking.masked_lm_probability": [0.1, 0.2]}, "seeds": [1]}
    (tmp_path / "mine.json").write_text(json.dumps(sweep))
    monkeypatch.setenv("BERTPIPE_SWEEPS", str(tmp_path))
    with pytest.raises(ConfigError) as e:
        validate(load_sweep("mine"), "mine")
    assert str(e.value) == ("sweep mine, variant 'masked_lm_probability=0.1': `shards.masking.masked_lm_probability` "
                            "is not a field; did you mean `masked_lm_prob`?")
    (tmp_path / "typo.json").write_text(json.dumps({"preset": "tiny", "grids": {}, "seeds": [1]}))
    with pytest.raises(ConfigError, match=r"^sweep typo: `grids` is not a field; did you mean `grid`\?$"):
        load_sweep("typo")
    (tmp_path / "ft.json").write_text(json.dumps({"preset": "tiny-shared", "grid": {"finetune.pooler": ["cls"]}, "seeds": [1]}))
    with pytest.raises(ConfigError, match=r"variant 'pooler=cls': `finetune\.pooler` is not a field; did you mean `pooling`\?"):
        validate(load_sweep("ft"), "ft")


@pytest.mark.parametrize("overrides,message", [
    ({"pretrain": {"masking": {"masked_lm_prob": 0.3}}, "shards": {"dynamic": False}},
     "`pretrain.masking` is the masking drawn during training, which needs dynamic shards: set `shards.dynamic` to true"),
    ({"phase2": {"max_seq_length": 128, "nsp_mode": "sop"}, "pretrain": {"phase2_fraction": 0.1}},
     "`phase2.nsp_mode` (sop) differs from `shards.nsp_mode` (nsp)"),
    ({"phase2": {"max_seq_length": 128}, "pretrain": {"phase2_fraction": 0.0}},
     "`phase2` shards are given but `pretrain.phase2_fraction` is 0"),
    ({"shards": {"max_seq_length": 1024}}, "`shards.max_seq_length` 1024 exceeds the model's max_position_embeddings 512"),
    ({"shards": {"dynamic": True, "max_seq_length": 32}, "pretrain": {"masking": {"max_predictions_per_seq": 40}}},
     "`pretrain.masking.max_predictions_per_seq` 40 exceeds `shards.max_seq_length` 32"),
    ({"evaluate_steps": [3]}, "`evaluate_steps` needs tasks in `evaluate`"),
])
def test_rules_that_join_stages_fail_at_load_time(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_pipeline_config("tiny", overrides)
    assert message in str(e.value)


def test_evaluation_tasks_are_unique_and_their_steps_are_kept():
    task = {"name": "t", "train": "a.jsonl", "eval": "b.jsonl", "config": {"task": "classify"}}
    with pytest.raises(ConfigError, match=r"`evaluate` names a task twice \(t\)"):
        load_pipeline_config("tiny", {"evaluate": [task, task]})
    cfg = load_pipeline_config("tiny", {"evaluate": [task], "evaluate_steps": [5], "pretrain": {"steps": 10}})
    assert 5 in cfg.pretrain.keep_steps
    train, evaluation = cfg.missing_inputs()  # checked before a run starts (bertpipe plan, run_pipeline)
    assert train.startswith("`evaluate[0].train`: /") and train.endswith("/a.jsonl does not exist")
    assert evaluation.startswith("`evaluate[0].eval`: /") and evaluation.endswith("/b.jsonl does not exist")


def test_overrides_change_the_fingerprints_they_should_and_only_those():
    base = load_pipeline_config("tiny")
    fp = stage_fingerprints(base)
    rate = stage_fingerprints(with_overrides(base, {"shards": {"masking": {"masked_lm_prob": 0.3}}}))
    assert {k for k in fp if fp[k] != rate[k]} == {"shards", "pretrain"}


def test_task_adaptive_corpus_and_zero_steps_are_checked():
    task = {"name": "t", "train": "a.jsonl", "eval": "b.jsonl", "config": {"task": "classify"}}
    with pytest.raises(ConfigError, match=r"`corpus_tasks` names 'u', not tasks in `evaluate` \(t\)"):
        load_pipeline_config("tiny", {"evaluate": [task], "corpus_tasks": ["u"]})
    with pytest.raises(ConfigError, match="`corpus` is empty and `corpus_tasks` names no task"):
        load_pipeline_config("tiny", {"corpus": []})
    with pytest.raises(ConfigError, match=r"`pretrain`: `steps` 0 trains nothing: it is for an `init` model"):
        load_pipeline_config("tiny", {"pretrain": {"steps": 0}})
