"""The extended likelihood (sluice.inference.extended) and the scans' ``rate=`` option: the Poisson term's score,
what the scans add, that the rate can only narrow the expected interval, profiling a constrained normalisation,
and Neyman thresholds from toys with Poisson counts."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

import sluice
from conftest import assert_mean_close
from sluice.inference import asimov_scan, neyman_thresholds, profile_scan, scan
from sluice.inference.extended import ExtendedTerm, extended_log_likelihood
from sluice.simulators.morphing import monomials
from sluice.simulators.particle_toy import POWERS
from sluice.simulators.systematics import Nuisance

TOY = sluice.simulators.ParticleToy()
SM = torch.zeros(2)


def luminosity_for(n_events: float) -> float:
    """L such that ν(SM) = L σ(SM) = n_events."""
    return n_events / float(TOY.cross_section(SM.reshape(1, 2).double())[0])


class ExactToy:
    """The ParticleToy's exact detector-level log-likelihood behind the estimator interface, differentiable in θ
    (the scans' optimiser then takes autograd gradients instead of central differences)."""

    parameter_names_ = ("c1", "c2")

    def log_ratio(self, x, theta0, theta1):
        return TOY.log_likelihood(x, torch.as_tensor(theta0)) - TOY.log_likelihood(x, torch.as_tensor(theta1))

    def log_ratio_table(self, x, thetas, theta_ref):
        """[G, n] with the detector components K_m(x) computed once: log p(x|θ) = log Σ_m c_m(θ) K_m(x) − log σ(θ)."""
        components = TOY.detector_components(x)
        thetas = torch.cat([torch.as_tensor(thetas), torch.as_tensor(theta_ref).reshape(1, -1)]).double()
        log_p = torch.log(monomials(thetas, POWERS) @ components.T) - torch.log(TOY.cross_section(thetas))[:, None]
        return (log_p[:-1] - log_p[-1]).float()


class GaussianShape:
    """x ~ N(μ, 1) whatever the normalisation ``norm``: log r(x|θ0, θ1) = [(x − μ1)² − (x − μ0)²]/2, θ = (mu, norm)."""

    parameter_names_ = ("mu", "norm")

    def log_ratio(self, x, theta0, theta1):
        x = torch.as_tensor(x, dtype=torch.float64).reshape(-1)
        mu0, mu1 = torch.as_tensor(theta0)[:, 0].double(), torch.as_tensor(theta1)[:, 0].double()
        return 0.5 * ((x - mu1) ** 2 - (x - mu0) ** 2)


def gaussian_cross_section(thetas):
    """σ(μ, norm) = e^(μ/2) (1 + norm): μ changes the rate and the shape, the normalisation only the rate."""
    return torch.exp(0.5 * thetas[:, 0]) * (1.0 + thetas[:, 1])


def test_poisson_score_has_mean_zero_at_the_true_theta():
    """∂/∂θ log Poisson(n | L σ(θ)) = (n/ν − 1) L ∂σ/∂θ (here ∂σ/∂c1 = 8/3 + 8/3 c1, ∂σ/∂c2 = 4 c2 in closed
    form) averages to zero over n ~ Poisson(ν(θ_true)), and not at another θ."""
    theta_true = torch.tensor([0.3, -0.2], dtype=torch.float64)
    term = ExtendedTerm(TOY.cross_section, luminosity_for(40.0))
    nu = float(term.expected_events(theta_true[None])[0])
    counts = torch.poisson(torch.full((4000,), nu, dtype=torch.float64), generator=torch.Generator().manual_seed(0))
    _, scores = term.values_and_gradient(theta_true.expand(len(counts), -1), counts)
    gradient = term.luminosity * torch.tensor([8 / 3 + 8 / 3 * 0.3, 4 * -0.2], dtype=torch.float64)
    assert torch.allclose(scores, (counts / nu - 1.0)[:, None] * gradient, rtol=1e-10)
    assert_mean_close(scores, torch.zeros(2), "the rate term's score at θ_true")
    _, elsewhere = term.values_and_gradient(torch.tensor([[0.5, -0.2]]).double().expand(len(counts), -1), counts)
    error = elsewhere[:, 0].std() / math.sqrt(len(counts))
    assert abs(float(elsewhere[:, 0].mean())) > 5 * float(error), "the score must not average to zero away from θ_true"


def test_scan_adds_the_poisson_log_ratio_to_the_shape_term():
    """scan(..., rate) − scan(...) is n ln[ν(θ)/ν(θ_ref)] − [ν(θ) − ν(θ_ref)] at every grid point, n the number of
    events (weights: Σ w), θ_ref the scan's reference point; extended_log_likelihood gives the same sum."""
    x, _ = TOY.sample(SM.expand(30, 2), generator=torch.Generator().manual_seed(1))
    grid = sluice.inference.make_grid([-0.8, -0.5], [0.8, 0.5], [9, 5])
    term = ExtendedTerm(TOY.cross_section, luminosity_for(25.0))
    shape_only = scan(ExactToy(), x, grid, refine=False)
    extended = scan(ExactToy(), x, grid, refine=False, rate=term)
    nu = term.expected_events(grid.double())
    nu_ref = nu[grid.shape[0] // 2]
    closed_form = 30 * torch.log(nu / nu_ref) - (nu - nu_ref)
    difference = (extended.log_likelihood_ratio - shape_only.log_likelihood_ratio).double()
    rounding = 1e-6 * (shape_only.log_likelihood_ratio.abs() + closed_form.abs() + 1).double()  # float32 sums
    assert torch.all((difference - closed_form).abs() < rounding)
    direct = extended_log_likelihood(ExactToy(), x, grid, term)
    assert torch.allclose(direct.float(), extended.log_likelihood_ratio, rtol=1e-5, atol=1e-4)


def test_rate_term_narrows_the_expected_interval_on_the_particle_toy():
    """The expected (Asimov) region of the extended likelihood lies inside the shape-only one, and is strictly
    narrower in c1, which changes σ at linear order (σ = 46/15 + 8/3 c1 + 4/3 c1² + 2 c2²): the rate adds the
    Fisher information (∂ν/∂c1)²/ν > 0 and nothing negative."""
    grid = sluice.inference.make_grid([-0.6, 0.0], [0.6, 0.0], [49, 1])  # c1 along the grid, c2 = 0
    term = ExtendedTerm(TOY.cross_section, luminosity_for(60.0))
    shape_only = asimov_scan(ExactToy(), TOY, SM, 60.0, grid, n_samples=2000, seed=2)
    extended = asimov_scan(ExactToy(), TOY, SM, None, grid, n_samples=2000, seed=2, rate=term)
    for level in (0.68, 0.95):
        inside_extended, inside_shape = extended.region(level), shape_only.region(level)
        assert not (inside_extended & ~inside_shape).any(), f"{level}: the rate term added points to the region"
        low, high = extended.interval(level)
        shape_low, shape_high = shape_only.interval(level)
        assert high - low < shape_high - shape_low, f"{level}: the rate term did not narrow the c1 interval"


def test_rate_scans_need_consistent_counts():
    term = ExtendedTerm(TOY.cross_section, luminosity_for(60.0))
    grid = sluice.inference.make_grid([-0.2, 0.0], [0.2, 0.0], [3, 1])
    with pytest.raises(ValueError, match="ν\\(θ_true\\)"):
        asimov_scan(ExactToy(), TOY, SM, 50.0, grid, n_samples=10, rate=term)
    with pytest.raises(ValueError, match="not both"):
        neyman_thresholds(ExactToy(), TOY, grid, 10, rate=term)


NU = 400.0  # ν(μ = 0, norm = 0) in the Gaussian-shape tests: luminosity 400 for σ = 1


def asimov_gaussian(n_points: int = 400, nu: float = NU):
    """The Asimov data of N(0, 1) as n_points quantiles, weighted to Σ w = ν: symmetric, so the shape's
    maximum is at μ = 0 exactly."""
    x = torch.special.ndtri((torch.arange(n_points, dtype=torch.float64) + 0.5) / n_points).float()[:, None]
    return x, torch.full((n_points,), nu / n_points)


def test_profiling_a_constrained_normalisation_interpolates_between_rate_and_shape_only():
    """The rate measures log ν = log ν0 + μ/2 + log(1 + norm); profiling the normalisation with a constraint of
    width w leaves the rate an information (1/4)/(1/ν + w²) on μ: with w → 0 the profiled scan equals the scan
    with the normalisation fixed at its nominal value, with w → ∞ it equals the shape-only profile, and in
    between q(μ) falls as w grows."""
    x, weights = asimov_gaussian()
    grid = torch.linspace(-0.15, 0.15, 7)
    bounds = {"norm": (-0.5, 0.5)}

    def profiled(width):
        rate = None if width is None else ExtendedTerm(gaussian_cross_section, NU,
                                                       constraints=[Nuisance("norm", "gaussian", width)])
        return profile_scan(GaussianShape(), x, grid, ["mu"], bounds, weights=weights, rate=rate).q.double()

    fixed_grid = torch.stack([grid, torch.zeros_like(grid)], dim=1)
    fixed = scan(GaussianShape(), x, fixed_grid, weights=weights, refine=False,
                 rate=ExtendedTerm(gaussian_cross_section, NU)).q.double()
    narrow, medium, wide, shape_only = (profiled(w) for w in (1e-4, 0.05, 1e3, None))
    # a width w shifts q by a fraction ν w² of the rate's part (4e-6 at w = 1e-4; 4e-4 of the shape's at w = 1e3)
    assert torch.allclose(narrow, fixed, rtol=1e-4, atol=1e-4)
    assert torch.allclose(wide, shape_only, rtol=1e-3, atol=1e-4)
    off_centre = grid.abs() > 1e-6
    assert torch.all(narrow[off_centre] > medium[off_centre]) and torch.all(medium[off_centre] > wide[off_centre])
    # the quadratic expectation: q(μ) = ν μ² [1 + (1/4) / (1 + ν w²)], to the rate's cubic term (|μ|/6 relative)
    width = 0.05
    quadratic = NU * grid.double() ** 2 * (1 + 0.25 / (1 + NU * width**2))
    assert torch.all((medium - quadratic).abs() <= grid.double().abs() / 6 * quadratic + 1e-6)


class Nothing(sluice.Simulator):
    """Events whose distribution does not depend on θ = (c,): only their number carries information."""

    parameter_names = ("c",)

    def sample(self, theta, generator=None):
        return torch.randn(theta.shape[0], 1, generator=generator), {}

    def joint_log_prob(self, x, z, theta):
        return torch.zeros(x.shape[0])


class Flat:
    """log r ≡ 0: the shape term of ``Nothing``."""

    parameter_names_ = ("c",)

    def log_ratio(self, x, theta0, theta1):
        return torch.zeros(torch.as_tensor(x).shape[0])


def test_neyman_thresholds_with_poisson_counts_are_the_exact_poisson_quantiles():
    """With a rate term and no shape information q(θ_g) = −2[log P(n|ν(θ_g)) − max_grid log P(n|ν)] depends on
    n alone, so its exact distribution under n ~ Poisson(ν(θ_g)) follows by summing over n: the toys'
    threshold t at the 68 % level must satisfy P(q < t) ≤ 0.68 ≤ P(q ≤ t) up to the toys' binomial error."""
    grid = torch.linspace(-0.4, 0.4, 5)[:, None]
    term = ExtendedTerm(lambda thetas: 20.0 * torch.exp(thetas[:, 0]), 1.0)
    n_toys = 2000
    thresholds = neyman_thresholds(Flat(), Nothing(), grid, None, level=0.68, n_toys=n_toys, seed=4, refine=False,
                                   rate=term)
    nus = term.expected_events(grid.double())
    counts = torch.arange(0, 200, dtype=torch.float64)
    log_p = torch.stack([torch.from_numpy(stats.poisson.logpmf(counts.numpy(), float(nu))) for nu in nus])  # [G, N]
    tolerance = 5.0 * math.sqrt(0.68 * 0.32 / n_toys)  # 5 binomial standard errors of the toys' quantile
    for g in range(grid.shape[0]):
        q = -2.0 * (log_p[g] - log_p.max(dim=0).values)
        probability = torch.exp(log_p[g])
        below = float(probability[q < thresholds[g].double() - 1e-4].sum())
        at_or_below = float(probability[q <= thresholds[g].double() + 1e-4].sum())
        assert below <= 0.68 + tolerance and at_or_below >= 0.68 - tolerance, \
            f"θ = {float(grid[g])}: P(q < t) = {below:.3f}, P(q ≤ t) = {at_or_below:.3f}"


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="luminosity must be a positive"):
        ExtendedTerm(TOY.cross_section, 0.0)
    with pytest.raises(ValueError, match="luminosity must be a positive"):
        ExtendedTerm(TOY.cross_section, -3.0)
    with pytest.raises(ValueError, match="θ does not have: \\['jes'\\]"):
        ExtendedTerm(TOY.cross_section, 1.0, constraints=[Nuisance("jes")], parameter_names=("c1", "c2"))
    with pytest.raises(ValueError, match="need parameter_names"):
        ExtendedTerm(TOY.cross_section, 1.0, constraints=[Nuisance("jes")]).log_likelihood(torch.zeros(1, 3), 5.0)
    with pytest.raises(TypeError, match="callable"):
        ExtendedTerm(3.0, 1.0)
