"""How the default posterior sampler was chosen for multimodal posteriors (issue 17, part 3): sbibm's SLCP (4 modes,
the signs of θ3 and θ4) sampled with the simulator's EXACT likelihood, so that any C2ST above 1/2 is the sampler's
own error; gaussian_linear and two_moons as controls. Per configuration, task and observation: 2 000 draws from
``mcmc_posterior`` (seed 0), their C2ST against 2 000 of sbibm's reference draws (sbibm's protocol,
``sluice.inference.c2st``), the largest split R-hat, the smallest ESS, the steps after warm-up and the seconds.

Configurations (keyword options of ``mcmc_posterior``; every other option at its default):

- ``before``: the sampler before this study: chains started from prior draws, a warm-up of 200 random-walk
  steps, a single Student-t independence proposal. Its rows in results/sampler_study.csv were measured when these
  options reproduced it draw for draw; its stopping rule has changed since (the spacing of kept draws is now
  re-estimated from the latest half of the steps, where it was the largest estimate so far), so a rerun of this
  configuration may stop at another length where it mixes (gaussian_linear); where it runs to ``max_steps`` (SLCP,
  two_moons) it draws the same;
- ``tempered start``: only the start changed: chains resampled from 10⁴ prior draws with tempered weights L^β;
- ``mixture proposal``: only the proposal changed: 100 warm-up chains, warm-up up to 500 steps, a Student-t
  mixture fitted by EM as the independence proposal, chains started from prior draws;
- ``after``: the new default, both.

Run:  nice -n 10 .venv/bin/python benchmarks/sampler_study.py [--configs before,after] [--tasks slcp]
Needs scikit-learn (C2ST) and sbibm's wheel (``make sbibm-data``; ``--wheel`` or SLUICE_SBIBM_WHEEL). Rows stream
into benchmarks/results/sampler_study.csv (a rerun skips those there); the table goes to
benchmarks/results/sampler_study.md.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import time
import warnings

import torch

CONFIGS = {
    "before": dict(initialisation="prior", max_components=1, warm_up=200, warm_up_chains=0),
    "tempered start": dict(max_components=1, warm_up=200, warm_up_chains=0),
    "mixture proposal": dict(initialisation="prior"),
    "after": {},
}
# which configurations run on which task, and on which observations: SLCP, the task in question, in all four; the
# controls before and after only (the C2ST of 10-d gaussian_linear costs a minute of the 2 shared cores)
PLAN = {
    "slcp": (tuple(CONFIGS), (1, 2, 3)),
    "two_moons": (("before", "after"), (1, 2, 3)),
    "gaussian_linear": (("before", "after"), (1, 2)),
}
N_SAMPLES = 2000
FIELDS = ("task", "config", "observation", "c2st", "r_hat", "ess", "steps", "seconds", "warned")
HERE = os.path.dirname(os.path.abspath(__file__))


def run_one(task: str, config: str, observation: int, wheel: str | None) -> dict:
    """One row: the sampler in ``config`` on ``task``'s exact likelihood at sbibm's ``observation``."""
    from sluice.inference import ExactLikelihood, c2st
    from sluice.inference.posterior import mcmc_posterior
    from sluice.simulators.sbibm import SBIBM_SIMULATORS, load_reference

    simulator = SBIBM_SIMULATORS[task]()
    x_observed, reference, _ = load_reference(task, observation, wheel)
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        posterior = mcmc_posterior(ExactLikelihood(simulator), x_observed, simulator.default_prior(), N_SAMPLES,
                                   seed=0, **CONFIGS[config])
    seconds = time.perf_counter() - started
    warned = any("not mixed" in str(warning.message) for warning in caught)
    return {"task": task, "config": config, "observation": observation,
            "c2st": round(c2st(reference[:N_SAMPLES], posterior.samples, seed=0), 4),
            "r_hat": round(float(posterior.r_hat.max()), 4), "ess": round(float(posterior.ess.min())),
            "steps": posterior.steps, "seconds": round(seconds, 1), "warned": warned}


def read_rows(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as file:
        return [{**row, "observation": int(row["observation"]), "c2st": float(row["c2st"]),
                 "r_hat": float(row["r_hat"]), "ess": int(row["ess"]), "steps": int(row["steps"]),
                 "seconds": float(row["seconds"]), "warned": row["warned"] == "True"} for row in csv.DictReader(file)]


def table(rows: list[dict]) -> str:
    """One line per (task, configuration): C2ST, R-hat, ESS, steps and seconds per observation."""
    noise = 5 * math.sqrt(1 / (4 * 2 * N_SAMPLES))
    lines = [f"Exact likelihood, {N_SAMPLES:,} draws (seed 0) against {N_SAMPLES:,} reference draws; C2ST 0.5 = "
             f"indistinguishable (5 binomial standard errors: ±{noise:.3f}). Per observation, in order: C2ST, "
             "largest split R-hat (≤ 1.01: mixed), smallest bulk ESS, steps after warm-up, seconds (2 shared "
             "cores, so ±30 %); * = the sampler warned that its chains had not mixed.", "",
             "| task | configuration | observations | C2ST | R-hat | ESS | steps | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for task, (configs, _) in PLAN.items():
        for config in configs:
            cell = sorted((r for r in rows if r["task"] == task and r["config"] == config),
                          key=lambda r: r["observation"])
            if cell:
                lines.append(f"| {task} | {config} | {', '.join(str(r['observation']) for r in cell)} | "
                             f"{_column(cell, 'c2st', '{:.3f}')} | {_column(cell, 'r_hat', '{:.3f}')} | "
                             f"{_column(cell, 'ess', '{}')} | {_column(cell, 'steps', '{}')} | "
                             f"{_column(cell, 'seconds', '{:.0f}')} |")
    return "\n".join(lines)


def _column(cell: list[dict], key: str, form: str) -> str:
    """The rows' ``key`` joined by " / ", C2ST starred where the sampler warned."""
    return " / ".join(form.format(r[key]) + ("*" if key == "c2st" and r["warned"] else "") for r in cell)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(PLAN))
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--wheel", default=None)
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = os.path.join(args.out, "sampler_study.csv")
    tasks, configs = args.tasks.split(","), args.configs.split(",")
    if not args.report_only:
        done = {(r["task"], r["config"], r["observation"]) for r in read_rows(path)}
        new_file = not os.path.exists(path)
        with open(path, "a", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=FIELDS)
            if new_file:
                writer.writeheader()
            for task in tasks:
                task_configs, observations = PLAN[task]
                for config in (c for c in task_configs if c in configs):
                    for observation in observations:
                        if (task, config, observation) in done:
                            continue
                        row = run_one(task, config, observation, args.wheel)
                        writer.writerow(row)
                        file.flush()
                        print(f"{task:16s} {config:22s} observation {observation}: C2ST {row['c2st']:.3f}, R-hat "
                              f"{row['r_hat']:.3f}, ESS {row['ess']}, {row['steps']} steps, {row['seconds']:.0f} s"
                              + (" (warned)" if row["warned"] else ""), flush=True)
    configurations = __doc__[__doc__.index("Configurations"):__doc__.index("Run:")].strip()
    text = ("# Posterior sampler on multimodal posteriors (sbibm SLCP) and unimodal controls\n\n"
            f"{configurations}\n\n{table(read_rows(path))}\n")
    with open(os.path.join(args.out, "sampler_study.md"), "w") as file:
        file.write(text)
    print(text)


if __name__ == "__main__":
    main()
