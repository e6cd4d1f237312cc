"""Ensemble: several estimators averaged, with their spread as an uncertainty."""

from __future__ import annotations

import copy

import torch

from .base import REGISTRY, save_state


class Ensemble:
    """Several estimators averaged: log r̂ = mean_k log r̂_k (and t̂, log p̂ where every member gives them), with
    the members' standard deviation as an uncertainty (Lakshminarayanan et al., arXiv:1612.01474).

    ``estimators``: the members, unfitted; ``fit`` trains member k with seed ``seed + k``.

    >>> import sluice, torch
    >>> simulator = sluice.simulators.GaussianMixture()
    >>> data = sluice.simulate(simulator, simulator.default_prior(), n=1000, seed=0)
    >>> ensemble = sluice.estimators.Ensemble([sluice.estimators.ALICES() for _ in range(3)]).fit(data, epochs=2)
    >>> mean, spread = ensemble.log_ratio_with_uncertainty(data.x[:5], torch.tensor([0.2, -0.1]), torch.zeros(2))
    >>> mean.shape, bool((spread > 0).all())
    (torch.Size([5]), True)
    """

    def __init__(self, estimators):
        self.estimators = list(estimators)
        if not self.estimators:
            raise ValueError("Ensemble needs at least one estimator")

    def fit(self, data, seed: int = 0, **fit_arguments):
        """Fit every member on ``data``, member k with seed ``seed + k``; returns self."""
        for k, estimator in enumerate(self.estimators):
            estimator.fit(data, seed=seed + k, **fit_arguments)
        return self

    @property
    def parameter_names_(self) -> tuple:
        """The fitted members' parameter names (one tuple: they must agree), as the scans and profiling read them."""
        names = {tuple(getattr(estimator, "parameter_names_", ()) or ()) for estimator in self.estimators}
        if len(names) != 1 or not next(iter(names)):
            raise AttributeError("Ensemble.parameter_names_: the members are not fitted, or were fitted on data with "
                                 f"different parameters ({sorted(names)})")
        return next(iter(names))

    def _stack(self, method: str, *args) -> torch.Tensor:
        missing = [type(e).__name__ for e in self.estimators if not hasattr(e, method)]
        if missing:
            raise AttributeError(f"Ensemble.{method}: members {missing} do not provide it")
        return torch.stack([getattr(estimator, method)(*args) for estimator in self.estimators])

    def log_ratio_with_uncertainty(self, x, theta0, theta1) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, standard deviation) over the members of log r̂(x|θ0,θ1), each [n]."""
        values = self._stack("log_ratio", x, theta0, theta1)
        return values.mean(dim=0), values.std(dim=0) if len(values) > 1 else torch.zeros_like(values[0])

    def log_ratio(self, x, theta0, theta1) -> torch.Tensor:
        return self.log_ratio_with_uncertainty(x, theta0, theta1)[0]

    def score_with_uncertainty(self, x, theta) -> tuple[torch.Tensor, torch.Tensor]:
        values = self._stack("score", x, theta)
        return values.mean(dim=0), values.std(dim=0) if len(values) > 1 else torch.zeros_like(values[0])

    def score(self, x, theta) -> torch.Tensor:
        return self.score_with_uncertainty(x, theta)[0]

    def log_likelihood(self, x, theta) -> torch.Tensor:
        return self._stack("log_likelihood", x, theta).mean(dim=0)

    def save(self, path, overwrite: bool = False) -> None:
        save_state({"estimator": "Ensemble", "members": [e._state() for e in self.estimators]}, path, overwrite)

    @classmethod
    def _from_state(cls, state: dict) -> Ensemble:
        return cls([REGISTRY[member["estimator"]]._from_state(copy.copy(member)) for member in state["members"]])

    def __len__(self) -> int:
        return len(self.estimators)

    def __repr__(self) -> str:
        return f"Ensemble({self.estimators!r})"


REGISTRY["Ensemble"] = Ensemble
