"""Posterior estimators: NPE (a conditional flow q(θ|x) by maximum likelihood) and AugmentedNPE (plus the score).

By Bayes, ∇θ log p(θ|x) = ∇θ log p(x|θ) + ∇θ log π(θ), and E[t(x,z|θ) | x, θ] = ∇θ log p(x|θ), so
t(x,z|θ) + ∇θ log π(θ) is an unbiased target for the posterior score. AugmentedNPE minimises

    −log q(θ|x) + α Σ_j w_j (∇θ_j log q(θ|x) − t_j(x,z|θ) − ∂_j log π(θ))²,

over pairs (θ, x) with θ ~ π and x ~ p(x|θ): ``data.theta`` (the θ that made x) and ``data.x`` from
``sluice.simulate(simulator, prior, n)`` with no ``reference`` (a reference point would make θ a mixture of
π and a point mass, not a prior draw). w_j = 1/Var(target_j) with ``scale_free`` (as in SCANDAL).

The posterior is for one observation x (a single simulator output), as in the sbi benchmarks: for several
iid events use a likelihood or ratio estimator, or ``log_ratio`` here summed over events (through the
inference layer), which divides out the prior per event; or let one observation hold all its trials, x [m, d],
and give NPE ``embedding="set"`` (or "masked_set" with ``embeddings.pad_trials`` for a number of trials that
varies), which learns q̂(θ | x_1, …, x_m) for every m seen in training.

"""

from __future__ import annotations

import warnings
from functools import partial

import torch
from torch.distributions import Distribution

