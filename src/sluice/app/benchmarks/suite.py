"""The task suite: simulators with an exact likelihood, each with a fixed test set, on which every method (and
sbi's NRE and NLE where sbi is installed) is scored by the normalised MSE of log r̂ (docs/tasks.md).

    nMSE = mean_i (log r̂(x_i|θ0_i,θ1_i) − log r(x_i|θ0_i,θ1_i))² / mean_i log r(x_i|θ0_i,θ1_i)²,

over 2 000 pairs θ0, θ1 drawn from the prior (seeds 1 and 2) with x_i ~ p(x|θ1_i) (seed 3): 1.0 is the score of
log r̂ ≡ 0, 0 the truth.
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from ...data import simulate
from ...simulators import BUILT_IN, priors
from .sample_efficiency import METHODS, append_rows, read_results, refuse_unknown

# the order of the table: from the published toys to the ones chosen to break estimators
SUITE = ("galton", "mixture", "hierarchical", "student_t", "linear20", "counts", "support", "shape", "slcp")
SCORE_ONLY = ("SALLY", "SALLINO")
PEERS = ("sbi NRE", "sbi NLE")
FIELDS = ("task", "method", "config", "n", "seed", "error", "fit_seconds", "epochs")


class SuiteTask:
    """One simulator of the suite with its fixed test set (module notes)."""

    def __init__(self, name: str, n_pairs: int = 2000):
        if name not in BUILT_IN:
            raise ValueError(f"unknown task {name!r}; the suite has {list(SUITE)}")
        self.name = name
        self.metric = "normalised MSE of log r̂ (1 = log r̂ ≡ 0), pairs from the prior, x ~ θ1"
        self.simulator = BUILT_IN[name]()
        self.prior = self.simulator.default_prior()
        self.theta0 = priors.sample_prior(self.prior, n_pairs, seed=1)
        self.theta1 = priors.sample_prior(self.prior, n_pairs, seed=2)
        self.x, _ = self.simulator.sample(self.theta1, generator=torch.Generator().manual_seed(3))
        self.exact = (self.simulator.log_likelihood(self.x, self.theta0)
                      - self.simulator.log_likelihood(self.x, self.theta1)).to(torch.float64)
        # the centre of the prior: where SALLY and SALLINO learn their local score
        self.theta_ref = ((self.prior.low + self.prior.high) / 2).tolist()

    def training_data(self, method: str, n: int, seed: int):
        """n simulations (data seed ``seed``); SALLY and SALLINO get half of theirs at the prior's centre."""
        reference = self.theta_ref if method in SCORE_ONLY else None
        return simulate(self.simulator, self.prior, n, reference=reference, seed=seed, progress=False)

    def error_of(self, predicted: torch.Tensor) -> float:
        predicted = torch.as_tensor(predicted, dtype=torch.float64)
        return float(((predicted - self.exact) ** 2).mean() / (self.exact**2).mean())

    def error(self, estimator) -> float:
        return self.error_of(estimator.log_ratio(self.x, self.theta0, self.theta1))

    def trivial_error(self) -> float:
        return 1.0


_tasks: dict = {}


def task(name: str) -> SuiteTask:
    """The suite task ``name``, built once per process."""
    if name not in _tasks:
        _tasks[name] = SuiteTask(name)
    return _tasks[name]


def fit_method(method: str, data, seed: int, settings: dict | None = None, prior=None):
    """Fit ``method`` (a sluice estimator name, or "sbi NRE"/"sbi NLE") on ``data``; returns (estimator, epochs)."""
    from ... import estimators

    if method in PEERS:
        from .peers import fit_sbi

        return fit_sbi(method, data, prior, seed)
    estimator = getattr(estimators, method)(**(settings or {})).fit(data, seed=seed, progress=False)
    history = getattr(estimator, "history_", None)
    return estimator, len(history.train_loss) if history is not None else -1


def run_one(task_name: str, method: str, n: int, seed: int, config: str = "default",
            settings: dict | None = None) -> list[dict]:
    """Simulate n runs (data seed = ``seed``), fit ``method`` with ``settings`` (the defaults where None) and
    score it on the task's test set: one row, or for Auto with its default candidates also one row per candidate
    (each fitted exactly as on its own: the same data, seed and defaults)."""
    import warnings

    warnings.filterwarnings("ignore")  # a benchmark row is a number: the warnings are the tests' business
    torch.set_num_threads(1)
    the_task = task(task_name)
    data = the_task.training_data(method, n, seed)
    row = {"task": task_name, "config": config, "n": n, "seed": seed}
    if method == "Auto" and not settings:
        from ... import estimators
        from ...estimators.auto import DEFAULT_CANDIDATES

        members = [getattr(estimators, name)() for name in DEFAULT_CANDIDATES]
        started = time.perf_counter()
        auto = estimators.Auto(candidates=members).fit(data, seed=seed, progress=False)
        seconds = time.perf_counter() - started
        rows = [{**row, "method": "Auto", "error": round(the_task.error(auto), 6), "fit_seconds": round(seconds, 2),
                 "epochs": -1}]
        for member, record in zip(members, auto.selection_, strict=True):
            rows.append({**row, "method": record["name"], "error": round(the_task.error(member), 6),
                         "fit_seconds": round(record["fit_seconds"], 2), "epochs": record["epochs"]})
        return rows
    started = time.perf_counter()
    estimator, epochs = fit_method(method, data, seed, settings, the_task.prior)
    seconds = time.perf_counter() - started
    return [{**row, "method": method, "error": round(the_task.error(estimator), 6), "fit_seconds": round(seconds, 2),
             "epochs": epochs}]


