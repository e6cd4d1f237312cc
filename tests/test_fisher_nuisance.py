"""Fisher information with the rate term and nuisance parameters: the extended likelihood of events at a few
points of x is a set of Poisson counts, whose information Σ_b ∂ν_b ∂ν_bᵀ/ν_b is known in closed form; profiling
is the Schur complement (never more information than projecting), projecting ignores the nuisances."""

import pytest
import torch
from sluice.morphing import Morphing
from sluice.weighted_events import WeightedEvents

from sluice.inference.exact import ExactLikelihood
from sluice.inference.fisher import fisher_information, rate_information, weighted_fisher_information
from sluice.simulators.particle_toy import ParticleToy
from sluice.simulators.systematics import Interpolator, Nuisance

LINEAR = Morphing([[0.0], [1.0]], degree=1, parameter_names=("mu",))  # w(μ) = b + μ s from the weights at μ = 0, 1


def binned_events(background, signal, down=None, up=None, luminosity_width=None) -> WeightedEvents:
    """One weighted "event" per bin b (x = b) with weight b_b + μ s_b; optional shape variation ratios at μ = 0
    (a gaussian nuisance "shape") and a log-normal luminosity."""
    background, signal = torch.as_tensor(background, dtype=torch.float64), torch.as_tensor(signal, dtype=torch.float64)
    weights = torch.stack([background, background + signal], dim=1)
    nuisances, variations = [], {}
    if down is not None:
        nuisances.append(Nuisance("shape"))
        down, up = torch.as_tensor(down, dtype=torch.float64), torch.as_tensor(up, dtype=torch.float64)
        variations["shape"] = (background * down, background * up)
    if luminosity_width is not None:
        nuisances.append(Nuisance("luminosity", "lognormal", width=luminosity_width))
    x = torch.arange(len(background), dtype=torch.float32)[:, None]
    return WeightedEvents(x, weights, LINEAR, nuisances=nuisances, variations=variations)


def test_extended_information_equals_that_of_poisson_counts_per_bin():
    """With events at a few points, shape term + rate term = Σ_b ∂ν_b ∂ν_bᵀ / ν_b, plus the constraints."""
    background, signal = [5.0, 3.0, 1.0], [0.5, 1.5, 2.0]
    down, up = [0.9, 1.2, 1.0], [1.1, 0.85, 1.3]
    events = binned_events(background, signal, down, up, luminosity_width=0.05)
    mu, luminosity = 0.7, 20.0
    fisher = weighted_fisher_information(events, [mu, 0.0, 0.0], luminosity=luminosity)
    b, s = torch.tensor(background, dtype=torch.float64), torch.tensor(signal, dtype=torch.float64)
    ratios = torch.tensor(down, dtype=torch.float64), torch.tensor(up, dtype=torch.float64)
    slope = Interpolator(1.0, *ratios, "code4").factor_slope(0.0)  # f'(0) per bin
    nu = luminosity * (b + mu * s)
    derivatives = torch.stack([luminosity * s, nu * slope, nu], dim=1)  # ∂ν_b/∂(μ, α_shape, α_luminosity)
    expected = (derivatives[:, :, None] * derivatives[:, None, :] / nu[:, None, None]).sum(dim=0)
    expected += torch.diag(torch.tensor([0.0, 1.0, 1 / 0.05**2], dtype=torch.float64))
    torch.testing.assert_close(fisher.matrix, expected, rtol=1e-12, atol=1e-12)
    assert fisher.n_events == pytest.approx(float(nu.sum()), rel=1e-14)
    assert fisher.parameter_names == ("mu", "shape", "luminosity")
    assert fisher.nuisance_names == ("shape", "luminosity")


def test_profiled_counting_experiment_with_a_normalisation_uncertainty():
    """One bin, ν = L (b + μ s)(1 + α), α log-normal of width w: profiling gives I = (L s)² / (ν (1 + ν w²)),
    the variance ν + (w ν)² of a Poisson count with a relative normalisation uncertainty w."""
    b, s, luminosity, width, mu = 4.0, 2.0, 10.0, 0.1, 0.5
    fisher = weighted_fisher_information(binned_events([b], [s], luminosity_width=width), [mu, 0.0],
                                         luminosity=luminosity)
    nu = luminosity * (b + mu * s)
    profiled = fisher.profiled()
    assert profiled.parameter_names == ("mu",) and profiled.nuisance_names == ()
    assert float(profiled.matrix[0, 0]) == pytest.approx((luminosity * s) ** 2 / (nu * (1 + nu * width**2)), rel=1e-12)
    assert float(fisher.projected().matrix[0, 0]) == pytest.approx((luminosity * s) ** 2 / nu, rel=1e-12)


