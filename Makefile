# Everything a user or CI runs. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PACKAGES := mle de ds deployment eda testkit orchestration monitoring
UV_VERSION := 0.13.9
UV_DIR := build/uv-$(UV_VERSION)
UV := $(UV_DIR)/bin/uv
COMPOSE ?= docker compose
BENCH_DIR ?= bench/data
# make demo: a project-local cluster, models and API, all under .demo/ (make stop ends them).
DEMO_DIR ?= .demo
DEMO_DB_PORT ?= 5433
DEMO_API_PORT ?= 5000
DEMO_ENV = DB_HOSTNAME=127.0.0.1 DB_PORT=$(DEMO_DB_PORT) MODEL_DIR=$(DEMO_DIR)/models RAW_DATA_DIR=$(DEMO_DIR)/raw

.DEFAULT_GOAL := help
.PHONY: help install lock lock-check test lint format docs etl train monitor drift-demo models promote rollback example eda demo stop compose-test bench bench-etl bench-model bench-scoring bench-serve bench-log bench-orchestration bench-ood bench-drift up down logs clean api-key revoke-key

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)

# --compile-bytecode, as pip did: where PYTHONDONTWRITEBYTECODE is set, imports would compile every time.
install: $(PY) $(UV) ## create .venv with the locked versions (uv.lock) of every package (editable) and the test tools
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --all-packages --compile-bytecode --python $(PY)
	@$(UV) lock --check --quiet 2>/dev/null || echo "install: WARNING: uv.lock is out of date with a pyproject.toml; run make lock"

# uv (pinned; the root pyproject.toml requires exactly this version) lives outside the venv it manages;
# the venv's pip fetches it (Debian's python3 has no pip of its own).
$(UV): | $(PY)
	PIP_ROOT_USER_ACTION=ignore $(PY) -m pip install --quiet --disable-pip-version-check --target $(UV_DIR) uv==$(UV_VERSION)

lock: $(UV) ## re-lock uv.lock after a pyproject.toml changed (one upgrade: ARGS="--upgrade-package X")
	$(UV) lock $(ARGS)

lock-check: $(UV) ## fail when uv.lock does not match the pyproject.toml files (CI)
	$(UV) lock --check

