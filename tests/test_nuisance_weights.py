"""Nuisance parameters in event weights: at α = 0 nothing changes, the variations are reproduced at ±1σ, the joint
ratio and score over (θ, α) satisfy their identities, t_α is the derivative of log p, the toy's energy-scale
variation is a scale shift, augmented data spans (θ, α), and bad variations get errors naming them."""

import math

import pytest
import torch
from sluice.weighted_events import WeightedEvents

import sluice
from conftest import assert_mean_close
from sluice.simulators.particle_toy import ParticleToy
from sluice.simulators.systematics import Nuisance

SM = torch.zeros(2)
THETA0 = torch.tensor([0.3, -0.2, 0.7, -1.4], dtype=torch.float64)  # α beyond ±1 exercises code4's exponential
THETA1 = torch.tensor([-0.5, 0.6, -0.4, 0.5], dtype=torch.float64)


@pytest.fixture(scope="module")
def toy():
    return ParticleToy()


@pytest.fixture(scope="module")
def sample(toy):
    """20 000 events generated at the SM with their weights at the basis points and the toy's ±1σ variations."""
    x, z = toy.sample(SM.expand(20_000, 2), generator=torch.Generator().manual_seed(0))
    morphing = toy.morphing()
    weights = toy.event_weights(z["parton"], morphing.basis_points, generated_at=SM)
    return x, z["parton"], weights, morphing


def per_event(toy, sample):
    """Variations [n] at the first basis point (the SM): one ratio per event."""
    x, z, weights, morphing = sample
    return WeightedEvents(x, weights, morphing, nuisances=toy.nuisances(),
                          variations=toy.systematic_weights(x, z, weights[:, 0]))


def per_basis(toy, sample):
    """Variations [n, B] at every basis point, plus a log-normal normalisation without variations."""
    x, z, weights, morphing = sample
    nuisances = (*toy.nuisances(), Nuisance("luminosity", "lognormal", width=0.05))
    return WeightedEvents(x, weights, morphing, nuisances=nuisances, variations=toy.systematic_weights(x, z, weights))


@pytest.fixture(scope="module")
def events(toy, sample):
    return per_event(toy, sample)


def weighted_mean_and_error(values: torch.Tensor, weights: torch.Tensor) -> tuple[float, float]:
    """Σ w v / Σ w and its standard error, √(Σ w² (v − mean)²) / Σ w."""
    mean = (weights * values).sum() / weights.sum()
    return float(mean), float(((weights * (values - mean)) ** 2).sum().sqrt() / weights.sum())


def test_at_nominal_nuisances_everything_equals_the_nuisance_free_sample(toy, sample):
    x, _, weights, morphing = sample
    plain = WeightedEvents(x, weights, morphing)
    theta0, theta1 = THETA0[:2], THETA1[:2]
    for varied in (per_event(toy, sample), per_basis(toy, sample)):
        zeros = torch.zeros(len(varied.nuisances), dtype=torch.float64)
        full0, full1 = torch.cat([theta0, zeros]), torch.cat([theta1, zeros])
        assert varied.parameter_names[:2] == ("c1", "c2") and varied.n_parameters == 2 + len(zeros)
        assert torch.equal(varied.weights(full0), plain.weights(theta0))
        assert torch.equal(varied.cross_section(full0), plain.cross_section(theta0))
        assert torch.equal(varied.joint_log_ratio(full0, full1), plain.joint_log_ratio(theta0, theta1))
        assert torch.equal(varied.joint_score(full1)[:, :2], plain.joint_score(theta1))
        assert varied.effective_sample_size(full0) == plain.effective_sample_size(theta0)
        drawn = varied.unweight(full0, 100, generator=torch.Generator().manual_seed(5)).index
        assert torch.equal(drawn, plain.unweight(theta0, 100, generator=torch.Generator().manual_seed(5)).index)


