"""sluice: simulation-based inference that mines the joint likelihood ratio and joint score from simulators."""

from . import estimators, inference, priors, simulators
from .data import AugmentedData
from .doctor import check_simulator
from .estimators import load
from .simulate import simulate
from .simulator import Simulator

__all__ = ["AugmentedData", "Simulator", "check_simulator", "estimators", "inference", "load", "priors", "simulate",
           "simulators"]
__version__ = "0.1.0"
