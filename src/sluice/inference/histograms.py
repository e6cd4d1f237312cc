"""Histogram baselines: binned likelihoods of one or two observables (or of SALLY's t̂), exact at every θ by
morphing, with HistFactory's systematics, CLs limits on a signal strength, and export as a pyhf workspace.

Expected counts. Weighted events with weights w_i(θ_b) at the basis points of a ``Morphing`` (Σ_i w_i(θ)
estimates σ(θ)) give, in bin k of an observable o(x) and for an integrated luminosity L,

    ν_k(θ) = L Σ_{i: o(x_i) in k} w_i(θ) = Σ_m c_m(θ) T_km,      T_km = L Σ_{i in k} f_m(z_i),

linear in the morphing weights, hence exact at every θ for the sample (no template interpolation in θ).
Systematics follow HistFactory as pyhf composes them: a histosys j (event weights or events at α_j = ±1, binned
the same way) adds δ_kj(α_j) = I(α_j; ν_k, ν_k^down, ν_k^up) − ν_k with code4p; a normsys j (factors κ_down, κ_up
on the whole sample) multiplies by I(α_j; 1, κ_down, κ_up) with code4:

    ν_k(θ, α) = Π_j κ_j(α_j) · (ν_k(θ) + Σ_j δ_kj(θ, α_j)),

and the binned likelihood is log L = Σ_k log Poisson(n_k | ν_k(θ, α)) + Σ_j log c_j(α_j). The same model is an
estimator for the scans (``log_ratio``: the shape, log p(k | θ, α) = log ν_k − log Σ_l ν_l) with
``rate()`` its rate term, and Σ_k log Poisson(n_k | ν_k) = log Poisson(n | Σν) + Σ_i log p(k_i) exactly.

Bins. ``Binning.equal_population`` (the default) puts its edges at quantiles of the observable weighted by
w_i(θ_ref), so that each bin expects the same number of events at the reference point: no bin is left with a
handful of expected events (where the asymptotic formulae and the Monte-Carlo error of the templates are at
their worst) while others pile up thousands, and the edges follow the observable's own scale (an exponential
energy spectrum or the long tails of t̂ need no hand-tuned ranges). With two observables the edges are the
marginal quantiles of each. The outer bins are open, so every event falls into some bin.

A signal strength. ``HistogramModel.signal_strength_model(θ_s, θ_b)`` gives a ``BinnedModel``: signal
ν(θ_s) − ν(θ_b) scaled by μ (a normfactor), background ν(θ_b), each with its histosys and normsys, so μ = 0 is
θ_b and μ = 1 is θ_s exactly. ``BinnedModel`` fits (L-BFGS-B, many data sets at once), builds Asimov data and
toys for ``sluice.inference.limits`` (CLs limits), and ``to_pyhf_workspace`` writes the same model as a pyhf
workspace spec (pyhf's defaults: normsys code4, histosys code4p, unit Gaussian constraints, α in [−5, 5]).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import optimize

from ..data.weighted_events import WeightedEvents
from ..simulators.systematics import Nuisance, interpolate
from .extended import ExtendedTerm
from .limits import BinnedData, Fit, poisson_nll

__all__ = ["Binning", "HistogramModel", "Sample", "BinnedModel"]

HISTOSYS_CODE, NORMSYS_CODE = "code4p", "code4"  # pyhf's defaults
PYHF_NUISANCE_BOUNDS = (-5.0, 5.0)


# --- bins ---------------------------------------------------------------------------------------------------
class Binning:
    """Bins of one or two observables from their interior ``edges`` (one increasing 1-D sequence per
    observable); the outer bins are open. Bin index k = Σ_j k_j · stride_j (the last observable fastest), so
    there are Π_j (len(edges_j) + 1) bins.

    >>> binning = Binning([[0.0, 1.0]])
    >>> binning.index(torch.tensor([[-3.0], [0.5], [7.0]])).tolist(), binning.n_bins
    ([0, 1, 2], 3)
    """

    def __init__(self, edges):
        self.edges = [torch.as_tensor(e, dtype=torch.float64).reshape(-1) for e in edges]
        if not 1 <= len(self.edges) <= 2:
            raise ValueError(f"Binning: one or two observables, got {len(self.edges)}")
        for j, e in enumerate(self.edges):
            if not torch.isfinite(e).all() or (e.numel() > 1 and not (e.diff() > 0).all()):
                raise ValueError(f"Binning: the edges of observable {j} must be finite and increasing, got "
                                 f"{e.tolist()}")
        self.shape = tuple(e.numel() + 1 for e in self.edges)

    @property
    def n_bins(self) -> int:
        return math.prod(self.shape)

    @classmethod
    def equal_population(cls, values, bins=5, weights=None) -> Binning:
        """Edges at the weighted quantiles j/B of each observable (``values`` [n] or [n, d], d ≤ 2; ``bins`` B, one
        number or one per observable; ``weights`` [n], ≥ 0 with a positive sum, default 1): each bin expects the
        same share of Σ w (module notes say why). Ties (a discrete observable) merge bins."""
        values = _as_columns(values, "Binning.equal_population")
        counts = _per_observable(bins, values.shape[1])
        weights = torch.ones(values.shape[0], dtype=torch.float64) if weights is None else \
            torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        if weights.shape[0] != values.shape[0] or not torch.isfinite(weights).all():
            raise ValueError(f"Binning.equal_population: weights must be {values.shape[0]} finite numbers")
        if (weights < 0).any() or not weights.sum() > 0:
            raise ValueError("Binning.equal_population: the weights must be ≥ 0 with a positive sum (quantiles of "
                             "a distribution)")
        edges = []
        for j, count in enumerate(counts):
            order = torch.argsort(values[:, j])
            cumulative = torch.cumsum(weights[order], dim=0)
            fractions = torch.arange(1, count, dtype=torch.float64) / count * cumulative[-1]
            position = torch.searchsorted(cumulative, fractions).clamp_max(values.shape[0] - 1)
            edges.append(torch.unique(values[order[position], j]))
        return cls(edges)

    @classmethod
    def uniform(cls, values, bins=5) -> Binning:
        """Equal-width bins over the range of each observable in ``values`` [n, d]."""
        values = _as_columns(values, "Binning.uniform")
        counts = _per_observable(bins, values.shape[1])
        return cls([torch.linspace(float(values[:, j].min()), float(values[:, j].max()), c + 1)[1:-1]
                    for j, c in enumerate(counts)])

    def index(self, values) -> torch.Tensor:
        """The bin of each row of ``values`` [n, d]: [n] long."""
        values = _as_columns(values, "Binning.index")
        if values.shape[1] != len(self.edges):
            raise ValueError(f"Binning: {len(self.edges)} observables, got values with {values.shape[1]} columns")
        index = torch.zeros(values.shape[0], dtype=torch.long)
        for j, e in enumerate(self.edges):
            index = index * self.shape[j] + torch.bucketize(values[:, j].contiguous(), e, right=True)
        return index

    def histogram(self, values, weights=None) -> torch.Tensor:
        """Σ w per bin [K] (counts without weights)."""
        index = self.index(values)
        weights = torch.ones(index.shape[0], dtype=torch.float64) if weights is None else \
            torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        return torch.zeros(self.n_bins, dtype=torch.float64).index_add_(0, index, weights)

    def __repr__(self) -> str:
        return f"Binning(edges={[e.tolist() for e in self.edges]})"


def _as_columns(values, user: str) -> torch.Tensor:
    values = torch.as_tensor(values.detach() if torch.is_tensor(values) else values, dtype=torch.float64)
    values = values[:, None] if values.ndim == 1 else values
    if values.ndim != 2 or not 1 <= values.shape[1] <= 2:
        raise ValueError(f"{user}: one or two observables, values [n] or [n, d ≤ 2], got {list(values.shape)}")
    if not torch.isfinite(values).all():
        raise ValueError(f"{user}: the observable holds NaN or inf")
    return values


def _per_observable(bins, d: int) -> list[int]:
    counts = [int(bins)] * d if np.isscalar(bins) else [int(b) for b in bins]
    if len(counts) != d or min(counts) < 1:
        raise ValueError(f"bins: one positive number, or one per observable ({d}), got {bins}")
    return counts


# --- the θ-dependent histogram model --------------------------------------------------------------------------
class HistogramModel:
    """Expected counts ν_k(θ, α) per bin of ``events`` (a ``WeightedEvents``), exact at every θ by morphing, with
    histosys and normsys nuisance parameters (module notes).

    ``luminosity`` L > 0 (ν = L Σ w). ``observable``: None (x itself, one or two columns), column indices, or a
    callable x [n, d] → [n, k ≤ 2] such as a fitted SALLY's ``score`` (t̂(x)). ``bins`` per observable, edges by
    ``Binning.equal_population`` at ``reference`` (default: the first basis point), or a ``binning``.
    ``histosys``: {name: (down, up)}, each a ``WeightedEvents`` with the same morphing (events at the ±1σ
    variation, e.g. a shifted energy scale) or basis weights [n, B] of these same events (a reweighting).
    ``normsys``: {name: (κ_down, κ_up)}, factors on the whole sample at α = ∓1. ``nuisances``: a ``Nuisance`` for
    each of them (its constraint term). θ's columns are the morphing's parameters, then the nuisances' in order
    (``parameter_names_``).
    """

    def __init__(self, events: WeightedEvents, luminosity: float, bins=5, observable=None, reference=None,
                 histosys: Mapping | None = None, normsys: Mapping | None = None, nuisances: Sequence = (),
                 binning: Binning | None = None):
        if not isinstance(events, WeightedEvents):
            raise TypeError(f"HistogramModel needs sluice WeightedEvents, got {type(events).__name__}")
        if getattr(events, "nuisances", ()):
            raise ValueError(f"HistogramModel bins the nominal weights; these events carry the nuisance parameters "
                             f"{[n.name for n in events.nuisances]} with per-event factors. Give their systematics to "
                             "the histogram as histosys (events or basis weights at ∓1σ) or normsys instead")
        luminosity = float(luminosity)
        if not (math.isfinite(luminosity) and luminosity > 0):
            raise ValueError(f"HistogramModel: luminosity must be a positive finite number, got {luminosity}")
        self.events, self.luminosity, self.observable = events, luminosity, observable
        self.morphing = events.morphing
        self.reference = self.morphing.basis_points[0] if reference is None else \
            torch.as_tensor(reference, dtype=torch.float64).reshape(-1)
        histosys, normsys = dict(histosys or {}), dict(normsys or {})
        self.nuisances = _check_nuisances(nuisances, list(histosys) + list(normsys), "HistogramModel")
        values = self.observe(events.x)
        if binning is None:
            with torch.no_grad():
                reference_weights = events.weights(self.reference)
            _check_total(reference_weights, "the nominal events", self.reference)
            binning = Binning.equal_population(values, bins, reference_weights.clamp_min(0.0))
        self.binning = binning
        self.templates = self._templates(values, events.morphing.components(events.basis_weights))  # [K, M]
        self.histosys = {name: tuple(self._variation(name, direction, variation) for direction, variation
                                     in zip(("down", "up"), _pair(name, pair, "histosys"), strict=True))
                         for name, pair in histosys.items()}
        self.normsys = {name: _factors(name, pair) for name, pair in normsys.items()}
        self.parameter_names_ = tuple(self.morphing.parameter_names) + tuple(n.name for n in self.nuisances)

    # --- construction helpers ---------------------------------------------------------------------------------
    def observe(self, x) -> torch.Tensor:
        """The observable o(x) [n, k] of events ``x`` [n, d], float64."""
        if self.observable is None:
            values = x
        elif callable(self.observable):
            with torch.no_grad():
                values = self.observable(torch.as_tensor(x, dtype=torch.float32))
        else:
            values = torch.as_tensor(x)[:, list(self.observable)]
        return _as_columns(values, "HistogramModel: the observable")

    def _templates(self, values: torch.Tensor, components: torch.Tensor) -> torch.Tensor:
        index = self.binning.index(values)
        templates = torch.zeros(self.binning.n_bins, components.shape[1], dtype=torch.float64)
        return self.luminosity * templates.index_add_(0, index, components)

    def _variation(self, name: str, direction: str, variation) -> torch.Tensor:
        """Templates [K, M] of one histosys direction, from a WeightedEvents or basis weights of these events."""
        what = f"histosys '{name}' ({direction})"
        if isinstance(variation, WeightedEvents):
            if variation.morphing.powers != self.morphing.powers or \
                    not torch.equal(variation.morphing.basis_points, self.morphing.basis_points):
                raise ValueError(f"HistogramModel: {what} uses another morphing basis than the nominal events")
            events = variation
        else:
            weights = torch.as_tensor(variation, dtype=torch.float64)
            expected = tuple(self.events.basis_weights.shape)
            if tuple(weights.shape) != expected:
                raise ValueError(f"HistogramModel: {what} basis weights must have the nominal shape [n_events, "
                                 f"n_basis] = {list(expected)}, got {list(weights.shape)}")
            if not torch.isfinite(weights).all():
                raise ValueError(f"HistogramModel: {what} basis weights hold NaN or inf "
                                 f"({int((~torch.isfinite(weights)).sum())} entries)")
            events = WeightedEvents(self.events.x, weights, self.morphing, self.events.basis_cross_sections)
        with torch.no_grad():
            _check_total(events.weights(self.reference), what, self.reference)
        return self._templates(self.observe(events.x), self.morphing.components(events.basis_weights))

    # --- expected counts and likelihoods --------------------------------------------------------------------
    def _split(self, thetas) -> tuple[torch.Tensor, torch.Tensor]:
        thetas = torch.as_tensor(thetas, dtype=torch.float64)
        thetas = thetas[None] if thetas.ndim == 1 else thetas
        p, a = self.morphing.n_parameters, len(self.nuisances)
        if thetas.shape[1] == p:  # nuisance parameters at nominal
            return thetas, torch.zeros(thetas.shape[0], a, dtype=torch.float64)
        if thetas.shape[1] != p + a:
            raise ValueError(f"HistogramModel: θ needs {p} or {p + a} columns {list(self.parameter_names_)}, got "
                             f"{thetas.shape[1]}")
        return thetas[:, :p], thetas[:, p:]

    def expected(self, thetas) -> torch.Tensor:
        """ν_k(θ, α) [G, K] for each row of ``thetas`` [G, p (+ A)] (α = 0 when its columns are left out);
        float64, differentiable."""
        physics, alpha = self._split(thetas)
        coefficients = self.morphing.monomials(physics)  # [G, M]
        nominal = coefficients @ self.templates.T
        column = {nuisance.name: j for j, nuisance in enumerate(self.nuisances)}
        total = nominal
        for name, (down, up) in self.histosys.items():
            a = alpha[:, column[name]][:, None]
            total = total + interpolate(a, nominal, coefficients @ down.T, coefficients @ up.T, HISTOSYS_CODE) - nominal
        for name, (low, high) in self.normsys.items():
            total = total * interpolate(alpha[:, column[name]][:, None], 1.0, low, high, NORMSYS_CODE)
        return total

    def cross_section(self, thetas) -> torch.Tensor:
        """Σ_k ν_k(θ, α) / L [G]: the cross section seen in the histogram (every event falls in a bin)."""
        return self.expected(thetas).sum(dim=1) / self.luminosity

    def rate(self, n_observed: float | None = None) -> ExtendedTerm:
        """The rate and constraint terms for ``scan(self, x, grid, rate=model.rate())``: with them the scan is
        the binned likelihood Σ_k log Poisson(n_k | ν_k) + Σ_j log c_j (up to a constant)."""
        return ExtendedTerm(self.cross_section, self.luminosity, n_observed, self.nuisances, self.parameter_names_)

    def counts(self, x, weights=None) -> torch.Tensor:
        """The observed counts per bin [K] of events ``x`` [n, d] (weighted: Σ w per bin)."""
        return self.binning.histogram(self.observe(x), weights)

    def binned_log_likelihood(self, counts, thetas) -> torch.Tensor:
        """Σ_k log Poisson(n_k | ν_k(θ, α)) + Σ_j log c_j(α_j) for each row of ``thetas`` [G, ·]: [G] float64."""
        counts = torch.as_tensor(counts, dtype=torch.float64).reshape(1, -1)
        _, alpha = self._split(thetas)
        value = -poisson_nll(counts, self.expected(thetas).clamp_min(1e-300))
        for j, nuisance in enumerate(self.nuisances):
            value = value + nuisance.log_constraint(alpha[:, j])
        return value

    # --- the estimator interface of the scans (the shape term) ---------------------------------------------
    def _log_shape(self, thetas) -> torch.Tensor:
        expected = self.expected(thetas).clamp_min(1e-300)
        return torch.log(expected) - torch.log(expected.sum(dim=1, keepdim=True))

    def log_likelihood(self, x, theta) -> torch.Tensor:
        """log p(k(x_i) | θ) = log ν_k − log Σ_l ν_l of each event's bin: [n] (θ [p'] or [n, p'])."""
        index = self.binning.index(self.observe(x))
        theta = torch.as_tensor(theta, dtype=torch.float64)
        theta = theta.reshape(1, -1).expand(index.shape[0], -1) if theta.ndim == 1 else theta
        return self._log_shape(theta).gather(1, index[:, None])[:, 0]

    def log_ratio(self, x, theta0, theta1) -> torch.Tensor:
        """log p(k(x) | θ0) − log p(k(x) | θ1): [n], differentiable in θ (the scans' gradients)."""
        return self.log_likelihood(x, theta0) - self.log_likelihood(x, theta1)

    def log_ratio_table(self, x, thetas, theta_ref) -> torch.Tensor:
        """log p(k(x_i) | θ_g) − log p(k(x_i) | θ_ref): [G, n], one table of bins per θ."""
        index = self.binning.index(self.observe(x))
        with torch.no_grad():
            shapes = self._log_shape(torch.cat([torch.as_tensor(thetas, dtype=torch.float64),
                                                torch.as_tensor(theta_ref, dtype=torch.float64).reshape(1, -1)]))
        return shapes[:-1, index] - shapes[-1, index]

    # --- a signal strength ------------------------------------------------------------------------------------
    def signal_strength_model(self, theta_signal, theta_background=None, poi_bounds=(0.0, 10.0)) -> BinnedModel:
        """The ``BinnedModel`` μ·signal + background with signal = ν(θ_s) − ν(θ_b) and background = ν(θ_b)
        (``theta_background`` default: the reference point), each with its histosys counts at α = ∓1 and the
        normsys factors: μ = 0 is θ_b, μ = 1 is θ_s, exactly, at every α."""
        theta_signal = torch.as_tensor(theta_signal, dtype=torch.float64).reshape(1, -1)
        theta_background = self.reference.reshape(1, -1) if theta_background is None else \
            torch.as_tensor(theta_background, dtype=torch.float64).reshape(1, -1)
        samples = []
        for name, coefficients in (("signal", self.morphing.monomials(theta_signal) -
                                    self.morphing.monomials(theta_background)),
                                   ("background", self.morphing.monomials(theta_background))):
            with torch.no_grad():
                histosys = {key: ((coefficients @ down.T)[0], (coefficients @ up.T)[0])
                            for key, (down, up) in self.histosys.items()}
                samples.append(Sample(name, (coefficients @ self.templates.T)[0], dict(self.normsys), histosys))
        return BinnedModel(samples[0], [samples[1]], self.nuisances, poi_bounds=poi_bounds)

    def to_pyhf_workspace(self, observed_counts, theta_signal, theta_background=None) -> dict:
        """The pyhf workspace spec of ``signal_strength_model(theta_signal, theta_background)`` with
        ``observed_counts`` [K] (``counts(x)`` of the observed events)."""
        return self.signal_strength_model(theta_signal, theta_background).to_pyhf_workspace(observed_counts)

    def __repr__(self) -> str:
        return (f"HistogramModel(bins={self.binning.n_bins}, luminosity={self.luminosity}, "
                f"nuisances={[n.name for n in self.nuisances]})")


def _check_nuisances(nuisances, used: list[str], user: str) -> tuple:
    """The Nuisance objects, each used by a systematic and each systematic with one (a constraint term)."""
    nuisances = tuple(nuisances)
    for nuisance in nuisances:
        if not isinstance(nuisance, Nuisance):
            raise TypeError(f"{user}: nuisances must be sluice Nuisance objects, got {nuisance!r}")
    names = [n.name for n in nuisances]
    if len(set(names)) != len(names):
        raise ValueError(f"{user}: a nuisance parameter is named twice: {names}")
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


def _check_total(weights: torch.Tensor, what: str, reference: torch.Tensor) -> None:
    total = float(weights.sum())
    if not total > 0:
        raise ValueError(f"HistogramModel: {what} have a total weight {total:.3g} ≤ 0 at θ = {reference.tolist()}; "
                         "a histogram needs a positive expected number of events")


# --- the signal-strength model ----------------------------------------------------------------------------------
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
