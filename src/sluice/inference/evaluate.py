"""Batched evaluation of log r̂(x_i | θ_g, θ_ref) for many θ and many events at once: the work behind scans,
toys and posteriors."""

from __future__ import annotations

import torch

from ..estimators.base import PotentialPredictions

ROWS_PER_PASS = 262_144  # (θ, event) pairs evaluated per forward pass


def reference_point(grid: torch.Tensor) -> torch.Tensor:
    """The reference θ of a scan; any fixed point serves, since q(θ) only uses differences."""
    return grid[grid.shape[0] // 2]


def log_ratio_table(estimator, x: torch.Tensor, thetas: torch.Tensor, theta_ref: torch.Tensor,
                    differentiable: bool = False) -> torch.Tensor:
    """log r̂(x_i | θ_g, θ_ref) for every row θ_g of ``thetas`` [G, p] and event x_i: shape [G, n].

    Models whose network is a potential g(x,θ) (the ratio family, NDE, SCANDAL) are evaluated as
    g(x_i,θ_g) − g(x_i,θ_ref) with the reference term computed once; others through ``log_ratio``.
    With ``differentiable`` the table keeps its graph to ``thetas`` (potential models only).
    """
    x = torch.as_tensor(x, dtype=torch.float32)
    x = x[:, None] if x.ndim == 1 else x
    n, G = x.shape[0], thetas.shape[0]
    thetas = thetas.to(torch.float32)
    theta_ref = torch.as_tensor(theta_ref, dtype=torch.float32)
    potential = isinstance(estimator, PotentialPredictions)
    if differentiable and not potential:
        raise ValueError(f"{type(estimator).__name__} gives no differentiable log r̂ in θ")
    if n > 64 and x.ndim == 2:  # discrete x (many repeated events): evaluate each distinct event once
        distinct, inverse = torch.unique(x, dim=0, return_inverse=True)
        if distinct.shape[0] * 4 <= n:
            return log_ratio_table(estimator, distinct, thetas, theta_ref, differentiable)[:, inverse]
    if not differentiable and hasattr(estimator, "log_ratio_table"):  # a shortcut of the estimator's own
        table = estimator.log_ratio_table(x, thetas, theta_ref)
        if table is not None:
            return table
    per_pass = max(1, ROWS_PER_PASS // n)
    with torch.enable_grad() if differentiable else torch.no_grad():
        if potential:
            reference = estimator.model_(x, theta_ref.expand(n, -1))
        rows = []
        for start in range(0, G, per_pass):
            block = thetas[start:start + per_pass]
            m = block.shape[0]
            x_rep = x.repeat(m, *([1] * (x.ndim - 1)))
            theta_rep = block.repeat_interleave(n, dim=0)
            if potential:
                rows.append(estimator.model_(x_rep, theta_rep).reshape(m, n) - reference)
            else:
                rows.append(estimator.log_ratio(x_rep, theta_rep, theta_ref.expand(m * n, -1)).reshape(m, n))
    return torch.cat(rows)


def summed_log_ratio(estimator, x: torch.Tensor, thetas: torch.Tensor, theta_ref: torch.Tensor,
                     weights: torch.Tensor | None = None, differentiable: bool = False) -> torch.Tensor:
    """Σ_i w_i log r̂(x_i | θ_g, θ_ref) for each row of ``thetas``: shape [G]."""
    table = log_ratio_table(estimator, x, thetas, theta_ref, differentiable)
    if weights is None:
        return table.sum(dim=1)
    return (table * torch.as_tensor(weights, dtype=torch.float32)).sum(dim=1)
