"""The files of `sluice infer`: observed events in (.h5, .npy, .csv, .txt), a likelihood-ratio scan out
(scan.json, scan.csv and the q(θ) plot scan.png)."""

from __future__ import annotations

import csv
import json
import math
import os
import warnings

import numpy as np
import torch

from ..data.augmented import AugmentedData
from ..inference import Scan, wilks_threshold
from ..plots import plot_scan

__all__ = ["OUTPUT_FILES", "read_observed", "parse_grid", "scan_summary", "write_scan"]

OUTPUT_FILES = ("scan.json", "scan.csv", "scan.png")


def read_observed(path: str) -> torch.Tensor:
    """Observed events x [n, d] from an AugmentedData file (.h5: its x), a NumPy array (.npy, shape [n] or
    [n, d]), or a text table (.csv comma-separated, .txt whitespace-separated; one event per row, an optional
    header line). Empty input and NaN or inf are errors."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such observed-events file: {path}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix in (".h5", ".hdf5"):
        x = AugmentedData.load(path).x.numpy()
    elif suffix == ".npy":
        try:
            x = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as error:
            raise ValueError(f"cannot read {path} as a NumPy array: {error}") from None
    elif suffix in (".csv", ".txt"):
        x = _read_text(path, "," if suffix == ".csv" else None)
    else:
        raise ValueError(f"cannot read observed events from {path}: use .h5 (AugmentedData), .npy, .csv or .txt")
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{path}: observed events must be numbers, got {x.dtype}")
    x = x[:, None] if x.ndim == 1 else x
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"{path}: no observed events (shape {list(x.shape)})")
    bad = ~np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1)
    if bad.any():
        raise ValueError(f"{path}: {int(bad.sum())} observed events hold NaN or inf (first at row {int(bad.argmax())})")
    return torch.as_tensor(x, dtype=torch.float32)


def _read_text(path: str, delimiter: str | None) -> np.ndarray:
    """A table of numbers, with one header line allowed as long as rows of numbers follow it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns about an empty table; the caller raises its own error
        try:
            return np.loadtxt(path, delimiter=delimiter, ndmin=2, dtype=np.float64)
        except ValueError as error:
            first = error
        try:
            table = np.loadtxt(path, delimiter=delimiter, ndmin=2, skiprows=1, dtype=np.float64)
        except ValueError:
            table = np.empty((0, 0))
    if table.size == 0:
        raise ValueError(f"cannot read {path} as a table of numbers: {first}")
    return table


def parse_grid(spec: str, n_parameters: int) -> torch.Tensor:
    """``LOW:HIGH:POINTS`` with comma-separated LOW and HIGH (one entry per parameter) and POINTS an integer or
    one per parameter, e.g. ``-1:-0.4:121`` or ``-1,-1:1,1:41``. Returns the grid [G, p]."""
    from ..inference import make_grid

    parts = spec.split(":")
    if len(parts) != 3:
        raise ValueError(f"cannot read grid {spec!r}: use LOW:HIGH:POINTS (comma-separated vectors)")
    try:
        low = [float(v) for v in parts[0].split(",")]
        high = [float(v) for v in parts[1].split(",")]
        points = [int(v) for v in parts[2].split(",")]
    except ValueError:
        raise ValueError(f"cannot read grid {spec!r}: LOW and HIGH are numbers, POINTS whole numbers") from None
    points = points * n_parameters if len(points) == 1 else points
    if not len(low) == len(high) == len(points) == n_parameters:
        raise ValueError(f"grid {spec!r} must give one LOW, HIGH (and POINTS) per parameter: the model has "
                         f"{n_parameters}")
    if any(a >= b for a, b in zip(low, high, strict=True)) or any(k < 2 for k in points):
        raise ValueError(f"grid {spec!r}: each LOW must be below its HIGH, with at least 2 points")
    if math.prod(points) > 1_000_000:
        raise ValueError(f"grid {spec!r} has {math.prod(points):,} points; at most 1,000,000")
    return make_grid(low, high, points)


def _clean(value: float) -> float | None:
    return value if math.isfinite(value) else None


def scan_summary(result: Scan, levels) -> dict:
    """The MLE and, per level, the Wilks threshold and the region: the interval (1-D, interpolated, null where it
    reaches the edge of the grid) or the extent of the grid points inside along each parameter."""
    names = list(result.parameter_names) or [f"theta_{j}" for j in range(result.grid.shape[1])]
    regions = {}
    for level in levels:
        entry = {"threshold": wilks_threshold(level, result.grid.shape[1])}
        if result.grid.shape[1] == 1:
            entry["interval"] = [_clean(v) for v in result.interpolated_interval(level)]
        entry["extent"] = {name: [_clean(v) for v in result.interval(level, parameter=j)]
                           for j, name in enumerate(names)}
        regions[f"{level:g}"] = entry
    return {"parameters": names, "n_events": result.n_events, "mle": dict(zip(names, result.mle.tolist(), strict=True)),
            "max_log_likelihood_ratio": result.max_log_likelihood_ratio, "grid_points": result.grid.shape[0],
            "regions": regions}


def write_scan(result: Scan, out_dir: str, levels, label: str, theta_true=None) -> dict:
    """Write scan.json (``scan_summary`` plus the model), scan.csv (θ, log L ratio and q per grid point) and, for
    one or two parameters, scan.png into ``out_dir``; returns the summary."""
    os.makedirs(out_dir, exist_ok=True)
    summary = {"model": label, **scan_summary(result, levels)}
    with open(os.path.join(out_dir, "scan.json"), "w") as file:
        json.dump(summary, file, indent=2)
    with open(os.path.join(out_dir, "scan.csv"), "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(summary["parameters"] + ["log_likelihood_ratio", "q"])
        for theta, value, q in zip(result.grid.tolist(), result.log_likelihood_ratio.tolist(), result.q.tolist(),
                                   strict=True):
            writer.writerow(theta + [value, q])
    if result.grid.shape[1] <= 2:
        plot_scan({label: result}, os.path.join(out_dir, "scan.png"), theta_true=theta_true, levels=tuple(levels),
                  title=f"q(θ) from {label}, {result.n_events:g} events")
    return summary
