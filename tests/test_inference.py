"""Inference against exact answers: the exact Galton and mixture likelihoods wrapped as estimators."""

import math

import pytest
import torch
from scipy import optimize, stats

import sluice
from sluice import inference, plots
from sluice.inference import ExactLikelihood
from sluice.inference.diagnostics import sbc_uniformity


@pytest.fixture(scope="module")
def board():
    return sluice.simulators.GaltonBoard()


@pytest.fixture(scope="module")
def exact(board):
    return ExactLikelihood(board)


def events(simulator, theta, n, seed):
    x, _ = simulator.sample(torch.as_tensor(theta, dtype=torch.float32).reshape(1, -1).expand(n, -1),
                            generator=torch.Generator().manual_seed(seed))
    return x


def test_wilks_intervals_cover_at_their_nominal_rate(board, exact):
    results = inference.coverage(exact, board, [-0.7], n_events=100, levels=(0.68, 0.95), n_experiments=500,
                                 grid=inference.make_grid([-1.5], [0.1], 801), seed=1)
    assert abs(results[0].covered - 0.68) <= 0.04
    assert abs(results[1].covered - 0.95) <= 0.03


def test_coverage_by_optimisation_matches_the_grid(board, exact):
    by_grid = inference.coverage(exact, board, [-0.7], 100, (0.68,), 60, grid=inference.make_grid([-1.5], [0.1], 801))
    by_search = inference.coverage(exact, board, [-0.7], 100, (0.68,), 60, bounds=[(-1.5, 0.1)])
    assert by_grid[0].covered == pytest.approx(by_search[0].covered, abs=2 / 60)


def test_fisher_information_equals_the_dynamic_program(board, exact):
    truth = inference.exact_fisher_information(board, [-0.8])
    assert float(truth.matrix) == pytest.approx(1.41, abs=0.01)
    sampled = inference.fisher_information(exact, events(board, [-0.8], 100_000, 2), [-0.8], n_events=1)
    assert abs(float(sampled.matrix - truth.matrix)) < 5 * float(sampled.monte_carlo_error)
    forty = inference.exact_fisher_information(board, [-0.8], n_events=40)
    assert float(forty.matrix) == pytest.approx(40 * float(truth.matrix), rel=1e-6)
    assert float(forty.standard_errors()) == pytest.approx(1 / math.sqrt(40 * float(truth.matrix)), rel=1e-5)


def test_fisher_information_of_the_mixture_by_sampling_matches_its_exact_score():
    mixture = sluice.simulators.GaussianMixture()
    sampled = inference.exact_fisher_information(mixture, [0.2, -0.1], n_samples=200_000)
    assert torch.all(torch.linalg.eigvalsh(sampled.matrix) > 0)
    x = events(mixture, [0.2, -0.1], 200_000, 3)
    again = inference.fisher_information(ExactLikelihood(mixture), x, [0.2, -0.1])
    assert torch.all((again.matrix - sampled.matrix).abs() < 5 * torch.sqrt(again.monte_carlo_error**2
                                                                             + sampled.monte_carlo_error**2))


def test_asimov_interval_width_matches_the_fisher_information(board, exact):
    n_events = 400
    asimov = inference.asimov_scan(exact, board, [-0.8], n_events, inference.make_grid([-1.2], [-0.4], 801),
                                   n_samples=200_000)
    low, high = asimov.interpolated_interval(0.68)
    expected_half_width = 1 / math.sqrt(n_events * 1.41)
    assert (high - low) / 2 == pytest.approx(expected_half_width, rel=0.1)
    assert float(asimov.mle) == pytest.approx(-0.8, abs=0.02)


def exact_log_likelihoods(board, x, thetas) -> torch.Tensor:
    """log p(x_i|θ_g) [G, n] in float64 from the board's dynamic program, without the estimator wrapper."""
    x = x.double()
    return torch.stack([board.log_likelihood(x, torch.full((len(x), 1), float(t), dtype=torch.float64))
                        for t in thetas])


