"""PPX distributions as torch.distributions in float64: the controller's log-densities and its draws.

``to_torch`` maps each of the schema's eleven distributions to its torch.distributions twin (same
parametrisation: Beta(concentration1, concentration0) is α, β; Gamma and Exponential take a rate; Weibull is
(scale, concentration); Categorical's value is the index of a category). ``sample`` draws from a
``torch.Generator``, which torch.distributions cannot take, with the standard constructions written out;
``log_prob_sums`` scores many (distribution, value) pairs with one torch call per kind. A distribution that
sluice does not know is ``PPXUnknownDistributionError``; one that torch refuses to score is
``PPXDistributionError``, naming the pair.

Bernoulli and Binomial are scored exactly where probs is 0 or 1 (torch clamps probs away from them, which gives
an impossible value a finite log-probability):

    log Bernoulli(k; p)   = k log p + (1 − k) log(1 − p)
    log Binomial(k; n, p) = log C(n, k) + k log p + (n − k) log(1 − p)       (−∞ outside 0 ≤ k ≤ n)

with 0 · log 0 = 0, so that Bernoulli(0) gives k = 1 the log-probability −∞ and k = 0 the log-probability 0.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
import torch.distributions as D

from .errors import PPXDistributionError, PPXUnknownDistributionError
from .messages import DISTRIBUTIONS, Distribution

__all__ = ["to_torch", "sample", "log_prob", "log_prob_sums", "value_shape"]

class _ExactBernoulli(D.Bernoulli):
    """torch's Bernoulli, scored exactly at probs 0 and 1 (module notes)."""

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        probs, value = torch.broadcast_tensors(self.probs, value)
        return torch.xlogy(value, probs) + torch.special.xlog1py(1.0 - value, -probs)


class _ExactBinomial(D.Binomial):
    """torch's Binomial, scored exactly at probs 0 and 1 (module notes)."""

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        count, probs, value = torch.broadcast_tensors(self.total_count, self.probs, value)
        outside = (value < 0) | (value > count)
        inside = torch.where(outside, 0.0, value)  # keeps lgamma's arguments positive where the answer is −∞
        log_choose = torch.lgamma(count + 1) - torch.lgamma(inside + 1) - torch.lgamma(count - inside + 1)
        log_p = log_choose + torch.xlogy(inside, probs) + torch.special.xlog1py(count - inside, -probs)
        return torch.where(outside, -torch.inf, log_p)


_TORCH = {
    "Normal": lambda p: D.Normal(p["mean"], p["stddev"], validate_args=False),
    "Uniform": lambda p: D.Uniform(p["low"], p["high"], validate_args=False),
    "Categorical": lambda p: D.Categorical(probs=p["probs"], validate_args=False),
    "Poisson": lambda p: D.Poisson(p["rate"], validate_args=False),
    "Bernoulli": lambda p: _ExactBernoulli(probs=p["probs"], validate_args=False),
    "Beta": lambda p: D.Beta(p["concentration1"], p["concentration0"], validate_args=False),
    "Exponential": lambda p: D.Exponential(p["rate"], validate_args=False),
    "Gamma": lambda p: D.Gamma(p["concentration"], p["rate"], validate_args=False),
    "LogNormal": lambda p: D.LogNormal(p["loc"], p["scale"], validate_args=False),
    "Binomial": lambda p: _ExactBinomial(p["total_count"], probs=p["probs"], validate_args=False),
    "Weibull": lambda p: D.Weibull(p["scale"], p["concentration"], validate_args=False),
}
assert set(_TORCH) == set(DISTRIBUTIONS)


def _known(distribution) -> Distribution:
    if not isinstance(distribution, Distribution):
        kind = getattr(distribution, "kind", type(distribution).__name__)
        raise PPXUnknownDistributionError(f"{kind} is not a distribution sluice knows; PPX has "
                                          f"{', '.join(DISTRIBUTIONS)}")
    return distribution


def value_shape(distribution) -> tuple[int, ...]:
    """The shape of one draw: the parameters' broadcast shape (Categorical's probs without their last axis).

    >>> value_shape(Distribution("Categorical", probs=[[0.5, 0.5], [0.1, 0.9], [1.0, 0.0]]))
    (3,)
    """
    distribution = _known(distribution)
    shapes = [value.shape for value in distribution.parameters.values()]
    if distribution.kind == "Categorical":
        shapes = [shape[:-1] for shape in shapes]
    return tuple(np.broadcast_shapes(*shapes))


def _parameters(distribution: Distribution) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(value) for name, value in distribution.parameters.items()}


def to_torch(distribution: Distribution) -> D.Distribution:
    """The torch.distributions twin of a PPX distribution, in float64.

    >>> to_torch(Distribution("Normal", mean=0.0, stddev=2.0)).log_prob(torch.tensor(0.0, dtype=torch.float64))
    tensor(-1.6121, dtype=torch.float64)
    """
    distribution = _known(distribution)
    return _TORCH[distribution.kind](_parameters(distribution))


def _value_tensor(value) -> torch.Tensor:
    if torch.is_tensor(value):
        return value.detach().to(torch.float64)
    return torch.from_numpy(np.asarray(value, dtype=np.float64))


def log_prob(distribution: Distribution, value) -> torch.Tensor:
    """log p(value) elementwise, float64, over the distribution's batch shape."""
    torch_distribution = to_torch(distribution)
    value = _value_tensor(value)
    if distribution.kind == "Categorical":
        value = value.long()
    return torch_distribution.log_prob(value)


