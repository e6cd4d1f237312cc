"""Side by side with sbi 0.27: posterior accuracy (C2ST), log r̂ accuracy (nMSE) and wall time on tasks with an
exact likelihood, for sbi's NPE, NLE, NRE and sluice's NDE, SCANDAL, ALICES, NPE and AugmentedNPE.

Every method of a (task, N, seed) cell trains on the same N simulations (``sluice.simulate(..., seed=seed)``,
θ ~ prior; sbi gets their (θ, x)). sbi runs with its defaults (NPE/NLE: MAF, NRE: NRE_B with a ResNet
classifier; batch 200, lr 5e-4, stop_after_epochs 20) except max_num_epochs = ceil(6000 / batches per epoch),
the same optimiser-step budget as sluice's defaults; sluice methods run with their defaults.

C2ST: for 5 observations per task (θ* from the prior, seed 100; x* ~ p(x|θ*), seed 101), 1 000 posterior draws
against 1 000 draws of the reference posterior from the exact likelihood on a grid (``grid_posterior`` with
``ExactLikelihood``: 201² points for p = 2, 2 001 for p = 1); the mean over the 5. NPE-type methods sample
directly (sbi's rejection of mass outside the prior; ``AugmentedNPE.sample`` does the same); likelihood and
ratio surrogates (sluice's and sbi's NLE/NRE alike) are sampled on the same grid instead of by MCMC.
nMSE: mean (log r̂ − log r)² / Var(log r) over 2 000 pairs (θ0, θ1) from the prior with x ~ θ1 (an NPE gives
log r̂ = log q̂(θ0|x) − log q̂(θ1|x), the box prior being flat).

Run:  nice -n 10 .venv/bin/python benchmarks/compare_sbi.py [--budgets 1000,10000] [--seeds 2] [--workers 2]
Rows stream into benchmarks/results/compare_sbi.csv; a rerun skips the rows already there. Needs
``pip install 'sluice-sbi[bench]'`` (sbi 0.27).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

SBI = ("sbi NPE", "sbi NLE", "sbi NRE")
SLUICE = ("NDE", "SCANDAL", "ALICES", "AugmentedNPE", "NPE")
AUGMENTED = ("SCANDAL", "ALICES", "AugmentedNPE")
TASK_NAMES = ("mixture", "hierarchical", "galton")
NOT_APPLICABLE = {("galton", "sbi NLE")}  # a continuous flow on a discrete x has no proper density (MNLE's job)
FIELDS = ("task", "method", "n", "seed", "c2st", "c2st_each", "nmse", "fit_seconds", "infer_seconds", "epochs")
N_OBSERVATIONS, N_POSTERIOR, N_PAIRS = 5, 1000, 2000

_tasks: dict = {}


class Task:
    """A simulator with an exact likelihood, its prior, 5 observations with reference posteriors, and test pairs."""

    def __init__(self, name: str):
        import torch

        from sluice import inference, priors, simulators
        from sluice.simulators.hierarchical import HierarchicalGaussian

        self.name = name
        self.simulator = {"mixture": simulators.GaussianMixture, "galton": simulators.GaltonBoard,
                          "hierarchical": HierarchicalGaussian}[name]()
        self.prior = self.simulator.default_prior()
        self.points = 2001 if self.prior.low.numel() == 1 else 201
        truth = inference.ExactLikelihood(self.simulator)
        theta_star = priors.sample_prior(self.prior, N_OBSERVATIONS, seed=100)
        self.x_star, _ = self.simulator.sample(theta_star, generator=torch.Generator().manual_seed(101))
        self.reference = [self.grid_samples(truth, k, seed=k) for k in range(N_OBSERVATIONS)]
        self.theta0 = priors.sample_prior(self.prior, N_PAIRS, seed=1)
        self.theta1 = priors.sample_prior(self.prior, N_PAIRS, seed=2)
        self.x, _ = self.simulator.sample(self.theta1, generator=torch.Generator().manual_seed(3))
        self.exact = truth.log_ratio(self.x, self.theta0, self.theta1)

    def grid_samples(self, estimator, k: int, seed: int):
        from sluice import inference

        return inference.grid_posterior(estimator, self.x_star[k:k + 1], self.prior, points=self.points,
                                        n_samples=N_POSTERIOR, seed=seed).samples

    def nmse(self, estimator) -> float:
        predicted = estimator.log_ratio(self.x, self.theta0, self.theta1)
        return float(((predicted - self.exact) ** 2).mean() / self.exact.var())


def fit_sbi(method: str, task: Task, data, seed: int):
    from sluice.app.benchmarks.peers import fit_sbi as fit

    return fit(method, data, task.prior, seed)


def run_one(task_name: str, method: str, n: int, seed: int) -> dict:
    """Simulate, fit, draw 5 posteriors, score them (C2ST) and the log r̂ (nMSE)."""
    import warnings

    import torch

    import sluice
    from sluice import estimators
    from sluice.estimators import posterior as posterior_estimators
    from sluice.inference import c2st

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    task = _tasks.setdefault(task_name, Task(task_name))
    data = sluice.simulate(task.simulator, task.prior, n, seed=seed, progress=False)
    started = time.perf_counter()
    if method in SBI:
        estimator, epochs = fit_sbi(method, task, data, seed)
    elif method in ("NPE", "AugmentedNPE"):
        estimator = getattr(posterior_estimators, method)().fit(data, seed=seed, prior=task.prior, progress=False)
    else:
        estimator = getattr(estimators, method)().fit(data, seed=seed, progress=False)
    fit_seconds = time.perf_counter() - started
    if method not in SBI:
        epochs = len(estimator.history_.train_loss)
    started = time.perf_counter()
    direct = method in ("sbi NPE", "NPE", "AugmentedNPE")
    # draws independent of the reference's: the same seed would pick the same grid cells for a near-exact surrogate
    samples = [estimator.sample(task.x_star[k], N_POSTERIOR, seed=k) if direct else
               task.grid_samples(estimator, k, seed=1000 + k) for k in range(N_OBSERVATIONS)]
    infer_seconds = time.perf_counter() - started
    scores = [c2st(ref, s, seed=k) for k, (s, ref) in enumerate(zip(samples, task.reference, strict=True))]
    return {"task": task_name, "method": method, "n": n, "seed": seed, "c2st": round(statistics.fmean(scores), 4),
            "c2st_each": " ".join(f"{s:.3f}" for s in scores), "nmse": round(task.nmse(estimator), 5),
            "fit_seconds": round(fit_seconds, 1), "infer_seconds": round(infer_seconds, 2), "epochs": epochs}


def read_rows(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as file:
        return [{**row, "n": int(row["n"]), "seed": int(row["seed"]), **{k: float(row[k]) for k in
                 ("c2st", "nmse", "fit_seconds", "infer_seconds")}} for row in csv.DictReader(file)]


def jobs(tasks, budgets, seeds, done) -> list[tuple]:
    """The smallest budget first (every task, every method). Above it, sbi's methods first (seed by seed), then
    sluice's, then sluice's plain NPE (a control for AugmentedNPE), so a run cut short still compares sluice at
    the small budget with sbi at the large one."""
    order, small = [], min(budgets)
    order += [(t, m, small, s) for t in tasks for m in SBI + SLUICE for s in range(seeds)]
    for n in sorted(budgets)[1:]:
        for methods in (SBI, SLUICE[:-1], SLUICE[-1:]):
            order += [(t, m, n, s) for s in range(seeds) for t in tasks for m in methods]
    return [job for job in order if job[:2] not in NOT_APPLICABLE and job not in done]


def run(tasks, budgets, seeds, path: str, workers: int) -> None:
    done = {(r["task"], r["method"], r["n"], r["seed"]) for r in read_rows(path)}
    todo = jobs(tasks, budgets, seeds, done)
    new_file = not os.path.exists(path)
    with open(path, "a", newline="") as file, \
            ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        writer = csv.DictWriter(file, fieldnames=FIELDS)
        if new_file:
            writer.writeheader()
        futures = [pool.submit(run_one, *job) for job in todo]
        for k, future in enumerate(as_completed(futures), 1):
            row = future.result()
            writer.writerow(row)
            file.flush()
            print(f"[{k}/{len(todo)}] {row['task']:12s} {row['method']:12s} n={row['n']:6d} seed={row['seed']} "
                  f"C2ST={row['c2st']:.3f} nMSE={row['nmse']:.4f} fit {row['fit_seconds']:.0f} s", flush=True)


def medians(rows) -> dict:
    groups: dict = {}
    for row in rows:
        groups.setdefault((row["task"], row["method"], row["n"]), []).append(row)
    return {key: {k: statistics.median(r[k] for r in group) for k in ("c2st", "nmse", "fit_seconds",
                                                                        "infer_seconds")} | {"seeds": len(group)}
            for key, group in groups.items()}


def goals(stats, tasks, small=1000, large=10_000) -> list[str]:
    lines, beaten = [], 0
    for task in tasks:
        ours = {m: stats[(task, m, small)]["c2st"] for m in AUGMENTED if (task, m, small) in stats}
        theirs = {m: stats[(task, m, small)]["c2st"] for m in SBI if (task, m, small) in stats}
        theirs_large = {m: stats[(task, m, large)]["c2st"] for m in SBI if (task, m, large) in stats}
        if not ours or not theirs:
            lines.append(f"- {task}: not enough rows")
            continue
        best, rival = min(ours, key=ours.get), min(theirs, key=theirs.get)
        verdict = "lower" if ours[best] < theirs[rival] else "NOT lower"
        line = f"- {task}: at N={small:,} sluice's best augmented {best} {ours[best]:.3f} vs sbi's best {rival} " \
               f"{theirs[rival]:.3f}: {verdict}"
        if theirs_large:
            rival_large = min(theirs_large, key=theirs_large.get)
            matched = ours[best] <= theirs_large[rival_large] + 0.01
            beaten += matched
            line += f"; sbi's best at N={large:,}: {rival_large} {theirs_large[rival_large]:.3f} " \
                    f"({'matched or beaten' if matched else 'not matched'} within 0.01)"
        lines.append(line)
    return lines + [f"- tasks where sluice at N={small:,} matches or beats sbi at N={large:,}: {beaten}"]


def markdown(rows, tasks) -> str:
    stats = medians(rows)
    budgets = sorted({r["n"] for r in rows})
    out = ["# sluice against sbi 0.27", "",
           "Median over seeds; C2ST (0.5 is perfect) is the mean over 5 observations; nMSE of log r̂ over 2 000 "
           "random (θ0, θ1); fit and inference (5 posteriors) in seconds at the largest N. '–': not run.", ""]
    for task in tasks:
        out += [f"## {task}", "", "| method | " + " | ".join(f"C2ST N={n:,}" for n in budgets) + " | " +
                " | ".join(f"nMSE N={n:,}" for n in budgets) + " | fit s | infer s | seeds |",
                "|---" * (2 * len(budgets) + 4) + "|"]
        for method in SBI + SLUICE:
            cells = [stats.get((task, method, n)) for n in budgets]
            if not any(cells):
                continue
            last = next(c for c in reversed(cells) if c)
            out.append(f"| {method} | " + " | ".join(f"{c['c2st']:.3f}" if c else "–" for c in cells) + " | " +
                       " | ".join(f"{c['nmse']:.4f}" if c else "–" for c in cells) +
                       f" | {last['fit_seconds']:.0f} | {last['infer_seconds']:.1f} | "
                       f"{'/'.join(str(c['seeds']) if c else '0' for c in cells)} |")
        out.append("")
    return "\n".join(out + ["## Goals", ""] + goals(stats, tasks)) + "\n"


def plot(rows, tasks, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = medians(rows)
    figure, axes = plt.subplots(2, len(tasks), figsize=(4.2 * len(tasks), 7), squeeze=False)
    for column, task in enumerate(tasks):
        for index, method in enumerate(SBI + SLUICE):  # one colour per method in every panel
            budgets = sorted(n for t, m, n in stats if (t, m) == (task, method))
            for row, metric in enumerate(("c2st", "nmse")):
                if budgets:
                    axes[row, column].plot(budgets, [stats[(task, method, n)][metric] for n in budgets],
                                           "--" if method in SBI else "-", marker="o", label=method, color=f"C{index}")
        axes[0, column].set_title(task)
        for row, label in enumerate(("C2ST (0.5 is perfect)", "nMSE of log r̂")):
            axes[row, column].set_xscale("log")
            axes[row, column].set_yscale("log" if row else "linear")
            axes[row, column].set_xlabel("simulations N")
            axes[row, column].set_ylabel(label)
    axes[0, 0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASK_NAMES))
    parser.add_argument("--budgets", default="1000,10000")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--report-only", action="store_true", help="rewrite the table and plot from the CSV")
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    path = os.path.join(args.out, "compare_sbi.csv")
    os.makedirs(args.out, exist_ok=True)
    if not args.report_only:
        run(tasks, [int(n) for n in args.budgets.split(",")], args.seeds, path, args.workers)
    rows = [r for r in read_rows(path) if r["task"] in tasks]
    text = markdown(rows, tasks)
    with open(os.path.join(args.out, "compare_sbi.md"), "w") as file:
        file.write(text)
    plot(rows, tasks, os.path.join(args.out, "compare_sbi.png"))
    print(text)


if __name__ == "__main__":
    main()
