"""The asymptotic formulae of Cowan, Cranmer, Gross and Vitells (EPJC 71 (2011) 1554) as sluice.inference.limits
implements them: closed forms of a counting experiment, the large-b limit, and toys.

The toys are counting experiments n ~ Poisson(μ s + b) with a known b = 10⁶ (s = 2000, so σ_μ = √b/s = 0.5):
at that size the asymptotic formulae are exact to O(1/√b) = 0.1 %, and the atoms of the discrete Poisson
(P(n = n_obs) / p ≈ 2.4/√ν ≈ 0.2 %) are far below the toys' Monte-Carlo error, which sets every tolerance.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from sluice.inference.limits import (
    N_SIGMA,
    BinnedData,
    CountingExperiment,
    asymptotic_cls,
    asymptotic_pvalue,
    expected_cls,
    hypotest,
    test_statistic,
    toy_upper_limit,
    upper_limit,
)

Z_LIMIT = 5.0
SIGNAL, BACKGROUND = 2000.0, 1e6


def closed_form_t(n: float, s: float, b: float, mu: float) -> float:
    """−2 ln[L(μ)/L(μ̂)] of one Poisson bin, μ̂ = (n − b)/s: 2[μs + b − n + n ln(n/(μs + b))]."""
    expected = mu * s + b
    return 2.0 * (expected - n + (n * math.log(n / expected) if n > 0 else 0.0))


@pytest.mark.parametrize("n", [0.0, 38.0, 50.0, 55.0, 60.0, 75.0])
def test_single_bin_statistics_equal_their_closed_forms(n):
    """t_μ, q_μ and q̃_μ of one bin without systematics against their closed forms, in each branch: μ̂ < 0 (q̃
    measures from μ = 0: 2[μs − n ln(1 + μs/b)]), 0 ≤ μ̂ ≤ μ, and μ̂ > μ (q = 0)."""
    s, b, mu = 10.0, 50.0, 1.5
    model, data = CountingExperiment([s], [b]), BinnedData([n])
    mu_hat = (n - b) / s
    t = closed_form_t(n, s, b, mu)
    q = t if mu_hat <= mu else 0.0
    if mu_hat < 0:
        q_tilde = 2.0 * (mu * s - (n * math.log1p(mu * s / b) if n > 0 else 0.0))
    else:
        q_tilde = q
    for kind, expected in (("t", t), ("q", q), ("qtilde", q_tilde)):
        value = float(test_statistic(model, data, mu, kind)[0])
        assert value == pytest.approx(expected, rel=1e-10, abs=1e-10), f"{kind} at n = {n}"


def test_discovery_significance_of_the_asimov_data_is_the_closed_form():
    """√q_{0,A} on the signal Asimov data (n = s + b) is Z_A = √(2[(s + b) ln(1 + s/b) − s]), and p_0 = 1 − Φ(√q0)."""
    s, b = 12.0, 40.0
    result = hypotest(CountingExperiment([s], [b]), BinnedData([s + b]), 0.0, kind="q0")
    z_asimov = math.sqrt(2.0 * ((s + b) * math.log1p(s / b) - s))
    assert math.sqrt(float(result.asimov_statistic[0])) == pytest.approx(z_asimov, rel=1e-10)
    assert float(result.p_value[0]) == pytest.approx(stats.norm.sf(z_asimov), rel=1e-8)


def test_p_values_of_the_two_sided_and_one_sided_statistics():
    """t_μ follows χ²₁; q_μ is half a χ²₁ (1 − Φ(√q)); the tilde forms are continuous where their branches meet
    (q = q_{μ,A}) and reduce to the plain ones below it."""
    values = torch.tensor([0.1, 1.0, 3.84, 9.0], dtype=torch.float64)
    assert torch.allclose(asymptotic_pvalue(values, kind="t"), torch.from_numpy(stats.chi2.sf(values.numpy(), 1)))
    assert torch.allclose(asymptotic_pvalue(values, kind="q"), torch.from_numpy(stats.norm.sf(values.sqrt().numpy())))
    q_asimov = torch.tensor(2.5, dtype=torch.float64)
    for kind in ("qtilde", "ttilde"):
        below, above = (asymptotic_pvalue(q_asimov * (1 + sign * 1e-9), q_asimov, kind) for sign in (-1, 1))
        assert float(below) == pytest.approx(float(above), rel=1e-7), kind
    assert torch.allclose(asymptotic_pvalue(values[:2], q_asimov, "qtilde"), asymptotic_pvalue(values[:2], kind="q"))
    assert torch.allclose(asymptotic_pvalue(values[:2], q_asimov, "ttilde"), asymptotic_pvalue(values[:2], kind="t"))


def test_cls_at_the_median_is_twice_the_signal_p_value():
    """On the background-only Asimov data q_μ = q_{μ,A}: CL_b = 1/2, so CLs = 2(1 − Φ(√q_{μ,A})), which is
    also the median expected CLs (N = 0)."""
    q_asimov = torch.tensor([0.5, 2.0, 6.0], dtype=torch.float64)
    cls, p_value, clb = asymptotic_cls(q_asimov, q_asimov)
    assert torch.allclose(clb, torch.full_like(clb, 0.5))
    assert torch.allclose(cls, 2.0 * torch.special.ndtr(-q_asimov.sqrt()))
    assert torch.allclose(expected_cls(q_asimov)[:, N_SIGMA.index(0.0)], cls)


def test_expected_limit_tends_to_the_gaussian_one_at_large_background():
    """For one bin at b → ∞ the median CLs limit is z √b/s with z = Φ⁻¹(1 − α/2) (the Gaussian one). Expanding
    q_{μ,A} = 2[μs − b ln(1 + μs/b)] in u = μs/b gives μ_up s/√b = z + z²/(3√b) + z³/(36 b) + O(b^(−3/2)),
    which the computed limits follow to that order."""
    z = stats.norm.ppf(0.975)
    for b in (1e2, 1e4, 1e6):
        limit = upper_limit(CountingExperiment([1.0], [b]), BinnedData([b]), rtol=1e-12)
        scaled = float(limit.median[0]) / math.sqrt(b)
        series = z + z**2 / (3 * math.sqrt(b)) + z**3 / (36 * b)
        assert abs(scaled - series) < z**4 / b**1.5, f"b = {b}: {scaled} against {series}"
    assert abs(scaled / z - 1) < z / math.sqrt(b)  # and so to the Gaussian limit itself


@pytest.mark.parametrize("n_observed", [BACKGROUND - 700.0, BACKGROUND + 400.0])
def test_asymptotic_cls_limit_equals_the_toys_limit(n_observed):
    """The observed CLs upper limit from the asymptotic formulae against the one from toys (CLs at five μ around
    it, 20 000 toys under μ and under μ = 0 each), within 5 standard errors of the toys' limit; one data set
    with μ̂ < 0 (q̃'s second branch) and one with μ̂ > 0."""
    model, data = CountingExperiment([SIGNAL], [BACKGROUND]), BinnedData([n_observed])
    asymptotic = float(upper_limit(model, data).observed[0])
    mus = [asymptotic * factor for factor in (0.9, 0.95, 1.0, 1.05, 1.1)]
    toys, error = toy_upper_limit(model, data, mus, n_toys=20_000, seed=11)
    assert math.isfinite(toys), "CLs from toys did not cross 5 % within ±10 % of the asymptotic limit"
    assert abs(toys - asymptotic) < Z_LIMIT * error, f"toys {toys:.4f} ± {error:.4f}, asymptotic {asymptotic:.4f}"


def test_expected_limits_are_the_quantiles_of_background_only_toy_limits():
    """μ_up(N) from the Asimov data is the Φ(N) quantile of the observed limits of background-only experiments:
    over 4000 such toys the fraction of limits below the median and the ±1σ/±2σ band edges equals Φ(N) within
    5 binomial standard errors."""
    model = CountingExperiment([SIGNAL], [BACKGROUND])
    expected = upper_limit(model, BinnedData([BACKGROUND])).expected[0]
    toys = model.sample(BinnedData([BACKGROUND]), 0.0, 4000, torch.Generator().manual_seed(3))
    limits = upper_limit(model, toys).observed
    for k, n_sigma in enumerate(N_SIGMA):
        fraction, target = float((limits <= expected[k]).double().mean()), stats.norm.cdf(n_sigma)
        error = math.sqrt(target * (1 - target) / len(limits))
        assert abs(fraction - target) < Z_LIMIT * error, \
            f"N = {n_sigma}: {fraction:.4f} of the toys, Φ(N) = {target:.4f}"
    assert expected[0] < expected[1] < expected[2] < expected[3] < expected[4]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="unknown test statistic"):
        test_statistic(CountingExperiment([1.0], [2.0]), BinnedData([1.0]), 1.0, kind="z")
    with pytest.raises(ValueError, match="background count must be > 0"):
        CountingExperiment([1.0], [0.0])
    with pytest.raises(ValueError, match="counts must be finite"):
        BinnedData([float("nan")])
    with pytest.raises(ValueError, match="upper limits use"):
        upper_limit(CountingExperiment([1.0], [2.0]), BinnedData([1.0]), kind="t")
