"""``bertpipe bench tiny``: does the ``tiny`` preset learn on the sample corpus in 10 minutes?

Runs the ``tiny`` pipeline preset with ``bertpipe.pipeline.run_pipeline``, without Prefect or MLflow: ingest → WordPiece → shards (both phases) → pretraining, with the
scratch folder as ``work_dir`` (data stages already built there are reused; pretraining is
always run afresh, into ``WORK/pretrain/<fingerprint>/``). It prints the held-out curve and the three figures that say the model
learned something that carries over to unseen documents, each next to its target:

- held-out MLM loss at the end as a share of its value at step 0 (target ≤ 0.60);
- held-out MLM accuracy (target ≥ 0.25);
- held-out NSP accuracy (target ≥ 0.65; the share of random-next pairs in the held-out
  set, what always answering "random" scores, is printed beside it).

Wall and CPU seconds are reported for the pretraining alone and for the data stages, and
``loss.png`` and ``accuracy.png`` (train and held-out) are in the run's ``plots/``.
A benchmark, not a test: it asserts nothing. The last printed line is one JSON object.
"""

from __future__ import annotations

from pathlib import Path

import torch

TARGETS = {"loss_ratio": 0.60, "mlm_acc": 0.25, "nsp_acc": 0.65}


def bench_tiny(work: Path, preset: str = "tiny", overrides: dict | None = None) -> dict:
    from bertpipe.pipeline import load_pipeline_config, run_pipeline
    from bertpipe.train.curves import read_metrics

    cfg = load_pipeline_config(preset, {**(overrides or {}), "work_dir": str(work)}, source="bench tiny")
    # pretraining is timed afresh, never served from cache; the data stages are reused when built
    outcome = run_pipeline(cfg, until="pretrain", fresh={"pretrain"})  # no fine-tuning
    done, timings = outcome.stages, outcome.timings
    data_wall = sum(t.wall_s for name, t in timings.items() if name != "pretrain")
    data_cpu = sum(t.cpu_s for name, t in timings.items() if name != "pretrain")
    train_wall, train_cpu = timings["pretrain"].wall_s, timings["pretrain"].cpu_s
    docs, tok, shards, phase2 = done["ingest"], done["wordpiece"], done["shards"], done.get("phase2")
    result = done["pretrain"]
    run = result.path

    evals = read_metrics(run / "metrics.jsonl")["eval"]
    first, last = evals[0], evals[-1]
    held_out_random = _random_next_share(phase2.manifest if phase2 else shards.manifest)
    figures = {
        "loss_ratio": last["mlm_loss"] / first["mlm_loss"],
        "mlm_acc": last["mlm_acc"],
        "nsp_acc": last["nsp_acc"],
    }
    print(f"{preset} preset on {', '.join(cfg.corpus_paths())}: {docs.manifest['counts']['documents']} documents, "
          f"vocabulary {tok.manifest['counts']['vocab_size']}, {cfg.pretrain.steps} steps, "
          f"{torch.get_num_threads()} threads")
    print(f"data stages: {data_wall:.0f} s wall, {data_cpu:.0f} CPU-s; pretraining: {train_wall:.0f} s wall "
          f"({train_wall / 60:.1f} min), {train_cpu:.0f} CPU-s")
    print("held-out curve:   step  phase  mlm_loss  mlm_acc  nsp_acc")
    for r in evals:
        nsp = f"{r['nsp_acc']:.3f}" if r.get("nsp_acc") is not None else "   - "
        print(f"                {r['step']:6d}  {r['phase']:5d}  {r['mlm_loss']:8.3f}  {r['mlm_acc']:7.3f}  {nsp}")
    print(f"held-out MLM loss {last['mlm_loss']:.3f} = {figures['loss_ratio']:.3f} of its start {first['mlm_loss']:.3f} "
          f"(target <= {TARGETS['loss_ratio']})")
    print(f"held-out MLM accuracy {figures['mlm_acc']:.3f} (target >= {TARGETS['mlm_acc']})")
    print(f"held-out NSP accuracy {figures['nsp_acc']:.3f} (target >= {TARGETS['nsp_acc']}; "
          f"always answering 'random' scores {held_out_random:.3f})")
    met = {"loss_ratio": figures["loss_ratio"] <= TARGETS["loss_ratio"], "mlm_acc": figures["mlm_acc"] >= TARGETS["mlm_acc"],
           "nsp_acc": figures["nsp_acc"] >= TARGETS["nsp_acc"], "within_10_min": train_wall <= 600}
    print("targets met: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in met.items()))
    print(f"curves: {', '.join(str(result.file(p)) for p in result.manifest['plots'])}; model: {result.file('final')}")
    return {"preset": preset, **{k: round(v, 4) for k, v in figures.items()}, "start_mlm_loss": round(first["mlm_loss"], 4),
            "final_mlm_loss": round(last["mlm_loss"], 4), "held_out_random_next": round(held_out_random, 4),
            "pretrain_wall_s": round(train_wall, 1), "pretrain_cpu_s": round(train_cpu, 1), "data_wall_s": round(data_wall, 1),
            "data_cpu_s": round(data_cpu, 1), "steps": cfg.pretrain.steps, "met": met,
            "curve": [{k: r.get(k) for k in ("step", "phase", "mlm_loss", "mlm_acc", "nsp_acc")} for r in evals]}


def _random_next_share(manifest: dict) -> float:
    held = [s for s in manifest["shards"] if s["split"] == "eval"]
    return sum(s["random_next"] for s in held) / max(1, sum(s["rows"] for s in held))
