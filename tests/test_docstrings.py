"""Every ``>>>`` example in the package's docstrings runs, and every public estimator class carries one.

One test per module of src/sluice/: it imports the module (a module that needs an optional extra which is not
installed is skipped, saying which extra) and runs the doctest examples of the module and of the classes,
functions and methods defined in it, with ELLIPSIS and NORMALIZE_WHITESPACE, in a temporary folder with torch,
numpy and random seeded with 0. Each example sees its module's globals, as ``python -m doctest`` gives them.
"""

from __future__ import annotations

import doctest
import importlib
import pathlib
import random

import numpy as np
import pytest
import torch

import sluice.estimators

SOURCE = pathlib.Path(__file__).resolve().parents[1] / "src" / "sluice"
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
# the top-level package a module may miss → the extra of sluice-sbi that installs it
OPTIONAL_EXTRAS = {"pyro": "pyro", "dask": "dask", "distributed": "dask", "arviz": "arviz", "sbi": "bench",
                   "zmq": "ppx", "flatbuffers": "ppx"}
PUBLIC_ESTIMATORS = ("CARL", "ROLR", "RASCAL", "CASCAL", "ALICE", "ALICES", "SALLY", "SALLINO", "NDE", "SCANDAL",
                     "NPE", "AugmentedNPE", "Ensemble", "Auto")


def module_names() -> list[str]:
    """Every module of the package by its import name, read from the source tree (nothing is imported)."""
    names = []
    for path in sorted(SOURCE.rglob("*.py")):
        parts = path.relative_to(SOURCE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def import_or_skip(name: str):
    """The module, or a skip naming the optional extra when it needs one that is not installed."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        missing = (error.name or "").split(".")[0]
        if missing not in OPTIONAL_EXTRAS:
            raise
        extra = OPTIONAL_EXTRAS[missing]
        pytest.skip(f"{name} needs the optional extra {extra!r} ({missing} is not installed): "
                    f"pip install 'sluice-sbi[{extra}]'")


def run_examples(module) -> tuple[int, int, str]:
    """(examples run, failures, the failure report) for the doctests defined in ``module``."""
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report = []
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, module.__name__):
        runner.run(test, out=report.append)
    return runner.tries, runner.failures, "".join(report)


@pytest.mark.parametrize("name", module_names())
def test_module_imports_and_its_docstring_examples_pass(name, tmp_path, monkeypatch):
    module = import_or_skip(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 (the legacy global generator is the one an example would use unseeded)
    random.seed(0)
    _, failures, report = run_examples(module)
    assert failures == 0, f"{failures} failing docstring example(s) in {name}:\n{report}"


@pytest.mark.parametrize("name", PUBLIC_ESTIMATORS)
def test_public_estimator_class_has_an_example_in_its_own_docstring(name):
    assert name in sluice.estimators.__all__, f"{name} is no longer public in sluice.estimators"
    own_docstring = vars(getattr(sluice.estimators, name)).get("__doc__") or ""  # not inherited from a base
    assert ">>>" in own_docstring, f"sluice.estimators.{name}'s docstring has no >>> example"


def test_module_list_covers_the_layers_and_a_failing_example_is_reported(tmp_path, monkeypatch):
    """The checks above are only worth something if they see every layer and a wrong example fails."""
    names = module_names()
    assert {"sluice", "sluice.seeding", "sluice.estimators.ratio", "sluice.app.cli", "sluice.plots"} <= set(names)
    wrong = tmp_path / "wrong_example.py"
    wrong.write_text('def f():\n    """\n    >>> 1 + 1\n    3\n    """\n', encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    tries, failures, report = run_examples(importlib.import_module("wrong_example"))
    assert (tries, failures) == (1, 1) and "Expected:\n    3" in report