from ..data.augmented import AugmentedData
from ..seeding import seeded_global_generator
from ..simulators.priors import BoxUniform
from .base import Estimator, PotentialPredictions
from .embeddings import EmbeddingOptions, embed
from .likelihood import density_loss
from .networks import FlowLikelihood, Standardize
from .score_term import ScoreTermOptions

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
    likelihood flow with the roles of x and θ swapped), and draws from it.

    With an ``embedding`` (x [n, ...] → [n, k], trained with the flow), the context is embedding(x) instead of
    the standardised x: q(θ | embedding(x)). ``x_scale`` is then None."""

    def __init__(self, theta_scale: Standardize, x_scale: Standardize | None, hidden, activation, transforms, flow,
                 embedding: torch.nn.Module | None = None, n_features: int | None = None):
        super().__init__()
        self.theta_scale, self.x_scale = theta_scale, x_scale
        self.embedding = embedding
        # the flow's context: standardised x, or the features as they are (an identity standardisation)
        context = x_scale if embedding is None else Standardize(torch.zeros(n_features), torch.ones(n_features))
        self.density = FlowLikelihood(theta_scale, context, hidden, activation, transforms, flow)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """What the flow is conditioned on, [n, d] or [n, k]: x itself (the flow standardises it) or its features."""
        return x if self.embedding is None else embed(self.embedding, x)

    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return self.density(theta, self.context(x))

    def sample(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """n draws [n, p] for one observation x [1, ...]."""
        standard = self.density.flow(self.density.theta_scale(self.context(x))[0]).sample((n,))
        return standard * self.theta_scale.std + self.theta_scale.mean


class NPE(ScoreTermOptions, EmbeddingOptions, Estimator):
    """Neural posterior estimation, black box (Papamakarios & Murray, arXiv:1605.06376; Greenberg et al. 2019):

        L = −E[log q̂(θ | x)]   over (θ, x) ~ π(θ) p(x|θ),

    minimised by q̂ = p(θ|x). ``fit(data, prior=...)`` takes the prior the θ were drawn from: a BoxUniform's box
    truncates the samples (rejection of the mass the flow puts outside it) and is saved with the model; the
    prior's score enters the target of AugmentedNPE and its density enters ``log_ratio``. ``prior="flat"``
    means a flat prior on R^p (no truncation, no prior term); leaving ``prior`` out means the same, with a
    UserWarning, since it is seldom what was meant.

    Arguments (x [n, d], θ [n, p]): ``flow`` ("nsf" or "maf") and ``transforms`` (3), the conditional flow on θ
    with x as context; ``embedding`` (None): a network e(x) [n, k] trained with the flow, which is then
    q̂(θ | e(x)), for x that is not a flat vector: a built-in name ("mlp", "set" for x [n, m, d] of m i.i.d.
    trials, "masked_set" for a varying number of trials padded by ``embeddings.pad_trials``, "conv1d", "conv2d";
    ``embeddings``) or the user's ``torch.nn.Module`` (load such a model with ``NPE.load(path,
    embedding=module)``); ``activation`` ("elu"), ``batch_size`` (256) and the training arguments of
    ``Estimator``. ``alpha``, ``scale_free``, ``clip_score`` belong to AugmentedNPE; NPE ignores them with a
    warning.

    >>> import sluice, torch
    >>> simulator = sluice.simulators.GaussianMixture()               # x [n, 2], θ = (a, b)
    >>> prior = simulator.default_prior()
    >>> data = sluice.simulate(simulator, prior, n=1000, seed=0)
    >>> npe = sluice.estimators.NPE().fit(data, epochs=2, prior=prior)
    >>> npe.sample(data.x[0], 100, seed=0).shape                      # θ ~ q̂(θ | x), [n, p]
    torch.Size([100, 2])
    """

    no_score_reason = "it has no score term (AugmentedNPE has)"

    def __init__(self, flow: str = "nsf", transforms: int = 3, alpha: float = 1.0, scale_free: bool = True,
                 clip_score: float | None = 50.0, activation: str = "elu", batch_size: int = 256, embedding=None,
                 **common):
        super().__init__(activation=activation, batch_size=batch_size, **common)
        self._init_embedding(embedding)
        self.flow = flow
        self.transforms = transforms
        self._init_score_term(alpha, scale_free, clip_score)

    def fit(self, data: AugmentedData, epochs: int | None = None, batch_size: int | None = None,
            validation_fraction: float = 0.2, seed: int = 0, progress: bool | None = None,
            prior: Distribution | str | None = None):
        """Train on ``data`` simulated with θ ~ ``prior`` (a torch Distribution, or "flat"; see the class notes);
        returns self. Without ``prior`` the prior is taken as flat on R^p, with a UserWarning."""
        if prior is None:
            warnings.warn(f"{type(self).__name__}.fit without prior=: the prior is taken as flat on R^p, so samples "
                          "are not kept inside the prior's support and log_ratio and score subtract no prior term. "
                          "Pass the prior the θ were drawn from, fit(data, prior=prior) (e.g. "
                          "simulator.default_prior()), or prior='flat' to mean a flat prior", UserWarning, stacklevel=2)
        elif prior == "flat":
            prior = None
        elif not isinstance(prior, Distribution):
            raise TypeError(f"prior must be a torch Distribution or 'flat', got {type(prior).__name__}")
        self.prior_ = prior
        return super().fit(data, epochs=epochs, batch_size=batch_size, validation_fraction=validation_fraction,
                           seed=seed, progress=progress)

    def _describe(self, data: AugmentedData) -> dict:
        if len(data) > 1 and torch.all(data.theta1 == data.theta1[:1]):
            raise ValueError(f"{type(self).__name__} needs θ drawn from the prior: simulate the data without a "
                             "reference point (every θ1 here is the same)")
        box = self.prior_ if isinstance(self.prior_, BoxUniform) else None
        embedding = self._describe_embedding(data.x)
        return {"x": None if embedding is not None else Standardize.fit(data.x).state_dict(),
                "embedding": embedding, "x_shape": list(data.x.shape[1:]),
                "theta": Standardize.fit(data.theta).state_dict(),
                "box": None if box is None else {"low": box.low.clone(), "high": box.high.clone()},
                "prior": "flat" if self.prior_ is None else "box" if box is not None else "other"}

    def _make_model(self, info: dict) -> FlowPosterior:
        theta_scale = Standardize(info["theta"]["mean"], info["theta"]["std"])
        if info.get("embedding") is not None:
            embedding, width = self._make_embedding(info["embedding"])
            return FlowPosterior(theta_scale, None, self.hidden, self.activation, self.transforms, self.flow,
                                 embedding, width)
        x_scale = Standardize(info["x"]["mean"], info["x"]["std"])
        return FlowPosterior(theta_scale, x_scale, self.hidden, self.activation, self.transforms, self.flow)

    def _score_shift(self):
        """The posterior-score target adds the prior's score: t(x,z|θ) + ∇θ log π(θ)."""
        return partial(prior_score, self.prior_)

    def _main_tensors(self, data: AugmentedData) -> dict:
        return {"x": data.x, "theta": data.theta}

    def _loss(self, batch: dict) -> torch.Tensor:
        return density_loss(self.model_, batch["x"], batch["theta"], self.score_term_, batch.get("score_target"))

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

    def _observations(self, x) -> torch.Tensor:
        """x as float32 [n, ...]: one observation, shaped like a row of the training x, gets a leading axis."""
        x = torch.as_tensor(x, dtype=torch.float32)
        row_ndim = len(self.info_.get("x_shape", [0]))  # models saved before x_shape: x [n, d]
        return x[None] if x.ndim == row_ndim else x

    def log_prob(self, theta, x) -> torch.Tensor:
        """log q̂(θ|x) [n] for θ [n, p] or [p] and x [n, d] or one observation [d] (with an embedding: x [n, ...]
        or one observation shaped like a row of the training x); −inf outside the prior's support. Not
        renormalised for the flow's mass outside the support (``sample`` rejects it)."""
        self._require_fitted()
        x = self._observations(x)
        theta = torch.as_tensor(theta, dtype=torch.float32)
        theta = theta[None] if theta.ndim == 1 else theta
        if x.shape[0] == 1:
            x = x.expand(theta.shape[0], *x.shape[1:])
        x, theta = self._inputs(x, theta)
        with torch.no_grad():
            value = self._chunked(self.model_, x, theta)
        return torch.where(self._outside(theta), torch.full_like(value, float("-inf")), value)

    def sample(self, x, n: int, seed: int = 0, max_draws: int = 10_000_000) -> torch.Tensor:
        """n draws [n, p] of θ from q̂(θ|x) for one observation x [d] (or [1, d]; with an embedding, shaped like
        a row of the training x, or with a leading axis of 1: a set of m trials [m, d] may have any m), inside the
        prior's support (rejection); a RuntimeError if over ``max_draws`` draws are needed (the flow misses the
        support)."""
        self._require_fitted()
        if self.info_.get("embedding") is None:
            x = torch.as_tensor(x, dtype=torch.float32).reshape(1, -1)
        else:
            x = self._observations(x)
            if x.shape[0] != 1:
                raise ValueError(f"{type(self).__name__}.sample takes one observation, got x of shape "
                                 f"{list(x.shape)} (rows shaped like {self.info_['x_shape']})")
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
    """NPE plus the score of the posterior (module notes):

        L = −E[log q̂(θ|x)] + α E[Σ_j w_j (∂θ_j log q̂(θ|x) − t_j(x,z|θ) − ∂θ_j log π(θ))²],

    minimised by q̂ = p(θ|x), since E[t(x,z|θ) | x, θ] + ∇θ log π(θ) = ∇θ log p(θ|x). ``alpha`` (1.0),
    ``scale_free`` (True: w_j = 1/Var(target_j)) and ``clip_score`` (50 standard deviations) set the score term
    (``score_term.ScoreTerm``); other arguments as in NPE. Fit on data from ``sluice.simulate`` without a
    reference point, passing the prior the θ were drawn from.

    >>> import sluice, torch
    >>> simulator = sluice.simulators.GaussianMixture()               # x [n, 2], θ = (a, b)
    >>> prior = simulator.default_prior()
    >>> data = sluice.simulate(simulator, prior, n=1000, seed=0)
    >>> posterior = sluice.estimators.AugmentedNPE(alpha=1.0).fit(data, epochs=2, prior=prior)
    >>> posterior.sample(data.x[0], 100, seed=0).shape                # θ ~ q̂(θ | x), [n, p]
    torch.Size([100, 2])
    >>> posterior.log_prob(torch.tensor([0.2, -0.1]), data.x[0]).shape  # log q̂(θ | x), [n]
    torch.Size([1])
    """

    uses_score = True
