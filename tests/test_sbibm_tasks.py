"""The sbibm tasks as sluice simulators: sbibm 1.1.0's constants, an exact likelihood that is normalised and agrees
with an independent reading of each formula and with the sampler, unbiased joint quantities, the simulator checks,
the shapes and errors of the API, and the reader of sbibm's reference data.

Tests that read the sbibm 1.1.0 wheel take its path from the environment variable SLUICE_SBIBM_WHEEL and skip
without it (get the wheel with `pip download sbibm==1.1.0 --no-deps -d DIR`).

The end holds the checks of ``check_simulator``'s E[r] = 1: no false failure on the narrow mixture, a wrong density
still caught.
"""

import bz2
import io
import math
import os
import zipfile

import numpy as np
import pytest
import torch

import sluice
from conftest import assert_mean_close
from sluice.simulators.sbibm import (
    SBIBM_SIMULATORS,
    WHEEL_ENVIRONMENT_VARIABLE,
    SbibmBernoulliGLM,
    SbibmGaussianLinear,
    SbibmGaussianLinearUniform,
    SbibmGaussianMixture,
    SbibmSLCP,
    SbibmTwoMoons,
    load_reference,
)

LOG_2PI = math.log(2.0 * math.pi)
F64 = torch.float64


@pytest.fixture(scope="module")
def wheel():
    path = os.environ.get(WHEEL_ENVIRONMENT_VARIABLE)
    if not path or not os.path.isfile(path):
        pytest.skip(f"the sbibm 1.1.0 wheel is not at hand: set {WHEEL_ENVIRONMENT_VARIABLE} to the file that "
                    "`pip download sbibm==1.1.0 --no-deps -d DIR` fetches")
    return path


def wheel_csv(path, member):
    """A csv of the wheel (header line skipped) as float64 [rows, columns]."""
    with zipfile.ZipFile(path) as archive:
        raw = archive.read(member)
    raw = bz2.decompress(raw) if member.endswith(".bz2") else raw
    return np.atleast_2d(np.loadtxt(io.StringIO(raw.decode()), delimiter=",", skiprows=1))


# name: (θ1 inside the prior, θ0 near it, x dimension); θ0 − θ1 keeps sd(log r) below about 1 (see each class)
CASES = {
    "gaussian_linear": ([0.3, -0.2, 0.1, 0.5, -0.4, 0.0, 0.2, -0.1, 0.3, -0.3], 0.05, 10),
    "gaussian_linear_uniform": ([0.6, -0.2, 0.1, 0.5, -0.9, 0.0, 0.2, -0.1, 0.3, -0.7], 0.05, 10),
    "slcp": ([0.7, -1.3, 1.4, -1.1, 0.6], 0.01, 8),
    "gaussian_mixture": ([2.0, -3.0], 0.02, 2),
    "bernoulli_glm": ([-0.5, 1.0, 0.8, 0.4, 0.0, -0.3, -0.5, -0.4, -0.2, 0.0], 0.03, 10),
    # θ0 − θ1 ⟂ (1, 1): |θ₁ + θ₂| and with it the moons' edge stay put (see test_two_moons_score_has_the_edge_mean)
    "two_moons": ([0.3, 0.2], torch.tensor([-0.004, 0.004]), 2),
}


def theta_pair(name):
    theta1, step, _ = CASES[name]
    theta1 = torch.tensor(theta1)
    return theta1, theta1 + step


def test_the_six_tasks_by_sbibm_name():
    assert set(SBIBM_SIMULATORS) == set(CASES)
    for name, cls in SBIBM_SIMULATORS.items():
        simulator = cls()
        assert simulator.task_name == name
        assert simulator.n_parameters == len(CASES[name][0])


# (a) sbibm 1.1.0's constants


def test_priors_are_sbibms():
    linear = SbibmGaussianLinear().default_prior()
    assert torch.allclose(linear.covariance_matrix, 0.1 * torch.eye(10)) and torch.equal(linear.mean, torch.zeros(10))
    for cls, bound, p in [(SbibmGaussianLinearUniform, 1.0, 10), (SbibmSLCP, 3.0, 5), (SbibmGaussianMixture, 10.0, 2),
                          (SbibmTwoMoons, 1.0, 2)]:
        prior = cls().default_prior()
        assert torch.equal(prior.low, torch.full((p,), -bound)) and torch.equal(prior.high, torch.full((p,), bound))
    # sbibm's smoothness prior, written out again: D = I − (ones below the diagonal), F = D D + diag(√(j/9))
    d = torch.eye(9, dtype=F64) - torch.diag(torch.ones(8, dtype=F64), -1)
    f = d @ d + torch.diag((torch.arange(9, dtype=F64) / 9) ** 0.5)
    precision = torch.block_diag(torch.tensor([[0.5]], dtype=F64), f.T @ f)
    glm = SbibmBernoulliGLM()
    assert torch.allclose(glm.prior_precision, precision, rtol=0, atol=1e-12)
    assert torch.allclose(glm.default_prior().precision_matrix.double(), precision, atol=1e-5)