def test_scan_equals_the_exact_q_and_wilks_and_neyman_agree(board, exact):
    x = events(board, [-0.7], 100, 4)
    grid = inference.make_grid([-1.1], [-0.3], 41)
    result = inference.scan(exact, x, grid)
    assert float(result.q.min()) >= -1e-4  # q ≥ 0 by construction (the refined maximum is at least the grid's)
    assert result.max_log_likelihood_ratio >= float(result.log_likelihood_ratio.max())

    # the exact answer, independently: maximise Σ_i log p(x_i|θ) in float64 with scipy, q on the same grid
    def log_likelihood(theta: float) -> float:
        return float(exact_log_likelihoods(board, x, [theta]).sum())

    best = optimize.minimize_scalar(lambda t: -log_likelihood(t), bounds=(-1.1, -0.3), method="bounded",
                                    options={"xatol": 1e-9})
    per_event = exact_log_likelihoods(board, x, grid[:, 0])
    exact_q = -2.0 * (per_event.sum(dim=1) + best.fun)
    # float32 rounding: each log r̂(x_i|θ, θ_ref) and their float64 sum ℓ are rounded to float32 (relative 2⁻²⁴),
    # so |Δℓ| ≤ 2⁻²⁴ (n max|log r| + |ℓ|) ≤ 2⁻²⁴ · 2n max|log r|; q = −2(ℓ − ℓ̂) carries two of them, doubled
    largest_log_ratio = float((per_event.max(dim=0).values - per_event.min(dim=0).values).max())
    rounding = 8 * len(x) * 2.0**-24 * largest_log_ratio
    assert torch.allclose(result.q.double(), exact_q, atol=rounding, rtol=0), float((result.q - exact_q).abs().max())
    half_width = (result.interpolated_interval(0.68)[1] - result.interpolated_interval(0.68)[0]) / 2
    # the MLE to 1% of its statistical error (the 68% half-width): far finer than any interval can see
    assert float(result.mle) == pytest.approx(best.x, abs=0.01 * half_width)

    thresholds = inference.neyman_thresholds(exact, board, grid, 100, level=0.68, n_toys=300, seed=5)
    inner = thresholds[10:31]  # where the toys' maxima lie inside the grid
    assert abs(float(inner.median()) - inference.wilks_threshold(0.68, 1)) < 0.25
    wilks, neyman = result.interval(0.68), result.interval(0.68, thresholds=thresholds)
    spacing = 0.8 / 40
    assert abs(wilks[0] - neyman[0]) <= 2 * spacing + 1e-6 and abs(wilks[1] - neyman[1]) <= 2 * spacing + 1e-6


def test_profiling_never_exceeds_any_fixed_nuisance_scan():
    mixture = sluice.simulators.GaussianMixture()
    exact = ExactLikelihood(mixture)
    x = events(mixture, [0.3, -0.2], 200, 6)
    grid_a = torch.linspace(-0.2, 0.8, 11)[:, None]
    profiled = inference.profile_scan(exact, x, grid_a, ["a"], {"b": (-1.0, 1.0)})
    for b in (-0.5, -0.2, 0.1):
        fixed = torch.cat([grid_a, torch.full_like(grid_a, b)], dim=1)
        fixed_values = inference.evaluate.summed_log_ratio(exact, x, fixed, torch.tensor([0.3, -0.2]))
        profile_values = inference.evaluate.summed_log_ratio(
            exact, x, torch.cat([grid_a, profiled.nuisance], dim=1), torch.tensor([0.3, -0.2]))
        assert torch.all(profile_values >= fixed_values - 1e-3)
    full = inference.scan(exact, x, inference.make_grid([-1, -1], [1, 1], 41))
    assert float(profiled.mle[0]) == pytest.approx(float(full.mle[0]), abs=0.03)


def test_closure_of_the_exact_ratio(board, exact):
    mean, error = inference.closure_test(exact, board, [-0.8], [-0.6])
    assert abs(mean - 1.0) < 5 * error


def test_mcmc_posterior_matches_the_grid_posterior(board, exact):
    x = events(board, [-0.7], 30, 7)
    prior = board.default_prior()
    grid = inference.grid_posterior(exact, x, prior, n_samples=2000, seed=0)
    chain = inference.mcmc_posterior(exact, x, prior, n_samples=2000, seed=0)
    assert inference.c2st(grid.samples, chain.samples) < 0.55
    assert 0.2 < chain.acceptance < 0.95


def test_c2st_is_at_chance_for_one_distribution_and_at_the_bayes_accuracy_for_two():
    generator = torch.Generator().manual_seed(12)
    a, b = torch.randn(1000, 2, generator=generator), torch.randn(1000, 2, generator=generator)
    n = 2000  # every sample is classified once, by a classifier that did not train on it
    # one distribution: each held-out guess is right with probability 1/2, so accuracy ≈ 1/2 ± √(1/4n)
    assert inference.c2st(a, b) < 0.5 + 5 * math.sqrt(0.25 / n)
    # N(0, 1) against N((1, 1), 1): the best classifier cuts the projection on (1, 1)/√2 halfway along the shift
    # of √2, right with probability Φ(√2/2) = 0.760; no classifier beats it, and a good one reaches it, up to the
    # binomial error of n held-out guesses
    bayes = float(stats.norm.cdf(math.sqrt(2) / 2))
    assert abs(inference.c2st(a, b + 1.0) - bayes) < 5 * math.sqrt(bayes * (1 - bayes) / n)


SBC_LEVEL = 1e-3  # significance of the χ² test of uniform ranks: a calibrated posterior fails it once in 1000 seeds
SBC_DRAWS = 19  # posterior draws per data set: ranks 0…19, pooled into 5 groups of 4 (40 expected per group at 200)


