"""Likelihood-ratio scans: q(θ) = −2 [Σ_i log r̂(x_i|θ, θ_ref) − max_θ'], the MLE, Wilks regions and limits.

Every scan takes ``rate=ExtendedTerm(...)`` (``sluice.inference.extended``) to add the extended likelihood's
rate and constraint terms, log Poisson(n | L σ(θ)) + Σ_k log c_k(α_k), to the shape term Σ_i w_i log r̂; without
it the results are those of the shape alone, as before."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy import optimize, stats

from .evaluate import ExperimentLogRatio, finite_difference_steps, reference_point, summed_log_ratio
from .extended import ExtendedTerm, observed_count, rate_difference

__all__ = ["Scan", "make_grid", "scan", "asimov_scan", "wilks_threshold", "maximum_likelihood"]


def wilks_threshold(level: float, n_parameters: int) -> float:
    """The χ² quantile with p degrees of freedom: q(θ) ≤ it defines the Wilks region at ``level``."""
    return float(stats.chi2.ppf(level, n_parameters))


def make_grid(low, high, points) -> torch.Tensor:
    """A regular grid [G, p] over the box [low, high] with ``points`` per dimension (an int or one per dimension)."""
    low = torch.as_tensor(low, dtype=torch.float32).reshape(-1)
    high = torch.as_tensor(high, dtype=torch.float32).reshape(-1)
    points = [int(points)] * low.numel() if np.isscalar(points) else [int(k) for k in points]
    axes = [torch.linspace(float(a), float(b), k) for a, b, k in zip(low, high, points, strict=True)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, low.numel())


@dataclass
class Scan:
    """A scan over ``grid`` [G, p]: ``log_likelihood_ratio`` [G] = Σ_i w_i log r̂(x_i|θ_g, θ_ref), and the
    MLE (the best grid point, refined by L-BFGS-B inside the grid's box where that is higher) with its value;
    ``n_events`` = Σ_i w_i."""

    grid: torch.Tensor
    log_likelihood_ratio: torch.Tensor
    mle: torch.Tensor
    max_log_likelihood_ratio: float
    n_events: float
    parameter_names: tuple = ()

    @property
    def q(self) -> torch.Tensor:
        """q(θ_g) = −2 [ℓ(θ_g) − ℓ(θ̂)] on the grid, [G]; 0 at the MLE. θ̂ is the refined MLE (the best grid
        point with ``scan(..., refine=False)``): the statistic whose toy distribution ``neyman_thresholds``
        gives with the same ``refine``."""
        return -2.0 * (self.log_likelihood_ratio - self.max_log_likelihood_ratio)

    def region(self, level: float = 0.68, thresholds: torch.Tensor | None = None) -> torch.Tensor:
        """Grid points inside the confidence region, [G] bool: q ≤ the Wilks threshold, or q ≤ ``thresholds``
        [G] from a Neyman construction."""
        limit = wilks_threshold(level, self.grid.shape[1]) if thresholds is None else thresholds
        return self.q <= limit

    def interval(self, level: float = 0.68, parameter: int = 0, thresholds: torch.Tensor | None = None):
        """(low, high) of the region along one parameter (the extent of the grid points inside)."""
        inside = self.grid[self.region(level, thresholds), parameter]
        if inside.numel() == 0:
            return (float("nan"), float("nan"))
        return (float(inside.min()), float(inside.max()))

    def interpolated_interval(self, level: float = 0.68) -> tuple[float, float]:
        """For one parameter: where q crosses the Wilks threshold, linearly interpolated between grid points."""
        if self.grid.shape[1] != 1:
            raise ValueError("interpolated_interval is for one-parameter scans")
        order = torch.argsort(self.grid[:, 0])
        theta, q = self.grid[order, 0].double().numpy(), self.q[order].double().numpy()
        limit, best = wilks_threshold(level, 1), int(np.argmin(q))
        return (_crossing(theta[: best + 1][::-1], q[: best + 1][::-1], limit),
                _crossing(theta[best:], q[best:], limit))


def _crossing(theta: np.ndarray, q: np.ndarray, limit: float) -> float:
    """The first θ along the sequence where q rises through ``limit`` (nan if it never does)."""
    above = np.nonzero(q > limit)[0]
    if above.size == 0 or above[0] == 0:
        return float("nan")
    k = above[0]
    fraction = (limit - q[k - 1]) / (q[k] - q[k - 1])
    return float(theta[k - 1] + fraction * (theta[k] - theta[k - 1]))


def maximum_likelihood(estimator, x, start: torch.Tensor, bounds, theta_ref: torch.Tensor,
                       weights=None, rate: ExtendedTerm | None = None) -> tuple[torch.Tensor, float]:
    """The MLE inside ``bounds`` [(low, high)] per parameter, found from ``start`` [p] by L-BFGS-B with the
    gradient of ℓ(θ) = Σ_i w_i log r̂(x_i|θ, θ_ref) (``maximise_experiments``), plus ``rate``'s terms measured
    from θ_ref: (θ̂ [p], ℓ(θ̂))."""
    n_observed = None if rate is None else observed_count(rate, x, weights)
    theta, value = maximise_experiments(estimator, x, torch.as_tensor(start).reshape(1, -1), bounds, theta_ref,
                                        weights, rate=rate, n_observed=n_observed)
    return theta[0].to(torch.float32), float(value[0])


def maximise_experiments(estimator, x, starts: torch.Tensor, bounds, theta_ref: torch.Tensor, weights=None,
                         free=None, rate: ExtendedTerm | None = None, n_observed=None,
                         auxiliary=None) -> tuple[torch.Tensor, torch.Tensor]:
    """max over θ_t of ℓ_t(θ_t) = Σ_{i in t} w_i log r̂(x_i|θ_t, θ_ref) for T experiments at once, each from
    its own start: (θ̂ [T, p], ℓ_t(θ̂_t) [T]), float64.

    ``x`` [T·n, ...]: T consecutive blocks of n events; ``starts`` [T, p]; ``bounds``: [(low, high)] for each
    of the p parameters; ``free``: the indices that move (None: all; the others stay at their start, as for
    profiling). The T objectives are separable, so one L-BFGS-B problem in T·k variables solves them all,
    with one pass over every experiment's events per evaluation. Values and gradients come from
    ``evaluate.ExperimentLogRatio`` (autograd, else central differences), in float64.

    It stops when every projected gradient is below what rounding can fake, the resolution of ℓ (eps ·
    Σ w |log r̂|, 1.2e-7 · Σ w |log r̂| for a float32 log r̂) over the finite-difference step: a float32 log r̂
    locates a maximum no better, and L-BFGS-B's line search would otherwise chase rounding noise. Each
    experiment keeps the best point evaluated.

    ``rate``: an ``ExtendedTerm`` whose log-likelihood, measured from θ_ref, adds to each ℓ_t (in float64, with
    its own gradient), with the observed count ``n_observed`` (one number or [T]) and the auxiliary
    measurements ``auxiliary`` ([A] or [T, A]; None: the term's own).
    """
    starts = torch.as_tensor(starts, dtype=torch.float64)
    n_experiments, p = starts.shape
    free = list(range(p)) if free is None else list(free)
    objective = ExperimentLogRatio(estimator, x, n_experiments, theta_ref, weights)
    if rate is not None:
        names = getattr(estimator, "parameter_names_", None)
        counts = torch.as_tensor(n_observed, dtype=torch.float64).reshape(-1).expand(n_experiments)
        reference = torch.as_tensor(theta_ref, dtype=torch.float64).reshape(1, -1)
        if auxiliary is not None and torch.as_tensor(auxiliary).ndim == 2 and len(auxiliary) > 1:
            reference = reference.expand(n_experiments, -1)  # one row per experiment's auxiliary measurements
        rate_at_reference = rate.log_likelihood(reference, counts, names, auxiliary).detach()
    low = torch.tensor([-np.inf if bounds[j][0] is None else bounds[j][0] for j in free], dtype=torch.float64)
    high = torch.tensor([np.inf if bounds[j][1] is None else bounds[j][1] for j in free], dtype=torch.float64)
    steps = finite_difference_steps(starts, bounds)[:, free]
    best_theta, best_value = starts.clone(), torch.full((n_experiments,), -torch.inf, dtype=torch.float64)
    state = {}

    def negative(z: np.ndarray):
        thetas = starts.clone()
        thetas[:, free] = torch.from_numpy(z).reshape(n_experiments, len(free))
        values, gradient, resolution = objective(thetas, free, bounds)
        if rate is not None:  # the rate and constraint terms, from θ_ref as ℓ is
            rate_values, rate_gradient = rate.values_and_gradient(thetas, counts, names, free, bounds, auxiliary)
            values, gradient = values + (rate_values - rate_at_reference), gradient + rate_gradient
        better = values > best_value
        best_value[better], best_theta[better] = values[better], thetas[better]
        # the rounding seen so far (ℓ is measured from θ_ref, so near θ_ref one point's own |log r̂| is too small)
        state["resolution"] = torch.maximum(state.get("resolution", resolution), resolution)
        state.setdefault("at_start", values)
        moving = thetas[:, free]
        projected = torch.where(((moving <= low) & (gradient < 0)) | ((moving >= high) & (gradient > 0)), 0.0,
                                gradient)
        if torch.all(projected.abs() <= state["resolution"][:, None] / steps):
            raise _Resolved
        gain = values - state["at_start"]  # ℓ measured from the start: L-BFGS-B's relative tolerances act on it
        if not torch.isfinite(gain).all():
            return np.inf, np.zeros_like(z)
        return -float(gain.sum()), -gradient.reshape(-1).numpy()

    try:
        result = optimize.minimize(negative, starts[:, free].reshape(-1).numpy(), jac=True, method="L-BFGS-B",
                                   bounds=[bounds[j] for _ in range(n_experiments) for j in free],
                                   options={"maxiter": 1000, "ftol": 1e-12, "gtol": 1e-10})
        if result.status == 1:  # the iteration limit, not convergence nor a line search ended by rounding
            warnings.warn(f"maximum likelihood: L-BFGS-B stopped at its iteration limit ({result.message}); the "
                          "maximum may be inaccurate", RuntimeWarning, stacklevel=2)
    except _Resolved:
        pass
    return best_theta, best_value


class _Resolved(Exception):
    """Raised by the objective when the gradient is below the rounding of ℓ: the maximum is found."""


def scan(estimator, x_observed, grid: torch.Tensor, weights=None, refine: bool = True,
         rate: ExtendedTerm | None = None) -> Scan:
    """Scan Σ_i w_i log r̂(x_i|θ, θ_ref) over ``grid`` [G, p] for the observed events (optionally weighted).

    With ``refine`` the MLE is the best grid point refined by ``maximum_likelihood`` inside the grid's box
    (L-BFGS-B with gradients), so q(θ) does not depend on where the grid points fall; without, it is the
    best grid point. With ``rate`` (an ``ExtendedTerm``) the scan is of the extended likelihood: its rate and
    constraint terms at θ minus at θ_ref are added, with n = ``rate.n_observed``, else Σ_i w_i."""
    grid = torch.as_tensor(grid, dtype=torch.float32)
    grid = grid[:, None] if grid.ndim == 1 else grid
    theta_ref = reference_point(grid)
    values = summed_log_ratio(estimator, x_observed, grid, theta_ref, weights)
    if rate is not None:
        values = (values.double() + rate_difference(rate, grid, theta_ref, observed_count(rate, x_observed, weights),
                                                    getattr(estimator, "parameter_names_", None))).to(values.dtype)
    best = int(torch.argmax(values))
    mle, best_value = grid[best], float(values[best])
    if refine:
        bounds = list(zip(grid.min(dim=0).values.tolist(), grid.max(dim=0).values.tolist(), strict=True))
        refined, refined_value = maximum_likelihood(estimator, x_observed, mle, bounds, theta_ref, weights, rate)
        if refined_value > best_value:
            mle, best_value = refined, refined_value
    n_events = float(len(x_observed) if weights is None else torch.as_tensor(weights).sum())
    return Scan(grid, values, mle, best_value, n_events, tuple(getattr(estimator, "parameter_names_", ())))


def asimov_scan(estimator, simulator, theta_true, n_events: float | None, grid: torch.Tensor, n_samples: int = 20_000,
                seed: int = 0, rate: ExtendedTerm | None = None) -> Scan:
    """The expected scan for ``n_events`` at ``theta_true``: a large sample at θ_true, each event weighted
    n_events / n_samples (the Asimov data set of a Monte-Carlo sample). Its intervals are expected limits.

    With ``rate`` (an ``ExtendedTerm``) the scan is of the extended likelihood, and the Asimov count is
    n = ν(θ_true) = L σ(θ_true): pass ``n_events=None`` for it (another value raises); the Asimov auxiliary
    measurements are θ_true's nuisance values, a_k = α_k."""
    if rate is not None:
        expected = float(rate.expected_events(torch.as_tensor(theta_true, dtype=torch.float64).reshape(1, -1))[0])
        if n_events is None:
            n_events = expected
        elif abs(float(n_events) - expected) > 1e-6 * expected:
            raise ValueError(f"asimov_scan: with a rate term the Asimov data set has n = ν(θ_true) = {expected:.6g} "
                             f"events, not n_events = {n_events}; pass n_events=None")
        rate = rate.replace(n_observed=n_events,
                            auxiliary=rate.auxiliary_at(theta_true, getattr(estimator, "parameter_names_", None)))
    elif n_events is None:
        raise ValueError("asimov_scan: n_events is needed (or a rate term, whose ν(θ_true) it then is)")
    theta = torch.as_tensor(theta_true, dtype=torch.float32).reshape(1, -1).expand(n_samples, -1)
    with torch.no_grad():
        x, _ = simulator.sample(theta, generator=torch.Generator().manual_seed(seed))
    return scan(estimator, x, grid, weights=torch.full((n_samples,), n_events / n_samples), rate=rate)
