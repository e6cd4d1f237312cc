"""Hypothesis tests and CLs upper limits on a signal strength μ with the asymptotic formulae of Cowan, Cranmer,
Gross and Vitells, "Asymptotic formulae for likelihood-based tests of new physics", EPJC 71 (2011) 1554, and
toy experiments to check them.

With λ(μ) = L(μ, α̂̂(μ)) / L(μ̂, α̂) (α the nuisance parameters, α̂̂(μ) their conditional maximum, (μ̂, α̂) the
global one), the test statistics (``kind``) are

    "t"       t_μ  = −2 ln λ(μ)                                     two-sided
    "ttilde"  t̃_μ  = t_μ with μ̂ restricted to μ̂ ≥ 0                 two-sided, μ ≥ 0 physical
    "q"       q_μ  = t_μ if μ̂ ≤ μ, else 0                           upper limits
    "qtilde"  q̃_μ  = q_μ with μ̂ restricted to μ̂ ≥ 0                 upper limits (the LHC's choice, pyhf's "qtilde")
    "q0"      q_0  = −2 ln λ(0) if μ̂ ≥ 0, else 0                    discovery

Asymptotically (Wald: μ̂ ~ N(μ', σ²)) their distributions depend on μ/σ only, and σ comes from the Asimov data set
A of the background-only hypothesis (μ' = 0, nuisance parameters at α̂̂(0) fitted to the data): q_{μ,A} = μ²/σ².
With t = √q_μ, or for q̃_μ > q_{μ,A} the transformed t = (q̃_μ + q_{μ,A}) / (2√q_{μ,A}),

    p_μ = 1 − Φ(t)                 CL_b = 1 − p_b = P(q ≥ q_obs | 0) = Φ(√q_{μ,A} − t)
    CLs = p_μ / (1 − p_b)          (Read's CLs: μ is excluded at level CL when CLs ≤ 1 − CL)

and p_0 = 1 − Φ(√q_0), p(t_μ) = 2(1 − Φ(√t_μ)), with t̃_μ's two-branch form (Cowan et al. eq. 43). Under the
background-only hypothesis μ̂ = Nσ is the Φ(N) quantile, which gives t = √q_{μ,A} − N (clipped at 0) and

    CLs_exp(N) = (1 − Φ(√q_{μ,A} − N)) / Φ(N),

so the expected limit μ_up(N) (CLs_exp(N) = 1 − CL) is the Φ(N) quantile of the upper limits of background-only
experiments: N = 0 the median, ±1 and ±2 the bands. With a single bin and no nuisance parameters,
σ ≈ √b/s and the median limit tends to Φ⁻¹(1 − α/2) √b/s at large b (the Gaussian one).

A *model* here is any object with
    ``fit(data, mu=None, poi_bounds=None, start=None) -> Fit``  (μ fixed per data set, or free inside
                                                   ``poi_bounds``; ``start``: nuisance values to start from),
    ``asimov(data, mu) -> BinnedData``             (expected data at μ, nuisance parameters at α̂̂(μ) on ``data``),
    ``sample(data, mu, n_toys, generator) -> BinnedData`` (toys at μ and α̂̂(μ), auxiliary data fluctuated),
    ``poi_bounds`` (low, high)
and data are ``BinnedData`` batches of T data sets: everything below is vectorised over T (toys, bands).
``CountingExperiment`` is the model of known signal and background counts; ``sluice.inference.histograms``
gives the HistFactory-style ``BinnedModel`` with normsys and histosys nuisance parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .counting import BinnedData, CountingExperiment, Fit, _per_data_set, poisson_nll

__all__ = [
    "KINDS", "N_SIGMA", "BinnedData", "Fit", "CountingExperiment", "HypothesisTest", "UpperLimit", "ToyTest",
    "test_statistic", "asymptotic_pvalue", "asymptotic_cls", "expected_cls", "hypotest", "upper_limit",
    "toy_statistics", "toy_hypotest", "toy_upper_limit", "poisson_nll",
]

KINDS = ("t", "ttilde", "q", "qtilde", "q0")
N_SIGMA = (-2.0, -1.0, 0.0, 1.0, 2.0)  # the expected limits: the median and the ±1σ/±2σ bands


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown test statistic {kind!r}; use one of {', '.join(KINDS)}")


def _free_fit(model, data: BinnedData, kind: str) -> Fit:
    """The unconditional fit: μ̂ inside the model's bounds, and ≥ 0 for the tilde statistics."""
    low, high = model.poi_bounds
    if kind in ("ttilde", "qtilde"):
        low = max(low, 0.0)
    return model.fit(data, poi_bounds=(low, high))


