# Every target works from a fresh clone: `run` depends on `install-runtime` (the product and
# what it needs to run), every other target on `install` (that and the development tools).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUNTIME_STAMP := $(VENV)/.installed-runtime
NEW_VENV := test -x $(PY) || $(PYTHON) -m venv $(VENV)
PROTOS := $(wildcard protos/cloudassist/v1/*.proto)

.PHONY: install install-runtime system-deps interop-deps console-deps console check-console run test gen check-gen lint lint-protos sizes bench migration clean

install: $(STAMP)

install-runtime: $(RUNTIME_STAMP)

# The full install holds the runtime one: it brings that stamp up to date too.
$(STAMP): pyproject.toml
	$(NEW_VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP) $(RUNTIME_STAMP)

$(RUNTIME_STAMP): pyproject.toml
	$(NEW_VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $(RUNTIME_STAMP)

run: install-runtime
	./deploy/run-local.sh

# The system packages the tests drive for real (PostgreSQL, Node.js, Chromium, tmux, systemd's
# tools): apt-get installs what is missing, or the script prints the one command to run.
system-deps:
	./deploy/system-deps.sh

test: system-deps install interop-deps
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

# mypy sees the packages under their installed names through a tree of links (.typecheck/):
# cloudassist.server is server/, cloudassist.v1 is gen/cloudassist/v1, and so on.
TYPECHECK := .typecheck
lint: install lint-protos sizes
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/cloudassist
	cp gen/cloudassist/__init__.py $(TYPECHECK)/cloudassist/
	for part in server agent client common; do ln -s ../../$$part $(TYPECHECK)/cloudassist/$$part; done
	ln -s ../../gen/cloudassist/v1 $(TYPECHECK)/cloudassist/v1
	cd $(TYPECHECK) && ../$(PY) -m mypy --config-file ../pyproject.toml \
	  -p cloudassist.server -p cloudassist.agent -p cloudassist.client -p cloudassist.common

# The sizes of modules and classes; fails when one is past its bound (450 and 250 lines).
sizes: install
	$(PY) bench/sizes.py

# The Node.js packages of the interop test, and buf, exactly as the lockfile pins them.
INTEROP := tests/interop
INTEROP_STAMP := $(INTEROP)/node_modules/.installed
BUF := $(INTEROP)/node_modules/.bin/buf

interop-deps: $(INTEROP_STAMP)

$(INTEROP_STAMP): $(INTEROP)/package-lock.json
	cd $(INTEROP) && npm ci --no-audit --no-fund
	touch $(INTEROP_STAMP)

# The web console: npm packages as the lockfile pins them; `make console` generates the
# TypeScript clients from protos/, type-checks and bundles into server/console/static/ (the
# committed assets the server serves); `make check-console` fails when a rebuild differs.
CONSOLE := server/console/web
CONSOLE_STAMP := $(CONSOLE)/node_modules/.installed

console-deps: $(CONSOLE_STAMP)

$(CONSOLE_STAMP): $(CONSOLE)/package-lock.json
	cd $(CONSOLE) && npm ci --no-audit --no-fund
	touch $(CONSOLE_STAMP)

console: console-deps
	cd $(CONSOLE) && npm run --silent build -- ../static

check-console: console-deps
	rm -rf .console-check && mkdir -p .console-check
	cd $(CONSOLE) && npm run --silent build -- ../../../.console-check
	diff -r .console-check server/console/static
	rm -rf .console-check

# The unit tests of the console's own logic (server/console/web/test/, Node's test runner);
# `make test` runs them too.
.PHONY: console-test
console-test: console-deps
	cd $(CONSOLE) && npm run --silent generate && npm run --silent test

test: console-test

# buf lint on protos/; buf breaking against the latest tag, once there is one.
lint-protos: interop-deps
	$(BUF) lint protos
	@tag=$$(git describe --tags --abbrev=0 2>/dev/null || true); \
	if [ -n "$$tag" ]; then \
	  echo "buf breaking protos against tag $$tag"; \
	  $(BUF) breaking protos --against ".git#tag=$$tag,subdir=protos"; \
	else \
	  echo "buf breaking skipped: no git tag to compare protos/ against"; \
	fi

# Every benchmark at a small size; bench/RESULTS.md has the full-size commands and figures.
bench: install
	$(PY) bench/fanout.py --agents 1,10 --runs 20
	$(PY) bench/throughput.py --mib 20 --agents 1,2
	$(PY) bench/invoke_rate.py --seconds 5 --warmup 1 --agents 20 --concurrency 16
	$(PY) bench/swarm.py --agents 500 --invocations 10 --idle 5
	$(PY) bench/vs_salt.py --agents 1,3 --runs 5

# A new migration in server/migrations/versions/: what server/store/tables.py has that the
# migrations up to head do not make (Alembic's autogenerate). Read and test it before committing.
migration: install
	@test -n "$(MSG)" || { echo 'usage: make migration MSG="what it changes"' >&2; exit 2; }
	@file=$$($(PY) -c 'import sys; from cloudassist.server.store import schema; print(schema.new_revision(sys.argv[1]))' "$(MSG)") && \
	  $(PY) -m ruff check --fix --quiet "$$file" && $(PY) -m ruff format --quiet "$$file" && \
	  echo "wrote $$file"

clean:
	rm -rf $(VENV) .gen-check .console-check .typecheck var
