"""A sweep's runs read back from MLflow by their tags: variant, seed, final figures, curves.

Everything a report needs comes from the tracking store alone, not from the cache folders,
so a report can be rebuilt anywhere the store is reachable. A pretraining served from cache
contributes the held-out curve of the run that trained it. When the variants ran one seed
each, the fine-tunings' per-example results (``examples.json``) are read back too, so the
report can bootstrap a single-seed difference over the test examples.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertpipe.tracking import tags

PRETRAIN_METRICS = ("parameters", "final_mlm_loss", "final_mlm_acc", "final_nsp_acc")
DOWNSTREAM_SUFFIXES = ("_accuracy", "_entity_f1", "_exact_match", "_f1", "_mcc")


@dataclass
class SweepRuns:
    experiment: str
    sweep_run: str
    name: str
    description: str
    rows: list[dict[str, Any]]  # one per (variant, seed): variant, seed, run_id, metrics
    curves: dict[str, list[tuple[int, float]]]  # run_id → held-out MLM loss by step
    progress: dict[str, dict[str, list[tuple[int, float]]]]  # run_id → downstream metric → score by pretraining step
    baseline: str = ""  # the variant the report compares the others with ("": the first)


def collect_sweep(client, experiment: str, sweep_run: str | None = None) -> SweepRuns:
    """A sweep's runs and metrics, read back from MLflow (the newest sweep run if none given)."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise ValueError(f"no MLflow experiment {experiment!r}; experiments: {', '.join(names) or 'none'}")
    if sweep_run is None:
        found = client.search_runs([exp.experiment_id], f"tags.`{tags.SWEEP}` = 'true'", order_by=["attributes.start_time DESC"])
        done = [r for r in found if r.info.status == "FINISHED"] or found
        if not done:
            raise ValueError(f"experiment {experiment!r} holds no sweep run (tag {tags.SWEEP}=true)")
        sweep_run = done[0].info.run_id
    top = client.get_run(sweep_run)
    kids = client.search_runs([exp.experiment_id], f"tags.`{tags.PARENT}` = '{sweep_run}'",
                              order_by=["attributes.start_time ASC"], max_results=10_000)
    rows, curves, progress = [], {}, {}
    for k in kids:
        if tags.VARIANT not in k.data.tags:
            continue
        rows.append({"variant": k.data.tags[tags.VARIANT], "seed": int(k.data.tags.get(tags.SEED, 0)),
                     "run_id": k.info.run_id, "status": k.info.status, "metrics": dict(k.data.metrics),
                     "order": sweep_order(k.data.tags)})
        curves[k.info.run_id] = _mlm_curve(client, exp.experiment_id, k.info.run_id)
    if not rows:
        raise ValueError(f"sweep run {sweep_run} has no variant runs yet")
    rows.sort(key=lambda r: r.pop("order"))
    if all(sum(r["variant"] == v for r in rows) == 1 for v in {r["variant"] for r in rows}):  # one seed each
        for r in rows:
            r["examples"] = _examples(client, exp.experiment_id, r["run_id"])
    downstream = [m for m in metric_names(rows) if m not in PRETRAIN_METRICS]
    for r in rows:  # scores logged at several pretraining steps (evaluate_steps)
        hist = {m: sorted((h.step, h.value) for h in client.get_metric_history(r["run_id"], m)) for m in downstream}
        progress[r["run_id"]] = {m: h for m, h in hist.items() if len({st for st, _ in h}) > 1}
    return SweepRuns(experiment, sweep_run, top.data.tags.get(tags.SWEEP_NAME, top.info.run_name),
                     top.data.params.get("description", ""), rows, curves, progress, top.data.params.get("baseline", ""))


def sweep_order(run_tags: dict[str, str]) -> tuple[int, int]:
    """Sort key of a sweep's run: the sweep's order (variant, then seed) where the run records it;
    runs without it sort after, keeping the order they are given in (the order they started)."""
    if tags.VARIANT_ORDER not in run_tags:
        return (1 << 30, 0)
    return (int(run_tags[tags.VARIANT_ORDER]), int(run_tags.get(tags.SEED, 0)))


def sweep_run_ids(client, experiment: str, sweep_run: str) -> list[str]:
    """The run ids of a sweep's (variant, seed) runs, in the report's order (``sweep_order``)."""
    exp = client.get_experiment_by_name(experiment).experiment_id
    kids = [k for k in client.search_runs([exp], f"tags.`{tags.PARENT}` = '{sweep_run}'", max_results=10_000,
                                          order_by=["attributes.start_time ASC"]) if tags.VARIANT in k.data.tags]
    return [k.info.run_id for k in sorted(kids, key=lambda k: sweep_order(k.data.tags))]


def _mlm_curve(client, exp_id: str, pipeline_run: str) -> list[tuple[int, float]]:
    stage = client.search_runs([exp_id], f"tags.`{tags.PARENT}` = '{pipeline_run}' and tags.`{tags.STAGE}` = 'pretrain'")
    if not stage:
        return []
    run = stage[0]
    source = run.data.tags.get(tags.PRODUCED_BY) if run.data.tags.get(tags.CACHE_HIT) == "true" else None
    hist = client.get_metric_history(source or run.info.run_id, "eval_mlm_loss")
    return sorted((m.step, m.value) for m in hist)


def _examples(client, exp_id: str, pipeline_run: str) -> dict[str, dict[str, Any]]:
    """Task name → the ``examples.json`` its fine-tuning logged (the building run's, when served
    from cache), as ``bertpipe.tasks.finetune.read_examples`` gives it; tasks without one are left out."""
    from bertpipe.tasks.finetune import EXAMPLES, read_examples

    out = {}
    for parent in client.search_runs([exp_id], f"tags.`{tags.PARENT}` = '{pipeline_run}' and tags.`{tags.CHECKPOINT}` != ''"):
        for run in client.search_runs([exp_id], f"tags.`{tags.PARENT}` = '{parent.info.run_id}'"):
            stage = run.data.tags.get(tags.STAGE, "")
            source = run.data.tags.get(tags.PRODUCED_BY) if run.data.tags.get(tags.CACHE_HIT) == "true" else None
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    client.download_artifacts(source or run.info.run_id, EXAMPLES, tmp)
                except Exception:  # an output written before examples.json existed  # noqa: BLE001
                    continue
                if stage.startswith("finetune:") and (doc := read_examples(Path(tmp))) is not None:
                    out[stage.partition(":")[2]] = doc
    return out


def metric_names(rows: list[dict[str, Any]]) -> list[str]:
    """The pretraining figures, then every downstream task's headline scores, in a stable order."""
    keys = set().union(*(r["metrics"] for r in rows))
    down = sorted(k for k in keys if k.endswith(DOWNSTREAM_SUFFIXES) and not k.startswith(("final_", "train_", "eval_"))
                  and not k.endswith("macro_f1"))
    return [k for k in PRETRAIN_METRICS if k in keys] + down
