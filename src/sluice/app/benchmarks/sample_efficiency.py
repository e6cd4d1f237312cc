"""The sample-efficiency study: every method at several simulation budgets and seeds, scored against the
exact log r. Results stream into a CSV (a rerun skips the rows already there), then a table and a plot."""

from __future__ import annotations

import csv
import math
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

METHODS = ("CARL", "NDE", "ROLR", "ALICE", "CASCAL", "RASCAL", "ALICES", "SCANDAL", "SALLY", "SALLINO")
BLACK_BOX = ("CARL", "NDE")
CHOICES = METHODS + ("Auto",)  # what `sluice benchmark galton|mixture --methods` accepts
FIELDS = ("task", "method", "n", "seed", "error", "fit_seconds", "epochs")

_tasks: dict = {}


def run_one(task_name: str, method: str, n: int, seed: int) -> dict:
    """Simulate n runs (data seed = ``seed``), fit ``method`` with its defaults, and score it."""
    import torch

    from ... import estimators
    from .tasks import TASKS

    torch.set_num_threads(1)
    task = _tasks.setdefault(task_name, TASKS[task_name]())
    data = task.training_data(method, n, seed)
    started = time.perf_counter()
    estimator = getattr(estimators, method)().fit(data, seed=seed, progress=False)
    seconds = time.perf_counter() - started
    history = getattr(estimator, "history_", None)  # Auto has one per member, not its own
    return {"task": task_name, "method": method, "n": n, "seed": seed, "error": task.error(estimator),
            "fit_seconds": round(seconds, 2), "epochs": len(history.train_loss) if history is not None else -1}


def refuse_unknown(what: str, chosen, known) -> None:
    """A ValueError naming the entries of ``chosen`` that are not in ``known``, and the choices."""
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; choose from {list(known)}")


