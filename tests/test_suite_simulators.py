"""The six benchmark-suite simulators: a normalised exact likelihood, a joint density that is the one written here,
whose marginal over z is the exact likelihood, unbiased joint quantities, and the shapes and errors of the API.

Each simulator's conditional p(x | z, θ) and latent p(z | θ) are written out again below, from the formulas in
its docstring, so that the joint density and the exact likelihood are checked against an independent reading.
"""

import math

import pytest
import torch

import sluice
from conftest import assert_mean_close
from sluice.simulators import BUILT_IN
from sluice.simulators.suite import (
    SLCP,
    SUITE_SIMULATORS,
    GammaShapeMixture,
    OverdispersedCounts,
    RotatedLinear,
    StudentT,
    UniformWidth,
)

LOG_2PI = math.log(2.0 * math.pi)


def log_normal(value, mean, sd):
    return -0.5 * ((value - mean) / sd) ** 2 - torch.log(torch.as_tensor(sd, dtype=torch.float64)) - 0.5 * LOG_2PI


# log p(x | z, θ) and log p(z | θ), in float64, for x [n, d], z the simulator's dict, θ [n, p]
def student_t_conditional(sim, x, z, theta):
    sd = theta[:, 1:].exp() / z["precision"].sqrt()
    return log_normal(x, theta[:, :1], sd).sum(dim=1)


def student_t_latent(sim, z, theta):
    return (-z["precision"]).sum(dim=1)  # Gamma(1, rate 1), ν = 2


def linear_conditional(sim, x, z, theta):
    y = x @ sim.rotation
    return log_normal(y[:, :5], z["location"], 0.5).sum(dim=1) + log_normal(y[:, 5:], 0.0, 1.0).sum(dim=1)


def linear_latent(sim, z, theta):
    return log_normal(z["location"], theta, 0.5).sum(dim=1)


def count_rates(theta):
    u = torch.linspace(-1.0, 1.0, 8, dtype=torch.float64)
    return 20.0 * torch.exp(theta[:, 1:] * u) + theta[:, :1] * 15.0 * torch.exp(-((u - 0.2) ** 2) / (2 * 0.15**2))


def counts_conditional(sim, x, z, theta):
    rate = count_rates(theta) * z["overdispersion"]
    return (x * torch.log(rate) - rate - torch.lgamma(x + 1.0)).sum(dim=1)


def counts_latent(sim, z, theta):
    k, value = 10.0, z["overdispersion"]
    return (k * math.log(k) - math.lgamma(k) + (k - 1.0) * torch.log(value) - k * value).sum(dim=1)


def support_conditional(sim, x, z, theta):
    return log_normal(x, theta * z["uniform"], 0.1).sum(dim=1)


def support_latent(sim, z, theta):
    return torch.zeros(theta.shape[0], dtype=torch.float64)  # u ~ U(0, 1)²


def shape_conditional(sim, x, z, theta):
    k, rate = z["shape"].double(), theta[:, 1:].exp()
    return (k * torch.log(rate) + (k - 1.0) * torch.log(x) - rate * x - torch.lgamma(k)).sum(dim=1)


def shape_latent(sim, z, theta):
    m, lam = z["shape"].double() - 1.0, theta[:, :1].exp()
    return (m * torch.log(lam) - lam - torch.lgamma(m + 1.0)).sum(dim=1)


def slcp_conditional(sim, x, z, theta):
    s1, s2 = (0.3 + theta[:, 2:3] ** 2), (0.3 + theta[:, 3:4] ** 2)
    rho = 0.9 * torch.tanh(theta[:, 4:5])
    d1 = x[:, 0::2] - theta[:, 0:1] - z["offset"][:, 0:1]  # first coordinates of the four draws, [n, 4]
    d2 = x[:, 1::2] - theta[:, 1:2] - z["offset"][:, 1:2]
    quadratic = ((d1 / s1) ** 2 - 2 * rho * d1 * d2 / (s1 * s2) + (d2 / s2) ** 2) / (1 - rho**2)
    log_det = 2 * torch.log(s1 * s2) + torch.log(1 - rho**2)
    return (-0.5 * quadratic - 0.5 * log_det - LOG_2PI).sum(dim=1)


