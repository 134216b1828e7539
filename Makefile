# Two commands matter: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test unit integration lint bench quality clean

venv: $(STAMP)

$(STAMP): pyproject.toml
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

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
