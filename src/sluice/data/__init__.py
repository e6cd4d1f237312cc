"""Data: AugmentedData in memory or on disk, its HDF5 files, the resumable writer, the executors and ``simulate``."""

from .augmented import AugmentedData
from .file_view import OnDiskData
from .simulation import DroppedRowsWarning, MiningError, ResumeError, WorkerCrashError, simulate

__all__ = ["AugmentedData", "DroppedRowsWarning", "MiningError", "OnDiskData", "ResumeError", "WorkerCrashError",
           "simulate"]
