"""The joint-score term, one component that the ratio, likelihood and posterior families compose into their loss.

A model m(x, θ) (a potential g(x,θ) with log r̂ = g(x,θ0) − g(x,θ1), a likelihood log p̂(x|θ) or a posterior
log q̂(θ|x)) learns its θ-gradient from the joint score t(x,z|θ) of each run, taken at the θ that made x
(``data.theta``): E[t(x,z|θ) | x, θ] = ∇θ log p(x|θ), so

    α · mean_i Σ_j w_j (∂θ_j m(x_i, θ_i) − clip(target_ij))²

is minimised by the true score (docs/theory.md). The target is t(x,z|θ) plus, for posteriors, the prior's score
∇θ log π(θ) (Bayes: ∇θ log p(θ|x) = ∇θ log p(x|θ) + ∇θ log π(θ)). The weights w_j are 1/Var(target_j) with
``scale_free`` (so α = 1 weighs the term like the main loss, whatever the units of θ) or σ_θj² (standardised θ
units); targets are clipped to ±``clip`` standard deviations, so a few extreme joint scores cannot dominate.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable

import torch

from . import losses

__all__ = ["ScoreTerm", "ScoreTermOptions", "warn_unused"]

SCORE_FIELDS = ("t_xz0", "t_xz1")  # the data fields the term reads
MIN_RELATIVE_SPREAD = 0.03  # a score component's spread is taken as at least this fraction of the largest's


def warn_unused(estimator, reason: str, *names: str, stacklevel: int = 3) -> None:
    """Warn that the constructor arguments ``names``, where set away from their defaults, do nothing in this
    estimator (the defaults are read from the signature of ``type(estimator).__init__``); ``stacklevel`` 3 points
    at the line that called the constructor that calls this."""
    parameters = inspect.signature(type(estimator).__init__).parameters
    changed = [f"{name}={getattr(estimator, name)!r}" for name in names
               if getattr(estimator, name) != parameters[name].default]
    if changed:
        warnings.warn(f"{type(estimator).__name__} ignores {', '.join(changed)}: {reason}", UserWarning,
                      stacklevel=stacklevel)


class ScoreTerm:
    """α · mean_i Σ_j w_j (t̂_ij − clip(target_ij))² (module notes), fitted once on the training targets.

    ``shift(theta) -> [n, p]`` is added to the joint score to make the target (the prior's score for posteriors);
    None for likelihoods and ratios.
    """

    def __init__(self, alpha: float, scale_free: bool, clip: float | None,
                 shift: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.alpha, self.scale_free, self.clip, self.shift = float(alpha), bool(scale_free), clip, shift
        self.weight: torch.Tensor | None = None
        self.bound: torch.Tensor | None = None

    def targets(self, data) -> torch.Tensor:
        """The unclipped target of each row [n, p]: t(x,z|θ) at the θ that made x, plus ``shift(θ)``."""
        target = data.t_xz
        return target if self.shift is None else target + self.shift(data.theta)

    def fit(self, data, theta_std: torch.Tensor) -> ScoreTerm:
        """Weights and clipping bounds from the training rows (``theta_std`` [p]: the θ standardisation)."""
        target = self.targets(data)
        spread = target.std(dim=0) if target.shape[0] > 1 else torch.ones(target.shape[1])
        # a component that hardly varies (a normalisation nuisance's joint score is 0 in every event) would get the
        # weight 1/Var ≈ 1/rounding², which buries every other term: its spread is floored at MIN_RELATIVE_SPREAD of
        # the largest, compared in standardised-θ units (t_j σ_θj) so that the floor does not depend on units. At
        # 0.03 no component weighs more than ~1100 times the widest one. On the particle toy with a normalisation
        # nuisance a floor of 1e-3 (10⁶ times) spoiled ALICES in 3 of 3 seeds, 0.01, 0.03 and 0.1 did not; on
        # SLCP (a real component at 0.008) 0.1 cost 0.007 in C2ST, 0.01 and 0.03 nothing (docs/estimators.md)
        theta_std = theta_std.detach().to(spread.dtype)
        standardised = spread * theta_std
        floor = MIN_RELATIVE_SPREAD * float(standardised.max()) if float(standardised.max()) > 0 else 1.0
        spread = torch.maximum(standardised, torch.full_like(standardised, floor)) / theta_std
        self.bound = None if self.clip is None else self.clip * spread
        self.weight = 1.0 / spread**2 if self.scale_free else theta_std.detach() ** 2
        return self

    def clipped_targets(self, data) -> torch.Tensor:
        """The training tensor of targets [n, p], clipped to ±bound."""
        target = self.targets(data)
        return target if self.bound is None else torch.clamp(target, -self.bound, self.bound)

    def __call__(self, score_hat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The term for a batch: ``score_hat`` [n, p] = ∇θ m(x, θ) at the θ that made x, ``target`` [n, p]."""
        return self.alpha * losses.score_loss(score_hat, target, weight=self.weight)


class ScoreTermOptions:
    """Constructor arguments of a family that may carry the score term (``uses_score``), and the term itself.

    ``alpha``: the weight α of the term; ``scale_free``: weights 1/Var(target_j) (True) or σ_θj²;
    ``clip_score``: clip targets to ±clip_score standard deviations (None: no clipping). A class with
    ``uses_score = False`` (CARL, ROLR, ALICE, NDE, NPE) warns when any of them is set away from its default.
    """

    no_score_reason = "it has no score term"

    def _init_score_term(self, alpha: float, scale_free: bool, clip_score: float | None) -> None:
        self.alpha, self.scale_free, self.clip_score = alpha, scale_free, clip_score
        if not self.uses_score:
            warn_unused(self, self.no_score_reason, "alpha", "scale_free", "clip_score", stacklevel=4)

    def _score_shift(self):
        """What the target adds to t(x,z|θ): None here; posteriors add the prior's score."""
        return None

    def _prepare(self, training) -> None:
        """Fit the term's weights and clipping on the training rows (the model's θ standardisation is known)."""
        self.score_term_ = None
        if self.uses_score:
            self.score_term_ = ScoreTerm(self.alpha, self.scale_free, self.clip_score,
                                         self._score_shift()).fit(training, self.model_.theta_scale.std)

    def _main_tensors(self, data) -> dict:
        raise NotImplementedError

    def _tensors(self, data) -> dict:
        """The family's training tensors, plus {"score_target": [n, p]} where the term is used."""
        tensors = self._main_tensors(data)
        if self.uses_score:
            tensors["score_target"] = self.score_term_.clipped_targets(data)
        return tensors
