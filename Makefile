# Two entry points (see README): `make run` and `make test`. Both create .venv on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
CACHE  ?= cache

.PHONY: run test bench-data clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

# The data stages on the bundled sample corpus (the full Prefect flow replaces this once it lands).
run: $(STAMP)
	$(BIN)/bertpipe ingest data/sample --out $(CACHE)/docs
	$(BIN)/bertpipe wordpiece $(CACHE)/docs --out $(CACHE)/tokenizer --vocab-size 8000
	$(BIN)/bertpipe shards $(CACHE)/docs --tokenizer $(CACHE)/tokenizer --out $(CACHE)/shards --eval-fraction 0.1

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench-data: $(STAMP)
	$(BIN)/bertpipe bench data

clean:
	rm -rf $(CACHE)
