"""Posterior estimators: NPE (a conditional flow q(θ|x) by maximum likelihood) and AugmentedNPE (plus the score).

By Bayes, ∇θ log p(θ|x) = ∇θ log p(x|θ) + ∇θ log π(θ), and E[t(x,z|θ) | x, θ] = ∇θ log p(x|θ), so
t(x,z|θ) + ∇θ log π(θ) is an unbiased target for the posterior score. AugmentedNPE minimises

    −log q(θ|x) + α Σ_j w_j (∇θ_j log q(θ|x) − t_j(x,z|θ) − ∂_j log π(θ))²,

over pairs (θ, x) with θ ~ π and x ~ p(x|θ): ``data.theta`` (the θ that made x) and ``data.x`` from
``sluice.simulate(simulator, prior, n)`` with no ``reference`` (a reference point would make θ a mixture of
π and a point mass, not a prior draw). w_j = 1/Var(target_j) with ``scale_free`` (as in SCANDAL).

The posterior is for one observation x (a single simulator output), as in the sbi benchmarks: for several
iid events use a likelihood or ratio estimator, or ``log_ratio`` here summed over events (through the
inference layer), which divides out the prior per event.

Example::

    prior = sluice.priors.BoxUniform([-1.0, -1.0], [1.0, 1.0])
    data = sluice.simulate(sluice.simulators.GaussianMixture(), prior, 2000, seed=0)
    npe = AugmentedNPE().fit(data, prior=prior)
    samples = npe.sample(data.x[0], 1000)          # [1000, 2] draws of θ | x
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution

from ..data.augmented import AugmentedData
from ..seeding import seeded_global_generator
from ..simulators.priors import BoxUniform
from .base import Estimator, PotentialPredictions, ScoreTarget
from .likelihood import density_loss
from .networks import FlowLikelihood, Standardize

__all__ = ["NPE", "AugmentedNPE", "prior_score", "posterior_score_target"]


def prior_score(prior: Distribution | None, theta: torch.Tensor) -> torch.Tensor:
    """∇θ log π(θ) [n, p]: zero for None (a flat prior) and inside a BoxUniform, autograd otherwise."""
    if prior is None or isinstance(prior, BoxUniform):
        return torch.zeros_like(theta)
    theta = theta.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(prior.log_prob(theta).sum(), theta)
    return grad.detach()


def posterior_score_target(t_xz: torch.Tensor, theta: torch.Tensor, prior: Distribution | None) -> torch.Tensor:
    """t(x,z|θ) + ∇θ log π(θ) [n, p]: its mean given (x, θ) is the posterior score ∇θ log p(θ|x)."""
    return t_xz + prior_score(prior, theta)


class FlowPosterior(torch.nn.Module):
    """log q(θ|x) in θ's own units: a conditional flow on standardised θ with standardised x as context (the
    likelihood flow with the roles of x and θ swapped), and draws from it."""

    def __init__(self, theta_scale: Standardize, x_scale: Standardize, hidden, activation, transforms, flow):
        super().__init__()
        self.theta_scale, self.x_scale = theta_scale, x_scale
        self.density = FlowLikelihood(theta_scale, x_scale, hidden, activation, transforms, flow)

    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return self.density(theta, x)

    def sample(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """n draws [n, p] for one observation x [1, d]."""
        standard = self.density.flow(self.x_scale(x)[0]).sample((n,))
        return standard * self.theta_scale.std + self.theta_scale.mean


class NPE(Estimator):
    """Neural posterior estimation: minimise −log q(θ|x) over (θ, x) ~ π(θ) p(x|θ) (black box: x, θ).

    ``fit(data, prior=...)`` takes the prior the θ were drawn from: a BoxUniform's box truncates the samples
    (rejection of the mass the flow puts outside it) and is saved with the model; the prior's score enters the
    target of AugmentedNPE and its density enters ``log_ratio``. ``prior=None`` means a flat prior on R^p.
    ``flow``: "nsf" or "maf"; ``transforms``: the number of its transforms.
    """

    uses_score = False

    def __init__(self, flow: str = "nsf", transforms: int = 3, alpha: float = 1.0, scale_free: bool = True,
                 clip_score: float | None = 50.0, activation: str = "elu", batch_size: int = 256, **common):
        super().__init__(activation=activation, batch_size=batch_size, **common)
        self.flow = flow
        self.transforms = transforms
        self.alpha = alpha
        self.scale_free = scale_free
        self.clip_score = clip_score

    @property
    def requires(self):
        return ("theta0", "theta1", "y", "x") + (("t_xz0", "t_xz1") if self.uses_score else ())

    def fit(self, data: AugmentedData, epochs: int | None = None, batch_size: int | None = None,
            validation_fraction: float = 0.2, seed: int = 0, progress: bool | None = None,
            prior: Distribution | None = None):
        """Train on ``data`` simulated with θ ~ ``prior`` (see the class notes); returns self."""
        if prior is not None and not isinstance(prior, Distribution):
            raise TypeError(f"prior must be a torch Distribution or None, got {type(prior).__name__}")
        self.prior_ = prior
        return super().fit(data, epochs=epochs, batch_size=batch_size, validation_fraction=validation_fraction,
                           seed=seed, progress=progress)

    def _describe(self, data: AugmentedData) -> dict:
        if len(data) > 1 and torch.all(data.theta1 == data.theta1[:1]):
            raise ValueError(f"{type(self).__name__} needs θ drawn from the prior: simulate the data without a "
                             "reference point (every θ1 here is the same)")
        box = self.prior_ if isinstance(self.prior_, BoxUniform) else None
        return {"x": Standardize.fit(data.x).state_dict(), "theta": Standardize.fit(data.theta).state_dict(),
                "box": None if box is None else {"low": box.low.clone(), "high": box.high.clone()},
                "prior": "flat" if self.prior_ is None else "box" if box is not None else "other"}

    def _make_model(self, info: dict) -> FlowPosterior:
        theta_scale, x_scale = (Standardize(info[k]["mean"], info[k]["std"]) for k in ("theta", "x"))
        return FlowPosterior(theta_scale, x_scale, self.hidden, self.activation, self.transforms, self.flow)

    def _prepare(self, training: AugmentedData) -> None:
        if self.uses_score:
            target = posterior_score_target(training.t_xz, training.theta, self.prior_)
            self._target = ScoreTarget.from_training(target, self.model_.theta_scale.std, self.scale_free,
                                                     self.clip_score)

    def _tensors(self, data: AugmentedData) -> dict:
        tensors = {"x": data.x, "theta": data.theta}
        if self.uses_score:
            tensors["target"] = self._target.clip(posterior_score_target(data.t_xz, tensors["theta"], self.prior_))
        return tensors

    def _loss(self, batch: dict) -> torch.Tensor:
        target = batch["target"] if self.uses_score else None
        return density_loss(self.model_, batch["x"], batch["theta"], target, self.alpha,
                            self._target.weight if self.uses_score else None)

    def _restore(self, state: dict) -> None:
        self.prior_ = None
        if state["info"]["box"] is not None:
            self.prior_ = BoxUniform(state["info"]["box"]["low"], state["info"]["box"]["high"])

    # --- predictions ----------------------------------------------------------------------------------------
    def _outside(self, theta: torch.Tensor) -> torch.Tensor:
        if self.prior_ is None or self.info_["prior"] == "flat":
            return torch.zeros(theta.shape[0], dtype=torch.bool)
        inside = self.prior_.support.check(theta)
        return ~(inside.all(dim=-1) if inside.ndim > 1 else inside)

    def _log_prior(self, theta: torch.Tensor) -> torch.Tensor:
        if self.info_["prior"] == "flat":
            return torch.zeros(theta.shape[0])
        if self.prior_ is None:
            raise RuntimeError(f"{type(self).__name__} was fitted with a prior that is not saved with the model; "
                               "set estimator.prior_ = prior again after loading")
        return torch.zeros(theta.shape[0]) if isinstance(self.prior_, BoxUniform) else self.prior_.log_prob(theta)

    def log_prob(self, theta, x) -> torch.Tensor:
        """log q̂(θ|x) [n] for θ [n, p] or [p] and x [n, d] or one observation [d]; −inf outside the prior's
        support. Not renormalised for the flow's mass outside the support (``sample`` rejects it)."""
        x = torch.as_tensor(x, dtype=torch.float32)
        x = x[None] if x.ndim == 1 else x
        theta = torch.as_tensor(theta, dtype=torch.float32)
        theta = theta[None] if theta.ndim == 1 else theta
        if x.shape[0] == 1:
            x = x.expand(theta.shape[0], *x.shape[1:])
        x, theta = self._inputs(x, theta)
        with torch.no_grad():
            value = self._chunked(self.model_, x, theta)
        return torch.where(self._outside(theta), torch.full_like(value, float("-inf")), value)

    def sample(self, x, n: int, seed: int = 0, max_draws: int = 10_000_000) -> torch.Tensor:
        """n draws [n, p] of θ from q̂(θ|x) for one observation x [d] (or [1, d]), inside the prior's support
        (rejection); a RuntimeError if over ``max_draws`` draws are needed (the flow misses the support)."""
        self._require_fitted()
        x = torch.as_tensor(x, dtype=torch.float32).reshape(1, -1)
        kept, drawn, accepted = [], 0, 0
        with torch.no_grad(), seeded_global_generator(seed):
            while accepted < n:
                if drawn >= max_draws:
                    raise RuntimeError(f"{type(self).__name__}.sample: {accepted} of {drawn} draws fell inside the "
                                       "prior's support; the posterior estimate misses it")
                size = min(max(2 * (n - accepted), 1000), 1_000_000)
                draws = self.model_.sample(x, size)
                draws = draws[~self._outside(draws)]
                kept.append(draws)
                drawn, accepted = drawn + size, accepted + draws.shape[0]
        self.acceptance_ = accepted / drawn
        return torch.cat(kept)[:n]

    def log_ratio(self, x, theta0, theta1) -> torch.Tensor:
        """log r̂(x|θ0,θ1) = log q̂(θ0|x) − log q̂(θ1|x) − log π(θ0) + log π(θ1) [n] (Bayes' rule)."""
        _, theta0, theta1 = self._inputs(x, theta0, theta1)
        log_q = PotentialPredictions.log_ratio(self, x, theta0, theta1)
        return log_q - self._log_prior(theta0) + self._log_prior(theta1)

    def score(self, x, theta) -> torch.Tensor:
        """t̂(x|θ) = ∇θ log q̂(θ|x) − ∇θ log π(θ) [n, p]: the likelihood score implied by the posterior."""
        _, theta = self._inputs(x, theta)
        self._log_prior(theta[:1])  # a prior that is needed but was not saved: raise the explanation
        return PotentialPredictions.score(self, x, theta) - prior_score(self.prior_, theta)


class AugmentedNPE(NPE):
    """NPE plus α Σ_j w_j (∇θ_j log q̂(θ|x) − t_j(x,z|θ) − ∂_j log π(θ))², the score of the posterior."""

    uses_score = True
