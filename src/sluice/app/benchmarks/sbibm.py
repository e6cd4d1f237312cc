"""sbibm's benchmark (Lueckmann et al., "Benchmarking simulation-based inference", AISTATS 2021) on the tasks whose
simulators sluice opens (docs/sbibm.md): per task, budget, method and training seed, one fit, then for each
observation 10,000 posterior draws scored by C2ST against sbibm's 10,000 reference draws (0.5 = indistinguishable),
beside the published NPE, NLE and NRE figures (``sbibm_published``).

The reference posteriors and observations are read from sbibm's wheel (``sluice.simulators.load_reference``;
``make sbibm-data`` downloads it). C2ST follows sbibm's protocol (``sluice.inference.c2st``, scikit-learn).
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from ...data import simulate
from ...simulators.sbibm import SBIBM_SIMULATORS, load_reference
from .sample_efficiency import append_rows, refuse_unknown
from .sbibm_published import best_published, published

TASKS = tuple(SBIBM_SIMULATORS)
# the posterior family (NPE black box, AugmentedNPE with the joint score) and the likelihood family (NDE black box,
# SCANDAL) sampled by MCMC; "exact" samples the simulator's exact likelihood with the same sampler: a check of the
# sampler and of C2ST, not a method
METHODS = ("NPE", "AugmentedNPE", "SCANDAL")
CHOICES = ("NPE", "AugmentedNPE", "NDE", "SCANDAL", "ALICES", "exact")
AUGMENTED = ("AugmentedNPE", "SCANDAL", "ALICES")
FIELDS = ("task", "method", "n", "seed", "observation", "c2st", "fit_seconds", "sample_seconds", "r_hat")


def fit(method: str, task: str, n: int, seed: int):
    """The estimator of ``method`` trained on n simulations of ``task`` (data seed ``seed``), and its fit seconds;
    "exact" gives the simulator's exact likelihood (no training)."""
    from ... import estimators
    from ...inference import ExactLikelihood

    simulator = SBIBM_SIMULATORS[task]()
    if method == "exact":
        return (ExactLikelihood(simulator) if simulator.has_log_likelihood else UnnormalisedLikelihood(simulator)), 0.0
    prior = simulator.default_prior()
    data = simulate(simulator, prior, n, seed=seed, progress=False)
    started = time.perf_counter()
    estimator = getattr(estimators, method)()
    posterior_family = isinstance(estimator, estimators.NPE)
    estimator.fit(data, seed=seed, progress=False, **({"prior": prior} if posterior_family else {}))
    return estimator, time.perf_counter() - started


class UnnormalisedLikelihood:
    """log p(x|θ) up to a θ-free term (bernoulli_glm's ``unnormalised_log_likelihood``) behind the estimator
    interface: all that a posterior sampler needs."""

    def __init__(self, simulator):
        self.simulator = simulator
        self.parameter_names_ = tuple(simulator.parameter_names)

    def log_likelihood(self, x, theta) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float32)
        with torch.no_grad():
            return self.simulator.unnormalised_log_likelihood(x, theta.expand(x.shape[0], -1)).to(torch.float32)

    def log_ratio(self, x, theta0, theta1) -> torch.Tensor:
        return self.log_likelihood(x, theta0) - self.log_likelihood(x, theta1)


def run_one(task: str, method: str, n: int, seed: int, observations: tuple[int, ...], n_samples: int,
            wheel: str | None) -> list[dict]:
    """One fit, then one row per observation: the C2ST of ``n_samples`` posterior draws against as many reference
    draws."""
    import warnings

    from ...inference.diagnostics import c2st
    from ...inference.posterior import sample_posterior

    warnings.filterwarnings("ignore")  # a benchmark row is a number; the sampler's warnings are the tests' business
    torch.set_num_threads(1)
    estimator, fit_seconds = fit(method, task, n, seed)
    prior = SBIBM_SIMULATORS[task]().default_prior()
    rows = []
    for observation in observations:
        x_observed, reference, _ = load_reference(task, observation, wheel)
        started = time.perf_counter()
        posterior = sample_posterior(estimator, x_observed, prior, n_samples, seed=seed)
        seconds = time.perf_counter() - started
        score = c2st(reference[:n_samples], posterior.samples, seed=seed)
        # the sampler's largest split R-hat (empty for direct draws): above 1.01 it warned that it had not mixed
        r_hat = "" if getattr(posterior, "r_hat", None) is None else round(float(posterior.r_hat.max()), 4)
        rows.append({"task": task, "method": method, "n": n, "seed": seed, "observation": observation,
                     "c2st": round(score, 5), "fit_seconds": round(fit_seconds, 2),
                     "sample_seconds": round(seconds, 2), "r_hat": r_hat})
    return rows


def read_rows(path: str) -> list[dict]:
    import csv

    if not os.path.exists(path):
        return []
    with open(path, newline="") as file:
        return [{**row, "n": int(row["n"]), "seed": int(row["seed"]), "observation": int(row["observation"]),
                 "c2st": float(row["c2st"]), "fit_seconds": float(row["fit_seconds"]),
                 "sample_seconds": float(row["sample_seconds"]),
                 "r_hat": float(row["r_hat"]) if row.get("r_hat") else None} for row in csv.DictReader(file)]


