"""sluice.simulate: draw θ, run the simulator in seeded batches, mine the joint quantities, collect the rows —
in memory, or streamed into an HDF5 file that a rerun resumes; in this process, local workers or on Dask.

Every batch is a pure function of (seed, batch index, batch layout): ``batch_seeds`` gives its seeds, so the rows
do not depend on where, when or in what order batches run. That one fact makes the rest simple: workers return
batches in any order and they are stored by index; a resumed run redoes only the missing batches and gets the
same file; 1, 2 or 8 workers, or a Dask cluster, give the same data. Streaming and resume: ``writer.py``;
workers and Dask: ``executors.py``; the file: ``storage.py``; its lazy reader: ``OnDiskData`` (``augmented.py``).
"""

from __future__ import annotations

import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from ..mining.joint import DEFAULT_FD_STEP, mine
from ..seeding import spawn_seeds
from ..simulators.base import Simulator, sample_seeded
from ..simulators.priors import check_prior, outside_support, parameter_scale, sample_prior
from .augmented import AugmentedData
from .executors import WorkerCrashError, batch_runner
from .writer import Checkpoint, ResumeError, describe_run

__all__ = ["simulate", "MiningError", "DroppedRowsWarning", "ResumeError", "WorkerCrashError"]


# The rows must not depend on the machine or the backend: torch's reductions may round differently with another
# thread count (measured: 1 row in 20 000 of Galton's log r and t differs by an ulp between 1 and 2 threads), so
# every batch runs on one thread and parallelism comes from workers. One thread is also the faster on small
# tensors when anything else runs (measured under load: Galton 880k rows/s on 1 thread, 44k on 2).
SIMULATION_THREADS = 1


class MiningError(RuntimeError):
    """Too many simulated rows had NaN or inf in x, log r or t for the run to go on."""


class DroppedRowsWarning(UserWarning):
    """Some simulated rows had NaN or inf in x, log r or t and were left out."""


@dataclass
class _Batch:
    data: AugmentedData
    dropped: dict  # field -> rows dropped because of it


@dataclass
class BatchResult:
    """One batch's rows as numpy arrays (they pickle plainly between processes) and its dropped counts."""

    index: int
    start: int
    stop: int
    fields: dict
    dropped: dict


def batch_seeds(seed: int, index: int) -> tuple[int, int, int]:
    """Three independent 64-bit seeds for batch ``index``: the prior draws, the generator handed to
    ``sample``, and torch's global generator (for simulators that ignore the one they are handed). The data
    depend on the seed and the batch layout only, never on which worker runs a batch or in what order."""
    return spawn_seeds(seed, index, count=3)


@contextmanager
def _simulation_threads():
    """Every batch runs on SIMULATION_THREADS torch threads, wherever it runs (this process, a worker, Dask)."""
    before = torch.get_num_threads()
    if before != SIMULATION_THREADS:
        torch.set_num_threads(SIMULATION_THREADS)
    try:
        yield
    finally:
        if before != SIMULATION_THREADS:
            torch.set_num_threads(before)


def _simulate_batch(simulator: Simulator, prior, reference, start: int, stop: int, seed: int, index: int,
                    fd_step: torch.Tensor) -> _Batch:
    with _simulation_threads():
        return _simulate_batch_here(simulator, prior, reference, start, stop, seed, index, fd_step)


def _simulate_batch_here(simulator: Simulator, prior, reference, start: int, stop: int, seed: int, index: int,
                         fd_step: torch.Tensor) -> _Batch:
    m = stop - start
    prior_seed, simulator_seed, global_seed = batch_seeds(seed, index)
    draws = sample_prior(prior, m if reference is not None else 2 * m, prior_seed)
    theta0 = draws[:m]
    theta1 = reference.expand(m, -1).clone() if reference is not None else draws[m:]
    y = (torch.arange(start, stop) % 2).to(torch.float32)  # alternate θ0 and θ1: half the rows each
    theta_run = torch.where(y[:, None] == 0, theta0, theta1)
    x, z = sample_seeded(simulator, theta_run, simulator_seed, global_seed)
    fields = dict(theta0=theta0, theta1=theta1, y=y, x=x)
    bad_by_field = {"x": ~torch.isfinite(x.reshape(m, -1)).all(dim=1)}
    if simulator.has_joint_log_prob:
        joint = mine(simulator, x, z, theta0, theta1, fd_step)
        fields.update(log_r_xz=joint.log_r_xz, t_xz0=joint.t_xz0, t_xz1=joint.t_xz1)
        bad_by_field["log r"] = ~torch.isfinite(joint.log_r_xz)
        bad_by_field["t"] = ~(torch.isfinite(joint.t_xz0).all(dim=1) & torch.isfinite(joint.t_xz1).all(dim=1))
    bad = torch.stack(list(bad_by_field.values())).any(dim=0)
    if bad.any():
        fields = {name: value[~bad] for name, value in fields.items()}
    # every field is float32 of the documented shape and finite: no need to check it all again
    data = AugmentedData._trusted(fields, tuple(simulator.parameter_names), simulator.name)
    return _Batch(data, {name: int(mask.sum()) for name, mask in bad_by_field.items()})


