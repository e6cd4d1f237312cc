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
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..data.weighted_events import WeightedEvents
from ..simulators.systematics import interpolate
from .binned import (
    HISTOSYS_CODE,
    NORMSYS_CODE,
    BinnedModel,
    Sample,
    _check_nuisances,
    _factors,
    _pair,
)
from .extended import ExtendedTerm
from .limits import poisson_nll

__all__ = ["Binning", "HistogramModel", "Sample", "BinnedModel"]



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

    def rate(self, n_observed: float | None = None, auxiliary=None) -> ExtendedTerm:
        """The rate and constraint terms for ``scan(self, x, grid, rate=model.rate())``: with them the scan is
        the binned likelihood Σ_k log Poisson(n_k | ν_k) + Σ_j log c_j(α_j; a_j) (up to a constant), with the
        auxiliary measurements ``auxiliary`` ({name: a} or one per nuisance; None: nominal)."""
        return ExtendedTerm(self.cross_section, self.luminosity, n_observed, self.nuisances, self.parameter_names_,
                            auxiliary)

    def counts(self, x, weights=None) -> torch.Tensor:
        """The observed counts per bin [K] of events ``x`` [n, d] (weighted: Σ w per bin)."""
        return self.binning.histogram(self.observe(x), weights)

    def binned_log_likelihood(self, counts, thetas, auxiliary=None) -> torch.Tensor:
        """Σ_k log Poisson(n_k | ν_k(θ, α)) + Σ_j log c_j(α_j; a_j) for each row of ``thetas`` [G, ·]: [G] float64;
        ``auxiliary``: one measurement per nuisance [A] (None: nominal, 0)."""
        counts = torch.as_tensor(counts, dtype=torch.float64).reshape(1, -1)
        _, alpha = self._split(thetas)
        auxiliary = torch.zeros(len(self.nuisances), dtype=torch.float64) if auxiliary is None else \
            torch.as_tensor(auxiliary, dtype=torch.float64).reshape(-1)
        if auxiliary.numel() != len(self.nuisances):
            raise ValueError(f"HistogramModel: {auxiliary.numel()} auxiliary measurements for "
                             f"{len(self.nuisances)} nuisance parameters {[n.name for n in self.nuisances]}")
        value = -poisson_nll(counts, self.expected(thetas).clamp_min(1e-300))
        for j, nuisance in enumerate(self.nuisances):
            value = value + nuisance.log_constraint(alpha[:, j], auxiliary[j])
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


def _check_total(weights: torch.Tensor, what: str, reference: torch.Tensor) -> None:
    total = float(weights.sum())
    if not total > 0:
        raise ValueError(f"HistogramModel: {what} have a total weight {total:.3g} ≤ 0 at θ = {reference.tolist()}; "
                         "a histogram needs a positive expected number of events")


# --- the signal-strength model ----------------------------------------------------------------------------------
