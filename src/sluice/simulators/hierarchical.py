"""A hierarchical Gaussian: K latent group means around μ with spread τ, observed with known noise; exact likelihood."""

from __future__ import annotations

import math

import torch

from .base import Simulator, as_theta_batch
from .priors import BoxUniform


class HierarchicalGaussian(Simulator):
    """θ = (μ, log τ); for groups k = 1 … K (K = 8 by default) with known noise scales s_k:

        z_k ~ N(μ, τ²)          (the latent group means),
        x_k ~ N(z_k, s_k²)      (what is observed: each group's sample mean, with its measurement noise).

    z = ``{"group_means": z [n, K]}``, and

        log p(x, z | θ) = Σ_k [−(z_k − μ)²/(2τ²) − log τ − (x_k − z_k)²/(2 s_k²)] + const,

    so t_μ = Σ_k (z_k − μ)/τ² and t_{log τ} = Σ_k [(z_k − μ)²/τ² − 1]. Marginalising z in closed form,
    x_k ~ N(μ, τ² + s_k²) independently: that is the exact ``log_likelihood``. The unequal s_k make the
    likelihood depend on x through a weighted mean and spread, not the plain sample moments.
    """

    parameter_names = ("mu", "log_tau")
    default_batch_size = 100_000

    def __init__(self, noise_scales=None):
        noise = torch.linspace(0.3, 1.0, 8) if noise_scales is None else noise_scales
        self.noise_scales = torch.as_tensor(noise, dtype=torch.float32).reshape(-1)
        if not torch.all(self.noise_scales > 0):
            raise ValueError("HierarchicalGaussian: noise_scales must be positive")

    @property
    def n_groups(self) -> int:
        return self.noise_scales.numel()

    def default_prior(self) -> BoxUniform:
        """μ ∈ [−2, 2], log τ ∈ [−2, 1] (τ from 0.14 to 2.7, below and above the noise scales 0.3 … 1)."""
        return BoxUniform(low=[-2.0, -2.0], high=[2.0, 1.0])

    def _check_x(self, x) -> torch.Tensor:
        x = torch.as_tensor(x)
        if x.ndim != 2 or x.shape[1] != self.n_groups:
            raise ValueError(f"HierarchicalGaussian: x must have shape [n, {self.n_groups}], got {list(x.shape)}")
        return x

    def sample(self, theta, generator=None):
        theta = as_theta_batch(theta, None, 2).to(torch.float32)
        n = theta.shape[0]
        mu, tau = theta[:, :1], theta[:, 1:].exp()
        group_means = mu + tau * torch.randn(n, self.n_groups, generator=generator)
        x = group_means + self.noise_scales * torch.randn(n, self.n_groups, generator=generator)
        return x, {"group_means": group_means}

    def joint_log_prob(self, x, z, theta):
        x = self._check_x(x)
        theta = as_theta_batch(theta, x.shape[0], 2)
        mu, log_tau = theta[:, :1], theta[:, 1:]
        z = z["group_means"].to(theta.dtype)
        latent = -0.5 * ((z - mu) * torch.exp(-log_tau)) ** 2 - log_tau
        observed = -0.5 * ((x.to(theta.dtype) - z) / self.noise_scales.to(theta.dtype)) ** 2
        return (latent + observed).sum(dim=1)

    def log_likelihood(self, x, theta):
        x = self._check_x(x)
        theta = as_theta_batch(theta, x.shape[0], 2)
        mu, log_tau = theta[:, :1], theta[:, 1:]
        variance = torch.exp(2 * log_tau) + self.noise_scales.to(theta.dtype) ** 2
        squared = (x.to(theta.dtype) - mu) ** 2
        return (-0.5 * squared / variance - 0.5 * torch.log(2 * math.pi * variance)).sum(dim=1)
