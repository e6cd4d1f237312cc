"""Built-in simulators, each vectorised over a batch of runs in torch."""

from .galton import GaltonBoard
from .mixture import GaussianMixture

__all__ = ["GaltonBoard", "GaussianMixture", "BUILT_IN"]

BUILT_IN = {"galton": GaltonBoard, "mixture": GaussianMixture}