def grid_posterior_sampler(exact, prior, width_factor: float = 1.0):
    """Draws of the exact grid posterior, spread by ``width_factor`` about its exact mean (1: the posterior itself,
    < 1: too narrow, > 1: too wide), as ``sbc_ranks`` calls them: (x, n, seed) → [n, 1]."""
    def sampler(x, n, seed):
        posterior = inference.grid_posterior(exact, x, prior, points=101, n_samples=n, seed=seed)
        if width_factor == 1.0:
            return posterior.samples
        weights = torch.softmax(posterior.grid_log_density.double(), dim=0)
        mean = (weights[:, None] * posterior.grid.double()).sum(dim=0).float()
        return mean + width_factor * (posterior.samples - mean)
    return sampler


def test_sbc_ranks_of_the_exact_grid_posterior_are_uniform(board, exact):
    prior = board.default_prior()
    ranks = inference.sbc_ranks(grid_posterior_sampler(exact, prior), board, prior, n_events=20,
                                n_simulations=200, n_posterior_samples=SBC_DRAWS)
    assert float(sbc_uniformity(ranks, SBC_DRAWS, bins=5)[0]) > SBC_LEVEL
    fraction = ranks.float() / SBC_DRAWS  # uniform on {0, …, 19}/19: mean 1/2, variance 0.0965
    assert abs(float(fraction.mean()) - 0.5) < 5 * math.sqrt(0.0965 / 200)


@pytest.mark.parametrize("width_factor", [0.5, 2.0], ids=["too-narrow", "too-wide"])
def test_sbc_uniformity_rejects_a_posterior_too_narrow_or_too_wide(board, exact, width_factor):
    """Both keep the mean rank at 1/2 (the truth is as often below as above), so only the shape of the rank
    histogram tells them: a U (truths outside the draws) or a hump (truths among the central draws)."""
    prior = board.default_prior()
    ranks = inference.sbc_ranks(grid_posterior_sampler(exact, prior, width_factor), board, prior, n_events=20,
                                n_simulations=100, n_posterior_samples=SBC_DRAWS)
    assert float(sbc_uniformity(ranks, SBC_DRAWS, bins=5)[0]) < SBC_LEVEL


def test_variational_posterior_agrees_with_the_grid_for_a_trained_estimator(board):
    prior = board.default_prior()
    data = sluice.simulate(board, prior, 1000, seed=0)
    estimator = sluice.estimators.ALICES().fit(data, epochs=30)
    x = events(board, [-0.7], 30, 8)
    grid = inference.grid_posterior(estimator, x, prior, n_samples=2000)
    flow = inference.variational_posterior(estimator, x, prior, steps=600, n_samples=2000)
    assert float(flow.mean()) == pytest.approx(float(grid.mean()), abs=0.02)
    assert float(flow.samples.std()) == pytest.approx(float(grid.samples.std()), rel=0.15)
    assert inference.c2st(grid.samples, flow.samples) < 0.56


@pytest.mark.parametrize("n_events", [50, 2000])  # 2000 discrete events: each distinct x is evaluated once
def test_batched_table_equals_one_call_per_grid_point(board, n_events):
    data = sluice.simulate(board, board.default_prior(), 500, seed=0)
    estimator = sluice.estimators.CARL().fit(data, epochs=2)
    x = events(board, [-0.7], n_events, 9)
    grid = inference.make_grid([-1.0], [-0.4], 7)
    table = inference.evaluate.log_ratio_table(estimator, x, grid, grid[3])
    one_by_one = torch.stack([estimator.log_ratio(x, theta, grid[3]) for theta in grid])
    assert torch.allclose(table, one_by_one, atol=1e-5)


def test_posterior_exports_to_arviz_and_plots_are_written(board, exact, tmp_path):
    pytest.importorskip("arviz")
    x = events(board, [-0.7], 30, 10)
    posterior = inference.grid_posterior(exact, x, board.default_prior(), n_samples=500)
    data = posterior.to_arviz()
    assert data.posterior["theta"].shape == (1, 500)
    result = inference.scan(exact, x, inference.make_grid([-1.1], [-0.3], 41))
    plots.plot_scan({"exact": result}, str(tmp_path / "q.png"), theta_true=[-0.7])
    plots.plot_posterior({"grid": posterior.samples}, str(tmp_path / "post.png"), ("theta",))
    plots.plot_coverage({"exact": [inference.Coverage(0.68, 0.66, 500)]}, str(tmp_path / "cov.png"))
    mixture = sluice.simulators.GaussianMixture()
    two_d = inference.scan(ExactLikelihood(mixture), events(mixture, [0.2, 0.1], 100, 11),
                           inference.make_grid([-1, -1], [1, 1], 21), refine=False)
    plots.plot_scan({"exact": two_d}, str(tmp_path / "q2.png"), theta_true=[0.2, 0.1])
    for name in ("q.png", "post.png", "cov.png", "q2.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
