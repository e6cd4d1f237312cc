"""Likelihood estimators: NDE (maximum likelihood) and SCANDAL (plus the joint-score term).

Continuous x gets a conditional normalising flow (zuko; a spline then affine transforms by default); integer-valued
x on a finite support (the Galton board) gets a categorical distribution whose logits are a smooth network of θ.
"""

from __future__ import annotations

import torch

from ..data.augmented import AugmentedData
from . import losses
from .base import Estimator, PotentialPredictions
from .networks import CategoricalLikelihood, FlowLikelihood, Standardize, looks_discrete
from .score_term import ScoreTerm, ScoreTermOptions


def density_loss(model, x: torch.Tensor, theta: torch.Tensor, score_term: ScoreTerm | None = None,
                 score_target: torch.Tensor | None = None) -> torch.Tensor:
    """−mean log m(x, θ) for a density model m (p̂(x|θ) or q̂(θ|x)), plus the ``score_term`` on ∇θ log m where it
    is given (SCANDAL: against the joint score; AugmentedNPE: against the posterior-score target)."""
    theta = theta.clone().requires_grad_(score_term is not None)
    with torch.enable_grad():
        log_density = model(x, theta)
        loss = losses.negative_log_likelihood(log_density)
        if score_term is not None:
            # the graph of the score is kept only where a backward pass follows (training); on held-out data the
            # loss is only read, and keeping it there cost about as much as the score itself
            (score,) = torch.autograd.grad(log_density.sum(), theta, create_graph=model.training)
            loss = loss + score_term(score, score_target)
    return loss


