"""Fisher information I(θ) = E_x[t(x|θ) t(x|θ)ᵀ], exact, from weighted events or from any estimator's score, for
N events; with the rate term of an extended likelihood and with nuisance parameters (profiled or projected).

For an extended likelihood (n ~ Poisson(ν(θ)) events, each with density p(x|θ)) the information is the shape
term times the expected count plus the rate term (docs/systematics.md):

    I(θ) = ν(θ) E[t tᵀ] + ∂ν ∂νᵀ / ν,        ν(θ) = luminosity · σ(θ),

and nuisance parameters α add their constraint's information (1/width² at α = 0) to the α block. With
θ = (θ_interest, α), ``FisherInformation.profiled()`` is the Schur complement I_θθ − I_θα I_αα⁻¹ I_αθ (what θ
can still be measured to when α is fitted too), ``projected()`` the θ block alone (α known).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from ..data.weighted_events import WeightedEvents
from .exact import ExactLikelihood

__all__ = ["FisherInformation", "fisher_information", "exact_fisher_information", "weighted_fisher_information",
           "rate_information"]


@dataclass
class FisherInformation:
    """``matrix`` [p, p] for ``n_events`` events; ``spread`` [p, p] across ensemble members (or None).

    ``parameter_names`` name the rows (when known) and ``nuisance_names`` those of them that are nuisance
    parameters, which ``profiled`` and ``projected`` remove by default.
    """

    matrix: torch.Tensor
    n_events: float
    spread: torch.Tensor | None = None
    monte_carlo_error: torch.Tensor | None = None
    parameter_names: tuple | None = None
    nuisance_names: tuple = field(default_factory=tuple)

    def cramer_rao(self) -> torch.Tensor:
        """The covariance bound I⁻¹ [p, p] of any unbiased estimator of θ from the ``n_events`` events."""
        return torch.linalg.inv(self.matrix)

    def standard_errors(self) -> torch.Tensor:
        """√diag(I⁻¹) [p]: the smallest standard error per parameter the events allow."""
        return self.cramer_rao().diagonal().sqrt()

    def _kept(self, keep) -> list[int]:
        """Row indices of ``keep`` (names or indices; by default every parameter that is not a nuisance)."""
        size = self.matrix.shape[0]
        names = self.parameter_names or tuple(range(size))
        if keep is None:
            if not self.nuisance_names:
                raise ValueError("FisherInformation: no nuisance parameters are named; say which parameters to keep")
            keep = [name for name in names if name not in self.nuisance_names]
        indices = []
        for item in keep:
            if isinstance(item, str):
                if item not in names:
                    raise ValueError(f"FisherInformation: unknown parameter {item!r}; the parameters are {list(names)}")
                indices.append(names.index(item))
            elif isinstance(item, int) and 0 <= item < size:
                indices.append(item)
            else:
                raise ValueError(f"FisherInformation: keep holds {item!r}, neither a parameter name nor an index "
                                 f"below {size}")
        if not indices or len(set(indices)) != len(indices):
            raise ValueError(f"FisherInformation: keep must name distinct parameters, got {list(keep)}")
        return indices

    def _subset(self, matrix: torch.Tensor, kept: list[int]) -> FisherInformation:
        names = tuple(self.parameter_names[i] for i in kept) if self.parameter_names else None
        nuisances = tuple(name for name in self.nuisance_names if names and name in names)
        return replace(self, matrix=matrix, spread=None, monte_carlo_error=None, parameter_names=names,
                       nuisance_names=nuisances)

    def projected(self, keep=None) -> FisherInformation:
        """The information on the ``keep`` parameters with the others held fixed (known): the block I_kk."""
        kept = self._kept(keep)
        index = torch.tensor(kept)
        return self._subset(self.matrix[index][:, index], kept)

    def profiled(self, keep=None) -> FisherInformation:
        """The information on the ``keep`` parameters with the others fitted as well: the Schur complement
        I_kk − I_kr I_rr⁻¹ I_rk over the rest r. Never larger than ``projected`` (their difference is positive
        semi-definite); equal where the rest is uncorrelated with the kept parameters."""
        kept = self._kept(keep)
        rest = [i for i in range(self.matrix.shape[0]) if i not in kept]
        index = torch.tensor(kept)
        block = self.matrix[index][:, index]
        if not rest:
            return self._subset(block, kept)
        others = torch.tensor(rest)
        matrix = self.matrix.to(torch.float64)
        cross = matrix[index][:, others]
        schur = matrix[index][:, index] - cross @ torch.linalg.solve(matrix[others][:, others], cross.T)
        return self._subset(schur.to(self.matrix.dtype), kept)


def _information(scores: torch.Tensor, n_events: float) -> tuple[torch.Tensor, torch.Tensor]:
    scores = scores.to(torch.float64)
    outer = scores[:, :, None] * scores[:, None, :]
    error = outer.std(dim=0) / outer.shape[0] ** 0.5
    return (n_events * outer.mean(dim=0)).to(torch.float32), (n_events * error).to(torch.float32)


def _check_luminosity(luminosity) -> float:
    luminosity = float(luminosity)
    if not (math.isfinite(luminosity) and luminosity > 0):
        raise ValueError(f"luminosity must be a positive finite number (events per unit cross section), got "
                         f"{luminosity}")
    return luminosity


def rate_information(cross_section, theta, luminosity: float) -> torch.Tensor:
    """The Poisson rate term ∂ν ∂νᵀ / ν = luminosity · ∂σ ∂σᵀ / σ at ``theta`` [P]: [P, P] float64.

    ``cross_section`` maps rows of θ [G, P] to σ [G], differentiably (``WeightedEvents.cross_section``,
    ``ParticleToy.cross_section``).

    >>> rate_information(lambda t: 2.0 + 3.0 * t[:, 0], torch.tensor([0.0]), luminosity=10.0)
    tensor([[45.]], dtype=torch.float64)
    """
    luminosity = _check_luminosity(luminosity)
    theta = torch.as_tensor(theta, dtype=torch.float64).reshape(1, -1).clone().requires_grad_(True)
    with torch.enable_grad():
        sigma = cross_section(theta).reshape(-1)[0]
        (gradient,) = torch.autograd.grad(sigma, theta)
    sigma, gradient = float(sigma.detach()), gradient[0]
    if not sigma > 0:
        raise ValueError(f"rate_information: σ(θ) = {sigma} at θ = {theta[0].tolist()}; the rate term needs σ > 0")
    return luminosity * gradient[:, None] * gradient[None, :] / sigma


def _expected_events(n_events, luminosity, cross_section, theta) -> float:
    """n_events, or ν = luminosity · σ(θ) when a luminosity is given (the rate term needs the cross section)."""
    if luminosity is None:
        return 1.0 if n_events is None else n_events
    if n_events is not None:
        raise ValueError("give n_events or luminosity, not both: with a luminosity the expected count is "
                         "ν = luminosity · σ(θ)")
    luminosity = _check_luminosity(luminosity)
    if cross_section is None:
        raise ValueError("a luminosity needs the cross section σ(θ) (cross_section=) for ν = luminosity · σ(θ)")
    with torch.no_grad():
        return luminosity * float(cross_section(torch.as_tensor(theta, dtype=torch.float64).reshape(1, -1))[0])


def _constraint_information(nuisances, theta: torch.Tensor) -> torch.Tensor:
    """diag(information_k(α_k)) on the last K rows [P, P]: the constraints of the K nuisances at the end of θ."""
    size, count = theta.numel(), len(nuisances)
    if count > size:
        raise ValueError(f"{count} nuisances for a parameter vector of {size}")
    information = torch.zeros(size, size, dtype=torch.float64)
    for k, nuisance in enumerate(nuisances):
        row = size - count + k
        information[row, row] = nuisance.information(float(theta[row]))
    return information


def fisher_information(estimator, x, theta, n_events: float | None = None, luminosity: float | None = None,
                       cross_section=None, nuisances=(), parameter_names=None) -> FisherInformation:
    """I(θ) ≈ n_events · mean_i t̂(x_i|θ) t̂(x_i|θ)ᵀ over a sample x drawn at θ (n_events defaults to 1).

    Works for every estimator with ``score`` (for SALLY, t̂(x) at its reference point, so draw x there) and
    for ensembles, whose members give the spread. ``monte_carlo_error`` is the standard error of the mean.

    Extended likelihood: with ``luminosity`` and ``cross_section`` (σ of rows of θ, differentiable) the events
    number ν = luminosity · σ(θ) and the rate term ∂ν ∂νᵀ/ν is added. ``nuisances`` (``Nuisance`` objects,
    the last K components of θ) add their constraints' information; ``parameter_names`` (default: the
    estimator's) name the rows, so ``profiled()`` and ``projected()`` know the nuisances.
    """
    theta = torch.as_tensor(theta, dtype=torch.float32).reshape(-1)
    events = _expected_events(n_events, luminosity, cross_section, theta)
    extra = torch.zeros(theta.numel(), theta.numel(), dtype=torch.float64)
    if luminosity is not None:
        extra = extra + rate_information(cross_section, theta, luminosity)
    if nuisances:
        extra = extra + _constraint_information(nuisances, theta.double())
    names = parameter_names if parameter_names is not None else getattr(estimator, "parameter_names_", None)
    labels = dict(parameter_names=tuple(names) if names is not None else None,
                  nuisance_names=tuple(nuisance.name for nuisance in nuisances))
    members = getattr(estimator, "estimators", None)
    if members:
        per_member = torch.stack([_information(m.score(x, theta), events)[0] for m in members]) + extra.float()
        return FisherInformation(per_member.mean(dim=0), events, per_member.std(dim=0) if len(members) > 1 else None,
                                 **labels)
    matrix, error = _information(estimator.score(x, theta), events)
    return FisherInformation(matrix + extra.float(), events, monte_carlo_error=error, **labels)


def weighted_fisher_information(events: WeightedEvents, theta, n_events: float | None = None,
                                luminosity: float | None = None) -> FisherInformation:
    """The truth-level I(θ) of a weighted sample from its joint scores (float64): the shape term
    n_events · Σ_i w_i(θ) t_i t_iᵀ / Σ_i w_i(θ) over the events (an expectation at θ, no unweighting), t the
    joint score over the full vector (θ, α) of ``events``, plus the nuisances' constraint information.
    With ``luminosity``, n_events = ν = luminosity · σ(θ, α) and the rate term ∂ν ∂νᵀ/ν is added.
    ``monte_carlo_error`` is the standard error of the weighted mean (from the weights' spread)."""
    theta = torch.as_tensor(theta, dtype=torch.float64).reshape(-1)
    expected = _expected_events(n_events, luminosity, events.cross_section, theta)
    with torch.no_grad():
        weights = events.weights(theta)
    if not torch.all(weights >= 0) or not weights.sum() > 0:
        raise ValueError(f"weighted_fisher_information: the weights at θ = {theta.tolist()} must be ≥ 0 and not all "
                         f"zero")
    probability = weights / weights.sum()
    scores = events.joint_score(theta)
    outer = scores[:, :, None] * scores[:, None, :]
    mean = (probability[:, None, None] * outer).sum(dim=0)
    error = ((probability[:, None, None] * (outer - mean)) ** 2).sum(dim=0).sqrt()
    matrix = expected * mean + _constraint_information(events.nuisances, theta)
    if luminosity is not None:
        matrix = matrix + rate_information(events.cross_section, theta, luminosity)
    return FisherInformation(matrix, expected, monte_carlo_error=expected * error,
                             parameter_names=events.parameter_names,
                             nuisance_names=tuple(nuisance.name for nuisance in events.nuisances))


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
