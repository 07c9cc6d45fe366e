# Everything a user or CI runs. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PACKAGES := mle de ds deployment eda
COMPOSE ?= docker compose
BENCH_DIR ?= bench/data

.DEFAULT_GOAL := help
.PHONY: help install test lint format etl train example eda bench bench-etl bench-model bench-serve up down logs clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)

install: $(PY) ## create .venv and install every package (editable) and the test tools
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(foreach p,$(PACKAGES),-e ./$(p)) pytest pytest-timeout ruff playwright schemathesis

test: ## run every package's tests against a real PostgreSQL that the tests start themselves
	@rm -rf build/test-results && mkdir -p build/test-results; status=0; \
	for p in $(PACKAGES); do \
	  echo "== $$p"; \
	  (cd $$p && $(CURDIR)/$(PY) -m pytest --import-mode=importlib --timeout=600 -q \
	    --junitxml=$(CURDIR)/build/test-results/$$p.xml tests) || status=1; \
	done; \
	$(PY) .ci/test_summary.py build/test-results; \
	exit $$status

lint: ## ruff: lint and check formatting
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: ## ruff: fix what can be fixed and format
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

etl: ## run the whole ETL inside the running compose stack
	$(COMPOSE) run --rm etl python -m data_engineering etl

train: ## train a new model version inside the running compose stack
	$(COMPOSE) run --rm model-training python -m data_science.train

eda: ## re-render the EDA from the running stack's database: served on :8081 and copied to eda/eda.pdf
	$(COMPOSE) exec eda python -m eda render
	$(COMPOSE) cp eda:/srv/eda/eda.pdf eda/eda.pdf
	@echo "eda/eda.pdf updated; also served at http://localhost:$${EDA_HOST_PORT:-8081}/"

example: ## send the challenge's example request to the running API
	$(PYTHON) deployment/example_request.py

up: ## build and start the stack in the background
	$(COMPOSE) up --build -d

down: ## stop the stack (data volumes are kept)
	$(COMPOSE) down

logs: ## follow the stack's logs
	$(COMPOSE) logs -f

clean: ## stop the stack and delete its volumes, the venv and local data
	-$(COMPOSE) down --volumes --remove-orphans
	rm -rf $(VENV) data .pgdata $(BENCH_DIR) bench/results

bench: bench-etl bench-model bench-serve ## every benchmark

bench-etl: ## ETL loads against psql \copy on a 1,500,000-client dataset
	$(PY) bench/bench_etl.py --data-dir $(BENCH_DIR)

bench-model: ## training time, AUC against the best achievable, prediction latency (1,500,000 clients)
	$(PY) bench/bench_model.py --data-dir $(BENCH_DIR)

bench-serve: ## /predict and /predict/batch against a bare endpoint under the same gunicorn (wrk)
	$(PY) bench/bench_serve.py --data-dir $(BENCH_DIR)
