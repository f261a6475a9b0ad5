# Every target creates the virtual environment on first use: a fresh machine needs only Python 3.11+.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint bench mutate clean

$(BIN)/anonymize: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(BIN)/anonymize

demo: $(BIN)/anonymize
	$(BIN)/anonymize demo

# the optional extras (Spark engine: pyspark, sqlglot; Dagster assets), for the test run only:
# the demo runs on DuckDB without them
$(VENV)/.extras: $(BIN)/anonymize
	$(BIN)/python -m pip install --quiet -e ".[dev,spark,dagster]"
	touch $@

test: $(BIN)/anonymize $(VENV)/.extras
	$(BIN)/ruff check pipeline tests bench
	$(BIN)/python -m pytest -q

lint: $(BIN)/anonymize
	$(BIN)/ruff check pipeline tests bench

bench: $(BIN)/anonymize
	$(BIN)/python -m bench

# mutation testing of the privacy-critical modules (not in CI; hours: see tests/MUTATION.md)
mutate: $(BIN)/anonymize
	$(BIN)/python -m pip install --quiet "mutmut>=3.8,<4"
	$(BIN)/mutmut run --max-children 2 $(ARGS)
	$(BIN)/mutmut results | grep -c survived || true

clean:
	rm -rf $(VENV) data reports state demo
