"""Morphing and weighted events: exact weights at new θ, closed-form joint quantities that match mining, unweighting,
AugmentedData for the estimators, the particle toy, and clear errors on bad input."""

import pytest
import torch
from sluice.morphing import Morphing, monomial_powers
from sluice.weighted_events import LowEffectiveSampleSizeWarning, WeightedEvents, effective_sample_size

import sluice
from conftest import assert_mean_close
from sluice.mining.joint import mine
from sluice.simulators.particle_toy import ParticleToy

SM = torch.zeros(2)
NEW_THETAS = torch.tensor([[0.37, -0.81], [-0.9, 0.95], [0.05, 0.02], [1.7, -2.3]], dtype=torch.float64)


@pytest.fixture(scope="module")
def toy():
    return ParticleToy()


@pytest.fixture(scope="module")
def sm_sample(toy):
    """60 000 events generated at the SM, with the generator's weights at the toy's basis points."""
    x, z = toy.sample(SM.expand(60_000, 2), generator=torch.Generator().manual_seed(0))
    morphing = toy.morphing()
    weights = toy.event_weights(z["parton"], morphing.basis_points, generated_at=SM)
    return x, z["parton"], WeightedEvents(x, weights, morphing)


def test_monomials_of_a_quadratic_in_two_parameters():
    assert monomial_powers(2, 2) == ((0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2))
    assert len(monomial_powers(3, 2)) == 10


def test_morphing_weights_are_unit_vectors_at_the_basis_points(toy):
    morphing = toy.morphing()
    torch.testing.assert_close(morphing.weights(morphing.basis_points), torch.eye(6, dtype=torch.float64),
                               atol=1e-12, rtol=0)


def test_morphing_reproduces_event_weights_at_new_theta(toy, sm_sample):
    _, z, events = sm_sample
    for theta in NEW_THETAS:
        direct = toy.event_weights(z, theta[None], generated_at=SM)[:, 0]
        torch.testing.assert_close(events.weights(theta), direct, rtol=1e-12, atol=0)
        torch.testing.assert_close(events.cross_section(theta), toy.cross_section(theta[None]), rtol=0.05, atol=0)


def test_morphing_is_exact_for_any_well_conditioned_basis(toy, sm_sample):
    _, z, _ = sm_sample
    basis = torch.tensor([[0.2, -0.3], [0.9, 0.1], [-0.7, 0.4], [0.1, 0.8], [-0.2, -0.9], [0.6, 0.7]])
    morphing = Morphing(basis, degree=2)
    morphed = morphing.morph(toy.event_weights(z, basis), NEW_THETAS[0])
    torch.testing.assert_close(morphed, toy.event_weights(z, NEW_THETAS[:1])[:, 0], rtol=1e-10, atol=0)