def test_projection_ignores_the_nuisances():
    """The θ block equals the information of the same events without any nuisance."""
    background, signal = [5.0, 3.0, 1.0], [0.5, 1.5, 2.0]
    with_nuisances = weighted_fisher_information(binned_events(background, signal, [0.9, 1.2, 1.0], [1.1, 0.85, 1.3],
                                                               luminosity_width=0.05), [0.7, 0.0, 0.0], luminosity=20.0)
    without = weighted_fisher_information(binned_events(background, signal), [0.7], luminosity=20.0)
    torch.testing.assert_close(with_nuisances.projected().matrix, without.matrix, rtol=1e-13, atol=0)
    torch.testing.assert_close(with_nuisances.projected(["mu"]).matrix, with_nuisances.matrix[:1, :1], rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(8))
def test_profiling_never_increases_the_information(seed):
    """projected − profiled is positive semi-definite, for random counts, signals and variations."""
    generator = torch.Generator().manual_seed(seed)
    bins = 4
    background = (1 + 5 * torch.rand(bins, generator=generator, dtype=torch.float64)).tolist()
    signal = (3 * torch.rand(bins, generator=generator, dtype=torch.float64)).tolist()
    down = (0.7 + 0.5 * torch.rand(bins, generator=generator, dtype=torch.float64)).tolist()
    up = (0.8 + 0.5 * torch.rand(bins, generator=generator, dtype=torch.float64)).tolist()
    fisher = weighted_fisher_information(binned_events(background, signal, down, up, luminosity_width=0.1),
                                         [0.4, 0.3, 0.02], luminosity=15.0)
    loss = fisher.projected().matrix - fisher.profiled().matrix
    assert float(torch.linalg.eigvalsh(loss).min()) >= -1e-12 * float(fisher.matrix.abs().max())
    assert float(loss[0, 0]) > 0  # here the nuisances do correlate with μ, so profiling costs information


def test_estimator_information_with_the_rate_term_matches_the_weights_at_truth_level():
    """Truth level (x = z): the exact likelihood's score on events drawn at θ (an estimator's route, with the rate
    term from σ(θ)) and the weighted sample's joint scores give the same information within their errors."""
    truth = ParticleToy(resolution=(0.0, 0.0))
    theta = torch.tensor([0.3, -0.2])
    x, z = truth.sample(theta.expand(20_000, 2), generator=torch.Generator().manual_seed(0))
    morphing = truth.morphing()
    sm = torch.zeros(2)
    generated, _ = truth.sample(sm.expand(20_000, 2), generator=torch.Generator().manual_seed(1))
    weights = truth.event_weights(generated.double(), morphing.basis_points, generated_at=sm)
    exact_sigma = truth.cross_section(morphing.basis_points)
    events = WeightedEvents(generated, weights, morphing, basis_cross_sections=exact_sigma)
    luminosity = 50.0
    weighted = weighted_fisher_information(events, theta, luminosity=luminosity)
    sampled = fisher_information(ExactLikelihood(truth), x, theta, luminosity=luminosity,
                                 cross_section=truth.cross_section)
    assert sampled.n_events == pytest.approx(weighted.n_events, rel=1e-6)
    error = (weighted.monte_carlo_error**2 + sampled.monte_carlo_error.double() ** 2).sqrt()
    assert torch.all((weighted.matrix - sampled.matrix.double()).abs() < 5 * error + 1e-4 * weighted.matrix.abs())
    torch.testing.assert_close(rate_information(truth.cross_section, theta, luminosity),
                               rate_information(events.cross_section, theta, luminosity), rtol=1e-10, atol=1e-10)


def test_bad_luminosity_and_counts_are_named():
    events = binned_events([4.0], [2.0], luminosity_width=0.1)
    with pytest.raises(ValueError, match="luminosity must be a positive finite number"):
        weighted_fisher_information(events, [0.5, 0.0], luminosity=0.0)
    with pytest.raises(ValueError, match="luminosity must be a positive finite number"):
        rate_information(events.cross_section, [0.5, 0.0], luminosity=-3.0)
    with pytest.raises(ValueError, match="give n_events or luminosity, not both"):
        weighted_fisher_information(events, [0.5, 0.0], n_events=10, luminosity=1.0)
    with pytest.raises(ValueError, match="needs the cross section"):
        fisher_information(ExactLikelihood(ParticleToy()), torch.zeros(3, 2), [0.0, 0.0], luminosity=1.0)
    with pytest.raises(ValueError, match="unknown parameter 'c3'"):
        weighted_fisher_information(events, [0.5, 0.0]).profiled(["c3"])
