"""The default posterior sampler on posteriors with separated modes, each mode's mass known exactly: its draws put
that mass in each mode and its R-hat says it mixed; where its kernels cannot cross between modes, it warns. And
the pieces that make it cross: the tempered start and the mixture proposal."""

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from sluice.inference.convergence import effective_sample_size
from sluice.inference.mcmc import StudentTMixture, fit_student_t_mixture, tempered_resample
from sluice.inference.posterior import mcmc_posterior
from sluice.simulators.priors import BoxUniform


class MixtureLikelihood:
    """log p(x|θ) = log Σ_k w_k N(θ; μ_k, σ_k² I), whatever x (``sigma``: one σ for all, or one per mode). Under a
    flat prior over a box that reaches far beyond every mode, the posterior is this mixture, mode k holding w_k."""

    def __init__(self, means, weights, sigma):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.log_weights = torch.log(torch.as_tensor(weights, dtype=torch.float64))
        self.sigma = torch.as_tensor(sigma, dtype=torch.float64).expand(self.means.shape[0])
        self.parameter_names_ = tuple(f"theta_{j}" for j in range(self.means.shape[1]))

    def log_likelihood(self, theta: torch.Tensor) -> torch.Tensor:
        squared = ((theta.double()[:, None] - self.means[None]) ** 2).sum(dim=2)  # [n, K]
        p = self.means.shape[1]
        return torch.logsumexp(self.log_weights - squared / (2 * self.sigma ** 2) - p * torch.log(self.sigma), dim=1)

    def log_ratio(self, x, theta0, theta1) -> torch.Tensor:
        return (self.log_likelihood(theta0) - self.log_likelihood(theta1)).float()

    def nearest_mode(self, theta: torch.Tensor) -> torch.Tensor:
        return ((theta.double()[..., None, :] - self.means) ** 2).sum(dim=-1).argmin(dim=-1)


