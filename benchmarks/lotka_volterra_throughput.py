"""Lotka–Volterra throughput: runs per second of the batched Gillespie at the default prior, by batch size.

Run: .venv/bin/python benchmarks/lotka_volterra_throughput.py [--n 16384] [--batch-sizes 1024 4096 16384]
     [--threads 1] [--simulate-n 16384]
Times sample() alone (prior draws in the batch layout sluice.simulate uses, then the simulator) for each batch
size and torch thread count, and one sluice.simulate call (sampling + mining log r, t0, t1) at the default batch
size. Prints a table and writes it to benchmarks/results/lotka_volterra_throughput.txt. Wall-clock and CPU time
are both given: on a machine shared with other work the CPU time is the steadier measure.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import torch

import sluice
from sluice.data.simulation import DroppedRowsWarning, batch_seeds
from sluice.simulators.lotka_volterra import LotkaVolterra
from table import publish


def sample_only(simulator, prior, n, batch_size):
    """Wall and CPU seconds for n runs of sample() in batches, and how many of them were capped."""
    simulator.n_runs = simulator.n_capped = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for index, first in enumerate(range(0, n, batch_size)):
        m = min(batch_size, n - first)
        prior_seed, simulator_seed, _ = batch_seeds(0, index)
        theta = sluice.priors.sample_prior(prior, m, prior_seed)
        simulator.sample(theta, generator=torch.Generator().manual_seed(simulator_seed))
    return time.perf_counter() - wall, time.process_time() - cpu, simulator.n_capped


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16_384, help="runs per sample() timing")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1024, 4096, 16_384])
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="torch threads while simulating")
    parser.add_argument("--simulate-n", type=int, default=16_384, help="runs for the sluice.simulate timing (0: skip)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "lotka_volterra_throughput.txt"))
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rows = []
    for threads in args.threads:
        simulator = LotkaVolterra(threads=threads)
        prior = simulator.default_prior()
        for batch_size in args.batch_sizes:
            wall, cpu, capped = sample_only(simulator, prior, args.n, batch_size)
            rows.append((f"sample(), batch {batch_size}", threads, args.n, wall, cpu, capped))
            print(f"  {rows[-1][0]}, {threads} thread(s): {args.n / wall:,.0f} runs/s", flush=True)
    if args.simulate_n:
        simulator = LotkaVolterra()
        wall, cpu = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():  # the capped runs it drops are the table's last column
            warnings.simplefilter("ignore", DroppedRowsWarning)
            data = sluice.simulate(simulator, simulator.default_prior(), args.simulate_n, seed=0, progress=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rows.append((f"sluice.simulate (+ log r, t0, t1), batch {simulator.default_batch_size}", simulator.threads,
                     args.simulate_n, wall, cpu, args.simulate_n - len(data)))
    lines = [
        "Lotka–Volterra batched Gillespie at the default prior (θ* ± 0.01), T = 30, 151 recorded points",
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; load average {load_before:.1f} "
        f"before, {os.getloadavg()[0]:.1f} after (other processes share the cores)",
        "",
        f"{'work':<52} {'threads':>7} {'runs':>7} {'wall s':>7} {'runs/s':>7} {'CPU s':>7} {'runs/CPU-s':>10} "
        f"{'capped':>7}",
    ]
    for label, threads, n, wall, cpu, capped in rows:
        lines.append(f"{label:<52} {threads:>7} {n:>7} {wall:>7.2f} {n / wall:>7,.0f} {cpu:>7.2f} {n / cpu:>10,.0f} "
                     f"{capped / n:>7.2%}")
    publish(lines, args.out)


if __name__ == "__main__":
    main()
