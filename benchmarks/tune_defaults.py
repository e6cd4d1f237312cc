"""How the defaults were chosen: configurations of the training (network, optimiser, schedule, step budget,
batch size, score-term weighting) tried on the task suite, one factor at a time around a base, each scored by
its error relative to the best configuration on the same (task, method, seed), then the median over them.

Run:  nice -n 10 .venv/bin/python benchmarks/tune_defaults.py --methods ALICES --n 1000 --seeds 3 [--configs a,b]
Rows stream into benchmarks/results/defaults.csv (a rerun skips those there); the table goes to
benchmarks/results/defaults.md.
"""

from __future__ import annotations

import argparse
import os
import statistics

from sluice.app.benchmarks.suite import SUITE, read_results, run_jobs

# explicit settings for every configuration, so a change of the library's defaults does not change a row
PREVIOUS = dict(hidden=(64, 64), learning_rate=1e-3, schedule="plateau", steps=6000, batch_size=128)
BASE = dict(hidden=(64, 64, 64), learning_rate=2e-3, schedule="cosine", steps=6000, batch_size=128)
CONFIGS = {
    "previous": PREVIOUS,
    "prev+cosine": {**PREVIOUS, "schedule": "cosine"},
    "base": BASE,
    "2x64": {**BASE, "hidden": (64, 64)},
    "3x128": {**BASE, "hidden": (128, 128, 128)},
    "4x64": {**BASE, "hidden": (64, 64, 64, 64)},
    "lr1e-3": {**BASE, "learning_rate": 1e-3},
    "lr5e-3": {**BASE, "learning_rate": 5e-3},
    "steps3000": {**BASE, "steps": 3000},
    "steps12000": {**BASE, "steps": 12000},
    "batch256": {**BASE, "batch_size": 256},
    "batch64": {**BASE, "batch_size": 64},
    "tanh": {**BASE, "activation": "tanh"},
    "alpha0.3": {**BASE, "alpha": 0.3},
    "alpha3": {**BASE, "alpha": 3.0},
    "thetaunits": {**BASE, "scale_free": False},
    "lr1e-3+steps3000": {**BASE, "learning_rate": 1e-3, "steps": 3000},
    "lr1e-3+steps3000+patience": {**BASE, "learning_rate": 1e-3, "steps": 3000, "patience": 15},
    # the likelihood family (NDE, SCANDAL): conditional flows, batches of 256
    "flow-previous": {**PREVIOUS, "batch_size": 256},
    "flow-cosine": {**PREVIOUS, "batch_size": 256, "schedule": "cosine"},
    "flow-cosine-steps3000": {**PREVIOUS, "batch_size": 256, "schedule": "cosine", "steps": 3000},
    "flow-cosine-lr2e-3": {**PREVIOUS, "batch_size": 256, "schedule": "cosine", "learning_rate": 2e-3},
    "flow-cosine-3x64": {**PREVIOUS, "batch_size": 256, "schedule": "cosine", "hidden": (64, 64, 64)},
}
SCORE_KEYS = ("alpha", "scale_free")


def settings_for(method: str, config: str) -> dict:
    from sluice import estimators

    settings = dict(CONFIGS[config])
    if not getattr(estimators, method).uses_score:
        settings = {k: v for k, v in settings.items() if k not in SCORE_KEYS}
    return settings


def describe(settings: dict) -> str:
    """A configuration in one short line: 3×64, lr 1e-3, cosine, 6000 steps, batch 128 (α, units where set)."""
    hidden = settings["hidden"]
    text = (f"{len(hidden)}×{hidden[0]}, lr {settings['learning_rate']:g}, {settings['schedule']}, "
            f"{settings['steps']} steps, batch {settings['batch_size']}")
    extras = {"alpha": "α {}", "scale_free": "scale_free={}", "activation": "{}", "patience": "patience {}"}
    return text + "".join(f", {form.format(settings[key])}" for key, form in extras.items() if key in settings)


def relative_table(rows: list[dict], configs: list[str]) -> str:
    """Per configuration: median [min – max] over (task, method, seed) of error / best error on that cell."""
    cells: dict = {}
    for row in rows:
        cells.setdefault((row["task"], row["method"], row["n"], row["seed"]), {})[row["config"]] = row
    complete = {key: value for key, value in cells.items() if all(c in value for c in configs)}
    lines = [f"{len(complete)} cells (task, method, N, seed) with every configuration; error / best error in the cell",
             "", "| configuration | settings | median | min | max | median fit s |", "|---|---|---|---|---|---|"]
    for config in configs:
        ratios = [cell[config]["error"] / min(cell[c]["error"] for c in configs) for cell in complete.values()]
        seconds = [cell[config]["fit_seconds"] for cell in complete.values()]
        if ratios:
            lines.append(f"| {config} | {describe(CONFIGS[config])} | {statistics.median(ratios):.3f} | "
                         f"{min(ratios):.3f} | {max(ratios):.3f} | {statistics.median(seconds):.1f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(SUITE))
    parser.add_argument("--methods", default="ALICES")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    tasks, methods, configs = args.tasks.split(","), args.methods.split(","), args.configs.split(",")
    path = os.path.join(args.out, "defaults.csv")
    if not args.report_only:
        jobs = [(t, m, args.n, s, c, settings_for(m, c)) for s in range(args.seeds) for c in configs
                for t in tasks for m in methods]
        run_jobs(jobs, path, workers=args.workers)
    rows = [r for r in read_results(path) if r["task"] in tasks and r["method"] in methods and r["n"] == args.n]
    text = f"# Defaults: {', '.join(methods)} at N = {args.n:,}\n\n" + relative_table(rows, configs) + "\n"
    with open(os.path.join(args.out, "defaults.md"), "a") as file:
        file.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
