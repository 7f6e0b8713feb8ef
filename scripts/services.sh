#!/usr/bin/env bash
# Local services for bertpipe: a Prefect server on SQLite and the process serving the
# deployments; the MLflow UI on demand. State lives in .bertpipe/ (pids, logs) and
# .prefect/ (Prefect's SQLite database). Everything binds to 127.0.0.1.
#   scripts/services.sh start|stop|status|ui
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=$ROOT/.venv/bin
STATE=$ROOT/.bertpipe
mkdir -p "$STATE"
source "$ROOT/scripts/lib.sh"
export PREFECT_HOME=$ROOT/.prefect PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true
export PREFECT_API_URL=${PREFECT_API_URL:-http://127.0.0.1:4200/api}
export PREFECT_UI_URL=${PREFECT_UI_URL:-http://127.0.0.1:4200}
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false


wait_for() {  # url, seconds
  for _ in $(seq "$2"); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "timed out waiting for $1" >&2; return 1
}

start() {
  if curl -fsS "$PREFECT_API_URL/health" >/dev/null 2>&1; then
    echo "Prefect server already running at $PREFECT_API_URL"
  else
    setsid "$BIN/prefect" server start --host 127.0.0.1 --port 4200 >"$STATE/prefect-server.log" 2>&1 &
    echo $! >"$STATE/prefect-server.pid"
    wait_for "$PREFECT_API_URL/health" 90
    echo "Prefect server: $PREFECT_UI_URL"
  fi
  if alive serve; then
    echo "deployments already served (pid $(cat "$STATE/serve.pid"))"
  else
    setsid "$BIN/python" deployments/serve.py >"$STATE/serve.log" 2>&1 &
    echo $! >"$STATE/serve.pid"
    for _ in $(seq 60); do
      "$BIN/prefect" deployment inspect pretrain/tiny >/dev/null 2>&1 && break; sleep 1
    done
    echo "serving deployments: pretrain/tiny, pretrain/base, pretrain/large (log: .bertpipe/serve.log)"
  fi
}

ui() {
  if alive mlflow-ui; then echo "MLflow UI already running: http://127.0.0.1:5000"; return; fi
  setsid "$BIN/mlflow" server --workers 1 --host 127.0.0.1 --port 5000 \
    --backend-store-uri "sqlite:///$ROOT/mlflow.db" --default-artifact-root "$ROOT/mlartifacts" \
    >"$STATE/mlflow-ui.log" 2>&1 &
  echo $! >"$STATE/mlflow-ui.pid"
  wait_for http://127.0.0.1:5000/health 90
  echo "MLflow UI: http://127.0.0.1:5000"
}

stop() {
  stop_named serve mlflow-ui prefect-server
}

status() {
  for name in prefect-server serve mlflow-ui; do
    if alive "$name"; then echo "$name: running (pid $(cat "$STATE/$name.pid"))"; else echo "$name: stopped"; fi
  done
}

"${1:-status}"
