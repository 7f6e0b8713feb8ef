"""What each stage logs to a real MLflow store (SQLite), and the runs of one pipeline run."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from bertpipe.core.stage import run_stage
from bertpipe.data.ingest import IngestConfig, IngestStage
from bertpipe.data.wordpiece import WordPieceConfig, WordPieceStage
from bertpipe.tracking import PipelineRun, metric_logger, tags
from tests.conftest import FIXTURES, SAMPLE


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return uri, MlflowClient(uri)


def test_stage_runs_carry_fingerprint_config_counts_and_artifacts(store, tmp_path):
    uri, client = store
    docs = run_stage(IngestStage(IngestConfig(workers=1, filters=["c4_lines", "gopher_bullets"]),
                                 [SAMPLE / "the-war-of-the-worlds-part.txt"]), tmp_path / "docs")
    vocab = run_stage(WordPieceStage(WordPieceConfig(vocab_file=FIXTURES / "vocab-small.txt"), None), tmp_path / "tok")
    run = PipelineRun(uri, "exp", "a run", {"custom": "tag"}, {"ingest": {"min_doc_chars": 50}})
    for result, cfg in ((docs, {"workers": 1}), (vocab, {"vocab_size": 3})):
        child = run.open_stage(result.stage, result.fingerprint, cfg)
        run.close_stage(child, result, cached=False)
    run.finish(True)

    parent = client.get_run(run.run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["custom"] == "tag"
    assert parent.data.params["ingest.min_doc_chars"] == "50"
    kids = {r.data.tags[tags.STAGE]: r for r in client.search_runs([run.exp], f"tags.`{tags.PARENT}` = '{run.run_id}'")}
    assert set(kids) == {"ingest", "wordpiece"}
    ing = kids["ingest"]
    assert ing.data.tags[tags.FINGERPRINT] == docs.fingerprint and ing.data.tags[tags.CACHE_HIT] == "false"
    assert ing.data.tags[tags.PATH] == str(docs.path) and ing.data.params["ingest.workers"] == "1"
    assert ing.data.metrics["count_documents"] == docs.manifest["counts"]["documents"] > 0
    counts = docs.manifest["counts"]  # the quality rules' counts, per rule
    assert ing.data.metrics["count_lines_removed_c4_terminal"] == counts["lines_removed_c4_terminal"] > 0
    assert ing.data.metrics["count_filtered_gopher_bullets"] == counts["filtered_gopher_bullets"]
    assert {a.path for a in client.list_artifacts(ing.info.run_id)} == {"manifest.json"}
    assert {a.path for a in client.list_artifacts(kids["wordpiece"].info.run_id)} == {"vocab.txt"}


def test_a_cache_hit_links_to_the_run_that_built_it(store, tmp_path):
    uri, client = store
    vocab = run_stage(WordPieceStage(WordPieceConfig(vocab_file=FIXTURES / "vocab-small.txt"), None), tmp_path / "tok")
    first = PipelineRun(uri, "exp", "first", {}, {})
    built = first.close_stage(first.open_stage("wordpiece", vocab.fingerprint, {}), vocab, cached=False)
    first.finish(True)
    second = PipelineRun(uri, "exp", "second", {}, {})
    child = second.open_stage("wordpiece", vocab.fingerprint, {})
    second.close_stage(child, built, cached=True)
    second.finish(True)
    producer = client.search_runs([first.exp], f"tags.`{tags.PARENT}` = '{first.run_id}'")[0].info.run_id
    hit = client.get_run(child)
    assert hit.data.tags[tags.CACHE_HIT] == "true" and hit.data.tags[tags.PRODUCED_BY] == producer
    assert hit.data.tags[tags.RUN_NAME] == "wordpiece (cached)"


def test_a_failed_pipeline_leaves_no_running_child(store):
    uri, client = store
    run = PipelineRun(uri, "exp", "failing", {}, {})
    child = run.open_stage("shards", "0123456789abcdef", {})
    run.finish(False)  # the stage raised before it could be closed
    assert client.get_run(child).info.status == "FAILED" and client.get_run(run.run_id).info.status == "FAILED"


def test_training_records_become_step_metrics(store):
    uri, client = store
    run = PipelineRun(uri, "exp", "training", {}, {})
    log = metric_logger(uri, run.run_id)
    log({"event": "start", "step": 0, "parameters": 1234, "peak_tflops": 0.5})
    for step in (10, 20):
        log({"split": "train", "step": step, "phase": 1, "loss": 1.0 / step, "nsp_acc": None, "tokens_per_s": 100.0 * step,
             "mfu": 0.25, "peak_tflops": 0.5})
    log({"split": "eval", "step": 20, "phase": 1, "mlm_acc": 0.25})
    hist = client.get_metric_history(run.run_id, "train_loss")
    assert [(h.step, h.value) for h in hist] == [(10, 0.1), (20, 0.05)]
    m = client.get_run(run.run_id).data.metrics
    assert m["parameters"] == 1234 and m["eval_mlm_acc"] == 0.25 and "train_nsp_acc" not in m and "train_phase" not in m
    # throughput under its own names, not train_*
    assert m["tokens_per_s"] == 2000 and m["mfu"] == 0.25 and m["peak_tflops"] == 0.5 and "train_mfu" not in m


def test_a_corpus_directory_is_logged_as_the_files_ingest_reads(tmp_path):
    """``make run``'s corpus is a directory: its dataset digests the files inside, in ingest's order."""
    import hashlib
    import json

    from bertpipe.core.fingerprint import hash_file
    from bertpipe.data.ingest import expand_inputs
    from bertpipe.tracking.stages import stage_inputs

    (dataset,) = stage_inputs("ingest", [], [str(SAMPLE)])
    files = [p for p, _ in expand_inputs([SAMPLE])[0]]
    assert len(files) > 1
    assert dataset.digest == hashlib.sha256("".join(hash_file(f) for f in files).encode()).hexdigest()[:16]
    assert json.loads(dataset.profile) == {"files": len(files)} and json.loads(dataset.source) == {"uri": str(SAMPLE)}


def test_a_sweeps_single_seed_fine_tunings_give_back_their_examples(store, tmp_path):
    """``examples.json`` is logged with a fine-tuning's run and read back for a sweep whose variants ran
    one seed each, from the run that built it when the fine-tuning was served from cache."""
    import json

    import numpy as np

    from bertpipe.core.stage import StageResult
    from bertpipe.tracking.sweeps import collect_sweep

    uri, client = store
    out = tmp_path / "ft"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    (out / "examples.json").write_text(json.dumps({"task": "classify", "eval_sha256": "x", "recipes": {"accuracy": ["mean", ["correct"]]},
                                                   "per_seed": [{"seed": 1, "columns": {"correct": [1, 0, 1]}}]}))
    result = StageResult(stage="finetune", fingerprint="f" * 16, path=out, manifest={"accuracy": 0.5}, cached=False)
    sweep = PipelineRun(uri, "sw", "sweep", {tags.SWEEP: "true"}, {})
    for variant, cached in (("a", False), ("b", True)):
        pipe = PipelineRun(uri, "sw", variant, {tags.VARIANT: variant, tags.SEED: "1"}, {}, sweep.run_id)
        ft = PipelineRun(uri, "sw", "finetune", {tags.CHECKPOINT: "ckpt"}, {}, pipe.run_id)
        child = ft.open_stage("finetune:ff", result.fingerprint, {})
        ft.close_stage(child, result, cached=cached)
        ft.finish(True)
        pipe.finish(True)
    sweep.finish(True)
    data = collect_sweep(client, "sw", sweep.run_id)
    for row in data.rows:
        np.testing.assert_array_equal(row["examples"]["ff"]["per_seed"][0]["columns"]["correct"], [1, 0, 1])
