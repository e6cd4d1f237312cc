"""The Simulator base class: the two methods a simulator implements so that sluice can mine it."""

from __future__ import annotations

import inspect

import numpy as np
import torch

from ..seeding import generator, seeded_global_generator

Latent = torch.Tensor | dict


class Simulator:
    """A stochastic simulator whose runs can be re-scored at another θ.

    Subclasses set ``parameter_names`` (which fixes p) and implement

    - ``sample(theta, generator=None) -> (x, z)``: ``theta`` is ``[n, p]``; ``x`` is ``[n, d]`` (or
      ``[n, ...]`` for images); ``z`` is a tensor or a dict of tensors, each with leading size n,
      holding every random choice of the run.
    - ``joint_log_prob(x, z, theta) -> [n]``: log p(x, z | θ), differentiable in θ with z held fixed.
      Terms that do not depend on θ may be left out; they cancel in log r(x,z|θ0,θ1) and t(x,z|θ).

    and, where it is tractable, ``log_likelihood(x, theta) -> [n]``, the exact log p(x | θ).

    Argument order: the value whose density is taken comes first, then what it is conditioned on, as
    everywhere in sluice (estimators' ``log_likelihood(x, theta)`` too). A subclass whose method still
    starts with ``theta`` (the old order) is a TypeError when the class is defined, so that
    an old simulator fails at once instead of scoring x at θ's place.

    Set ``differentiable = False`` on a simulator whose ``joint_log_prob`` cannot be differentiated
    (a numpy or compiled core): the joint score then comes from central finite differences.

    Example::

        class Exponential(sluice.Simulator):
            parameter_names = ("log_rate",)

            def sample(self, theta, generator=None):
                rate = theta[:, 0].exp()
                x = torch.empty(len(theta)).exponential_(generator=generator) / rate
                return x[:, None], {}

            def joint_log_prob(self, x, z, theta):
                rate = theta[:, 0].exp()
                return rate.log() - rate * x[:, 0]
    """

    parameter_names: tuple[str, ...] = ()
    differentiable: bool = True
    default_batch_size: int = 10_000  # rows per batch in sluice.simulate unless told otherwise
    # the share of rows sluice.simulate may drop for NaN/inf before it stops, unless told otherwise: raise it
    # for simulators that reject a known small share of runs by design (e.g. runaway runs stopped at a cap)
    max_dropped_fraction: float = 0.01

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _refuse_theta_first(cls)

    @property
    def name(self) -> str:
        """The simulator's name, stored with its data (the class name unless overridden)."""
        return type(self).__name__

    @property
    def n_parameters(self) -> int:
        return len(self.parameter_names)

    def sample(self, theta: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, Latent]:
        """Run the simulator once per row of ``theta`` [n, p], drawing from ``generator`` where given.

        Returns x [n, d] (or [n, ...]) and z: a tensor or a dict of tensors with leading size n that records every
        random choice of each run, enough to re-score the run at another θ with ``joint_log_prob``."""
        raise NotImplementedError(f"{self.name} does not implement sample(theta, generator)")

    def joint_log_prob(self, x: torch.Tensor, z: Latent, theta: torch.Tensor) -> torch.Tensor:
        """log p(x, z | θ) [n] of runs (x, z) at ``theta`` [n, p] (or [p]), differentiable in θ with z held fixed.

        Terms that do not depend on θ may be left out: they cancel in the joint ratio and the joint score."""
        raise NotImplementedError(
            f"{self.name} does not implement joint_log_prob(x, z, theta); only black-box methods can use it"
        )

    def log_likelihood(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """The exact log p(x | θ) [n], where it is tractable (toys and benchmarks); optional."""
        raise NotImplementedError(f"{self.name} has no tractable log_likelihood(x, theta)")

    @property
    def has_joint_log_prob(self) -> bool:
        return type(self).joint_log_prob is not Simulator.joint_log_prob

    @property
    def has_log_likelihood(self) -> bool:
        return type(self).log_likelihood is not Simulator.log_likelihood

    def __repr__(self) -> str:
        return f"{self.name}(parameters={list(self.parameter_names)})"


# each method whose argument order changed, and its value-first signature as the error message spells it
_VALUE_FIRST = {
    "joint_log_prob": "joint_log_prob(self, x, z, theta)",
    "log_likelihood": "log_likelihood(self, x, theta)",
}


def _refuse_theta_first(cls: type) -> None:
    """Raise TypeError when ``cls`` defines ``joint_log_prob`` or ``log_likelihood`` with ``theta`` first.

    That was the old argument order; called positionally in the new order, such a method
    would silently read x as θ, so it is refused when the class is defined rather than at the first call.
    """
    for method, expected in _VALUE_FIRST.items():
        function = vars(cls).get(method)
        if not callable(function):
            continue
        try:
            parameters = list(inspect.signature(function).parameters)
        except (TypeError, ValueError):  # a builtin or other callable without a readable signature
            continue
        if not isinstance(function, staticmethod):
            parameters = parameters[1:]  # self, whatever it is called
        if parameters[:1] == ["theta"]:
            raise TypeError(f"{cls.__qualname__}.{method}({', '.join(parameters)}): sluice simulators take the "
                            f"value first, then θ; define {expected} instead")


def as_theta_batch(theta, n: int | None, p: int, what: str = "theta") -> torch.Tensor:
    """Return ``theta`` as an ``[n, p]`` tensor; a ``[p]`` vector is broadcast to n rows.

    Floating tensors keep their dtype (and autograd graph); anything else becomes float32.
    """
    if not (torch.is_tensor(theta) and theta.is_floating_point()):
        theta = torch.as_tensor(theta, dtype=torch.float32)
    if theta.ndim == 0 and p == 1:
        theta = theta.reshape(1)
    if theta.ndim == 1:
        if theta.shape[0] != p:
            raise ValueError(f"{what} has {theta.shape[0]} entries, but the simulator has {p} parameters")
        theta = theta.expand(1 if n is None else n, p)
    elif theta.ndim != 2 or theta.shape[1] != p:
        raise ValueError(f"{what} must have shape [n, {p}] or [{p}], got {list(theta.shape)}")
    elif n is not None and theta.shape[0] not in (1, n):
        raise ValueError(f"{what} has {theta.shape[0]} rows but x has {n}")
    elif n is not None and theta.shape[0] == 1:
        theta = theta.expand(n, p)
    return theta


def check_sample_output(simulator: Simulator, x, z, n: int) -> torch.Tensor:
    """``x`` as float32 ``[n, ...]`` after checking what ``simulator.sample`` returned: x with n rows, and z a
    tensor or a dict of tensors with leading size n; anything else is a ValueError naming the simulator."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not torch.is_tensor(x) or x.ndim < 2 or x.shape[0] != n:
        shape = list(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"{simulator.name}.sample must return x of shape [n, d] with n = {n}, got {shape}")
    latents = z.values() if isinstance(z, dict) else [z]
    for value in latents:
        if not torch.is_tensor(value) or value.ndim == 0 or value.shape[0] != n:
            raise ValueError(f"{simulator.name}.sample must return z as a tensor or a dict of tensors with "
                             f"leading size n = {n}")
    return x.to(torch.float32)


def sample_seeded(simulator: Simulator, theta: torch.Tensor, simulator_seed: int, global_seed: int):
    """``simulator.sample(theta)`` reproducibly, without a graph: the generator it is handed comes from
    ``simulator_seed``, and torch's global generator (for simulators that ignore that generator) is seeded
    with ``global_seed`` in a fork. Returns (x checked as by ``check_sample_output``, z)."""
    with seeded_global_generator(global_seed), torch.no_grad():
        x, z = simulator.sample(theta, generator=generator(simulator_seed))
    return check_sample_output(simulator, x, z, theta.shape[0]), z
