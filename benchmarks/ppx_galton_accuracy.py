"""The Galton board through PPX: ALICES trained on the C++ board of examples/ppx/ (through from_ppx) against ALICES
trained on the built-in GaltonBoard, with the same budget, data seed and training seed.

Both are scored as the task suite scores Galton (sluice.app.benchmarks.suite, docs/tasks.md): the normalised MSE
of log r̂ against the exact log r from the dynamic program, over the suite's 2 000 pairs (θ0, θ1) from the prior
with x ~ θ1 (1 is log r̂ ≡ 0); and by the published metric of sluice.app.benchmarks.tasks.GaltonTask (the MSE
at θ0 = −0.8, θ1 = −0.6 weighted by p(x|θ1)). The two boards draw their runs from different random streams, so
their errors agree within the seed-to-seed spread, not digit for digit. Throughput: sampled runs per second
(``sample``, no mining) and rows per second of ``sluice.simulate`` (sampling and mining: the PPX board replays
each run 2 + 4p = 6 times for log r and the finite-difference scores at θ0 and θ1, the built-in uses autograd).

Run:  .venv/bin/python benchmarks/ppx_galton_accuracy.py [--budgets 1000] [--seeds 0 1 2 3 4 5 6] [--processes 2]
It builds the C++ board with examples/ppx/Makefile (needs g++, flatc, libzmq and cppzmq) unless --binary is
given; the table goes to benchmarks/results/ppx_galton.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
import warnings

import torch

import sluice
from sluice.app.benchmarks.suite import fit_method, task
from sluice.app.benchmarks.tasks import GaltonTask
from sluice.simulators.ppx import SCHEMA, from_ppx
from table import publish

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples", "ppx")
METHOD = "ALICES"


def built_board(build: str) -> str:
    """The C++ Galton board, built into ``build`` by examples/ppx/Makefile."""
    subprocess.run(["make", "-C", EXAMPLES, f"BUILD={build}", f"SCHEMA={SCHEMA}", os.path.join(build, "galton")],
                   check=True)
    return os.path.join(build, "galton")


def runs_per_second(simulator, prior, n: int) -> float:
    """Runs per second of ``simulator.sample`` alone, at n θ from ``prior`` (one batch)."""
    theta = sluice.priors.sample_prior(prior, n, seed=99)
    started = time.perf_counter()
    simulator.sample(theta, generator=torch.Generator().manual_seed(99))
    return n / (time.perf_counter() - started)


def simulated(simulator, prior, n: int, seed: int):
    """``sluice.simulate`` of n rows, and the rows per second it ran at."""
    started = time.perf_counter()
    data = sluice.simulate(simulator, prior, n, seed=seed, progress=False)
    return data, n / (time.perf_counter() - started)


def scored(data, seed: int) -> tuple[float, float]:
    """ALICES fitted on ``data`` (the suite's defaults, training seed ``seed``): (suite nMSE, published MSE)."""
    estimator, _ = fit_method(METHOD, data, seed)
    with torch.no_grad():
        return task("galton").error(estimator), GaltonTask().error(estimator)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[1000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5, 6])
    parser.add_argument("--processes", type=int, default=2, help="C++ simulator processes (from_ppx)")
    parser.add_argument("--binary", default=None, help="a built examples/ppx/galton (default: build it)")
    parser.add_argument("--build", default=os.path.join(EXAMPLES, "build"))
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "ppx_galton.md"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # the finite-difference notice of the PPX board: a benchmark row is a number
    torch.set_num_threads(1)
    binary = args.binary or built_board(args.build)
    suite_task = task("galton")
    prior = suite_task.prior
    builtin = suite_task.simulator
    boards = {"built-in GaltonBoard": builtin,
              f"C++ via PPX ({args.processes} processes)": from_ppx([binary], ["theta"], prior=prior,
                                                                     processes=args.processes)}
    sampling = {name: runs_per_second(board, prior, 500) for name, board in boards.items()}
    rows = []
    for n in args.budgets:
        for seed in args.seeds:
            for name, board in boards.items():
                data, rate = simulated(board, prior, n, seed)
                nmse, mse = scored(data, seed)
                rows.append((name, n, seed, nmse, mse, rate))
                print(f"{name:32s} N={n:6d} seed={seed} nMSE={nmse:.5f} MSE={mse:.3g} ({rate:.0f} rows/s)",
                      flush=True)
    boards[next(name for name in boards if name.startswith("C++"))].close()

    lines = ["# The Galton board through PPX: ALICES on the C++ board against the built-in", "",
             f"{METHOD} with the suite's defaults, trained on N simulations of each board with the same data seed and "
             "training seed. nMSE: the task suite's normalised MSE of log r̂ against the exact log r over 2 000 "
             "prior pairs with x ~ θ1 (1 = log r̂ ≡ 0); MSE: the published metric at θ0 = −0.8, θ1 = −0.6 weighted "
             f"by p(x|θ1) (log r̂ ≡ 0 scores {GaltonTask().trivial_error():.4g}). Seeds {args.seeds}; one torch "
             "thread; a 2-core machine shared with other jobs, so the rates are indicative.", "",
             "| board | N | nMSE per seed | nMSE median | MSE median | simulate rows/s | sample runs/s |",
             "|---|---|---|---|---|---|---|"]
    for n in args.budgets:
        for name in boards:
            mine = [row for row in rows if row[0] == name and row[1] == n]
            per_seed = ", ".join(f"{row[3]:.4f}" for row in mine)
            lines.append(f"| {name} | {n:,} | {per_seed} | {statistics.median(row[3] for row in mine):.4f} | "
                         f"{statistics.median(row[4] for row in mine):.3g} | "
                         f"{statistics.median(row[5] for row in mine):,.0f} | {sampling[name]:,.0f} |")
    publish(lines, args.out)


if __name__ == "__main__":
    main()
