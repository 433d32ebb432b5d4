# pyproxy: `make run` starts the lab and the proxy; `make test` is what CI runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LAB_DIR ?= lab
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian packages the lab and the tests need; installed only when missing.
APT_PACKAGES := mariadb-server mariadb-client python3-venv sysbench prometheus docker-compose \
	libmariadb-java libdbd-mariadb-perl php-cli php-mysql
# Tools that may already come from elsewhere (e.g. Node from NodeSource): command -> package.
APT_COMMANDS := npm:npm javac:default-jdk-headless
NODE_DIR := tests/integration/clients/node

.PHONY: deps venv node-deps test lint typecheck unit unit-pure integration run lab-up lab-down lab-status clean

deps:
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	for cp in $(APT_COMMANDS); do command -v $${cp%%:*} >/dev/null || missing="$$missing $${cp#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# Two steps: the dependencies (mypy among them) with pyproxy in pure Python, then pyproxy again
# with the venv's mypy compiling the hot modules (proxy/compiled.py) into .so files beside the
# .py files. Editing any .py file of the package makes `make venv` (and so run/test) rebuild
# them: mypyc copies other modules' constants into each one. Until then the stale .so files are
# ignored (pure Python, with a warning). PYPROXY_PURE=1 at run time forces pure Python; no C
# compiler: pure Python too.
PACKAGE_SOURCES := $(wildcard proxy/*.py proxy/*/*.py)

$(BIN)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	PYPROXY_PURE=1 $(BIN)/pip install -q -e '.[dev]'
	touch $@

$(BIN)/.compiled: $(BIN)/.installed $(PACKAGE_SOURCES)
	$(BIN)/pip install -q --no-build-isolation --no-deps -e .
	$(BIN)/pyproxy --version
	touch $@

venv: $(BIN)/.compiled

# Node's mysql2 driver for the client tests, from the npm registry.
$(NODE_DIR)/node_modules/.installed: $(NODE_DIR)/package.json
	cd $(NODE_DIR) && npm install --no-audit --no-fund --silent
	touch $@

node-deps: $(NODE_DIR)/node_modules/.installed

lint: venv
	$(BIN)/ruff check proxy tests $(wildcard bench)

typecheck: venv
	$(BIN)/mypy proxy

unit: venv
	$(BIN)/python -m pytest tests/unit -q

# The unit tier on the .py files even where compiled modules exist (CI runs both forms).
unit-pure: venv
	PYPROXY_PURE=1 $(BIN)/python -m pytest tests/unit -q

integration: deps venv node-deps
	$(BIN)/python -m pytest tests/integration -q

test: deps venv node-deps lint typecheck
	$(BIN)/python -m pytest tests -q -ra --durations=15

lab-up: deps venv
	$(BIN)/pyproxy lab up --dir $(LAB_DIR)

lab-down: venv
	$(BIN)/pyproxy lab down --dir $(LAB_DIR)

lab-status: venv
	$(BIN)/pyproxy lab status --dir $(LAB_DIR)

# The lab (2 masters + 1 replica) and pyproxy on 6033 in the foreground; Ctrl-C stops both.
run: deps venv
	$(BIN)/pyproxy lab run --dir $(LAB_DIR)

clean:
	-$(BIN)/pyproxy lab destroy --dir $(LAB_DIR)
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache *.egg-info build *__mypyc*.so
	find proxy -name '*.so' -delete

# sysbench straight to the writer vs through pyproxy (pairs, their order changing), 5,000 idle
# clients and the classifier microbenchmark; prints the table and writes
# bench/results/latest.{json,md}.
# BENCH_TIME / BENCH_PAIRS / BENCH_IDLE tune it; BENCH_ARGS=--quick for a 1-minute dev run.
# Only what the benchmark needs from apt (not the client libraries of the test suite).
BENCH_APT_PACKAGES := mariadb-server mariadb-client python3-venv sysbench haproxy

.PHONY: bench bench-deps
bench-deps:
	@$(MAKE) --no-print-directory deps APT_PACKAGES="$(BENCH_APT_PACKAGES)" APT_COMMANDS=

bench: bench-deps venv
	$(BIN)/python -m bench $(BENCH_ARGS)

# CRUD, the load generator with its replication check, verify and a failover drill on a fresh
# lab, ending with a short report (about a minute).
.PHONY: demo
demo: deps venv
	$(BIN)/pyproxy demo