def test_bernoulli_glm_design_matrix_is_the_offset_and_the_delayed_stimulus():
    design = SbibmBernoulliGLM().design_matrix
    stimulus = torch.from_numpy(np.random.RandomState(42).randn(100).astype(np.float32)).double()
    assert design.shape == (100, 10) and torch.equal(design[:, 0], torch.ones(100, dtype=F64))
    for lag in range(9):
        assert torch.equal(design[lag:, 1 + lag], stimulus[: 100 - lag]) and not design[:lag, 1 + lag].any()


def test_bernoulli_glm_design_matrix_and_summaries_match_the_wheel(wheel):
    with zipfile.ZipFile(wheel) as archive:
        stored = torch.load(io.BytesIO(archive.read("sbibm/tasks/bernoulli_glm/files/design_matrix.pt")),
                            weights_only=True)
    simulator = SbibmBernoulliGLM()
    assert torch.equal(simulator.design_matrix, stored.double())
    for observation in range(1, 11):  # sbibm's summary (a convolution) of its stored spike trains is Xᵀy
        folder = f"sbibm/tasks/bernoulli_glm/files/num_observation_{observation}/"
        spikes = torch.from_numpy(wheel_csv(wheel, folder + "observation_raw.csv"))
        x_o = torch.from_numpy(wheel_csv(wheel, folder + "observation.csv"))
        assert torch.allclose(simulator.summary(spikes), x_o, rtol=0, atol=1e-4)


# (b) the exact likelihood: an independent reading of each formula, normalised, and the sampler's


def log_normal(value, mean, variance):
    return -0.5 * (value - mean) ** 2 / variance - 0.5 * math.log(variance) - 0.5 * LOG_2PI


def x_near(name, theta, n=300, seed=3):
    """x drawn at θ plus a little noise: any x will do to compare two formulas for one density."""
    x, _ = SBIBM_SIMULATORS[name]().sample(theta.expand(n, -1), generator=torch.Generator().manual_seed(seed))
    return x.double() + 0.05 * torch.randn(x.shape, dtype=F64, generator=torch.Generator().manual_seed(seed + 1))


def test_gaussian_linear_likelihood_is_the_multivariate_normal():
    theta = torch.tensor(CASES["gaussian_linear"][0], dtype=F64)
    x = x_near("gaussian_linear", theta)
    gaussian = torch.distributions.MultivariateNormal(theta, covariance_matrix=0.1 * torch.eye(10, dtype=F64))
    for cls in (SbibmGaussianLinear, SbibmGaussianLinearUniform):
        assert torch.allclose(cls().log_likelihood(x, theta), gaussian.log_prob(x), rtol=0, atol=1e-10)


def test_gaussian_linear_posterior_is_prior_times_likelihood():
    """log N(θ; 0, 0.1 I) + log p(x_o | θ) − log N(θ; μ, Σ) is the log evidence, the same at every θ."""
    simulator = SbibmGaussianLinear()
    x_o = torch.tensor([CASES["gaussian_linear"][0]], dtype=F64)
    mean, covariance = simulator.posterior(x_o)
    assert torch.allclose(mean, x_o[0] / 2) and torch.allclose(covariance, 0.05 * torch.eye(10, dtype=F64))
    thetas = torch.randn(50, 10, dtype=F64, generator=torch.Generator().manual_seed(2))
    prior = torch.distributions.MultivariateNormal(torch.zeros(10, dtype=F64), 0.1 * torch.eye(10, dtype=F64))
    posterior = torch.distributions.MultivariateNormal(mean, covariance)
    evidence = prior.log_prob(thetas) + simulator.log_likelihood(x_o.expand(50, -1), thetas) \
        - posterior.log_prob(thetas)
    assert float(evidence.max() - evidence.min()) < 1e-9
    assert torch.equal(simulator.posterior(x_o[0])[0], mean)  # a [d] x_o too


