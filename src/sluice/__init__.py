"""sluice: simulation-based inference that mines the joint likelihood ratio and joint score from simulators."""

from . import priors, simulators
from .data import AugmentedData
from .doctor import check_simulator
from .simulate import simulate
from .simulator import Simulator

__all__ = ["AugmentedData", "Simulator", "check_simulator", "priors", "simulate", "simulators"]
__version__ = "0.1.0"
