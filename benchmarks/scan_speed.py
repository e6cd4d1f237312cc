"""Batched scan evaluation: Σ_i log r̂(x_i|θ_g, θ_ref) for 10⁴ grid points × 10³ events, one call.

Run: .venv/bin/python benchmarks/scan_speed.py   (an ALICES and an NDE flow on GaussianMixture, 2 threads)
"""

import time

import torch

import sluice
from sluice import inference

if __name__ == "__main__":
    mixture = sluice.simulators.GaussianMixture()
    data = sluice.simulate(mixture, mixture.default_prior(), 2000, seed=0, progress=False)
    x, _ = mixture.sample(torch.tensor([[0.2, 0.1]]).expand(1000, 2), generator=torch.Generator().manual_seed(1))
    grid = inference.make_grid([-1.0, -1.0], [1.0, 1.0], 100)  # 10 000 points
    for method in ("ALICES", "NDE"):
        estimator = getattr(sluice.estimators, method)().fit(data, epochs=3, progress=False)
        started = time.perf_counter()
        result = inference.scan(estimator, x, grid, refine=False)
        seconds = time.perf_counter() - started
        print(f"{method:7s} {grid.shape[0]:,} grid points × {len(x):,} events: {seconds:.1f} s "
              f"({grid.shape[0] * len(x) / seconds / 1e6:.1f} M evaluations/s; a 3-epoch fit, for timing only)")