def run_jobs(jobs: list[tuple], path: str, workers: int = 2, report=print) -> list[dict]:
    """Run ``jobs`` (argument tuples of ``run_one``) not yet in the CSV at ``path``, ``workers`` at a time;
    every row is appended as it finishes, so an interrupted run resumes where it stopped."""
    done = {(r["task"], r["method"], r["n"], r["seed"], r["config"]) for r in read_results(path)}
    todo = [job for job in jobs if (job[0], job[1], job[2], job[3], job[4] if len(job) > 4 else "default")
            not in done]

    def new(row) -> bool:  # a candidate of Auto may have been run on its own already
        key = (row["task"], row["method"], row["n"], row["seed"], row["config"])
        fresh = key not in done
        done.add(key)
        return fresh

    for k, row in append_rows(path, FIELDS, run_one, todo, workers, keep=new):
        report(f"[{k}/{len(todo)}] {row['task']:12s} {row['method']:8s} {row['config']:10s} "
               f"n={row['n']:6d} seed={row['seed']} error={row['error']:.5f} ({row['fit_seconds']:.1f} s)")
    return read_results(path)


def available_peers() -> tuple[str, ...]:
    """sbi's NRE and NLE where sbi is installed (the bench extra), else none."""
    try:
        import sbi  # noqa: F401
    except ImportError:
        return ()
    return PEERS


