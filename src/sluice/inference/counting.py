"""The data and the simplest model of ``sluice.inference.limits``: ``BinnedData`` (batches of binned counts with
their auxiliary measurements), ``Fit``, the Poisson negative log-likelihood, and ``CountingExperiment`` (known
signal and background counts, fitted exactly)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["BinnedData", "Fit", "CountingExperiment", "poisson_nll"]


def poisson_nll(counts: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """−Σ_k ln Poisson(n_k | ν_k) = Σ_k [ν_k − n_k ln ν_k + ln Γ(n_k + 1)] over the last axis (non-integer n
    allowed, as the Asimov data need): [...]. ν_k = 0 costs nothing where n_k = 0 and +inf where n_k > 0."""
    return (expected - torch.xlogy(counts, expected) + torch.lgamma(counts + 1.0)).sum(dim=-1)


@dataclass
class BinnedData:
    """T data sets: ``counts`` [T, K] in K bins and ``auxiliary`` [T, A], the auxiliary measurements (global
    observables) of the A constrained nuisance parameters, 0 at nominal (HistFactory's convention). Counts [K]
    are one data set; float64."""

    counts: torch.Tensor
    auxiliary: torch.Tensor | None = None

    def __post_init__(self):
        counts = torch.as_tensor(self.counts, dtype=torch.float64)
        counts = counts[None] if counts.ndim == 1 else counts
        if counts.ndim != 2:
            raise ValueError(f"BinnedData: counts must have shape [K] or [T, K], got {list(counts.shape)}")
        if not torch.isfinite(counts).all() or (counts < 0).any():
            raise ValueError("BinnedData: counts must be finite and ≥ 0")
        auxiliary = torch.zeros(counts.shape[0], 0, dtype=torch.float64) if self.auxiliary is None else \
            torch.as_tensor(self.auxiliary, dtype=torch.float64)
        auxiliary = auxiliary[None].expand(counts.shape[0], -1) if auxiliary.ndim == 1 else auxiliary
        if auxiliary.ndim != 2 or auxiliary.shape[0] != counts.shape[0]:
            raise ValueError(f"BinnedData: auxiliary must have shape [A] or [T, A] with T = {counts.shape[0]}, got "
                             f"{list(auxiliary.shape)}")
        self.counts, self.auxiliary = counts, auxiliary

    def __len__(self) -> int:
        return self.counts.shape[0]

    def __getitem__(self, index) -> BinnedData:
        index = torch.as_tensor(index) if not isinstance(index, slice) else index
        if isinstance(index, torch.Tensor) and index.ndim == 0:
            index = index[None]
        return BinnedData(self.counts[index], self.auxiliary[index])


@dataclass
class Fit:
    """A maximum-likelihood fit of T data sets: ``nll`` [T] = −ln L at the maximum, ``mu`` [T], ``nuisance``
    [T, A], float64."""

    nll: torch.Tensor
    mu: torch.Tensor
    nuisance: torch.Tensor


def _per_data_set(value, n: int) -> torch.Tensor:
    value = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
    if value.numel() not in (1, n):
        raise ValueError(f"mu must be one number or one per data set ({n}), got {value.numel()}")
    return value.expand(n).clone()


class CountingExperiment:
    """n_k ~ Poisson(μ s_k + b_k) in K bins with known ``signal`` s [K] and ``background`` b [K] (b > 0), no
    nuisance parameters: −ln L(μ) = Σ_k [μ s_k + b_k − n_k ln(μ s_k + b_k)] + const, convex in μ.

    The free fit solves Σ_k s_k (1 − n_k / (μ s_k + b_k)) = 0 by bisection (for one bin μ̂ = (n − b)/s) inside
    ``poi_bounds`` (default: wherever every μ s_k + b_k ≥ 0), so toys and bands are exact and fast.

    >>> from sluice.inference.limits import test_statistic
    >>> model = CountingExperiment(signal=[10.0], background=[50.0])
    >>> round(float(test_statistic(model, BinnedData([55.0]), 1.0)), 4)   # 2[μs + b − n + n ln(n/(μs + b))]
    0.4287
    """

    def __init__(self, signal, background, poi_bounds=(-math.inf, math.inf)):
        self.signal = torch.as_tensor(signal, dtype=torch.float64).reshape(-1)
        self.background = torch.as_tensor(background, dtype=torch.float64).reshape(-1)
        if self.signal.shape != self.background.shape:
            raise ValueError(f"CountingExperiment: signal {list(self.signal.shape)} and background "
                             f"{list(self.background.shape)} must have one entry per bin each")
        if not (torch.isfinite(self.signal).all() and torch.isfinite(self.background).all()):
            raise ValueError("CountingExperiment: signal and background must be finite")
        if not (self.background > 0).all():
            raise ValueError(f"CountingExperiment: every background count must be > 0, got {self.background.tolist()}")
        if not (self.signal != 0).any():
            raise ValueError("CountingExperiment: the signal is zero in every bin; μ is not measurable")
        self.poi_bounds = (float(poi_bounds[0]), float(poi_bounds[1]))
        positive, negative = self.signal > 0, self.signal < 0
        # the physical range of μ: every expected count ≥ 0
        self._physical = (float((-self.background[positive] / self.signal[positive]).max()) if positive.any()
                          else -math.inf,
                          float((-self.background[negative] / self.signal[negative]).min()) if negative.any()
                          else math.inf)

    n_nuisance = 0

    def expected(self, mu) -> torch.Tensor:
        """ν [T, K] = μ s + b for ``mu`` [T]."""
        return torch.as_tensor(mu, dtype=torch.float64).reshape(-1, 1) * self.signal + self.background

    def nll(self, data: BinnedData, mu) -> torch.Tensor:
        return poisson_nll(data.counts, self.expected(mu).clamp_min(0.0))

    def fit(self, data: BinnedData, mu=None, poi_bounds=None, start=None) -> Fit:
        """μ fixed (one number or [T]), or μ̂ inside ``poi_bounds`` (default: the model's): exact, so ``start``
        (the protocol's warm start) is not needed."""
        n = len(data)
        empty = torch.zeros(n, 0, dtype=torch.float64)
        if mu is not None:
            mu = _per_data_set(mu, n)
            return Fit(self.nll(data, mu), mu, empty)
        low, high = self.poi_bounds if poi_bounds is None else poi_bounds
        low, high = max(float(low), self._physical[0]), min(float(high), self._physical[1])
        mu_hat = self._solve(data.counts, low, high)
        return Fit(self.nll(data, mu_hat), mu_hat, empty)

    def _slope(self, counts: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        """d(−ln L)/dμ = Σ_k s_k (1 − n_k/ν_k), increasing in μ: [T]."""
        expected = self.expected(mu)
        ratio = torch.where(counts == 0, torch.zeros_like(counts), counts / expected)
        return (self.signal * (1.0 - ratio)).sum(dim=1)

    def _solve(self, counts: torch.Tensor, low: float, high: float) -> torch.Tensor:
        """The root of the slope inside [low, high] (or the bound where the slope does not change sign)."""
        n = counts.shape[0]
        lower = torch.full((n,), low, dtype=torch.float64)
        upper = torch.full((n,), high, dtype=torch.float64)
        # infinite bounds: expand a finite bracket outwards from the background-only point
        span = 1.0 + float(self.background.sum() / self.signal.abs().sum())
        if math.isinf(high):
            upper = torch.full((n,), max(low, 0.0) + span, dtype=torch.float64)
            for _ in range(2000):
                short = self._slope(counts, upper) < 0
                if not short.any():
                    break
                upper = torch.where(short, upper + 2.0 * (upper - max(low, 0.0)), upper)
        if math.isinf(low):
            lower = torch.full((n,), min(high, 0.0) - span, dtype=torch.float64)
            for _ in range(2000):
                short = self._slope(counts, lower) > 0
                if not short.any():
                    break
                lower = torch.where(short, lower - 2.0 * (min(high, 0.0) - lower), lower)
        at_low = self._slope(counts, lower) >= 0
        at_high = self._slope(counts, upper) <= 0
        a, b = lower.clone(), upper.clone()
        for _ in range(200):  # bisection to the float64 resolution
            middle = 0.5 * (a + b)
            rising = self._slope(counts, middle) > 0
            b, a = torch.where(rising, middle, b), torch.where(rising, a, middle)
            if torch.all((b - a) <= 4 * torch.finfo(torch.float64).eps * torch.maximum(a.abs(), b.abs())):
                break
        return torch.where(at_low, lower, torch.where(at_high, upper, 0.5 * (a + b)))

    def asimov(self, data: BinnedData, mu) -> BinnedData:
        return BinnedData(self.expected(_per_data_set(mu, len(data))).clamp_min(0.0))

    def sample(self, data: BinnedData, mu, n_toys: int, generator: torch.Generator | None = None) -> BinnedData:
        if len(data) != 1:
            raise ValueError(f"sample: toys are drawn for one data set, got {len(data)}")
        rates = self.expected(mu).clamp_min(0.0).expand(int(n_toys), -1).contiguous()
        return BinnedData(torch.poisson(rates, generator=generator))

    def __repr__(self) -> str:
        return f"CountingExperiment(signal={self.signal.tolist()}, background={self.background.tolist()})"
