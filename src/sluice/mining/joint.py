"""Mining: the joint log ratio log r(x,z|θ0,θ1) and the joint scores t(x,z|θ) from any Simulator.

    log r(x,z|θ0,θ1) = log p(x,z|θ0) − log p(x,z|θ1)
    t(x,z|θ)         = ∇θ log p(x,z|θ)        (z held fixed)

The score comes from autograd of ``joint_log_prob``; where that is not differentiable it comes from
central finite differences with a step relative to the prior's scale, and the user is told once. log r is the
difference of the two log-probabilities in float64, rounded to float32 only then: log p can be large (10⁴ for a
simulator with many sites) where log r is of order one, and float32 log p would carry an error of ulp(|log p|).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ..simulators.base import Latent, Simulator

__all__ = ["JointQuantities", "FiniteDifferenceWarning", "autograd_score", "joint_log_prob_and_score", "mine",
           "finite_difference_score"]

DEFAULT_FD_STEP = 1e-3  # central-difference step, as a fraction of each parameter's prior scale


class FiniteDifferenceWarning(UserWarning):
    """The joint score of a simulator is being taken by finite differences instead of autograd."""


_told_about_finite_differences: set[str] = set()


@dataclass
class JointQuantities:
    """Joint quantities of n runs: ``log_r_xz`` [n], ``t_xz0`` and ``t_xz1`` [n, p]."""

    log_r_xz: torch.Tensor
    t_xz0: torch.Tensor
    t_xz1: torch.Tensor


def _checked_log_prob(simulator: Simulator, x: torch.Tensor, z: Latent, theta: torch.Tensor) -> torch.Tensor:
    log_prob = simulator.joint_log_prob(x, z, theta)
    if not isinstance(log_prob, torch.Tensor) or log_prob.shape != (theta.shape[0],):
        shape = list(log_prob.shape) if isinstance(log_prob, torch.Tensor) else type(log_prob).__name__
        raise ValueError(
            f"{simulator.name}.joint_log_prob must return a tensor of shape [n] = [{theta.shape[0]}], got {shape}"
        )
    return log_prob


def finite_difference_score(simulator: Simulator, x: torch.Tensor, z: Latent, theta: torch.Tensor,
                            step: torch.Tensor) -> torch.Tensor:
    """Central differences of ``joint_log_prob`` in float64: ``[n, p]``, with per-parameter ``step`` [p]."""
    base = theta.detach().to(torch.float64)
    columns = []
    for j in range(base.shape[1]):
        shift = torch.zeros_like(base)
        shift[:, j] = float(step[j])
        with torch.no_grad():
            upper = _checked_log_prob(simulator, x, z, base + shift).to(torch.float64)
            lower = _checked_log_prob(simulator, x, z, base - shift).to(torch.float64)
        columns.append((upper - lower) / (2.0 * float(step[j])))
    return torch.stack(columns, dim=1).to(torch.float32)


def _tell_once(simulator: Simulator, reason: str) -> None:
    if simulator.name in _told_about_finite_differences:
        return
    _told_about_finite_differences.add(simulator.name)
    warnings.warn(
        f"{simulator.name}: {reason}; the joint score is taken by central finite differences of "
        f"joint_log_prob (2p extra evaluations per θ). Return a differentiable torch expression to use autograd.",
        FiniteDifferenceWarning,
        stacklevel=4,
    )


@dataclass
class AutogradScore:
    """log p(x,z|θ) ``[n]`` and t(x,z|θ) ``[n, p]`` by autograd; both None with ``reason`` where unavailable."""

    log_prob: torch.Tensor | None
    score: torch.Tensor | None
    reason: str = ""


def autograd_score(simulator: Simulator, x: torch.Tensor, z: Latent, theta: torch.Tensor,
                   log_prob_dtype: torch.dtype = torch.float32) -> AutogradScore:
    """The joint log-prob (in ``log_prob_dtype``) and score (float32) by autograd of ``joint_log_prob``, or why
    that is not available."""
    if not simulator.differentiable:
        return AutogradScore(None, None, "differentiable = False")
    theta_var = theta.detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            log_prob = _checked_log_prob(simulator, x, z, theta_var)
    except RuntimeError as error:  # e.g. .numpy() on a tensor that requires grad
        return AutogradScore(None, None, f"joint_log_prob failed under autograd ({str(error).splitlines()[0]})")
    if not log_prob.requires_grad:
        return AutogradScore(None, None, "joint_log_prob returned a value with no autograd graph to θ")
    (score,) = torch.autograd.grad(log_prob.sum(), theta_var)
    return AutogradScore(log_prob.detach().to(log_prob_dtype), score.to(torch.float32))


def joint_log_prob_and_score(simulator: Simulator, x: torch.Tensor, z: Latent, theta: torch.Tensor,
                             fd_step: torch.Tensor, log_prob_dtype: torch.dtype = torch.float32
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(x,z|θ) ``[n]`` (in ``log_prob_dtype``) and t(x,z|θ) ``[n, p]`` (float32); autograd where possible,
    else finite differences.

    ``fd_step`` [p] is the absolute finite-difference step, used only by the fallback.
    """
    result = autograd_score(simulator, x, z, theta, log_prob_dtype)
    if result.score is not None:
        return result.log_prob, result.score
    _tell_once(simulator, result.reason)
    with torch.no_grad():
        log_prob = _checked_log_prob(simulator, x, z, theta.detach()).to(log_prob_dtype)
    return log_prob, finite_difference_score(simulator, x, z, theta, fd_step)


def mine(simulator: Simulator, x: torch.Tensor, z: Latent, theta0: torch.Tensor, theta1: torch.Tensor,
         fd_step: torch.Tensor) -> JointQuantities:
    """The joint log ratio (float64 difference, then float32: module notes) and both joint scores of the runs
    (x, z), whichever θ generated them."""
    log_prob0, t_xz0 = joint_log_prob_and_score(simulator, x, z, theta0, fd_step, torch.float64)
    log_prob1, t_xz1 = joint_log_prob_and_score(simulator, x, z, theta1, fd_step, torch.float64)
    return JointQuantities(log_r_xz=(log_prob0 - log_prob1).to(torch.float32), t_xz0=t_xz0, t_xz1=t_xz1)
