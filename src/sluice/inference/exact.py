"""ExactLikelihood: a simulator's exact log p(x|θ) behind the estimator interface, the truth to compare with."""

from __future__ import annotations

import torch

from ..simulators.base import Simulator, as_theta_batch


class ExactLikelihood:
    """Wraps a simulator with ``log_likelihood`` so inference code can treat the truth like an estimator:
    ``log_likelihood(x, θ)``, ``log_ratio(x, θ0, θ1)`` and ``score(x, θ)`` (autograd in float64)."""

    def __init__(self, simulator: Simulator):
        if not simulator.has_log_likelihood:
            raise ValueError(f"{simulator.name} has no tractable log_likelihood to wrap")
        self.simulator = simulator
        self.parameter_names_ = tuple(simulator.parameter_names)

    def _inputs(self, x, *thetas):
        x = torch.as_tensor(x, dtype=torch.float32)
        x = x[:, None] if x.ndim == 1 else x
        p = len(self.parameter_names_)
        return (x,) + tuple(as_theta_batch(t, x.shape[0], p).to(torch.float64) for t in thetas)

    def log_likelihood(self, x, theta) -> torch.Tensor:
        x, theta = self._inputs(x, theta)
        with torch.no_grad():
            return self.simulator.log_likelihood(x, theta).to(torch.float32)

    def log_ratio(self, x, theta0, theta1) -> torch.Tensor:
        x, theta0, theta1 = self._inputs(x, theta0, theta1)
        with torch.no_grad():
            log_p0, log_p1 = self.simulator.log_likelihood(x, theta0), self.simulator.log_likelihood(x, theta1)
            return (log_p0 - log_p1).to(torch.float32)

    def log_ratio_table(self, x, thetas: torch.Tensor, theta_ref: torch.Tensor) -> torch.Tensor | None:
        """log r(x_i | θ_g, θ_ref) as [G, n] with one likelihood table per θ, for simulators that give
        ``probabilities(θ) -> [G, K]`` over x = 0…K−1 (the Galton board); None for the others."""
        if not hasattr(self.simulator, "probabilities"):
            return None
        x = self._inputs(x)[0]
        with torch.no_grad():
            table = torch.log(self.simulator.probabilities(torch.cat([thetas, theta_ref.reshape(1, -1)]).double()))
        nail = x.reshape(x.shape[0], -1)[:, 0]
        inside = (nail == torch.round(nail)) & (nail >= 0) & (nail < table.shape[1])
        picked = table[:, torch.where(inside, nail, torch.zeros_like(nail)).long()]
        picked = torch.where(inside, picked, torch.full_like(picked, float("-inf")))
        return (picked[:-1] - picked[-1]).to(torch.float32)

    def score(self, x, theta) -> torch.Tensor:
        x, theta = self._inputs(x, theta)
        theta = theta.clone().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self.simulator.log_likelihood(x, theta).sum(), theta)
        return grad.to(torch.float32)

    def __repr__(self) -> str:
        return f"ExactLikelihood({self.simulator.name})"
