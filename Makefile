# `make test` and `make demo` set up .venv themselves (CPU torch pinned by constraints.txt).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test demo bench clean

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
	rm -rf runs/demo
	$(PY) -m ebomlc train --method ebomlc --dataset digits --corruption_level 0.6 --gold_fraction 0.05 \
		--epochs 15 --runid demo --out runs/demo
	@echo "demo run written to runs/demo (metrics.csv, summary.json, label_correction.csv)"

clean:
	rm -rf $(VENV) runs *.egg-info
