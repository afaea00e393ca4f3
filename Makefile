# dad-sandbox: `make run` and `make test` work from a fresh clone on a bare root Debian machine.
# They provision what is missing (Docker engine, virtualenv, images) and touch nothing that exists.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# the runner image built from this checkout's sources (images/build.sh writes its tag)
TAGGED = DAD_SANDBOX_RUNNER_TAG=$$(cat build/runner-tag 2>/dev/null)
RUNTIME ?= runc

.PHONY: help run test lint unit integration security security-doc engine engine-runsc image venv bench bench-compare clean

help:
	@echo "make run     - provision, build images, run examples/hello in a container"
	@echo "make test    - provision, build images, run the whole test suite"
	@echo "make engine  - make sure a Docker engine answers (installs/starts one on root Debian)"
	@echo "               RUNTIME=runsc also installs gVisor and registers it"
	@echo "make security - the red-team suite on runc and gVisor; make security-doc renders docs/SECURITY.md"
	@echo "make image   - build the base and runner images (only what changed)"
	@echo "make lint    - ruff and mypy (settings in pyproject.toml); make test runs it first"
	@echo "make unit    - unit tests only (no Docker needed)"
	@echo "make bench   - benchmarks: print figures, write bench/results/*.json, regenerate docs/PERFORMANCE.md"
	@echo "make bench-compare - each figure of bench/results against the last committed ones (>10% worse flagged)"
	@echo "make clean   - remove the virtualenv, build files and ./runs"

run: engine image
	$(TAGGED) $(PY) -m examples.hello.run

# The test suite includes the red-team suite on gVisor, so `test` provisions the runsc runtime too.
test: lint engine-runsc image
	$(TAGGED) $(PY) -m pytest $(PYTEST_ARGS)

security: engine-runsc image
	$(TAGGED) $(PY) -m pytest tests/security $(PYTEST_ARGS)

security-doc:
	$(PY) scripts/security_report.py

lint: venv
	$(PY) -m ruff check dad_sandbox tests bench scripts examples
	$(PY) -m mypy

unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: engine image
	$(TAGGED) $(PY) -m pytest tests/integration $(PYTEST_ARGS)

engine:
	@RUNTIME=$(RUNTIME) bash scripts/engine.sh

engine-runsc:
	@RUNTIME=runsc bash scripts/engine.sh

image: venv engine
	@bash images/build.sh

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { echo "make: cannot create a virtualenv with $(PYTHON); on Debian: apt-get install python3-venv" >&2; exit 1; }
	@echo "venv: installing dad-sandbox and its test dependencies into $(VENV)"
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[test]' 2> >(grep -v "is ignored: it is neither" >&2)
	@touch $(STAMP)

bench: engine image
	$(TAGGED) $(PY) bench/perf_bench.py
	$(TAGGED) $(PY) bench/supervisor_bench.py
	$(TAGGED) $(PY) bench/hostile_bench.py
	$(TAGGED) $(PY) bench/runtime_bench.py
	$(PY) bench/render_doc.py
	$(PY) bench/compare.py

bench-compare: venv
	$(PY) bench/compare.py

clean:
	rm -rf $(VENV) build runs .pytest_cache
