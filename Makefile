# One command each: `make demo`, `make test` and `make lint` create .venv/ on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test lint benchmark demo clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

benchmark: $(STAMP)
	$(PY) benchmarks/mining_overhead.py

demo: $(STAMP)
	$(VENV)/bin/sluice demo $(if $(QUICK),--quick,) --out sluice-demo

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
