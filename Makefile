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
	rm -rf runs/studies/quickstart
	$(PY) -m ebomlc study run tune/studies/quickstart.yaml
	$(PY) -m ebomlc analyze runs/studies/quickstart
	@echo "study in runs/studies/quickstart; tables and plots in runs/studies/quickstart/analysis"

clean:
	rm -rf $(VENV) runs *.egg-info