def test_joint_quantities_equal_the_mined_ones(toy, sm_sample):
    """With the exact σ(θ_b), log r and t from weights equal those from the toy's joint_log_prob (sluice.mining)."""
    x, z, events = sm_sample
    exact = WeightedEvents(x[:2000], events.basis_weights[:2000], events.morphing,
                           basis_cross_sections=toy.cross_section(events.morphing.basis_points))
    theta0, theta1 = torch.tensor([0.3, -0.2]), torch.tensor([-0.5, 0.6])
    mined = mine(toy, x[:2000], {"parton": z[:2000]}, theta0.expand(2000, 2), theta1.expand(2000, 2), None)
    torch.testing.assert_close(exact.joint_log_ratio(theta0, theta1).float(), mined.log_r_xz, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(exact.joint_score(theta0).float(), mined.t_xz0, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(exact.joint_score(theta1).float(), mined.t_xz1, atol=2e-5, rtol=1e-5)


def test_joint_ratio_averages_to_one_and_score_to_zero(toy):
    """E_{z~θ1}[r(z|θ0,θ1)] = 1 and E_{z~θ}[t(z|θ)] = 0 for events drawn exactly at θ1."""
    theta0, theta1 = torch.tensor([0.4, -0.3]), torch.tensor([-0.2, 0.5])
    x, z = toy.sample(theta1.expand(40_000, 2), generator=torch.Generator().manual_seed(1))
    morphing = toy.morphing()
    events = WeightedEvents(x, toy.event_weights(z["parton"], morphing.basis_points), morphing,
                            basis_cross_sections=toy.cross_section(morphing.basis_points))
    assert_mean_close(events.joint_log_ratio(theta0, theta1).exp(), 1.0, "E[r(x,z|θ0,θ1)] at θ1")
    assert_mean_close(events.joint_score(theta1), torch.zeros(2), "E[t(x,z|θ1)] at θ1")


def test_sample_cross_sections_make_weighted_averages_exact(sm_sample):
    """With σ(θ_b) = Σ_i w_i(θ_b), Σ_i w_i(θ1) r_i / Σ_i w_i(θ1) = 1 and Σ_i w_i(θ) t_i = 0 exactly."""
    _, _, events = sm_sample
    theta0, theta1 = NEW_THETAS[0], NEW_THETAS[1]
    weights = events.weights(theta1)
    ratio = (weights * events.joint_log_ratio(theta0, theta1).exp()).sum() / weights.sum()
    assert abs(float(ratio) - 1.0) < 1e-10
    assert float((weights[:, None] * events.joint_score(theta1)).sum(dim=0).abs().max() / weights.sum()) < 1e-10


def test_unweighting_follows_the_weights(sm_sample):
    x, _, events = sm_sample
    theta = torch.tensor([0.8, -0.6])
    drawn = events.unweight(theta, 40_000, generator=torch.Generator().manual_seed(2))
    weights = events.weights(theta)
    weighted_mean = (weights[:, None] * x.double()).sum(dim=0) / weights.sum()
    assert_mean_close(drawn.x, weighted_mean, "mean of x unweighted at θ")
    assert drawn.effective_sample_size == pytest.approx(float(weights.sum() ** 2 / (weights**2).sum()), rel=1e-12)
    assert 0.2 * len(events) < drawn.effective_sample_size < len(events)


def test_effective_sample_size_formula():
    assert effective_sample_size(torch.ones(500)) == pytest.approx(500)
    assert effective_sample_size(torch.tensor([0.0, 3.0, 0.0])) == pytest.approx(1)
    assert effective_sample_size(torch.tensor([1.0, 3.0])) == pytest.approx(16 / 10)


def test_augmented_data_rows_follow_their_theta(sm_sample):
    """Rows at y = 0 are unweighted at θ0 and rows at y = 1 at θ1; their joint quantities satisfy the identities."""
    x, _, events = sm_sample
    theta0, theta1 = torch.tensor([0.5, 0.5]), torch.tensor([-0.4, 0.3])
    data = events.augmented_data(sluice.priors.Point(theta0), 30_000, reference=theta1, seed=3)
    assert torch.equal(data.y[:4], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert data.parameter_names == ("c1", "c2") and data.t_xz0.shape == (30_000, 2)
    for label, theta in ((0, theta0), (1, theta1)):
        weights = events.weights(theta)
        weighted_mean = (weights[:, None] * x.double()).sum(dim=0) / weights.sum()
        assert_mean_close(data.x[data.y == label], weighted_mean, f"mean of x in rows with y = {label}")
    assert_mean_close(data.log_r_xz[data.y == 1].exp(), 1.0, "E[r] over rows drawn at θ1")
    assert_mean_close(data.t_xz0[data.y == 0], torch.zeros(2), "E[t(θ0)] over rows drawn at θ0")


def test_augmented_data_over_a_prior_trains_an_estimator(sm_sample, toy):
    _, _, events = sm_sample
    data = events.augmented_data(toy.default_prior(), 2000, seed=0)
    assert torch.all(data.theta0.abs() <= 1) and not torch.equal(data.theta0, data.theta1)
    estimator = sluice.estimators.ALICES().fit(data, epochs=2)
    assert torch.isfinite(estimator.log_ratio(data.x[:10], data.theta0[:10], data.theta1[:10])).all()


def test_augmented_data_warns_when_few_events_carry_the_weight(sm_sample, toy):
    _, _, events = sm_sample
    with pytest.warns(LowEffectiveSampleSizeWarning, match="effective sample size"):
        events[:50].augmented_data(toy.default_prior(), 100)


def test_toy_passes_check_simulator(toy):
    assert sluice.check_simulator(toy, toy.default_prior(), n=1000).ok


def test_toy_exact_likelihood_is_normalised(toy):
    energy = torch.linspace(-2.0, 22.0, 481, dtype=torch.float64)  # the smeared density is smooth: a coarse sum will do
    angle = torch.linspace(-1.6, 1.6, 161, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(energy, angle, indexing="ij"), dim=-1).reshape(-1, 2)
    cell = float((energy[1] - energy[0]) * (angle[1] - angle[0]))
    for theta in ([0.0, 0.0], [1.0, -1.0], [-1.0, 0.4]):
        density = toy.log_likelihood(grid, torch.tensor(theta, dtype=torch.float64)).exp()
        assert float(density.sum()) * cell == pytest.approx(1.0, abs=1e-5)


def test_toy_samples_follow_its_density():
    """The truth-level toy (x = z) draws E and cos with the means of its exact density."""
    truth = ParticleToy(resolution=(0.0, 0.0))
    theta = torch.tensor([0.9, -0.7], dtype=torch.float64)
    x, z = truth.sample(theta.expand(40_000, 2), generator=torch.Generator().manual_seed(4))
    assert torch.equal(x, z["parton"].float())
    energy = torch.linspace(0.0, 40.0, 4001, dtype=torch.float64)
    angle = torch.linspace(-1.0, 1.0, 201, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(energy, angle, indexing="ij"), dim=-1)
    density = truth.log_likelihood(grid.reshape(-1, 2), theta).exp().reshape(grid.shape[:2])
    mass = torch.trapezoid(torch.trapezoid(density[..., None] * grid, angle, dim=1), energy, dim=0)
    assert_mean_close(z["parton"], mass, "mean of (E, cos) at θ")


def test_bad_input_is_named(toy, sm_sample):
    x, _, events = sm_sample
    with pytest.raises(ValueError, match="condition number"):
        Morphing([[0, 0], [1, 1], [-1, -1], [0.5, 0.5], [2, 2], [-2, -2]], degree=2)
    with pytest.raises(ValueError, match="condition number"):
        Morphing([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1], [1e-4, 1e-4]], degree=2)
    with pytest.raises(ValueError, match="needs exactly 6 basis points; got 5"):
        Morphing([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]], degree=2)
    with pytest.raises(ValueError, match="basis_weights must have shape"):
        WeightedEvents(x, events.basis_weights[:, :5], events.morphing)
    with pytest.raises(ValueError, match="basis_weights must have shape"):
        WeightedEvents(x[:10], events.basis_weights, events.morphing)
    with pytest.raises(ValueError, match="basis_weights holds NaN"):
        WeightedEvents(x[:2], torch.tensor([[1.0] * 5 + [float("nan")]] * 2), events.morphing)
    with pytest.raises(ValueError, match="theta must have shape"):
        events.weights(torch.zeros(3))
    negative = WeightedEvents(x[:3], torch.tensor([[1.0] * 6, [-1.0] * 6, [2.0] * 6]), events.morphing)
    with pytest.raises(ValueError, match="negative weight"):
        negative.unweight(SM, 10)
    with pytest.raises(ValueError, match="weight ≤ 0"):
        negative.joint_log_ratio(SM, torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="resolution"):
        ParticleToy(resolution=(-0.1, 0.1))
