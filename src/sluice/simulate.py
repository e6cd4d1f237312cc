"""sluice.simulate: draw θ, run the simulator in seeded batches, mine the joint quantities, collect rows."""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .data import AugmentedData
from .mining import DEFAULT_FD_STEP, mine
from .priors import check_prior, outside_support, parameter_scale, sample_prior
from .simulator import Simulator

__all__ = ["simulate", "MiningError", "DroppedRowsWarning"]


class MiningError(RuntimeError):
    """Too many simulated rows had NaN or inf in x, log r or t for the run to go on."""


class DroppedRowsWarning(UserWarning):
    """Some simulated rows had NaN or inf in x, log r or t and were left out."""


@dataclass
class _Batch:
    data: AugmentedData
    dropped: dict  # field -> rows dropped because of it


def batch_seeds(seed: int, index: int) -> tuple[int, int, int]:
    """Three independent 64-bit seeds for batch ``index``: the prior draws, the generator handed to
    ``sample``, and torch's global generator (for simulators that ignore the one they are handed). The data
    depend on the seed and the batch layout only, never on which worker runs a batch or in what order."""
    seeds = np.random.SeedSequence(seed, spawn_key=(index,)).generate_state(3, np.uint64)
    return int(seeds[0]), int(seeds[1]), int(seeds[2])


def _check_output(simulator: Simulator, x, z, m: int) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not torch.is_tensor(x) or x.ndim < 2 or x.shape[0] != m:
        shape = list(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"{simulator.name}.sample must return x of shape [n, d] with n = {m}, got {shape}")
    latents = z.values() if isinstance(z, dict) else [z]
    for value in latents:
        if not torch.is_tensor(value) or value.ndim == 0 or value.shape[0] != m:
            raise ValueError(f"{simulator.name}.sample must return z as a tensor or a dict of tensors with "
                             f"leading size n = {m}")
    return x.to(torch.float32)


def _simulate_batch(simulator: Simulator, prior, reference, start: int, stop: int, seed: int, index: int,
                    fd_step: torch.Tensor) -> _Batch:
    m = stop - start
    prior_seed, simulator_seed, global_seed = batch_seeds(seed, index)
    draws = sample_prior(prior, m if reference is not None else 2 * m, prior_seed)
    theta0 = draws[:m]
    theta1 = reference.expand(m, -1).clone() if reference is not None else draws[m:]
    y = (torch.arange(start, stop) % 2).to(torch.float32)  # alternate θ0 and θ1: half the rows each
    theta_run = torch.where(y[:, None] == 0, theta0, theta1)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.default_generator.manual_seed(global_seed)  # simulators using the global generator stay reproducible
        generator = torch.Generator().manual_seed(simulator_seed)
        x, z = simulator.sample(theta_run, generator=generator)
    x = _check_output(simulator, x, z, m)
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


def _progress_bar(enabled: bool | None, n_batches: int):
    if enabled is None:
        enabled = n_batches > 1 and sys.stderr.isatty()
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    transient=True)


def simulate(simulator: Simulator, prior, n: int, reference=None, seed: int = 0, batch_size: int | None = None,
             progress: bool | None = None, max_dropped_fraction: float | None = None,
             fd_step: float = DEFAULT_FD_STEP) -> AugmentedData:
    """Simulate n runs and mine their joint log ratio and joint scores.

    θ0 ~ prior; θ1 = ``reference`` where given, else an independent prior draw; rows alternate between
    x drawn at θ0 (y = 0) and at θ1 (y = 1). Every row carries log r(x,z|θ0,θ1), t(x,z|θ0) and
    t(x,z|θ1) when the simulator has ``joint_log_prob`` (otherwise the joint fields are None: black-box
    data). The same ``seed`` and ``batch_size`` give identical tensors.

    Rows with NaN or inf in x, log r or t are dropped with a ``DroppedRowsWarning`` giving the count;
    once more than ``max_dropped_fraction`` of n are dropped (default: the simulator's own
    ``max_dropped_fraction``, 1% unless it says otherwise) the run stops with ``MiningError``.
    ``progress``: a progress bar on stderr (default: when stderr is a terminal and there are several
    batches). ``fd_step``: the finite-difference step, a fraction of each parameter's prior scale, used
    only for simulators whose joint_log_prob is not differentiable.
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
    fd_step_absolute = fd_step * parameter_scale(prior)
    if max_dropped_fraction is None:
        max_dropped_fraction = getattr(simulator, "max_dropped_fraction", 0.01)

    bounds = list(range(0, n, batch_size)) + [n]
    batches, dropped = [], {}
    bar = _progress_bar(progress, len(bounds) - 1)
    task = bar.add_task("simulate", total=n) if bar is not None else None
    if bar is not None:
        bar.start()
    try:
        for index, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            batch = _simulate_batch(simulator, prior, reference, start, stop, seed, index, fd_step_absolute)
            batches.append(batch.data)
            for name, count in batch.dropped.items():
                dropped[name] = dropped.get(name, 0) + count
            total_dropped = stop - sum(len(part) for part in batches)
            if total_dropped > max_dropped_fraction * n:
                reasons = ", ".join(f"{name}: {count}" for name, count in dropped.items() if count)
                raise MiningError(
                    f"{simulator.name}: {total_dropped} of the first {stop} rows had NaN or inf ({reasons}), more "
                    f"than max_dropped_fraction = {max_dropped_fraction:g} of n = {n}. The simulator or its "
                    f"joint_log_prob breaks down somewhere in the prior; run sluice.check_simulator to look.")
            if bar is not None:
                bar.update(task, completed=stop)
    finally:
        if bar is not None:
            bar.stop()
    data = AugmentedData.concatenate(batches)
    if len(data) < n:
        reasons = ", ".join(f"{name}: {count}" for name, count in dropped.items() if count)
        warnings.warn(f"{simulator.name}: dropped {n - len(data)} of {n} rows with NaN or inf ({reasons}); "
                      f"the data hold {len(data)} rows", DroppedRowsWarning, stacklevel=2)
    return data
