"""Estimators of the likelihood ratio, the score and the likelihood (REFERENCE.md §2)."""

from .base import Estimator, load
from .ratio import ALICE, ALICES, CARL, CASCAL, RASCAL, ROLR

__all__ = ["Estimator", "load", "CARL", "ROLR", "ALICE", "CASCAL", "RASCAL", "ALICES"]
