"""Data: AugmentedData in memory or on disk, its HDF5 files, the resumable writer, the executors and ``simulate``."""

from .augmented import AugmentedData, OnDiskData
from .generator_files import read_lhe, read_root
from .simulation import DroppedRowsWarning, MiningError, ResumeError, WorkerCrashError, simulate

__all__ = ["AugmentedData", "DroppedRowsWarning", "MiningError", "OnDiskData", "ResumeError", "WorkerCrashError",
           "read_lhe", "read_root", "simulate"]