@dataclass
class BatchJob:
    """``job(index)`` simulates batch ``index``, rows ``bounds[index]`` to ``bounds[index + 1]``: what workers run."""

    simulator: Simulator
    prior: object
    reference: torch.Tensor | None
    seed: int
    fd_step: torch.Tensor
    bounds: list

    def __call__(self, index: int) -> BatchResult:
        start, stop = self.bounds[index], self.bounds[index + 1]
        batch = _simulate_batch(self.simulator, self.prior, self.reference, start, stop, self.seed, index,
                                self.fd_step)
        fields = {name: None if value is None else value.numpy() for name, value in batch.data.fields().items()}
        return BatchResult(index, start, stop, fields, batch.dropped)

    def data(self, result: BatchResult) -> AugmentedData:
        fields = {name: None if value is None else torch.from_numpy(value) for name, value in result.fields.items()}
        return AugmentedData._trusted(fields, tuple(self.simulator.parameter_names), self.simulator.name)


class _Tally:
    """Rows simulated, kept and dropped so far; stops the run once more than the allowed share is dropped."""

    def __init__(self, name: str, n: int, max_dropped_fraction: float):
        self.name, self.n, self.max_dropped_fraction = name, n, max_dropped_fraction
        self.simulated, self.kept, self.dropped = 0, 0, {}

    def reasons(self) -> str:
        return ", ".join(f"{name}: {count}" for name, count in self.dropped.items() if count)

    def add(self, simulated: int, kept: int, dropped: dict) -> None:
        self.simulated += simulated
        self.kept += kept
        for name, count in dropped.items():
            self.dropped[name] = self.dropped.get(name, 0) + count
        lost = self.simulated - self.kept
        if lost > self.max_dropped_fraction * self.n:
            raise MiningError(
                f"{self.name}: {lost} of the {self.simulated} rows simulated so far had NaN or inf ({self.reasons()}), "
                f"more than max_dropped_fraction = {self.max_dropped_fraction:g} of n = {self.n}. The simulator or "
                "its joint_log_prob breaks down somewhere in the prior; run sluice.check_simulator to look.")


def _progress_bar(enabled: bool | None, n_batches: int):
    if enabled is None:
        enabled = n_batches > 1 and sys.stderr.isatty()
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    transient=True)


def _run(job: BatchJob, pending, keep, tally: _Tally, workers, scheduler, progress) -> None:
    """Run the ``pending`` batches, handing each finished one to ``keep(result, data)`` as it comes."""
    bar = _progress_bar(progress, len(job.bounds) - 1)
    if bar is not None:
        task = bar.add_task("simulate", total=tally.n, completed=tally.simulated)
        bar.start()
    try:
        with batch_runner(job, workers, scheduler) as results:
            for result in results(pending):
                data = job.data(result)
                keep(result, data)
                tally.add(result.stop - result.start, len(data), result.dropped)
                if bar is not None:
                    bar.update(task, completed=tally.simulated)
    finally:
        if bar is not None:
            bar.stop()


