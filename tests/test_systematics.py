"""HistFactory's interpolation codes and the nuisance constraint terms: pyhf's numbers, the ±1σ anchors, smoothness,
gradients, and clear errors."""

import math

import numpy as np
import pytest
import torch

from conftest import assert_mean_close
from sluice.simulators.systematics import CODES, Interpolator, Nuisance, interpolate

NOMINAL = torch.tensor([10.0, 5.0, 2.0, 7.0], dtype=torch.float64)
DOWN = torch.tensor([8.0, 5.5, 1.0, 6.0], dtype=torch.float64)  # asymmetric, one-sided, and symmetric variations
UP = torch.tensor([13.0, 4.0, 2.5, 8.0], dtype=torch.float64)
ALPHAS = torch.tensor([-2.3, -1.0, -0.7, -0.2, 0.0, 0.3, 0.99, 1.0, 1.7], dtype=torch.float64)


@pytest.mark.parametrize("code", CODES)
def test_interpolation_equals_pyhf(code):
    """The same numbers as pyhf's own interpolators (additive codes return deltas there, multiplicative factors)."""
    pyhf = pytest.importorskip("pyhf", reason="pyhf (the 'hep' extra) gives the reference numbers")
    from pyhf import interpolators

    pyhf.set_backend("numpy")
    histograms = [[[DOWN.tolist(), NOMINAL.tolist(), UP.tolist()]]]  # [modifier, sample, (down, nominal, up)]
    key = code[4:] if code.endswith("p") else int(code[4:])  # pyhf's keys: 0, 1, 4, "4p"
    reference = interpolators.get(key)(histograms, subscribe=False)
    result = np.asarray(reference(pyhf.tensorlib.astensor([ALPHAS.tolist()])))[0, 0]  # [alpha, bin]
    expected = NOMINAL.numpy() * result if code in ("code1", "code4") else NOMINAL.numpy() + result
    mine = interpolate(ALPHAS[:, None], NOMINAL, DOWN, UP, code)
    np.testing.assert_allclose(mine.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("code", CODES)
def test_every_code_passes_through_the_templates(code):
    for alpha, template in ((-1.0, DOWN), (0.0, NOMINAL), (1.0, UP)):
        torch.testing.assert_close(interpolate(alpha, NOMINAL, DOWN, UP, code), template, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("code", ["code4", "code4p"])
def test_default_codes_are_smooth_where_the_pieces_meet(code):
    """code4 and code4p have a continuous slope at α = 0 and at α = ±1 (code0 and code1 have a kink at 0)."""
    step = 1e-7
    for point in (-1.0, 0.0, 1.0):
        alpha = torch.tensor([point - step, point + step], dtype=torch.float64, requires_grad=True)
        values = interpolate(alpha[:, None], NOMINAL, DOWN, UP, code)
        slopes = torch.stack([torch.autograd.grad(values[k].sum(), alpha, retain_graph=True)[0][k] for k in (0, 1)])
        assert float((slopes[0] - slopes[1]).abs()) < 1e-5 * float(slopes.abs().max())


@pytest.mark.parametrize("code", CODES)
def test_gradient_in_alpha_equals_finite_differences(code):
    alpha = torch.tensor([-1.6, -0.45, 0.2, 0.8, 1.3], dtype=torch.float64, requires_grad=True)
    (gradient,) = torch.autograd.grad(interpolate(alpha[:, None], NOMINAL, DOWN, UP, code).sum(), alpha)
    step = 1e-6
    with torch.no_grad():
        difference = (interpolate(alpha[:, None] + step, NOMINAL, DOWN, UP, code)
                      - interpolate(alpha[:, None] - step, NOMINAL, DOWN, UP, code)).sum(dim=1) / (2 * step)
    torch.testing.assert_close(gradient, difference, rtol=1e-7, atol=1e-7)


def test_interpolation_broadcasts_and_keeps_dtype():
    alpha = torch.zeros(3, 1, 1)
    assert interpolate(alpha, NOMINAL.float(), DOWN.float(), UP.float(), "code4").shape == (3, 1, 4)
    assert interpolate(alpha, NOMINAL.float(), DOWN.float(), UP.float(), "code4").dtype == torch.float32
    assert interpolate(0.5, NOMINAL, DOWN, UP, "code4p").dtype == torch.float64
    assert float(interpolate(0.7, 0.0, 0.0, 0.0, "code4")) == 0.0  # an empty bin stays empty


def test_gaussian_constraint_is_the_normal_density():
    alpha = torch.tensor([-2.0, -0.3, 0.0, 1.5], dtype=torch.float64)
    for width in (1.0, 0.4):
        expected = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), width).log_prob(alpha)
        torch.testing.assert_close(Nuisance("jes", width=width).log_constraint(alpha), expected, rtol=1e-13, atol=0)


