"""The generalised Galton board: 20 rows of nails, 1-D θ, discrete x, exact likelihood by dynamic programming."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import Simulator, as_theta_batch
from .priors import BoxUniform


class GaltonBoard(Simulator):
    """A ball falls through ``n_levels`` = 20 levels of a board with ``n_nails`` = 31 nail positions.

    At level ℓ and nail p it goes left with probability

        P_left(ℓ, p; θ) = ½(1 − sin(πℓ/19)) + sin(πℓ/19) · σ(10 θ (2p/30 − 1)),

    then moves p → p (left) or p+1 (right) on even levels, p−1 or p on odd ones; it starts at nail 15 and
    x is the final nail (5 … 25). z is the 20 decisions ``{"right": uint8 [n, 20]}`` (1: right) with the nail at which
    each was taken (``"nail"``), and

        log p(x, z | θ) = Σ_ℓ log P(decision_ℓ | ℓ, p_ℓ; θ),

    while p(x | θ) comes exactly from the forward dynamic program over (level, nail).
    """

    parameter_names = ("theta",)
    n_levels = 20
    default_batch_size = 16_384  # measured: mining in cache-sized batches costs about as much as sampling
    n_nails = 31
    start = 15

    def __init__(self):
        levels = torch.arange(self.n_levels, dtype=torch.float64)
        self._wiggle = torch.sin(math.pi * levels / (self.n_levels - 1))  # sin(πℓ/19): how much θ matters
        self._odd = (levels % 2).to(torch.float32)  # an odd level shifts a left move by −1
        self._nail_coordinate = 2.0 * torch.arange(self.n_nails, dtype=torch.float64) / (self.n_nails - 1) - 1.0

    def default_prior(self) -> BoxUniform:
        """The published training range θ ∈ [−1, −0.4]."""
        return BoxUniform(low=[-1.0], high=[-0.4])

    def _p_left(self, level: int, theta: torch.Tensor, nail: torch.Tensor) -> torch.Tensor:
        wiggle = float(self._wiggle[level])
        return 0.5 * (1.0 - wiggle) + wiggle * torch.sigmoid(10.0 * theta * (2.0 * nail / (self.n_nails - 1) - 1.0))

    def sample(self, theta, generator=None):
        theta = as_theta_batch(theta, None, 1)
        n = theta.shape[0]
        uniforms = torch.rand(n, self.n_levels, generator=generator)
        nail = torch.full((n,), float(self.start))
        right = torch.empty(n, self.n_levels, dtype=torch.uint8)
        nails = torch.empty(n, self.n_levels, dtype=torch.uint8)
        theta_column = theta[:, 0].to(torch.float32)
        for level in range(self.n_levels):  # a loop over the 20 levels; every operation is over all runs
            nails[:, level] = nail
            right[:, level] = uniforms[:, level] >= self._p_left(level, theta_column, nail)
            nail = nail + right[:, level] - self._odd[level]
        # z: the decisions (1 = right), and the nail where each was taken (redundant; it spares a cumsum)
        return nail[:, None], {"right": right, "nail": nails}

    def joint_log_prob(self, x, z, theta):
        """Σ_ℓ log(½(1 − s_ℓ) + s_ℓ σ(θ k_ℓ)) with k_ℓ = ±10 (2p_ℓ/30 − 1), + for a left move, − for right."""
        dtype = theta.dtype
        sign = 1.0 - 2.0 * z["right"].to(dtype)
        slope = sign * (z["nail"].to(dtype) - 0.5 * (self.n_nails - 1)) * (20.0 / (self.n_nails - 1))
        wiggle = self._wiggle.to(dtype)
        probability = torch.addcmul(0.5 * (1.0 - wiggle), wiggle, torch.sigmoid(theta[:, :1] * slope))
        return torch.log(probability).sum(dim=1)

    def probabilities(self, theta) -> torch.Tensor:
        """Exact p(x = k | θ) for k = 0 … 30, ``[n, 31]`` in float64, by the forward dynamic program."""
        theta = as_theta_batch(theta, None, 1).to(torch.float64)
        mass = torch.zeros(theta.shape[0], self.n_nails, dtype=torch.float64)
        mass[:, self.start] = 1.0
        for level in range(self.n_levels):
            wiggle = self._wiggle[level]
            p_left = 0.5 * (1.0 - wiggle) + wiggle * torch.sigmoid(10.0 * theta * self._nail_coordinate)
            left, right = mass * p_left, mass * (1.0 - p_left)
            if level % 2 == 0:  # left stays at p, right goes to p+1
                mass = left + F.pad(right[:, :-1], (1, 0))
            else:  # left goes to p−1, right stays at p
                mass = right + F.pad(left[:, 1:], (0, 1))
        return mass

    def log_likelihood(self, x, theta):
        x = torch.as_tensor(x)
        nail = x.reshape(x.shape[0], -1)
        if nail.shape[1] != 1:
            raise ValueError(f"GaltonBoard: x must have shape [n, 1], got {list(x.shape)}")
        nail = nail[:, 0].to(torch.float64)
        if not torch.all(nail == torch.round(nail)):
            raise ValueError("GaltonBoard: x must hold whole nail numbers")
        theta = as_theta_batch(theta, x.shape[0], 1)
        out_dtype = theta.dtype
        mass = self.probabilities(theta)
        inside = (nail >= 0) & (nail < self.n_nails)
        index = torch.where(inside, nail, torch.zeros_like(nail)).long()[:, None]
        picked = torch.where(inside, mass.gather(1, index)[:, 0], torch.zeros_like(nail))
        return torch.log(picked).to(out_dtype)
