"""sluice: simulation-based inference that mines the joint likelihood ratio and joint score from simulators."""

from . import estimators, inference, priors, simulators
from .data import AugmentedData
from .doctor import check_simulator
from .estimators import load
from .pyro import from_pyro
from .simulate import simulate
from .simulator import Simulator

__all__ = ["AugmentedData", "Simulator", "check_simulator", "estimators", "from_pyro", "inference", "load", "priors",
           "simulate", "simulators"]
__version__ = "0.1.0"
