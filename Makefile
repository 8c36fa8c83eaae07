# Every target bootstraps what it needs; `make test` and `make demo` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAM_VENV := .venv-sam
SAM_STAMP := $(SAM_VENV)/.installed
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
NODE_STAMP := node_modules/.installed
CHROMIUM := /usr/bin/chromium
# Lazy, so `id` only runs when an apt-get install does.
SUDO = $(if $(filter 0,$(shell id -u)),,sudo)
export PYTHONPATH := $(CURDIR)/layers/common:$(CURDIR)/local:$(CURDIR)/cli:$(CURDIR)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help demo test test-fast lint build check-build bench soak clean chromium

help:
	@echo "make demo   - run one prompt through the whole pipeline locally (moto + simulator), print its gallery page"
	@echo "make test   - the whole test suite"
	@echo "make test-fast - the unit tier only (business rules against in-memory fakes)"
	@echo "make lint   - ruff, mypy, sam validate --lint, cfn-lint, asl-validator, checkov"
	@echo "make build  - sam build"
	@echo "make check-build - the built layer: <= 5 MB zipped, no boto3/botocore, handlers import"
	@echo "make bench  - benchmarks (BENCH lines, bench-results.json)"
	@echo "make soak   - 500 jobs through injected faults"
	@echo "make chromium - install Debian's chromium (headless browser for tests/browser)"

$(STAMP): requirements-dev.txt layers/common/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	# The package itself with the extra kling_local needs (moto, PyYAML), pins already met above.
	$(BIN)/pip install -q -e '.[local]'
	touch $@

$(SAM_STAMP): requirements-sam.txt
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install -q -r requirements-sam.txt
	touch $@

$(CHECKOV_STAMP): requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q -r requirements-checkov.txt
	touch $@

# The browser tests drive the system Chromium; installed once, skipped when already there.
chromium: $(CHROMIUM)

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "install Chromium at $(CHROMIUM) with your package manager" >&2; exit 1; }
	$(SUDO) apt-get update -q
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium

$(NODE_STAMP): package.json
	npm install --no-audit --no-fund --silent
	touch $@

demo: $(STAMP)
	$(BIN)/python -m kling_local.runner --demo --out demo-out

test: $(STAMP)
	@start=$$(date +%s); $(BIN)/python -m pytest; status=$$?; \
	echo "test suite wall time: $$(( $$(date +%s) - start )) s"; exit $$status

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q

lint: $(STAMP) $(SAM_STAMP) $(CHECKOV_STAMP) $(NODE_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy layers/common/kling_pipeline local/kling_local cli/kling_cli functions bench tests
	$(SAM_VENV)/bin/sam validate --lint --template template.yaml
	$(SAM_VENV)/bin/cfn-lint template.yaml
	for f in statemachine/*.asl.json; do npx --no-install asl-validator --json-path "$$f" || exit 1; done
	$(CHECKOV_VENV)/bin/checkov --quiet --compact --skip-download --framework cloudformation -f template.yaml

# sam build needs a python3.13 interpreter; under pyenv, expose an installed 3.13.
build: $(SAM_STAMP)
	@if ! python3.13 --version >/dev/null 2>&1 && command -v pyenv >/dev/null 2>&1; then \
	  v313=$$(pyenv versions --bare | grep -E '^3\.13' | tail -n 1); \
	  export PYENV_VERSION="$$(pyenv version-name):$$v313"; \
	fi; \
	$(SAM_VENV)/bin/sam build --template template.yaml

# What `make build` produced, checked as CI needs it: fails (not skips) when nothing was built.
check-build: $(STAMP)
	REQUIRE_LAYER_BUILD=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/unit/test_template_layer.py

bench: $(STAMP)
	$(BIN)/python -m bench

soak: $(STAMP)
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) $(SAM_VENV) $(CHECKOV_VENV) node_modules .aws-sam bench-results.json demo-out
