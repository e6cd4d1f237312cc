"""What the command line's values name: a simulator (built-in name or ``module:Class``), a prior (``box:LOW:HIGH``,
``point:THETA``), a model (a file from `sluice train`, or ``exact:SIMULATOR``), an estimator class, a list of
numbers. Shared by the commands of ``cli`` and the modules that carry out their work."""

from __future__ import annotations

import importlib

from .. import simulators
from ..simulators import priors
from ..simulators.base import Simulator

__all__ = ["load_simulator", "parse_vector", "parse_prior", "estimator_class", "load_model"]


def load_simulator(spec: str) -> Simulator:
    """A built-in name (``galton``, ``mixture`` or the class name) or ``module:Class``."""
    by_name = dict(simulators.BUILT_IN)
    by_name.update({cls.__name__.lower(): cls for cls in simulators.BUILT_IN.values()})
    if spec.lower() in by_name:
        return by_name[spec.lower()]()
    if ":" not in spec:
        raise ValueError(f"unknown simulator {spec!r}: use one of {sorted(simulators.BUILT_IN)} or module:Class")
    module_name, class_name = spec.split(":", 1)
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot load simulator {spec!r}: {error}") from None
    instance = cls() if isinstance(cls, type) else cls
    if not isinstance(instance, Simulator):
        raise TypeError(f"{spec} is not a sluice.Simulator")
    return instance


def parse_vector(text: str) -> list[float]:
    try:
        return [float(value) for value in text.split(",")]
    except ValueError:
        raise ValueError(f"cannot read {text!r} as comma-separated numbers") from None


def parse_prior(spec: str | None, simulator: Simulator | None):
    """``box:LOW:HIGH`` or ``point:THETA`` with comma-separated vectors; default (``spec`` None): the simulator's
    own."""
    if spec is None:
        if not hasattr(simulator, "default_prior"):
            raise ValueError(f"{getattr(simulator, 'name', 'the model')} has no default prior; give --prior "
                             "box:LOW:HIGH")
        return simulator.default_prior()
    kind, _, rest = spec.partition(":")
    if kind == "box" and rest.count(":") == 1:
        low, high = rest.split(":")
        return priors.BoxUniform(parse_vector(low), parse_vector(high))
    if kind == "point" and rest:
        return priors.Point(parse_vector(rest))
    raise ValueError(f"cannot read prior {spec!r}: use box:LOW:HIGH or point:THETA (comma-separated vectors)")


def training_prior(cls: type, simulator_name: str | None, settings: dict | None, spec: str | None):
    """The prior a posterior estimator is fit under: ``spec`` (box:LOW:HIGH, or "flat"), else the data's simulator's
    default prior, used only if the file's ``settings`` record that its θ were drawn from exactly that prior (the
    digest of its draws). A given ``spec`` that contradicts the file's record is refused: the posterior would be
    wrong."""
    from ..data.writer import prior_digest

    recorded = ((settings or {}).get("prior") or {}).get("draws_sha256")
    if spec == "flat":
        return "flat"
    if spec is not None:
        prior = parse_prior(spec, None)
        if recorded is not None and prior_digest(prior) != recorded:
            raise ValueError(f"--prior {spec} is not the prior this data was simulated with (its file records "
                             f"{(settings or {}).get('about', {}).get('prior', 'another prior')}); {cls.__name__} "
                             "would learn a posterior under the wrong prior")
        return prior
    try:
        simulator = load_simulator(simulator_name) if simulator_name else None
    except (ValueError, TypeError):
        simulator = None
    default = simulator.default_prior() if hasattr(simulator, "default_prior") else None
    if default is not None and recorded is not None and prior_digest(default) == recorded:
        return default
    raise ValueError(f"{cls.__name__} learns the posterior under the prior the data's θ were drawn from, and this "
                     "file does not record one that sluice can rebuild: give --prior box:LOW:HIGH (or --prior flat)")


def estimator_class(name: str) -> type:
    """An estimator class of ``sluice.estimators`` by name, any case (ALICES, alices, …)."""
    from .. import estimators

    # the composites (Ensemble, Auto) are built in Python, not trained by `sluice train`
    names = [n for n in estimators.__all__ if n not in ("Estimator", "Ensemble", "Auto", "load")
             and isinstance(getattr(estimators, n), type) and issubclass(getattr(estimators, n), estimators.Estimator)]
    by_name = {n.lower(): getattr(estimators, n) for n in names}
    if name.lower() not in by_name:
        raise ValueError(f"unknown method {name!r}: use one of {', '.join(names)}")
    return by_name[name.lower()]


def load_model(spec: str):
    """A model file written by `sluice train` (or Estimator.save), or ``exact:SIMULATOR`` for the exact likelihood
    of a simulator that has one (the truth to compare with)."""
    from ..estimators import load
    from ..inference import ExactLikelihood

    if spec.startswith("exact:"):
        return ExactLikelihood(load_simulator(spec[len("exact:"):]))
    return load(spec)
