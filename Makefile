# baclofen-check: the two commands in the README are `make run` and `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The real FHIR server the tests run against lives in its own virtualenv (its dependencies
# must not mix with the service's).
SEKMET_VENV := .venv-sekmet
SEKMET_STAMP := $(SEKMET_VENV)/.installed
# healthchain validates our CDS Hooks JSON with its pydantic models, from its own virtualenv;
# @medplum/core is the real CDS Hooks client the tests drive (Node, tests/cds-client).
HEALTHCHAIN_VENV := .venv-healthchain
HEALTHCHAIN_STAMP := $(HEALTHCHAIN_VENV)/.installed
CDS_CLIENT_STAMP := tests/cds-client/node_modules/.installed
# oidc-provider is the real OAuth 2.0 authorization server of the inbound OAuth tests (Node,
# tests/oauth-issuer).
OAUTH_ISSUER_STAMP := tests/oauth-issuer/node_modules/.installed

.PHONY: run test lint typecheck unit bench clean system-check soak audit faults-watch faults \
	golden

$(STAMP): pyproject.toml constraints.txt
	$(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and "Python 3.11 is required")'
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,spark]'
	touch $(STAMP)

$(SEKMET_STAMP): tests/sekmet-requirements.txt
	$(PY) -m venv $(SEKMET_VENV)
	$(SEKMET_VENV)/bin/pip install --quiet --upgrade pip
	$(SEKMET_VENV)/bin/pip install --quiet -r tests/sekmet-requirements.txt
	touch $(SEKMET_STAMP)

$(HEALTHCHAIN_STAMP): tests/healthchain-requirements.txt
	$(PY) -m venv $(HEALTHCHAIN_VENV)
	$(HEALTHCHAIN_VENV)/bin/pip install --quiet --upgrade pip
	$(HEALTHCHAIN_VENV)/bin/pip install --quiet -r tests/healthchain-requirements.txt
	touch $(HEALTHCHAIN_STAMP)

$(CDS_CLIENT_STAMP): tests/cds-client/package.json tests/cds-client/package-lock.json
	cd tests/cds-client && npm ci --no-audit --no-fund --loglevel=error
	touch $(CDS_CLIENT_STAMP)

$(OAUTH_ISSUER_STAMP): tests/oauth-issuer/package.json tests/oauth-issuer/package-lock.json
	cd tests/oauth-issuer && npm ci --no-audit --no-fund --loglevel=error
	touch $(OAUTH_ISSUER_STAMP)

## system-check: install a missing system package (as root with apt-get), else stop at once
## with the install command (tools/check-system).
system-check:
	sh tools/check-system

## make run: serve on http://127.0.0.1:8080 with the embedded SQLite store (local demo:
## authentication off, which the service logs as a warning).
run: $(STAMP)
	mkdir -p var
	API_REQUIRE_AUTH=false CDS_REQUIRE_JWT=false $(BIN)/baclofen-check serve --bind 127.0.0.1:8080

## make test: install what the tests need, lint, type-check and run pytest (which starts a
## throwaway PostgreSQL cluster and the sekmet FHIR server itself).
test: system-check $(STAMP) $(SEKMET_STAMP) $(HEALTHCHAIN_STAMP) $(CDS_CLIENT_STAMP) \
		$(OAUTH_ISSUER_STAMP)
	$(BIN)/ruff check service tests bench scripts
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest

## make golden: regenerate the golden results in fixtures/expected/ (tests/support/golden.py)
## after an intended change of output; review their diff before committing it.
golden: $(STAMP)
	$(BIN)/python -m tests.support.golden

lint: $(STAMP)
	$(BIN)/ruff check service tests bench scripts
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

## make bench: the benchmark report (bench/run.py; README "Benchmark"). Needs wrk, installed
## here when running as root; BENCH_ARGS=--quick gives a short smoke run.
bench: $(STAMP) $(SEKMET_STAMP)
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ]; then \
	    apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }; \
	  else \
	    echo "make bench needs wrk: install it (as root) with:  apt-get install -y wrk" >&2; \
	    exit 1; \
	  fi; }
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(SEKMET_VENV) $(HEALTHCHAIN_VENV) tests/cds-client/node_modules tests/oauth-issuer/node_modules var .pytest_cache .mypy_cache .ruff_cache .hypothesis

## make faults-watch: the watch's fault run (bench/watch_bench.py --faults; not part of make
## test): the bench's burst of 1,000 results with the worker killed by SIGKILL and restarted and
## the receiver down for 30 s; exit 1 unless every patient was re-checked after its last event
## and each expected finding is on the server exactly once.
faults-watch: $(STAMP) $(SEKMET_STAMP)
	$(BIN)/python bench/watch_bench.py --faults

## make faults: the fault test of the serving path and the store (scripts/faults.py; not part of
## make test): PostgreSQL stopped and frozen, a full disk under SQLite, 64 slow clients served
## directly and behind nginx (deploy/nginx.conf), 20 MB of blank NDJSON lines, the gunicorn
## master killed; per fault: answered, errors, recorded, spooled, replayed, lost, p50/p99, time
## to recover; exit 1 when a record was lost. nginx comes from Debian's packages (installed
## here when running as root; without it that part is skipped), the full disk is a small tmpfs
## (root only; skipped otherwise).
faults: $(STAMP)
	@command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || [ "$$(id -u)" != "0" ] || \
	  apt-get install -y nginx-light || { apt-get update && apt-get install -y nginx-light; }
	$(BIN)/python scripts/faults.py $(FAULTS_ARGS)

## make soak: 10 minutes of mixed native and CDS Hooks load on loopback against gunicorn, with
## a restart half-way; checks zero errors, bounded memory and that every answered call was
## recorded (not part of make test).
soak: $(STAMP)
	$(BIN)/python scripts/soak.py --duration 600 --restart

## make audit: check every pinned Python package (constraints.txt) against the public
## vulnerability databases with pip-audit, from its own virtualenv (needs network access to
## the package index's vulnerability service).
AUDIT_VENV := .venv-audit
audit:
	test -x $(AUDIT_VENV)/bin/pip-audit || ($(PY) -m venv $(AUDIT_VENV) && \
	  $(AUDIT_VENV)/bin/pip install --quiet pip-audit==2.10.1)
	$(AUDIT_VENV)/bin/pip-audit --requirement constraints.txt --no-deps --disable-pip
