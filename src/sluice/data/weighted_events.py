"""WeightedEvents: the joint ratio and score of weighted events in closed form, unweighting, and AugmentedData.

The particle-physics route (docs/morphing.md): an event generator gives each event z_i weights w_i(θ_b) at
the basis points of a ``Morphing``; only the parton-level factor depends on θ, so with
w_i(θ) = Σ_b a_b(θ) w_i(θ_b) and σ(θ) = Σ_b a_b(θ) σ(θ_b),

    log r(x_i,z_i|θ0,θ1) = log[w_i(θ0)/w_i(θ1)] − log[σ(θ0)/σ(θ1)]
    t(x_i,z_i|θ)         = ∇θ w_i(θ)/w_i(θ) − ∇θ σ(θ)/σ(θ)

(w_i(θ) = dσ(z_i|θ)/q(z_i) up to a constant, q the density the events were drawn from: it cancels).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ..seeding import spawn_seeds
from ..simulators.morphing import Morphing
from ..simulators.priors import check_prior, sample_prior
from .augmented import AugmentedData

__all__ = ["WeightedEvents", "Unweighted", "LowEffectiveSampleSizeWarning", "effective_sample_size"]

MAX_REJECTION_ROUNDS = 10_000


class LowEffectiveSampleSizeWarning(UserWarning):
    """The weighted sample holds few effective events at some θ: rows drawn there repeat the same events."""


def effective_sample_size(weights) -> float:
    """(Σ_i w_i)² / Σ_i w_i²: the number of equally weighted events that carry as much information."""
    weights = torch.as_tensor(weights, dtype=torch.float64)
    return float(weights.sum() ** 2 / (weights**2).sum())


@dataclass
class Unweighted:
    """Events drawn at θ from a weighted sample: their rows ``index`` [n] in it, ``x`` [n, d], and the
    ``effective_sample_size`` of the weights at θ (draws beyond it mostly repeat events)."""

    index: torch.Tensor
    x: torch.Tensor
    effective_sample_size: float


def _as_float64(name: str, value) -> torch.Tensor:
    tensor = torch.as_tensor(value.detach() if torch.is_tensor(value) else value, dtype=torch.float64)
    if not torch.isfinite(tensor).all():
        raise ValueError(f"WeightedEvents: {name} holds NaN or inf ({int((~torch.isfinite(tensor)).sum())} entries)")
    return tensor


class WeightedEvents:
    """Events ``x`` [n, d] with weights ``basis_weights`` [n, B] at the basis points of ``morphing``.

    Convention: Σ_i w_i(θ) estimates σ(θ) (the generator's convention; any common positive factor cancels).
    ``basis_cross_sections`` [B], σ(θ_b), defaults to Σ_i w_i(θ_b) over this sample; pass the generator's
    (or exact) values where known. Slices keep it, so joint quantities of a slice equal those of the whole.
    Methods return float64.

    Example::

        events = WeightedEvents(x, weights, Morphing(basis, degree=2, parameter_names=("c1", "c2")))
        data = events.augmented_data(sluice.priors.BoxUniform([-1, -1], [1, 1]), n=100_000)
        sluice.estimators.ALICES().fit(data)
    """

    def __init__(self, x, basis_weights, morphing: Morphing, basis_cross_sections=None):
        if not isinstance(morphing, Morphing):
            raise TypeError(f"WeightedEvents needs a sluice Morphing, got {type(morphing).__name__}")
        x = _as_float64("x", x)
        weights = _as_float64("basis_weights", basis_weights)
        if x.ndim < 2:
            raise ValueError(f"WeightedEvents: x must have shape [n, d], got {list(x.shape)}")
        if weights.shape != (x.shape[0], morphing.n_basis):
            raise ValueError(f"WeightedEvents: basis_weights must have shape [n_events, n_basis] = "
                             f"[{x.shape[0]}, {morphing.n_basis}], got {list(weights.shape)}")
        if basis_cross_sections is None:
            basis_cross_sections = weights.sum(dim=0)
        sigma = _as_float64("basis_cross_sections", basis_cross_sections).reshape(-1)
        if sigma.shape != (morphing.n_basis,) or not torch.all(sigma > 0):
            raise ValueError(f"WeightedEvents: basis_cross_sections must be {morphing.n_basis} positive numbers, "
                             f"σ(θ_b) at each basis point, got {sigma.tolist()}")
        self.x = x.to(torch.float32)
        self.basis_weights = weights
        self.morphing = morphing
        self.basis_cross_sections = sigma
        self._components = morphing.components(weights)  # f_m(z_i), [n, M]

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index) -> WeightedEvents:
        return WeightedEvents(self.x[index], self.basis_weights[index], self.morphing, self.basis_cross_sections)

    def _theta(self, theta) -> torch.Tensor:
        theta = self.morphing.theta_batch(theta)
        if theta.shape[0] not in (1, len(self)):
            raise ValueError(f"WeightedEvents: theta must have one row or one per event ({len(self)}), "
                             f"got {theta.shape[0]}")
        return theta

    def _one_theta(self, theta, user: str) -> torch.Tensor:
        theta = self.morphing.theta_batch(theta)
        if theta.shape[0] != 1:
            raise ValueError(f"{user} works at one θ; give theta of shape [{self.morphing.n_parameters}]")
        return theta

    # --- weights and joint quantities -------------------------------------------------------------------
    def weights(self, theta) -> torch.Tensor:
        """w_i(θ) [n]: ``theta`` [p] for every event, or [n, p], one θ per event; differentiable in θ."""
        return (self.morphing.monomials(self._theta(theta)) * self._components).sum(dim=1)

    def cross_section(self, theta) -> torch.Tensor:
        """σ(θ) = Σ_b a_b(θ) σ(θ_b) for each row of ``theta`` [G, p] (or [p]): shape [G]."""
        return self.morphing.weights(theta) @ self.basis_cross_sections

    def log_prob(self, theta) -> torch.Tensor:
        """log p(z_i|θ) + const = log w_i(θ) − log σ(θ): [n]. Raises where a weight is not positive."""
        theta = self._theta(theta)
        weights = self.weights(theta)
        bad = ~(weights > 0)
        if bad.any():
            first = int(bad.nonzero()[0, 0])
            raise ValueError(f"WeightedEvents: {int(bad.sum())} of {len(self)} events have weight ≤ 0 at θ (first: "
                             f"event {first}, weight {float(weights[first]):.3g}, θ = "
                             f"{theta[min(first, theta.shape[0] - 1)].tolist()}); log r and t need dσ(z|θ) > 0: θ "
                             f"lies where the morphed cross section is unphysical, or the sample has negative weights")
        return torch.log(weights) - torch.log(self.cross_section(theta))

    def joint_log_ratio(self, theta0, theta1) -> torch.Tensor:
        """log r(x_i,z_i|θ0,θ1) = log[w_i(θ0)/w_i(θ1)] − log[σ(θ0)/σ(θ1)]: [n]."""
        with torch.no_grad():
            return self.log_prob(theta0) - self.log_prob(theta1)

    def joint_score(self, theta) -> torch.Tensor:
        """t(x_i,z_i|θ) = ∇θ w_i(θ)/w_i(θ) − ∇θ σ(θ)/σ(θ): [n, p] (autograd through the morphing)."""
        theta = self._theta(theta).detach().expand(len(self), -1).clone().requires_grad_(True)
        with torch.enable_grad():
            (score,) = torch.autograd.grad(self.log_prob(theta).sum(), theta)
        return score

    def effective_sample_size(self, theta) -> float:
        """(Σ_i w_i(θ))² / Σ_i w_i(θ)² at one ``theta`` [p]."""
        with torch.no_grad():
            return effective_sample_size(self.weights(self._one_theta(theta, "effective_sample_size")))

    # --- unweighting ------------------------------------------------------------------------------------
    def unweight(self, theta, n: int, generator: torch.Generator | None = None) -> Unweighted:
        """n events drawn with replacement with probability w_i(θ)/Σ_j w_j(θ) at one ``theta`` [p]."""
        theta = self._one_theta(theta, "unweight")
        if isinstance(n, bool) or int(n) != n or n < 1:
            raise ValueError(f"unweight: n must be a positive whole number, got {n!r}")
        with torch.no_grad():
            weights = self.weights(theta)
        negative = weights < 0
        if negative.any():
            raise ValueError(f"unweight: {int(negative.sum())} of {len(self)} events have negative weight at θ = "
                             f"{theta[0].tolist()} (first: event {int(negative.nonzero()[0, 0])}); events cannot be "
                             f"drawn with negative probability")
        if not weights.sum() > 0:
            raise ValueError(f"unweight: every weight is zero at θ = {theta[0].tolist()}")
        uniforms = torch.rand(int(n), generator=generator, dtype=torch.float64)
        index = _inverse_cdf(weights, uniforms)
        return Unweighted(index, self.x[index], effective_sample_size(weights))

    def _draw_rows(self, theta: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """One event per row of ``theta`` [m, p], drawn with probability ∝ w_i(θ_row): rejection from the
        envelope u_i = Σ_m max_rows|c_m(θ)| · |f_m(z_i)| ≥ w_i(θ_row), so no [m, n] table is needed."""
        coefficients = self.morphing.monomials(theta)
        envelope = self._components.abs() @ coefficients.abs().max(dim=0).values
        index = torch.empty(theta.shape[0], dtype=torch.long)
        pending = torch.arange(theta.shape[0])
        for _ in range(MAX_REJECTION_ROUNDS):
            candidate = _inverse_cdf(envelope, torch.rand(pending.numel(), generator=generator, dtype=torch.float64))
            weight = (coefficients[pending] * self._components[candidate]).sum(dim=1)
            negative = weight < -1e-12 * envelope[candidate]  # below rounding: a truly negative weight
            if negative.any():
                k = int(negative.nonzero()[0, 0])
                raise ValueError(f"WeightedEvents: event {int(candidate[k])} has negative weight "
                                 f"{float(weight[k]):.3g} at θ = {theta[pending[k]].tolist()}; unweighting needs "
                                 f"w_i(θ) ≥ 0 wherever θ is drawn")
            accept = torch.rand(pending.numel(), generator=generator, dtype=torch.float64) * envelope[candidate] \
                < weight
            index[pending[accept]] = candidate[accept]
            pending = pending[~accept]
            if pending.numel() == 0:
                return index
        raise RuntimeError(f"WeightedEvents: {pending.numel()} rows still undrawn after {MAX_REJECTION_ROUNDS} "
                           "rejection rounds; the morphed weights are tiny against their envelope at those θ")

    def augmented_data(self, prior, n: int, reference=None, seed: int = 0,
                       min_effective_sample_size: float = 100.0) -> AugmentedData:
        """n rows of ``sluice.AugmentedData`` for any sluice estimator, as ``sluice.simulate`` lays them out:
        θ0 ~ prior, θ1 = ``reference`` or an independent prior draw, y alternating 0, 1, 0, …; x of row i
        is an event unweighted at the θ of its y (events are reused across rows); log r and both joint
        scores come from the weights. Warns with ``LowEffectiveSampleSizeWarning`` when the effective
        sample size at some of the rows' θ (the first 64 checked) is below ``min_effective_sample_size``."""
        p = self.morphing.n_parameters
        check_prior(prior, p)
        if isinstance(n, bool) or int(n) != n or n < 1:
            raise ValueError(f"augmented_data: n must be a positive whole number, got {n!r}")
        n = int(n)
        prior_seed, draw_seed, _ = spawn_seeds(seed, 0, count=3)
        draws = sample_prior(prior, n if reference is not None else 2 * n, prior_seed).to(torch.float64)
        theta0 = draws[:n]
        theta1 = self._one_theta(reference, "reference").expand(n, p).clone() if reference is not None else draws[n:]
        y = (torch.arange(n) % 2).to(torch.float64)
        theta = torch.where(y[:, None] == 0, theta0, theta1)
        with torch.no_grad():
            index = self._draw_rows(theta, torch.Generator().manual_seed(draw_seed))
        self._warn_if_sparse(theta[:64], min_effective_sample_size)
        rows = self[index]
        return AugmentedData(theta0=theta0, theta1=theta1, y=y, x=rows.x, log_r_xz=rows.joint_log_ratio(theta0, theta1),
                             t_xz0=rows.joint_score(theta0), t_xz1=rows.joint_score(theta1),
                             parameter_names=self.morphing.parameter_names, simulator_name="WeightedEvents")

    def _warn_if_sparse(self, thetas: torch.Tensor, minimum: float) -> None:
        with torch.no_grad():
            weights = self.morphing.monomials(thetas) @ self._components.T  # [k, n]
        sizes = weights.sum(dim=1) ** 2 / (weights**2).sum(dim=1)
        worst = int(sizes.argmin())
        if sizes[worst] < minimum:
            warnings.warn(f"WeightedEvents: the effective sample size is only {float(sizes[worst]):.0f} of "
                          f"{len(self)} events at θ = {thetas[worst].tolist()}; rows drawn there repeat a few events. "
                          f"Generate more events, or generate them nearer that θ", LowEffectiveSampleSizeWarning,
                          stacklevel=3)

    def __repr__(self) -> str:
        return f"WeightedEvents(n={len(self)}, x={list(self.x.shape[1:])}, morphing={self.morphing!r})"


def _inverse_cdf(weights: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Indices drawn with probability ∝ ``weights`` (non-negative) from ``uniforms`` in [0, 1)."""
    cumulative = torch.cumsum(weights, dim=0)
    index = torch.searchsorted(cumulative, uniforms * cumulative[-1], right=True)
    return index.clamp_max(weights.numel() - 1)