class NDE(ScoreTermOptions, PotentialPredictions, Estimator):
    """Neural density estimation, black box: a conditional density p̂(x|θ) fitted by maximum likelihood,

        L = −E[log p̂(x | θ)]   over pairs (x, θ), θ the parameter that made x,

    minimised by p̂ = p(x|θ). Then log r̂(x|θ0,θ1) = log p̂(x|θ0) − log p̂(x|θ1) and t̂(x|θ) = ∇θ log p̂(x|θ).

    Arguments (x [n, d], θ [n, p]):

    - ``density``: "auto" (categorical for integer-valued x with few distinct values, a flow otherwise),
      "flow" or "categorical".
    - ``flow``: "nsf+maf" (the default: one spline transform on x, then affine autoregressive ones), "maf" or
      "nsf"; ``transforms`` (3): how many in all. Why the hybrid: zuko's splines are the identity outside ±5
      standardised units, so a pure NSF's tails stop following p(x|θ) where its width changes with θ; a pure
      MAF extrapolates its θ- and x-dependent scales and sometimes overshoots in the tails by far; the spline
      shapes the bulk and the affine layers carry the θ-dependent location and scale (docs/methods/nde.md).
    - ``activation`` ("elu": the θ-gradients of the flow must be smooth), ``batch_size`` (256), ``hidden``,
      ``learning_rate``, ``epochs``, ``patience``, ``threads``, ``device``: the network and training
      (``Estimator``). ``alpha``, ``scale_free``, ``clip_score`` belong to SCANDAL; NDE ignores them with a
      warning.
    - ``embedding``: None only. A flow on an embedding e(x) would be a density of the features e(x), not of x:
      log p̂(e(x)|θ) differs from log p(x|θ) by a Jacobian that a non-invertible e does not have, so its ratios
      and scores would not be those of x. For non-vector x use a summary statistic as x, or the ratio or
      posterior family with ``embedding=`` (docs/methods/embeddings.md).

    >>> import sluice, torch
    >>> simulator = sluice.simulators.GaussianMixture()               # x [n, 2], θ = (a, b)
    >>> data = sluice.simulate(simulator, simulator.default_prior(), n=1000, seed=0)
    >>> nde = sluice.estimators.NDE().fit(data, epochs=2)
    >>> nde.log_likelihood(data.x[:5], theta=torch.tensor([0.2, -0.1])).shape     # log p̂(x | θ), [n]
    torch.Size([5])
    """

    no_score_reason = "it has no score term (SCANDAL has)"

    def __init__(self, density: str = "auto", flow: str = "nsf+maf", transforms: int = 3, alpha: float = 1.0,
                 scale_free: bool = True, clip_score: float | None = 50.0, activation: str = "elu",
                 batch_size: int = 256, embedding=None, **common):
        super().__init__(activation=activation, batch_size=batch_size, **common)
        if embedding is not None:
            raise ValueError(
                f"{type(self).__name__} takes no embedding (got {embedding!r}): it is a density p̂(x|θ) of x itself, "
                "and a flow on features e(x) would be a density of e(x), whose ratios and scores are not those of x "
                "unless e is invertible. Use a summary statistic as x, or a ratio (ALICES, …) or posterior (NPE, "
                "AugmentedNPE) estimator with embedding=…")
        self.embedding = None
        if density not in ("auto", "flow", "categorical"):
            raise ValueError(f"density must be 'auto', 'flow' or 'categorical', got {density!r}")
        self.density = density
        self.flow = flow
        self.transforms = transforms
        self._init_score_term(alpha, scale_free, clip_score)

    def _describe(self, data: AugmentedData) -> dict:
        discrete = looks_discrete(data.x) if self.density == "auto" else self.density == "categorical"
        info = {"theta": Standardize.fit(data.theta).state_dict(), "discrete": discrete}
        if discrete:
            template = CategoricalLikelihood.for_data(data.x, Standardize.fit(data.theta), self.hidden, self.activation)
            info.update(support=template.support, low=template.low, radix=template.radix)
        else:
            info["x"] = Standardize.fit(data.x).state_dict()
        return info

    def _make_model(self, info: dict):
        theta_scale = Standardize(info["theta"]["mean"], info["theta"]["std"])
        if info["discrete"]:
            return CategoricalLikelihood(info["support"], info["low"], info["radix"], theta_scale, self.hidden,
                                         self.activation)
        x_scale = Standardize(info["x"]["mean"], info["x"]["std"])
        return FlowLikelihood(x_scale, theta_scale, self.hidden, self.activation, self.transforms, self.flow)

    def _main_tensors(self, data: AugmentedData) -> dict:
        return {"x": data.x, "theta": data.theta}

    def _loss(self, batch: dict) -> torch.Tensor:
        return density_loss(self.model_, batch["x"], batch["theta"], self.score_term_, batch.get("score_target"))

    # --- predictions ----------------------------------------------------------------------------------------
    def log_ratio(self, x, theta0, theta1) -> torch.Tensor:
        """log p̂(x|θ0) − log p̂(x|θ1) [n]. A categorical model refuses x outside its support: p̂ is 0 there at
        every θ, so the ratio is undefined (a ValueError naming the first such rows)."""
        self._require_fitted()
        if self.info_.get("discrete"):
            (rows,) = self._inputs(x)
            outside = ~self.model_.in_support(rows)
            if outside.any():
                shown = rows[outside][:3].tolist()
                low = self.model_.low.tolist()
                high = (self.model_.low + self.model_.radix - 1).tolist()
                raise ValueError(f"{type(self).__name__}: {int(outside.sum())} of {rows.shape[0]} x lie outside the "
                                 f"values the categorical model knows (e.g. {shown}; the box {low}…{high}, and "
                                 "for several columns only rows seen in training): p̂(x|θ) = 0 there at every θ, "
                                 "so log r̂ is undefined; train on data that cover these x")
        return super().log_ratio(x, theta0, theta1)

    def log_likelihood(self, x, theta) -> torch.Tensor:
        """log p̂(x | θ) [n]."""
        x, theta = self._inputs(x, theta)
        with torch.no_grad():
            return self._chunked(self.model_, x, theta)


class SCANDAL(NDE):
    """NDE plus the joint-score term (Brehmer et al., arXiv:1805.12244):

        L = −E[log p̂(x|θ)] + α E[Σ_j w_j (∂θ_j log p̂(x|θ) − t_j(x,z|θ))²],

    at the θ that made x; E[t(x,z|θ) | x, θ] = ∇θ log p(x|θ), so the true density minimises both terms.
    ``alpha`` (1.0) weighs the term; ``scale_free`` (True): w_j = 1/Var(t_j), else σ_θj²; ``clip_score`` (50)
    clips t_j to ±50 standard deviations (``score_term.ScoreTerm``). Other arguments as in NDE.

    >>> import sluice, torch
    >>> simulator = sluice.simulators.GaussianMixture()
    >>> data = sluice.simulate(simulator, simulator.default_prior(), n=1000, seed=0)
    >>> scandal = sluice.estimators.SCANDAL(alpha=1.0).fit(data, epochs=2)
    >>> theta = torch.tensor([0.2, -0.1])
    >>> scandal.log_likelihood(data.x[:5], theta).shape, scandal.score(data.x[:5], theta).shape
    (torch.Size([5]), torch.Size([5, 2]))
    """

    uses_score = True
