"""``bertpipe plan`` and ``bertpipe reproduce``: know before a pipeline run, re-create one after.

Kept out of ``cli/main.py`` (one module per stage command there) and registered by
``add_commands``. ``plan`` prints which stages of a preset (with overrides) would run, why and
for about how long, without running anything; ``reproduce`` re-runs a tracked pipeline run
from its MLflow run id into a fresh work dir and prints recorded and reproduced figures side by
side, exiting 1 when anything differs.
"""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_plan(args: argparse.Namespace) -> None:
    from bertpipe.core.config import ConfigError
    from bertpipe.experiments.plan import explain_plan, render_text
    from bertpipe.pipeline import load_pipeline_config
    from bertpipe.tracking import default_tracking_uri

    overrides = json.loads(args.overrides) if args.overrides else {}
    if args.work_dir:
        overrides["work_dir"] = args.work_dir
    cfg = load_pipeline_config(args.preset, overrides)
    if missing := cfg.missing_inputs():  # the run would stop on them before its first stage
        raise ConfigError("\n".join(missing))
    shown = explain_plan(cfg, args.tracking_uri or cfg.tracking_uri or default_tracking_uri())
    print(shown.model_dump_json(indent=2) if args.json else render_text(shown, f"plan {args.preset}"))


def _cmd_reproduce(args: argparse.Namespace) -> None:
    from bertpipe.experiments.reproduce import render_text, reproduce

    done = reproduce(args.run_id, args.tracking_uri, args.work_dir, force=args.force, progress=True,
                     log=lambda line: print(line, file=sys.stderr, flush=True))
    print(done.model_dump_json(indent=2) if args.json else render_text(done))
    if not done.identical():
        raise SystemExit(1)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="which stages a pipeline run would compute, why (vs the nearest cached output) and how long")
    p.add_argument("preset", help="pipeline preset (bertpipe/experiments/presets or $BERTPIPE_PRESETS)")
    p.add_argument("--overrides", help="JSON deep-merged into the preset, e.g. '{\"shards\": {\"masking\": {\"masked_lm_prob\": 0.4}}}'")
    p.add_argument("--work-dir", help="the cache to plan against (default: the preset's work_dir)")
    p.add_argument("--tracking-uri", help="MLflow store with past build times (default: the config's, else "
                   "$MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the base dir; never created)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("reproduce", help="re-run a tracked pipeline run from its MLflow run id in a fresh work dir; compare")
    p.add_argument("run_id", help="the pipeline run's MLflow run id (a stage run's id selects its pipeline run)")
    p.add_argument("--tracking-uri", help="MLflow store holding the run; the reproduction is logged there too "
                   "(default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the base dir)")
    p.add_argument("--work-dir", help="new or empty folder for every stage's output (default: cache/reproduce/<run>-<time>)")
    p.add_argument("--force", action="store_true", help="run even when the rebuilt config plans other fingerprints")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.set_defaults(func=_cmd_reproduce)
