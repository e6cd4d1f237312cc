"""Simulators: the Simulator base class, priors, the Pyro adapter, event-weight morphing, and the built-ins, each
vectorised over a batch of runs in torch."""

from . import morphing, priors, systematics
from .base import Simulator
from .galton import GaltonBoard
from .hierarchical import HierarchicalGaussian
from .lensing import Lensing
from .lotka_volterra import LotkaVolterra
from .mixture import GaussianMixture
from .particle_toy import ParticleToy
from .ppx import PPXSimulator, from_ppx
from .pyro import from_pyro
from .sbibm import (
    SBIBM_SIMULATORS,
    SbibmBernoulliGLM,
    SbibmGaussianLinear,
    SbibmGaussianLinearUniform,
    SbibmGaussianMixture,
    SbibmSLCP,
    SbibmTwoMoons,
    load_reference,
)
from .suite import SLCP, GammaShapeMixture, OverdispersedCounts, RotatedLinear, StudentT, UniformWidth
from .systematics import Interpolator, Nuisance, interpolate

__all__ = ["Simulator", "from_pyro", "from_ppx", "PPXSimulator", "priors", "morphing", "GaltonBoard", "GaussianMixture",
           "LotkaVolterra",
           "Lensing", "ParticleToy", "HierarchicalGaussian", "StudentT", "RotatedLinear",
           "OverdispersedCounts", "UniformWidth", "GammaShapeMixture", "SLCP", "BUILT_IN",
           "SbibmGaussianLinear", "SbibmGaussianLinearUniform", "SbibmSLCP", "SbibmGaussianMixture",
           "SbibmBernoulliGLM", "SbibmTwoMoons", "SBIBM_SIMULATORS", "load_reference",
           "systematics", "Nuisance", "interpolate", "Interpolator"]

BUILT_IN = {"galton": GaltonBoard, "mixture": GaussianMixture, "lotka_volterra": LotkaVolterra,
            "lensing": Lensing, "particle_toy": ParticleToy,
            "hierarchical": HierarchicalGaussian,
            # the benchmark task suite (docs/tasks.md): sluice.simulators.suite.SUITE_SIMULATORS
            "student_t": StudentT, "linear20": RotatedLinear, "counts": OverdispersedCounts, "support": UniformWidth,
            "shape": GammaShapeMixture, "slcp": SLCP,
            # sbibm's tasks opened (docs/sbibm.md): sluice.simulators.sbibm.SBIBM_SIMULATORS
            **{f"sbibm_{name}": cls for name, cls in SBIBM_SIMULATORS.items()}}
