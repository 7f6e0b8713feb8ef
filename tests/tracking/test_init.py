"""Lineage of continued pretraining in a real MLflow store: a run started from a registered
model records that version as its input, the version it registers names it, and the init
weights' content (not their name) enters the pretraining's fingerprint and nothing before it."""

from __future__ import annotations

import shutil

import pytest
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file, save_file

from bertpipe.pipeline import load_pipeline_config, run_pipeline, stage_fingerprints
from bertpipe.tracking import MlflowTracker, tags
from tests.conftest import SAMPLE

MODEL = {"hidden_size": 36, "num_attention_heads": 3, "num_hidden_layers": 2, "intermediate_size": 72}


def overrides(tmp, **pretrain) -> dict:
    return {"corpus": [str(SAMPLE / "the-war-of-the-worlds-part.txt")], "work_dir": str(tmp / "work"),
            "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": "lineage",
            "ingest": {"workers": 1}, "wordpiece": {"vocab_size": 700},
            "shards": {"dupe_factor": 1, "workers": 1, "max_seq_length": 48},
            "pretrain": {"steps": 3, "batch_size": 4, "eval_every": 3, "eval_batches": 1, "log_every": 1,
                         "checkpoint_every": 0, **pretrain}}


def tracked(cfg, name: str):
    return run_pipeline(cfg, tracker=MlflowTracker(cfg.tracking_uri, cfg.experiment, name), until="pretrain")


@pytest.mark.slow
def test_a_run_from_a_registered_model_records_it_and_its_version_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTPIPE_BASE_DIR", str(tmp_path))  # the registered model's download goes under it
    first = tracked(load_pipeline_config("tiny", overrides(tmp_path, model=MODEL)), "from scratch")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (v1,) = client.search_model_versions("name = 'bertpipe-lineage'")

    cfg = load_pipeline_config("tiny", overrides(tmp_path, init="models:/bertpipe-lineage/1", preset=None))
    assert cfg.wordpiece.vocab_file is not None and cfg.wordpiece.vocab_file.read_bytes() == \
        (first.stages["wordpiece"].path / "vocab.txt").read_bytes()  # the model brings its vocabulary
    second = tracked(cfg, "continued")
    pre = client.get_run(client.search_runs([client.get_experiment_by_name("lineage").experiment_id],
                                            f"tags.`{tags.PARENT}` = '{second.run_id}' and tags.`{tags.STAGE}` = 'pretrain'")[0].info.run_id)
    assert pre.data.tags[tags.INIT] == "models:/bertpipe-lineage/1"
    assert pre.data.tags[tags.INIT_DIGEST] == second.stages["pretrain"].manifest["init"]["digest"]
    assert [m.model_id for m in pre.inputs.model_inputs] == [v1.source.removeprefix("models:/")]  # MLflow's model input
    assert "init" in {d.dataset.name for d in pre.inputs.dataset_inputs}
    v2 = client.get_model_version("bertpipe-lineage", "2")
    assert v2.tags[tags.INIT] == "models:/bertpipe-lineage/1" and v2.description == "continued pretraining of models:/bertpipe-lineage/1"
    assert v2.run_id == pre.info.run_id

    # the same weights under another name: the same pretraining; other weights, same vocabulary: a new one
    local = tmp_path / "copy"
    shutil.copytree(second.stages["pretrain"].manifest["init"]["path"], local)
    same = stage_fingerprints(load_pipeline_config("tiny", overrides(tmp_path, init=str(local), preset=None)))
    assert same == stage_fingerprints(cfg)
    state = load_file(local / "model.safetensors")
    state["bert.embeddings.word_embeddings.weight"] = state["bert.embeddings.word_embeddings.weight"] + 1e-3
    save_file(state, local / "model.safetensors", metadata={"format": "pt"})
    changed = stage_fingerprints(load_pipeline_config("tiny", overrides(tmp_path, init=str(local), preset=None)))
    assert {k for k in same if same[k] != changed[k]} == {"pretrain"}  # fine-tunings start from its output


def test_no_init_leaves_the_fingerprints_and_the_preset_as_they_were(tmp_path):
    a = load_pipeline_config("tiny", overrides(tmp_path, model=MODEL))
    b = load_pipeline_config("tiny", overrides(tmp_path, model=MODEL, preset="tiny"))
    c = load_pipeline_config("tiny", overrides(tmp_path, model=MODEL, preset=None))
    assert stage_fingerprints(a) == stage_fingerprints(b) == stage_fingerprints(c)
    with pytest.raises(ValueError, match=r"`pretrain.init`: init models:/nope/1: not found in the MLflow store"):
        load_pipeline_config("tiny", overrides(tmp_path, init="models:/nope/1", preset=None))
