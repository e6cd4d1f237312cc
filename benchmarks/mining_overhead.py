"""Mining overhead: simulate 10⁶ Galton runs with the joint ratio and both scores, against sampling alone.

Run: .venv/bin/python benchmarks/mining_overhead.py [--n 1000000] [--batch-size B] [--threads T]
Prints a table and writes it to benchmarks/results/mining_overhead.md. All rows come from one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

import sluice
from sluice.data.simulation import batch_seeds
from table import publish


class BlackBoxGalton(sluice.simulators.GaltonBoard):
    """The same board with joint_log_prob hidden: sluice.simulate then only samples (black-box data)."""

    joint_log_prob = sluice.Simulator.joint_log_prob


def sample_only(simulator, prior, n, batch_size):
    """The simulator's own work: prior draws and sample(), in the batch layout simulate uses."""
    for index, start in enumerate(range(0, n, batch_size)):
        m = min(batch_size, n - start)
        prior_seed, simulator_seed, _ = batch_seeds(0, index)
        theta = sluice.priors.sample_prior(prior, m, prior_seed)
        simulator.sample(theta, generator=torch.Generator().manual_seed(simulator_seed))


def best_of(repeats, work):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "mining_overhead.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    simulator = sluice.simulators.GaltonBoard()
    prior = simulator.default_prior()
    batch_size = args.batch_size or simulator.default_batch_size
    n = args.n

    rows = [
        ("sample() alone (prior draws + sample)", lambda: sample_only(simulator, prior, n, batch_size)),
        ("sluice.simulate, black-box (no mining)",
         lambda: sluice.simulate(BlackBoxGalton(), prior, n, batch_size=batch_size, progress=False)),
        ("sluice.simulate with log r, t0, t1",
         lambda: sluice.simulate(simulator, prior, n, batch_size=batch_size, progress=False)),
    ]
    timings = [(label, best_of(args.repeats, work)) for label, work in rows]
    baseline = timings[0][1]
    lines = [
        f"# Mining overhead: GaltonBoard, n = {n:,}, batch size {batch_size}, {args.threads} torch thread(s)",
        "",
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, best of {args.repeats}.",
        "",
        "| work | seconds | × sample() alone |",
        "|---|---|---|",
    ]
    lines += [f"| {label} | {seconds:.3f} | {seconds / baseline:.2f} |" for label, seconds in timings]
    publish(lines, args.out)


if __name__ == "__main__":
    main()