def test_variations_are_reproduced_at_plus_and_minus_one_sigma(toy, sample):
    """w_i(θ, α_k = ±1) equals the variation's weights: at the SM for [n] variations, at every θ for [n, B]."""
    x, z, weights, morphing = sample
    events, basis = per_event(toy, sample), per_basis(toy, sample)
    theta = THETA1[:2]
    direct = toy.systematic_weights(x, z, toy.event_weights(z, theta[None], generated_at=SM)[:, 0])
    at_sm = toy.systematic_weights(x, z, weights[:, 0])
    for k, name in enumerate(("normalisation", "energy_scale")):
        for sign, side in ((-1.0, 0), (1.0, 1)):
            alpha = torch.zeros(2, dtype=torch.float64)
            alpha[k] = sign
            torch.testing.assert_close(events.weights(torch.cat([SM.double(), alpha])), at_sm[name][side],
                                       rtol=1e-12, atol=0)
            full = torch.cat([theta, alpha, torch.zeros(1, dtype=torch.float64)])
            torch.testing.assert_close(basis.weights(full), direct[name][side], rtol=1e-10, atol=1e-15)
    delta = toy.normalisation_uncertainty
    for sign in (-1.0, 1.0):
        shifted = torch.tensor([*theta.tolist(), sign, 0.0], dtype=torch.float64)
        torch.testing.assert_close(events.cross_section(shifted), events.cross_section(torch.cat([theta, SM.double()]))
                                   * (1 + sign * delta), rtol=1e-12, atol=0)


@pytest.mark.parametrize("build", [per_event, per_basis])
def test_weighted_identities_hold_exactly_at_shifted_nuisances(toy, sample, build):
    """With σ normalised over the sample, Σ_i w_i(θ1) r_i / Σ_i w_i(θ1) = 1 and Σ_i w_i(θ) t_i = 0 over (θ, α)."""
    events = build(toy, sample)
    extra = torch.tensor([0.03] * (events.n_parameters - 4), dtype=torch.float64)
    theta0, theta1 = torch.cat([THETA0, extra]), torch.cat([THETA1, -extra])
    weights = events.weights(theta1)
    ratio = (weights * events.joint_log_ratio(theta0, theta1).exp()).sum() / weights.sum()
    assert abs(float(ratio) - 1.0) < 1e-10
    score = (weights[:, None] * events.joint_score(theta1)).sum(dim=0) / weights.sum()
    assert float(score.abs().max()) < 1e-10


def test_joint_ratio_averages_to_one_and_score_to_zero_at_shifted_nuisances(events):
    """Events unweighted at (θ1, α1): E[r(x,z|θ0,α0; θ1,α1)] = 1 and E[t(x,z|θ1,α1)] = 0 within 5σ. A pure
    normalisation changes no event's probability, so its score is zero event by event."""
    drawn = events.unweight(THETA1, 30_000, generator=torch.Generator().manual_seed(1)).index
    rows = events[drawn]
    assert_mean_close(rows.joint_log_ratio(THETA0, THETA1).exp(), 1.0, "E[r] at (θ1, α1)")
    score = rows.joint_score(THETA1)
    assert_mean_close(score[:, [0, 1, 3]], torch.zeros(3), "E[t] for c1, c2, energy_scale at (θ1, α1)")
    assert float(score[:, 2].abs().max()) < 1e-12