def test_draws_put_each_separated_mode_s_exact_mass_in_it_and_r_hat_says_mixed():
    """Four modes of unequal mass 0.4, 0.3, 0.2, 0.1 at (±1.5, ±1.5, 0, 0, 0), σ = 0.1: neighbours lie 30σ apart,
    with a density e⁻¹¹² of the peaks' between them, which no random walk crosses; and the tempered start gives the
    modes nearly equal numbers of chains. So the right masses need the mixture proposal's jumps, at the right rates.
    Each mode's share of the draws lies within 5 standard errors √(w(1 − w)/ESS) of its mass, ESS that of the
    mode's indicator over the chains; and split R-hat ≤ 1.01, without a warning. (The single Student-t proposal
    before it: R-hat 1.07 after 10⁴ steps, and the warning.)"""
    means = [[a, b, 0.0, 0.0, 0.0] for a in (1.5, -1.5) for b in (1.5, -1.5)]
    weights = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    likelihood = MixtureLikelihood(means, weights, sigma=0.1)
    prior = BoxUniform(low=[-3.0] * 5, high=[3.0] * 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a mixed chain must not warn
        posterior = mcmc_posterior(likelihood, torch.zeros(1, 1), prior, n_samples=2000, seed=0)
    assert float(posterior.r_hat.max()) <= 1.01
    mode = likelihood.nearest_mode(posterior.chains)  # [W, m]
    for k, weight in enumerate(weights):
        in_mode = (mode == k).double()
        ess = min(float(effective_sample_size(in_mode.numpy())[0]), in_mode.numel())
        tolerance = 5 * math.sqrt(weight * (1 - weight) / ess)
        assert abs(float(in_mode.mean()) - float(weight)) < tolerance, (k, float(in_mode.mean()), tolerance)


def test_a_narrow_mode_holding_most_of_the_mass_is_found_and_given_its_mass():
    """Mode B, N((1.5, 0), 0.02²), holds 0.7 of the mass; mode A, N((−1, 0), 0.5²), 0.3 (the box U(−3, 3)² cuts
    3·10⁻⁵ of A's). A's tails outweigh B everywhere but within 0.13 of B's centre, 0.2 % of the prior, so chains
    started from a hundred prior draws rarely find B (the sampler before, so started, found none here: all its
    draws in A, R-hat 1.002, no warning). The tempered start resamples 10⁴ prior draws, of which a few fall near
    B and carry most of the weight, so chains start in B too. B's share of the draws (those within 0.2 = 10σ_B
    of its centre, where A has e⁻¹² of its peak density) lies within 5 standard errors √(w(1 − w)/ESS) of 0.7,
    and R-hat ≤ 1.01 without a warning."""
    likelihood = MixtureLikelihood([[-1.0, 0.0], [1.5, 0.0]], [0.3, 0.7], sigma=[0.5, 0.02])
    prior = BoxUniform(low=[-3.0, -3.0], high=[3.0, 3.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        posterior = mcmc_posterior(likelihood, torch.zeros(1, 1), prior, n_samples=1000, seed=0)
    assert float(posterior.r_hat.max()) <= 1.01
    in_narrow = ((posterior.chains.double() - torch.tensor([1.5, 0.0], dtype=torch.float64)).norm(dim=-1) < 0.2)
    in_narrow = in_narrow.double()
    ess = min(float(effective_sample_size(in_narrow.numpy())[0]), in_narrow.numel())
    assert abs(float(in_narrow.mean()) - 0.7) < 5 * math.sqrt(0.7 * 0.3 / ess), float(in_narrow.mean())


def test_chains_in_more_separated_modes_than_the_proposal_has_components_warn():
    """32 equal modes of σ = 0.05 at the corners (±1.5)⁵: more than the 8 components of the mixture proposal, so
    most modes have none, and a component spread over several modes proposes a point inside one with a chance of
    about (0.05/1.5)⁵. The chains stay in the modes where they started, and R-hat, comparing them, must say so."""
    means = list(itertools.product([-1.5, 1.5], repeat=5))
    likelihood = MixtureLikelihood(means, [1 / 32] * 32, sigma=0.05)
    prior = BoxUniform(low=[-3.0] * 5, high=[3.0] * 5)
    with pytest.warns(UserWarning, match="not mixed.*separate modes"):
        posterior = mcmc_posterior(likelihood, torch.zeros(1, 1), prior, n_samples=400, max_steps=600, seed=0)
    assert float(posterior.r_hat.max()) > 1.01
    assert likelihood.nearest_mode(posterior.chains).unique().numel() > 1  # the chains sit in several modes


def test_tempered_resampling_is_plain_resampling_when_it_can_and_keeps_distinct_starts_when_not():
    """Weights L^β: β = 1 when the untempered weights already keep the ESS asked for, and each draw is then picked
    ⌊n w⌋ or ⌈n w⌉ times (systematic resampling); for weights so sharp that one draw would take nearly all,
    β < 1 keeps 200 effective draws, so 100 starts are mostly distinct."""
    generator = np.random.default_rng(0)
    draws = generator.uniform(-3, 3, size=(1000, 2))
    flat = -0.01 * (draws ** 2).sum(axis=1)
    picked, _ = tempered_resample(draws, flat, 500, 100, generator)
    weights = np.exp(flat - flat.max())
    weights /= weights.sum()
    counts = np.bincount(picked, minlength=1000)
    assert np.all((counts >= np.floor(500 * weights)) & (counts <= np.ceil(500 * weights)))
    sharp = -50.0 * (draws ** 2).sum(axis=1)
    assert 1 / (np.exp(2 * (sharp - sharp.max())).sum() / np.exp(sharp - sharp.max()).sum() ** 2) < 10
    picked, covariance = tempered_resample(draws, sharp, 100, 200, generator)
    assert len(set(picked.tolist())) > 50
    assert covariance.shape == (2, 2) and np.all(np.linalg.eigvalsh(covariance) > 0)


def test_mixture_fit_finds_separated_clusters_and_the_student_t_mixture_is_a_density_it_samples():
    """EM with BIC on 3 well separated Gaussian clusters (weights 0.5, 0.3, 0.2) finds 3 components, their weights
    within 5 binomial standard errors of the truth. The Student-t mixture's density sums to 1 over a grid (to the
    grid's quadrature error, 1e-3); and its draws follow it: for one component, δᵀΣ⁻¹δ/p ~ F(p, ν), so the
    fraction of draws below the F median is 1/2 within 5 binomial standard errors."""
    generator = np.random.default_rng(1)
    centres, weights = np.array([[-4.0, 0.0], [0.0, 4.0], [4.0, 0.0]]), np.array([0.5, 0.3, 0.2])
    labels = generator.choice(3, size=2000, p=weights)
    points = centres[labels] + 0.5 * generator.standard_normal((2000, 2))
    mixture = fit_student_t_mixture(points, 8, generator)
    assert mixture.weights.shape == (3,)
    order = np.argsort(mixture.means[:, 0] - 0.1 * mixture.means[:, 1])  # left, top, right
    assert np.all(np.abs(mixture.weights[order] - weights) < 5 * np.sqrt(weights * (1 - weights) / 2000))
    axis = np.linspace(-40, 40, 801)
    grid = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)
    assert np.exp(mixture.log_prob(grid)).sum() * (axis[1] - axis[0]) ** 2 == pytest.approx(1.0, abs=1e-3)
    covariance = np.array([[2.0, 0.5], [0.5, 1.0]])
    one = StudentTMixture(np.ones(1), np.array([[1.0, -1.0]]), covariance[None], dof=5.0)
    delta = one.sample(20_000, generator) - np.array([1.0, -1.0])
    statistic = np.einsum("ni,ij,nj->n", delta, np.linalg.inv(covariance), delta) / 2
    below = float((statistic < stats.f.median(2, 5)).mean())
    assert abs(below - 0.5) < 5 * math.sqrt(0.25 / 20_000)
