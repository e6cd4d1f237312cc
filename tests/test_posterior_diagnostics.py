"""Posterior diagnostics against a Gaussian toy whose posterior is exact: C2ST (sbibm's protocol), SBC, TARP and
posterior predictive checks pass the true posterior and fail one too narrow and one too wide; the figures are drawn.

The toy: θ ∈ R² with prior N(0, 2² I), events x_i ~ N(θ, I). After n events the posterior is
N(Σ x_i / λ, I/λ) with λ = 1/4 + n, sampled exactly (no training); the wrong posteriors keep its mean and scale
its spread by 1/2 (too narrow) or 2 (too wide), which leaves the truth as often below as above the draws.
"""

import math
import sys

import pytest
import torch
from scipy import stats
from torch.distributions import Independent, Normal

import sluice
from sluice import plots
from sluice.inference.diagnostics import (
    c2st,
    posterior_predictive_check,
    sbc_ranks,
    sbc_uniformity,
    standardize_by_reference,
    tarp,
    tarp_coverage,
)
from sluice.simulators.priors import sample_prior

LEVEL = 1e-3  # significance of every calibration test: the true posterior fails one once in 1000 seeds
DRAWS = 19  # posterior draws per data set: ranks 0…19, pooled by sbc_uniformity into 5 groups of 4
N_EVENTS = 10
PRIOR_SD = 2.0
WRONG_WIDTHS = pytest.mark.parametrize("width", [0.5, 2.0], ids=["too-narrow", "too-wide"])
# Power: with 200 data sets (300 for TARP, whose KS test on reference-point distances is the weakest of the three),
# the seeds 0…19 rejected both wrong widths at LEVEL in every one of the three tests (median p-values 1e-10…1e-5),
# and never the true posterior (median p ≈ 0.4–0.5).
N_SIMULATIONS = 200
N_TARP = 300


class GaussianMean(sluice.Simulator):
    """x ~ N(θ, I₂): z is the standard normal noise."""

    parameter_names = ("mu_0", "mu_1")

    def sample(self, theta, generator=None):
        noise = torch.randn(theta.shape, generator=generator)
        return theta + noise, noise

    def joint_log_prob(self, x, z, theta):
        return Normal(theta, 1.0).log_prob(x).sum(dim=1)


@pytest.fixture(scope="module")
def toy():
    return GaussianMean()


@pytest.fixture(scope="module")
def prior():
    return Independent(Normal(torch.zeros(2), PRIOR_SD * torch.ones(2)), 1)


def posterior_sampler(width: float = 1.0):
    """The exact posterior after x [n, 2] (``width`` 1), or one with its spread scaled by ``width``:
    (x, n, seed) → [n, 2], as sbc_ranks and tarp call it."""
    def sampler(x, n, seed):
        precision = PRIOR_SD**-2 + x.shape[0]
        mean = x.sum(dim=0) / precision
        return mean + width * precision**-0.5 * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
    return sampler


# --- C2ST ------------------------------------------------------------------------------------------------------------


