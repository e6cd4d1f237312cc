"""from_pyro: a Pyro model that takes θ as a tensor becomes a sluice Simulator (trace to sample, replay to re-score).

Pyro is imported only when a Pyro simulator is built or run, so ``import sluice`` works without it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch

from ..seeding import seeded_global_generator
from .base import Simulator, as_theta_batch

__all__ = ["from_pyro", "PyroSimulator"]

INSTALL_HINT = 'sluice.from_pyro needs Pyro: pip install "sluice-sbi[pyro]"'


def _require_pyro() -> None:
    try:
        import pyro.poutine  # noqa: F401
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error


def _is_scored(site: dict) -> bool:
    """A sample site with a density: not a plate's index draw, not a ``pyro.deterministic`` value."""
    from pyro.poutine.util import site_is_subsample

    return site["type"] == "sample" and not site_is_subsample(site) and not site["infer"].get("_deterministic")


def _per_run_size(shape: torch.Size, n: int, name: str) -> int:
    """Values per run at a site of ``shape`` [n, ...]; the runs must be the leading dimension."""
    if len(shape) == 0 or shape[0] != n:
        raise ValueError(f"from_pyro: sample site {name!r} has shape {list(shape)}, but every site must have the "
                         f"runs as its leading dimension (size n = {n}): put it inside pyro.plate(..., n) over the "
                         "runs, with that plate leftmost")
    return math.prod(shape[1:])


@functools.cache
def _replay_handler():
    """The Pyro effect handler that pins every random choice to the stored value (built once, Pyro imported)."""
    from pyro.poutine.messenger import Messenger
    from pyro.poutine.util import site_is_subsample

    class ReplayRun(Messenger):
        """Sets the value of each sample site from z (latents) or from x's columns (observed sites, in the
        order the model reaches them), detached, and marks it observed so that it is scored, never drawn."""

        def __init__(self, latents: dict, x: torch.Tensor, observed: tuple[str, ...]):
            super().__init__()
            self.latents, self.x, self.observed, self.column = latents, x, observed, 0

        def _pyro_sample(self, msg) -> None:
            name, n = msg["name"], self.x.shape[0]
            if site_is_subsample(msg):  # a plate's indices, not a random choice of the run
                return
            if name in self.observed:
                shape = msg["fn"].batch_shape + msg["fn"].event_shape
                size = _per_run_size(shape, n, name)
                columns = self.x[:, self.column:self.column + size]
                self.column += size
                if msg["is_observed"]:  # the model sets it (pyro.deterministic, obs=): nothing to pin
                    return
                value = columns.reshape(shape)
            elif msg["is_observed"]:  # the model's own data or factors: scored as the model says
                return
            elif name in self.latents:
                value = self.latents[name]
            else:
                raise KeyError(f"from_pyro: z holds no value for the sample site {name!r} (z has "
                               f"{sorted(self.latents)}); the run cannot be re-scored")
            msg["value"] = value.detach()
            msg["is_observed"] = True

    return ReplayRun