def _draw(kind: str, p: dict[str, np.ndarray], shape: tuple, generator: torch.Generator) -> np.ndarray:
    """One draw of shape ``shape`` from the parameters ``p`` (numpy, float64): torch supplies the random variates
    (from ``generator``), numpy the arithmetic (torch's per-call overhead dominates on a site's few values)."""

    def uniform():
        return torch.rand(shape, generator=generator, dtype=torch.float64).numpy()

    def standard_normal():
        return torch.randn(shape, generator=generator, dtype=torch.float64).numpy()

    def standard_exponential():
        return torch.empty(shape, dtype=torch.float64).exponential_(generator=generator).numpy()

    def tensor(value):
        return torch.from_numpy(np.array(np.broadcast_to(value, shape)))  # a writable copy; 0-d stays 0-d

    def standard_gamma(concentration):  # torch's Gamma sampler (Marsaglia and Tsang), the one that takes a generator
        return torch._standard_gamma(tensor(concentration), generator=generator).numpy()

    if kind == "Normal":
        return p["mean"] + p["stddev"] * standard_normal()
    if kind == "Uniform":
        return p["low"] + (p["high"] - p["low"]) * uniform()
    if kind == "Categorical":
        probs = torch.from_numpy(np.array(p["probs"].reshape(-1, p["probs"].shape[-1])))
        return torch.multinomial(probs, 1, generator=generator).numpy().astype(np.float64).reshape(shape)
    if kind == "Poisson":
        return torch.poisson(tensor(p["rate"]), generator=generator).numpy()
    if kind == "Bernoulli":
        return (uniform() < p["probs"]).astype(np.float64)
    if kind == "Beta":  # X / (X + Y), X ~ Gamma(α), Y ~ Gamma(β)
        x, y = standard_gamma(p["concentration1"]), standard_gamma(p["concentration0"])
        return x / (x + y)
    if kind == "Exponential":
        return standard_exponential() / p["rate"]
    if kind == "Gamma":
        return standard_gamma(p["concentration"]) / p["rate"]
    if kind == "LogNormal":
        return np.exp(p["loc"] + p["scale"] * standard_normal())
    if kind == "Binomial":
        return torch.binomial(tensor(p["total_count"]), tensor(p["probs"]), generator=generator).numpy()
    if kind == "Weibull":  # scale · E^(1/k), E ~ Exp(1): the inverse of the CDF 1 − exp(−(x/scale)^k)
        return p["scale"] * standard_exponential() ** (1.0 / p["concentration"])
    raise AssertionError(kind)  # _known has ruled it out


def sample(distribution: Distribution, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw (float64, of the distribution's batch shape) from ``generator`` (torch's global one if None).

    >>> value = sample(Distribution("Poisson", rate=[1.0, 30.0]), torch.Generator().manual_seed(0))
    >>> value.shape, value.dtype
    (torch.Size([2]), torch.float64)
    """
    distribution = _known(distribution)
    if generator is None:
        generator = torch.default_generator
    value = _draw(distribution.kind, distribution.parameters, value_shape(distribution), generator)
    return torch.from_numpy(np.asarray(value, dtype=np.float64))


def log_prob_sums(distributions: list, values: list) -> torch.Tensor:
    """Σ log p(value) over each value's elements, for each pair: ``[m]`` float64.

    Pairs of one kind and shapes are scored together, stacked along a new leading dimension: one torch call
    per group instead of one per pair (a run of a simulator may have thousands of sites). A group that torch
    refuses is scored pair by pair to find the culprit: ``PPXDistributionError`` with its index as ``pair``."""
    groups = defaultdict(list)
    for index, (distribution, value) in enumerate(zip(distributions, values, strict=True)):
        distribution = _known(distribution)
        value = np.asarray(value, dtype=np.float64)
        shapes = tuple(array.shape for array in distribution.parameters.values())
        groups[(distribution.kind, shapes, value.shape)].append((index, distribution, value))
    total = torch.zeros(len(distributions), dtype=torch.float64)
    for (kind, shapes, value_shape), members in groups.items():
        # the batch shape of one pair; each stacked parameter gets singleton dimensions after the leading one so
        # that it broadcasts against the others and the value as it did alone (Categorical's last is its events)
        batch_shapes = [shape[:-1] if kind == "Categorical" else shape for shape in shapes]
        batch_ndim = len(np.broadcast_shapes(value_shape, *batch_shapes))
        parameters = {}
        for name, shape, batch_shape in zip(DISTRIBUTIONS[kind], shapes, batch_shapes, strict=True):
            stacked = np.stack([member[1].parameters[name] for member in members])
            lifted = (len(members),) + (1,) * (batch_ndim - len(batch_shape)) + shape
            parameters[name] = torch.from_numpy(stacked.reshape(lifted))
        value = torch.from_numpy(np.stack([member[2] for member in members]))
        value = value.reshape((len(members),) + (1,) * (batch_ndim - len(value_shape)) + value_shape)
        if kind == "Categorical":
            value = value.long()
        try:
            scores = _TORCH[kind](parameters).log_prob(value)
        except Exception:  # e.g. a category index beyond the probs: find the pair, to name it
            for index, distribution, member_value in members:
                _log_prob_of_pair(index, distribution, member_value)
            raise
        indices = torch.tensor([member[0] for member in members])
        total[indices] = scores.reshape(len(members), -1).sum(dim=1)
    return total


def _log_prob_of_pair(index: int, distribution: Distribution, value: np.ndarray) -> torch.Tensor:
    try:
        return log_prob(distribution, value)
    except Exception as error:
        failure = PPXDistributionError.of(error, _Site(distribution))
        failure.pair = index  # the caller knows the pair's run and address
        raise failure from error


class _Site:
    """What PPXDistributionError.of reads from a message: its distribution (log_prob_sums has no address)."""

    def __init__(self, distribution: Distribution):
        self.distribution, self.address = distribution, None
