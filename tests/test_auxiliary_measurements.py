"""Auxiliary measurements (global observables) of constrained nuisance parameters: the constraint term c(α; a),
toys that draw their own a, the Asimov data set's a = α, and Neyman thresholds over a scanned nuisance
parameter that are exactly χ² for a linear-Gaussian model because each toy fluctuates its auxiliary measurement.

The model: x ~ N(θ + α, 1) per event, a constant expected count ν, and a unit Gaussian constraint on α. Its
sufficient statistics (x̄, a) determine (θ, α) linearly, so q(θ_true, α_true) is exactly χ²₂ when a ~ N(α_true, 1)
is drawn with the data, and α_true² + χ²₁ when a is held at 0."""

from __future__ import annotations

import math

import pytest
import torch

import sluice
from conftest import assert_mean_close
from sluice.inference import asimov_scan, make_grid, neyman_thresholds, scan, wilks_threshold
from sluice.inference.extended import ExtendedTerm
from sluice.simulators.systematics import Nuisance

NU = 40.0
NAMES = ("theta", "alpha")


class Shifted(sluice.Simulator):
    """x ~ N(θ + α, 1): one event per row of θ = (theta, alpha); also its own exact estimator (``log_ratio``)."""

    parameter_names = NAMES
    parameter_names_ = NAMES

    def sample(self, theta, generator=None):
        theta = torch.as_tensor(theta, dtype=torch.float32)
        mean = theta[:, 0] + theta[:, 1]
        return (mean + torch.randn(theta.shape[0], generator=generator))[:, None], {}

    def joint_log_prob(self, x, z, theta):
        return -0.5 * (x[:, 0] - theta[:, 0] - theta[:, 1]) ** 2

    def log_ratio(self, x, theta0, theta1):
        x = torch.as_tensor(x, dtype=torch.float64)[:, 0]
        theta0 = torch.as_tensor(theta0, dtype=torch.float64).reshape(-1, 2)
        theta1 = torch.as_tensor(theta1, dtype=torch.float64).reshape(-1, 2)
        return 0.5 * ((x - theta1[:, 0] - theta1[:, 1]) ** 2 - (x - theta0[:, 0] - theta0[:, 1]) ** 2)


def rate_term(auxiliary=None) -> ExtendedTerm:
    return ExtendedTerm(lambda thetas: NU + 0.0 * thetas[:, 0], 1.0, constraints=[Nuisance("alpha")],
                        parameter_names=NAMES, auxiliary=auxiliary)


def test_the_constraint_is_the_likelihood_of_the_auxiliary_measurement():
    gaussian, lognormal = Nuisance("jes", width=0.5), Nuisance("lumi", "lognormal", width=0.1)
    alpha = torch.tensor([-0.4, 0.0, 0.3, 1.2], dtype=torch.float64)
    # a Gaussian term is symmetric in (α, a) and equal to the nominal one shifted by a
    swapped = gaussian.log_constraint(torch.tensor(0.7, dtype=torch.float64), alpha)
    torch.testing.assert_close(gaussian.log_constraint(alpha, 0.7), swapped)
    torch.testing.assert_close(gaussian.log_constraint(alpha, 0.7), gaussian.log_constraint(alpha - 0.7))
    torch.testing.assert_close(gaussian.log_constraint(alpha), gaussian.log_constraint(alpha, 0.0))
    # a log-normal term is Gaussian in log(1 + α) around log(1 + a)
    expected = -0.5 * ((torch.log1p(alpha) - math.log(1.05)) / 0.1) ** 2 - math.log(0.1 * math.sqrt(2 * math.pi))
    torch.testing.assert_close(lognormal.log_constraint(alpha, 0.05), expected)
    assert float(lognormal.log_constraint(torch.tensor(-1.5), 0.05)) == -math.inf


@pytest.mark.parametrize("nuisance", [Nuisance("jes", width=0.5), Nuisance("lumi", "lognormal", width=0.1)],
                         ids=["gaussian", "lognormal"])
def test_auxiliary_draws_follow_the_constraint_around_alpha(nuisance):
    """a ~ N(α, s²), or log(1 + a) ~ N(log(1 + α), s²): the mean and variance of the transformed draws within
    5 standard errors; at α = 0 the draws equal ``sample``'s with the same generator."""
    alpha = 0.3
    draws = nuisance.sample_auxiliary(torch.full((20_000,), alpha), torch.Generator().manual_seed(1))
    values = draws if nuisance.constraint == "gaussian" else torch.log1p(draws)
    centre = alpha if nuisance.constraint == "gaussian" else math.log1p(alpha)
    assert_mean_close(values, centre, "auxiliary draws")
    assert_mean_close((values - centre) ** 2, nuisance.width**2, "their variance")
    torch.testing.assert_close(nuisance.sample_auxiliary(torch.zeros(50), torch.Generator().manual_seed(2)),
                               nuisance.sample(50, torch.Generator().manual_seed(2)))


