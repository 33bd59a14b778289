# The two commands a new user runs: `make demo` and `make test`.
# Each creates the project virtualenv (.venv) on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all
# torch is pinned to the release these machines serve from local wheels; pyproject allows a range.
TORCH_PINS ?= "torch==2.14.1" "torchvision==0.29.1"

export HF_HUB_OFFLINE ?= 1

.PHONY: venv demo test lint format clean-results

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

## Run the whole Snakemake DAG on the embedded default (synthetic data, CPU).
demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) all

## Unit tests and workflow tests on tiny configs.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

lint: $(STAMP)
	$(BIN)/ruff check src tests workflow/scripts
	$(BIN)/ruff format --check src tests workflow/scripts
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint

format: $(STAMP)
	$(BIN)/ruff check --fix src tests workflow/scripts
	$(BIN)/ruff format src tests workflow/scripts
	$(BIN)/snakefmt Snakefile workflow/rules

clean-results:
	rm -rf results logs .snakemake