def read_results(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as file:
        return [{**row, "n": int(row["n"]), "seed": int(row["seed"]), "error": float(row["error"]),
                 "fit_seconds": float(row["fit_seconds"]), "epochs": int(row["epochs"])}
                for row in csv.DictReader(file)]


def run(task_name: str, methods=METHODS, budgets=(200, 1000, 10_000), seeds=5, out_dir="benchmark-results",
        workers: int = 2, report=print) -> list[dict]:
    """Run every (method, budget, seed) not yet in ``out_dir/<task>.csv``, ``workers`` processes at a time."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{task_name}.csv")
    done = {(row["method"], row["n"], row["seed"]) for row in read_results(path)}
    jobs = [(task_name, m, n, s) for n in budgets for s in range(seeds) for m in methods if (m, n, s) not in done]
    jobs.sort(key=lambda job: -job[2])  # the big budgets first, so the pool drains evenly
    for k, row in append_rows(path, FIELDS, run_one, jobs, workers):
        report(f"[{k}/{len(jobs)}] {row['method']:8s} n={row['n']:6d} seed={row['seed']} "
               f"error={row['error']:.5f} ({row['fit_seconds']:.1f} s)")
    return [row for row in read_results(path) if row["method"] in methods and row["n"] in budgets]


def append_rows(path: str, fields, function, jobs: list[tuple], workers: int, keep=lambda row: True):
    """Run ``function(*job)`` for every job, ``workers`` spawned processes at a time, and append each row it
    returns (a dict, or a list of dicts) that ``keep`` accepts to the CSV at ``path`` as soon as its job is done;
    yields (job number, row). Rows reach the file one by one, so an interrupted run loses only the jobs running."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    new_file = not os.path.exists(path)
    with open(path, "a", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        if new_file:
            writer.writeheader()
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(function, *job) for job in jobs]
            for k, future in enumerate(futures, 1):
                result = future.result()
                for row in result if isinstance(result, list) else [result]:
                    if keep(row):
                        writer.writerow(row)
                        file.flush()
                        yield k, row


def summary(rows: list[dict]) -> dict:
    """{(method, n): (median, min, max, median fit seconds)} over seeds."""
    groups: dict = {}
    for row in rows:
        groups.setdefault((row["method"], row["n"]), []).append(row)
    return {key: (statistics.median(r["error"] for r in group), min(r["error"] for r in group),
                  max(r["error"] for r in group), statistics.median(r["fit_seconds"] for r in group))
            for key, group in groups.items()}


def markdown_table(rows: list[dict], metric: str, trivial: float) -> str:
    stats = summary(rows)
    budgets = sorted({n for _, n in stats})
    methods = [m for m in CHOICES if any((m, n) in stats for n in budgets)]
    lines = [f"{metric}; median over seeds [min – max]; trivial log r̂ ≡ 0 scores {trivial:.4g}.", "",
             "| method | " + " | ".join(f"N = {n:,}" for n in budgets) + " | fit s (largest N) |",
             "|---" * (len(budgets) + 2) + "|"]
    for method in methods:
        cells = []
        for n in budgets:
            if (method, n) in stats:
                median, low, high, _ = stats[(method, n)]
                cells.append(f"{median:.4g} [{low:.2g} – {high:.2g}]")
            else:
                cells.append("–")
        seconds = stats.get((method, budgets[-1]), (0, 0, 0, math.nan))[3]
        kind = " (black box)" if method in BLACK_BOX else ""
        lines.append(f"| {method}{kind} | " + " | ".join(cells) + f" | {seconds:.1f} |")
    return "\n".join(lines)


def goals(rows: list[dict], small: int = 1000, large: int = 10_000) -> str:
    """The issue's goals read off the medians: best augmented at ``small`` against the best black box at ``large``."""
    stats = summary(rows)
    augmented = {m: stats[(m, small)][0] for m in CHOICES if m not in BLACK_BOX and (m, small) in stats}
    black_box = {m: stats[(m, large)][0] for m in BLACK_BOX if (m, large) in stats}
    if not augmented or not black_box:
        return "goals: not enough budgets run to judge"
    best_augmented = min(augmented, key=augmented.get)
    best_black_box = min(black_box, key=black_box.get)
    beating = sorted(m for m, value in augmented.items() if value <= black_box[best_black_box])
    slowest = max((v[3] for (m, n), v in stats.items() if n == large), default=math.nan)
    return (f"best augmented at N={small:,}: {best_augmented} {augmented[best_augmented]:.4g}; best black box at "
            f"N={large:,}: {best_black_box} {black_box[best_black_box]:.4g}; augmented methods at N={small:,} "
            f"as good or better: {', '.join(beating) or 'none'}; slowest median fit at N={large:,}: {slowest:.1f} s")


def plot(rows: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = summary(rows)
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for method in CHOICES:
        budgets = sorted(n for m, n in stats if m == method)
        if not budgets:
            continue
        median = [stats[(method, n)][0] for n in budgets]
        low = [stats[(method, n)][1] for n in budgets]
        high = [stats[(method, n)][2] for n in budgets]
        style = "--" if method in BLACK_BOX else "-"
        line, = axes.plot(budgets, median, style, marker="o", label=method)
        axes.fill_between(budgets, low, high, color=line.get_color(), alpha=0.12)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("training simulations N")
    axes.set_ylabel("error of log r̂ (median, band: min–max over seeds)")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def report_files(task_name: str, rows: list[dict], out_dir: str) -> str:
    """Write <task>.md and <task>.png next to the CSV; return the Markdown text."""
    from .tasks import TASKS

    task = TASKS[task_name]()
    text = f"# Sample efficiency: {task_name}\n\n" + markdown_table(rows, task.metric, task.trivial_error()) + \
        "\n\n" + goals(rows) + "\n"
    with open(os.path.join(out_dir, f"{task_name}.md"), "w") as file:
        file.write(text)
    plot(rows, os.path.join(out_dir, f"{task_name}.png"), f"{task_name}: {task.metric}")
    return text