def test_lognormal_constraint_is_the_auxiliary_measurements_density():
    """c(α) = LogNormal(a = 1 | median η = 1 + α, width): maximal at α = 0, −inf where η ≤ 0."""
    nuisance = Nuisance("luminosity", "lognormal", width=0.1)
    alpha = torch.tensor([-0.5, -0.05, 0.0, 0.2], dtype=torch.float64)
    expected = torch.distributions.LogNormal(torch.log1p(alpha), 0.1).log_prob(torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(nuisance.log_constraint(alpha), expected, rtol=1e-13, atol=0)
    assert int(nuisance.log_constraint(torch.linspace(-0.1, 0.1, 201, dtype=torch.float64)).argmax()) == 100
    assert nuisance.log_constraint(torch.tensor([-1.0, -3.0])).isneginf().all()


@pytest.mark.parametrize("constraint", ["gaussian", "lognormal"])
def test_constraint_information_is_minus_the_curvature(constraint):
    nuisance = Nuisance("a", constraint, width=0.3)
    for point in (0.0, 0.4):
        curvature = torch.autograd.functional.hessian(nuisance.log_constraint, torch.tensor(point, dtype=torch.float64))
        if constraint == "gaussian" or point == 0.0:  # the log-normal's observed information equals 1/s² at α = 0
            assert -float(curvature) == pytest.approx(nuisance.information(point), rel=1e-10)
    assert nuisance.information() == pytest.approx(1 / 0.09)


def test_constraint_draws_follow_the_constraint():
    generator = torch.Generator().manual_seed(0)
    gaussian = Nuisance("a", width=0.5).sample(20_000, generator)
    assert_mean_close(gaussian, 0.0, "mean of gaussian draws")
    assert_mean_close(gaussian**2, 0.25, "variance of gaussian draws")
    lognormal = Nuisance("b", "lognormal", width=0.2).sample(20_000, generator)
    assert bool((lognormal > -1).all())
    assert_mean_close(1 + lognormal, math.exp(0.02), "mean of the log-normal normalisation 1 + α")


def test_bad_codes_constraints_and_variations_are_named():
    with pytest.raises(ValueError, match="unknown interpolation code 'code2'"):
        interpolate(0.5, NOMINAL, DOWN, UP, "code2")
    with pytest.raises(ValueError, match="unknown constraint 'uniform'"):
        Nuisance("jes", "uniform")
    with pytest.raises(ValueError, match="Nuisance 'jes' has no constraint"):
        Nuisance("jes", None)
    with pytest.raises(ValueError, match="width must be a positive"):
        Nuisance("jes", width=0.0)
    with pytest.raises(ValueError, match="code4 is multiplicative"):
        interpolate(0.5, NOMINAL, -DOWN, UP, "code4")


@pytest.mark.parametrize("code", ["code1", "code4"])
def test_closed_form_factor_slope_equals_autograd(code):
    interpolator = Interpolator(NOMINAL, DOWN, UP, code)
    alpha = torch.tensor([-1.6, -1.0, -0.45, 0.2, 0.8, 1.0, 1.3], dtype=torch.float64, requires_grad=True)
    (gradient,) = torch.autograd.grad(interpolator.factor(alpha[:, None]).sum(), alpha)
    torch.testing.assert_close(interpolator.factor_slope(alpha[:, None]).sum(dim=1), gradient, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("code", ["code1", "code4"])
def test_closed_form_factor_curvature_equals_autograd(code):
    """d²f/dα² in closed form equals autograd's second derivative of f, on both sides of code4's |α| = 1
    (α = ±1 itself: code4 is twice differentiable there; code1's branch at 0 is one-sided, so 0 is left out)."""
    interpolator = Interpolator(NOMINAL, DOWN, UP, code)
    alpha = torch.tensor([-1.6, -1.0, -0.45, 0.2, 0.8, 1.0, 1.3], dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(interpolator.factor(alpha[:, None]).sum(), alpha, create_graph=True)
    (curvature,) = torch.autograd.grad(slope.sum(), alpha)
    torch.testing.assert_close(interpolator.factor_curvature(alpha[:, None]).sum(dim=1), curvature, rtol=1e-10,
                               atol=1e-10)


def test_selected_interpolator_equals_the_rows_it_selects():
    interpolator = Interpolator(NOMINAL, DOWN, UP, "code4")
    index = torch.tensor([3, 0, 0])
    torch.testing.assert_close(interpolator[index](0.37), interpolator(0.37)[index], rtol=0, atol=0)
    with pytest.raises(ValueError, match="code4p is additive"):
        Interpolator(NOMINAL, DOWN, UP, "code4p").factor(0.5)
