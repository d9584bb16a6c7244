# fastinat: `make demo` sets everything up and trains on the embedded demo data;
# `make test` runs the test suite. Both create .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# make sweep [CONFIG=recipes/sweeps/finetune.yaml] [COUNT=20] [DATA=path]
CONFIG ?= recipes/sweeps/scratch.yaml
COUNT  ?=
DATA   ?=
FULL   := $(or $(DATA),$(wildcard data/inaturalist_12K))

.PHONY: install demo test bench gpu-check lint clean sweep reproduce

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/fastinat data demo data/digits
	$(BIN)/fastinat data check data/digits
	$(BIN)/fastinat scratch --data data/digits --size 32 --epochs 5 --no-augment
	@echo "Next: $(BIN)/fastinat evaluate runs/latest   and   $(BIN)/fastinat predict runs/latest data/digits/val/3"
	@echo "Report (one HTML page, opens offline): $(BIN)/fastinat report runs/latest --out runs/report.html"

# The suite in two processes (pytest-xdist), one torch thread each. A test that crashes its
# process (or hangs past the limits in pyproject.toml) fails by name, xdist starts a new process
# and the run goes on to its summary; after a 9th such crash it stops there (`--max-worker-restart`).
# `--dist load`, not loadfile: xdist 3.8's loadfile/loadscope reruns the test a process died in
# and then waits forever (pytest-xdist issues 784, 1323, 1327, 1378); tests/test_suite_guard.py.
TEST_PROCS ?= 2
test: install
	WANDB_MODE=disabled $(BIN)/python -m pytest -q -n $(TEST_PROCS) --dist load --max-worker-restart 8

# On nature_12K (or DATA) with the config's own settings; without it, on the demo digits
# with small settings (32 px, 2 epochs, 6 trials: a few minutes on a CPU). Ends by writing the
# sweep's report, SWEEP/report.html (`fastinat report`).
sweep: install
ifneq ($(FULL),)
	$(BIN)/fastinat sweep $(CONFIG) --data $(FULL) $(if $(COUNT),--count $(COUNT))
else
	$(BIN)/fastinat data demo data/digits
	$(BIN)/fastinat sweep $(CONFIG) --data data/digits --size 32 --epochs 2 --count $(or $(COUNT),6)
endif
	@# the newest sweep folder is the one just run: its report goes inside it
	@sweep=$$(ls -td runs/sweeps/*/ | head -1); sweep=$${sweep%/}; \
	  echo "$(BIN)/fastinat report $$sweep --out $$sweep/report.html"; \
	  $(BIN)/fastinat report $$sweep --out $$sweep/report.html

# make reproduce [DATA=path] [QUICK=1]: every preset (recipes/presets/) on nature_12K (DATA, else
# data/inaturalist_12K) on whatever device there is -> results/accuracy.md and accuracy.json.
# QUICK=1: the same pipeline on the demo digits with small settings, a few minutes on a CPU.
QUICK  ?=
reproduce: install
	$(BIN)/fastinat reproduce $(if $(QUICK),--quick) $(if $(DATA),--data $(DATA))

bench: install
	$(BIN)/python -m benchmarks

# On a GPU machine: exit times, throughput with GPU utilisation, one epoch per preset (~8 min)
gpu-check: install
	bash benchmarks/gpu.sh

lint: install
	$(BIN)/ruff check fastinat recipes tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
