"""PPX throughput: runs per second of the Galton board served over PPX from a Python process, against the built-in
GaltonBoard in this process, with one and two simulator processes.

Run: .venv/bin/python benchmarks/ppx_throughput.py [--n 200] [--builtin-n 20000]
Times sample() (each run: a Run, 21 Sample round trips, a RunResult) and joint_log_prob() (the same runs replayed,
every value forced) for the PPX board (tests/ppx_python_galton.py, started by from_ppx) with processes = 1 and 2,
and the same calls of the built-in board, batched in torch. The processes are started (and the first run done)
before the clock starts. Prints a table and writes it to benchmarks/results/ppx_throughput.md; wall-clock and
the controller's CPU time are both given, with the load average: on a machine shared with other work every
round trip waits for two processes to be scheduled, so the wall-clock figures vary with the load.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys
import time

import torch

from sluice.simulators import GaltonBoard
from sluice.simulators.ppx import from_ppx
from sluice.simulators.priors import sample_prior
from table import publish

ROOT = pathlib.Path(__file__).resolve().parents[1]
COMMAND = [sys.executable, str(ROOT / "tests" / "ppx_python_galton.py")]


def timed(call) -> tuple[float, float, object]:
    """Wall and CPU seconds of ``call()``, and what it returned."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = call()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def measure(simulator, theta: torch.Tensor) -> list[tuple[str, float, float]]:
    """(what, wall s, CPU s) of sample() and of joint_log_prob() on its runs, at θ."""
    wall, cpu, (x, z) = timed(lambda: simulator.sample(theta, generator=torch.Generator().manual_seed(0)))
    rows = [("sample", wall, cpu)]
    wall, cpu, _ = timed(lambda: simulator.joint_log_prob(x, z, theta.to(torch.float64)))
    rows.append(("joint_log_prob" + (" (replay)" if simulator.differentiable is False else ""), wall, cpu))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="runs per PPX timing")
    parser.add_argument("--builtin-n", type=int, default=20_000, help="runs per built-in timing")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "ppx_throughput.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # as sluice.simulate runs every batch
    load_before = os.getloadavg()[0]
    board = GaltonBoard()
    prior = board.default_prior()
    results = []
    theta = sample_prior(prior, args.builtin_n, seed=0)
    for what, wall, cpu in measure(board, theta):
        results.append((f"built-in GaltonBoard (torch, batched), {what}", args.builtin_n, wall, cpu))
    theta = sample_prior(prior, args.n, seed=1)
    for processes in (1, 2):
        with from_ppx(COMMAND, ["theta"], prior=prior, processes=processes) as simulator:
            simulator.sample(theta[:processes])  # start the processes before the clock
            for what, wall, cpu in measure(simulator, theta):
                results.append((f"PPX board (Python process), processes={processes}, {what}", args.n, wall, cpu))
    lines = [
        "# PPX throughput: the Galton board over PPX vs the built-in GaltonBoard",
        "",
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}; "
        f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (other processes share the cores)",
        "",
        "| work | runs | wall s | runs/s | controller CPU s | runs/CPU-s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, n, wall, cpu in results:
        lines.append(f"| {label} | {n:,} | {wall:.3f} | {n / wall:,.0f} | {cpu:.3f} | {n / max(cpu, 1e-9):,.0f} |")
    lines += ["", f"command: python benchmarks/ppx_throughput.py --n {args.n} --builtin-n {args.builtin_n}"]
    publish(lines, args.out)


if __name__ == "__main__":
    main()
