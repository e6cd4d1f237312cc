"""Inference quality of a surrogate trained on 1 000 simulations against the exact likelihood.

For the Galton board (θ_true = −0.7) and GaussianMixture (θ_true = (0.2, 0.1)), an ALICES estimator with
default settings is trained on 1 000 simulations (seed 0). For N_obs = 10 and 100 events it reports the
expected (Asimov) 68% and 95% Wilks interval width (1-D) or region area (2-D), surrogate over exact, and
the coverage of the surrogate's and the exact likelihood's Wilks regions over 500 experiments.

Run: .venv/bin/python benchmarks/inference_quality.py [--experiments 500] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import os
import time

import sluice
from sluice import inference

LEVELS = (0.68, 0.95)


def size(scan: inference.Scan, level: float) -> float:
    """The interval width (1 parameter) or the region's area in grid cells' units (2 parameters)."""
    if scan.grid.shape[1] == 1:
        low, high = scan.interpolated_interval(level)
        return high - low
    return float(scan.region(level).float().sum())


def study(name, simulator, prior, theta_true, grid, experiments, train_n=1000):
    data = sluice.simulate(simulator, prior, train_n, seed=0, progress=False)
    started = time.perf_counter()
    surrogate = sluice.estimators.ALICES().fit(data, seed=0, progress=False)
    fit_seconds = time.perf_counter() - started
    exact = inference.ExactLikelihood(simulator)
    rows = []
    for n_obs in (10, 100):
        asimov = {label: inference.asimov_scan(model, simulator, theta_true, n_obs, grid, n_samples=50_000)
                  for label, model in (("exact", exact), ("ALICES", surrogate))}
        covered = {label: inference.coverage(model, simulator, theta_true, n_obs, LEVELS, experiments, grid=grid,
                                             seed=1)
                   for label, model in (("exact", exact), ("ALICES", surrogate))}
        for k, level in enumerate(LEVELS):
            rows.append((name, n_obs, level, size(asimov["ALICES"], level) / size(asimov["exact"], level),
                         covered["ALICES"][k].covered, covered["exact"][k].covered))
    return rows, fit_seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=500)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args()
    board, mixture = sluice.simulators.GaltonBoard(), sluice.simulators.GaussianMixture()
    studies = [
        ("galton", board, board.default_prior(), [-0.7], inference.make_grid([-1.5], [0.1], 801)),
        ("mixture", mixture, mixture.default_prior(), [0.2, 0.1], inference.make_grid([-1.0, -1.0], [1.0, 1.0], 81)),
    ]
    lines = ["# Inference quality: ALICES trained on 1 000 simulations against the exact likelihood", "",
             f"Expected (Asimov, 50 000 weighted events) Wilks interval width (Galton) or region area (mixture), "
             f"surrogate / exact; coverage of Wilks regions over {args.experiments} experiments.", "",
             "| task | N_obs | level | size ratio | coverage ALICES | coverage exact |", "|---|---|---|---|---|---|"]
    for name, simulator, prior, theta_true, grid in studies:
        rows, seconds = study(name, simulator, prior, theta_true, grid, args.experiments)
        lines += [f"| {t} | {n} | {lvl:.0%} | {ratio:.3f} | {cov:.3f} | {cov_exact:.3f} |"
                  for t, n, lvl, ratio, cov, cov_exact in rows]
        lines.append(f"| {name}: ALICES fit took {seconds:.1f} s | | | | | |")
    table = "\n".join(lines)
    print(table)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "inference_quality.md"), "w") as file:
        file.write(table + "\n")


if __name__ == "__main__":
    main()
