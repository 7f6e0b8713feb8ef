#!/usr/bin/env bash
# Team services on PostgreSQL: a Prefect server and an MLflow tracking server whose stores are
# databases of one PostgreSQL server, MLflow's artifacts on a path every machine sees.
#   scripts/team.sh start|stop|status          (make team / make team-stop)
# Settings (environment):
#   BERTPIPE_PG         an existing PostgreSQL, postgresql://USER@HOST:PORT (databases `prefect` and
#                       `mlflow` must exist); default: a private cluster of Debian's postgresql in
#                       .bertpipe/postgres on 127.0.0.1:5433, created on first start
#   BERTPIPE_ARTIFACTS  MLflow's artifact store (default: ./mlartifacts; for a team, shared storage)
#   BERTPIPE_HOST       the address both servers listen on (default 127.0.0.1; another machine's
#                       workers need a reachable one, behind your firewall or VPN)
#   BERTPIPE_PREFECT_PORT, BERTPIPE_MLFLOW_PORT, BERTPIPE_PG_PORT   4200, 5000 and 5433
#   BERTPIPE_POOL       the work pool the pretrain deployments go to (default bertpipe); the sweeps
#                       and finetune are served by this machine (deployments/serve.py --pool)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=$ROOT/.venv/bin
STATE=$ROOT/.bertpipe
mkdir -p "$STATE"
source "$ROOT/scripts/lib.sh"
HOST=${BERTPIPE_HOST:-127.0.0.1}
ART=${BERTPIPE_ARTIFACTS:-$ROOT/mlartifacts}
PGDATA=$STATE/postgres
PP=${BERTPIPE_PREFECT_PORT:-4200} MP=${BERTPIPE_MLFLOW_PORT:-5000} GP=${BERTPIPE_PG_PORT:-5433}
PG=${BERTPIPE_PG:-postgresql://postgres@127.0.0.1:$GP}
POOL=${BERTPIPE_POOL:-bertpipe}
export PREFECT_HOME=$ROOT/.prefect PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false

wait_for() { for _ in $(seq "$2"); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 1; done; echo "timed out: $1" >&2; return 1; }
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }  # postgres refuses root

own_postgres() {  # the private cluster (only without BERTPIPE_PG)
  local bin; bin=$(pg_bin)
  [ -n "$bin" ] || { echo "PostgreSQL is not installed: apt-get install postgresql (or set BERTPIPE_PG)" >&2; exit 1; }
  if [ ! -d "$PGDATA" ]; then
    mkdir -p "$PGDATA"
    [ "$(id -u)" != 0 ] || chown postgres "$PGDATA"
    as_pg "$bin/initdb" -D "$PGDATA" -U postgres --auth=trust >"$STATE/postgres-init.log"
  fi
  if ! as_pg "$bin/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
    as_pg "$bin/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w -o "-p $GP -k $PGDATA -c listen_addresses=$HOST" start >/dev/null
  fi
  for db in prefect mlflow; do
    as_pg "$bin/createdb" -h 127.0.0.1 -p $GP -U postgres "$db" 2>/dev/null || true  # exists already
  done
  echo "PostgreSQL: $PG (data: $PGDATA)"
}

start() {
  [ -n "${BERTPIPE_PG:-}" ] || own_postgres
  if alive team-prefect; then echo "Prefect server already running"; else
    PREFECT_API_DATABASE_CONNECTION_URL="${PG/postgresql:/postgresql+asyncpg:}/prefect" \
      setsid "$BIN/prefect" server start --host "$HOST" --port "$PP" >"$STATE/team-prefect.log" 2>&1 &
    echo $! >"$STATE/team-prefect.pid"
    wait_for "http://$HOST:$PP/api/health" 120
  fi
  if alive team-mlflow; then echo "MLflow server already running"; else
    mkdir -p "$ART"
    setsid "$BIN/mlflow" server --backend-store-uri "$PG/mlflow" --artifacts-destination "$ART" \
      --host "$HOST" --port "$MP" --workers 1 >"$STATE/team-mlflow.log" 2>&1 &
    echo $! >"$STATE/team-mlflow.pid"
    wait_for "http://$HOST:$MP/health" 120
  fi
  if alive team-serve; then echo "deployments already served"; else
    PREFECT_API_URL=http://$HOST:$PP/api MLFLOW_TRACKING_URI=http://$HOST:$MP \
      setsid "$BIN/python" deployments/serve.py --pool "$POOL" >"$STATE/team-serve.log" 2>&1 &
    echo $! >"$STATE/team-serve.pid"
    for _ in $(seq 120); do grep -q "on work pool" "$STATE/team-serve.log" && break; sleep 1; done
  fi
  echo "Prefect server: http://$HOST:$PP (store: $PG/prefect)"
  echo "MLflow server:  http://$HOST:$MP (store: $PG/mlflow, artifacts: $ART)"
  grep -h "on work pool" "$STATE/team-serve.log" || echo "deployments: not declared yet, see $STATE/team-serve.log"
  echo "on every machine: export PREFECT_API_URL=http://$HOST:$PP/api MLFLOW_TRACKING_URI=http://$HOST:$MP"
  echo "then one worker per device: CUDA_VISIBLE_DEVICES=N .venv/bin/prefect worker start --pool $POOL --limit 1 --name gpuN"
}

stop() {
  stop_named team-serve team-mlflow team-prefect
  if [ -z "${BERTPIPE_PG:-}" ] && [ -d "$PGDATA" ]; then
    as_pg "$(pg_bin)/pg_ctl" -D "$PGDATA" -m fast stop >/dev/null 2>&1 && echo "stopped PostgreSQL" || true
  fi
}

status() {
  for name in team-prefect team-mlflow team-serve; do
    if alive "$name"; then echo "$name: running (pid $(cat "$STATE/$name.pid"))"; else echo "$name: stopped"; fi
  done
}

"${1:-status}"