@pytest.mark.parametrize("build", [per_event, per_basis])
def test_score_equals_finite_differences_of_the_log_density(toy, sample, build):
    events = build(toy, sample)[:300]
    step = 1e-5
    extra = [0.02] * (events.n_parameters - 4)
    for point in ([0.3, -0.2, 0.0, 0.0], [0.3, -0.2, 0.4, -0.7], [-0.6, 0.5, 1.6, -2.2]):
        theta = torch.tensor(point + extra, dtype=torch.float64)
        score = events.joint_score(theta)
        for j in range(events.n_parameters):
            shift = torch.zeros_like(theta)
            shift[j] = step
            difference = (events.log_prob(theta + shift) - events.log_prob(theta - shift)) / (2 * step)
            torch.testing.assert_close(score[:, j], difference, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("build", [per_event, per_basis])
def test_hessian_of_the_cross_section_equals_differences_of_its_gradient(toy, sample, build):
    """σ(θ, α)'s second derivatives through autograd (the profile's curvature, Fisher information from a
    Hessian) equal central differences of its exact gradient, inside and beyond code4's |α| < 1, including the
    α–α block that a cache linearised in α would leave at zero."""
    events = build(toy, sample)
    extra = [0.03] * (events.n_parameters - 4)
    step = 1e-4
    for point in ([0.3, -0.2, 0.4, -0.7], [-0.6, 0.5, 1.6, -2.2]):
        theta = torch.tensor(point + extra, dtype=torch.float64)
        hessian = torch.autograd.functional.hessian(lambda t: events.cross_section(t).sum(), theta)

        def gradient(at):
            leaf = at.clone().requires_grad_(True)
            (value,) = torch.autograd.grad(events.cross_section(leaf).sum(), leaf)
            return value

        for j in range(events.n_parameters):
            shift = torch.zeros_like(theta)
            shift[j] = step
            difference = (gradient(theta + shift) - gradient(theta - shift)) / (2 * step)
            torch.testing.assert_close(hessian[j], difference, rtol=1e-5, atol=1e-7)
        assert float(hessian[3, 3].abs()) > 1e-3  # the energy scale's curvature is there to be checked
        # forward-over-reverse (torch.func) sees the same second derivatives
        torch.testing.assert_close(torch.func.hessian(lambda t: events.cross_section(t).sum())(theta), hessian)


def test_energy_scale_variation_is_a_shift_of_the_measured_energy(toy, sample, events):
    """Reweighting to α_E = ±1 gives the distribution of x_E measured with the energy scale shifted by ±ε: the
    weighted mean of x_E equals the mean of exact draws whose x_E is shifted by ±ε E (both within their errors)."""
    theta = torch.tensor([0.4, -0.3], dtype=torch.float64)
    x, z = toy.sample(theta.expand(20_000, 2), generator=torch.Generator().manual_seed(7))
    for sign in (-1.0, 1.0):
        shifted = toy.shift_energy_scale(x, z["parton"], sign)[:, 0].double()
        weights = events.weights(torch.tensor([*theta.tolist(), 0.0, sign], dtype=torch.float64))
        mean, error = weighted_mean_and_error(events.x[:, 0].double(), weights)
        exact_error = float(shifted.std() / math.sqrt(len(shifted)))
        assert abs(mean - float(shifted.mean())) < 5 * math.hypot(error, exact_error)
    nominal, _ = weighted_mean_and_error(events.x[:, 0].double(), events.weights(torch.cat([theta, SM.double()])))
    up, _ = weighted_mean_and_error(events.x[:, 0].double(), events.weights(torch.tensor([0.4, -0.3, 0.0, 1.0])))
    assert up > nominal  # a higher energy scale measures higher energies


def test_lognormal_normalisation_changes_the_rate_and_not_the_shape(sample):
    x, _, weights, morphing = sample
    events = WeightedEvents(x, weights, morphing, nuisances=[Nuisance("luminosity", "lognormal", width=0.05)])
    theta, shifted = torch.tensor([[0.3, -0.2, 0.0], [0.3, -0.2, 0.08]], dtype=torch.float64)
    torch.testing.assert_close(events.cross_section(shifted), events.cross_section(theta) * 1.08, rtol=1e-14, atol=0)
    assert float(events.joint_log_ratio(theta, shifted).abs().max()) < 1e-12
    assert float(events.joint_score(shifted)[:, 2].abs().max()) < 1e-12
    luminosity = Nuisance("luminosity", "lognormal", width=0.05)
    expected = luminosity.log_constraint(torch.tensor([0.0, 0.08], dtype=torch.float64))
    torch.testing.assert_close(events.log_constraint(torch.stack([theta, shifted])), expected)


def test_slices_keep_the_whole_samples_normalisation(events):
    part = events[torch.arange(0, 20_000, 7)]
    torch.testing.assert_close(part.cross_section(THETA0), events.cross_section(THETA0), rtol=1e-14, atol=0)
    torch.testing.assert_close(part.joint_log_ratio(THETA0, THETA1),
                               events.joint_log_ratio(THETA0, THETA1)[::7], rtol=1e-12, atol=1e-12)


def test_augmented_data_spans_theta_and_nuisances(toy, events):
    data = events.augmented_data(toy.default_prior(), 4000, seed=2, nuisance_draws=16)
    assert data.parameter_names == ("c1", "c2", "normalisation", "energy_scale")
    assert data.t_xz0.shape == (4000, 4)
    assert len(torch.unique(data.theta0[:, 2:], dim=0)) <= 16 and float(data.theta0[:, 2:].std()) > 0.3
    assert_mean_close(data.log_r_xz[data.y == 1].exp(), 1.0, "E[r] over rows drawn at (θ1, α1)")
    assert_mean_close(data.t_xz0[data.y == 0], torch.zeros(4), "E[t(θ0, α0)] over rows drawn at (θ0, α0)")
    local = events.augmented_data(sluice.priors.Point([0.0, 0.0, 0.0, 0.0]), 200, seed=3)
    assert torch.equal(local.theta0, torch.zeros(200, 4))
    estimator = sluice.estimators.ALICES().fit(data, epochs=1)
    log_r = estimator.log_ratio(data.x[:5], data.theta0[:5], data.theta1[:5])
    assert log_r.shape == (5,) and torch.isfinite(log_r).all()


def test_bad_variations_and_nuisances_are_named(toy, sample):
    x, z, weights, morphing = sample
    x, z, weights = x[:50], z[:50], weights[:50]
    good = toy.systematic_weights(x, z, weights[:, 0])
    nuisances = toy.nuisances()

    def build(variations, nuisances=nuisances):
        return WeightedEvents(x, weights, morphing, nuisances=nuisances, variations=variations)

    down, up = good["energy_scale"]
    with pytest.raises(ValueError, match=r"variation 'energy_scale' down weights must have shape \[n_events\]"):
        build({**good, "energy_scale": (down[:40], up[:40])})
    with pytest.raises(ValueError, match="'energy_scale' down and up weights differ in shape"):
        build({**good, "energy_scale": (down, up[:, None].expand(50, 6))})
    with pytest.raises(ValueError, match="variation 'energy_scale' up weights holds NaN"):
        build({**good, "energy_scale": (down, torch.where(torch.arange(50) == 3, float("nan"), up))})
    with pytest.raises(ValueError, match="variation 'normalisation' down weights have a total ≤ 0"):
        build({**good, "normalisation": (-good["normalisation"][0], good["normalisation"][1])})
    with pytest.raises(ValueError, match="'energy_scale': 1 events have a down or up weight that is zero or of the"):
        build({**good, "energy_scale": (torch.where(torch.arange(50) == 3, -down, down), up)})
    with pytest.raises(ValueError, match="variation 'jes' has no constraint"):
        build({**good, "jes": good["energy_scale"]})
    with pytest.raises(ValueError, match="nuisance 'jes' has no constraint"):
        build(good, nuisances=(*nuisances, "jes"))
    with pytest.raises(ValueError, match="Nuisance 'jes' has no constraint"):
        Nuisance("jes", constraint=None)
    with pytest.raises(ValueError, match="gaussian nuisance 'energy_scale' has no weight variations"):
        build({"normalisation": good["normalisation"]})
    with pytest.raises(ValueError, match="'luminosity' is lognormal"):
        build({**good, "luminosity": good["normalisation"]},
              nuisances=(*nuisances, Nuisance("luminosity", "lognormal")))
    with pytest.raises(ValueError, match=r"theta must have shape \[n, 4\] or \[4\], the parameters \['c1', 'c2', "
                                         r"'normalisation', 'energy_scale'\]"):
        build(good).weights(torch.zeros(2))
    with pytest.raises(ValueError, match="resolution"):
        ParticleToy(resolution=(0.0, 0.0)).systematic_weights(x, z, weights)