def simulate(simulator: Simulator, prior, n: int, reference=None, seed: int = 0, batch_size: int | None = None,
             progress: bool | None = None, max_dropped_fraction: float | None = None,
             fd_step: float | None = None, path=None, overwrite: bool = False, workers: int | None = None,
             scheduler=None) -> AugmentedData:
    """Simulate n runs and mine their joint log ratio and joint scores.

    θ0 ~ prior; θ1 = ``reference`` where given, else an independent prior draw; rows alternate between
    x drawn at θ0 (y = 0) and at θ1 (y = 1). Every row carries log r(x,z|θ0,θ1), t(x,z|θ0) and
    t(x,z|θ1) when the simulator has ``joint_log_prob`` (otherwise the joint fields are None: black-box
    data). The same ``seed`` and ``batch_size`` give identical tensors, wherever the batches run.

    Rows with NaN or inf in x, log r or t are dropped with a ``DroppedRowsWarning`` giving the count;
    once more than ``max_dropped_fraction`` of n are dropped (default: the simulator's own
    ``max_dropped_fraction``, 1% unless it says otherwise) the run stops with ``MiningError``.
    ``progress``: a progress bar on stderr (default: when stderr is a terminal and there are several
    batches). ``fd_step``: the finite-difference step, a fraction of each parameter's prior scale, used
    only for simulators whose joint_log_prob is not differentiable (default: the simulator's own ``fd_step``,
    as ``from_ppx`` sets it, else DEFAULT_FD_STEP = 1e-3).

    ``path``: stream the batches to this HDF5 file as they finish and return it opened lazily
    (``sluice.data.OnDiskData``, an AugmentedData whose rows stay on disk). Each batch is committed
    atomically; after a crash or kill, the same call again keeps the committed batches, redoes the rest and
    writes the same file as an uninterrupted run (``writer.py``). The same call on a finished file
    returns it. Another call on a path with a file or an unfinished run is refused (``FileExistsError``,
    ``ResumeError``) unless ``overwrite=True``, which starts afresh.

    ``workers``: run the batches in this many local processes; ``scheduler``: on a Dask cluster, given by
    its address (``"tcp://host:8786"``) or a ``dask.distributed.Client`` (``pip install 'sluice-sbi[dask]'``).
    The simulator and prior must pickle. A dead worker's batches are run again (``executors.py``).
    """
    if not isinstance(simulator, Simulator):
        raise TypeError(f"simulate needs a sluice.Simulator, got {type(simulator).__name__}; subclass "
                        "sluice.Simulator with sample() and joint_log_prob()")
    p = simulator.n_parameters
    if p == 0:
        raise ValueError(f"{simulator.name} declares no parameter_names")
    check_prior(prior, p)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"simulate: n must be a positive whole number, got {n!r}")
    n = int(n)
    batch_size = int(batch_size or getattr(simulator, "default_batch_size", 10_000))
    if batch_size < 1:
        raise ValueError(f"simulate: batch_size must be positive, got {batch_size}")
    if reference is not None:
        reference = torch.as_tensor(reference, dtype=torch.float32).reshape(-1)
        if reference.shape != (p,):
            raise ValueError(f"simulate: reference must have one entry per parameter ({p}), got {reference.numel()}")
        if outside_support(prior, reference[None])[0]:
            raise ValueError(f"simulate: reference {reference.tolist()} lies outside the prior's support ({prior})")
    if fd_step is None:
        fd_step = float(getattr(simulator, "fd_step", DEFAULT_FD_STEP))
    fd_step_absolute = fd_step * parameter_scale(prior)
    if max_dropped_fraction is None:
        max_dropped_fraction = getattr(simulator, "max_dropped_fraction", 0.01)

    bounds = list(range(0, n, batch_size)) + [n]
    n_batches = len(bounds) - 1
    job = BatchJob(simulator, prior, reference, seed, fd_step_absolute, bounds)
    tally = _Tally(simulator.name, n, max_dropped_fraction)
    if path is None:
        parts = {}
        _run(job, range(n_batches), lambda result, data: parts.__setitem__(result.index, data), tally, workers,
             scheduler, progress)
        data = AugmentedData.concatenate([parts[index] for index in range(n_batches)])
    else:
        checkpoint = Checkpoint(path, describe_run(simulator, prior, n, seed, batch_size, reference, fd_step),
                                n_batches)
        if checkpoint.start(overwrite):
            return AugmentedData.open(path)
        committed = checkpoint.committed()
        for index, batch in sorted(committed.items()):
            tally.add(bounds[index + 1] - bounds[index], batch.rows, batch.dropped)
        pending = [index for index in range(n_batches) if index not in committed]

        def commit(result: BatchResult, data: AugmentedData) -> None:
            checkpoint.commit(result.index, result.start, result.stop, data, result.dropped)

        _run(job, pending, commit, tally, workers, scheduler, progress)
        checkpoint.assemble(tally.dropped)
        data = AugmentedData.open(path)
    if len(data) < n:
        warnings.warn(f"{simulator.name}: dropped {n - len(data)} of {n} rows with NaN or inf ({tally.reasons()}); "
                      f"the data hold {len(data)} rows", DroppedRowsWarning, stacklevel=2)
    return data
