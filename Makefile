# mailmoat: `make run` runs the gateway, `make test` runs the tests.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
TLS_DIR := var/tls

.PHONY: help setup run test lint bench clean

help:
	@echo "make run    - install, then run the whole gateway (SMTP on 127.0.0.1:2525, mail lands in var/maildir/)"
	@echo "make test   - install everything the tests need and run the whole suite"
	@echo "make lint   - ruff"
	@echo "make bench  - throughput and latency through the whole pipeline, against Postfix"
	@echo "make clean  - remove the venv and var/"

setup:
	@bash scripts/setup.sh

$(TLS_DIR)/cert.pem:
	@mkdir -p $(TLS_DIR)
	@openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=localhost" \
	  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
	  -keyout $(TLS_DIR)/key.pem -out $(TLS_DIR)/cert.pem 2>/dev/null
	@echo "generated a self-signed development certificate in $(TLS_DIR)/"

run: setup $(TLS_DIR)/cert.pem
	@bash scripts/ensure-services.sh
	MAILMOAT_TLS_CERT=$(TLS_DIR)/cert.pem MAILMOAT_TLS_KEY=$(TLS_DIR)/key.pem \
	  exec $(VENV)/bin/mailmoat run all --devmailbox

test:
	@bash scripts/setup.sh --test
	@bash scripts/ensure-services.sh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q -p no:cacheprovider $(PYTEST_ARGS) tests

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	@bash scripts/ensure-services.sh
	@if [ -x bench/run.sh ]; then bash bench/run.sh $(BENCH_ARGS); else echo "bench/run.sh is missing"; exit 1; fi

clean:
	rm -rf $(VENV) var build *.egg-info
