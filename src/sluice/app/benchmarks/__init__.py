"""Benchmarks against exact likelihoods: tasks and the sample-efficiency study."""

from .tasks import TASKS, GaltonTask, MixtureTask

__all__ = ["TASKS", "GaltonTask", "MixtureTask"]
