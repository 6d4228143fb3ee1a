# napkin-mlir: `make demo` and `make test` set up .venv (pinned, from the package index) on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.napkin-installed

FUZZ_SECONDS ?= 300
FUZZ_SEED ?= 0

.PHONY: demo test lint format setup clean fuzz

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/napkin demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lit -sv test
	$(BIN)/pytest -q -n 2 test/python

# Differential fuzzing: random diagrams and relabelings vs the interpretation and the CPU,
# mutated IR through napkin-opt/napkin; reproducers in fuzz-out/failures/.
fuzz: $(STAMP)
	$(BIN)/python -m napkin_mlir.fuzz --seconds $(FUZZ_SECONDS) --seed $(FUZZ_SEED) --out fuzz-out/

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) test/Output bench/results/*.tmp