def choose(methods: str | None, tasks: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The methods and tasks of a comma-separated command line (None: every method, Auto and the installed peers;
    the whole suite), with a ValueError naming any unknown one, or sbi's methods where sbi is missing."""
    chosen = tuple(methods.split(",")) if methods else METHODS + ("Auto",) + available_peers()
    refuse_unknown("methods", chosen, METHODS + ("Auto",) + PEERS)
    if set(chosen) & set(PEERS) and not available_peers():
        raise ValueError("sbi's NRE and NLE need sbi: pip install 'sluice-sbi[bench]'")
    names = tuple(tasks.split(",")) if tasks else SUITE
    refuse_unknown("tasks", names, SUITE)
    return chosen, names


def suite_jobs(tasks, methods, budgets, seeds) -> list[tuple]:
    """Every (task, method, budget, seed), the largest budgets first so a pool of workers drains evenly. Auto comes
    first in a cell and its default candidates (ALICES, SCANDAL) are left out when it runs: its job writes their rows
    too, from the very same fits."""
    from ...estimators.auto import DEFAULT_CANDIDATES

    jobs = [(t, m, n, s) for n in budgets for s in range(seeds) for t in tasks for m in methods
            if not (m == "sbi NLE" and t == "galton")  # a flow on a 1-D discrete x has no density (MNLE's job)
            and not ("Auto" in methods and m in DEFAULT_CANDIDATES)]
    return sorted(jobs, key=lambda job: -job[2])


def summary(rows: list[dict]) -> dict:
    """{(task, method, n): (median, min, max, median fit seconds)} over seeds."""
    groups: dict = {}
    for row in rows:
        groups.setdefault((row["task"], row["method"], row["n"]), []).append(row)
    return {key: (statistics.median(r["error"] for r in group), min(r["error"] for r in group),
                  max(r["error"] for r in group), statistics.median(r["fit_seconds"] for r in group))
            for key, group in groups.items()}


METHOD_ORDER = ("CARL", "NDE", "sbi NRE", "sbi NLE", "ROLR", "ALICE", "CASCAL", "RASCAL", "ALICES", "SCANDAL",
                "SALLY", "SALLINO", "Auto")
BLACK_BOX = ("CARL", "NDE", "sbi NRE", "sbi NLE")


def _cell(stats, key) -> str:
    if key not in stats:
        return "–"
    median, low, high, _ = stats[key]
    return f"{median:.3g} [{low:.2g}–{high:.2g}]"


def task_table(rows: list[dict], task_name: str) -> str:
    """One task: a row per method, a column per budget, median [min–max] over seeds."""
    stats = summary([r for r in rows if r["task"] == task_name])
    budgets = sorted({n for _, _, n in stats})
    methods = [m for m in METHOD_ORDER if any((task_name, m, n) in stats for n in budgets)]
    lines = ["| method | " + " | ".join(f"N = {n:,}" for n in budgets) + " |", "|---" * (len(budgets) + 1) + "|"]
    for method in methods:
        kind = " (black box)" if method in BLACK_BOX else ""
        lines.append(f"| {method}{kind} | " + " | ".join(_cell(stats, (task_name, method, n)) for n in budgets) + " |")
    return "\n".join(lines)


def goals(rows: list[dict], small: int = 1000, large: int = 10_000, chosen=("ALICES", "Auto")) -> str:
    """Per task: the ``chosen`` augmented estimators at ``small`` against the best black box at ``large``."""
    stats = summary(rows)
    tasks = [t for t in SUITE if any(key[0] == t for key in stats)]
    lines = [f"| task | best black box at N = {large:,} | " + " | ".join(f"{m} at N = {small:,}" for m in chosen) +
             f" | best augmented at N = {small:,} |", "|---" * (len(chosen) + 3) + "|"]
    met = dict.fromkeys(chosen, 0)
    for name in tasks:
        black = {m: stats[(name, m, large)][0] for m in BLACK_BOX if (name, m, large) in stats}
        augmented = {m: stats[(name, m, small)][0] for m in METHOD_ORDER
                     if m not in BLACK_BOX and (name, m, small) in stats}
        if not black or not augmented:
            continue
        best_black = min(black, key=black.get)
        best_augmented = min(augmented, key=augmented.get)
        cells = []
        for method in chosen:
            value = augmented.get(method)
            if value is None:
                cells.append("–")
                continue
            ok = value <= black[best_black]
            met[method] += ok
            cells.append(f"{value:.3g} ({value / black[best_black]:.2f}×{', ok' if ok else ''})")
        lines.append(f"| {name} | {best_black} {black[best_black]:.3g} | " + " | ".join(cells) +
                     f" | {best_augmented} {augmented[best_augmented]:.3g} |")
    lines += ["", f"Tasks where the estimator at N = {small:,} is at least as accurate as the best black box at "
              f"N = {large:,}: " + ", ".join(f"{m} {met[m]}/{len(tasks)}" for m in chosen) + "."]
    return "\n".join(lines)


def fit_times(rows: list[dict]) -> str:
    """Median fit seconds per method and budget, over tasks and seeds."""
    groups: dict = {}
    for row in rows:
        groups.setdefault((row["method"], row["n"]), []).append(row["fit_seconds"])
    budgets = sorted({n for _, n in groups})
    lines = ["| method | " + " | ".join(f"fit s, N = {n:,}" for n in budgets) + " |", "|---" * (len(budgets) + 1) + "|"]
    for method in (m for m in METHOD_ORDER if any((m, n) in groups for n in budgets)):
        lines.append(f"| {method} | " + " | ".join(f"{statistics.median(groups[(method, n)]):.1f}"
                                                    if (method, n) in groups else "–" for n in budgets) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = summary(rows)
    tasks = [t for t in SUITE if any(key[0] == t for key in stats)]
    columns = 3
    figure, axes = plt.subplots((len(tasks) + columns - 1) // columns, columns, figsize=(13, 3.6 * len(tasks) / columns
                                                                                         + 0.6), squeeze=False)
    for panel, name in zip(axes.flat, tasks, strict=False):
        for index, method in enumerate(METHOD_ORDER):
            budgets = sorted(n for t, m, n in stats if (t, m) == (name, method))
            if budgets:
                style = "--" if method in BLACK_BOX else "-"
                panel.plot(budgets, [stats[(name, method, n)][0] for n in budgets], style, marker="o",
                           markersize=3, color=f"C{index % 10}", label=method,
                           linewidth=2.2 if method == "Auto" else 1.2)
        panel.set_xscale("log")
        panel.set_yscale("log")
        panel.set_title(name, fontsize=10)
        panel.set_xlabel("simulations N")
        panel.set_ylabel("nMSE of log r̂")
    for panel in list(axes.flat)[len(tasks):]:
        panel.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower right", fontsize=8, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def report_files(rows: list[dict], out_dir: str) -> str:
    """Write suite.md and suite.png next to the CSV; return the Markdown."""
    tasks = [t for t in SUITE if any(r["task"] == t for r in rows)]
    parts = ["# Sample efficiency on the task suite", "",
             "Normalised MSE of log r̂ (1 = log r̂ ≡ 0) over each task's fixed test set; median [min–max] over seeds.",
             "", "## Goal", "", goals(rows), "", "## Fit times", "", fit_times(rows)]
    for name in tasks:
        parts += ["", f"## {name}", "", task_table(rows, name)]
    text = "\n".join(parts) + "\n"
    with open(os.path.join(out_dir, "suite.md"), "w") as file:
        file.write(text)
    plot(rows, os.path.join(out_dir, "suite.png"))
    return text
