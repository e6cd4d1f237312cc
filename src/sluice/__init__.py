"""sluice: simulation-based inference that mines the joint likelihood ratio and joint score from simulators.

The package is layered along the data flow; each layer imports only from the layers before it:
``simulators`` → ``mining`` → ``data`` → ``estimators`` → ``inference`` → ``plots`` → ``app`` (docs/design.md).
"""

import sys

from . import estimators, inference, simulators
from .data import AugmentedData, simulate, weighted_events
from .data.weighted_events import WeightedEvents
from .estimators import load
from .mining import check_simulator
from .simulators import PPXSimulator, Simulator, from_ppx, from_pyro, morphing, priors
from .simulators.morphing import Morphing

# the public namespaces that used to be modules at the top keep their import paths (`from sluice.priors import ...`)
sys.modules[__name__ + ".priors"] = priors
sys.modules[__name__ + ".morphing"] = morphing
sys.modules[__name__ + ".weighted_events"] = weighted_events

__all__ = ["AugmentedData", "Morphing", "PPXSimulator", "Simulator", "WeightedEvents", "check_simulator", "estimators",
           "from_ppx", "from_pyro", "inference", "load", "morphing", "priors", "simulate", "simulators",
           "weighted_events"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """``sluice.plots`` on first use: figures need matplotlib, which the numbers do not."""
    if name == "plots":
        import importlib

        return importlib.import_module(".plots", __name__)
    raise AttributeError(f"module 'sluice' has no attribute {name!r}")
