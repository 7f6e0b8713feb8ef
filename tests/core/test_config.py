"""Strict configs: unknown keys fail with their dotted path and the nearest valid names;
retired keys are moved or dropped with a warning; every config model in bertpipe forbids extras."""

from __future__ import annotations

import logging

import pytest
from pydantic import BaseModel, ValidationError

from bertpipe.core.config import ConfigError, _model_in, path_text, validate_config
from bertpipe.pipeline import PipelineConfig, load_pipeline_config


def test_a_misspelt_key_deep_in_the_tree_names_its_path_and_neighbour():
    data = load_pipeline_config("tiny").model_dump(mode="json")
    data["shards"]["masking"]["masked_lm_probability"] = 0.4
    with pytest.raises(ConfigError) as e:
        validate_config(PipelineConfig, data, source="preset tiny with overrides")
    assert str(e.value) == ("preset tiny with overrides: `shards.masking.masked_lm_probability` is not a field; "
                            "did you mean `masked_lm_prob`?")


def test_keys_inside_lists_and_far_from_any_name_and_several_errors_at_once():
    data = load_pipeline_config("tiny").model_dump(mode="json")
    data["evaluate"] = [{"name": "t", "train": "a.jsonl", "eval": "b.jsonl", "config": {"task": "classify", "batchsize": 16}}]
    data["zzz"] = 1
    data["pretrain"]["steps"] = -1
    lines = str(pytest.raises(ConfigError, validate_config, PipelineConfig, data).value).splitlines()
    assert len(lines) == 3, lines
    assert "`evaluate[0].config.batchsize` is not a field; did you mean `batch_size`?" in lines
    (far,) = [ln for ln in lines if ln.startswith("`zzz`")]
    assert far.startswith("`zzz` is not a field; valid names here: `corpus`, ") and "`pretrain`" in far
    (steps,) = [ln for ln in lines if ln.startswith("`pretrain.steps`")]
    assert "greater than or equal to 0" in steps


def test_path_text():
    assert path_text(("evaluate", 0, "config", "lr")) == "evaluate[0].config.lr"
    assert path_text(()) == ""


def test_retired_keys_are_moved_or_dropped_with_a_warning_and_only_never_valid_keys_fail(caplog):
    data = load_pipeline_config("tiny").model_dump(mode="json")
    data["shards"]["masking"] = {"mlm_rate": 0.3, "old_flag": True}
    retired = {"shards.masking.mlm_rate": "shards.masking.masked_lm_prob", "shards.masking.old_flag": None}
    with caplog.at_level(logging.WARNING, logger="bertpipe.core.config"):
        cfg = validate_config(PipelineConfig, data, source="run abc", retired=retired)
    assert cfg.shards.masking.masked_lm_prob == 0.3
    warned = [r.getMessage() for r in caplog.records]
    assert "run abc: `shards.masking.mlm_rate` is retired; its value now sets `shards.masking.masked_lm_prob`" in warned
    assert "run abc: `shards.masking.old_flag` is retired and has no effect any more; it was dropped" in warned
    data["shards"]["masking"]["never_a_key"] = 1
    with pytest.raises(ConfigError, match=r"`shards\.masking\.never_a_key` is not a field"):
        validate_config(PipelineConfig, data, retired=retired)


def _config_models() -> list[type[BaseModel]]:
    """Every model a user's config reaches: the pipeline's and a sweep's trees, nested models and list items included."""
    from bertpipe.experiments.sweep import SweepSpec

    seen, todo = [], [PipelineConfig, SweepSpec]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.append(model)
        todo.extend(m for f in model.model_fields.values() if (m := _model_in(f.annotation)) is not None)
    return seen


def test_every_config_model_in_bertpipe_refuses_an_unknown_key():
    models = _config_models()
    names = {m.__name__ for m in models}
    assert {"PipelineConfig", "MaskingConfig", "ShardsConfig", "IngestConfig", "WordPieceConfig", "FinetuneConfig",
            "PretrainConfig", "EvalTask", "SweepSpec", "Variant"} <= names, names
    for model in models:
        with pytest.raises(ValidationError) as e:
            model.model_validate({"surely_not_a_field": 1})
        assert any(err["type"] == "extra_forbidden" for err in e.value.errors()), model
