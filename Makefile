# `make test` and `make demo` set up .venv themselves (CPU torch pinned by constraints.txt).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test demo variants pbt gpu-check clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	rm -rf runs/studies/quickstart
	$(PY) -m ebomlc study run tune/studies/quickstart.yaml
	$(PY) -m ebomlc analyze runs/studies/quickstart
	@echo "study in runs/studies/quickstart; tables and plots in runs/studies/quickstart/analysis"

# The EBOMLC variant study on digits (docs/variants.md): the paper reading, the authors' code and each
# departure between them, beside CE, MLC and MLC-D; 84 single-thread trials, ~25 min on 2 cores.
variants: $(STAMP)
	rm -rf runs/studies/variants_digits
	$(PY) -m ebomlc study run tune/studies/variants_digits.yaml
	$(PY) -m ebomlc analyze runs/studies/variants_digits
	@echo "study in runs/studies/variants_digits; tables and plots in runs/studies/variants_digits/analysis"

# Population based training of rho, xi, delta, meta_lr on digits and its fixed twin on the same budget
# (docs/pbt.md), both choosing on a held-out validation set; 8 + 8 trials of 30 epochs, ~8 min on 2 idle cores.
pbt: $(STAMP)
	rm -rf runs/studies/pbt_digits runs/studies/pbt_digits_fixed
	$(PY) -m ebomlc study run tune/studies/pbt_digits.yaml
	$(PY) -m ebomlc study run tune/studies/pbt_digits_fixed.yaml
	$(PY) -m ebomlc analyze runs/studies/pbt_digits --compare runs/studies/pbt_digits_fixed
	@echo "comparison in runs/studies/pbt_digits/analysis/rank_table.md; schedules in schedule_*.png"

# The GPU check (benchmarks/gpu_check.py, ~8 min on one GPU): CPU agreement of every method, step times,
# packing, a 2-epoch CIFAR-10 run and the projection for table1_cifar10.yaml; gpu_check.json + gpu_check.md.
# CIFAR10_DIR: CIFAR-10 as JPEG folders or pickles. Without a GPU: make gpu-check GPU_CHECK_FLAGS="--device cpu --quick"
CIFAR10_DIR ?= data/cifar10
GPU_CHECK_FLAGS ?= --device cuda --data_dir $(CIFAR10_DIR)
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py $(GPU_CHECK_FLAGS) --json gpu_check.json --md gpu_check.md
	@echo "results in gpu_check.json; the markdown block for BENCHMARKS.md in gpu_check.md"

clean:
	rm -rf $(VENV) runs *.egg-info
