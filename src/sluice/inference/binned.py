"""A HistFactory-style binned channel (``BinnedModel`` of ``Sample``s: a signal scaled by the signal strength μ,
backgrounds, normsys and histosys modifiers with pyhf's default interpolation), its binned Poisson likelihood with
constraints, fits, and ``to_pyhf_workspace``; ``HistogramModel`` (histograms.py) exports to it (docs/limits.md)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import optimize

from ..simulators.systematics import checked_nuisances, interpolate
from .limits import BinnedData, Fit, poisson_nll

__all__ = ["Sample", "BinnedModel"]

HISTOSYS_CODE, NORMSYS_CODE = "code4p", "code4"  # pyhf's defaults
PYHF_NUISANCE_BOUNDS = (-5.0, 5.0)


def _check_nuisances(nuisances, used: list[str], user: str) -> tuple:
    """The Nuisance objects, each used by a systematic and each systematic with one (a constraint term)."""
    nuisances = checked_nuisances(nuisances, user)
    names = [n.name for n in nuisances]
    unconstrained = [name for name in dict.fromkeys(used) if name not in names]
    if unconstrained:
        raise ValueError(f"{user}: nuisance parameter(s) {unconstrained} have no constraint term; pass "
                         f"nuisances=[Nuisance({unconstrained[0]!r}), ...] (sluice.simulators.systematics)")
    unused = [name for name in names if name not in used]
    if unused:
        raise ValueError(f"{user}: nuisance parameter(s) {unused} have no systematic (histosys or normsys)")
    return nuisances


def _pair(name: str, pair, kind: str):
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"{kind} '{name}' must be a pair (down, up)")
    return pair


def _factors(name: str, pair) -> tuple[float, float]:
    low, high = (float(v) for v in _pair(name, pair, "normsys"))
    if not (math.isfinite(low) and math.isfinite(high) and low > 0 and high > 0):
        raise ValueError(f"normsys '{name}': the factors (down, up) must be positive and finite, got {(low, high)}")
    return low, high


@dataclass
class Sample:
    """One sample of a ``BinnedModel``: nominal ``counts`` [K]; ``normsys`` {nuisance: (κ_down, κ_up)};
    ``histosys`` {nuisance: (counts at α = −1 [K], counts at α = +1 [K])}."""

    name: str
    counts: torch.Tensor
    normsys: dict = field(default_factory=dict)
    histosys: dict = field(default_factory=dict)

    def __post_init__(self):
        self.counts = _finite_counts(self.counts, f"sample '{self.name}'")
        self.normsys = {key: _factors(key, value) for key, value in dict(self.normsys).items()}
        histosys = {}
        for key, pair in dict(self.histosys).items():
            down, up = (_finite_counts(v, f"sample '{self.name}' histosys '{key}' ({d})")
                        for v, d in zip(_pair(key, pair, "histosys"), ("down", "up"), strict=True))
            for counts, direction in ((down, "down"), (up, "up")):
                if counts.shape != self.counts.shape:
                    raise ValueError(f"sample '{self.name}' histosys '{key}' ({direction}) has {counts.numel()} bins, "
                                     f"the nominal {self.counts.numel()}")
            histosys[key] = (down, up)
        self.histosys = histosys


def _finite_counts(values, what: str) -> torch.Tensor:
    values = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if not torch.isfinite(values).all():
        raise ValueError(f"{what}: the counts hold NaN or inf")
    return values


class BinnedModel:
    """ν_k(μ, α) = μ Φ_s(α) (s_k + Σ_j δ_skj(α_j)) + Σ_b Φ_b(α) (b_k + Σ_j δ_bkj(α_j)): a HistFactory channel
    with a signal ``Sample`` scaled by the normfactor μ (``poi_name``), ``backgrounds``, and a unit-width
    Gaussian-constrained nuisance parameter per systematic (``nuisances``: ``Nuisance`` objects; gaussian only,
    as HistFactory's normsys and histosys). −ln L = Σ_k [ν_k − n_k ln ν_k + ln n_k!] + Σ_j ½((α_j − a_j)/s_j)² +
    const with auxiliary data a_j (0 nominal). A model for ``sluice.inference.limits``.

    >>> from sluice.inference.limits import upper_limit
    >>> model = BinnedModel(Sample("signal", [5.0, 10.0]), [Sample("background", [50.0, 60.0])])
    >>> round(float(upper_limit(model, BinnedData([50.0, 60.0])).observed[0]), 3)
    1.422
    """

    def __init__(self, signal: Sample, backgrounds, nuisances: Sequence = (), poi_name: str = "mu",
                 poi_bounds=(0.0, 10.0), nuisance_bounds=PYHF_NUISANCE_BOUNDS, channel: str = "channel"):
        backgrounds = [backgrounds] if isinstance(backgrounds, Sample) else list(backgrounds)
        self.samples = [signal, *backgrounds]
        bins = {sample.counts.numel() for sample in self.samples}
        if len(bins) != 1:
            raise ValueError(f"BinnedModel: every sample needs the same number of bins, got "
                             f"{ {s.name: s.counts.numel() for s in self.samples} }")
        names = [s.name for s in self.samples]
        if len(set(names)) != len(names):
            raise ValueError(f"BinnedModel: sample names must differ, got {names}")
        used = [key for s in self.samples for key in (*s.normsys, *s.histosys)]
        self.nuisances = _check_nuisances(nuisances, used, "BinnedModel")
        for nuisance in self.nuisances:
            if nuisance.constraint != "gaussian":
                raise ValueError(f"BinnedModel: nuisance '{nuisance.name}' has a {nuisance.constraint} constraint; "
                                 "HistFactory's normsys and histosys take Gaussian ones (a log-normal normalisation "
                                 "is a normsys: its code4 factor is exponential in a Gaussian α)")
        if poi_name in {n.name for n in self.nuisances}:
            raise ValueError(f"BinnedModel: the POI '{poi_name}' is also a nuisance parameter")
        background_total = sum(s.counts for s in backgrounds) if backgrounds else torch.zeros_like(signal.counts)
        if (background_total < 0).any() or not background_total.sum() > 0:
            raise ValueError("BinnedModel: the backgrounds must expect ≥ 0 events in every bin and > 0 in all")
        self.signal, self.backgrounds = signal, backgrounds
        self.poi_name, self.channel = poi_name, channel
        self.poi_bounds = (float(poi_bounds[0]), float(poi_bounds[1]))
        self.nuisance_bounds = (float(nuisance_bounds[0]), float(nuisance_bounds[1]))
        self.n_bins = signal.counts.numel()
        self.n_nuisance = len(self.nuisances)
        self.widths = torch.tensor([n.width for n in self.nuisances], dtype=torch.float64)
        self._column = {n.name: j for j, n in enumerate(self.nuisances)}
        self._systematics = [self._stacked(sample) for sample in self.samples]

    @property
    def nuisance_names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nuisances)

    def _stacked(self, sample: Sample) -> dict:
        """A sample's systematics stacked for one ``interpolate`` call per kind: columns of α, histosys templates
        [J, K] at α = −1/+1, normsys factors [J]."""
        stacked = {"histosys": None, "normsys": None}
        if sample.histosys:
            keys = list(sample.histosys)
            stacked["histosys"] = ([self._column[key] for key in keys],
                                   torch.stack([sample.histosys[key][0] for key in keys]),
                                   torch.stack([sample.histosys[key][1] for key in keys]))
        if sample.normsys:
            keys = list(sample.normsys)
            stacked["normsys"] = ([self._column[key] for key in keys],
                                  torch.tensor([sample.normsys[key][0] for key in keys], dtype=torch.float64),
                                  torch.tensor([sample.normsys[key][1] for key in keys], dtype=torch.float64))
        return stacked

    def _sample_counts(self, index: int, alpha: torch.Tensor) -> torch.Tensor:
        """One sample's counts [T, K] at α [T, A]: nominal plus the histosys deltas (code4p), times the normsys
        factors (code4), as pyhf composes them."""
        sample, stacked = self.samples[index], self._systematics[index]
        counts = sample.counts.expand(alpha.shape[0], -1)
        if stacked["histosys"] is not None:
            columns, down, up = stacked["histosys"]
            varied = interpolate(alpha[:, columns][:, :, None], sample.counts, down, up, HISTOSYS_CODE)  # [T, J, K]
            counts = counts + (varied - sample.counts).sum(dim=1)
        if stacked["normsys"] is not None:
            columns, low, high = stacked["normsys"]
            counts = counts * interpolate(alpha[:, columns], 1.0, low, high, NORMSYS_CODE).prod(dim=1, keepdim=True)
        return counts

    def expected(self, mu, alpha=None) -> torch.Tensor:
        """ν [T, K] for ``mu`` [T] and ``alpha`` [T, A] (None: nominal); differentiable."""
        mu = torch.as_tensor(mu, dtype=torch.float64).reshape(-1)
        alpha = torch.zeros(mu.shape[0], self.n_nuisance, dtype=torch.float64) if alpha is None else \
            torch.as_tensor(alpha, dtype=torch.float64).reshape(mu.shape[0], self.n_nuisance)
        total = mu[:, None] * self._sample_counts(0, alpha)
        for index in range(1, len(self.samples)):
            total = total + self._sample_counts(index, alpha)
        return total

    def nll(self, data: BinnedData, mu, alpha) -> torch.Tensor:
        """−ln L [T] at (μ [T], α [T, A]) for the data sets ``data`` (constants of the constraints dropped)."""
        expected = self.expected(mu, alpha).clamp_min(1e-300)
        constraint = (0.5 * ((alpha - data.auxiliary) / self.widths) ** 2).sum(dim=1)
        return poisson_nll(data.counts, expected) + constraint

    def _check(self, data: BinnedData) -> None:
        if data.counts.shape[1] != self.n_bins or data.auxiliary.shape[1] not in (0, self.n_nuisance):
            raise ValueError(f"BinnedModel: data need {self.n_bins} bins and {self.n_nuisance} auxiliary values, got "
                             f"{data.counts.shape[1]} and {data.auxiliary.shape[1]}")

    def _auxiliary(self, data: BinnedData) -> BinnedData:
        if data.auxiliary.shape[1] == self.n_nuisance:
            return data
        return BinnedData(data.counts, torch.zeros(len(data), self.n_nuisance, dtype=torch.float64))

    def fit(self, data: BinnedData, mu=None, poi_bounds=None, start=None) -> Fit:
        """The maximum-likelihood fit of every data set: μ fixed (one number or [T]) with α profiled, or μ free
        inside ``poi_bounds`` (default: the model's); α inside ``nuisance_bounds``, starting from ``start`` [T, A]
        (e.g. the fit at a nearby μ) or the auxiliary data."""
        self._check(data)
        data = self._auxiliary(data)
        n = len(data)
        if mu is not None:
            mu = torch.as_tensor(mu, dtype=torch.float64).reshape(-1).expand(n).clone()
            if self.n_nuisance == 0:
                alpha = torch.zeros(n, 0, dtype=torch.float64)
                return Fit(self.nll(data, mu, alpha).detach(), mu, alpha)
            start = (data.auxiliary if start is None else torch.as_tensor(start, dtype=torch.float64).reshape(n, -1))
            start = start.clamp(*self.nuisance_bounds)
            bounds = [self.nuisance_bounds] * self.n_nuisance
            values, alpha = _minimise(lambda z: self.nll(data, mu, z), start, bounds)
            return Fit(values, mu, alpha)
        low, high = self.poi_bounds if poi_bounds is None else poi_bounds
        start = torch.cat([torch.full((n, 1), min(max(1.0, low), high), dtype=torch.float64),
                           data.auxiliary.clamp(*self.nuisance_bounds)], dim=1)
        bounds = [(low, high)] + [self.nuisance_bounds] * self.n_nuisance
        values, best = _minimise(lambda z: self.nll(data, z[:, 0], z[:, 1:]), start, bounds)
        return Fit(values, best[:, 0], best[:, 1:])

    def asimov(self, data: BinnedData, mu) -> BinnedData:
        """The Asimov data at μ: the expected counts with α at α̂̂(μ) fitted to ``data``, and auxiliary data α̂̂(μ)
        (as pyhf builds them)."""
        fitted = self.fit(data, mu)
        with torch.no_grad():
            counts = self.expected(fitted.mu, fitted.nuisance).clamp_min(0.0)
        return BinnedData(counts, fitted.nuisance)

    def sample(self, data: BinnedData, mu, n_toys: int, generator: torch.Generator | None = None) -> BinnedData:
        """``n_toys`` pseudo-experiments at μ and α̂̂(μ) fitted to the one data set ``data``: Poisson counts and
        auxiliary data a_j ~ N(α̂̂_j, s_j²)."""
        if len(data) != 1:
            raise ValueError(f"sample: toys are drawn for one data set, got {len(data)}")
        fitted = self.fit(data, mu)
        with torch.no_grad():
            rates = self.expected(fitted.mu, fitted.nuisance).clamp_min(0.0)
        counts = torch.poisson(rates.expand(int(n_toys), -1).contiguous(), generator=generator)
        noise = torch.randn(int(n_toys), self.n_nuisance, generator=generator, dtype=torch.float64)
        return BinnedData(counts, fitted.nuisance + noise * self.widths)

    # --- pyhf ---------------------------------------------------------------------------------------------------
    def to_pyhf_workspace(self, observed) -> dict:
        """This model as a pyhf workspace spec (a JSON-ready dict: ``pyhf.Workspace(spec)``) with the observed
        counts [K] (auxiliary data at nominal): one channel, the signal with the normfactor POI, normsys and
        histosys modifiers (pyhf's defaults code4 and code4p, as here). Needs unit-width constraints."""
        counts = torch.as_tensor(observed.counts if isinstance(observed, BinnedData) else observed,
                                 dtype=torch.float64).reshape(-1)
        if isinstance(observed, BinnedData) and (len(observed) != 1 or (observed.auxiliary != 0).any()):
            raise ValueError("to_pyhf_workspace: one data set with nominal auxiliary data (a workspace holds only "
                             "the observed counts)")
        if counts.numel() != self.n_bins:
            raise ValueError(f"to_pyhf_workspace: observed counts need {self.n_bins} bins, got {counts.numel()}")
        wide = [n.name for n in self.nuisances if n.width != 1.0]
        if wide:
            raise ValueError(f"to_pyhf_workspace: pyhf's normsys and histosys have unit Gaussian constraints; "
                             f"nuisance(s) {wide} have other widths (rescale their variations to ±1σ)")
        samples = []
        for sample in self.samples:
            modifiers = [{"name": self.poi_name, "type": "normfactor", "data": None}] if sample is self.signal else []
            modifiers += [{"name": key, "type": "normsys", "data": {"hi": high, "lo": low}}
                          for key, (low, high) in sample.normsys.items()]
            modifiers += [{"name": key, "type": "histosys",
                           "data": {"hi_data": up.tolist(), "lo_data": down.tolist()}}
                          for key, (down, up) in sample.histosys.items()]
            samples.append({"name": sample.name, "data": sample.counts.tolist(), "modifiers": modifiers})
        parameters = [{"name": self.poi_name, "bounds": [list(self.poi_bounds)], "inits": [1.0]}]
        if self.nuisance_bounds != PYHF_NUISANCE_BOUNDS:
            parameters += [{"name": n.name, "bounds": [list(self.nuisance_bounds)]} for n in self.nuisances]
        return {
            "channels": [{"name": self.channel, "samples": samples}],
            "observations": [{"name": self.channel, "data": counts.tolist()}],
            "measurements": [{"name": "measurement", "config": {"poi": self.poi_name, "parameters": parameters}}],
            "version": "1.0.0",
        }

    def __repr__(self) -> str:
        return (f"BinnedModel(samples={[s.name for s in self.samples]}, bins={self.n_bins}, "
                f"nuisances={list(self.nuisance_names)})")


def _minimise(objective, start: torch.Tensor, bounds) -> tuple[torch.Tensor, torch.Tensor]:
    """min over z_t of ``objective``(z) [T] for T independent problems z [T, k] at once, inside ``bounds`` (one
    (low, high) per column): (minima [T], minimisers [T, k]), float64.

    The problems are separable, so one L-BFGS-B run over all T·k variables with the gradient of Σ_t (objective_t −
    objective_t(start)) by autograd solves them together; each keeps the best point it saw."""
    start = start.clone()
    n, k = start.shape
    low = torch.tensor([b[0] for b in bounds], dtype=torch.float64)
    high = torch.tensor([b[1] for b in bounds], dtype=torch.float64)
    start = torch.maximum(torch.minimum(start, high), low)
    with torch.no_grad():
        at_start = objective(start)
    best_value, best_point = at_start.clone(), start.clone()

    def function(flat: np.ndarray):
        z = torch.from_numpy(flat).reshape(n, k).requires_grad_(True)
        with torch.enable_grad():
            values = objective(z)
            (gradient,) = torch.autograd.grad(values.sum(), z)
        values = values.detach()
        better = values < best_value
        best_value[better], best_point[better] = values[better], z.detach()[better]
        if not torch.isfinite(values).all():
            return np.inf, np.zeros_like(flat)
        return float((values - at_start).sum()), gradient.reshape(-1).numpy()

    scipy_bounds = [(None if math.isinf(b[0]) else b[0], None if math.isinf(b[1]) else b[1]) for b in bounds] * n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        optimize.minimize(function, start.reshape(-1).numpy(), jac=True, method="L-BFGS-B", bounds=scipy_bounds,
                          options={"maxiter": 20_000, "maxfun": 50_000, "ftol": 1e-13, "gtol": 1e-9, "maxcor": 30})
    return best_value, best_point
