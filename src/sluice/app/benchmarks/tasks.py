"""Benchmark tasks with an exact likelihood: training data for each method, and the error of its log r̂."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...data import simulate
from ...simulators import GaltonBoard, GaussianMixture, priors

SCORE_ONLY = ("SALLY", "SALLINO")


@dataclass
class GaltonTask:
    """The published Galton setting: θ ~ U(−1, −0.4) for training, scored at θ0 = −0.8, θ1 = −0.6 by

        MSE = Σ_x p(x|θ1) (log r̂(x|θ0,θ1) − log r(x|θ0,θ1))²,  exact p from the dynamic program.

    SALLY and SALLINO learn a local score: they get the same number of runs, all at θ_ref = −0.7.
    """

    name: str = "galton"
    metric: str = "MSE of log r̂ (θ0=−0.8, θ1=−0.6, weighted by p(x|θ1))"
    theta0: float = -0.8
    theta1: float = -0.6
    theta_ref: float = -0.7

    def __post_init__(self):
        self.simulator = GaltonBoard()
        self.prior = self.simulator.default_prior()
        self.x = torch.arange(5, 26, dtype=torch.float32)[:, None]
        log_p0 = self.simulator.log_likelihood(self.x, torch.tensor([self.theta0]))
        log_p1 = self.simulator.log_likelihood(self.x, torch.tensor([self.theta1]))
        self.exact = log_p0 - log_p1
        self.weight = log_p1.exp() / log_p1.exp().sum()

    def training_data(self, method: str, n: int, seed: int):
        if method in SCORE_ONLY:
            return simulate(self.simulator, priors.Point([self.theta_ref]), n, seed=seed, progress=False)
        return simulate(self.simulator, self.prior, n, seed=seed, progress=False)

    def error(self, estimator) -> float:
        predicted = estimator.log_ratio(self.x, torch.tensor([self.theta0]), torch.tensor([self.theta1]))
        return float((self.weight * (predicted - self.exact) ** 2).sum())

    def trivial_error(self) -> float:
        return float((self.weight * self.exact**2).sum())


@dataclass
class MixtureTask:
    """GaussianMixture over θ ~ U([−1, 1]²), scored by the normalised MSE over 2 000 random pairs (θ0, θ1)
    from the prior with x ~ p(x|θ1):  nMSE = mean (log r̂ − log r)² / Var(log r).

    SALLY and SALLINO get half their runs at θ_ref = (0, 0) and half across the prior (a conditional density
    in summary space).
    """

    name: str = "mixture"
    metric: str = "normalised MSE of log r̂ over random (θ0, θ1) from the prior, x ~ θ1"
    n_pairs: int = 2000

    def __post_init__(self):
        self.simulator = GaussianMixture()
        self.prior = self.simulator.default_prior()
        self.theta0 = priors.sample_prior(self.prior, self.n_pairs, seed=1)
        self.theta1 = priors.sample_prior(self.prior, self.n_pairs, seed=2)
        self.x, _ = self.simulator.sample(self.theta1, generator=torch.Generator().manual_seed(3))
        self.exact = self.simulator.log_likelihood(self.x, self.theta0) - self.simulator.log_likelihood(self.x,
                                                                                                          self.theta1)

    def training_data(self, method: str, n: int, seed: int):
        reference = [0.0, 0.0] if method in SCORE_ONLY else None
        return simulate(self.simulator, self.prior, n, reference=reference, seed=seed, progress=False)

    def error(self, estimator) -> float:
        predicted = estimator.log_ratio(self.x, self.theta0, self.theta1)
        return float(((predicted - self.exact) ** 2).mean() / self.exact.var())

    def trivial_error(self) -> float:
        return float((self.exact**2).mean() / self.exact.var())


TASKS = {"galton": GaltonTask, "mixture": MixtureTask}
