"""Every loss term of the estimator family as a pure function of tensors (docs/theory.md).

Conventions: y = 0 where x was drawn at θ0 and y = 1 at θ1; predictions are log r̂(x|θ0,θ1) [n];
ŝ = 1/(1 + r̂) = σ(−log r̂) is the classifier's probability that x came from θ1. Each function returns
the mean over the batch (a scalar).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["carl_loss", "rolr_loss", "alice_loss", "score_loss", "negative_log_likelihood"]


def carl_loss(log_r_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy −[y log ŝ + (1−y) log(1−ŝ)], minimised by ŝ = p(x|θ1)/(p(x|θ0)+p(x|θ1)), i.e. r̂ = r."""
    return F.binary_cross_entropy_with_logits(-log_r_hat, y)


def rolr_loss(log_r_hat: torch.Tensor, log_r_xz: torch.Tensor, y: torch.Tensor, clip: float = 20.0) -> torch.Tensor:
    """y (r̂ − r(x,z))² + (1−y) (1/r̂ − 1/r(x,z))²: regression on the joint ratio, minimised by r̂ = r(x).

    Both log r̂ and log r(x,z) are clipped to ±``clip`` so that one extreme weight cannot dominate.
    """
    log_r_hat = log_r_hat.clamp(-clip, clip)
    log_r_xz = log_r_xz.clamp(-clip, clip)
    at_theta1 = (log_r_hat.exp() - log_r_xz.exp()) ** 2
    at_theta0 = ((-log_r_hat).exp() - (-log_r_xz).exp()) ** 2
    return (y * at_theta1 + (1.0 - y) * at_theta0).mean()


def alice_loss(log_r_hat: torch.Tensor, log_r_xz: torch.Tensor, clip: float = 20.0) -> torch.Tensor:
    """Cross-entropy against the soft label s(x,z) = 1/(1 + r(x,z)): −[s log ŝ + (1−s) log(1−ŝ)].

    Its minimiser is ŝ = E[s(x,z)|x] = 1/(1 + r(x)); the targets are bounded, so it is robust.
    """
    soft_label = torch.sigmoid(-log_r_xz.clamp(-clip, clip))
    return F.binary_cross_entropy_with_logits(-log_r_hat, soft_label)


def score_loss(t_hat: torch.Tensor, t_xz: torch.Tensor, mask: torch.Tensor | None = None,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the batch of mask · Σ_j weight_j (t̂_j − t_j(x,z))², minimised by t̂ = E[t(x,z)|x] = t(x).

    ``mask`` [n] keeps the rows drawn at the θ where t was computed (others count as zero);
    ``weight`` [p] rescales the components (e.g. σ_θ² for standardised θ, or 1/Var(t) to be scale free).
    """
    squared = (t_hat - t_xz) ** 2
    if weight is not None:
        squared = squared * weight.to(squared.device)
    per_row = squared.sum(dim=1)
    if mask is not None:
        per_row = per_row * mask
    return per_row.mean()


def negative_log_likelihood(log_p_hat: torch.Tensor) -> torch.Tensor:
    """−log p̂(x|θ), the maximum-likelihood loss of NDE and the first term of SCANDAL."""
    return -log_p_hat.mean()
