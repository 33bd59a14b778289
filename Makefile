# The two commands a new user runs: `make demo` and `make test`.
# Each creates the project virtualenv (.venv) on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all
CONFIGFILE ?= config/config.yaml
# torch is pinned to the release these machines serve from local wheels; pyproject allows a range.
TORCH_PINS ?= "torch==2.14.1" "torchvision==0.29.1"

export HF_HUB_OFFLINE ?= 1

.PHONY: env-files venv demo test rehearsal lint format clean-results pull push paper slurm-profile check-data

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

# Local runs go through a warm server: each job forks from a process that has imported torch,
# torchvision and timm once, instead of importing them itself (python -m cgdmae.warm).
WARM := $(BIN)/python -m cgdmae.warm --

## Run the whole Snakemake DAG on the embedded default (synthetic data, CPU).
demo: $(STAMP)
	$(WARM) $(BIN)/snakemake all --cores $(CORES) --configfile $(CONFIGFILE) $(SNAKEMAKE_FLAGS)

## Unit tests and workflow tests on tiny configs.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

## The paper DAG (config/paper.yaml) at paper shapes on tiny synthetic data, through the Slurm
## profile, on a one-node test Slurm with 2 fake GPUs started here (root and apt needed). It
## works in $(REHEARSAL_DIR)/, so results/ is left alone; sbatch lines: $(REHEARSAL_DIR)/sbatch.log.
REHEARSAL_DIR ?= .rehearsal
REHEARSAL_FLAGS ?=
REHEARSAL_NEED_GB ?= 28
REHEARSAL_CONFIGS = $(abspath config/paper.yaml) $(abspath config/rehearsal.yaml)
rehearsal: $(STAMP)
	mkdir -p $(REHEARSAL_DIR)
	$(BIN)/python -m cgdmae.rehearsal $(REHEARSAL_DIR) --need-gb $(REHEARSAL_NEED_GB)
	NGPU=2 bash tests/slurm/single_node.sh
	start=$$(date +%s); \
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake all --profile profiles/slurm \
		--configfile $(REHEARSAL_CONFIGS) --snakefile $(abspath Snakefile) \
		--directory $(REHEARSAL_DIR) \
		--slurm-status-command squeue --slurm-init-seconds-before-status-checks 5 \
		--latency-wait 10 --verbose $(REHEARSAL_FLAGS) 2> $(REHEARSAL_DIR)/snakemake.log \
		|| { tail -n 40 $(REHEARSAL_DIR)/snakemake.log >&2; \
		     $(BIN)/python -m cgdmae.rehearsal $(REHEARSAL_DIR) --failures; exit 1; }; \
	grep -o "sbatch call: .*" $(REHEARSAL_DIR)/snakemake.log > $(REHEARSAL_DIR)/sbatch.log; \
	$(BIN)/python -m cgdmae.rehearsal $(REHEARSAL_DIR) --config $(REHEARSAL_CONFIGS) \
		--seconds $$(( $$(date +%s) - start ))

## Decode every image of CONFIGFILE's datasets and list the corrupt ones with their config key
## (exit 1 if any): run it before a long cluster run.
check-data: $(STAMP)
	$(BIN)/python -m cgdmae.data.scan $(CONFIGFILE)

lint: $(STAMP)
	$(BIN)/ruff check src tests workflow/scripts
	$(BIN)/ruff format --check src tests workflow/scripts
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint

format: $(STAMP)
	$(BIN)/ruff check --fix src tests workflow/scripts
	$(BIN)/ruff format src tests workflow/scripts
	$(BIN)/snakefmt Snakefile workflow/rules

## The paper's tables, figures and report (rebuilds only what is out of date).
paper: $(STAMP)
	$(WARM) $(BIN)/snakemake all paper --cores $(CORES) --configfile $(CONFIGFILE) $(SNAKEMAKE_FLAGS)

## Fetch the artifacts from the DVC remote, then mark them up to date for Snakemake, so that
## nothing already pulled (pre-training, fine-tuning) is run again. DVC_REMOTE=<url> points
## the default remote elsewhere for this clone only (.dvc/config.local). A remote that cannot
## be read stops it first, with one line naming the remote's URL (python -m cgdmae.dvc_remote).
pull: $(STAMP)
	test -z "$(DVC_REMOTE)" || $(BIN)/dvc remote modify --local local url "$(DVC_REMOTE)"
	@$(BIN)/python -m cgdmae.dvc_remote
	$(BIN)/dvc pull
	$(BIN)/snakemake --cores 1 --configfile $(CONFIGFILE) --touch all

## Version and upload what Snakemake built. Only an up-to-date DAG is pushed. params.yaml is
## set to CONFIGFILE first, so dvc.lock records the config that built results/ (commit both);
## `dvc commit` relinks the files from its cache (new mtimes), so they are marked up to date
## again after it.
push: $(STAMP)
	test -z "$(DVC_REMOTE)" || $(BIN)/dvc remote modify --local local url "$(DVC_REMOTE)"
	$(BIN)/snakemake all --cores 1 --configfile $(CONFIGFILE) --dry-run --quiet 2>&1 \
		| grep -q "Nothing to be done" \
		|| { echo "make push: results/ is out of date; run make demo first" >&2; exit 1; }
	printf '%s\nconfigfile: %s\n' "# The config file the DVC stages pass to Snakemake (dvc.yaml templates \$${configfile})." \
		"$(CONFIGFILE)" > params.yaml
	$(BIN)/dvc commit --force
	$(BIN)/snakemake --cores 1 --configfile $(CONFIGFILE) --touch all
	$(BIN)/dvc push

## Make `snakemake --profile slurm` find profiles/slurm (linked into the user's config dir).
SNAKEMAKE_PROFILES ?= $(HOME)/.config/snakemake
slurm-profile:
	mkdir -p $(SNAKEMAKE_PROFILES)
	ln -sfn $(abspath profiles/slurm) $(SNAKEMAKE_PROFILES)/slurm
	@echo "installed: snakemake --profile slurm all  (edit profiles/slurm/config.yaml for your partition/account)"

clean-results:
	rm -rf results logs .snakemake

## workflow/envs/cgdmae.yaml from environment.yml: Snakemake copies a rule's env file to
## .snakemake/conda/, two levels below the repository, so the package path is ../.. there.
env-files:
	{ echo "# Generated from environment.yml by make env-files: edit that file instead."; \
	  sed -n '/^name:/,$$p' environment.yml | sed 's|"-e \.\[dev\]"|"-e ../..[dev]"|'; } \
		> workflow/envs/cgdmae.yaml