def slcp_latent(sim, z, theta):
    return log_normal(z["offset"], 0.0, 0.3).sum(dim=1)


# name: (θ inside the prior, the test's conditional, the test's latent density, x dimension)
CASES = {
    "student_t": ([0.3, -0.2], student_t_conditional, student_t_latent, 2),
    "linear20": ([0.5, -0.3, 0.0, 0.8, -0.9], linear_conditional, linear_latent, 20),
    "counts": ([1.2, 0.4], counts_conditional, counts_latent, 8),
    "support": ([1.3, 1.8], support_conditional, support_latent, 2),
    "shape": ([1.4, 0.2], shape_conditional, shape_latent, 2),
    "slcp": ([0.4, -0.6, 0.5, -0.3, 0.4], slcp_conditional, slcp_latent, 8),
}


def as_float64(z):
    return {key: value.double() if value.is_floating_point() else value for key, value in z.items()}


def test_suite_holds_the_six_simulators_and_each_is_built_in():
    assert set(SUITE_SIMULATORS) == set(CASES)
    for name, cls in SUITE_SIMULATORS.items():
        assert BUILT_IN[name] is cls


# (a) the exact likelihood is normalised


def midpoint_grid(low, high, points):
    step = (high - low) / points
    return low + step * (torch.arange(points, dtype=torch.float64) + 0.5), step


def grid_2d(first, second):
    xx, yy = torch.meshgrid(first, second, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], dim=1)


@pytest.mark.parametrize("theta", [[0.3, -0.2], [-0.9, 0.45]])
def test_student_t_likelihood_integrates_to_one(theta):
    """x = μ + σ tan φ maps R² onto (−π/2, π/2)², where the heavy tails become a smooth, vanishing integrand."""
    theta = torch.tensor(theta, dtype=torch.float64)
    phi, step = midpoint_grid(-math.pi / 2, math.pi / 2, 600)
    angles = grid_2d(phi, phi)
    sigma = theta[1].exp()
    x = theta[0] + sigma * torch.tan(angles)
    jacobian = (sigma / torch.cos(angles) ** 2).prod(dim=1)
    total = float((StudentT().log_likelihood(x, theta).exp() * jacobian).sum() * step**2)
    assert abs(total - 1.0) < 1e-4


@pytest.mark.parametrize("theta", [[1.0, 1.0], [1.3, 1.8], [2.0, 1.5]])
def test_support_likelihood_integrates_to_one(theta):
    """10 σ beyond each blurred edge the density is below e⁻⁵⁰."""
    theta = torch.tensor(theta, dtype=torch.float64)
    first, step1 = midpoint_grid(-1.0, float(theta[0]) + 1.0, 500)
    second, step2 = midpoint_grid(-1.0, float(theta[1]) + 1.0, 500)
    density = UniformWidth().log_likelihood(grid_2d(first, second), theta).exp()
    assert abs(float(density.sum() * step1 * step2) - 1.0) < 1e-6


@pytest.mark.parametrize("theta", [[1.4, 0.2], [2.0, -0.5], [0.0, 0.5]])
def test_gamma_shape_likelihood_integrates_to_one(theta):
    """On (0, 120]²: the mean of x_j is (1 + λ)/β ≤ 14 and its sd ≤ 7 on these θ, so 120 leaves no mass out."""
    theta = torch.tensor(theta, dtype=torch.float64)
    grid, step = midpoint_grid(0.0, 120.0, 1200)
    density = GammaShapeMixture().log_likelihood(grid_2d(grid, grid), theta).exp()
    assert abs(float(density.sum() * step**2) - 1.0) < 1e-4


