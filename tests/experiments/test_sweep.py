"""Sweep specs: every shipped sweep validates, variants expand, fine-tuning keys reach every task."""

from __future__ import annotations

import pytest

from bertpipe.experiments.sweep import (
    SweepSpec,
    Variant,
    load_sweep,
    sweep_names,
    variant_overrides,
    variant_tags,
)
from tests.conftest import SHARED


def test_shipped_sweeps_parse_and_name_their_variants():
    assert set(sweep_names()) >= {"masking-rate", "masking-split", "fusion", "nsp", "size", "pooling"}
    for name in sweep_names():
        spec = load_sweep(name)
        names = [v.name() for v in spec.expand()]
        assert len(names) == len(set(names)) >= 2, name
        assert spec.paper and spec.description and len(spec.seeds) >= 2


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data (the sweeps' corpora and tasks)")
def test_shipped_sweeps_validate_every_run():
    from bertpipe.experiments.sweep import validate

    for name in sweep_names():
        spec = load_sweep(name)
        runs = validate(spec)
        assert len(runs) == len(spec.expand()) * len(spec.seeds)
        assert len({cfg.pretrain.seed for _, _, cfg in runs}) == len(spec.seeds)


@pytest.mark.skipif(not SHARED.is_dir(), reason="the *-shared presets read ../shared/data")
def test_every_shipped_preset_validates():
    from bertpipe.pipeline import load_pipeline_config, preset_names

    names = preset_names()
    assert {"tiny", "tiny-shared", "small-shared", "base", "large"} <= set(names)
    for name in names:
        cfg = load_pipeline_config(name)
        assert cfg.pretrain.steps > 0, name
        if cfg.phase2 is not None:  # pretraining refuses phases that disagree on NSP
            assert cfg.phase2.nsp_mode == cfg.shards.nsp_mode, name


def test_grid_then_variants_and_fine_tuning_keys():
    spec = SweepSpec(preset="tiny", grid={"pretrain.model.embedding_fusion": ["sum", "concat"], "finetune.pooling": ["cls", "max"]},
                     variants=[Variant(label="LTR", changes={"pretrain.model.causal": True})], seeds=[4, 5],
                     overrides={"evaluate": [{"name": "a", "train": "x", "eval": "y", "config": {"task": "pair", "lr": 1e-4}},
                                             {"name": "b", "train": "x", "eval": "y"}]})
    vs = spec.expand()
    assert [v.name() for v in vs] == ["embedding_fusion=sum, pooling=cls", "embedding_fusion=sum, pooling=max",
                                      "embedding_fusion=concat, pooling=cls", "embedding_fusion=concat, pooling=max", "LTR"]
    ov = variant_overrides(spec, vs[1], 5)
    assert ov["pretrain"] == {"model": {"embedding_fusion": "sum"}, "seed": 5}
    assert [t["config"] for t in ov["evaluate"]] == [{"task": "pair", "lr": 1e-4, "pooling": "max"}, {"pooling": "max"}]
    assert "finetune" not in ov and ov["experiment"] == "sweep"
    shared = spec.model_copy(update={"overrides": spec.overrides | {"finetune.precision": "bf16"}})
    assert [t["config"] for t in variant_overrides(shared, vs[1], 5)["evaluate"]] == [
        {"task": "pair", "lr": 1e-4, "pooling": "max", "precision": "bf16"}, {"pooling": "max", "precision": "bf16"}]
    assert [t["config"] for t in variant_overrides(shared, vs[4], 5)["evaluate"]] == [
        {"task": "pair", "lr": 1e-4, "precision": "bf16"}, {"precision": "bf16"}]
    tags = variant_tags("s", vs[4], 4)
    assert tags["bertpipe.variant"] == "LTR" and tags["bertpipe.seed"] == "4" and '"pretrain.model.causal": true' in tags["bertpipe.variant_changes"]


def test_unknown_sweep_and_fine_tuning_without_tasks_fail_clearly():
    from bertpipe.experiments.sweep import validate

    with pytest.raises(ValueError, match="unknown sweep 'nope'; available: .*masking-rate"):
        load_sweep("nope")
    spec = SweepSpec(preset="tiny", grid={"finetune.pooling": ["cls", "mean"]}, seeds=[1])
    with pytest.raises(ValueError, match=r"variant .pooling=cls.: changes fine-tuning \(`finetune\.\*`\) but the sweep evaluates no task"):
        validate(spec)


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data (the sweeps' corpora and tasks)")
def test_sweeps_share_the_pretrainings_that_docs_results_says_they_share():
    """The reuse that keeps each sweep under an hour: a variant equal to another sweep's run
    must get the same pretraining fingerprint (and a changed one must not)."""
    from bertpipe.pipeline import stage_fingerprints
    from bertpipe.experiments.sweep import validate

    def pretrains(name: str) -> dict[tuple[str, int], str]:
        return {(v.name(), seed): stage_fingerprints(cfg)["pretrain"] for v, seed, cfg in validate(load_sweep(name))}

    nsp, conv, pooling, size = pretrains("nsp"), pretrains("convergence"), pretrains("pooling"), pretrains("size")
    split, rate, fusion = pretrains("masking-split"), pretrains("masking-rate"), pretrains("fusion")
    for seed in (1, 2, 3):  # BERT's own settings written out explicitly name the default run
        assert fusion["embedding_fusion=sum", seed] == rate["15%", seed] == pooling["fine-tuned cls", seed]
        assert fusion["embedding_fusion=concat", seed] != pooling["fine-tuned cls", seed]
    for seed in (1, 2):  # convergence = nsp's No NSP and LTR runs, scored at more steps
        assert conv["MLM", seed] == nsp["No NSP", seed]
        assert conv["LTR", seed] == nsp["LTR & No NSP", seed]
        assert size["preset=tiny", seed] == nsp["MLM+NSP", seed] == pooling["fine-tuned cls", seed]
        assert split["80/10/10", seed] == rate["15%", seed] == nsp["MLM+NSP", seed]
        assert size["preset=mini", seed] != size["preset=tiny", seed]
    assert len(set(nsp.values())) == len(nsp)  # every nsp run is its own pretraining


def test_explicit_defaults_share_the_fingerprint_of_leaving_them_unset():
    from bertpipe.pipeline import load_pipeline_config, stage_fingerprints

    def fp(over: dict) -> str:
        return stage_fingerprints(load_pipeline_config("tiny", {"shards": {"dynamic": True}, **over}))["pretrain"]

    base = fp({})
    assert fp({"pretrain": {"model": {"embedding_fusion": "sum", "causal": False, "initializer_range": 0.02}}}) == base
    assert fp({"pretrain": {"masking": {"masked_lm_prob": 0.15, "mask_split": [0.8, 0.1, 0.1]}}}) == base
    assert fp({"pretrain": {"model": {"embedding_fusion": "concat"}}}) != base
    assert fp({"pretrain": {"model": {"hidden_dropout_prob": 0.1}}}) != base  # the preset file sets 0.0
    assert fp({"pretrain": {"masking": {"masked_lm_prob": 0.4}}}) != base
    assert fp({"pretrain": {"masking": {"mask_split": [1.0, 0.0, 0.0]}}}) != base
    # static shards: a training masking is not the shards' own unless they are dynamic
    static = stage_fingerprints(load_pipeline_config("tiny", {"shards": {"dynamic": False}}))["pretrain"]
    assert static != base


def test_baseline_must_be_a_variant_and_is_logged_with_the_sweep():
    from bertpipe.experiments.sweep import sweep_params

    grid = {"pretrain.model.embedding_fusion": ["sum", "concat"]}
    with pytest.raises(ValueError, match="baseline 'cat' is not a variant"):
        SweepSpec(preset="tiny", grid=grid, baseline="cat")
    named = SweepSpec(preset="tiny", grid=grid, baseline="embedding_fusion=concat")
    assert sweep_params("x", named)["baseline"] == "embedding_fusion=concat"
    assert sweep_params("x", SweepSpec(preset="tiny", grid=grid))["baseline"] == "embedding_fusion=sum"  # the first
