"""The suite benchmark's scoring and bookkeeping: the normalised MSE is 0 at the truth and 1 at log r̂ ≡ 0, the
test set is fixed, rows resume, and the command line runs a small cell end to end."""

import os

import pytest
import torch
from click.testing import CliRunner

from sluice.app.benchmarks import suite
from sluice.app.cli import main


@pytest.fixture(scope="module")
def mixture():
    return suite.SuiteTask("mixture", n_pairs=500)


def test_normalised_mse_is_zero_at_the_truth_and_one_at_zero(mixture):
    assert mixture.error_of(mixture.exact) == 0.0
    assert mixture.error_of(torch.zeros_like(mixture.exact)) == pytest.approx(1.0, abs=1e-12)
    # a constant offset c adds c² / mean(log r²): the metric is a plain MSE, normalised
    offset = mixture.error_of(mixture.exact + 0.5)
    assert offset == pytest.approx(0.25 / float((mixture.exact**2).mean()), rel=1e-9)


def test_the_test_set_is_fixed_and_drawn_from_the_prior(mixture):
    again = suite.SuiteTask("mixture", n_pairs=500)
    assert torch.equal(again.x, mixture.x) and torch.equal(again.theta0, mixture.theta0)
    low, high = mixture.prior.low, mixture.prior.high
    assert bool(((mixture.theta0 >= low) & (mixture.theta0 <= high)).all())
    assert not torch.equal(mixture.theta0, mixture.theta1)


def test_every_suite_task_exists_and_has_a_finite_exact_log_ratio():
    for name in suite.SUITE:
        task = suite.SuiteTask(name, n_pairs=50)
        assert task.exact.shape == (50,) and bool(torch.isfinite(task.exact).all()), name


def test_unknown_task_is_named():
    with pytest.raises(ValueError, match="nope"):
        suite.SuiteTask("nope")


def test_score_only_methods_get_half_their_runs_at_the_prior_centre(mixture):
    data = mixture.training_data("SALLY", 200, seed=0)
    assert torch.equal(data.theta1, torch.tensor(mixture.theta_ref).expand(200, -1))
    assert not torch.equal(mixture.training_data("ALICES", 200, seed=0).theta1, data.theta1)


def test_rows_resume_instead_of_rerunning(tmp_path):
    path = str(tmp_path / "suite.csv")
    settings = {"epochs": 2, "hidden": (8,)}
    job = ("mixture", "CARL", 100, 0, "tiny", settings)
    first = suite.run_jobs([job], path, workers=1, report=lambda line: None)
    second = suite.run_jobs([job, ("mixture", "CARL", 100, 1, "tiny", settings)], path, workers=1,
                            report=lambda line: None)
    assert len(first) == 1 and len(second) == 2
    assert second[0] == first[0]  # the first row was kept, not recomputed
    assert 0.0 < first[0]["error"] < 10.0 and first[0]["epochs"] == 2


def test_the_command_line_runs_a_cell_and_writes_the_report(tmp_path):
    result = CliRunner().invoke(main, ["benchmark", "suite", "--tasks", "galton", "--methods", "CARL", "--budgets",
                                       "100", "--seeds", "1", "--workers", "1", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "## galton" in result.output and "CARL (black box)" in result.output
    assert {"suite.csv", "suite.md", "suite.png"} <= set(os.listdir(tmp_path))


def test_the_command_line_names_an_unknown_task_or_method(tmp_path):
    for arguments, word in ((["--tasks", "nope"], "nope"), (["--methods", "ALICEZ"], "ALICEZ")):
        result = CliRunner().invoke(main, ["benchmark", "suite", *arguments, "--out", str(tmp_path)])
        assert result.exit_code == 2 and word in result.output
