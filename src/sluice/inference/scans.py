"""Likelihood-ratio scans: q(θ) = −2 [Σ_i log r̂(x_i|θ, θ_ref) − max_θ'], the MLE, Wilks regions and limits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import optimize, stats

from .evaluate import reference_point, summed_log_ratio

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
    MLE (the best grid point, refined by local optimisation where possible) with its value."""

    grid: torch.Tensor
    log_likelihood_ratio: torch.Tensor
    mle: torch.Tensor
    max_log_likelihood_ratio: float
    n_events: float
    parameter_names: tuple = ()

    @property
    def q(self) -> torch.Tensor:
        """−2 Δ log L on the grid, [G]; 0 at the MLE."""
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
                       weights=None) -> tuple[torch.Tensor, float]:
    """Refine the MLE from ``start`` inside ``bounds`` [(low, high)] by bounded Nelder–Mead (SciPy)."""

    def negative(theta: np.ndarray) -> float:
        value = summed_log_ratio(estimator, x, torch.tensor(theta[None], dtype=torch.float32), theta_ref, weights)
        return -float(value[0])

    result = optimize.minimize(negative, start.double().numpy(), method="Nelder-Mead", bounds=bounds,
                               options={"xatol": 1e-5, "fatol": 1e-7})
    return torch.tensor(result.x, dtype=torch.float32), -float(result.fun)


def scan(estimator, x_observed, grid: torch.Tensor, weights=None, refine: bool = True) -> Scan:
    """Scan Σ_i log r̂(x_i|θ, θ_ref) over ``grid`` for the observed events (optionally weighted)."""
    grid = torch.as_tensor(grid, dtype=torch.float32)
    grid = grid[:, None] if grid.ndim == 1 else grid
    theta_ref = reference_point(grid)
    values = summed_log_ratio(estimator, x_observed, grid, theta_ref, weights)
    best = int(torch.argmax(values))
    mle, best_value = grid[best], float(values[best])
    if refine:
        bounds = list(zip(grid.min(dim=0).values.tolist(), grid.max(dim=0).values.tolist(), strict=True))
        refined, refined_value = maximum_likelihood(estimator, x_observed, mle, bounds, theta_ref, weights)
        if refined_value > best_value:
            mle, best_value = refined, refined_value
    n_events = float(len(x_observed) if weights is None else torch.as_tensor(weights).sum())
    return Scan(grid, values, mle, best_value, n_events, tuple(getattr(estimator, "parameter_names_", ())))


def asimov_scan(estimator, simulator, theta_true, n_events: float, grid: torch.Tensor, n_samples: int = 20_000,
                seed: int = 0) -> Scan:
    """The expected scan for ``n_events`` at ``theta_true``: a large sample at θ_true, each event weighted
    n_events / n_samples (the Asimov data set of a Monte-Carlo sample). Its intervals are expected limits."""
    theta = torch.as_tensor(theta_true, dtype=torch.float32).reshape(1, -1).expand(n_samples, -1)
    with torch.no_grad():
        x, _ = simulator.sample(theta, generator=torch.Generator().manual_seed(seed))
    return scan(estimator, x, grid, weights=torch.full((n_samples,), n_events / n_samples))