# make test runs the suite in the local venv when this machine has what it needs (TEST_MISSING is
# empty), else in the docker test image (the root Dockerfile's target `test`) when a Docker engine
# answers, else fails saying what is missing. TEST_IN=local or TEST_IN=docker forces the choice.
TEST_IN ?=
TEST_IMAGE := companydata-test
# What the suite needs here, printed as a list: empty when everything is present.
TEST_MISSING = m=; \
	{ ls /usr/lib/postgresql/*/bin/initdb || command -v initdb || test -x "$$PG_BINDIR/initdb"; } >/dev/null 2>&1 || m="$$m PostgreSQL-15-server(initdb)"; \
	{ command -v chromium || command -v chromium-browser; } >/dev/null 2>&1 || m="$$m chromium"; \
	command -v pdftotext >/dev/null 2>&1 || m="$$m pdftotext(poppler-utils)"; \
	{ ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null; } | grep -q libpangoft2-1.0 || m="$$m Pango(libpangoft2-1.0-0)"; \
	{ command -v nginx || test -x /usr/sbin/nginx; } >/dev/null 2>&1 || m="$$m nginx"; \
	test -x $(VENV)/bin/pytest || m="$$m venv($(VENV),make-install)"; \
	m=$${m\# }
.PHONY: test-local test-docker

test: ## the whole test suite: in the local venv if this machine has its packages, else in Docker (TEST_IN=local|docker)
	@$(TEST_MISSING); mode="$(TEST_IN)"; \
	if [ -z "$$mode" ]; then \
	  if [ -z "$$m" ]; then mode=local; \
	  elif docker info >/dev/null 2>&1; then mode=docker; \
	  else \
	    echo "make test: cannot run: missing here: $$m; and no Docker engine answers (docker info)." >&2; \
	    echo "  Either install them and the venv (Debian/Ubuntu, as root: apt-get install postgresql-15 chromium" >&2; \
	    echo "    poppler-utils libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core nginx; then make install)," >&2; \
	    echo "  or start Docker: make test then runs the suite in the docker test image." >&2; \
	    exit 1; \
	  fi; \
	fi; \
	case "$$mode" in \
	  local) echo "make test: running in the local venv$${m:+ (TEST_IN=local; missing here: $$m)}"; \
	         exec $(MAKE) --no-print-directory test-local ;; \
	  docker) if [ -n "$$m" ]; then why="no local $$m"; else why="TEST_IN=docker"; fi; \
	         echo "make test: running in the docker test image ($$why)"; \
	         exec $(MAKE) --no-print-directory test-docker ;; \
	  *) echo "make test: TEST_IN must be local or docker, not '$$mode'" >&2; exit 2 ;; \
	esac

test-local: ## every package's tests in the local venv, against a real PostgreSQL that the tests start themselves
	@rm -rf build/test-results && mkdir -p build/test-results; status=0; \
	for p in $(PACKAGES); do \
	  echo "== $$p"; \
	  (cd $$p && $(CURDIR)/$(PY) -m pytest --import-mode=importlib --timeout=600 -q \
	    --junitxml=$(CURDIR)/build/test-results/$$p.xml tests) || status=1; \
	done; \
	$(PY) .ci/test_summary.py build/test-results; \
	exit $$status

# The image holds the working tree as it is now (rebuilt when anything changed; the system packages
# and the locked dependencies stay cached). The suite runs as a non-root user (PostgreSQL refuses
# root); its JUnit results are copied back to build/test-results.
test-docker: ## the same suite inside the docker test image: needs only Docker
	@docker info >/dev/null 2>&1 || { echo "make test-docker: no Docker engine answers (docker info)" >&2; exit 1; }
	$(COMPOSE) --profile test build test
	@rm -rf build/test-results && mkdir -p build/test-results; \
	name=companydata-test-$$$$; trap 'docker rm -f $$name >/dev/null 2>&1' EXIT; \
	docker run --name $$name --init --shm-size=1g $(TEST_IMAGE) make --no-print-directory test-local; status=$$?; \
	docker cp $$name:/src/build/test-results/. build/test-results/ || status=1; \
	exit $$status

lint: ## ruff (lint, format), mypy --strict on every package, import-linter (the layers)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: ## ruff: fix what can be fixed and format
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

docs: ## build the documentation site (mkdocs, strict: any warning fails) into build/site
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir build/site

etl: ## run the whole ETL inside the running compose stack
	$(COMPOSE) run --rm etl companydata-etl etl

train: ## train a candidate in the running stack; it becomes champion only if it passes (ARGS="--max-iter 200 --no-promote")
	$(COMPOSE) run --rm -e USER=$${USER:-unknown} model-training companydata-train $(ARGS)

# The period defaults to yesterday (UTC), the day the 05:00 schedule reports on.
monitor: ## drift report of a period in the running stack (default yesterday; ARGS="--since 2026-03-01 --until 2026-03-07")
	@args='$(ARGS)'; \
	if [ -z "$$args" ]; then \
	  day=$$($(PYTHON) -c 'import datetime as d; print(d.datetime.now(d.timezone.utc).date() - d.timedelta(days=1))'); \
	  args="--since $$day --until $$day"; \
	fi; \
	echo "$(COMPOSE) run --rm --no-deps dagster-daemon companydata-monitor report $$args"; \
	$(COMPOSE) run --rm --no-deps dagster-daemon companydata-monitor report $$args

# Standard library only, on this machine, like make example: API_URL (default http://localhost:5000)
# and API_TOKEN (a token or a per-client key) as there.
drift-demo: ## send 600 shifted requests to the running API, run today's drift report: the dashboard (:8085) and the alert show it
	COMPOSE="$(COMPOSE)" $(PYTHON) monitoring/src/monitoring/demo.py $(ARGS)

models: ## list model versions: champion, candidates, rejected
	$(COMPOSE) run --rm --no-deps model-training companydata-registry list

promote: ## make VERSION the champion: make promote VERSION=... REASON="..."
	@test -n "$(VERSION)" || { echo "usage: make promote VERSION=<version> REASON=\"why\""; exit 2; }
	$(COMPOSE) run --rm --no-deps -e USER=$${USER:-unknown} model-training companydata-registry promote $(VERSION) --reason "$(REASON)"

rollback: ## back to the previous champion: make rollback REASON="..."
	$(COMPOSE) run --rm --no-deps -e USER=$${USER:-unknown} model-training companydata-registry rollback --reason "$(REASON)"

eda: ## re-render the EDA from the running stack's database: served by the proxy and copied to eda/eda.pdf
	$(COMPOSE) run --rm --no-deps eda companydata-eda render
	@address=$$($(COMPOSE) port proxy 8081) || { echo "eda: rendered, but the proxy is not running (make up)"; exit 1; }; \
	url="http://$${address/0.0.0.0/127.0.0.1}/eda.pdf"; \
	curl -fsS -o eda/.eda.pdf.tmp "$$url" && head -c 5 eda/.eda.pdf.tmp | grep -q '%PDF-' \
	  && mv eda/.eda.pdf.tmp eda/eda.pdf || { rm -f eda/.eda.pdf.tmp; echo "eda: $$url did not serve the PDF"; exit 1; }; \
	echo "eda/eda.pdf updated; served at http://$$address/"

example: ## send the challenge's example request to the running API
	$(PYTHON) deployment/example_request.py

compose-test: ## end-to-end check of the Compose stack (own project and ports; torn down with its volumes)
	$(PYTHON) e2e/compose_test.py

demo: $(PY) ## without Docker: local PostgreSQL, ETL, training, then the API on localhost:5000 (make stop)
	@test -x $(VENV)/bin/gunicorn || $(MAKE) install
	@if ! { [ -f $(DEMO_DIR)/api.pid ] && kill -0 $$(cat $(DEMO_DIR)/api.pid) 2>/dev/null; } \
	    && curl -s -o /dev/null localhost:$(DEMO_API_PORT); then \
	  echo "demo: port $(DEMO_API_PORT) is taken (the Docker stack? make down), or pick another: DEMO_API_PORT=5001 make demo"; \
	  exit 1; \
	fi
	$(PY) -m testkit.localdb start --datadir $(DEMO_DIR)/pgdata --port $(DEMO_DB_PORT)
	$(DEMO_ENV) $(VENV)/bin/companydata-etl etl
	$(DEMO_ENV) $(VENV)/bin/companydata-train
	@if [ -f $(DEMO_DIR)/api.pid ] && kill -0 $$(cat $(DEMO_DIR)/api.pid) 2>/dev/null; then \
	  echo "demo: the API is already running (pid $$(cat $(DEMO_DIR)/api.pid)); it picks up the new model by itself"; \
	else \
	  $(DEMO_ENV) GUNICORN_BIND=127.0.0.1:$(DEMO_API_PORT) $(VENV)/bin/gunicorn -c python:deployment.gunicorn_conf \
	    --daemon --pid $(CURDIR)/$(DEMO_DIR)/api.pid --error-logfile $(CURDIR)/$(DEMO_DIR)/api.log \
	    --access-logfile $(CURDIR)/$(DEMO_DIR)/api.log "deployment.app:create_app()"; \
	fi
	@for i in $$(seq 1 60); do curl -sf localhost:$(DEMO_API_PORT)/ready >/dev/null && break; sleep 1; done; \
	kill -0 $$(cat $(DEMO_DIR)/api.pid 2>/dev/null) 2>/dev/null || { echo "demo: the API exited; see $(DEMO_DIR)/api.log"; exit 1; }; \
	curl -sf localhost:$(DEMO_API_PORT)/ready >/dev/null || { echo "demo: the API did not become ready; see $(DEMO_DIR)/api.log"; exit 1; }
	@echo; echo "demo: the API is up on http://localhost:$(DEMO_API_PORT)/ (log: $(DEMO_DIR)/api.log). Try:"; echo; \
	echo "  curl -s localhost:$(DEMO_API_PORT)/predict -H 'Content-Type: application/json' \\"; \
	echo "    -d '{\"idx\": 150000, \"features\": {\"attr_a\": 1, \"attr_b\": \"c\", \"scd_a\": 0.55, \"scd_b\": 3}}'"; \
	echo; echo "make stop ends the API and the database (data stays in $(DEMO_DIR); make clean removes it)."

stop: ## end what make demo started (API and local PostgreSQL); its data stays in .demo
	@if [ -f $(DEMO_DIR)/api.pid ]; then kill $$(cat $(DEMO_DIR)/api.pid) 2>/dev/null && echo "demo: API stopped" || true; rm -f $(DEMO_DIR)/api.pid; fi
	@if [ -d $(DEMO_DIR)/pgdata ]; then $(PY) -m testkit.localdb stop --datadir $(DEMO_DIR)/pgdata --port $(DEMO_DB_PORT); fi

up: ## build and start the stack in the background; prints where the proxy serves the API and the EDA
	$(COMPOSE) up --build -d
	@echo "API: http://$$($(COMPOSE) port proxy 8080)/   EDA report: http://$$($(COMPOSE) port proxy 8081)/"

api-key: ## create an API key in the running stack's database: make api-key NAME=partner-a
	@test -n "$(NAME)" || { echo "usage: make api-key NAME=<name>"; exit 2; }
	$(COMPOSE) run --rm --no-deps api companydata-api-keys create "$(NAME)"

revoke-key: ## revoke an API key by name: make revoke-key NAME=partner-a
	@test -n "$(NAME)" || { echo "usage: make revoke-key NAME=<name>"; exit 2; }
	$(COMPOSE) run --rm --no-deps api companydata-api-keys revoke "$(NAME)"

down: ## stop the stack (data volumes are kept)
	$(COMPOSE) down

logs: ## follow the stack's logs
	$(COMPOSE) logs -f

clean: ## stop the stack and delete its volumes, the venv and local data
	-$(MAKE) --no-print-directory stop
	-$(COMPOSE) down --volumes --remove-orphans
	rm -rf $(VENV) data .pgdata $(DEMO_DIR) models $(BENCH_DIR) bench/results build

bench: bench-etl bench-model bench-scoring bench-serve bench-log bench-orchestration bench-ood bench-drift ## every benchmark

bench-ood: ## /predict with the out-of-distribution gate against without (goal <= 10 % of latency)
	$(PY) bench/bench_ood.py --data-dir $(BENCH_DIR)

bench-drift: ## drift report false alarms and detections on generated data (docs/drift.md)
	$(PY) bench/bench_drift.py --data-dir $(BENCH_DIR)/drift

bench-orchestration: ## the graph through Dagster against the plain CLI (150,000 clients; goal <= 1.3x)
	$(PY) bench/bench_orchestration.py --data-dir $(BENCH_DIR)

bench-etl: ## ETL loads against psql \copy on a 1,500,000-client dataset
	$(PY) bench/bench_etl.py --data-dir $(BENCH_DIR)

bench-model: ## training time, AUC against the best achievable; scoring in process and database to batch_predictions (1,500,000 clients)
	$(PY) bench/bench_model.py --data-dir $(BENCH_DIR)

bench-scoring: ## the scoring engines on one thread: compiled lookup table, numba walk, NumPy walk, scikit-learn (docs/compiled-scoring.md)
	$(PY) bench/bench_scoring.py

bench-serve: ## /predict and /predict/batch (records, columns) against a bare endpoint under the same gunicorn (wrk); then where a request's time goes
	$(PY) bench/bench_serve.py --data-dir $(BENCH_DIR)
	$(PY) bench/bench_breakdown.py --data-dir $(BENCH_DIR)

bench-log: ## the prediction log's writer: COPY formats and id order, CPU per record in Python and in PostgreSQL
	$(PY) bench/bench_log.py
