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
ENGINE ?= docker
PODMAN_SOCKET ?= /run/dad-sandbox-podman/podman.sock
# The integration tests run against Podman (make test-podman): a subset of each feature's tests.
PODMAN_TESTS ?= tests/integration/test_engine_compat.py \
	tests/integration/test_isolated_execution.py tests/integration/test_supervisor.py \
	tests/integration/test_lifecycle.py::test_deadline_holds_with_every_supervisor_gone[runc] \
	tests/integration/test_lifecycle.py::test_runs_that_never_got_a_container_end_abandoned \
	tests/integration/test_warm_pool.py tests/integration/test_sessions.py \
	tests/integration/test_egress.py::test_allowlisted_hosts_answer_and_everything_else_is_refused \
	tests/integration/test_egress.py::test_connection_and_byte_limits_hold

.PHONY: help run test lint unit integration security security-doc engine engine-runsc image venv bench bench-compare clean \
	cluster cluster-down test-cluster test-podman test-podman-ci test-compat-docker compat-doc engine-podman

help:
	@echo "make run     - provision, build images, run examples/hello in a container"
	@echo "make test    - provision, build images, run the whole test suite"
	@echo "make engine  - make sure a Docker engine answers (installs/starts one on root Debian)"
	@echo "               RUNTIME=runsc also installs gVisor and registers it"
	@echo "               ENGINE=podman provisions rootful Podman on its own socket instead"
	@echo "make engine-runsc - make engine with RUNTIME=runsc (what make test and make security use)"
	@echo "make engine-podman - make engine with ENGINE=podman"
	@echo "make security - the red-team suite on runc and gVisor"
	@echo "make security-doc - render docs/SECURITY.md from the last red-team results"
	@echo "make test-podman - a subset of the integration tests against Podman (PODMAN_TESTS)"
	@echo "make test-podman-ci - the same without the two OOM tests (a documented limit of Podman)"
	@echo "make test-compat-docker - the same subset on Docker (runc and gVisor)"
	@echo "make compat-doc - render README's engine compatibility table from the last results"
	@echo "make image   - build the base and runner images (only what changed)"
	@echo "make venv    - the virtualenv with dad-sandbox and its test dependencies (.venv)"
	@echo "make lint    - ruff and mypy (settings in pyproject.toml); make test runs it first"
	@echo "make unit    - unit tests only (no Docker needed)"
	@echo "make integration - real-container tests (tests/integration); PYTEST_ARGS=... passes options"
	@echo "make bench   - benchmarks: print figures, write bench/results/*.json, regenerate docs/PERFORMANCE.md"
	@echo "make bench-compare - each figure of bench/results against the last committed ones (>10% worse flagged)"
	@echo "make cluster - a local 3-node Docker Swarm of dockerd-in-a-container nodes (scripts/cluster.sh)"
	@echo "make cluster-down - remove every trace of it"
	@echo "make test-cluster - cluster up, tests/cluster, cluster down (also on failure)"
	@echo "make test-remote - copy mode against a second dockerd with its own filesystem (tests/remote)"
	@echo "make clean   - remove the virtualenv, build files and ./runs"
	@echo "make help    - this list"

run: engine image
	$(TAGGED) $(PY) -m examples.hello.run

# The test suite includes the red-team suite on gVisor, so `test` provisions the runsc runtime too.
test: lint engine-runsc image
	$(TAGGED) $(PY) -m pytest --ignore=tests/cluster $(PYTEST_ARGS)

security: engine-runsc image
	$(TAGGED) $(PY) -m pytest tests/security $(PYTEST_ARGS)

security-doc:
	$(PY) scripts/security_report.py

# The engine compatibility table in README.md, from build/compat/*.xml (make test-podman writes podman.xml)
compat-doc:
	$(PY) scripts/compat_report.py

lint: venv
	$(PY) -m ruff check dad_sandbox tests bench scripts examples
	$(PY) -m mypy

unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: engine image
	$(TAGGED) $(PY) -m pytest tests/integration $(PYTEST_ARGS)

engine:
ifeq ($(ENGINE),podman)
	@$(MAKE) --no-print-directory engine-podman
else
	@RUNTIME=$(RUNTIME) bash scripts/engine.sh
endif

# Podman next to Docker (never instead of it): the runner image is built by Docker and loaded.
engine-podman:
	@$(MAKE) --no-print-directory ENGINE=docker image
	@DAD_PODMAN_SOCKET=$(PODMAN_SOCKET) bash scripts/engine-podman.sh

# For CI: the subset without the two OOM tests, which fail on Podman by a known limit (README, "Engines")
test-podman-ci: engine-podman
	$(TAGGED) DOCKER_HOST=unix://$(PODMAN_SOCKET) $(PY) -m pytest $(PODMAN_TESTS) \
		--deselect tests/integration/test_isolated_execution.py::test_out_of_memory_is_oom_killed \
		--deselect tests/integration/test_isolated_execution.py::test_child_oom_with_surviving_parent_is_oom_killed $(PYTEST_ARGS)

# The same subset on Docker (runc and gVisor variants), for the Docker columns of the table
test-compat-docker: engine-runsc image
	@mkdir -p build/compat
	$(TAGGED) $(PY) -m pytest $(subst [runc],,$(PODMAN_TESTS)) tests/integration/test_egress.py --junitxml=build/compat/docker.xml $(PYTEST_ARGS)

test-podman: engine-podman
	@mkdir -p build/compat
	$(TAGGED) DOCKER_HOST=unix://$(PODMAN_SOCKET) $(PY) -m pytest $(PODMAN_TESTS) --junitxml=build/compat/podman.xml $(PYTEST_ARGS)

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

# A local Swarm for the swarm engine's tests: one per checkout (its name comes from the folder), so
# two checkouts on one engine never share or remove each other's nodes.
CLUSTER_NAME ?= $(shell basename "$(CURDIR)" | tr -c 'a-z0-9\n' '-' | cut -c1-21)

cluster: image
	@bash scripts/cluster.sh up --name $(CLUSTER_NAME)

cluster-down:
	@bash scripts/cluster.sh down --name $(CLUSTER_NAME)

# Stand the cluster up, run tests/cluster on it, and tear it down even when a test fails.
test-cluster: image
	@bash scripts/cluster.sh up --name $(CLUSTER_NAME) && \
	$(TAGGED) DAD_CLUSTER_NAME=$(CLUSTER_NAME) $(PY) -m pytest tests/cluster $(PYTEST_ARGS); rc=$$?; \
	bash scripts/cluster.sh down --name $(CLUSTER_NAME); exit $$rc

# Copy mode against a second dockerd with a filesystem of its own (issue 17): part of `make test`
# too (tests/remote, ~30 s once the node image exists; building it takes ~100 s the first time).
.PHONY: test-remote
test-remote: image
	@mkdir -p build/compat
	$(TAGGED) $(PY) -m pytest tests/remote --junitxml=build/compat/remote.xml $(PYTEST_ARGS)
