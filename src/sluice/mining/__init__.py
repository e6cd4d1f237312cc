"""Mining: the joint log ratio and joint score of every run of a simulator, and the checks a new simulator needs."""

from .checks import SimulatorReport, check_simulator
from .joint import JointQuantities, mine

__all__ = ["JointQuantities", "SimulatorReport", "check_simulator", "mine"]
