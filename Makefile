# `make test` and `make demo` set up .venv themselves (CPU torch pinned by constraints.txt).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test demo variants pbt clean

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

clean:
	rm -rf $(VENV) runs *.egg-info