def test_slcp_likelihood_is_the_eight_dimensional_block_gaussian():
    """x ~ N((m, m, m, m), I₄ ⊗ S), S = [[s₁², ρ s₁ s₂], [ρ s₁ s₂, s₂²]] + 10⁻⁶ I, s = θ₃², θ₄², ρ = tanh θ₅; also
    at θ₃ = 0, where only the 10⁻⁶ keeps S invertible."""
    simulator = SbibmSLCP()
    for seed, theta in enumerate([CASES["slcp"][0], [-2.5, 2.0, 0.0, 2.9, -3.0]]):
        theta = torch.tensor(theta, dtype=F64)
        s1, s2, rho = theta[2] ** 2, theta[3] ** 2, torch.tanh(theta[4])
        s = torch.stack([torch.stack([s1**2 + 1e-6, rho * s1 * s2]), torch.stack([rho * s1 * s2, s2**2 + 1e-6])])
        gaussian = torch.distributions.MultivariateNormal(theta[:2].repeat(4),
                                                          covariance_matrix=torch.kron(torch.eye(4, dtype=F64), s))
        x, _ = simulator.sample(theta.expand(300, -1), generator=torch.Generator().manual_seed(seed))
        assert torch.allclose(simulator.log_likelihood(x, theta), gaussian.log_prob(x.double()), rtol=1e-10, atol=1e-8)


def midpoint_grid(low, high, points):
    step = (high - low) / points
    return low + step * (torch.arange(points, dtype=F64) + 0.5), step


def grid_2d(first, second):
    xx, yy = torch.meshgrid(first, second, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], dim=1)


def test_gaussian_mixture_likelihood_is_the_half_half_mixture_and_integrates_to_one():
    simulator = SbibmGaussianMixture()
    theta = torch.tensor(CASES["gaussian_mixture"][0], dtype=F64)
    x = x_near("gaussian_mixture", theta)
    wide, narrow = log_normal(x, theta, 1.0).sum(dim=1), log_normal(x, theta, 0.01).sum(dim=1)
    expected = torch.log(0.5 * wide.exp() + 0.5 * narrow.exp())
    assert torch.allclose(simulator.log_likelihood(x, theta), expected, rtol=0, atol=1e-10)
    # ±8 around θ (8 sd of the wide component), 50 points per sd of the narrow one
    first, step1 = midpoint_grid(theta[0] - 8, theta[0] + 8, 800)
    second, step2 = midpoint_grid(theta[1] - 8, theta[1] + 8, 800)
    total = simulator.log_likelihood(grid_2d(first, second), theta).exp().sum() * step1 * step2
    assert abs(float(total) - 1.0) < 1e-6


def two_moons_grid(theta, points=640):
    """Midpoints of a square of half-width 0.16 around the moons' centre, cell edges on the edge u = 0 (the density
    jumps there), and the cell area: the ring r ~ N(0.1, 0.01²) ends 6 sd inside the square."""
    centre = SbibmTwoMoons()._shift(theta[None])[0]
    u, step = midpoint_grid(-0.16, 0.16, points)
    return centre + grid_2d(u, u), step**2, centre


@pytest.mark.parametrize("theta", [[0.3, 0.2], [-0.9, 0.7], [0.0, 0.0]])
def test_two_moons_likelihood_integrates_to_one(theta):
    """The change of variables (a, r) → x has Jacobian |r|: without its −log |r| the integral would be about 0.1."""
    theta = torch.tensor(theta, dtype=F64)
    x, cell, _ = two_moons_grid(theta)
    total = float(SbibmTwoMoons().log_likelihood(x, theta).exp().sum() * cell)
    assert abs(total - 1.0) < 1e-4


def test_two_moons_sampler_and_likelihood_agree_on_the_moons_tips():
    """P(u < 0.05), the share of the moon within 0.05 of its edge (the tips, |a| > π/3 at r = 0.1): the grid
    integral of p(x | θ) and the share of 20 000 simulated x agree within 5 binomial standard errors."""
    simulator, theta = SbibmTwoMoons(), torch.tensor([0.3, 0.2], dtype=F64)
    x, cell, centre = two_moons_grid(theta)
    tips = (x[:, 0] - centre[0]) < 0.05
    exact = float((simulator.log_likelihood(x, theta).exp() * tips).sum() * cell)
    samples, _ = simulator.sample(theta.expand(20_000, -1), generator=torch.Generator().manual_seed(4))
    share = float(((samples.double()[:, 0] - centre[0]) < 0.05).double().mean())
    assert abs(share - exact) < 5 * math.sqrt(exact * (1 - exact) / 20_000)


