"""The extended likelihood: the number of observed events as information, beside their shape.

For n events x_1 … x_n of a process with cross section σ(θ) recorded with integrated luminosity L,

    log L(θ) = log Poisson(n | ν(θ)) + Σ_i log p(x_i | θ) + Σ_k log c_k(α_k),      ν(θ) = L σ(θ),

θ holding the physics parameters and any nuisance parameters α_k, each with its constraint term c_k (a
``sluice.simulators.systematics.Nuisance``: Gaussian on α, log-normal on a normalisation) evaluated at the
auxiliary measurement a_k of the data set (its global observable, 0 at nominal): c_k(α_k; a_k). The auxiliary
measurements are data: a toy experiment draws its own (``neyman_thresholds``), and the Asimov data set at θ
has a_k = α_k (``asimov_scan``). The shape term comes
from any estimator as the scans use it, Σ_i log r̂(x_i | θ, θ_ref) = Σ_i log p̂(x_i | θ) − const; an
``ExtendedTerm`` is the rest, the rate and constraint terms, which ``scan``, ``asimov_scan``, ``profile_scan``,
``maximum_likelihood`` and ``neyman_thresholds`` add when given ``rate=ExtendedTerm(...)``. Weighted events
(an Asimov set) count n = Σ_i w_i.

The rate term's score, ∂/∂θ log Poisson(n | ν) = (n/ν − 1) ∂ν/∂θ, has mean zero when n ~ Poisson(ν(θ)), and its
Fisher information (∂ν/∂θ)(∂ν/∂θ)ᵀ / ν adds to the shape's n I_shape: the rate term can only narrow the
expected intervals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from ..simulators.systematics import checked_nuisances
from .evaluate import summed_log_ratio

__all__ = ["ExtendedTerm", "extended_log_likelihood"]


class ExtendedTerm:
    """log Poisson(n | L σ(θ)) + Σ_k log c_k(α_k): the rate and constraint terms of the extended likelihood.

    ``cross_section``: a callable θ [G, p] (float64) → σ(θ) [G], differentiable in θ for exact gradients
    (``ParticleToy.cross_section``, ``WeightedEvents.cross_section``, ``HistogramModel.cross_section``; one that
    is not gets central differences); θ has the estimator's parameters in the estimator's order. ``luminosity``
    L > 0 (ν = L σ, the expected number of events). ``n_observed``: the observed count; None takes Σ_i w_i of the
    events scanned. ``constraints``: ``Nuisance`` objects (or {name: Nuisance}) for the parameters named so;
    ``parameter_names`` locates them (None: the estimator's ``parameter_names_``, given by the scans).
    ``auxiliary``: the observed auxiliary measurements, {name: a} or one value per constraint in their order
    (None: all nominal, a = 0).

    >>> import sluice
    >>> toy = sluice.simulators.ParticleToy()
    >>> term = ExtendedTerm(toy.cross_section, luminosity=100.0)
    >>> term.expected_events(torch.zeros(1, 2))          # L σ(SM) = 100 · 46/15
    tensor([306.6667], dtype=torch.float64)
    """

    def __init__(self, cross_section, luminosity: float, n_observed: float | None = None, constraints=(),
                 parameter_names=None, auxiliary=None):
        if not callable(cross_section):
            raise TypeError(f"ExtendedTerm: cross_section must be a callable θ [G, p] → σ(θ) [G], got "
                            f"{type(cross_section).__name__}")
        luminosity = float(luminosity)
        if not (math.isfinite(luminosity) and luminosity > 0):
            raise ValueError(f"ExtendedTerm: luminosity must be a positive finite number, got {luminosity}")
        if n_observed is not None and not (math.isfinite(float(n_observed)) and float(n_observed) >= 0):
            raise ValueError(f"ExtendedTerm: n_observed must be a finite count ≥ 0, got {n_observed}")
        if isinstance(constraints, Mapping):
            for name, nuisance in constraints.items():
                if getattr(nuisance, "name", name) != name:
                    raise ValueError(f"ExtendedTerm: constraints['{name}'] is the Nuisance '{nuisance.name}'")
            constraints = tuple(constraints.values())
        constraints = checked_nuisances(constraints, "ExtendedTerm")
        self.cross_section = cross_section
        self.luminosity = luminosity
        self.n_observed = None if n_observed is None else float(n_observed)
        self.constraints = constraints
        self.parameter_names = None if parameter_names is None else tuple(parameter_names)
        self.auxiliary = self._auxiliary_vector(auxiliary)
        if self.parameter_names is not None:
            self.columns(self.parameter_names)

    def _auxiliary_vector(self, auxiliary) -> torch.Tensor:
        """The auxiliary measurements [A] in the constraints' order from None, {name: a} or a sequence."""
        names = [nuisance.name for nuisance in self.constraints]
        if auxiliary is None:
            return torch.zeros(len(names), dtype=torch.float64)
        if isinstance(auxiliary, Mapping):
            unknown = [name for name in auxiliary if name not in names]
            if unknown:
                raise ValueError(f"ExtendedTerm: auxiliary measurements for {unknown}, which have no constraint "
                                 f"(constrained: {names})")
            auxiliary = [float(auxiliary.get(name, 0.0)) for name in names]
        vector = torch.as_tensor(auxiliary, dtype=torch.float64).reshape(-1)
        if vector.numel() != len(names):
            raise ValueError(f"ExtendedTerm: {vector.numel()} auxiliary measurements for {len(names)} constraints "
                             f"{names}")
        for nuisance, value in zip(self.constraints, vector, strict=True):
            nuisance.checked_auxiliary(value)
        return vector

    def _auxiliary_rows(self, auxiliary, rows: int) -> torch.Tensor:
        """The auxiliary measurements as [1, A] or [rows, A] from None (the term's own), [A] or [rows, A]."""
        auxiliary = self.auxiliary if auxiliary is None else torch.as_tensor(auxiliary, dtype=torch.float64)
        size = len(self.constraints)
        if auxiliary.ndim == 1 and auxiliary.shape[0] == size:
            return auxiliary[None]
        if auxiliary.ndim == 2 and auxiliary.shape[1] == size and auxiliary.shape[0] in (1, rows):
            return auxiliary
        raise ValueError(f"ExtendedTerm: auxiliary measurements must have shape [{size}] or [{rows}, {size}] (one "
                         f"per constraint, for each θ row), got {list(auxiliary.shape)}")

    def replace(self, n_observed=..., auxiliary=...) -> ExtendedTerm:
        """A copy with another observed count and/or auxiliary measurements (``...`` keeps this term's)."""
        return ExtendedTerm(self.cross_section, self.luminosity,
                            self.n_observed if n_observed is ... else n_observed, self.constraints,
                            self.parameter_names, self.auxiliary if auxiliary is ... else auxiliary)

    def auxiliary_at(self, theta, parameter_names=None) -> torch.Tensor:
        """The Asimov auxiliary measurements at ``theta`` [p]: a_k = α_k, the constrained columns of θ [A]."""
        theta = torch.as_tensor(theta, dtype=torch.float64).reshape(-1)
        return theta[self.columns(parameter_names)] if self.constraints else torch.zeros(0, dtype=torch.float64)

    def columns(self, parameter_names) -> list[int]:
        """The column of each constrained parameter in θ, by name."""
        names = self.parameter_names if self.parameter_names is not None else parameter_names
        if not self.constraints:
            return []
        if names is None:
            raise ValueError(f"ExtendedTerm: the constraints on {[c.name for c in self.constraints]} need "
                             "parameter_names (the order of θ's columns)")
        names = list(names)
        missing = [c.name for c in self.constraints if c.name not in names]
        if missing:
            raise ValueError(f"ExtendedTerm: constraints name parameters that θ does not have: {missing} (θ has "
                             f"{names})")
        return [names.index(c.name) for c in self.constraints]

    def expected_events(self, thetas) -> torch.Tensor:
        """ν(θ) = L σ(θ) for each row of ``thetas`` [G, p]: [G], float64."""
        thetas = torch.as_tensor(thetas, dtype=torch.float64)
        thetas = thetas[None] if thetas.ndim == 1 else thetas
        sigma = torch.as_tensor(self.cross_section(thetas)).to(torch.float64).reshape(-1)
        if sigma.shape[0] != thetas.shape[0]:
            raise ValueError(f"ExtendedTerm: cross_section gave {sigma.shape[0]} values for {thetas.shape[0]} θ")
        return self.luminosity * sigma

    def log_likelihood(self, thetas, n_observed=None, parameter_names=None, auxiliary=None) -> torch.Tensor:
        """n ln ν(θ) − ν(θ) − ln n! + Σ_k log c_k(α_k; a_k) for each row of ``thetas`` [G, p]: [G], float64, with
        its graph to θ. ``n_observed``: one count or one per row (None: the term's own); ``auxiliary``: [A] or
        one row per θ [G, A] (None: the term's own); −inf where ν ≤ 0 < n."""
        thetas = torch.as_tensor(thetas, dtype=torch.float64)
        thetas = thetas[None] if thetas.ndim == 1 else thetas
        columns = self.columns(parameter_names)
        n = self.n_observed if n_observed is None else n_observed
        if n is None:
            raise ValueError("ExtendedTerm: no observed count; give n_observed")
        n = torch.as_tensor(n, dtype=torch.float64).reshape(-1)
        if (n < 0).any() or not torch.isfinite(n).all():
            raise ValueError("ExtendedTerm: the observed counts must be finite and ≥ 0")
        expected = self.expected_events(thetas)
        positive = expected > 0
        safe = torch.where(positive, expected, torch.ones_like(expected))
        poisson = torch.xlogy(n, safe) - safe - torch.lgamma(n + 1.0)
        # ν ≤ 0 (an unphysical θ, e.g. a morphed σ below zero): impossible unless nothing was seen, where P = 1
        poisson = torch.where(positive, poisson, torch.where(n > 0, -math.inf, 0.0) + 0.0 * expected)
        auxiliary = self._auxiliary_rows(auxiliary, thetas.shape[0])
        for k, (nuisance, column) in enumerate(zip(self.constraints, columns, strict=True)):
            poisson = poisson + nuisance.log_constraint(thetas[:, column], auxiliary[:, k])
        return poisson

    def values_and_gradient(self, thetas, n_observed=None, parameter_names=None, free=None,
                            bounds=None, auxiliary=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-likelihood [T], its gradient [T, k] in the ``free`` columns (None: all)) with one row of θ, one
        count and one row of auxiliary measurements (None: the term's own) per experiment: autograd where
        ``cross_section`` keeps its graph, else central differences inside ``bounds`` (one (low, high) per
        parameter)."""
        thetas = torch.as_tensor(thetas, dtype=torch.float64).detach()
        free = list(range(thetas.shape[1])) if free is None else list(free)
        leaf = thetas.clone().requires_grad_(True)
        with torch.enable_grad():
            values = self.log_likelihood(leaf, n_observed, parameter_names, auxiliary)
            if values.requires_grad and self._differentiable(leaf):
                (gradient,) = torch.autograd.grad(values.sum(), leaf)
                return values.detach(), torch.nan_to_num(gradient[:, free])
        gradient = torch.empty(thetas.shape[0], len(free), dtype=torch.float64)
        for position, j in enumerate(free):
            low, high = (None, None) if bounds is None else bounds[j]
            step = 1e-6 * (float(high) - float(low)) if low is not None and high is not None else \
                1e-6 * max(1.0, float(thetas[:, j].abs().max()))
            up, down = thetas.clone(), thetas.clone()
            up[:, j] = thetas[:, j] + step if high is None else (thetas[:, j] + step).clamp_max(float(high))
            down[:, j] = thetas[:, j] - step if low is None else (thetas[:, j] - step).clamp_min(float(low))
            with torch.no_grad():
                difference = self.log_likelihood(up, n_observed, parameter_names, auxiliary) - \
                    self.log_likelihood(down, n_observed, parameter_names, auxiliary)
            gradient[:, position] = difference / (up[:, j] - down[:, j])
        return values.detach(), torch.nan_to_num(gradient)

    def _differentiable(self, leaf: torch.Tensor) -> bool:
        """Whether σ(θ) keeps its graph to θ (else its part of the gradient would silently be zero)."""
        with torch.enable_grad():
            return bool(torch.as_tensor(self.cross_section(leaf[:1])).requires_grad)

    def score(self, theta, n_observed=None, parameter_names=None, auxiliary=None) -> torch.Tensor:
        """∂/∂θ of the term at one ``theta`` [p]: (n/ν − 1) ∂ν/∂θ + ∂ log c/∂α, [p] float64."""
        theta = torch.as_tensor(theta, dtype=torch.float64).reshape(1, -1)
        return self.values_and_gradient(theta, n_observed, parameter_names, auxiliary=auxiliary)[1][0]

    def __repr__(self) -> str:
        constrained = [c.name for c in self.constraints]
        auxiliary = f", auxiliary={self.auxiliary.tolist()}" if bool((self.auxiliary != 0).any()) else ""
        return (f"ExtendedTerm(luminosity={self.luminosity}, n_observed={self.n_observed}, "
                f"constraints={constrained}{auxiliary})")


def extended_log_likelihood(estimator, x, thetas, rate: ExtendedTerm, weights=None, theta_ref=None) -> torch.Tensor:
    """log L(θ_g) − log L(θ_ref) of the extended likelihood for each row of ``thetas`` [G, p]: the shape term
    Σ_i w_i log r̂(x_i | θ_g, θ_ref) from ``estimator`` plus ``rate``'s terms at θ_g minus at θ_ref; [G] float64.
    n is ``rate.n_observed``, else Σ_i w_i (the number of events without weights); ``theta_ref`` defaults to
    the middle row of ``thetas``."""
    thetas = torch.as_tensor(thetas, dtype=torch.float32)
    thetas = thetas[:, None] if thetas.ndim == 1 else thetas
    theta_ref = thetas[thetas.shape[0] // 2] if theta_ref is None else torch.as_tensor(theta_ref, dtype=torch.float32)
    shape = summed_log_ratio(estimator, x, thetas, theta_ref, weights).double()
    return shape + rate_difference(rate, thetas, theta_ref, observed_count(rate, x, weights),
                                   getattr(estimator, "parameter_names_", None))


def observed_count(rate: ExtendedTerm, x, weights=None) -> float:
    """n for the rate term: ``rate.n_observed``, else Σ_i w_i, else the number of events."""
    if rate.n_observed is not None:
        return rate.n_observed
    if weights is not None:
        return float(torch.as_tensor(weights, dtype=torch.float64).sum())
    return float(len(x))


def rate_difference(rate: ExtendedTerm, thetas, theta_ref, n_observed, parameter_names) -> torch.Tensor:
    """rate's log-likelihood at each row of ``thetas`` [G, p] minus at ``theta_ref`` [p]: [G] float64."""
    thetas = torch.as_tensor(thetas, dtype=torch.float64)
    reference = torch.as_tensor(theta_ref, dtype=torch.float64).reshape(1, -1)
    with torch.no_grad():
        return rate.log_likelihood(thetas, n_observed, parameter_names) - \
            rate.log_likelihood(reference, n_observed, parameter_names)
