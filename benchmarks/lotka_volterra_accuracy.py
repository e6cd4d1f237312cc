"""Lotka–Volterra accuracy: SCANDAL against NDE at 10³, 10⁴ and 10⁵ simulations, in the published zoom box.

There is no exact likelihood, so the benchmark builds its own reference: ALICES and SCANDAL trained on
``--reference-n`` (default 10⁶) simulations, averaged (log r_ref = mean of the two). Their disagreement,
MSE(ALICES − SCANDAL)/4, is printed as the reference's own error scale: differences between methods far
above it do not depend on the choice of reference. Metric: MSE of log r̂(x|θ0,θ1) against log r_ref over
held-out pairs θ0, θ1 ~ prior with x ~ θ1 (the published metric); "trivial" is the MSE of log r̂ ≡ 0.
Budgets are nested (the first N rows of one simulated set); every fit uses the defaults, one thread.

Run: .venv/bin/python benchmarks/lotka_volterra_accuracy.py [--budgets 1000 10000 100000] [--reference-n 1000000]
The simulations are cached in --cache (HDF5); the table goes to benchmarks/results/lotka_volterra_accuracy.md.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import torch

import sluice
from sluice.data.simulation import DroppedRowsWarning
from table import publish


def simulated(simulator, n, seed, path):
    """n augmented runs in the zoom box, from the cache when it holds them."""
    if os.path.exists(path):
        return sluice.AugmentedData.load(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DroppedRowsWarning)  # ~0.5% runaway runs, capped and dropped
        data = sluice.simulate(simulator, simulator.default_prior(), n, seed=seed, progress=True)
    data.save(path)
    return data


def fitted(method, data, **options):
    started = time.perf_counter()
    estimator = getattr(sluice.estimators, method)().fit(data, seed=0, progress=False, **options)
    return estimator, time.perf_counter() - started


def log_ratios(estimator, test):
    with torch.no_grad():
        return estimator.log_ratio(test.x, test.theta0, test.theta1).double()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--reference-n", type=int, default=1_000_000)
    parser.add_argument("--reference-epochs", type=int, default=20)
    parser.add_argument("--cache", default="benchmark-results")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "lotka_volterra_accuracy.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.cache, exist_ok=True)
    simulator = sluice.simulators.LotkaVolterra()
    started = time.perf_counter()
    train = simulated(simulator, max(args.reference_n, *args.budgets), 0,
                      os.path.join(args.cache, f"lotka_volterra_{args.reference_n}.h5"))
    test_all = simulated(simulator, 10_000, 1, os.path.join(args.cache, "lotka_volterra_test.h5"))
    test = test_all[torch.nonzero(test_all.y == 1)[:, 0]]  # x drawn at θ1
    print(f"simulations: {len(train):,} + {len(test_all):,} in {time.perf_counter() - started:.0f} s", flush=True)

    references = {}
    for method in ("ALICES", "SCANDAL"):
        estimator, seconds = fitted(method, train[:args.reference_n], batch_size=1024, epochs=args.reference_epochs)
        references[method] = log_ratios(estimator, test)
        print(f"reference {method}: fit {seconds:.0f} s", flush=True)
    reference = (references["ALICES"] + references["SCANDAL"]) / 2
    floor = float(((references["ALICES"] - references["SCANDAL"]) ** 2).mean() / 4)
    trivial = float((reference ** 2).mean())

    lines = ["# Lotka–Volterra: MSE of log r̂ against a reference (zoom box θ* ± 0.01)", "",
             f"Reference: mean of ALICES and SCANDAL trained on {args.reference_n:,} simulations "
             f"(batch 1024, {args.reference_epochs} epochs, early stopping); its error scale "
             f"MSE(ALICES − SCANDAL)/4 = {floor:.4f}. Trivial (log r̂ ≡ 0): {trivial:.4f}. "
             f"{len(test):,} held-out pairs with x ~ θ1. One seed, defaults, one thread per fit.", "",
             "| method | N | MSE of log r̂ | fit s |", "|---|---|---|---|"]
    for method in ("SCANDAL", "NDE"):
        for n in args.budgets:
            estimator, seconds = fitted(method, train[:n])
            mse = float(((log_ratios(estimator, test) - reference) ** 2).mean())
            lines.append(f"| {method} | {n:,} | {mse:.4f} | {seconds:.0f} |")
            print(lines[-1], flush=True)
    publish(lines, args.out)


if __name__ == "__main__":
    main()