def test_c2st_scores_the_reference_in_its_own_units():
    reference = torch.randn(300, 2, generator=torch.Generator().manual_seed(1)) * torch.tensor([3.0, 0.1]) + 5.0
    samples = reference + 1.0
    scaled_reference, scaled_samples = standardize_by_reference(reference, samples)
    assert torch.allclose(scaled_reference.mean(dim=0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(scaled_reference.std(dim=0), torch.ones(2), atol=1e-5)
    # the samples move by the reference's scale, not by the pooled one
    assert torch.allclose(scaled_samples - scaled_reference, 1.0 / reference.std(dim=0), atol=1e-5)


def test_c2st_is_at_chance_for_one_distribution_and_near_one_for_two_far_apart():
    pytest.importorskip("sklearn")
    generator = torch.Generator().manual_seed(3)
    n = 500
    a, b = torch.randn(n, 2, generator=generator), torch.randn(n, 2, generator=generator)
    # every one of the 2n points is classified once, by a classifier that did not train on it; for one
    # distribution each guess is right with probability 1/2 whatever the classifier, so the accuracy is 1/2 with
    # the binomial standard deviation √(1/(4·2n)) (the folds share training points, which couples their guesses
    # only weakly: over 12 seeds the spread was 1.1 times the binomial one)
    assert abs(c2st(a, b) - 0.5) < 5 * math.sqrt(0.25 / (2 * n))
    # N(0, I) against N((6, 0), I): the Bayes classifier cuts halfway, right with probability Φ(3) = 0.99865; no
    # classifier does better, and the MLP reaches it up to the binomial error of 2n held-out guesses
    bayes = float(stats.norm.cdf(3.0))
    accuracy = c2st(a, b + torch.tensor([6.0, 0.0]))
    assert bayes - 5 * math.sqrt(bayes * (1 - bayes) / (2 * n)) < accuracy <= 1.0


def test_c2st_keeps_the_torch_classifier_as_a_method():
    generator = torch.Generator().manual_seed(4)
    n = 200
    a, b = torch.randn(n, 1, generator=generator), torch.randn(n, 1, generator=generator)
    assert abs(c2st(a, b, epochs=50, method="torch") - 0.5) < 5 * math.sqrt(0.25 / (2 * n))  # as for the default
    bayes = float(stats.norm.cdf(3.0))
    assert c2st(a, b + 6.0, epochs=50, method="torch") > bayes - 5 * math.sqrt(bayes * (1 - bayes) / (2 * n))
    with pytest.raises(ValueError, match="not one of"):
        c2st(a, b, method="forest")


def test_c2st_without_scikit_learn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now raises ImportError
    monkeypatch.setitem(sys.modules, "sklearn.model_selection", None)
    monkeypatch.setitem(sys.modules, "sklearn.neural_network", None)
    with pytest.raises(ImportError, match=r"sluice-sbi\[sklearn\]"):
        c2st(torch.zeros(10, 1), torch.ones(10, 1))


# --- SBC -------------------------------------------------------------------------------------------------------------


def test_sbc_passes_the_exact_posterior(toy, prior):
    ranks = sbc_ranks(posterior_sampler(), toy, prior, N_EVENTS, N_SIMULATIONS, DRAWS, seed=0)
    assert ranks.shape == (N_SIMULATIONS, 2)
    assert torch.all(sbc_uniformity(ranks, DRAWS) > LEVEL)


@WRONG_WIDTHS
def test_sbc_fails_a_posterior_too_narrow_or_too_wide(toy, prior, width):
    ranks = sbc_ranks(posterior_sampler(width), toy, prior, N_EVENTS, N_SIMULATIONS, DRAWS, seed=0)
    assert torch.all(sbc_uniformity(ranks, DRAWS) < LEVEL)


# --- TARP ------------------------------------------------------------------------------------------------------------


def test_tarp_passes_the_exact_posterior(toy, prior):
    result = tarp(posterior_sampler(), toy, prior, N_EVENTS, N_TARP, DRAWS, seed=0)
    assert result.p_value > LEVEL
    # the KS distance of the randomised fractions stays under its (1 − LEVEL) quantile; the curve of the
    # unrandomised ones is within 1/(S + 1) of it
    assert result.max_deviation < stats.kstwo.ppf(1 - LEVEL, N_TARP) + 1 / (DRAWS + 1)
    assert result.coverage[0] == 0.0 and result.credibility[-1] == 1.0


@WRONG_WIDTHS
def test_tarp_fails_a_posterior_too_narrow_or_too_wide(toy, prior, width):
    result = tarp(posterior_sampler(width), toy, prior, N_EVENTS, N_TARP, DRAWS, seed=0)
    assert result.p_value < LEVEL


def test_tarp_of_draws_that_are_the_truths_own_distribution_follows_the_diagonal():
    """When the truth is one more draw of the same distribution, S·f is uniform on 0…S whatever the
    references: ECP(c) = ⌈cS⌉/(S + 1) exactly in expectation, within 5 binomial errors of K data sets."""
    generator = torch.Generator().manual_seed(5)
    n_sets, n_draws = 4000, 9
    both = torch.randn(n_sets, n_draws + 1, 3, generator=generator)
    result = tarp_coverage(both[:, 1:], both[:, 0], references=torch.randn(n_sets, 3, generator=generator))
    expected = torch.ceil(result.credibility.double() * n_draws) / (n_draws + 1)
    error = torch.sqrt(expected * (1 - expected) / n_sets).clamp_min(1e-12)
    assert torch.all((result.coverage.double() - expected).abs() <= 5 * error)


# --- posterior predictive checks -------------------------------------------------------------------------------------


def split_predictive_p_values(toy, prior, width: float, n_conditioning: int = 5, n_held_out: int = 50,
                              seed: int = 0) -> torch.Tensor:
    """Ranks 0…DRAWS of the summary PPC p-values over N_SIMULATIONS data sets θ* ~ prior: the posterior is
    conditioned on ``n_conditioning`` events and checked against ``n_held_out`` others, so that, for the exact
    posterior, the held-out mean and the DRAWS replicated means are exchangeable and the p-value
    (1 + rank)/(DRAWS + 1) is uniform. Many held-out events make the predictive spread mostly the posterior's,
    which is what the check should see."""
    truths = sample_prior(prior, N_SIMULATIONS, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    ranks = torch.empty(N_SIMULATIONS, dtype=torch.long)
    for k in range(N_SIMULATIONS):
        x, _ = toy.sample(truths[k].expand(n_conditioning + n_held_out, -1), generator=generator)
        draws = posterior_sampler(width)(x[:n_conditioning], DRAWS, seed + k)
        check = posterior_predictive_check(toy, draws, x[n_conditioning:], seed=seed + k)
        ranks[k] = round(check.p_value * (DRAWS + 1)) - 1
    return ranks[:, None]


def test_posterior_predictive_check_passes_the_exact_posterior(toy, prior):
    assert float(sbc_uniformity(split_predictive_p_values(toy, prior, 1.0), DRAWS)[0]) > LEVEL


@WRONG_WIDTHS
def test_posterior_predictive_check_fails_a_posterior_too_narrow_or_too_wide(toy, prior, width):
    """Too narrow: the held-out data fall outside the replicates (small p-values); too wide: inside their bulk
    (large p-values); either way the p-values are not uniform."""
    assert float(sbc_uniformity(split_predictive_p_values(toy, prior, width), DRAWS)[0]) < LEVEL


def test_posterior_predictive_check_flags_data_the_posterior_cannot_make(toy):
    draws = torch.zeros(99, 2)  # a posterior sure that θ = 0
    observed = torch.tensor([[0.0, 10.0]]).expand(20, -1)  # the mean event (0, 10): 44 σ away in its second part
    check = posterior_predictive_check(toy, draws, observed, seed=0)
    assert check.replicated.shape == (99, 2)
    assert float(check.percentiles[1]) == 1.0 and int(check.ranks[1]) == 99
    assert float(check.p_values[1]) == pytest.approx(2 / 100)  # the smallest two-sided value with 99 replicates
    assert check.p_value == pytest.approx(1 / 100)  # the observed mean is the farthest of the 100
    # its first part, at the posterior's centre, is typical: a two-sided p-value is far from small
    assert float(check.p_values[0]) > 0.01


# --- figures ---------------------------------------------------------------------------------------------------------


def test_diagnostic_figures_are_returned_and_written_only_when_asked(toy, prior, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    monkeypatch.chdir(tmp_path)
    ranks = sbc_ranks(posterior_sampler(), toy, prior, N_EVENTS, 40, DRAWS, seed=1)
    result = tarp(posterior_sampler(), toy, prior, N_EVENTS, 40, DRAWS, seed=1)
    x, _ = toy.sample(torch.zeros(N_EVENTS, 2), generator=torch.Generator().manual_seed(2))
    draws = posterior_sampler()(x, 500, 3)
    check = posterior_predictive_check(toy, draws[:99], x, seed=4)
    reference = posterior_sampler()(x, 500, 5)
    figures = [plots.plot_sbc_ranks(ranks, DRAWS, names=["μ₀", "μ₁"]),
               plots.plot_tarp({"exact": result, "too wide": tarp(posterior_sampler(2.0), toy, prior, N_EVENTS, 40,
                                                                  DRAWS, seed=1)}),
               plots.plot_predictive_check(check),
               plots.corner_plot(draws, reference=reference, truth=[0.0, 0.0], names=["μ₀", "μ₁"])]
    assert all(isinstance(figure, Figure) for figure in figures)
    assert list(tmp_path.iterdir()) == []
    plots.corner_plot(draws, path=str(tmp_path / "corner.png"))
    plots.plot_tarp(result, path=str(tmp_path / "tarp.png"))
    for name in ("corner.png", "tarp.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