def run(tasks=TASKS, methods=METHODS, budgets=(1000, 10_000), seeds: int = 3, observations=tuple(range(1, 11)),
        n_samples: int = 10_000, wheel: str | None = None, path: str = "benchmark-results/sbibm.csv",
        workers: int = 2, report=print) -> list[dict]:
    """Every (task, method, budget, seed) whose rows for ``observations`` are not all in the CSV at ``path``,
    ``workers`` processes at a time; rows are appended as each fit finishes, so an interrupted run resumes."""
    refuse_unknown("tasks", tasks, TASKS)
    refuse_unknown("methods", methods, CHOICES)
    load_reference(tasks[0], observations[0], wheel)  # a missing wheel fails here, before any fit
    done = {(r["task"], r["method"], r["n"], r["seed"], r["observation"]) for r in read_rows(path)}
    jobs = []
    for task in tasks:
        for method in methods:
            for n in (budgets if method != "exact" else (0,)):
                for seed in range(seeds if method != "exact" else 1):
                    missing = tuple(o for o in observations if (task, method, n, seed, o) not in done)
                    if missing:
                        jobs.append((task, method, n, seed, missing, n_samples, wheel))
    for k, row in append_rows(path, FIELDS, run_one, jobs, workers):
        report(f"[{k}/{len(jobs)}] {row['task']:24s} {row['method']:12s} n={row['n']:6d} seed={row['seed']} "
               f"observation {row['observation']:2d}: C2ST {row['c2st']:.3f} (fit {row['fit_seconds']:.0f} s, "
               f"sampling {row['sample_seconds']:.0f} s)")
    return read_rows(path)


def _budget(n: int) -> str:
    return {0: "–", 1000: "10³", 10_000: "10⁴", 100_000: "10⁵"}.get(n, f"{n:,}")


def table(rows: list[dict], observations=tuple(range(1, 11))) -> str:
    """Per task: each sluice method and budget as median [min–max] of C2ST over observations and seeds, beside the
    published best of NPE, NLE and NRE at 10³, 10⁴ and 10⁵ (medians over the same observations), and whether the
    best augmented method at 10³ reaches the published best at 10⁴ (the goal) and at 10⁵."""
    rows = [r for r in rows if r["observation"] in observations]
    lines = [f"C2ST (0.5 = the reference posterior), median [min–max] over observations {min(observations)}–"
             f"{max(observations)} and training seeds; published: Lueckmann et al. (2021), the authors' released "
             "results, median over the same observations.", ""]
    for task in TASKS:
        mine = [r for r in rows if r["task"] == task]
        if not mine:
            continue
        lines += [f"### {task}", "", "| method | simulations | C2ST | seeds | fit s | sampling s |",
                  "|---|---|---|---|---|---|"]
        for method in CHOICES:
            for n in sorted({r["n"] for r in mine if r["method"] == method}):
                cell = [r for r in mine if r["method"] == method and r["n"] == n]
                values = [r["c2st"] for r in cell]
                lines.append(f"| {method} | {_budget(n)} | {statistics.median(values):.3f} [{min(values):.3f}–"
                             f"{max(values):.3f}] | {len({r['seed'] for r in cell})} | "
                             f"{statistics.median(r['fit_seconds'] for r in cell):.0f} | "
                             f"{statistics.median(r['sample_seconds'] for r in cell):.0f} |")
        for n in (1000, 10_000, 100_000):
            algorithm, value = best_published(task, n, observations)
            others = ", ".join(f"{a} {published(task, a, n, observations):.3f}" for a in ("NPE", "NLE", "NRE"))
            lines.append(f"| published best: {algorithm} | {_budget(n)} | {value:.3f} | ({others}) | | |")
        augmented = {}
        for method in AUGMENTED:
            values = [r["c2st"] for r in mine if r["method"] == method and r["n"] == 1000]
            if values:
                augmented[method] = statistics.median(values)
        if augmented:
            method, value = min(augmented.items(), key=lambda item: item[1])
            at_4, at_5 = best_published(task, 10_000, observations)[1], best_published(task, 100_000, observations)[1]
            verdict = "meets" if value <= at_4 else "misses"
            lines += ["", f"Goal: best augmented method at 10³, {method} {value:.3f}, {verdict} the published best at "
                      f"10⁴ ({at_4:.3f}); the published best at 10⁵ is {at_5:.3f}."]
        lines.append("")
    return "\n".join(lines)


def report_files(rows: list[dict], out_dir: str, observations=tuple(range(1, 11))) -> str:
    """Write the table to ``out_dir/sbibm.md`` and return it."""
    text = "# sbibm: C2ST on the opened tasks\n\n" + table(rows, observations)
    with open(os.path.join(out_dir, "sbibm.md"), "w") as file:
        file.write(text + "\n")
    return text
