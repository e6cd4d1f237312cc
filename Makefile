# One command each: `make demo`, `make test`, `make lint` and `make docs` create .venv/ on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.docs-installed

.PHONY: venv test lint docs benchmark demo clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests

# the docs extra on top of the dev install; torch stays the pinned one (-c constraints.txt)
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,docs]"
	touch $(DOCS_STAMP)

# the site in site/ from docs/ and the docstrings; --strict: any warning (a broken link or anchor, a page left out
# of the navigation, a docstring mkdocstrings cannot read) fails the build
docs: $(DOCS_STAMP)
	$(VENV)/bin/mkdocs build --strict

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks docs/hooks

benchmark: $(STAMP)
	$(PY) benchmarks/mining_overhead.py

demo: $(STAMP)
	$(VENV)/bin/sluice demo $(if $(QUICK),--quick,) --out sluice-demo

clean:
	rm -rf $(VENV) build site src/*.egg-info .pytest_cache