def test_bernoulli_glm_joint_density_is_the_bernoulli_product_and_a_function_of_x():
    """log p(y | θ) = Σ_t [y_t log σ(ψ_t) + (1 − y_t) log(1 − σ(ψ_t))], ψ = Xθ, at θ other than the one that drew
    y; it equals θᵀx − Σ_t log(1 + e^{ψ_t}) computed from x alone (x is sufficient)."""
    simulator = SbibmBernoulliGLM()
    theta1, _ = theta_pair("bernoulli_glm")
    x, z = simulator.sample(theta1.expand(200, -1), generator=torch.Generator().manual_seed(5))
    other = sluice.priors.sample_prior(simulator.default_prior(), 200, 6).double()
    rate = torch.sigmoid(other @ simulator.design_matrix.T)
    spikes = z["spikes"].double()
    expected = (spikes * torch.log(rate) + (1 - spikes) * torch.log1p(-rate)).sum(dim=1)
    assert torch.allclose(simulator.joint_log_prob(x, z, other), expected, rtol=1e-10, atol=1e-8)
    assert torch.allclose(simulator.unnormalised_log_likelihood(x, other), expected, rtol=1e-6, atol=1e-4)


def test_bernoulli_glm_spikes_fire_at_the_logistic_rate():
    """E[y_t] = σ(ψ_t) in each of the 100 bins, within 5 standard errors, from 20 000 runs."""
    simulator = SbibmBernoulliGLM()
    theta1, _ = theta_pair("bernoulli_glm")
    x, z = simulator.sample(theta1.expand(20_000, -1), generator=torch.Generator().manual_seed(7))
    assert_mean_close(z["spikes"], torch.sigmoid(simulator.design_matrix @ theta1.double()), "spike rates")
    assert torch.allclose(x.double(), simulator.summary(z["spikes"]), atol=1e-4)


# (c) unbiased joint quantities, and the exact ones under the sampler


@pytest.mark.parametrize("name", list(CASES))
def test_joint_and_exact_ratio_and_score_are_unbiased(name):
    """E[r(x,z|θ0,θ1)] = E[r(x|θ0,θ1)] = 1 for x, z ~ θ1; E[t(x,z|θ)] = E[∇θ log p(x|θ)] = 0 for x, z ~ θ (both
    θ0 and θ1); the exact forms where the likelihood is exact, the unnormalised one for bernoulli_glm. Two moons'
    score has a non-zero mean (its edge moves with θ): it is checked against it in the next test instead."""
    simulator = SBIBM_SIMULATORS[name]()
    theta1, theta0 = theta_pair(name)
    data = sluice.simulate(simulator, sluice.priors.Point(theta0), 40_000, reference=theta1, seed=11)
    at_theta1 = data[data.y == 1]
    assert_mean_close(at_theta1.log_r_xz.double().exp(), 1.0, f"{name}: E[r(x,z)]")
    exact = simulator.unnormalised_log_likelihood if name == "bernoulli_glm" else simulator.log_likelihood
    exact_log_r = exact(at_theta1.x, theta0.double()) - exact(at_theta1.x, theta1.double())
    assert_mean_close(exact_log_r.exp(), 1.0, f"{name}: E[r(x)]")
    if name == "two_moons":
        return
    assert_mean_close(data.t_xz, torch.zeros(simulator.n_parameters), f"{name}: E[t(x,z)]")
    theta = data.theta.double().requires_grad_(True)
    (exact_score,) = torch.autograd.grad(exact(data.x, theta).sum(), theta)
    assert_mean_close(exact_score, torch.zeros(simulator.n_parameters), f"{name}: E[t(x)]")


