# Every target works from a fresh clone: each depends on `install`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTOS := $(wildcard protos/cloudassist/v1/*.proto)

.PHONY: install run test gen check-gen lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	./deploy/run-local.sh

test: install
	$(PY) -m pytest
	CLOUDASSIST_TEST_DB=postgres $(PY) -m pytest tests/integration \
	  --ignore tests/integration/test_cluster.py

# Regenerate the Python stubs and their .pyi type stubs from protos/.
gen: install
	./deploy/gen-protos.sh $(PY) gen

# Fail when gen/ is not exactly what the pinned generator makes from protos/.
check-gen: install
	rm -rf .gen-check && mkdir -p .gen-check
	./deploy/gen-protos.sh $(PY) .gen-check
	diff -r -x __pycache__ .gen-check/cloudassist gen/cloudassist
	rm -rf .gen-check

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy server agent client

bench: install
	$(PY) bench/fanout.py --runs 20 --agents 1,10,50

clean:
	rm -rf $(VENV) .gen-check var
