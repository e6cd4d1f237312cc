"""Built-in simulators, each vectorised over a batch of runs in torch."""

from .galton import GaltonBoard
from .hierarchical import HierarchicalGaussian
from .lensing import Lensing
from .lotka_volterra import LotkaVolterra
from .mixture import GaussianMixture
from .particle_toy import ParticleToy

__all__ = ["GaltonBoard", "GaussianMixture", "LotkaVolterra", "Lensing", "ParticleToy", "HierarchicalGaussian",
           "BUILT_IN"]

BUILT_IN = {"galton": GaltonBoard, "mixture": GaussianMixture, "lotka_volterra": LotkaVolterra,
            "lensing": Lensing, "particle_toy": ParticleToy,
            "hierarchical": HierarchicalGaussian}
