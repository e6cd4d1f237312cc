"""Priors over θ: BoxUniform, Point, and helpers that work for any torch Distribution with event shape [p]."""

from __future__ import annotations

import torch
from torch.distributions import Distribution, Independent, Uniform, constraints

from ..seeding import seeded_global_generator

__all__ = ["BoxUniform", "Point", "check_prior", "parameter_scale", "sample_prior", "outside_support"]


class BoxUniform(Independent):
    """Uniform on the box ∏_j [low_j, high_j); event shape [p].

    Example: ``BoxUniform(low=[-1.0], high=[-0.4])``.
    """

    def __init__(self, low, high, validate_args=None):
        low = torch.as_tensor(low, dtype=torch.float32).reshape(-1)
        high = torch.as_tensor(high, dtype=torch.float32).reshape(-1)
        if low.shape != high.shape:
            raise ValueError(f"BoxUniform: low has {low.numel()} entries and high has {high.numel()}")
        if not torch.all(torch.isfinite(low) & torch.isfinite(high)):
            raise ValueError("BoxUniform: low and high must be finite")
        if not torch.all(low < high):
            bad = torch.nonzero(low >= high).flatten().tolist()
            raise ValueError(f"BoxUniform: low must be below high in every dimension (not in {bad})")
        super().__init__(Uniform(low, high, validate_args=validate_args), 1, validate_args=validate_args)
        self.low, self.high = low, high

    def __repr__(self) -> str:
        return f"BoxUniform(low={self.low.tolist()}, high={self.high.tolist()})"


class Point(Distribution):
    """A point mass at ``theta_ref`` (event shape [p]): the prior for local data (SALLY, SALLINO).

    Its support is taken as all of R^p, so a reference point elsewhere is allowed.
    """

    arg_constraints: dict = {}
    support = constraints.independent(constraints.real, 1)
    has_rsample = True

    def __init__(self, theta_ref, validate_args=None):
        self.theta_ref = torch.as_tensor(theta_ref, dtype=torch.float32).reshape(-1)
        super().__init__(event_shape=self.theta_ref.shape, validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return self.theta_ref

    @property
    def variance(self) -> torch.Tensor:
        return torch.zeros_like(self.theta_ref)

    def rsample(self, sample_shape=()) -> torch.Tensor:
        return self.theta_ref.expand(*sample_shape, *self.theta_ref.shape).clone()

    def log_prob(self, value) -> torch.Tensor:
        value = torch.as_tensor(value, dtype=torch.float32)
        at_point = torch.all(value == self.theta_ref, dim=-1)
        return torch.where(at_point, 0.0, float("-inf"))

    def __repr__(self) -> str:
        return f"Point({self.theta_ref.tolist()})"


def check_prior(prior, n_parameters: int) -> None:
    """Raise a clear error unless ``prior`` is a torch Distribution with event shape [n_parameters]."""
    if not isinstance(prior, Distribution):
        raise TypeError(
            f"the prior must be a torch.distributions.Distribution (e.g. sluice.priors.BoxUniform), "
            f"got {type(prior).__name__}"
        )
    if tuple(prior.batch_shape) != () or tuple(prior.event_shape) != (n_parameters,):
        raise ValueError(
            f"the prior must have batch shape [] and event shape [{n_parameters}] to match the simulator's "
            f"{n_parameters} parameter(s); got batch {list(prior.batch_shape)}, event {list(prior.event_shape)}"
            + (" (wrap independent 1-D priors in torch.distributions.Independent)" if prior.event_shape == () else "")
        )


def sample_prior(prior, n: int, seed: int) -> torch.Tensor:
    """n float32 draws ``[n, p]`` from ``prior``, reproducible from ``seed``.

    torch Distributions draw from the global generator; it is forked so the caller's state is untouched.
    """
    with seeded_global_generator(seed):
        return prior.sample((n,)).to(torch.float32)


def outside_support(prior, theta: torch.Tensor) -> torch.Tensor:
    """Boolean ``[n]``: rows of ``theta`` that lie outside the prior's support."""
    inside = prior.support.check(theta)
    if inside.ndim > 1:
        inside = inside.all(dim=-1)
    return ~inside


def parameter_scale(prior) -> torch.Tensor:
    """A typical scale per parameter ``[p]``: the box width, else the standard deviation, else 1.

    Used for relative finite-difference steps and for nearby test points.
    """
    if isinstance(prior, BoxUniform):
        return prior.high - prior.low
    try:
        scale = prior.stddev.to(torch.float32).reshape(-1)
    except (NotImplementedError, AttributeError):
        scale = sample_prior(prior, 2000, seed=0).std(dim=0)
    scale = torch.where(torch.isfinite(scale) & (scale > 0), scale, torch.ones_like(scale))
    return scale
