# One command each: `make demo`, `make test`, `make lint` and `make docs` create .venv/ on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.docs-installed

.PHONY: venv test lint docs benchmark demo clean sbibm-data

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# sbibm's reference posteriors and observations, read from its wheel (never installed: its pins conflict with ours);
# the tests and `sluice benchmark sbibm` that need it skip, saying why, where it cannot be downloaded
SBIBM_DIR := $(VENV)/sbibm
SBIBM_WHEEL := $(SBIBM_DIR)/sbibm-1.1.0-py2.py3-none-any.whl

$(SBIBM_WHEEL): | $(STAMP)
	$(PY) -m pip download --quiet --no-deps --dest $(SBIBM_DIR) sbibm==1.1.0 \
		|| echo "sbibm's wheel could not be downloaded: the tests that need its reference data will skip"

sbibm-data: $(SBIBM_WHEEL)

test: $(STAMP) sbibm-data
	SLUICE_SBIBM_WHEEL=$(if $(wildcard $(SBIBM_WHEEL)),$(abspath $(SBIBM_WHEEL)),) $(PY) -m pytest tests

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
