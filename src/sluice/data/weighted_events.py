"""WeightedEvents: the joint ratio and score of weighted events in closed form, unweighting, and AugmentedData.

The particle-physics route (docs/morphing.md): an event generator gives each event z_i weights w_i(θ_b) at
the basis points of a ``Morphing``; only the parton-level factor depends on θ, so with
w_i(θ) = Σ_b a_b(θ) w_i(θ_b) and σ(θ) = Σ_b a_b(θ) σ(θ_b),

    log r(x_i,z_i|θ0,θ1) = log[w_i(θ0)/w_i(θ1)] − log[σ(θ0)/σ(θ1)]
    t(x_i,z_i|θ)         = ∇θ w_i(θ)/w_i(θ) − ∇θ σ(θ)/σ(θ)

(w_i(θ) = dσ(z_i|θ)/q(z_i) up to a constant, q the density the events were drawn from: it cancels).

Systematic uncertainties (docs/systematics.md) add nuisance parameters α, each with a constraint
(``sluice.simulators.systematics.Nuisance``). A "gaussian" nuisance comes with event weights at α = ∓1
(``variations``), turned into per-event factors with HistFactory's code4 (smooth at α = 0, positive, exact
at α = ±1); a "lognormal" one scales every weight by η = 1 + α. With F_ib(α) = Π_k f(α_k; down_ibk/w_ib,
up_ibk/w_ib) and the normalisation over the whole sample,

    w_i(θ, α) = Σ_b a_b(θ) w_ib F_ib(α) · Π_lognormal (1 + α_k)
    σ(θ, α)   = Σ_b a_b(θ) σ(θ_b) [Σ_i w_ib F_ib(α) / Σ_i w_ib] · Π_lognormal (1 + α_k)

and log r, t over the full vector (θ, α) follow as above. At α = 0 every quantity equals the nuisance-free one.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ..seeding import spawn_seeds
from ..simulators.morphing import Morphing
from ..simulators.priors import check_prior, sample_prior
from .augmented import AugmentedData
from .event_systematics import _as_float64, _Systematics

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


class WeightedEvents:
    """Events ``x`` [n, d] with weights ``basis_weights`` [n, B] at the basis points of ``morphing``.

    Convention: Σ_i w_i(θ) estimates σ(θ) (the generator's convention; any common positive factor cancels).
    ``basis_cross_sections`` [B], σ(θ_b), defaults to Σ_i w_i(θ_b) over this sample; pass the generator's
    (or exact) values where known. Slices keep it, so joint quantities of a slice equal those of the whole.
    Methods return float64.

    Systematics (docs/systematics.md): ``nuisances``, a sequence of ``Nuisance`` (each a name with its
    constraint), and ``variations``, ``{name: (down, up)}`` with the event weights at α = −1 and +1 of each
    "gaussian" nuisance, each [n] (at the point ``variations_at``, [p], by default the first basis point: the
    per-event ratio to the nominal weight there is used at every θ) or [n, B] (at every basis point). A
    "lognormal" nuisance needs no variations: it scales every weight, so σ, by 1 + α. With nuisances every θ
    argument is the full vector (θ, α), [p + K], in the order of ``parameter_names``.

    Example::

        events = WeightedEvents(x, weights, Morphing(basis, degree=2, parameter_names=("c1", "c2")))
        data = events.augmented_data(sluice.priors.BoxUniform([-1, -1], [1, 1]), n=100_000)
        sluice.estimators.ALICES().fit(data)
    """

    def __init__(self, x, basis_weights, morphing: Morphing, basis_cross_sections=None, nuisances=(),
                 variations=None, variations_at=None):
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
        self._systematics = _Systematics.build(nuisances, variations, variations_at, weights, morphing) \
            if (nuisances or variations) else None

    # --- the parameters -----------------------------------------------------------------------------------
    @property
    def nuisances(self) -> tuple:
        """The ``Nuisance`` objects, in the order their α follow θ in the parameter vector (empty without)."""
        return self._systematics.nuisances if self._systematics else ()

    @property
    def parameter_names(self) -> tuple:
        """The names of θ (the morphing's) followed by those of the nuisance parameters."""
        return tuple(self.morphing.parameter_names) + tuple(nuisance.name for nuisance in self.nuisances)

    @property
    def n_parameters(self) -> int:
        return self.morphing.n_parameters + len(self.nuisances)

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index) -> WeightedEvents:
        sliced = WeightedEvents(self.x[index], self.basis_weights[index], self.morphing, self.basis_cross_sections)
        if self._systematics is not None:
            rows = torch.arange(len(self))[index]  # any index numpy-style, as one tensor of rows
            sliced._systematics = self._systematics.select(rows)
        return sliced

    def _batch(self, theta) -> torch.Tensor:
        """``theta`` as float64 [G, p + K] (a vector becomes one row); keeps an autograd graph."""
        if self._systematics is None:
            return self.morphing.theta_batch(theta)
        if not (torch.is_tensor(theta) and theta.dtype == torch.float64):
            theta = torch.as_tensor(theta, dtype=torch.float64)
        if theta.ndim == 1:
            theta = theta[None]
        size = self.n_parameters
        if theta.ndim != 2 or theta.shape[1] != size:
            raise ValueError(f"WeightedEvents: theta must have shape [n, {size}] or [{size}], the parameters "
                             f"{list(self.parameter_names)} (θ, then the nuisance parameters), got {list(theta.shape)}")
        return theta

    def _theta(self, theta) -> torch.Tensor:
        theta = self._batch(theta)
        if theta.shape[0] not in (1, len(self)):
            raise ValueError(f"WeightedEvents: theta must have one row or one per event ({len(self)}), "
                             f"got {theta.shape[0]}")
        return theta

    def _one_theta(self, theta, user: str) -> torch.Tensor:
        theta = self._batch(theta)
        if theta.shape[0] != 1:
            raise ValueError(f"{user} works at one θ; give theta of shape [{self.n_parameters}]")
        return theta

    def _split(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.morphing.n_parameters
        return theta[:, :p], theta[:, p:]

    # --- weights and joint quantities -------------------------------------------------------------------
    def weights(self, theta) -> torch.Tensor:
        """w_i(θ) [n] (w_i(θ, α) with nuisances): ``theta`` [P] for every event, or [n, P], one per event;
        differentiable in θ and α."""
        theta = self._theta(theta)
        if self._systematics is None:
            return (self.morphing.monomials(theta) * self._components).sum(dim=1)
        return self._varied_weights(*self._split(theta))

    def _varied_weights(self, theta: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        nominal = (self.morphing.monomials(theta) * self._components).sum(dim=1)
        return self._systematics.varied_weights(nominal, self.morphing.weights(theta), self.basis_weights, alpha)

    def cross_section(self, theta) -> torch.Tensor:
        """σ(θ) = Σ_b a_b(θ) σ(θ_b) for each row of ``theta`` [G, P] (or [P]): shape [G]. With nuisances,
        σ(θ, α), its dependence on α normalised over the whole sample (module docstring); differentiable in
        θ and α, with exact first and second derivatives (Hessians through autograd or torch.func are exact)."""
        theta = self._batch(theta)
        if self._systematics is None:
            return self.morphing.weights(theta) @ self.basis_cross_sections
        return self._varied_cross_section(*self._split(theta))

    def _varied_cross_section(self, theta: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        morphing_weights = self.morphing.weights(theta)
        nominal = morphing_weights @ self.basis_cross_sections
        return self._systematics.varied_cross_section(nominal, morphing_weights, self.basis_cross_sections, alpha)

    def log_constraint(self, theta) -> torch.Tensor:
        """Σ_k log c_k(α_k), the nuisances' constraint terms, for each row of ``theta`` [G, P]: [G] (zeros
        without nuisances). Add it to the log-likelihood to profile or marginalise the nuisances."""
        theta = self._batch(theta)
        total = torch.zeros(theta.shape[0], dtype=torch.float64)
        _, alpha = self._split(theta)
        for k, nuisance in enumerate(self.nuisances):
            total = total + nuisance.log_constraint(alpha[:, k])
        return total

    def log_prob(self, theta) -> torch.Tensor:
        """log p(z_i|θ) + const = log w_i(θ) − log σ(θ): [n]. Raises where a weight is not positive."""
        theta = self._theta(theta)
        if self._systematics is None:
            weights, sigma = self.weights(theta), None
        else:  # one slice of θ feeds both, so autograd sums its terms as without nuisances (bit for bit at α = 0)
            parameters, alpha = self._split(theta)
            weights, sigma = self._varied_weights(parameters, alpha), self._varied_cross_section(parameters, alpha)
        bad = ~(weights > 0)
        if bad.any():
            first = int(bad.nonzero()[0, 0])
            raise ValueError(f"WeightedEvents: {int(bad.sum())} of {len(self)} events have weight ≤ 0 at θ (first: "
                             f"event {first}, weight {float(weights[first]):.3g}, θ = "
                             f"{theta[min(first, theta.shape[0] - 1)].tolist()}); log r and t need dσ(z|θ) > 0: θ "
                             f"lies where the morphed cross section is unphysical, or the sample has negative weights")
        return torch.log(weights) - torch.log(self.cross_section(theta) if sigma is None else sigma)

    def joint_log_ratio(self, theta0, theta1) -> torch.Tensor:
        """log r(x_i,z_i|θ0,θ1) = log[w_i(θ0)/w_i(θ1)] − log[σ(θ0)/σ(θ1)]: [n]."""
        with torch.no_grad():
            return self.log_prob(theta0) - self.log_prob(theta1)

    def joint_score(self, theta) -> torch.Tensor:
        """t(x_i,z_i|θ) = ∇θ w_i(θ)/w_i(θ) − ∇θ σ(θ)/σ(θ): [n, P] (autograd through the morphing and, with
        nuisances, through the interpolation: the full vector (θ, α))."""
        theta = self._theta(theta).detach().expand(len(self), -1).clone().requires_grad_(True)
        with torch.enable_grad():
            (score,) = torch.autograd.grad(self.log_prob(theta).sum(), theta)
        return score

    def effective_sample_size(self, theta) -> float:
        """(Σ_i w_i(θ))² / Σ_i w_i(θ)² at one ``theta`` [P]."""
        with torch.no_grad():
            return effective_sample_size(self.weights(self._one_theta(theta, "effective_sample_size")))

    # --- unweighting ------------------------------------------------------------------------------------
    def unweight(self, theta, n: int, generator: torch.Generator | None = None) -> Unweighted:
        """n events drawn with replacement with probability w_i(θ)/Σ_j w_j(θ) at one ``theta`` [P]."""
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

    def _envelope(self, theta: torch.Tensor) -> torch.Tensor:
        """u_i ≥ |w_i(θ_row)| for every row of ``theta`` [m, P]: Σ_m max_rows|c_m(θ)| · |f_m(z_i)|, and with
        nuisances Σ_b max_rows|a_b(θ)| · |w_ib| · Π_k (bound of f_ibk over the rows' α_k) · max_rows|Π(1 + α_k)|."""
        if self._systematics is None:
            coefficients = self.morphing.monomials(theta)
            return self._components.abs() @ coefficients.abs().max(dim=0).values
        theta, alpha = self._split(theta)
        return self._systematics.envelope(self.morphing.weights(theta), self.basis_weights, alpha)

    def _weights_of(self, events: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """w of event ``events[j]`` at row j of ``theta`` [m, P]: [m]."""
        if self._systematics is None:
            return (self.morphing.monomials(theta) * self._components[events]).sum(dim=1)
        theta, alpha = self._split(theta)
        nominal = (self.morphing.monomials(theta) * self._components[events]).sum(dim=1)
        return self._systematics.select(events).varied_weights(nominal, self.morphing.weights(theta),
                                                               self.basis_weights[events], alpha)

    def _weight_table(self, thetas: torch.Tensor) -> torch.Tensor:
        """w_i at each row of ``thetas`` [k, P]: [k, n] (for a few rows: k × n values at once)."""
        if self._systematics is None:
            return self.morphing.monomials(thetas) @ self._components.T
        theta, alpha = self._split(thetas)
        nominal = self.morphing.monomials(theta) @ self._components.T
        return self._systematics.varied_weights(nominal, self.morphing.weights(theta)[:, None, :],
                                                self.basis_weights, alpha[:, None, :])

    def _draw_rows(self, theta: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """One event per row of ``theta`` [m, P], drawn with probability ∝ w_i(θ_row): rejection from an
        envelope u_i ≥ w_i(θ_row) for every row (``_envelope``), so no [m, n] table is needed."""
        envelope = self._envelope(theta)
        index = torch.empty(theta.shape[0], dtype=torch.long)
        pending = torch.arange(theta.shape[0])
        for _ in range(MAX_REJECTION_ROUNDS):
            candidate = _inverse_cdf(envelope, torch.rand(pending.numel(), generator=generator, dtype=torch.float64))
            weight = self._weights_of(candidate, theta[pending])
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
                       min_effective_sample_size: float = 100.0, nuisance_draws: int = 256) -> AugmentedData:
        """n rows of ``sluice.AugmentedData`` for any sluice estimator, as ``sluice.simulate`` lays them out:
        θ0 ~ prior, θ1 = ``reference`` or an independent prior draw, y alternating 0, 1, 0, …; x of row i
        is an event unweighted at the θ of its y (events are reused across rows); log r and both joint
        scores come from the weights. Warns with ``LowEffectiveSampleSizeWarning`` when the effective
        sample size at some of the rows' θ (the first 64 checked) is below ``min_effective_sample_size``.

        With nuisances the rows' parameters are the full vector (θ, α): ``prior`` is over θ, [p] (each row's
        α then comes from a pool of ``nuisance_draws`` draws from the constraints: σ(θ, α) costs one pass
        over the events per distinct α, while its θ-dependence is free), or over the full vector, [p + K]
        (e.g. a ``Point`` for SALLY); ``reference`` is [p] (at α = 0) or [p + K]."""
        p, size = self.morphing.n_parameters, self.n_parameters
        full_prior = self._systematics is not None and tuple(prior.event_shape) == (size,)
        check_prior(prior, size if full_prior else p)
        if isinstance(n, bool) or int(n) != n or n < 1:
            raise ValueError(f"augmented_data: n must be a positive whole number, got {n!r}")
        n = int(n)
        prior_seed, draw_seed, nuisance_seed = spawn_seeds(seed, 0, count=3)
        draws = sample_prior(prior, n if reference is not None else 2 * n, prior_seed).to(torch.float64)
        if self._systematics is not None:
            draws = self._with_nuisances(draws, full_prior, nuisance_draws, nuisance_seed)
        theta0 = draws[:n]
        theta1 = self._reference(reference).expand(n, size).clone() if reference is not None else draws[n:]
        y = (torch.arange(n) % 2).to(torch.float64)
        theta = torch.where(y[:, None] == 0, theta0, theta1)
        with torch.no_grad():
            index = self._draw_rows(theta, torch.Generator().manual_seed(draw_seed))
        self._warn_if_sparse(theta[:64], min_effective_sample_size)
        rows = self[index]
        return AugmentedData(theta0=theta0, theta1=theta1, y=y, x=rows.x, log_r_xz=rows.joint_log_ratio(theta0, theta1),
                             t_xz0=rows.joint_score(theta0), t_xz1=rows.joint_score(theta1),
                             parameter_names=self.parameter_names, simulator_name="WeightedEvents")

    def _reference(self, reference) -> torch.Tensor:
        """The reference as one full row; a θ-only reference [p] sits at α = 0."""
        if self._systematics is not None:
            reference = torch.as_tensor(reference, dtype=torch.float64).reshape(-1)
            if reference.numel() == self.morphing.n_parameters:
                reference = torch.cat([reference, torch.zeros(len(self.nuisances), dtype=torch.float64)])
        return self._one_theta(reference, "reference")

    def _with_nuisances(self, draws: torch.Tensor, full_prior: bool, pool_size: int, seed: int) -> torch.Tensor:
        """Rows (θ, α): α from a pool of ``pool_size`` vectors (the constraints' draws, or the α part of the
        full prior's first draws), each row taking one at random; α rounded to float32 as AugmentedData keeps it."""
        if isinstance(pool_size, bool) or int(pool_size) != pool_size or pool_size < 1:
            raise ValueError(f"augmented_data: nuisance_draws must be a positive whole number, got {pool_size!r}")
        p, rows = self.morphing.n_parameters, draws.shape[0]
        generator = torch.Generator().manual_seed(seed)
        pool_size = min(int(pool_size), rows)
        if full_prior:
            theta, pool = draws[:, :p], draws[:pool_size, p:]
        else:
            theta = draws
            pool = torch.stack([nuisance.sample(pool_size, generator) for nuisance in self.nuisances], dim=1)
        pool = pool.to(torch.float32).to(torch.float64)
        choice = torch.randint(pool_size, (rows,), generator=generator)
        return torch.cat([theta, pool[choice]], dim=1)

    def _warn_if_sparse(self, thetas: torch.Tensor, minimum: float) -> None:
        with torch.no_grad():
            weights = self._weight_table(thetas)  # [k, n]
        sizes = weights.sum(dim=1) ** 2 / (weights**2).sum(dim=1)
        worst = int(sizes.argmin())
        if sizes[worst] < minimum:
            warnings.warn(f"WeightedEvents: the effective sample size is only {float(sizes[worst]):.0f} of "
                          f"{len(self)} events at θ = {thetas[worst].tolist()}; rows drawn there repeat a few events. "
                          f"Generate more events, or generate them nearer that θ", LowEffectiveSampleSizeWarning,
                          stacklevel=3)

    def __repr__(self) -> str:
        nuisances = f", nuisances={[nuisance.name for nuisance in self.nuisances]}" if self.nuisances else ""
        return f"WeightedEvents(n={len(self)}, x={list(self.x.shape[1:])}, morphing={self.morphing!r}{nuisances})"


def _inverse_cdf(weights: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Indices drawn with probability ∝ ``weights`` (non-negative) from ``uniforms`` in [0, 1)."""
    cumulative = torch.cumsum(weights, dim=0)
    index = torch.searchsorted(cumulative, uniforms * cumulative[-1], right=True)
    return index.clamp_max(weights.numel() - 1)
