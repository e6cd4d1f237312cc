"""Shared helpers for the tests: Monte-Carlo assertions with tolerances from the sample's own error."""

import math

import torch
from hypothesis import settings

# property tests draw the same examples on every run (CI must not flake on a newly found case; explore locally
# by loading hypothesis's "default" profile here instead)
settings.register_profile("sluice", derandomize=True)
settings.load_profile("sluice")

Z_LIMIT = 5.0  # a Monte-Carlo mean must lie within 5 standard errors of its target


def assert_mean_close(values: torch.Tensor, target, what: str, z_limit: float = Z_LIMIT) -> None:
    """Each column of ``values`` [n, k] (or [n]) has mean ``target`` within z_limit standard errors."""
    values = values.to(torch.float64)
    if values.ndim == 1:
        values = values[:, None]
    target = torch.as_tensor(target, dtype=torch.float64)
    error = values.std(dim=0) / math.sqrt(values.shape[0])
    assert torch.all(error > 0), f"{what}: no spread, the test would be vacuous"
    z = ((values.mean(dim=0) - target) / error).abs()
    assert torch.all(z < z_limit), f"{what}: mean {values.mean(dim=0).tolist()} is {z.max():.1f} standard errors " \
                                   f"from {target.tolist()}"