def test_two_moons_score_has_the_edge_mean():
    """The moons end sharply at a = ±π/2, on the line u = 0 that moves with θ, so E[t] is not 0 but the flux
    through that edge: 0 = ∂/∂θ ∫_{u > 0} p dx gives E[t_j] = ∂s/∂θ_j · C, with s = 0.25 − |θ₁ + θ₂|/√2 the edge's
    position and C = ∫ p(u = 0⁺, v | θ) dv = (2/π) ∫₀^∞ N(ρ; 0.1, 0.01²)/ρ dρ (by quadrature here). Within 5
    standard errors of 40 000 runs (about 13 of them from 0)."""
    rho, step = midpoint_grid(1e-4, 0.3, 300_000)
    edge_density = (2 / math.pi) * float((log_normal(rho, 0.1, 1e-4).exp() / rho).sum() * step)
    simulator = SbibmTwoMoons()
    for theta in ([0.3, 0.2], [-0.6, 0.1]):
        theta = torch.tensor(theta)
        x, _ = simulator.sample(theta.expand(40_000, -1), generator=torch.Generator().manual_seed(12))
        theta_var = theta.double().expand(40_000, -1).clone().requires_grad_(True)
        (score,) = torch.autograd.grad(simulator.joint_log_prob(x, {}, theta_var).sum(), theta_var)
        expected = -torch.sign(theta.sum()).double() / math.sqrt(2.0) * edge_density
        assert_mean_close(score, expected.expand(2), "two moons: E[t]")


# (d) the simulator checks


@pytest.mark.parametrize("name", list(CASES))
def test_passes_the_simulator_checks(name):
    simulator = SBIBM_SIMULATORS[name]()
    report = sluice.check_simulator(simulator, simulator.default_prior())
    assert report.ok, str(report)


# (e) shapes, dtypes and errors


@pytest.mark.parametrize("name", list(CASES))
def test_shapes_dtypes_and_a_wrong_x_shape(name):
    simulator = SBIBM_SIMULATORS[name]()
    theta1, _ = theta_pair(name)
    dimension = CASES[name][2]
    thetas = theta1.expand(5, -1)
    x, z = simulator.sample(thetas, generator=torch.Generator().manual_seed(13))
    assert x.dtype == torch.float32 and x.shape == (5, dimension)
    assert isinstance(z, dict) and all(value.shape[0] == 5 for value in z.values())
    exact = simulator.unnormalised_log_likelihood if name == "bernoulli_glm" else simulator.log_likelihood
    for dtype in (torch.float32, torch.float64):
        assert simulator.joint_log_prob(x, z, thetas.to(dtype)).dtype == dtype
        log_p = exact(x, thetas.to(dtype))
        assert log_p.dtype == dtype and log_p.shape == (5,) and torch.isfinite(log_p).all()
    assert exact(x, theta1).shape == (5,)  # a [p] θ is broadcast
    for wrong in (x[:, :-1], x[:, :, None], x[0]):
        with pytest.raises(ValueError, match=simulator.name):
            exact(wrong, thetas)
    with pytest.raises(ValueError, match="entries"):
        exact(x, theta1[:-1])


def test_bernoulli_glm_has_no_exact_likelihood_and_refuses_x_from_another_run():
    simulator = SbibmBernoulliGLM()
    theta1, _ = theta_pair("bernoulli_glm")
    assert not simulator.has_log_likelihood
    with pytest.raises(NotImplementedError):
        simulator.log_likelihood(torch.zeros(1, 10), theta1)
    x, z = simulator.sample(theta1.expand(4, -1), generator=torch.Generator().manual_seed(14))
    with pytest.raises(ValueError, match="different runs"):
        simulator.joint_log_prob(x.flip(0), z, theta1)
    with pytest.raises(ValueError, match="0/1"):
        simulator.joint_log_prob(x, {"spikes": 0.5 * z["spikes"]}, theta1)


def test_gaussian_mixture_refuses_an_unknown_component_and_posterior_needs_one_observation():
    simulator = SbibmGaussianMixture()
    x, z = simulator.sample(torch.zeros(3, 2), generator=torch.Generator().manual_seed(15))
    with pytest.raises(ValueError, match="0 or 1"):
        simulator.joint_log_prob(x, {"component": z["component"] + 2}, torch.zeros(2))
    with pytest.raises(ValueError, match="x_o must have shape"):
        SbibmGaussianLinear().posterior(torch.zeros(2, 10))
    with pytest.raises(NotImplementedError, match="truncated"):
        SbibmGaussianLinearUniform().posterior(torch.zeros(10))


# (f) sbibm's reference data


def test_load_reference_without_a_wheel_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.delenv(WHEEL_ENVIRONMENT_VARIABLE, raising=False)
    with pytest.raises(FileNotFoundError, match="pip download sbibm==1.1.0 --no-deps -d DIR"):
        load_reference("two_moons", 1)
    with pytest.raises(FileNotFoundError, match="no sbibm wheel at"):
        load_reference("two_moons", 1, wheel=tmp_path / "missing.whl")
    with pytest.raises(ValueError, match="numbered 1 … 10"):
        load_reference("two_moons", 11, wheel=tmp_path / "missing.whl")


