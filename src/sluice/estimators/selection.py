"""What ``Auto`` chooses with: the held-out criteria that need no truth (the ALICE or CARL cross-entropy per row,
the weighted score residual per row), the convex stacking weights that minimise one of them, and the gate that
trusts density members beyond the ratio members' clip (docs/theory.md, "Choosing among estimators without the
truth")."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from ..data.augmented import AugmentedData

__all__ = ["alice_clip", "ratio_criterion_rows", "score_residual_rows", "ratio_gate", "stack_weights"]

STACK_STEPS = 300  # L-BFGS iterations for the stacking weights (a convex problem in k − 1 dimensions)


def alice_clip() -> float:
    """ALICE's default clip of |log r(x,z)| before the soft label is formed, read from its signature so the
    criterion follows the estimator."""
    from .ratio import ALICE

    return float(inspect.signature(ALICE).parameters["clip_log_r"].default)


def ratio_criterion_rows(log_r_hat: torch.Tensor, rows: AugmentedData, criterion: str,
                         clip: float | None = None) -> torch.Tensor:
    """The held-out cross-entropy of each row [n] for predictions ``log_r_hat`` [n] of log r̂(x|θ0,θ1).

    ``criterion`` "alice": −[s log ŝ + (1 − s) log(1 − ŝ)] with s = σ(−clip(log r(x,z))) and ŝ = σ(−log r̂), the
    per-row form of ``losses.alice_loss`` (``clip``: ALICE's default when None); "carl": the same with s = y,
    ``losses.carl_loss``. Units: nats per row."""
    if criterion == "alice":
        clip = alice_clip() if clip is None else clip
        label = torch.sigmoid(-rows.log_r_xz.to(log_r_hat.dtype).clamp(-clip, clip))
    elif criterion == "carl":
        label = rows.y.to(log_r_hat.dtype)
    else:
        raise ValueError(f"ratio criterion must be 'alice' or 'carl', got {criterion!r}")
    return F.binary_cross_entropy_with_logits(-log_r_hat, label, reduction="none")


def score_residual_rows(t_hat: torch.Tensor, t_xz: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Σ_j weight_j (t̂_j(x|θ) − t_j(x,z|θ))² per row [n], with t̂, t_xz [n, p] at the θ that made x and ``weight``
    [p] (1/Var(t_j) over the held-out rows: dimensionless). Unclipped, so that its expectation decomposes exactly
    into the error of t̂ plus a constant."""
    return ((t_hat.to(weight.dtype) - t_xz.to(weight.dtype)) ** 2 * weight).sum(dim=1)


def ratio_gate(members: list) -> tuple[float, torch.Tensor] | None:
    """(threshold, bounded [k] bool) for the gate of ``Auto``: ``bounded`` marks the members of the ratio family
    (trained on targets clipped to ±``clip_log_r``: ALICES, ALICE, RASCAL, …, and CARL's classifier, which
    saturates alike), the threshold is their smallest clip. None unless the members mix both kinds, since only then
    is there a density member to trust beyond the clip."""
    from .ratio import RatioEstimator

    bounded = torch.tensor([isinstance(m, RatioEstimator) for m in members], dtype=torch.bool)
    if not members or bool(bounded.all()) or not bool(bounded.any()):
        return None
    return min(float(m.clip_log_r) for m in members if isinstance(m, RatioEstimator)), bounded


def stack_weights(predictions: torch.Tensor, objective, steps: int = STACK_STEPS) -> torch.Tensor:
    """Convex weights w [k] = softmax(a) minimising ``objective(Σ_k w_k predictions_k)`` (a scalar), by L-BFGS from
    equal weights in float64; deterministic. ``predictions`` [k, n] or [k, n, p], computed once beforehand.

    The held-out cross-entropy is convex in log r̂ and the pool is linear in w, so the problem is convex on the
    simplex; the softmax makes it unconstrained, at the price of never reaching a face exactly (hence
    ``Auto``'s MIN_WEIGHT)."""
    predictions = predictions.detach().double()
    logits = torch.zeros(predictions.shape[0], dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([logits], lr=1.0, max_iter=steps, tolerance_grad=1e-12, tolerance_change=1e-15,
                                  history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        with torch.enable_grad():
            weights = torch.softmax(logits, dim=0)
            value = objective(torch.einsum("k,k...->...", weights, predictions))
            value.backward()
        return value

    optimiser.step(closure)
    return torch.softmax(logits.detach(), dim=0)