def _statistic(kind: str, free: Fit, conditional: Fit, mu: torch.Tensor) -> torch.Tensor:
    value = (2.0 * (conditional.nll - free.nll)).clamp_min(0.0)  # ≥ 0 up to the fits' rounding
    if kind in ("q", "qtilde"):
        value = torch.where(free.mu > mu, torch.zeros_like(value), value)
    elif kind == "q0":
        value = torch.where(free.mu < 0, torch.zeros_like(value), value)
    return value


def test_statistic(model, data: BinnedData, mu, kind: str = "qtilde") -> torch.Tensor:
    """The test statistic ``kind`` (module notes) of each data set at ``mu`` (one number or [T]): [T], float64.
    For "q0" ``mu`` is ignored (the hypothesis tested is μ = 0)."""
    _check_kind(kind)
    mu = torch.zeros(len(data), dtype=torch.float64) if kind == "q0" else _per_data_set(mu, len(data))
    return _statistic(kind, _free_fit(model, data, kind), model.fit(data, mu), mu)


test_statistic.__test__ = False  # a library function, not a pytest test


def _phi(value: torch.Tensor) -> torch.Tensor:
    return torch.special.ndtr(value)


def _transformed(q: torch.Tensor, q_asimov: torch.Tensor, kind: str) -> torch.Tensor:
    """t with p_μ = 1 − Φ(t): √q, or for q̃ beyond q_{μ,A} the transformed (q̃ + q_{μ,A}) / (2√q_{μ,A})."""
    root = q.clamp_min(0.0).sqrt()
    if kind != "qtilde":
        return root
    root_asimov = q_asimov.clamp_min(0.0).sqrt()
    beyond = q > q_asimov
    safe = torch.where(beyond, root_asimov, torch.ones_like(root_asimov))
    return torch.where(beyond, (q + q_asimov) / (2.0 * safe), root)


def asymptotic_pvalue(q, q_asimov=None, kind: str = "qtilde") -> torch.Tensor:
    """p_μ, the p-value of the tested hypothesis, from the observed statistic ``q`` and q_{μ,A} (the statistic
    of the background-only Asimov data; needed for "qtilde" and "ttilde", where it sets μ/σ = √q_{μ,A}).

    t_μ: 2(1 − Φ(√t)); t̃_μ: 2(1 − Φ(√t̃)) for t̃ ≤ q_{μ,A}, else 2 − Φ(√t̃) − Φ((t̃ + q_{μ,A}) / (2√q_{μ,A}));
    q_μ, q_0: 1 − Φ(√q); q̃_μ: 1 − Φ(t) with t transformed beyond q_{μ,A} (module notes).

    >>> round(float(asymptotic_pvalue(torch.tensor(2.7055), kind="q")), 4)   # 1.645² ↔ 5 %
    0.05
    """
    _check_kind(kind)
    q = torch.as_tensor(q, dtype=torch.float64)
    if kind in ("qtilde", "ttilde"):
        if q_asimov is None:
            raise ValueError(f"{kind}: its distribution needs q_asimov (q_μ,A of the background-only Asimov data)")
        q_asimov = torch.as_tensor(q_asimov, dtype=torch.float64)
    root = q.clamp_min(0.0).sqrt()
    if kind == "t":
        return 2.0 * _phi(-root)
    if kind == "ttilde":
        root_asimov = q_asimov.clamp_min(0.0).sqrt()
        safe = torch.where(root_asimov > 0, root_asimov, torch.ones_like(root_asimov))
        beyond = _phi(-root) + _phi(-(q + q_asimov) / (2.0 * safe))
        return torch.where(q <= q_asimov, 2.0 * _phi(-root), beyond)
    if kind in ("q", "q0"):
        return _phi(-root)
    return _phi(-_transformed(q, q_asimov, kind))


