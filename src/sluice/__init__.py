"""sluice: simulation-based inference that mines the joint likelihood ratio and joint score from simulators."""

from . import estimators, inference, morphing, priors, simulators, weighted_events
from .data import AugmentedData
from .doctor import check_simulator
from .estimators import load
from .morphing import Morphing
from .pyro import from_pyro
from .simulate import simulate
from .simulator import Simulator
from .weighted_events import WeightedEvents

__all__ = ["AugmentedData", "Morphing", "Simulator", "WeightedEvents", "check_simulator", "estimators", "from_pyro",
           "inference", "load", "morphing", "priors", "simulate", "simulators", "weighted_events"]
__version__ = "0.1.0"
