# Two commands matter: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test unit integration lint bench quality soak clean

venv: $(STAMP)

# The C loops (stream/core/scoring/_steps.c) are compiled by the install: rebuilt when they change.
$(STAMP): pyproject.toml stream/core/scoring/_steps.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: venv
	$(BIN)/stream demo

test: venv
	$(BIN)/ruff check stream tests benchmarks
	$(BIN)/mypy stream benchmarks
	$(BIN)/pytest -q -ra

unit: venv
	$(BIN)/pytest -q tests/unit

integration: venv
	$(BIN)/pytest -q tests/integration

lint: venv
	$(BIN)/ruff check stream tests benchmarks
	$(BIN)/mypy stream benchmarks

bench: venv
	$(BIN)/python -m benchmarks.bench

# Detection quality: realistic fraud, delayed labels, batch baselines, 1/4/16 partitions and a
# Kafka-backed run; JSON to $$QUALITY_OUT (default quality-results.json). See docs/quality.md.
quality: venv
	$(BIN)/python -m benchmarks.quality

# The soak (README "Soak test"): 30 minutes at a steady rate on a local broker, with a broker
# restart and a SIGKILL of the scorer; JSON to soak-results.json. Not part of `make test`.
SOAK_ARGS ?= --minutes 30 --rate 400
soak: venv
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
