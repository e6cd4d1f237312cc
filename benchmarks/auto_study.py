"""Which held-out criterion should the automatic choice use? On each task of the suite, the candidates are fitted
once on the same data; then each way of combining them (select or stack; by ALICE's cross-entropy or by the score
residual) is scored against the exact log r, next to the best single candidate (the oracle) and the candidates'
plain mean.

Run:  nice -n 10 .venv/bin/python benchmarks/auto_study.py [--n 1000] [--seeds 2] [--workers 2]
Rows stream into benchmarks/results/auto_study.csv; the summary goes to benchmarks/results/auto_study.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

CANDIDATES = ("ALICES", "ALICE", "SCANDAL")
RULES = ("stack alice", "select alice", "stack score", "select score", "stack log_r", "select log_r", "mean")
if os.environ.get("AUTO_STUDY_PAIR"):  # the second study: the default candidates, stack against decisive selection
    CANDIDATES = ("ALICES", "SCANDAL")
    RULES = ("stack score", "select score", "decisive score", "stack alice", "mean")


def study_one(task_name: str, n: int, seed: int, candidates=CANDIDATES) -> list[dict]:
    import time
    import warnings

    import torch

    from sluice import estimators
    from sluice.app.benchmarks.suite import task
    from sluice.estimators.base import FitSeeds

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    the_task = task(task_name)
    data = the_task.training_data("Auto", n, seed)
    members = [getattr(estimators, name)() for name in candidates]
    started = time.perf_counter()
    auto = estimators.Auto(candidates=members).fit(data, seed=seed, progress=False)
    seconds = time.perf_counter() - started
    rows = [{"task": task_name, "n": n, "seed": seed, "rule": name, "error": the_task.error(member),
             "fit_seconds": ""} for name, member in zip(candidates, members, strict=True)]
    fitted = [{"name": name, "estimator": member, "fit_seconds": 0.0, "epochs": 0}
              for name, member in zip(candidates, members, strict=True)]
    _, held_out = data.split(0.2, FitSeeds.spawn(seed).split)
    for rule in RULES[:-1]:
        auto.combine, criterion = rule.split()
        auto._choose(fitted, held_out, criterion)
        weights = " ".join(f"{row['weight']:.2f}" for row in auto.selection_)
        rows.append({"task": task_name, "n": n, "seed": seed, "rule": f"{rule} [{weights}]",
                     "error": the_task.error(auto), "fit_seconds": round(seconds, 1)})
    mean = torch.stack([m.log_ratio(the_task.x, the_task.theta0, the_task.theta1) for m in members]).mean(dim=0)
    rows.append({"task": task_name, "n": n, "seed": seed, "rule": "mean", "error": the_task.error_of(mean),
                 "fit_seconds": ""})
    return rows


def main():
    from sluice.app.benchmarks.suite import SUITE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(SUITE))
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--name", default="auto_study")
    args = parser.parse_args()
    path = os.path.join(args.out, f"{args.name}.csv")
    fields = ("task", "n", "seed", "rule", "error", "fit_seconds")
    done = set()
    if os.path.exists(path):
        done = {(r["task"], int(r["n"]), int(r["seed"])) for r in csv.DictReader(open(path))}
    jobs = [(t, args.n, s) for s in range(args.seeds) for t in args.tasks.split(",") if (t, args.n, s) not in done]
    new = not os.path.exists(path)
    with open(path, "a", newline="") as file, \
            ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        writer = csv.DictWriter(file, fieldnames=fields)
        if new:
            writer.writeheader()
        for future in as_completed([pool.submit(study_one, *job) for job in jobs]):
            for row in future.result():
                writer.writerow(row)
                print(row, flush=True)
            file.flush()
    rows = list(csv.DictReader(open(path)))
    cells: dict = {}
    for row in rows:
        rule = row["rule"].split(" [")[0]
        cells.setdefault((row["task"], row["n"], row["seed"]), {})[rule] = float(row["error"])
    lines = [f"{len(cells)} cells (task, seed); error of each rule / error of the best single candidate in the cell",
             "", "| rule | median | max | cells within 20% of the best candidate |", "|---|---|---|---|"]
    for rule in CANDIDATES + RULES:
        ratios = [c[rule] / min(c[m] for m in CANDIDATES) for c in cells.values() if rule in c]
        if not ratios:
            continue
        within = sum(r <= 1.2 for r in ratios)
        lines.append(f"| {rule} | {statistics.median(ratios):.3f} | {max(ratios):.3f} | {within}/{len(ratios)} |")
    text = "# The automatic choice: rules against the best candidate\n\n" + "\n".join(lines) + "\n"
    open(os.path.join(args.out, f"{args.name}.md"), "w").write(text)
    print(text)


if __name__ == "__main__":
    main()
