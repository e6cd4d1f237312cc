"""Inference quality of a surrogate trained on 1 000 simulations against the exact likelihood.

For the Galton board (θ_true = −0.7) and GaussianMixture (θ_true = (0.2, 0.1)), ALICES and SCANDAL with
default settings are trained on 1 000 simulations, once per training seed (new data and a new initialisation
each). For N_obs = 10 and 100 events it reports the expected (Asimov) 68% and 95% Wilks interval width (1-D)
or region area (2-D), surrogate over exact, and the coverage of the surrogate's and the exact likelihood's
Wilks regions over the same experiments, as median [min–max] over the training seeds.

Run: .venv/bin/python benchmarks/inference_quality.py [--experiments 2000] [--seeds 5] [--tasks galton,mixture]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import sluice
from sluice import inference
from table import publish

LEVELS = (0.68, 0.95)
N_OBS = (10, 100)
METHODS = ("ALICES", "SCANDAL")
TRAIN_N = 1000


def size(scan: inference.Scan, level: float) -> float:
    """The interval width (1 parameter; where it reaches the end of the grid, the end counts) or the
    region's area (2 parameters)."""
    if scan.grid.shape[1] == 1:
        low, high = scan.interpolated_interval(level)
        edge_low, edge_high = scan.interval(level)
        return (high if high == high else edge_high) - (low if low == low else edge_low)
    cells = torch.tensor([float(torch.unique(scan.grid[:, j]).diff().mean()) for j in range(2)]).prod()
    return float(scan.region(level).float().sum() * cells)


def study(simulator, prior, theta_true, grid, asimov_grids, experiments, method, seed, exact_scans):
    """One surrogate (data and fit both seeded with ``seed``): {(N_obs, level): (size ratio, coverage)}."""
    data = sluice.simulate(simulator, prior, TRAIN_N, seed=seed, progress=False)
    started = time.perf_counter()
    surrogate = getattr(sluice.estimators, method)().fit(data, seed=seed, progress=False)
    fit_seconds = time.perf_counter() - started
    results = {}
    for n_obs in N_OBS:
        scan = inference.asimov_scan(surrogate, simulator, theta_true, n_obs, asimov_grids[n_obs], n_samples=20_000)
        covered = inference.coverage(surrogate, simulator, theta_true, n_obs, LEVELS, experiments, grid=grid, seed=1)
        for level, cover in zip(LEVELS, covered, strict=True):
            results[n_obs, level] = (size(scan, level) / size(exact_scans[n_obs], level), cover.covered)
    return results, fit_seconds


def spread(values) -> str:
    values = sorted(values)
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.median(values):.3f} [{values[0]:.3f}–{values[-1]:.3f}]"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=5, help="training seeds per task and method")
    parser.add_argument("--tasks", default="galton,mixture")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    board, mixture = sluice.simulators.GaltonBoard(), sluice.simulators.GaussianMixture()
    galton_grid = inference.make_grid([-1.0], [-0.4], 601)  # the training range: surrogates do not extrapolate
    box = inference.make_grid([-1.0, -1.0], [1.0, 1.0], 41)
    studies = {
        "galton": (board, board.default_prior(), [-0.7], galton_grid, {10: galton_grid, 100: galton_grid}),
        "mixture": (mixture, mixture.default_prior(), [0.2, 0.1], box,
                    {10: inference.make_grid([-1.0, -1.0], [1.0, 1.0], 81),
                     100: inference.make_grid([-0.2, -0.3], [0.6, 0.5], 81)}),
    }
    lines = [f"# Inference quality: surrogates trained on {TRAIN_N} simulations against the exact likelihood", "",
             "Expected (Asimov, 20 000 weighted events) Wilks interval width (Galton, θ grid = the training range "
             "[−1, −0.4]) or region area (mixture), surrogate / exact; coverage of Wilks regions over "
             f"{args.experiments} experiments (the same experiments for every model; Monte-Carlo sd of a coverage "
             f"≈ {(0.68 * 0.32 / args.experiments) ** 0.5:.3f} at 68%). Median [min–max] over {args.seeds} training "
             "seeds (each seed draws new training data and a new initialisation).", "",
             "| task | method | N_obs | level | size ratio | coverage, surrogate | coverage, exact | fit s |",
             "|---|---|---|---|---|---|---|---|"]
    for name in args.tasks.split(","):
        simulator, prior, theta_true, grid, asimov_grids = studies[name]
        exact = inference.ExactLikelihood(simulator)
        exact_scans = {n: inference.asimov_scan(exact, simulator, theta_true, n, asimov_grids[n], n_samples=20_000)
                       for n in N_OBS}
        exact_cover = {n: inference.coverage(exact, simulator, theta_true, n, LEVELS, args.experiments, grid=grid,
                                             seed=1) for n in N_OBS}
        for method in METHODS:
            runs = [study(simulator, prior, theta_true, grid, asimov_grids, args.experiments, method, seed,
                          exact_scans) for seed in range(args.seeds)]
            fit = f"{statistics.median(seconds for _, seconds in runs):.1f}"
            for n_obs in N_OBS:
                for k, level in enumerate(LEVELS):
                    ratios = [results[n_obs, level][0] for results, _ in runs]
                    covers = [results[n_obs, level][1] for results, _ in runs]
                    lines.append(f"| {name} | {method} | {n_obs} | {level:.0%} | {spread(ratios)} | {spread(covers)} "
                                 f"| {exact_cover[n_obs][k].covered:.3f} | {fit} |")
                    print(lines[-1], flush=True)
    publish(lines, os.path.join(args.out, "inference_quality.md"))


if __name__ == "__main__":
    main()
