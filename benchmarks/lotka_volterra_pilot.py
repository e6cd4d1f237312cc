"""Lotka–Volterra pilot run: the standardisation constants PILOT_MEAN and PILOT_SD of sluice.simulators.lotka_volterra.

Run: .venv/bin/python benchmarks/lotka_volterra_pilot.py [--n 20000] [--seed 0] [--batch-size 4096]
Simulates n runs at θ* = log(0.01, 0.5, 1, 0.01) in batches from torch.Generator().manual_seed(seed), prints the
mean and standard deviation of the nine raw summaries over the uncapped runs in the form the module holds them,
and says whether they match the module's constants (they do for the defaults, on the torch that made them).
"""

from __future__ import annotations

import argparse
import time

import torch

from sluice.simulators import lotka_volterra


def pilot_statistics(n: int, seed: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation ``[9]`` (float64) of the raw summaries of the uncapped runs among n at θ*."""
    simulator = lotka_volterra.LotkaVolterra(standardise=False)
    generator = torch.Generator().manual_seed(seed)
    summaries = []
    for start in range(0, n, batch_size):
        theta = torch.tensor(lotka_volterra.THETA_STAR, dtype=torch.float64).expand(min(batch_size, n - start), 4)
        paths = simulator.trajectories(theta, generator)
        summaries.append(simulator.summary_statistics(paths.states)[~paths.capped])
    summaries = torch.cat(summaries)
    return summaries.mean(dim=0), summaries.std(dim=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=4096)
    args = parser.parse_args()
    start = time.perf_counter()
    mean, sd = pilot_statistics(args.n, args.seed, args.batch_size)
    print(f"# {args.n} runs at θ*, seed {args.seed}, batches of {args.batch_size}: {time.perf_counter() - start:.1f} s")
    print("PILOT_MEAN = (" + ", ".join(f"{value:.6g}" for value in mean.tolist()) + ")")
    print("PILOT_SD = (" + ", ".join(f"{value:.6g}" for value in sd.tolist()) + ")")
    stored = torch.tensor(lotka_volterra.PILOT_MEAN + lotka_volterra.PILOT_SD, dtype=torch.float64)
    same = torch.allclose(torch.cat([mean, sd]), stored, rtol=1e-5, atol=0.0)
    print("matches the module's constants" if same else "differs from the module's constants")


if __name__ == "__main__":
    main()
