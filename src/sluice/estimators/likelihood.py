"""Likelihood estimators: NDE (maximum likelihood) and SCANDAL (plus the joint-score term).

Continuous x gets a conditional normalising flow (zuko; a spline then affine transforms by default); integer-valued
x on a finite support (the Galton board) gets a categorical distribution whose logits are a smooth network of θ.
"""

from __future__ import annotations

import torch

from ..data.augmented import AugmentedData
from . import losses
from .base import Estimator, PotentialPredictions, ScoreTarget, warn_unused
from .networks import CategoricalLikelihood, FlowLikelihood, Standardize, looks_discrete


def density_loss(model, x: torch.Tensor, theta: torch.Tensor, score_target: torch.Tensor | None, alpha: float,
                 weight: torch.Tensor | None) -> torch.Tensor:
    """−mean log m(x, θ) for a density model m (p̂(x|θ) or q̂(θ|x)), plus α Σ_j w_j (∂θ_j log m − target_j)²
    where a ``score_target`` is given (SCANDAL: the joint score; AugmentedNPE: the posterior-score target)."""
    theta = theta.clone().requires_grad_(score_target is not None)
    with torch.enable_grad():
        log_density = model(x, theta)
        loss = losses.negative_log_likelihood(log_density)
        if score_target is not None:
            (score,) = torch.autograd.grad(log_density.sum(), theta, create_graph=True)
            loss = loss + alpha * losses.score_loss(score, score_target, weight=weight)
    return loss


class NDE(PotentialPredictions, Estimator):
    """Neural density estimation: minimise −log p̂(x|θ) over (x, θ) pairs, θ the parameter that made x.

    ``density``: "auto" (categorical for integer-valued x with few distinct values, a flow otherwise),
    "flow" or "categorical". ``flow``: "nsf+maf" (the default: one spline transform on x, then affine
    autoregressive ones), "maf" or "nsf"; ``transforms``: how many in all. Why the hybrid: zuko's splines are
    the identity outside ±5 standardised units, so a pure NSF's tails stop following p(x|θ) where its width
    changes with θ; a pure MAF extrapolates its θ- and x-dependent scales and sometimes overshoots in the tails
    by far; the spline shapes the bulk and the affine layers carry the θ-dependent location and scale
    (docs/methods/nde.md has the measurements).
    """

    uses_score = False

    def __init__(self, density: str = "auto", flow: str = "nsf+maf", transforms: int = 3, alpha: float = 1.0,
                 scale_free: bool = True, clip_score: float | None = 50.0, activation: str = "elu",
                 batch_size: int = 256, **common):
        super().__init__(activation=activation, batch_size=batch_size, **common)
        if density not in ("auto", "flow", "categorical"):
            raise ValueError(f"density must be 'auto', 'flow' or 'categorical', got {density!r}")
        self.density = density
        self.flow = flow
        self.transforms = transforms
        self.alpha = alpha
        self.scale_free = scale_free
        self.clip_score = clip_score
        if not self.uses_score:
            warn_unused(self, "it has no score term (SCANDAL has)", "alpha", "scale_free", "clip_score")

    @property
    def requires(self):
        return ("theta0", "theta1", "y", "x") + (("t_xz0", "t_xz1") if self.uses_score else ())

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

    def _prepare(self, training: AugmentedData) -> None:
        if self.uses_score:
            self._target = ScoreTarget.from_training(training.t_xz, self.model_.theta_scale.std, self.scale_free,
                                                     self.clip_score)

    def _tensors(self, data: AugmentedData) -> dict:
        tensors = {"x": data.x, "theta": data.theta}
        if self.uses_score:
            tensors["t_xz"] = self._target.clip(data.t_xz)
        return tensors

    def _loss(self, batch: dict) -> torch.Tensor:
        target = batch["t_xz"] if self.uses_score else None
        return density_loss(self.model_, batch["x"], batch["theta"], target, self.alpha,
                            self._target.weight if self.uses_score else None)

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
    """NDE plus α Σ (∇θ log p̂(x|θ) − t(x,z|θ))², the joint score at the θ that made x."""

    uses_score = True