def test_the_asimov_data_set_carries_the_nuisance_values_as_auxiliary_measurements():
    """At θ_true = (0.5, 1.0) the Asimov scan's MLE is θ_true itself; were a held at 0, the constraint would pull
    α̂ to 0 and θ̂ to 1.5 (x̄ fixes only θ + α)."""
    model = Shifted()
    grid = make_grid([-0.5, 0.0], [1.5, 2.0], 9)
    result = asimov_scan(model, model, torch.tensor([0.5, 1.0]), None, grid, n_samples=20_000, rate=rate_term())
    torch.testing.assert_close(result.mle.double(), torch.tensor([0.5, 1.0], dtype=torch.float64), atol=0.02, rtol=0)
    nominal = scan(model, *_asimov(model, torch.tensor([0.5, 1.0])), rate=rate_term().replace(n_observed=NU))
    assert float(nominal.mle[1]) < 0.25 and float(nominal.mle[0]) > 1.2  # the conditional fit is pulled


def _asimov(model, theta, n_samples=20_000):
    x, _ = model.sample(theta.expand(n_samples, 2), generator=torch.Generator().manual_seed(0))
    return x, make_grid([-0.5, 0.0], [1.5, 2.0], 9), torch.full((n_samples,), NU / n_samples)


def test_neyman_thresholds_over_a_scanned_nuisance_are_chi2_with_fluctuated_auxiliary_measurements():
    """q at the truth is exactly χ²₂ for this linear-Gaussian model when each toy draws a ~ N(α_g, 1): the
    thresholds at the interior grid points with α_g = ±3 average to the χ²₂ quantile within 5 standard errors of
    the toys' quantiles. Holding a at 0 would make q = 9 + χ²₁ there (68 % quantile ≈ 10, not 2.3)."""
    model = Shifted()
    level, n_toys = 0.68, 200
    grid = make_grid([-6.0, -6.0], [6.0, 6.0], 5)  # σ(α̂) = 1, σ(θ̂) ≈ 1: interior points 3σ from the edges
    thresholds = neyman_thresholds(model, model, grid, None, level=level, n_toys=n_toys, seed=3, rate=rate_term())
    chosen = (grid[:, 0].abs() < 4) & (grid[:, 1].abs() > 2) & (grid[:, 1].abs() < 4)
    quantile = wilks_threshold(level, 2)
    density = 0.5 * math.exp(-quantile / 2)  # χ²₂ density at its quantile
    error = math.sqrt(level * (1 - level) / n_toys) / density / math.sqrt(int(chosen.sum()))
    assert int(chosen.sum()) == 6
    assert abs(float(thresholds[chosen].mean()) - quantile) <= 5 * error, thresholds[chosen]


def test_bad_auxiliary_measurements_are_named():
    with pytest.raises(ValueError, match="no constraint"):
        rate_term({"jes": 0.5})
    with pytest.raises(ValueError, match="2 auxiliary measurements for 1 constraints"):
        rate_term([0.1, 0.2])
    with pytest.raises(ValueError, match="must be finite"):
        rate_term([math.nan])
    with pytest.raises(ValueError, match="1 \\+ a > 0"):
        ExtendedTerm(lambda thetas: thetas[:, 0], 1.0, constraints=[Nuisance("lumi", "lognormal", width=0.1)],
                     parameter_names=("lumi",), auxiliary={"lumi": -1.5})
    with pytest.raises(ValueError, match="must have shape \\[1\\] or \\[2, 1\\]"):
        rate_term().log_likelihood(torch.zeros(2, 2), 5.0, auxiliary=torch.zeros(3, 1))
    with pytest.raises(ValueError, match="must have shape"):
        rate_term().log_likelihood(torch.zeros(2, 2), 5.0, auxiliary=torch.zeros(2))
    with pytest.raises(TypeError, match="Nuisance objects"):
        ExtendedTerm(lambda thetas: thetas[:, 0], 1.0, constraints=[type("Old", (), {"name": "a",
                                                                                      "log_constraint": None})()])
    assert "auxiliary=[0.5]" in repr(rate_term({"alpha": 0.5}))
