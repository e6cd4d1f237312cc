"""Why does the score not pay off on sbibm's SLCP? The likelihood family at N = 1 000 on sbibm's slcp (no latents:
every joint score is the exact score): NDE against SCANDAL with other weights of the score term and other flows.

The metric is where inference looks: for sbibm's observations 1–3, 1 000 pairs θ0, θ1 drawn from the reference
posterior of x_o, and the normalised MSE of log r̂(x_o|θ0,θ1) against the exact value. (Pairs from the prior are
useless here: slcp's variances are θ², so |log r| reaches 10⁸ and a few pairs decide the mean.)

Run:  nice .venv/bin/python benchmarks/score_payoff.py [--seeds 2] [--configs NDE,SCANDAL]
Needs sbibm's wheel (make sbibm-data; SLUICE_SBIBM_WHEEL). Rows stream into benchmarks/results/score_payoff.csv (a
rerun skips those there); the table goes to benchmarks/results/score_payoff.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import torch

CONFIGS = {  # name -> (method, settings)
    "NDE": ("NDE", {}),
    "SCANDAL": ("SCANDAL", {}),
    "SCANDAL α=0.1": ("SCANDAL", {"alpha": 0.1}),
    "SCANDAL α=10": ("SCANDAL", {"alpha": 10.0}),
    "SCANDAL maf": ("SCANDAL", {"flow": "maf"}),
    "SCANDAL nsf": ("SCANDAL", {"flow": "nsf"}),
    "SCANDAL 5 transforms": ("SCANDAL", {"transforms": 5}),
    "SCANDAL θ units": ("SCANDAL", {"scale_free": False}),
}
FIELDS = ("task", "config", "n", "seed", "error", "fit_seconds")
OBSERVATIONS = (1, 2, 3)


def posterior_pairs_error(estimator, task: str, pairs: int = 1000) -> float:
    """nMSE of log r̂(x_o|θ0,θ1) over θ0, θ1 from the reference posterior of each of OBSERVATIONS (module notes)."""
    from sluice.simulators.sbibm import SBIBM_SIMULATORS, load_reference

    simulator = SBIBM_SIMULATORS[task]()
    predicted, exact = [], []
    for observation in OBSERVATIONS:
        x_o, reference, _ = load_reference(task, observation)
        generator = torch.Generator().manual_seed(observation)
        theta0 = reference[torch.randint(len(reference), (pairs,), generator=generator)]
        theta1 = reference[torch.randint(len(reference), (pairs,), generator=generator)]
        x = x_o.reshape(1, -1).expand(pairs, -1)
        exact.append((simulator.log_likelihood(x, theta0) - simulator.log_likelihood(x, theta1)).double())
        predicted.append(estimator.log_ratio(x, theta0, theta1).double())
    predicted, exact = torch.cat(predicted), torch.cat(exact)
    return float(((predicted - exact) ** 2).mean() / (exact**2).mean())


def run_one(task: str, config: str, n: int, seed: int) -> dict:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    from sluice import estimators, simulate
    from sluice.simulators.sbibm import SBIBM_SIMULATORS

    simulator = SBIBM_SIMULATORS[task]()
    data = simulate(simulator, simulator.default_prior(), n, seed=seed, progress=False)
    method, settings = CONFIGS[config]
    started = time.perf_counter()
    estimator = getattr(estimators, method)(**settings).fit(data, seed=seed, progress=False)
    seconds = time.perf_counter() - started
    row = {"task": task, "config": config, "n": n, "seed": seed,
           "error": round(posterior_pairs_error(estimator, task), 6), "fit_seconds": round(seconds, 1)}
    print(row, flush=True)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="slcp")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    tasks, configs = args.tasks.split(","), args.configs.split(",")
    path = os.path.join(args.out, "score_payoff.csv")
    rows = list(csv.DictReader(open(path))) if os.path.exists(path) else []
    done = {(r["task"], r["config"], int(r["n"]), int(r["seed"])) for r in rows}
    jobs = [(t, c, args.n, s) for s in range(args.seeds) for t in tasks for c in configs
            if (t, c, args.n, s) not in done]
    if jobs and not args.report_only:
        new = not os.path.exists(path)
        with open(path, "a", newline="") as file, \
                ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
            writer = csv.DictWriter(file, fieldnames=FIELDS)
            if new:
                writer.writeheader()
            for row in pool.map(run_one, *zip(*jobs, strict=True)):
                writer.writerow(row)
                file.flush()
        rows = list(csv.DictReader(open(path)))
    rows = [r for r in rows if int(r["n"]) == args.n]
    lines = [f"# The score term on sbibm tasks, N = {args.n:,}: nMSE of log r̂(x_o|θ0,θ1), θ0, θ1 from the reference "
             "posterior of observations 1–3 (median [min–max] over seeds)", "",
             "| configuration | " + " | ".join(tasks) + " | median fit s |", "|---" * (len(tasks) + 2) + "|"]
    for config in configs:
        cells, seconds = [], []
        for task in tasks:
            cell = [r for r in rows if r["task"] == task and r["config"] == config]
            errors = [float(r["error"]) for r in cell]
            seconds += [float(r["fit_seconds"]) for r in cell]
            cells.append(f"{statistics.median(errors):.4g} [{min(errors):.3g}–{max(errors):.3g}]" if errors else "–")
        fit = f"{statistics.median(seconds):.0f}" if seconds else "–"
        lines.append(f"| {config} | " + " | ".join(cells) + f" | {fit} |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "score_payoff.md"), "w") as file:
        file.write(text)
    print(text)


if __name__ == "__main__":
    main()
