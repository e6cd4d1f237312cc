"""Fisher information I(θ) = E_x[t(x|θ) t(x|θ)ᵀ], exact or from any estimator's score, for N events."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .exact import ExactLikelihood

__all__ = ["FisherInformation", "fisher_information", "exact_fisher_information"]


@dataclass
class FisherInformation:
    """``matrix`` [p, p] for ``n_events`` events; ``spread`` [p, p] across ensemble members (or None)."""

    matrix: torch.Tensor
    n_events: float
    spread: torch.Tensor | None = None
    monte_carlo_error: torch.Tensor | None = None

    def cramer_rao(self) -> torch.Tensor:
        """The covariance bound I⁻¹ [p, p] of any unbiased estimator of θ from the ``n_events`` events."""
        return torch.linalg.inv(self.matrix)

    def standard_errors(self) -> torch.Tensor:
        """√diag(I⁻¹) [p]: the smallest standard error per parameter the events allow."""
        return self.cramer_rao().diagonal().sqrt()


def _information(scores: torch.Tensor, n_events: float) -> tuple[torch.Tensor, torch.Tensor]:
    scores = scores.to(torch.float64)
    outer = scores[:, :, None] * scores[:, None, :]
    error = outer.std(dim=0) / outer.shape[0] ** 0.5
    return (n_events * outer.mean(dim=0)).to(torch.float32), (n_events * error).to(torch.float32)


def fisher_information(estimator, x, theta, n_events: float = 1.0) -> FisherInformation:
    """I(θ) ≈ n_events · mean_i t̂(x_i|θ) t̂(x_i|θ)ᵀ over a sample x drawn at θ.

    Works for every estimator with ``score`` (for SALLY, t̂(x) at its reference point, so draw x there) and
    for ensembles, whose members give the spread. ``monte_carlo_error`` is the standard error of the mean.
    """
    theta = torch.as_tensor(theta, dtype=torch.float32).reshape(-1)
    members = getattr(estimator, "estimators", None)
    if members:
        per_member = torch.stack([_information(m.score(x, theta), n_events)[0] for m in members])
        return FisherInformation(per_member.mean(dim=0), n_events, per_member.std(dim=0) if len(members) > 1 else None)
    matrix, error = _information(estimator.score(x, theta), n_events)
    return FisherInformation(matrix, n_events, monte_carlo_error=error)


def exact_fisher_information(simulator, theta, n_events: float = 1.0, n_samples: int = 100_000,
                             seed: int = 0) -> FisherInformation:
    """The exact I(θ) of a simulator with ``log_likelihood``: the score by autograd, averaged over a sample at θ
    (or summed over the support, exactly, for simulators that give ``probabilities``)."""
    theta = torch.as_tensor(theta, dtype=torch.float32).reshape(-1)
    exact = ExactLikelihood(simulator)
    if hasattr(simulator, "probabilities"):
        probability = simulator.probabilities(theta.double()[None])[0]
        support = torch.nonzero(probability > 0).flatten()
        scores = exact.score(support.float()[:, None], theta).double()
        outer = scores[:, :, None] * scores[:, None, :]
        matrix = (probability[support, None, None] * outer).sum(dim=0)
        exact_sum = (n_events * matrix).float()
        return FisherInformation(exact_sum, n_events, monte_carlo_error=torch.zeros_like(exact_sum))
    with torch.no_grad():
        x, _ = simulator.sample(theta.expand(n_samples, -1), generator=torch.Generator().manual_seed(seed))
    matrix, error = _information(exact.score(x, theta), n_events)
    return FisherInformation(matrix, n_events, monte_carlo_error=error)
