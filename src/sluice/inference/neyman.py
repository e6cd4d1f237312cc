"""Neyman construction with toy experiments, and profiling over nuisance parameters."""

from __future__ import annotations

import numpy as np
import torch
from scipy import optimize

from .evaluate import log_ratio_table, reference_point, summed_log_ratio
from .scans import Scan, maximum_likelihood

__all__ = ["neyman_thresholds", "profile_scan"]


def neyman_thresholds(estimator, simulator, grid: torch.Tensor, n_events: int, level: float = 0.68,
                      n_toys: int = 200, seed: int = 0) -> torch.Tensor:
    """Critical values [G] of q(θ_g) at ``level``: for each grid point, ``n_toys`` experiments of ``n_events``
    simulated at θ_g, each scanned over the grid, give the distribution of q(θ_g) = −2[ℓ(θ_g) − max_grid ℓ].

    A point is in the Neyman region when the observed q(θ_g) ≤ its threshold: coverage by construction,
    whether or not Wilks' asymptotics hold. Costs G · n_toys · n_events · G evaluations of log r̂.
    """
    grid = torch.as_tensor(grid, dtype=torch.float32)
    grid = grid[:, None] if grid.ndim == 1 else grid
    theta_ref = reference_point(grid)
    generator = torch.Generator().manual_seed(seed)
    thresholds = torch.empty(grid.shape[0])
    for g in range(grid.shape[0]):
        theta = grid[g].expand(n_toys * n_events, -1)
        with torch.no_grad():
            x, _ = simulator.sample(theta, generator=generator)
        # the log-likelihood ratio of every toy at every grid point: [G, n_toys]
        values = log_ratio_table(estimator, x, grid, theta_ref).reshape(-1, n_toys, n_events).sum(dim=2)
        q_at_truth = -2.0 * (values[g] - values.max(dim=0).values)
        thresholds[g] = torch.quantile(q_at_truth, level)
    return thresholds


def profile_scan(estimator, x_observed, grid: torch.Tensor, parameters_of_interest, nuisance_bounds: dict,
                 weights=None) -> Scan:
    """Scan over the parameters of interest with every other parameter profiled (maximised) away.

    ``parameters_of_interest``: names (from the estimator's parameter_names_) whose values ``grid`` [G, k]
    holds; ``nuisance_bounds``: {name: (low, high)} for each remaining parameter. At each grid point the
    nuisance parameters maximise Σ log r̂ (SciPy L-BFGS-B, warm-started from the previous point). The
    result's grid is over the parameters of interest, so Wilks uses k degrees of freedom; the profiled
    nuisance values are in ``scan.nuisance`` [G, p − k].
    """
    names = list(estimator.parameter_names_)
    interest = [names.index(name) for name in parameters_of_interest]
    nuisance = [names.index(name) for name in nuisance_bounds]
    if sorted(interest + nuisance) != list(range(len(names))):
        raise ValueError(f"parameters of interest {list(parameters_of_interest)} and nuisance parameters "
                         f"{list(nuisance_bounds)} must together name each of {names} once")
    grid = torch.as_tensor(grid, dtype=torch.float32)
    grid = grid[:, None] if grid.ndim == 1 else grid
    bounds = [tuple(nuisance_bounds[names[j]]) for j in nuisance]
    start = np.array([(low + high) / 2 for low, high in bounds])

    def full(point: torch.Tensor, nuisance_values) -> torch.Tensor:
        theta = torch.empty(len(names))
        theta[interest] = point
        theta[nuisance] = torch.as_tensor(nuisance_values, dtype=torch.float32)
        return theta

    theta_ref = full(grid[grid.shape[0] // 2], start)
    values, profiled = torch.empty(grid.shape[0]), torch.empty(grid.shape[0], len(nuisance))
    for g in range(grid.shape[0]):
        def negative(nu, point=grid[g]):
            return -float(summed_log_ratio(estimator, x_observed, full(point, nu)[None], theta_ref, weights)[0])

        result = optimize.minimize(negative, start, method="L-BFGS-B" if len(nuisance) > 1 else "Nelder-Mead",
                                   bounds=bounds)
        values[g], profiled[g] = -float(result.fun), torch.as_tensor(result.x, dtype=torch.float32)
        start = result.x
    best = int(torch.argmax(values))
    # refine the global maximum over every parameter at once, in scan order (interest first, then nuisance)
    order = interest + nuisance
    full_bounds = [(float(grid[:, k].min()), float(grid[:, k].max())) for k in range(grid.shape[1])] + bounds
    refined, refined_value = maximum_likelihood(_Permuted(estimator, order), x_observed,
                                                torch.cat([grid[best], profiled[best]]), full_bounds,
                                                theta_ref[order], weights)
    if refined_value > float(values[best]):
        mle, mle_value = refined[: grid.shape[1]], refined_value
    else:
        mle, mle_value = grid[best], float(values[best])
    result = Scan(grid, values, mle, mle_value, float(len(x_observed)), tuple(parameters_of_interest))
    result.nuisance = profiled
    return result


class _Permuted:
    """An estimator seen with its parameters in another order (scan order: interest first, then nuisance)."""

    def __init__(self, estimator, order):
        self.estimator, self.order = estimator, list(order)
        self.parameter_names_ = tuple(estimator.parameter_names_[j] for j in self.order)

    def _natural(self, theta: torch.Tensor) -> torch.Tensor:
        natural = torch.empty_like(theta)
        natural[..., self.order] = theta
        return natural

    def log_ratio(self, x, theta0, theta1):
        return self.estimator.log_ratio(x, self._natural(theta0), self._natural(theta1))
