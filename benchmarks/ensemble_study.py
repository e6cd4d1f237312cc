"""Does averaging several fits close the gap on the suite's hard tasks? SCANDAL (α = 1 and α = 4) and ALICES at
N = 1 000, each fitted with three initialisations (fit seeds seed + 100·k) on the same data, then averaged.

Run:  nice .venv/bin/python benchmarks/ensemble_study.py --tasks hierarchical,counts,slcp,student_t,support --seeds 1
Test-set predictions are cached per fit in --cache (a rerun skips the fits there); the table (normalised MSE of
each rule, median over seeds) goes to benchmarks/results/ensemble_study.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import torch

VARIANTS = {"SCANDAL": ("SCANDAL", {}), "SCANDAL α=4": ("SCANDAL", {"alpha": 4.0}), "ALICES": ("ALICES", {})}
INITIALISATIONS = 3
RULES = {  # rule -> the (variant, initialisation) fits it averages
    "SCANDAL": [("SCANDAL", 0)], "SCANDAL ×2": [("SCANDAL", k) for k in range(2)],
    "SCANDAL ×3": [("SCANDAL", k) for k in range(3)], "SCANDAL α=4": [("SCANDAL α=4", 0)],
    "SCANDAL α=4 ×3": [("SCANDAL α=4", k) for k in range(3)],
    "SCANDAL ×3 + α=4 ×3": [(v, k) for v in ("SCANDAL", "SCANDAL α=4") for k in range(3)],
    "ALICES": [("ALICES", 0)], "ALICES ×2": [("ALICES", k) for k in range(2)],
    "ALICES ×3": [("ALICES", k) for k in range(3)],
}


def cache_path(cache: str, task: str, seed: int, variant: str, k: int) -> str:
    return os.path.join(cache, f"{task}_{seed}_{variant.replace(' ', '').replace('=', '')}_{k}.pt")


def fit_one(cache: str, task_name: str, seed: int, variant: str, k: int) -> str:
    """Fit one (variant, initialisation) on the suite task's data of ``seed`` and cache its test-set log r̂."""
    path = cache_path(cache, task_name, seed, variant, k)
    if os.path.exists(path):
        return path
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    from sluice import estimators
    from sluice.app.benchmarks.suite import task

    the_task = task(task_name)
    method, settings = VARIANTS[variant]
    data = the_task.training_data(method, 1000, seed)
    started = time.perf_counter()
    estimator = getattr(estimators, method)(**settings).fit(data, seed=seed + 100 * k, progress=False)
    seconds = time.perf_counter() - started
    prediction = estimator.log_ratio(the_task.x, the_task.theta0, the_task.theta1).double()
    torch.save({"prediction": prediction, "seconds": seconds}, path)
    print(f"{task_name} seed {seed} {variant} #{k}: {the_task.error_of(prediction):.4f} ({seconds:.0f} s)", flush=True)
    return path


def table(cache: str, tasks, seeds) -> str:
    from sluice.app.benchmarks.suite import task

    lines = ["| task | " + " | ".join(RULES) + " |", "|---" * (len(RULES) + 1) + "|"]
    for task_name in tasks:
        the_task, cells = task(task_name), []
        for fits in RULES.values():
            errors = []
            for seed in range(seeds):
                paths = [cache_path(cache, task_name, seed, v, k) for v, k in fits]
                if all(os.path.exists(p) for p in paths):
                    mean = torch.stack([torch.load(p)["prediction"] for p in paths]).mean(dim=0)
                    errors.append(the_task.error_of(mean))
            cells.append(f"{statistics.median(errors):.4f}" if errors else "–")
        lines.append(f"| {task_name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="hierarchical,counts,slcp,student_t,support")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache", default="ensemble-study-cache")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    os.makedirs(args.cache, exist_ok=True)
    if not args.report_only:
        jobs = [(args.cache, t, s, v, k) for s in range(args.seeds) for k in range(INITIALISATIONS) for t in tasks
                for v in VARIANTS]
        with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
            list(pool.map(fit_one, *zip(*jobs, strict=True)))
    text = (f"# Ensembles of fits at N = 1,000 (normalised MSE, median over {args.seeds} seed(s))\n\n"
            + table(args.cache, tasks, args.seeds) + "\n")
    with open(os.path.join(args.out, "ensemble_study.md"), "w") as file:
        file.write(text)
    print(text)


if __name__ == "__main__":
    main()
