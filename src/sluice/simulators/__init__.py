"""Built-in simulators, each vectorised over a batch of runs in torch."""

from .galton import GaltonBoard
from .lotka_volterra import LotkaVolterra
from .mixture import GaussianMixture

__all__ = ["GaltonBoard", "GaussianMixture", "LotkaVolterra", "BUILT_IN"]

BUILT_IN = {"galton": GaltonBoard, "mixture": GaussianMixture, "lotka_volterra": LotkaVolterra}