@pytest.mark.parametrize("name", list(CASES))
def test_load_reference_shapes(name, wheel):
    simulator = SBIBM_SIMULATORS[name]()
    x_o, samples, true_theta = load_reference(simulator, 3, wheel=wheel)
    p, d = simulator.n_parameters, CASES[name][2]
    assert x_o.shape == (1, d) and samples.shape == (10_000, p) and true_theta.shape == (p,)
    assert x_o.dtype == samples.dtype == true_theta.dtype == torch.float32
    assert torch.allclose(x_o.double(), torch.from_numpy(wheel_csv(
        wheel, f"sbibm/tasks/{name}/files/num_observation_3/observation.csv")))


def test_load_reference_reads_the_environment_variable_and_refuses_an_unknown_task(wheel, monkeypatch):
    monkeypatch.setenv(WHEEL_ENVIRONMENT_VARIABLE, wheel)
    x_o, _, _ = load_reference("gaussian_mixture", 1)
    assert x_o.shape == (1, 2)
    with pytest.raises(ValueError, match="no task 'moons'.*two_moons"):
        load_reference("moons", 1)


def test_gaussian_linear_posterior_mean_matches_the_reference_samples(wheel):
    """sbibm drew its 10 000 reference samples from the closed form: their mean lies within 5 standard errors
    (√(0.05/10 000) per coordinate) of the analytic posterior mean x_o / 2."""
    simulator = SbibmGaussianLinear()
    x_o, samples, _ = load_reference("gaussian_linear", 1, wheel=wheel)
    mean, covariance = simulator.posterior(x_o)
    error = torch.sqrt(torch.diagonal(covariance) / len(samples))
    assert torch.all((samples.double().mean(dim=0) - mean).abs() < 5 * error)


def test_two_moons_reference_posterior_puts_the_observation_on_the_moon(wheel):
    """A check of the map θ → shift (signs, rotation): at every reference posterior sample, x_o lies on the moon's
    ring (|r − 0.1| within 5 sd of 0.01) and on its open side (u > 0)."""
    simulator = SbibmTwoMoons()
    for observation in (1, 5):
        x_o, samples, _ = load_reference("two_moons", observation, wheel=wheel)
        centred = x_o.double() - simulator._shift(samples.double())
        assert torch.all(centred[:, 0] > 0)
        assert torch.all((centred.norm(dim=1) - 0.1).abs() < 5 * 0.01)


# (g) check_simulator's E[r] = 1: no false failure where r is heavy-tailed, a wrong density still caught


def test_mean_ratio_check_passes_the_narrow_mixture():
    """On U(−10, 10)² a tenth of the way to another prior draw is 1–2 units, 10–20 sd of the narrow component:
    r's mean there is carried by runs a sample of 2000 does not hold. The check must step closer."""
    simulator = SbibmGaussianMixture()
    report = sluice.check_simulator(simulator, simulator.default_prior())
    assert report["E[r] = 1"].passed, str(report)


class OffsetMixture(SbibmGaussianMixture):
    """Scores x at θ + 0.02 instead of θ: the density does not match the sampler (a first-order fault)."""

    def joint_log_prob(self, x, z, theta):
        return super().joint_log_prob(x, z, theta + 0.02)


class WrongWidthMixture(SbibmGaussianMixture):
    """Scores the narrow component with width 0.12 instead of 0.1 (a second-order fault: E[t] stays 0)."""

    def joint_log_prob(self, x, z, theta):
        log_prob = super().joint_log_prob(x, z, theta)
        narrow = z["component"] == 1
        squared = ((x.double() - torch.as_tensor(theta).double()) ** 2).sum(dim=1)
        correction = -0.5 * squared * (1 / 0.12**2 - 1 / 0.1**2) - 2 * math.log(1.2)
        return log_prob + torch.where(narrow, correction, 0.0).to(log_prob.dtype)


def test_a_wrong_density_still_fails():
    offset = sluice.check_simulator(OffsetMixture(), SbibmGaussianMixture().default_prior())
    assert offset["E[r] = 1"].passed is False and offset["E[t] = 0"].passed is False
    wrong_width = sluice.check_simulator(WrongWidthMixture(), SbibmGaussianMixture().default_prior())
    assert not wrong_width.ok and wrong_width["E[t²] = −E[∂t/∂θ]"].passed is False
