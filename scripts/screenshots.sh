#!/usr/bin/env bash
# Regenerate docs/screenshots/ with headless Chromium (apt-get install chromium) from the
# services `make run` and `make ui` started: the newest tiny flow run in the Prefect UI, the
# MLflow comparison of the tiny parent runs, and the newest pretrain stage run's metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
read -r EXP RUNS FLOW_RUN PRE < <(MLFLOW_DISABLE_TELEMETRY=true .venv/bin/python - <<'PY'
from mlflow.tracking import MlflowClient
c = MlflowClient("sqlite:///mlflow.db")
e = c.get_experiment_by_name("pretrain")
runs = c.search_runs([e.experiment_id], "tags.`bertpipe.preset` = 'tiny'", order_by=["attributes.start_time DESC"], max_results=2)
pre = c.search_runs([e.experiment_id], "tags.`bertpipe.stage` = 'pretrain' and tags.`bertpipe.cache_hit` = 'false'",
                    order_by=["attributes.start_time DESC"], max_results=1)
print(e.experiment_id, ",".join(f'%22{r.info.run_id}%22' for r in runs), runs[-1].data.tags["prefect.flow_run_id"], pre[0].info.run_id)
PY
)
shot() {
  timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$(mktemp -d)" --window-size=1500,950 \
    --virtual-time-budget=60000 --run-all-compositor-stages-before-draw --screenshot="$1" "$2" 2>/dev/null
}
mkdir -p docs/screenshots
shot docs/screenshots/prefect-flow-run.png "http://127.0.0.1:4200/runs/flow-run/$FLOW_RUN"
shot docs/screenshots/mlflow-compare.png "http://127.0.0.1:5000/#/compare-runs?runs=%5B$RUNS%5D&experiments=%5B%22$EXP%22%5D"
shot docs/screenshots/mlflow-pretrain-run.png "http://127.0.0.1:5000/#/experiments/$EXP/runs/$PRE/model-metrics"
