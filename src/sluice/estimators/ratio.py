"""Likelihood-ratio estimators: CARL, ROLR, ALICE and their score-augmented forms CASCAL, RASCAL, ALICES.

All share one network, log r̂(x|θ0,θ1) = g(x,θ0) − g(x,θ1), and differ only in the loss (docs/theory.md).
"""

from __future__ import annotations

import torch

from ..data.augmented import AugmentedData
from . import losses
from .base import Estimator, PotentialPredictions
from .conv_networks import DEFAULT_CHANNELS, ConvPotential, check_norm, choose_network
from .embeddings import EmbeddedPotential, EmbeddingOptions
from .networks import FeaturePotential, Potential, Standardize
from .score_term import ScoreTermOptions, warn_unused


class RatioEstimator(ScoreTermOptions, EmbeddingOptions, PotentialPredictions, Estimator):
    """The ratio family: one network g with log r̂(x|θ0,θ1) = g(x,θ0) − g(x,θ1), trained by a classification or
    regression loss on (x, θ0, θ1, y) and, where ``uses_score``, the joint-score term (``score_term.ScoreTerm``).

    Arguments (all keywords; shapes: x [n, d] or images [n, H, W] / [n, C, H, W], θ [n, p]):

    - ``alpha`` (1.0), ``scale_free`` (True), ``clip_score`` (50.0): the score term's weight, its units (per
      component 1/Var(t_j), dimensionless, so α = 1 weighs it like the main loss; else σ_θj², standardised θ)
      and the clipping of its targets to ±``clip_score`` standard deviations. Used by CASCAL, RASCAL, ALICES.
    - ``clip_log_r`` (20.0): |log r(x,z)| targets are clipped to this (ROLR, RASCAL, ALICE, ALICES).
    - ``network``: "mlp" (``networks.Potential`` on standardised x), "conv" (``conv_networks.ConvPotential``, a
      residual encoder with ``channels`` and θ joined after it) or "auto" (the default): "conv" where x is an
      image, else "mlp". ``norm``: "batch" (the default) or "none", batch normalisation in the conv encoder.
    - ``embedding`` (None): an embedding network e(x) [n, k] learned jointly with g, which then sees
      g(e(x), θ): a built-in name ("mlp", "set", "masked_set", "conv1d", "conv2d"; ``embeddings``) or the user's
      ``torch.nn.Module`` (load such a model with ``CARL.load(path, embedding=module)``, etc.). It replaces
      ``network``, which must then stay "auto". The score term is unaffected: it needs ∇θ only.
    - ``hidden`` ((64, 64, 64)), ``activation`` ("silu"), ``learning_rate`` (1e-3), ``schedule`` ("cosine"),
      ``batch_size`` (128), ``steps`` (6000) and ``epochs`` (None: enough for ``steps`` optimiser steps, with early
      stopping), ``patience``, ``clip_grad_norm``, ``threads`` (1), ``device`` ("cpu"): the network and its
      training (``Estimator``). These defaults were chosen on the task suite (docs/benchmarks.md).

    Arguments a class does not use (``alpha`` on CARL, ``clip_log_r`` on CARL) are ignored with a warning.
    """

    uses_ratio = False
    no_score_reason = "it has no score term"

    def __init__(self, alpha: float = 1.0, scale_free: bool = True, clip_log_r: float = 20.0,
                 clip_score: float | None = 50.0, network: str = "auto",
                 channels: tuple[int, ...] = DEFAULT_CHANNELS, norm: str = "batch", embedding=None, **common):
        super().__init__(**common)
        self._init_embedding(embedding)
        if embedding is not None and network != "auto":
            raise ValueError(f"{type(self).__name__}: network={network!r} and embedding={embedding!r} both choose "
                             "how x enters g; pass the embedding alone (network='auto')")
        self.network = network
        self.channels = tuple(channels)
        self.norm = check_norm(norm)
        self.clip_log_r = clip_log_r
        self._init_score_term(alpha, scale_free, clip_score)
        if not self.uses_ratio:
            warn_unused(self, "it does not regress on the joint ratio", "clip_log_r")

    @property
    def needs(self):
        return ("theta0", "theta1", "y", "x") + (("log_r_xz",) if self.uses_ratio else ())

    def _describe(self, data: AugmentedData) -> dict:
        theta = torch.cat([data.theta0, data.theta1])
        if self.embedding is not None:
            return {"embedding": self._describe_embedding(data.x, channels=self.channels, norm=self.norm),
                    "theta": Standardize.fit(theta).state_dict()}
        if choose_network(self.network, data.x) == "conv":
            return {"network": "conv", "channels": list(self.channels), "norm": self.norm,
                    **ConvPotential.statistics(data.x),
                    "theta": Standardize.fit(theta).state_dict()}
        return {"x": Standardize.fit(data.x).state_dict(), "theta": Standardize.fit(theta).state_dict()}

    def _make_model(self, info: dict) -> Potential | FeaturePotential:
        if info.get("embedding") is not None:
            theta_scale = Standardize(info["theta"]["mean"], info["theta"]["std"])
            embedding, width = self._make_embedding(info["embedding"])
            return EmbeddedPotential(embedding, width, theta_scale, self.hidden, self.activation)
        if info.get("network") == "conv":
            return ConvPotential.from_info(info, self.hidden, self.activation)
        scales = [Standardize(state["mean"], state["std"]) for state in (info["x"], info["theta"])]
        return Potential(*scales, self.hidden, self.activation)

    def _main_tensors(self, data: AugmentedData) -> dict:
        tensors = {"x": data.x, "theta0": data.theta0, "theta1": data.theta1, "y": data.y}
        if self.uses_ratio:
            tensors["log_r_xz"] = data.log_r_xz.clamp(-self.clip_log_r, self.clip_log_r)
        return tensors

    def _base_loss(self, log_r_hat: torch.Tensor, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def _loss(self, batch: dict) -> torch.Tensor:
        theta0 = batch["theta0"].clone().requires_grad_(self.uses_score)
        theta1 = batch["theta1"].clone().requires_grad_(self.uses_score)
        with torch.enable_grad():
            g0, g1 = self.model_.pair(batch["x"], theta0, theta1)
            loss = self._base_loss(g0 - g1, batch)
            if self.uses_score:
                grad0, grad1 = torch.autograd.grad(g0.sum() + g1.sum(), (theta0, theta1), create_graph=True)
                # ∇θ0 log r̂ = ∇g(x,θ0) where x came from θ0, −∇θ1 log r̂ = ∇g(x,θ1) where it came from θ1: the
                # score at the θ that made x, against the joint score there
                score_hat = torch.where(batch["y"][:, None] == 0, grad0, grad1)
                loss = loss + self.score_term_(score_hat, batch["score_target"])
        return loss

    def log_ratio_table(self, x, thetas: torch.Tensor, theta_ref: torch.Tensor) -> torch.Tensor | None:
        """log r̂(x_i | θ_g, θ_ref) [G, n] for ``sluice.inference`` with a conv network or an embedding, each x
        encoded once; None for the plain MLP (the generic evaluation serves it)."""
        if not isinstance(getattr(self, "model_", None), FeaturePotential):
            return None
        (x,) = self._inputs(x)
        points = torch.cat([torch.as_tensor(thetas, dtype=torch.float32),
                            torch.as_tensor(theta_ref, dtype=torch.float32).reshape(1, -1)])
        with torch.no_grad():
            table = self.model_.table(x, points)
        return table[:-1] - table[-1]


class CARL(RatioEstimator):
    """Calibrated classifier (Cranmer, Pavez, Louppe, arXiv:1506.02169): black box, it needs only (x, θ0, θ1, y).

    Minimises the cross-entropy of telling x drawn at θ0 (y = 0) from x drawn at θ1 (y = 1),

        L = −E[y log ŝ(x) + (1 − y) log(1 − ŝ(x))],   ŝ = 1 / (1 + r̂(x|θ0,θ1)),

    whose minimiser is r̂ = p(x|θ0) / p(x|θ1). Arguments: those of ``RatioEstimator`` (network and training);
    it has no score term and no ratio target, so ``alpha``, ``scale_free``, ``clip_score`` and ``clip_log_r``
    are ignored with a warning.

    >>> import sluice, torch
    >>> simulator = sluice.simulators.GaussianMixture()               # x [n, 2], θ = (a, b)
    >>> data = sluice.simulate(simulator, simulator.default_prior(), n=1000, seed=0)
    >>> x, theta0, theta1 = data.x[:5], torch.tensor([0.2, -0.1]), torch.tensor([0.0, 0.0])
    >>> carl = sluice.estimators.CARL(hidden=(32, 32)).fit(data, epochs=2)
    >>> carl.log_ratio(x, theta0, theta1).shape      # log r̂(x | θ0, θ1), [n]
    torch.Size([5])
    """

    def _base_loss(self, log_r_hat, batch):
        return losses.carl_loss(log_r_hat, batch["y"])


class ROLR(RatioEstimator):
    """Regression on the joint likelihood ratio r(x,z|θ0,θ1) of each run (Brehmer et al., arXiv:1805.12244).

        L = E[y (r̂(x) − r(x,z))² + (1 − y) (1/r̂(x) − 1/r(x,z))²],

    minimised by r̂ = E[r(x,z) | x, θ1] = r(x). Both log r̂ and log r(x,z) are clipped to ±``clip_log_r`` (20)
    so that one extreme weight cannot dominate. Other arguments: those of ``RatioEstimator``.

    >>> import sluice, torch
    >>> simulator = sluice.simulators.GaussianMixture()               # x [n, 2], θ = (a, b)
    >>> data = sluice.simulate(simulator, simulator.default_prior(), n=1000, seed=0)
    >>> x, theta0, theta1 = data.x[:5], torch.tensor([0.2, -0.1]), torch.tensor([0.0, 0.0])
    >>> rolr = sluice.estimators.ROLR().fit(data, epochs=2)
    >>> rolr.log_ratio(x, theta0, theta1).shape
    torch.Size([5])
    """

    uses_ratio = True

    def _base_loss(self, log_r_hat, batch):
        return losses.rolr_loss(log_r_hat, batch["log_r_xz"], batch["y"], clip=self.clip_log_r)


class ALICE(RatioEstimator):
    """Cross-entropy against the soft labels of the joint ratio: bounded targets, the robust default.

        L = −E[s(x,z) log ŝ(x) + (1 − s(x,z)) log(1 − ŝ(x))],   s(x,z) = 1 / (1 + r(x,z|θ0,θ1)),

    minimised by ŝ = E[s(x,z) | x] = 1 / (1 + r(x)) (Stoye et al., arXiv:1808.00973). ``clip_log_r`` (20) clips
    log r(x,z). Other arguments: those of ``RatioEstimator``.

    >>> import sluice, torch
    >>> simulator = sluice.simulators.GaussianMixture()               # x [n, 2], θ = (a, b)
    >>> data = sluice.simulate(simulator, simulator.default_prior(), n=1000, seed=0)
    >>> x, theta0, theta1 = data.x[:5], torch.tensor([0.2, -0.1]), torch.tensor([0.0, 0.0])
    >>> alice = sluice.estimators.ALICE().fit(data, epochs=2)
    >>> alice.log_ratio(x, theta0, theta1).shape
    torch.Size([5])
    """

    uses_ratio = True

    def _base_loss(self, log_r_hat, batch):
        return losses.alice_loss(log_r_hat, batch["log_r_xz"], clip=self.clip_log_r)


class CASCAL(CARL):
    """CARL plus the joint-score term: L_CARL + α E[Σ_j w_j (t̂_j(x|θ) − t_j(x,z|θ))²] at the θ that made x,
    with t̂(x|θ) = ∇θ g(x,θ) (``score_term.ScoreTerm``), minimised by r̂ = r(x) and t̂ = t(x).

    ``alpha`` (1.0) weighs the term; ``scale_free`` (True) makes it dimensionless (w_j = 1/Var(t_j)), else
    w_j = σ_θj²; ``clip_score`` (50) clips t_j to ±50 standard deviations. Other arguments: ``RatioEstimator``.

    >>> import sluice, torch
    >>> simulator = sluice.simulators.GaussianMixture()               # x [n, 2], θ = (a, b)
    >>> data = sluice.simulate(simulator, simulator.default_prior(), n=1000, seed=0)
    >>> x, theta0, theta1 = data.x[:5], torch.tensor([0.2, -0.1]), torch.tensor([0.0, 0.0])
    >>> cascal = sluice.estimators.CASCAL(alpha=1.0).fit(data, epochs=2)
    >>> cascal.score(x, theta0).shape                # t̂(x | θ) = ∇θ log p̂(x | θ), [n, p]
    torch.Size([5, 2])
    """

    uses_score = True


class RASCAL(ROLR):
    """ROLR plus the joint-score term: L_ROLR + α E[Σ_j w_j (t̂_j(x|θ) − t_j(x,z|θ))²] at the θ that made x.

    ``alpha``, ``scale_free``, ``clip_score`` as in CASCAL; ``clip_log_r`` as in ROLR; other arguments:
    ``RatioEstimator``.

    >>> import sluice, torch
    >>> simulator = sluice.simulators.GaussianMixture()               # x [n, 2], θ = (a, b)
    >>> data = sluice.simulate(simulator, simulator.default_prior(), n=1000, seed=0)
    >>> x, theta0, theta1 = data.x[:5], torch.tensor([0.2, -0.1]), torch.tensor([0.0, 0.0])
    >>> rascal = sluice.estimators.RASCAL(alpha=1.0).fit(data, epochs=2)
    >>> rascal.log_ratio(x, theta0, theta1).shape, rascal.score(x, theta1).shape
    (torch.Size([5]), torch.Size([5, 2]))
    """

    uses_score = True


class ALICES(ALICE):
    """ALICE plus the joint-score term: L_ALICE + α E[Σ_j w_j (t̂_j(x|θ) − t_j(x,z|θ))²] at the θ that made x.

    ``alpha``, ``scale_free``, ``clip_score`` as in CASCAL; ``clip_log_r`` as in ALICE; other arguments:
    ``RatioEstimator``.

    >>> import sluice, torch
    >>> simulator = sluice.simulators.GaussianMixture()               # x [n, 2], θ = (a, b)
    >>> data = sluice.simulate(simulator, simulator.default_prior(), n=1000, seed=0)
    >>> x, theta0, theta1 = data.x[:5], torch.tensor([0.2, -0.1]), torch.tensor([0.0, 0.0])
    >>> alices = sluice.estimators.ALICES(alpha=1.0).fit(data, epochs=2)
    >>> alices.log_ratio(x, theta0, theta1).shape, alices.score(x, theta1).shape
    (torch.Size([5]), torch.Size([5, 2]))
    """

    uses_score = True
