"""The score term's spread floor (``sluice.estimators.score_term.MIN_RELATIVE_SPREAD``) on two tasks that pull it in
opposite directions.

The default weights of the score term are w_j = 1/Var(t_j), each spread floored at a fraction f of the largest
(standardised-θ units), so no component weighs more than 1/f² times the widest one:

- ``toy``: the particle toy with two systematics (benchmarks/particle_toy_systematics.py), 10⁴ weighted events.
  The normalisation nuisance's joint score is exactly 0, so its weight is 1/(f · largest)². Printed: the profiled
  expected 95 % widths on c1 and c2 (truth level 0.419 and 0.464) of ALICES and SCANDAL per floor and seed.
- ``slcp``: sbibm's SLCP, SCANDAL at 10³ simulations, where one genuine score component has 0.008 of the largest
  spread. Runs ``sluice benchmark sbibm`` with the floor set (C2ST per observation, in OUT/slcp_<f>/sbibm.csv).

Run (about 4 min per toy fit of SCANDAL, 1 min of ALICES; 3 min per SLCP seed):
    nice .venv/bin/python benchmarks/score_floor_study.py toy --floors 0.001,0.01,0.03,0.1 --seeds 0,1,2
    nice .venv/bin/python benchmarks/score_floor_study.py slcp --floors 0.001,0.01,0.03,0.1 --seeds 2

``--floor`` (one value) is read before anything else, so that the processes the sbibm benchmark spawns (which
import this file again with the same command line) train with the same floor.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))

from sluice.estimators import score_term  # noqa: E402


def _floor_from_command_line() -> None:
    if "--floor" in sys.argv:
        score_term.MIN_RELATIVE_SPREAD = float(sys.argv[sys.argv.index("--floor") + 1])


_floor_from_command_line()  # also in spawned workers


def toy(args) -> list[str]:
    """ALICES and SCANDAL on the particle toy with systematics at each floor and seed: table lines."""
    import particle_toy_systematics as benchmark
    import sluice
    from sluice.inference.extended import ExtendedTerm

    torch.set_num_threads(1)
    particle_toy = benchmark.ParticleToy()
    grid = argparse.Namespace(box=1.0, points=11)
    luminosity = 75.0 / float(particle_toy.cross_section(benchmark.SM[None]))
    asimov, *_ = benchmark.weighted_events(particle_toy, 5000, seed=1000, systematics=True, exact_rate=True)
    rate = ExtendedTerm(benchmark.exact_cross_section(particle_toy), luminosity, constraints=asimov.nuisances,
                        parameter_names=asimov.parameter_names)
    weights = torch.full((5000,), 75.0 / 5000, dtype=torch.float64)
    events, *_ = benchmark.weighted_events(particle_toy, 10_000, seed=10_000, systematics=True)
    data = events.augmented_data(particle_toy.default_prior(), 10_000)
    lines = ["| method | floor | seed | c1 95% | c2 95% | fit s |", "|---|---|---|---|---|---|"]
    for method in args.methods.split(","):
        for floor in args.floors:
            for seed in args.seeds:
                score_term.MIN_RELATIVE_SPREAD = floor
                started = time.perf_counter()
                estimator = getattr(sluice.estimators, method)().fit(data, seed=seed, progress=False)
                seconds = time.perf_counter() - started
                limits = benchmark.profiled_limits(estimator, asimov.x, weights, rate, grid)
                lines.append(f"| {method} | {floor:g} | {seed} | {limits['c1']['95%']:.3f} | "
                             f"{limits['c2']['95%']:.3f} | {seconds:.0f} |")
                print(lines[-1], flush=True)
    return lines


def slcp(args) -> list[str]:
    """sbibm's SLCP with SCANDAL at 10³ per floor (one process each, so the floor reaches its workers)."""
    lines = ["| floor | C2ST per (seed, observation) | mean |", "|---|---|---|"]
    for floor in args.floors:
        out = os.path.join(args.out, f"slcp_{floor:g}")
        subprocess.run([sys.executable, __file__, "sbibm", "--floor", str(floor), "--seeds", str(args.seeds_count),
                        "--out", out], check=True)
        with open(os.path.join(out, "sbibm.csv")) as file:
            scores = [float(line.split(",")[5]) for line in file.read().splitlines()[1:]]
        lines.append(f"| {floor:g} | {' '.join(f'{s:.3f}' for s in scores)} | {sum(scores) / len(scores):.4f} |")
        print(lines[-1], flush=True)
    return lines


def sbibm(args) -> None:
    """The CLI's sbibm benchmark in this process (the floor set at import)."""
    from sluice.app.cli import main

    main(args=["benchmark", "sbibm", "--methods", "SCANDAL", "--tasks", "slcp", "--budgets", "1000", "--seeds",
               str(args.seeds_count), "--observations", "1-3", "--samples", "2000", "--workers", "1", "--out",
               args.out])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", choices=["toy", "slcp", "sbibm"])
    parser.add_argument("--floors", default="0.001,0.01,0.03,0.1")
    parser.add_argument("--floor", type=float, help="one floor, set at import (the sbibm step)")
    parser.add_argument("--seeds", default="0,1,2", help="toy: seeds; slcp: how many seeds")
    parser.add_argument("--methods", default="ALICES,SCANDAL")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "score_floor"))
    args = parser.parse_args()
    args.floors = [float(value) for value in args.floors.split(",")]
    args.seeds_count = len(args.seeds.split(",")) if "," in args.seeds else int(args.seeds)
    args.seeds = [int(value) for value in args.seeds.split(",")]
    if args.study == "sbibm":
        return sbibm(args)
    lines = toy(args) if args.study == "toy" else slcp(args)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{args.study}.md"), "w") as file:
        file.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
