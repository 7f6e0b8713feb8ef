"""``bertpipe reproduce``: a tiny CPU run made by the pretrain flow (real Prefect harness, real
MLflow SQLite store) is re-run from its MLflow run id alone into a new work dir, with the same
fingerprints, the same final metrics and the same weights; a config that no longer plans the
recorded outputs is refused before anything runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bertpipe.experiments.reproduce import ReproduceError, config_from_params, reproduce
from bertpipe.pipeline import load_pipeline_config, stage_fingerprints
from bertpipe.tracking import client_for, tags
from bertpipe.tracking.runs import flatten
from tests.conftest import ROOT, SAMPLE
from tests.flows.test_flows import harness, overrides  # noqa: F401  (harness: a module fixture)

STAGES = ["ingest", "wordpiece", "shards", "pretrain"]


@pytest.fixture(scope="module")
def original(harness, tmp_path_factory):  # noqa: F811
    """A tiny pipeline run by the flow; its MLflow run id and store are all a reproduction gets."""
    from flows.pretrain import pretrain_flow

    tmp = tmp_path_factory.mktemp("original")
    ov = overrides(tmp, steps=6, eval_every=3)
    ov["shards"]["masking"] = {"masked_lm_prob": 0.2}
    f = str(ROOT / "tests" / "fixtures" / "tasks" / "finefoods.tsv")  # fine-tuned on the final checkpoint too
    ov["evaluate"] = [{"name": "ff", "train": f, "eval": f,
                       "config": {"task": "classify", "epochs": 1, "batch_size": 4, "max_seq_length": 32}}]
    out = pretrain_flow(load_pipeline_config("tiny", ov))
    return {"uri": ov["tracking_uri"], "run_id": out["mlflow_run_id"], "out": out, "tmp": tmp}


def test_a_tiny_cpu_run_is_reproduced_from_its_run_id_alone(original, tmp_path):
    r = reproduce(original["run_id"], original["uri"], tmp_path / "again")
    assert r.config_source == "artifact"
    assert r.fingerprints == {s: (original["out"][s], original["out"][s]) for s in STAGES}
    names = {m.name for m in r.metrics}
    assert {"final_mlm_loss", "final_mlm_acc", "final_nsp_acc", "parameters", "pretrain.train_loss", "pretrain.eval_mlm_loss",
            "shards.count_rows", "ingest.count_documents", "wordpiece.count_vocab_size", "ff_accuracy"} <= names
    assert [m for m in r.metrics if m.verdict not in ("same", "timing")] == []
    assert any(m.name.startswith("pretrain.") and "tokens_per_s" in m.name for m in r.metrics if m.verdict == "timing")
    assert r.identical()

    # everything was computed again, in the new work dir, and tracked as a reproduction
    client = client_for(original["uri"])
    assert client.get_run(r.reproduced_run_id).data.tags[tags.REPRODUCES] == original["run_id"]
    kids = client.search_runs([client.get_run(r.reproduced_run_id).info.experiment_id],
                              f"tags.`{tags.PARENT}` = '{r.reproduced_run_id}'")
    stages = [k for k in kids if tags.STAGE in k.data.tags]
    assert sorted(k.data.tags[tags.STAGE] for k in stages) == sorted(STAGES)
    assert all(k.data.tags[tags.CACHE_HIT] == "false" and k.data.tags[tags.PATH].startswith(str(tmp_path / "again"))
               for k in stages)
    (tuned,) = [k for k in kids if tags.CHECKPOINT in k.data.tags]  # the fine-tuning run, as the flow nests it
    assert tuned.data.tags[tags.CHECKPOINT].startswith(str(tmp_path / "again"))
    again = tmp_path / "again" / "pretrain" / original["out"]["pretrain"] / "final" / "model.safetensors"
    assert again.read_bytes() == (Path(original["out"]["model"]) / "model.safetensors").read_bytes()

    with pytest.raises(ReproduceError, match="is not empty"):
        reproduce(original["run_id"], original["uri"], tmp_path / "again")


def test_the_command_prints_both_sides_and_warns_when_the_code_version_differs(original, tmp_path, capsys):
    from bertpipe.cli.main import main

    client = client_for(original["uri"])
    commit = client.get_run(original["run_id"]).data.tags[tags.GIT_COMMIT]
    client.set_tag(original["run_id"], tags.GIT_COMMIT, "0" * 40)
    try:
        main(["reproduce", original["run_id"], "--tracking-uri", original["uri"], "--work-dir", str(tmp_path / "cli")])
    finally:
        client.set_tag(original["run_id"], tags.GIT_COMMIT, commit)
    out, err = capsys.readouterr()
    assert f"warning: code version differs: the run was made at commit 000000000000, this checkout is at {commit[:12]}" in out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert lines["pretrain"][1:] == [original["out"]["pretrain"]] * 2 + ["same"]
    assert lines["final_mlm_loss"][1] == lines["final_mlm_loss"][2] and lines["final_mlm_loss"][3] == "same"
    assert out.splitlines()[-1].startswith("identical: 4 of 4 fingerprints and ")
    assert "pretrain: built" in err  # progress on stderr


def test_the_config_is_rebuilt_from_flattened_params(tmp_path):
    f = str(ROOT / "tests" / "fixtures" / "tasks" / "finefoods.tsv")
    ov = overrides(tmp_path, steps=4)
    ov |= {"experiment": "1234", "phase2": {"max_seq_length": 128, "dupe_factor": 1, "workers": 1},
           "evaluate": [{"name": "ff", "train": f, "eval": f, "config": {"task": "classify", "epochs": 1}}], "evaluate_steps": [2]}
    cfg = load_pipeline_config("tiny", ov)
    params = flatten("", cfg.model_dump(mode="json"))
    assert params["experiment"] == "1234" and params["phase2.masking.mask_split"] == "[0.8, 0.1, 0.1]"
    rebuilt = load_pipeline_config("tiny", config_from_params(params))
    assert rebuilt == cfg and stage_fingerprints(rebuilt) == stage_fingerprints(cfg)


def test_a_run_whose_inputs_changed_is_refused_before_anything_runs(tmp_path):
    """A run logged with params only (as before the config artifact existed) whose corpus has changed since."""
    corpus = tmp_path / "corpus.txt"
    shutil.copy(SAMPLE / "the-war-of-the-worlds-part.txt", corpus)
    ov = overrides(tmp_path) | {"corpus": [str(corpus)]}
    cfg = load_pipeline_config("tiny", ov)
    client = client_for(ov["tracking_uri"])
    run = client.create_run(client.create_experiment("pretrain"), tags={tags.PLANNED + s: fp for s, fp in stage_fingerprints(cfg).items()})
    for k, v in flatten("", cfg.model_dump(mode="json")).items():
        client.log_param(run.info.run_id, k, v)
    corpus.write_text(corpus.read_text().replace("Martians", "Venusians"))
    with pytest.raises(ReproduceError, match="plans other outputs than the run recorded .*ingest: ") as e:
        reproduce(run.info.run_id, ov["tracking_uri"], tmp_path / "again")
    assert "pretrain: " in str(e.value) and not (tmp_path / "again").exists()
    with pytest.raises(ReproduceError, match="no run 0123 in"):
        reproduce("0123", ov["tracking_uri"])
