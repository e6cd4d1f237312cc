"""Estimators of the likelihood ratio, the score, the likelihood and the posterior (docs/theory.md)."""

from .auto import Auto
from .base import Estimator, load
from .embeddings import EMBEDDINGS, pad_trials
from .ensemble import Ensemble
from .likelihood import NDE, SCANDAL
from .posterior import NPE, AugmentedNPE
from .ratio import ALICE, ALICES, CARL, CASCAL, RASCAL, ROLR
from .score import SALLINO, SALLY

__all__ = ["Estimator", "Ensemble", "load", "CARL", "ROLR", "ALICE", "CASCAL", "RASCAL", "ALICES", "NDE", "SCANDAL",
           "SALLY", "SALLINO", "NPE", "AugmentedNPE", "Auto", "EMBEDDINGS", "pad_trials"]
