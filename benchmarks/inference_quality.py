"""Inference quality of a surrogate trained on 1 000 simulations against the exact likelihood.

For the Galton board (θ_true = −0.7) and GaussianMixture (θ_true = (0.2, 0.1)), ALICES and SCANDAL with
default settings are trained on the same 1 000 simulations (seed 0). For N_obs = 10 and 100 events it reports the
expected (Asimov) 68% and 95% Wilks interval width (1-D) or region area (2-D), surrogate over exact, and
the coverage of the surrogate's and the exact likelihood's Wilks regions over 500 experiments.

Run: .venv/bin/python benchmarks/inference_quality.py [--experiments 500] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import sluice
from sluice import inference

LEVELS = (0.68, 0.95)


def size(scan: inference.Scan, level: float) -> float:
    """The interval width (1 parameter; where it reaches the end of the grid, the end counts) or the
    region's area (2 parameters)."""
    if scan.grid.shape[1] == 1:
        low, high = scan.interpolated_interval(level)
        edge_low, edge_high = scan.interval(level)
        return (high if high == high else edge_high) - (low if low == low else edge_low)
    cells = torch.tensor([float(torch.unique(scan.grid[:, j]).diff().mean()) for j in range(2)]).prod()
    return float(scan.region(level).float().sum() * cells)


def study(name, simulator, prior, theta_true, grid, asimov_grids, experiments, method, train_n=1000):
    data = sluice.simulate(simulator, prior, train_n, seed=0, progress=False)
    started = time.perf_counter()
    surrogate = getattr(sluice.estimators, method)().fit(data, seed=0, progress=False)
    fit_seconds = time.perf_counter() - started
    models = (("exact", inference.ExactLikelihood(simulator)), (method, surrogate))
    rows = []
    for n_obs in (10, 100):
        asimov = {label: inference.asimov_scan(model, simulator, theta_true, n_obs, asimov_grids[n_obs],
                                               n_samples=20_000) for label, model in models}
        covered = {label: inference.coverage(model, simulator, theta_true, n_obs, LEVELS, experiments, grid=grid,
                                             seed=1) for label, model in models}
        for k, level in enumerate(LEVELS):
            rows.append((name, method, n_obs, level, size(asimov[method], level) / size(asimov["exact"], level),
                         covered[method][k].covered, covered["exact"][k].covered))
    return rows, fit_seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=500)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args()
    board, mixture = sluice.simulators.GaltonBoard(), sluice.simulators.GaussianMixture()
    galton_grid = inference.make_grid([-1.0], [-0.4], 601)  # the training range: surrogates do not extrapolate
    box = inference.make_grid([-1.0, -1.0], [1.0, 1.0], 41)
    studies = [
        ("galton", board, board.default_prior(), [-0.7], galton_grid, {10: galton_grid, 100: galton_grid}),
        ("mixture", mixture, mixture.default_prior(), [0.2, 0.1], box,
         {10: inference.make_grid([-1.0, -1.0], [1.0, 1.0], 81),
          100: inference.make_grid([-0.2, -0.3], [0.6, 0.5], 81)}),
    ]
    lines = ["# Inference quality: surrogates trained on 1 000 simulations against the exact likelihood", "",
             f"Expected (Asimov, 20 000 weighted events) Wilks interval width (Galton, θ grid = the training range "
             f"[−1, −0.4]) or region area (mixture), surrogate / exact; coverage of Wilks regions over "
             f"{args.experiments} experiments.", "",
             "| task | method | N_obs | level | size ratio | coverage, surrogate | coverage, exact |",
             "|---|---|---|---|---|---|---|"]
    for name, simulator, prior, theta_true, grid, asimov_grids in studies:
        for method in ("ALICES", "SCANDAL"):
            rows, seconds = study(name, simulator, prior, theta_true, grid, asimov_grids, args.experiments, method)
            lines += [f"| {t} | {m} | {n} | {lvl:.0%} | {ratio:.3f} | {cov:.3f} | {cov_exact:.3f} |"
                      for t, m, n, lvl, ratio, cov, cov_exact in rows]
            lines.append(f"| {name} | {method} fit: {seconds:.1f} s | | | | | |")
            print(lines[-1], flush=True)
    table = "\n".join(lines)
    print(table)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "inference_quality.md"), "w") as file:
        file.write(table + "\n")


if __name__ == "__main__":
    main()
