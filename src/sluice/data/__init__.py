"""Data: AugmentedData in memory or on disk, its HDF5 files, the resumable writer, the executors and ``simulate``."""

from .augmented import AugmentedData, OnDiskData
from .simulation import DroppedRowsWarning, MiningError, ResumeError, WorkerCrashError, simulate

__all__ = ["AugmentedData", "DroppedRowsWarning", "MiningError", "OnDiskData", "ResumeError", "WorkerCrashError",
           "simulate"]
