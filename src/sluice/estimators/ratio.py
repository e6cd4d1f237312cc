"""Likelihood-ratio estimators: CARL, ROLR, ALICE and their score-augmented forms CASCAL, RASCAL, ALICES.

All share one network, log r̂(x|θ0,θ1) = g(x,θ0) − g(x,θ1), and differ only in the loss (REFERENCE.md §2).
"""

from __future__ import annotations

import torch

from ..data.augmented import AugmentedData
from . import losses
from .base import Estimator, PotentialPredictions, ScoreTarget, warn_unused
from .conv_networks import DEFAULT_CHANNELS, ConvPotential, check_norm, choose_network
from .networks import Potential, Standardize


class RatioEstimator(PotentialPredictions, Estimator):
    """Base of the ratio family. ``alpha`` weighs the score term; with ``scale_free`` (the default) the term
    is Σ_j (t̂_j − t_j)² / Var(t_j), dimensionless, so α = 1 means "as much as the classification loss"
    whatever the units of θ; otherwise it is measured in standardised θ units, Σ_j σ_θj² (t̂_j − t_j)².
    Targets are clipped: |log r(x,z)| ≤ ``clip_log_r``; |t_j| ≤ ``clip_score`` standard deviations of t_j.
    ``network``: "mlp" (``nets.Potential`` on standardised x), "conv" (``convnets.ConvPotential``, a residual
    encoder with ``channels`` and θ joined after it) or "auto" (the default): "conv" where x is an image,
    [n, H, W] or [n, C, H, W], else "mlp". ``norm``: "batch" (the default) or "none", batch normalisation in
    the conv encoder.
    """

    uses_ratio = False
    uses_score = False

    def __init__(self, alpha: float = 1.0, scale_free: bool = True, clip_log_r: float = 20.0,
                 clip_score: float | None = 50.0, network: str = "auto",
                 channels: tuple[int, ...] = DEFAULT_CHANNELS, norm: str = "batch", **common):
        super().__init__(**common)
        self.network = network
        self.channels = tuple(channels)
        self.norm = check_norm(norm)
        self.alpha = alpha
        self.scale_free = scale_free
        self.clip_log_r = clip_log_r
        self.clip_score = clip_score
        if not self.uses_score:
            warn_unused(self, "it has no score term", "alpha", "scale_free", "clip_score")
        if not self.uses_ratio:
            warn_unused(self, "it does not regress on the joint ratio", "clip_log_r")

    @property
    def requires(self):
        fields = ("theta0", "theta1", "y", "x")
        fields += ("log_r_xz",) if self.uses_ratio else ()
        return fields + (("t_xz0", "t_xz1") if self.uses_score else ())

    def _describe(self, data: AugmentedData) -> dict:
        theta = torch.cat([data.theta0, data.theta1])
        if choose_network(self.network, data.x) == "conv":
            return {"network": "conv", "channels": list(self.channels), "norm": self.norm,
                    **ConvPotential.statistics(data.x),
                    "theta": Standardize.fit(theta).state_dict()}
        return {"x": Standardize.fit(data.x).state_dict(), "theta": Standardize.fit(theta).state_dict()}

    def _make_model(self, info: dict) -> Potential | ConvPotential:
        if info.get("network") == "conv":
            return ConvPotential.from_info(info, self.hidden, self.activation)
        scales = [Standardize(state["mean"], state["std"]) for state in (info["x"], info["theta"])]
        return Potential(*scales, self.hidden, self.activation)

    def _prepare(self, training: AugmentedData) -> None:
        if self.uses_score:
            self._target = ScoreTarget.from_training(training.t_xz, self.model_.theta_scale.std, self.scale_free,
                                                     self.clip_score)

    def _tensors(self, data: AugmentedData) -> dict:
        tensors = {"x": data.x, "theta0": data.theta0, "theta1": data.theta1, "y": data.y}
        if self.uses_ratio:
            tensors["log_r_xz"] = data.log_r_xz.clamp(-self.clip_log_r, self.clip_log_r)
        if self.uses_score:
            tensors["t_xz0"], tensors["t_xz1"] = self._target.clip(data.t_xz0), self._target.clip(data.t_xz1)
        return tensors

    def _base_loss(self, log_r_hat: torch.Tensor, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def _loss(self, batch: dict) -> torch.Tensor:
        theta0, theta1 = batch["theta0"], batch["theta1"]
        if self.uses_score:
            theta0, theta1 = theta0.clone().requires_grad_(True), theta1.clone().requires_grad_(True)
        with torch.enable_grad():
            g0, g1 = self.model_.pair(batch["x"], theta0, theta1)
            loss = self._base_loss(g0 - g1, batch)
            if self.uses_score:
                grad0, grad1 = torch.autograd.grad(g0.sum() + g1.sum(), (theta0, theta1), create_graph=True)
                y = batch["y"]
                # ∇θ0 log r̂ = ∇g(x,θ0) against t(x,z|θ0) where x came from θ0; the mirror term at θ1
                loss = loss + self.alpha * (
                    losses.score_loss(grad0, batch["t_xz0"], mask=1.0 - y, weight=self._target.weight)
                    + losses.score_loss(grad1, batch["t_xz1"], mask=y, weight=self._target.weight))
        return loss

    def log_ratio_table(self, x, thetas: torch.Tensor, theta_ref: torch.Tensor) -> torch.Tensor | None:
        """log r̂(x_i | θ_g, θ_ref) [G, n] for ``sluice.inference`` with a conv network, each image encoded once;
        None for other networks (the generic evaluation serves them)."""
        if not isinstance(getattr(self, "model_", None), ConvPotential):
            return None
        (x,) = self._inputs(x)
        points = torch.cat([torch.as_tensor(thetas, dtype=torch.float32),
                            torch.as_tensor(theta_ref, dtype=torch.float32).reshape(1, -1)])
        with torch.no_grad():
            table = self.model_.table(x, points)
        return table[:-1] - table[-1]


class CARL(RatioEstimator):
    """Calibrated classifier: cross-entropy between x from θ0 and from θ1 (black box: x, θ0, θ1, y)."""

    def _base_loss(self, log_r_hat, batch):
        return losses.carl_loss(log_r_hat, batch["y"])


class ROLR(RatioEstimator):
    """Regression on the joint likelihood ratio r(x,z|θ0,θ1)."""

    uses_ratio = True

    def _base_loss(self, log_r_hat, batch):
        return losses.rolr_loss(log_r_hat, batch["log_r_xz"], batch["y"], clip=self.clip_log_r)


class ALICE(RatioEstimator):
    """Cross-entropy against the soft labels 1/(1 + r(x,z|θ0,θ1)): bounded targets, the robust default."""

    uses_ratio = True

    def _base_loss(self, log_r_hat, batch):
        return losses.alice_loss(log_r_hat, batch["log_r_xz"], clip=self.clip_log_r)


class CASCAL(CARL):
    """CARL plus the joint-score term α Σ (t̂ − t(x,z))²."""

    uses_score = True


class RASCAL(ROLR):
    """ROLR plus the joint-score term."""

    uses_score = True


class ALICES(ALICE):
    """ALICE plus the joint-score term."""

    uses_score = True
