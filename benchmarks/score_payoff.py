"""Why does the score not pay off on sbibm's SLCP? The likelihood family at N = 1 000 on sbibm_slcp (no latents:
every joint score is the exact score), scored like the task suite by the normalised MSE of log r̂ over 2 000 prior
pairs: NDE against SCANDAL with other weights of the score term and other flows.

Run:  nice .venv/bin/python benchmarks/score_payoff.py [--tasks sbibm_slcp,sbibm_gaussian_mixture] [--seeds 2]
Rows stream into benchmarks/results/score_payoff.csv (a rerun skips those there); the table goes to
benchmarks/results/score_payoff.md.
"""

from __future__ import annotations

import argparse
import os
import statistics

from sluice.app.benchmarks.suite import read_results, run_jobs

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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="sbibm_slcp")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    tasks, configs = args.tasks.split(","), args.configs.split(",")
    path = os.path.join(args.out, "score_payoff.csv")
    if not args.report_only:
        jobs = [(t, CONFIGS[c][0], args.n, s, c, CONFIGS[c][1]) for s in range(args.seeds) for t in tasks
                for c in configs]
        run_jobs(jobs, path, workers=args.workers)
    rows = [r for r in read_results(path) if r["n"] == args.n]
    lines = [f"# The score term on sbibm tasks, N = {args.n:,} (normalised MSE of log r̂, median [min–max] over seeds)",
             "", "| configuration | " + " | ".join(tasks) + " | median fit s |", "|---" * (len(tasks) + 2) + "|"]
    for config in configs:
        cells, seconds = [], []
        for task_name in tasks:
            errors = [r["error"] for r in rows if r["task"] == task_name and r["config"] == config]
            seconds += [r["fit_seconds"] for r in rows if r["task"] == task_name and r["config"] == config]
            cells.append(f"{statistics.median(errors):.4f} [{min(errors):.4f}–{max(errors):.4f}]" if errors else "–")
        fit = f"{statistics.median(seconds):.0f}" if seconds else "–"
        lines.append(f"| {config} | " + " | ".join(cells) + f" | {fit} |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "score_payoff.md"), "w") as file:
        file.write(text)
    print(text)


if __name__ == "__main__":
    main()