class PyroSimulator(Simulator):
    """A Pyro model ``model(theta)`` as a sluice Simulator; build it with ``sluice.from_pyro``.

    Convention: ``model`` receives θ as a tensor ``[n, p]`` (columns in the order of ``parameter_names``)
    and simulates n independent runs at once: every sample site sits inside a ``pyro.plate`` of size n over
    the runs, so that its value (and its log-prob) has the runs as the *leading* dimension, ``[n, ...]``
    (use ``.to_event(k)`` for vector-valued draws; with nested plates put the runs plate leftmost).

    - x: the sites named in ``observed`` (default the site ``"x"``), each flattened to ``[n, d_site]`` and
      concatenated in the order the model reaches them. A site may be drawn (``pyro.sample``) or computed
      (``pyro.deterministic``, e.g. a summary of the latents).
    - z: ``{site name: value [n, ...]}`` for every other sample site the model draws; sites the model
      observes itself (``obs=``, ``pyro.factor``) and ``pyro.deterministic`` sites are not random choices.

    Re-scoring replays the run with every drawn site pinned to its stored value, detached:

        log p(x, z | θ) = Σ_sites Σ_(non-run dims) log p_site(value_site | parents; θ)  (scale and mask applied)
        t(x, z | θ)     = ∇θ log p(x, z | θ) with the values held fixed

    so a reparameterised draw contributes the score of its density, never a pathwise derivative.
    Deterministic sites add nothing (their density is a point mass at the value the latents imply).

    Randomness: Pyro draws from torch's global generator; ``sample(theta, generator)`` seeds it from
    ``generator`` for the duration of the call (and restores it after), so runs are reproducible.
    Only the CPU generator is seeded: a model that samples on a GPU is not reproducible from ``generator``.
    """

    def __init__(self, model: Callable, parameter_names: Sequence[str], observed: Sequence[str] = ("x",)):
        _require_pyro()  # fail here, with the install hint, rather than at the first sample
        if isinstance(observed, str):
            observed = (observed,)
        if not parameter_names or not observed:
            raise ValueError("from_pyro needs at least one parameter name and one observed site name")
        self.model = model
        self.parameter_names = tuple(parameter_names)
        self.observed = tuple(observed)

    @property
    def name(self) -> str:
        return getattr(self.model, "__name__", type(self.model).__name__)

    @staticmethod
    def _trace(model: Callable, theta: torch.Tensor):
        from pyro import poutine

        return poutine.trace(model).get_trace(theta)

    def sample(self, theta, generator=None):
        """Run the model once under a trace: x from the observed sites ``[n, d]`` float32, z the other draws."""
        theta = as_theta_batch(theta, None, self.n_parameters)
        n = theta.shape[0]
        if generator is None:
            trace = self._trace(self.model, theta)
        else:
            seed = int(torch.randint(0, 2**63 - 1, (), generator=generator))
            with seeded_global_generator(seed):
                trace = self._trace(self.model, theta)
        outputs, latents = [], {}
        for name, site in trace.nodes.items():
            if site["type"] != "sample":
                continue
            value = site["value"].detach()
            if name in self.observed:
                outputs.append(value.reshape(n, _per_run_size(value.shape, n, name)))
            elif _is_scored(site) and not site["is_observed"]:
                _per_run_size(value.shape, n, name)
                latents[name] = value
        missing = [name for name in self.observed if name not in trace.nodes]
        if missing:
            sites = [name for name, site in trace.nodes.items() if site["type"] == "sample"]
            raise ValueError(f"from_pyro: observed site(s) {missing} not in the model; its sample sites are {sites}")
        return torch.cat(outputs, dim=1).to(torch.float32), latents

    def joint_log_prob(self, x, z, theta):
        """log p(x, z | θ) ``[n]``: the model replayed at ``theta`` with every draw pinned to x and z."""
        x = torch.as_tensor(x)
        n = x.shape[0]
        theta = as_theta_batch(theta, n, self.n_parameters)
        handler = _replay_handler()(dict(z), x.reshape(n, -1), self.observed)
        trace = self._trace(handler(self.model), theta)
        if handler.column != x.reshape(n, -1).shape[1]:
            raise ValueError(f"from_pyro: x has {x.reshape(n, -1).shape[1]} columns per run, but the observed "
                             f"sites {list(self.observed)} hold {handler.column}")
        trace.compute_log_prob(lambda name, site: _is_scored(site))
        total = torch.zeros(n, dtype=theta.dtype, device=theta.device)
        for name, site in trace.nodes.items():
            if _is_scored(site):
                log_prob = site["log_prob"]
                total = total + log_prob.reshape(n, _per_run_size(log_prob.shape, n, name)).sum(dim=1)
        return total


def from_pyro(model: Callable, parameter_names: Sequence[str], observed: Sequence[str] = ("x",)) -> PyroSimulator:
    """Turn the Pyro model ``model(theta)`` (θ ``[n, p]``, runs in a ``pyro.plate`` of size n) into a Simulator.

    x is the site(s) named in ``observed``; z is every other sample site; ``joint_log_prob`` replays the
    stored values at another θ and sums the log-probs of every site per run (see ``PyroSimulator``).

    Example::

        import pyro, pyro.distributions as dist

        def model(theta):
            with pyro.plate("runs", theta.shape[0]):
                z = pyro.sample("z", dist.Normal(theta[:, 0], 1.0))
                pyro.sample("x", dist.Normal(z, 1.0))

        simulator = sluice.from_pyro(model, ["mu"])
        x, z = simulator.sample(torch.zeros(5, 1))        # x [5, 1], z = {"z": [5]}
        simulator.joint_log_prob(x, z, torch.ones(5, 1))  # [5]; its θ-gradient is z − θ

    Raises ImportError when Pyro is not installed (``pip install "sluice-sbi[pyro]"``).
    """
    return PyroSimulator(model, parameter_names, observed)
