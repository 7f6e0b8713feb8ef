# Two entry points (see README): `make run` and `make test`. Both create .venv on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# the library (with its dev extra) and the benchmarks (benchmarks/: their own distribution, not in bertpipe's wheel)
PYPROJECTS := pyproject.toml benchmarks/pyproject.toml
STAMP  := $(VENV)/.installed-$(shell cat $(PYPROJECTS) | cksum | cut -d' ' -f1)
CACHE  ?= cache

export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_UI_URL := http://127.0.0.1:4200

.PHONY: run test ui stop team team-stop bench-data bench-train clean

$(STAMP): $(PYPROJECTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]' -e ./benchmarks
	rm -f $(VENV)/.installed-* && touch $(STAMP)

# Local Prefect server (SQLite) + served deployments, then pretrain/tiny on the sample corpus.
run: $(STAMP)
	scripts/services.sh start
	$(BIN)/prefect deployment run pretrain/tiny --watch
	@echo
	@echo "Prefect UI:  http://127.0.0.1:4200 (flow runs of 'pretrain')"
	@echo "MLflow UI:   make ui   -> http://127.0.0.1:5000 (experiment 'pretrain')"
	@echo "Stop all:    make stop"

ui: $(STAMP)
	scripts/services.sh ui

stop:
	scripts/services.sh stop

# Prefect server + MLflow tracking server on PostgreSQL, for a team (scripts/team.sh: settings)
team: $(STAMP)
	scripts/team.sh start

team-stop:
	scripts/team.sh stop

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench-data: $(STAMP)
	$(BIN)/bertpipe bench data

bench-train: $(STAMP)
	$(BIN)/bertpipe bench train

clean:
	rm -rf $(CACHE)