def asymptotic_cls(q, q_asimov, kind: str = "qtilde") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(CLs, p_μ, CL_b) for the upper-limit statistics q_μ and q̃_μ: p_μ = 1 − Φ(t),
    CL_b = 1 − p_b = Φ(√q_{μ,A} − t), CLs = p_μ / CL_b (module notes)."""
    if kind not in ("q", "qtilde"):
        raise ValueError(f"CLs is defined here for the upper-limit statistics 'q' and 'qtilde', got {kind!r}")
    q = torch.as_tensor(q, dtype=torch.float64)
    q_asimov = torch.as_tensor(q_asimov, dtype=torch.float64)
    t = _transformed(q, q_asimov, kind)
    p_value = _phi(-t)
    clb = _phi(q_asimov.clamp_min(0.0).sqrt() - t)
    return p_value / clb, p_value, clb


def expected_cls(q_asimov, n_sigma=N_SIGMA) -> torch.Tensor:
    """CLs_exp(N) = (1 − Φ(√q_{μ,A} − N)) / Φ(N) for each N in ``n_sigma`` (t = √q_{μ,A} − N clipped at 0,
    where μ̂ = Nσ > μ gives q = 0): [..., len(n_sigma)]. The same for q_μ and q̃_μ."""
    root_asimov = torch.as_tensor(q_asimov, dtype=torch.float64).clamp_min(0.0).sqrt()[..., None]
    n_sigma = torch.as_tensor(n_sigma, dtype=torch.float64)
    t = (root_asimov - n_sigma).clamp_min(0.0)
    return _phi(-t) / _phi(root_asimov - t)


@dataclass
class HypothesisTest:
    """The asymptotic test of ``mu`` [T] for T data sets: the observed ``statistic`` [T], ``asimov_statistic``
    [T] (q_{μ,A}), ``p_value`` [T] (p_μ), ``clb`` [T] (1 − p_b), ``cls`` [T] and ``expected_cls`` [T, 5]
    (N = −2 … 2); ``clb``, ``cls`` and ``expected_cls`` are NaN for the two-sided and discovery statistics."""

    mu: torch.Tensor
    kind: str
    statistic: torch.Tensor
    asimov_statistic: torch.Tensor
    p_value: torch.Tensor
    clb: torch.Tensor
    cls: torch.Tensor
    expected_cls: torch.Tensor
    n_sigma: tuple = N_SIGMA


class _Tester:
    """The pieces of an asymptotic test that do not depend on μ, computed once per batch of data sets: the
    free fit of the data, and the background-only Asimov data with their free fit."""

    def __init__(self, model, data: BinnedData, kind: str):
        _check_kind(kind)
        self.model, self.data, self.kind = model, data, kind
        self.free = _free_fit(model, data, kind)
        # q0 is tested with the signal Asimov data (μ' = 1), the others with the background-only ones (μ' = 0)
        self.asimov = model.asimov(data, 1.0 if kind == "q0" else 0.0)
        self.asimov_free = _free_fit(model, self.asimov, kind)
        self._warm = {}  # the last conditional fit of each batch of rows: root finding moves μ a little at a time

    def _conditional(self, which: str, data: BinnedData, mu: torch.Tensor, rows: torch.Tensor) -> Fit:
        key = (which, rows.numel())
        fit = self.model.fit(data[rows], mu, start=self._warm.get(key))
        self._warm[key] = fit.nuisance
        return fit

    def statistics(self, mu: torch.Tensor, rows=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(q of the data, q_{μ,A}) at ``mu`` [R] for the data sets ``rows`` [R] (None: all, R = T)."""
        rows = torch.arange(len(self.data)) if rows is None else rows
        return self.observed(mu, rows), self.asimov_statistic(mu, rows)

    def observed(self, mu: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        mu = torch.zeros_like(mu) if self.kind == "q0" else mu
        free = Fit(self.free.nll[rows], self.free.mu[rows], self.free.nuisance[rows])
        return _statistic(self.kind, free, self._conditional("data", self.data, mu, rows), mu)

    def asimov_statistic(self, mu: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        mu = torch.zeros_like(mu) if self.kind == "q0" else mu
        free = Fit(self.asimov_free.nll[rows], self.asimov_free.mu[rows], self.asimov_free.nuisance[rows])
        return _statistic(self.kind, free, self._conditional("asimov", self.asimov, mu, rows), mu)


def hypotest(model, data: BinnedData, mu, kind: str = "qtilde", n_sigma=N_SIGMA) -> HypothesisTest:
    """The asymptotic test of the hypothesis ``mu`` (one number or one per data set) for each data set in
    ``data``: statistic, q_{μ,A} from the background-only Asimov data (for "q0": the signal Asimov data at
    μ' = 1, whose √q_{0,A} is the median expected significance), p-value, and for "q"/"qtilde" CL_b, CLs and
    the expected CLs at ``n_sigma``."""
    tester = _Tester(model, data, kind)
    mu = _per_data_set(mu, len(data))
    q, q_asimov = tester.statistics(mu)
    p_value = asymptotic_pvalue(q, q_asimov, kind)
    if kind in ("q", "qtilde"):
        cls, _, clb = asymptotic_cls(q, q_asimov, kind)
        expected = expected_cls(q_asimov, n_sigma)
    else:
        cls = clb = torch.full_like(q, math.nan)
        expected = torch.full((len(data), len(n_sigma)), math.nan, dtype=torch.float64)
    return HypothesisTest(mu, kind, q, q_asimov, p_value, clb, cls, expected, tuple(n_sigma))


@dataclass
class UpperLimit:
    """CLs upper limits on μ at confidence ``level``: ``observed`` [T] for each data set, ``expected`` [T, 5]
    at N = ``n_sigma`` (−2, −1, 0, 1, 2: the Φ(N) quantiles of the limits of background-only experiments)."""

    observed: torch.Tensor
    expected: torch.Tensor
    level: float
    kind: str
    n_sigma: tuple = N_SIGMA

    @property
    def median(self) -> torch.Tensor:
        """The median expected limit [T] (N = 0)."""
        return self.expected[:, list(self.n_sigma).index(0.0)]


def _solve_decreasing(function, n: int, target: float, rtol: float, max_iterations: int = 200) -> torch.Tensor:
    """μ [n] > 0 where ``function``(μ [n]) [n], decreasing in μ, crosses ``target``: a bracket grown by factors of
    two from μ = 1, then the Illinois variant of regula falsi (superlinear, and never leaves the bracket)."""
    mu = torch.ones(n, dtype=torch.float64)
    low = torch.full((n,), math.nan, dtype=torch.float64)
    high = low.clone()
    f_low, f_high = low.clone(), low.clone()
    for _ in range(max_iterations):
        values = function(mu)
        above = values > target
        low, f_low = torch.where(above, mu, low), torch.where(above, values, f_low)
        high, f_high = torch.where(above, high, mu), torch.where(above, f_high, values)
        missing_low, missing_high = low.isnan(), high.isnan()
        if not (missing_low | missing_high).any():
            break
        mu = torch.where(missing_high, 2.0 * mu, torch.where(missing_low, 0.5 * mu, mu))
    else:
        raise RuntimeError("upper limit: no bracket found (CLs does not cross 1 − level between 2⁻²⁰⁰ and 2²⁰⁰)")
    side = torch.zeros(n, dtype=torch.long)  # which end moved last: halve the other's weight (Illinois)
    for _ in range(max_iterations):
        done = (high - low) <= rtol * high
        if done.all():
            break
        slope_step = (f_low - target) * (high - low) / (f_low - f_high)
        mu = torch.where(torch.isfinite(slope_step), low + slope_step, 0.5 * (low + high))
        mu = torch.where((mu <= low) | (mu >= high), 0.5 * (low + high), mu)
        mu = torch.where(done, high, mu)
        values = function(mu)
        above = (values > target) & ~done
        below = ~above & ~done
        f_high = torch.where(above & (side == 1), target + 0.5 * (f_high - target), f_high)
        f_low = torch.where(below & (side == -1), target + 0.5 * (f_low - target), f_low)
        low, f_low = torch.where(above, mu, low), torch.where(above, values, f_low)
        high, f_high = torch.where(below, mu, high), torch.where(below, values, f_high)
        side = torch.where(above, 1, torch.where(below, -1, side))
    return 0.5 * (low + high)


def upper_limit(model, data: BinnedData, level: float = 0.95, kind: str = "qtilde", n_sigma=N_SIGMA,
                rtol: float = 1e-6) -> UpperLimit:
    """The CLs upper limits on μ at confidence ``level`` for each data set: where CLs(μ) = 1 − level (observed,
    with the asymptotic formulae and q_{μ,A} at every μ tried) and where CLs_exp(N) = 1 − level (expected, from
    the background-only Asimov data of each data set), to relative precision ``rtol`` by root finding.

    >>> limit = upper_limit(CountingExperiment([10.0], [50.0]), BinnedData([50.0]))
    >>> round(float(limit.observed[0]), 2), round(float(limit.median[0]), 2)
    (1.52, 1.52)
    """
    if kind not in ("q", "qtilde"):
        raise ValueError(f"upper limits use the statistics 'q' or 'qtilde', got {kind!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    tester = _Tester(model, data, kind)
    target = math.log(1.0 - level)
    rows = torch.arange(len(data))

    def observed_log_cls(mu: torch.Tensor) -> torch.Tensor:
        q, q_asimov = tester.statistics(mu, rows)
        return torch.log(asymptotic_cls(q, q_asimov, kind)[0])

    observed = _solve_decreasing(observed_log_cls, len(data), target, rtol)
    sigmas = torch.as_tensor(n_sigma, dtype=torch.float64)
    band_rows = rows.repeat_interleave(len(sigmas))
    band_sigma = sigmas.repeat(len(data))

    def expected_log_cls(mu: torch.Tensor) -> torch.Tensor:
        q_asimov = tester.asimov_statistic(mu, band_rows)
        root = q_asimov.clamp_min(0.0).sqrt()
        t = (root - band_sigma).clamp_min(0.0)
        return torch.log(_phi(-t) / _phi(root - t))

    expected = _solve_decreasing(expected_log_cls, len(band_rows), target, rtol).reshape(len(data), len(sigmas))
    return UpperLimit(observed, expected, level, kind, tuple(float(s) for s in sigmas))


# --- toys ---------------------------------------------------------------------------------------------------
def toy_statistics(model, data: BinnedData, mu_test: float, mu_generate: float, n_toys: int = 1000, seed: int = 0,
                   kind: str = "qtilde") -> torch.Tensor:
    """The statistic ``kind`` at ``mu_test`` for ``n_toys`` pseudo-experiments drawn at ``mu_generate`` (nuisance
    parameters at α̂̂(μ_generate) fitted to the one data set ``data``, auxiliary data fluctuated): [n_toys]."""
    toys = model.sample(data, mu_generate, n_toys, torch.Generator().manual_seed(seed))
    return test_statistic(model, toys, mu_test, kind)


@dataclass
class ToyTest:
    """CLs of one data set at ``mu`` from toys: p_μ = P(q ≥ q_obs | μ), CL_b = P(q ≥ q_obs | 0) over
    ``n_toys`` each, CLs = p_μ / CL_b with its binomial standard error ``cls_error`` (delta method)."""

    mu: float
    statistic: float
    p_value: float
    clb: float
    cls: float
    cls_error: float
    n_toys: int


def toy_hypotest(model, data: BinnedData, mu: float, n_toys: int = 1000, seed: int = 0,
                 kind: str = "qtilde") -> ToyTest:
    """CLs at ``mu`` for one data set from ``n_toys`` toys under μ and ``n_toys`` under μ = 0 (seeds ``seed`` and
    ``seed`` + 1): the check of ``hypotest``'s asymptotic CLs."""
    if len(data) != 1:
        raise ValueError(f"toy_hypotest: one data set at a time, got {len(data)}")
    observed = float(test_statistic(model, data, mu, kind)[0])
    signal = toy_statistics(model, data, mu, mu, n_toys, seed, kind)
    background = toy_statistics(model, data, mu, 0.0, n_toys, seed + 1, kind)
    p_value = float((signal >= observed).double().mean())
    clb = float((background >= observed).double().mean())
    cls = p_value / clb if clb > 0 else math.inf
    # independent binomial fractions: Var(ln CLs) = (1 − p)/(n p) + (1 − c)/(n c)
    relative = math.sqrt((1 - p_value) / (n_toys * p_value) + (1 - clb) / (n_toys * clb)) if p_value > 0 < clb \
        else math.inf
    return ToyTest(float(mu), observed, p_value, clb, cls, cls * relative, int(n_toys))


def toy_upper_limit(model, data: BinnedData, mus, level: float = 0.95, n_toys: int = 1000, seed: int = 0,
                    kind: str = "qtilde") -> tuple[float, float]:
    """The CLs upper limit from toys: CLs at each μ of the increasing ``mus`` (``toy_hypotest``, new seeds at
    each), and where ln CLs first crosses ln(1 − level), interpolated linearly between the two μ around it;
    with its standard error, the CLs error at the crossing over the slope of CLs there. (nan, nan) when CLs
    does not cross inside ``mus``."""
    mus = [float(m) for m in mus]
    tests = [toy_hypotest(model, data, m, n_toys, seed + 2 * k, kind) for k, m in enumerate(mus)]
    target = 1.0 - level
    for k in range(1, len(tests)):
        before, after = tests[k - 1], tests[k]
        if before.cls > target >= after.cls and after.cls > 0:
            a, b = math.log(before.cls), math.log(after.cls)
            fraction = (a - math.log(target)) / (a - b)
            limit = mus[k - 1] + fraction * (mus[k] - mus[k - 1])
            slope = (b - a) / (mus[k] - mus[k - 1])  # d ln CLs / dμ
            relative = (1 - fraction) * before.cls_error / before.cls + fraction * after.cls_error / after.cls
            return limit, abs(relative / slope)
    return math.nan, math.nan
