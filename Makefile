# prune-cli: every target installs what it needs into .venv first.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
ARGS    ?=

# Data root: $PRUNE_DATA_ROOT if set, else a sibling shared/data when there is one (this
# workspace), else prune-cli's user cache (where PTB and CIFAR-10 are downloaded if online).
ifeq ($(origin PRUNE_DATA_ROOT),undefined)
  ifneq ($(wildcard ../shared/data),)
    export PRUNE_DATA_ROOT := $(abspath ../shared/data)
  endif
endif

.PHONY: help install test run report bench clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install prune-cli with pinned dependencies

# pytest-xdist: one worker per CPU (each test runs torch on one thread, see tests/conftest.py);
# a file's tests stay in one worker, in order. TEST_JOBS=0 runs them in this process.
TEST_JOBS ?= auto
test: $(STAMP)  ## run the test suite (pytest, a worker per CPU)
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile $(ARGS)

run: $(STAMP)  ## the main job: PTB large-sparse vs small-dense study (~10 min on 2 cores)
	$(BIN)/prune-run -m experiment=ptb_laptop $(ARGS)
	@echo "One budget (500 steps). The answer across training budgets, quality vs training MACs:"
	@echo "  prune-run -m experiment=ptb_frontier seed=0,1,2 && make report   (docs/compute.md, about an hour a seed)"

report: $(STAMP)  ## tables and figures from results/runs into results/report
	$(BIN)/prune-report $(ARGS)

bench: $(STAMP)  ## speed and memory benchmarks (every scripts/bench_*.py; tens of minutes), JSON into results/bench/
	$(BIN)/python scripts/bench_pruning.py
	$(BIN)/python scripts/bench_runner.py --family ptb
	$(BIN)/python scripts/bench_runner.py --family mobilenet
	$(BIN)/python scripts/bench_tensorboard.py --family ptb
	$(BIN)/python scripts/bench_gnmt.py
	$(BIN)/python scripts/bench_gnmt_model.py
	$(BIN)/python scripts/bench_scale.py sweep
	$(BIN)/python scripts/bench_scale.py ranks
	$(BIN)/python scripts/bench_precision.py --family mobilenet --out results/bench/precision_mobilenet.json
	$(BIN)/python scripts/bench_precision.py --family ptb --out results/bench/precision_ptb.json
	$(BIN)/python scripts/bench_infer.py
	$(BIN)/python scripts/bench_report.py
	$(BIN)/python scripts/bench_stop.py
	$(BIN)/python scripts/bench_compute.py

clean:  ## remove .venv and build files (never results/)
	rm -rf $(VENV) build dist *.egg-info
