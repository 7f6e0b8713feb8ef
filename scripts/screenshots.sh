#!/usr/bin/env bash
# Regenerate docs/screenshots/ with headless Chromium (apt-get install chromium) from the services
# `make run` and `make ui` started, after a small masking-rate sweep for the comparison view:
#   .venv/bin/python -m flows.sweep masking-rate --seeds 1 \
#       --overrides '{"pretrain": {"steps": 300, "eval_every": 100}, "evaluate": []}'
# Shots: pretrain/tiny's custom-run form (filled with the preset), the newest tiny flow run with
# its progress artifact, MLflow's runs table (Dataset column), the registered model, and MLflow's
# comparison of the sweep's runs (masking rate against held-out MLM accuracy).
set -euo pipefail
cd "$(dirname "$0")/.."
read -r DEPLOYMENT FLOW_RUN < <(.venv/bin/python - <<'PY'
import json, urllib.request
api = "http://127.0.0.1:4200/api"
def call(path, body=None):
    req = urllib.request.Request(api + path, None if body is None else json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req).read())
dep = call("/deployments/name/pretrain/tiny")
runs = call("/flow_runs/filter", {"deployments": {"id": {"any_": [dep["id"]]}}, "sort": "START_TIME_DESC", "limit": 1})
print(dep["id"], runs[0]["id"])
PY
)
read -r EXP REGISTERED SWEEP_EXP SWEEP_RUNS < <(MLFLOW_DISABLE_TELEMETRY=true .venv/bin/python - <<'PY'
from mlflow.tracking import MlflowClient
c = MlflowClient("sqlite:///mlflow.db")
exp = c.get_experiment_by_name("pretrain")
sweep = c.get_experiment_by_name("sweep-masking-rate")
top = c.search_runs([sweep.experiment_id], "tags.`bertpipe.sweep` = 'true'", order_by=["attributes.start_time DESC"], max_results=1)
runs = c.search_runs([sweep.experiment_id], f"tags.`mlflow.parentRunId` = '{top[0].info.run_id}'")  # its variants x seeds
print(exp.experiment_id, "bertpipe-pretrain", sweep.experiment_id, ",".join(f"%22{r.info.run_id}%22" for r in runs))
PY
)
# playwright-core drives Debian's chromium, so that a shot can show what a user sees after a click
PW=${PW:-/tmp/bertpipe-playwright}
test -d "$PW/node_modules/playwright-core" || (mkdir -p "$PW" && cd "$PW" && npm install --silent playwright-core@1)
shot() { NODE_PATH="$PW/node_modules" timeout 180 node scripts/ui-shot.js "$2" "$1" "${3:-1500x950}" "${@:4}"; }
mkdir -p docs/screenshots
rm -f docs/screenshots/mlflow-compare.png docs/screenshots/mlflow-pretrain-run.png  # older views, replaced below
shot docs/screenshots/prefect-run-form.png "http://127.0.0.1:4200/deployments/deployment/$DEPLOYMENT/run" 1500x1400
shot docs/screenshots/prefect-run-form-masking.png "http://127.0.0.1:4200/deployments/deployment/$DEPLOYMENT/run" 1500x1400 \
  "scroll:Masking (Optional)"
shot docs/screenshots/prefect-flow-run.png "http://127.0.0.1:4200/runs/flow-run/$FLOW_RUN" 1500x950 click:Artifacts
shot docs/screenshots/mlflow-runs-datasets.png "http://127.0.0.1:5000/#/experiments/$EXP/runs" 1800x950 \
  'css:button[data-component-id*="runnamecellrenderer"]'  # expand the newest flow run: its stage runs and their datasets
shot docs/screenshots/mlflow-registered-model.png "http://127.0.0.1:5000/#/models/$REGISTERED"
shot docs/screenshots/mlflow-compare-sweep.png \
  "http://127.0.0.1:5000/#/compare-runs?runs=%5B$SWEEP_RUNS%5D&experiments=%5B%22$SWEEP_EXP%22%5D" 1500x1100 metric:final_mlm_acc
ls -la docs/screenshots