@pytest.mark.parametrize("theta", [[1.2, 0.4], [0.0, -0.7], [2.0, 0.7]])
def test_counts_likelihood_sums_to_one_over_each_bin(theta):
    """p(x | θ) = Π_j p_j(x_j): vary bin j over 0 … 1999 with the others at a base x = a, for each j; then
    Π_j Σ_{x_j} p(x) / p(a)^7 = Π_j Σ_{x_j} p_j(x_j), the product of the eight per-bin normalisations."""
    simulator = OverdispersedCounts()
    theta = torch.tensor(theta, dtype=torch.float64)
    base = torch.tensor([[12.0, 30.0, 7.0, 25.0, 40.0, 18.0, 3.0, 22.0]], dtype=torch.float64)
    support = torch.arange(2000, dtype=torch.float64)
    log_base = simulator.log_likelihood(base, theta)
    log_total = -7 * log_base
    for j in range(8):
        x = base.repeat(len(support), 1)
        x[:, j] = support
        log_total = log_total + torch.logsumexp(simulator.log_likelihood(x, theta), dim=0)
    assert abs(float(log_total)) < 1e-9


def test_rotated_linear_is_the_gaussian_with_a_rotated_diagonal_covariance():
    """x ~ N(Q (θ, 0), Q diag(τ² + σ² (×5), 1 (×15)) Qᵀ) with Q orthogonal: torch's MultivariateNormal agrees."""
    simulator = RotatedLinear()
    q = simulator.rotation
    assert torch.allclose(q.T @ q, torch.eye(20, dtype=torch.float64), atol=1e-12)
    theta = torch.tensor(CASES["linear20"][0], dtype=torch.float64)
    variances = torch.cat([torch.full((5,), 0.5**2 + 0.5**2), torch.ones(15)]).double()
    covariance = q @ torch.diag(variances) @ q.T
    gaussian = torch.distributions.MultivariateNormal(q[:, :5] @ theta, covariance_matrix=covariance)
    x, _ = simulator.sample(theta.expand(500, 5), generator=torch.Generator().manual_seed(4))
    x = x.double() + 0.5 * torch.randn(500, 20, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.allclose(simulator.log_likelihood(x, theta), gaussian.log_prob(x), rtol=0, atol=1e-9)


def test_slcp_is_the_gaussian_with_the_block_covariance():
    """x ~ N((m, m, m, m), I₄ ⊗ S + 0.3² 1 1ᵀ ⊗ I₂): torch's MultivariateNormal on the 8×8 matrix agrees."""
    simulator = SLCP()
    for seed, theta in enumerate([[0.4, -0.6, 0.5, -0.3, 0.4], [-1.0, 1.0, 0.0, 0.7, -0.7]]):
        theta = torch.tensor(theta, dtype=torch.float64)
        s1, s2, rho = 0.3 + theta[2] ** 2, 0.3 + theta[3] ** 2, 0.9 * torch.tanh(theta[4])
        s = torch.stack([torch.stack([s1**2, rho * s1 * s2]), torch.stack([rho * s1 * s2, s2**2])])
        ones = torch.ones(4, 4, dtype=torch.float64)
        covariance = torch.kron(torch.eye(4, dtype=torch.float64), s) + 0.09 * torch.kron(ones, torch.eye(2).double())
        gaussian = torch.distributions.MultivariateNormal(theta[:2].repeat(4), covariance_matrix=covariance)
        noise = torch.randn(500, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        x = theta[:2].repeat(4) + noise  # any x will do: two formulas for one density
        assert torch.allclose(simulator.log_likelihood(x, theta), gaussian.log_prob(x), rtol=0, atol=1e-9)


def test_gamma_shape_closed_form_equals_the_truncated_poisson_series():
    """Σ_{m<K} Poisson(m; λ) Gamma(x; m + 1, β) by logsumexp, K = 80: the terms fall as (λβx)^m/(m!)², and λβx ≤ 500
    here (x ≤ 60), so that the first term left out is below e⁻¹⁵⁰ of the largest."""
    simulator = GammaShapeMixture()
    theta = torch.tensor([[2.0, 0.5], [0.0, -0.5], [1.4, 0.2]], dtype=torch.float64).repeat_interleave(40, dim=0)
    x = torch.linspace(0.01, 60.0, 120, dtype=torch.float64)[:, None].expand(120, 2) * torch.tensor([1.0, 0.5])
    lam, rate = theta[:, :1].exp(), theta[:, 1:].exp()
    m = torch.arange(80, dtype=torch.float64)
    poisson = m * torch.log(lam) - lam - torch.lgamma(m + 1)  # [n, K]
    terms = poisson[:, None, :] + ((m + 1) * torch.log(rate) - torch.lgamma(m + 1))[:, None, :] \
        + m * torch.log(x)[:, :, None] - (rate * x)[:, :, None]  # [n, 2, K]
    series = torch.logsumexp(terms, dim=2).sum(dim=1)
    assert torch.allclose(simulator.log_likelihood(x, theta), series, rtol=1e-12, atol=1e-10)


def test_support_likelihood_is_finite_and_accurate_far_in_the_tails():
    """30 σ and more outside the box, Φ(x/σ) − Φ((x − w)/σ) is one tail probability to relative precision 1e-12:
    the log-difference must equal log Φ of the nearer edge's argument, not −inf or NaN."""
    simulator, width = UniformWidth(), 1.5
    below = torch.tensor([-3.0, -10.0, -50.0], dtype=torch.float64)
    above = width - below
    theta = torch.tensor([width, width], dtype=torch.float64, requires_grad=True)
    x = torch.stack([below, above], dim=1)
    log_p = simulator.log_likelihood(x, theta)
    expected = (torch.special.log_ndtr(below / 0.1) + torch.special.log_ndtr((width - above) / 0.1)
                - 2 * math.log(width))
    assert torch.allclose(log_p.detach(), expected, rtol=1e-10)
    (gradient,) = torch.autograd.grad(log_p.sum(), theta)
    assert torch.isfinite(gradient).all()


# (b) the joint density is the one written above, and its marginal over z is the exact likelihood


@pytest.mark.parametrize("name", list(CASES))
def test_joint_log_prob_is_the_conditional_times_the_latent_density(name):
    """At θ other than the one that drew (x, z): the full joint, θ-free terms included, to float64 precision."""
    simulator = SUITE_SIMULATORS[name]()
    theta, conditional, latent, _ = CASES[name]
    prior = simulator.default_prior()
    x, z = simulator.sample(torch.tensor(theta).expand(200, -1), generator=torch.Generator().manual_seed(6))
    other = sluice.priors.sample_prior(prior, 200, 7).double()
    expected = conditional(simulator, x.double(), as_float64(z), other) + latent(simulator, as_float64(z), other)
    assert torch.allclose(simulator.joint_log_prob(x, z, other), expected, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("name", list(CASES))
def test_exact_likelihood_is_the_conditional_averaged_over_the_latent(name):
    """p(x | θ) = E_{z ~ p(z|θ)}[p(x | z, θ)]: the weights p(x | z, θ)/p(x | θ) average to 1 within 5 standard
    errors, for six x drawn at θ (and edge points for the box), with 100 000 z drawn by the simulator itself (its x
    is not used)."""
    simulator = SUITE_SIMULATORS[name]()
    theta, conditional, _, _ = CASES[name]
    theta = torch.tensor(theta, dtype=torch.float64)
    x, _ = simulator.sample(theta.expand(6, -1), generator=torch.Generator().manual_seed(8))
    if name == "support":  # inside the box p(x | θ) ≈ 1/(w₁w₂) whatever σ: add points on the blurred edges
        x = torch.cat([x, torch.tensor([[-0.1, 1.9], [1.4, 0.15]])])
    _, z = simulator.sample(theta.expand(100_000, -1), generator=torch.Generator().manual_seed(9))
    z, thetas = as_float64(z), theta.expand(100_000, -1)
    exact = simulator.log_likelihood(x, theta)
    for row in range(len(x)):
        log_weights = conditional(simulator, x[row].double().expand(100_000, -1), z, thetas) - exact[row]
        assert_mean_close(log_weights.exp(), 1.0, f"{name}: E_z[p(x|z,θ)]/p(x|θ) (x number {row})")


# (c) unbiased joint quantities, and the exact ones under the sampler


@pytest.mark.parametrize("name", list(CASES))
def test_joint_and_exact_ratio_and_score_are_unbiased(name):
    """E[r(x,z|θ0,θ1)] = E[r(x|θ0,θ1)] = 1 for x, z ~ θ1; E[t(x,z|θ)] = E[∇θ log p(x|θ)] = 0 for x, z ~ θ;
    θ0 a quarter of the way from θ1 to another prior draw, so that r stays of moderate spread."""
    simulator = SUITE_SIMULATORS[name]()
    theta1 = torch.tensor(CASES[name][0])
    theta0 = theta1 + 0.25 * (sluice.priors.sample_prior(simulator.default_prior(), 1, 10)[0] - theta1)
    data = sluice.simulate(simulator, sluice.priors.Point(theta0), 40_000, reference=theta1, seed=11)
    at_theta1 = data[data.y == 1]
    assert_mean_close(at_theta1.log_r_xz.double().exp(), 1.0, f"{name}: E[r(x,z)]")
    exact_log_r = simulator.log_likelihood(at_theta1.x, theta0.double()) - simulator.log_likelihood(at_theta1.x,
                                                                                                       theta1.double())
    assert_mean_close(exact_log_r.exp(), 1.0, f"{name}: E[r(x)]")
    assert_mean_close(data.t_xz, torch.zeros(simulator.n_parameters), f"{name}: E[t(x,z)]")
    theta = data.theta.double().requires_grad_(True)
    (exact_score,) = torch.autograd.grad(simulator.log_likelihood(data.x, theta).sum(), theta)
    assert_mean_close(exact_score, torch.zeros(simulator.n_parameters), f"{name}: E[t(x)]")


# (d) the simulator checks


@pytest.mark.parametrize("name", list(CASES))
def test_passes_the_simulator_checks(name):
    simulator = SUITE_SIMULATORS[name]()
    report = sluice.check_simulator(simulator, simulator.default_prior())
    assert report.ok, str(report)


# (e) shapes, dtypes and errors


@pytest.mark.parametrize("name", list(CASES))
def test_shapes_dtypes_and_a_wrong_x_shape(name):
    simulator = SUITE_SIMULATORS[name]()
    theta, _, _, dimension = CASES[name]
    theta32 = torch.tensor(theta).expand(5, -1)
    x, z = simulator.sample(theta32, generator=torch.Generator().manual_seed(12))
    assert x.dtype == torch.float32 and x.shape == (5, dimension)
    assert isinstance(z, dict) and all(value.shape[0] == 5 for value in z.values())
    for dtype in (torch.float32, torch.float64):
        assert simulator.joint_log_prob(x, z, theta32.to(dtype)).dtype == dtype
        log_p = simulator.log_likelihood(x, theta32.to(dtype))
        assert log_p.dtype == dtype and log_p.shape == (5,) and torch.isfinite(log_p).all()
    assert simulator.log_likelihood(x, torch.tensor(theta)).shape == (5,)  # a [p] θ is broadcast
    for wrong in (x[:, :-1], x[:, :, None], x[0]):
        with pytest.raises(ValueError, match=simulator.name):
            simulator.log_likelihood(wrong, theta32)


def test_counts_refuse_x_that_are_not_counts():
    simulator = OverdispersedCounts()
    for wrong in (torch.full((2, 8), 1.5), torch.full((2, 8), -1.0)):
        with pytest.raises(ValueError, match="OverdispersedCounts: x must hold non-negative integer counts"):
            simulator.log_likelihood(wrong, torch.tensor([1.0, 0.0]))
