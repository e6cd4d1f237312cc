"""Scan's regions and intervals, on log-likelihood curves whose answers are known in closed form."""

import math
import warnings

import pytest
import torch
from scipy import stats

from sluice.inference import Scan, make_grid, maximum_likelihood, scan, wilks_threshold


def quadratic_scan(centre: float = 0.3, width: float = 0.2, points: int = 401, low=-1.0, high=1.0) -> Scan:
    """ℓ(θ) = −(θ − centre)² / (2 width²): q(θ) = ((θ − centre)/width)², so the Wilks interval at level L is
    centre ± width·√χ²₁(L)."""
    grid = make_grid([low], [high], points)
    values = -((grid[:, 0].double() - centre) ** 2) / (2 * width**2)
    return Scan(grid, values.float(), torch.tensor([centre]), 0.0, 100.0, ("theta",))


def test_wilks_threshold_is_the_chi2_quantile_for_p_parameters():
    assert wilks_threshold(0.68, 1) == pytest.approx(stats.chi2.ppf(0.68, 1))
    assert wilks_threshold(0.95, 2) == pytest.approx(5.991464547, rel=1e-9)  # −2 log(0.05)
    assert wilks_threshold(0.6826894921, 1) == pytest.approx(1.0, rel=1e-6)


def test_make_grid_spans_the_box_with_the_points_asked_for():
    grid = make_grid([-1.0, 0.0], [1.0, 2.0], [3, 5])
    assert grid.shape == (15, 2)
    assert sorted(set(grid[:, 0].tolist())) == [-1.0, 0.0, 1.0]
    assert sorted(set(grid[:, 1].tolist())) == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert make_grid([0.0], [1.0], 4)[:, 0].tolist() == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])


def test_q_is_minus_twice_the_log_likelihood_from_the_maximum():
    result = quadratic_scan()
    expected = ((result.grid[:, 0].double() - 0.3) / 0.2) ** 2
    assert torch.allclose(result.q.double(), expected, atol=1e-5)


@pytest.mark.parametrize("level", [0.68, 0.95])
def test_interpolated_interval_is_centre_plus_minus_width_times_root_threshold(level):
    half = 0.2 * math.sqrt(wilks_threshold(level, 1))
    low, high = quadratic_scan().interpolated_interval(level)
    spacing = 2.0 / 400
    # linear interpolation of a parabola between grid points errs by at most spacing² / (8 · width · half)
    tolerance = spacing**2 / (8 * 0.2 * half) * 2 + 1e-5
    assert low == pytest.approx(0.3 - half, abs=tolerance)
    assert high == pytest.approx(0.3 + half, abs=tolerance)


def test_interval_is_the_extent_of_the_grid_points_inside_the_region():
    result = quadratic_scan(points=201)
    half = 0.2 * math.sqrt(wilks_threshold(0.68, 1))
    low, high = result.interval(0.68)
    spacing = 0.01
    assert 0.3 - half <= low < 0.3 - half + spacing + 1e-6
    assert 0.3 + half - spacing - 1e-6 < high <= 0.3 + half
    inside = result.region(0.68)
    assert torch.equal(inside, (result.grid[:, 0] >= low) & (result.grid[:, 0] <= high))


def test_region_takes_neyman_thresholds_per_point_instead_of_wilks():
    result = quadratic_scan(points=5, low=0.1, high=0.5)  # q = 1, 0.25, 0, 0.25, 1
    thresholds = torch.tensor([2.0, 0.1, 0.1, 0.5, 0.5])
    assert result.region(thresholds=thresholds).tolist() == [True, False, True, True, False]


def test_an_interval_that_reaches_the_edge_of_the_grid_is_open_there():
    low, high = quadratic_scan(centre=-0.95, points=201).interpolated_interval(0.68)
    assert math.isnan(low) and high == pytest.approx(-0.95 + 0.2 * math.sqrt(wilks_threshold(0.68, 1)), abs=1e-3)


def test_interval_of_an_empty_region_is_nan_and_two_parameter_scans_refuse_interpolation():
    result = quadratic_scan(points=5, low=0.1, high=0.5)
    assert all(math.isnan(v) for v in result.interval(thresholds=torch.full((5,), -1.0)))
    two = Scan(make_grid([0.0, 0.0], [1.0, 1.0], 3), torch.zeros(9), torch.zeros(2), 0.0, 1.0)
    with pytest.raises(ValueError, match="one-parameter"):
        two.interpolated_interval()


class UnitGaussian:
    """An exact "estimator": x ~ N(μ, 1), log r(x|μ0, μ1) = [(x − μ1)² − (x − μ0)²] / 2."""

    parameter_names_ = ("mu",)

    def log_ratio(self, x, theta0, theta1):
        x = torch.as_tensor(x, dtype=torch.float32).reshape(len(x), -1)[:, 0]
        return ((x - theta1[..., 0]) ** 2 - (x - theta0[..., 0]) ** 2) / 2


def test_weighted_scan_equals_the_scan_of_repeated_events():
    x = torch.tensor([[0.1], [0.7], [-0.2]])
    weights = torch.tensor([2.0, 1.0, 3.0])
    repeated = x.repeat_interleave(weights.long(), dim=0)
    grid = torch.linspace(-1.0, 1.0, 41)  # a [G] grid is read as one parameter
    weighted, plain = scan(UnitGaussian(), x, grid, weights=weights), scan(UnitGaussian(), repeated, grid)
    assert weighted.grid.shape == (41, 1) and weighted.parameter_names == ("mu",)
    assert weighted.n_events == 6.0 == plain.n_events
    assert torch.allclose(weighted.q, plain.q, atol=1e-4)
    # the refined MLE of N(μ, 1) is the weighted mean, off the grid
    mean = float((weights * x[:, 0]).sum() / weights.sum())
    assert float(weighted.mle[0]) == pytest.approx(mean, abs=1e-3)
    assert float(plain.mle[0]) == pytest.approx(mean, abs=1e-3)
    assert weighted.max_log_likelihood_ratio >= float(weighted.log_likelihood_ratio.max())
    unrefined = scan(UnitGaussian(), x, grid, weights=weights, refine=False)
    assert float(unrefined.mle[0]) in grid.tolist() and unrefined.max_log_likelihood_ratio == pytest.approx(
        float(unrefined.log_likelihood_ratio.max()))


def test_a_maximum_beyond_the_box_stops_at_its_edge_without_a_warning():
    x = torch.full((20, 1), 0.9) + torch.linspace(-0.1, 0.1, 20)[:, None]  # mean 0.9: the maximum lies beyond 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # converging is not an iteration limit: no RuntimeWarning
        theta, value = maximum_likelihood(UnitGaussian(), x, torch.tensor([0.0]), [(-0.5, 0.5)], torch.zeros(1))
        inside, _ = maximum_likelihood(UnitGaussian(), x - 0.8, torch.tensor([0.4]), [(-0.5, 0.5)], torch.zeros(1))
    assert float(theta[0]) == pytest.approx(0.5, abs=1e-6)
    at_edge = UnitGaussian().log_ratio(x, torch.full((20, 1), 0.5), torch.zeros(20, 1)).sum()
    assert value == pytest.approx(float(at_edge), rel=1e-5)
    assert float(inside[0]) == pytest.approx(0.1, abs=1e-3)
