# Two entry points: `make run` (embedded SQLite server on 127.0.0.1:8080) and `make test` (whole suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEV_KEYS := .dev-keys

.PHONY: run test venv lint typecheck bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[server,dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	test -n "$$VALDRIX_SIGNING_KEYS_DIR" || test -d $(DEV_KEYS) || $(BIN)/valdrix signing-key generate --dir $(DEV_KEYS)
	VALDRIX_SIGNING_KEYS_DIR=$${VALDRIX_SIGNING_KEYS_DIR:-$(CURDIR)/$(DEV_KEYS)} $(BIN)/valdrix serve

test: $(STAMP)
	scripts/ensure-postgres.sh
	command -v unzip >/dev/null && command -v openssl >/dev/null || apt-get install -y -qq unzip openssl
	scripts/fetch-helm.sh
	scripts/ensure-chromium.sh
	scripts/ensure-promtool.sh
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check valdrix valdrix_vendor tests bench
	$(BIN)/mypy valdrix

bench: $(STAMP)
	command -v wrk >/dev/null || apt-get install -y -qq wrk
	$(BIN)/python bench/gate.py

clean:
	rm -rf $(VENV) .tools valdrix.db valdrix.db-wal valdrix.db-shm
