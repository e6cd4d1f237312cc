"""A two-component Gaussian mixture in 2-D whose weights and means depend on θ = (a, b); exact likelihood."""

from __future__ import annotations

import math

import torch

from .base import Simulator, as_theta_batch
from .priors import BoxUniform


class GaussianMixture(Simulator):
    """x ∈ R² from a latent component k ∈ {0, 1}:

        P(k = 1 | θ) = σ(2 (a − b)),
        x | k=0 ~ N((a, b), 0.6² I),      x | k=1 ~ N((1.5 + b, −1.5 + a), 0.4² I).

    z = ``{"component": k}``; log p(x, z | θ) = log P(k|θ) + log N(x; μ_k(θ), σ_k² I), and the exact
    log p(x | θ) = logsumexp_k of the same.
    """

    parameter_names = ("a", "b")
    widths = (0.6, 0.4)
    default_batch_size = 100_000

    def default_prior(self) -> BoxUniform:
        return BoxUniform(low=[-1.0, -1.0], high=[1.0, 1.0])

    def _components(self, theta: torch.Tensor):
        """Log weights ``[n, 2]``, means ``[n, 2, 2]`` (component, coordinate) and widths ``[2]``."""
        a, b = theta[:, 0], theta[:, 1]
        logit = 2.0 * (a - b)
        log_weights = torch.stack([torch.nn.functional.logsigmoid(-logit),
                                   torch.nn.functional.logsigmoid(logit)], dim=1)
        means = torch.stack([torch.stack([a, b], dim=1),
                             torch.stack([1.5 + b, -1.5 + a], dim=1)], dim=1)
        return log_weights, means, torch.tensor(self.widths, dtype=theta.dtype)

    def _log_joint_per_component(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """log P(k|θ) + log N(x; μ_k, σ_k² I) for both k: ``[n, 2]``."""
        log_weights, means, widths = self._components(theta)
        squared = ((x[:, None, :].to(theta.dtype) - means) ** 2).sum(dim=2)
        log_normal = -0.5 * squared / widths**2 - 2.0 * torch.log(widths) - math.log(2.0 * math.pi)
        return log_weights + log_normal

    def sample(self, theta, generator=None):
        theta = as_theta_batch(theta, None, 2)
        log_weights, means, widths = self._components(theta)
        n = theta.shape[0]
        component = (torch.rand(n, generator=generator) < log_weights[:, 1].exp()).long()
        noise = torch.randn(n, 2, generator=generator)
        rows = torch.arange(n)
        x = means[rows, component] + widths[component][:, None] * noise
        return x.to(torch.float32), {"component": component}

    def joint_log_prob(self, x, z, theta):
        per_component = self._log_joint_per_component(x, theta)
        return per_component.gather(1, z["component"].long()[:, None])[:, 0]

    def log_likelihood(self, x, theta):
        x = torch.as_tensor(x)
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"GaussianMixture: x must have shape [n, 2], got {list(x.shape)}")
        theta = as_theta_batch(theta, x.shape[0], 2)
        return torch.logsumexp(self._log_joint_per_component(x, theta), dim=1)
