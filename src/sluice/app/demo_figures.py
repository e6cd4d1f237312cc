"""The figures of the `sluice demo` report (matplotlib, PNG): sample efficiency, log r̂(x), q(θ), intervals,
Fisher information and timings, each estimator against the exact likelihood."""

from __future__ import annotations

import math
import os
import statistics

from ..inference import wilks_threshold
from .benchmarks import sample_efficiency
from .benchmarks.tasks import GaltonTask

__all__ = ["FIGURES", "write_figures", "method_colors"]

# (key, file name, title in the report), in the order the report shows them
FIGURES = (
    ("sample_efficiency", "sample_efficiency.png", "Sample efficiency"),
    ("log_ratio", "log_ratio.png", "Learned against exact log r(x)"),
    ("scans", "scans.png", "q(θ) on the observed events"),
    ("intervals", "intervals.png", "Maximum-likelihood estimates and Wilks intervals"),
    ("fisher", "fisher.png", "Fisher information"),
    ("timings", "timings.png", "Timings"),
)
EXACT = dict(color="black", lw=2.2, label="exact")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def method_colors(methods) -> dict:
    """The colours the sample-efficiency plot gives each method (its order), so every figure agrees."""
    present = [m for m in sample_efficiency.METHODS if m in methods]
    return {m: f"C{k}" for k, m in enumerate(present)}


def _budget_style(result, n: int) -> dict:
    """Fainter and dashed for smaller budgets, solid for the largest."""
    budgets = sorted(result.settings.budgets)
    rank = budgets.index(n)
    dashes = ["-", "--", ":", "-."]
    return dict(ls=dashes[(len(budgets) - 1 - rank) % 4], alpha=0.45 + 0.55 * (rank + 1) / len(budgets))


def _panels(plt, count: int, width: float = 4.0, height: float = 3.2):
    columns = min(3, count)
    rows = -(-count // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False)
    for axis in axes.flat[count:]:
        axis.axis("off")
    return figure, list(axes.flat)


def _save(plt, figure, path: str) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_sample_efficiency(result, path: str) -> None:
    rows = [{"method": f.method, "n": f.n, "seed": f.seed, "error": f.error, "fit_seconds": f.fit_seconds}
            for f in result.fits]
    sample_efficiency.plot(rows, path, f"Galton board: {GaltonTask.metric}")


def plot_log_ratio(result, path: str) -> None:
    plt = _pyplot()
    task, colors = GaltonTask(), method_colors(result.settings.methods)
    x = task.x[:, 0].numpy()
    figure, axes = _panels(plt, len(result.settings.methods) + 1)
    for axis, method in zip(axes, result.settings.methods, strict=False):
        axis.plot(x, result.exact_log_ratio.numpy(), **EXACT)
        for fit in (f for f in result.inference_fits() if f.method == method):
            axis.plot(x, fit.log_ratio.numpy(), marker="o", ms=3, color=colors[method], label=f"N = {fit.n:,}",
                      **_budget_style(result, fit.n))
        axis.set_title(method + (" (black box)" if method in sample_efficiency.BLACK_BOX else ""), fontsize=10)
        axis.set_xlabel("x (final nail)")
        axis.set_ylabel("log r(x | θ0=−0.8, θ1=−0.6)")
        axis.legend(fontsize=7)
    weights = axes[len(result.settings.methods)]
    weights.axis("on")
    weights.bar(x, result.weight.numpy(), color="grey")
    weights.set_title("p(x | θ1): the weight of each x in the MSE", fontsize=10)
    weights.set_xlabel("x (final nail)")
    _save(plt, figure, path)


def plot_scans(result, path: str) -> None:
    plt = _pyplot()
    colors, exact = method_colors(result.settings.methods), result.exact.scan
    theta = exact.grid[:, 0].numpy()
    figure, axes = _panels(plt, len(result.settings.methods) + 1)
    top = 3 * wilks_threshold(max(result.exact.intervals), 1)

    def decorate(axis, title: str) -> None:
        for level in result.exact.intervals:
            axis.axhline(wilks_threshold(level, 1), ls=":", color="grey", lw=0.8)
        axis.axvline(result.settings.theta_true, color="red", lw=0.8, label="true θ")
        axis.set_ylim(0, top)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("θ")
        axis.set_ylabel("q(θ) = −2 Δ log L")
        axis.legend(fontsize=7)

    largest = max(result.settings.budgets)
    overview = axes[len(result.settings.methods)]
    overview.axis("on")
    overview.plot(theta, exact.q.numpy(), **EXACT)
    for axis, method in zip(axes, result.settings.methods, strict=False):
        axis.plot(theta, exact.q.numpy(), **EXACT)
        for fit in (f for f in result.inference_fits() if f.method == method):
            axis.plot(theta, fit.inference.scan.q.numpy(), color=colors[method], label=f"N = {fit.n:,}",
                      **_budget_style(result, fit.n))
            if fit.n == largest:
                overview.plot(theta, fit.inference.scan.q.numpy(), color=colors[method], label=method)
        decorate(axis, method)
    decorate(overview, f"all methods at N = {largest:,}")
    _save(plt, figure, path)


def plot_intervals(result, path: str) -> None:
    plt = _pyplot()
    colors = method_colors(result.settings.methods)
    rows = [("exact", "black", result.exact)] + [(f"{f.method}  N = {f.n:,}", colors[f.method], f.inference)
                                                  for f in result.inference_fits()]
    figure, axis = plt.subplots(figsize=(8, 0.38 * len(rows) + 1.4))
    low68, high68 = result.exact.intervals[0.68]
    axis.axvspan(low68, high68, color="grey", alpha=0.15, label="exact 68% interval")
    axis.axvline(result.settings.theta_true, color="red", lw=0.8, label="true θ")
    edges = (float(result.exact.scan.grid.min()), float(result.exact.scan.grid.max()))

    def bounded(interval):  # an interval open at the edge of the scan is drawn to the edge
        return [edge if math.isnan(v) else v for v, edge in zip(interval, edges, strict=True)]

    for k, (_, color, inference) in enumerate(rows):
        y = len(rows) - 1 - k
        (low95, high95), (low, high) = bounded(inference.intervals[0.95]), bounded(inference.intervals[0.68])
        axis.plot([low95, high95], [y, y], color=color, lw=1.2)
        axis.plot([low, high], [y, y], color=color, lw=4, solid_capstyle="butt")
        axis.plot([inference.mle], [y], "o", color="white", mec=color, ms=6)
    axis.set_yticks(range(len(rows)), [label for label, _, _ in reversed(rows)], fontsize=8)
    axis.set_xlabel("θ   (thick: 68%, thin: 95% Wilks interval; circle: MLE)")
    axis.set_xlim(*edges)
    axis.legend(fontsize=7, loc="lower right")
    _save(plt, figure, path)


def plot_fisher(result, path: str) -> None:
    plt = _pyplot()
    colors = method_colors(result.settings.methods)
    thetas = result.fisher_thetas[:, 0].numpy()
    budgets = sorted(result.settings.budgets)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, n in zip(axes, (budgets[0], budgets[-1]), strict=True):
        axis.plot(thetas, result.exact.fisher_curve.numpy(), marker="s", ms=3, **EXACT)
        for fit in (f for f in result.inference_fits() if f.n == n):
            axis.plot(thetas, fit.inference.fisher_curve.numpy(), marker="o", ms=3, color=colors[fit.method],
                      label=fit.method)
        axis.axvline(result.settings.theta_true, color="red", lw=0.8)
        axis.set_title(f"trained on N = {n:,}", fontsize=10)
        axis.set_xlabel("θ")
        axis.set_ylabel("I(θ) per event = E[t(x|θ)²]")
        axis.legend(fontsize=7)
    _save(plt, figure, path)


def plot_timings(result, path: str) -> None:
    plt = _pyplot()
    colors = method_colors(result.settings.methods)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for method in result.settings.methods:
        budgets = sorted(result.settings.budgets)
        seconds = [statistics.median(f.fit_seconds for f in result.fits if f.method == method and f.n == n)
                   for n in budgets]
        left.plot(budgets, seconds, marker="o", color=colors[method], label=method,
                  ls="--" if method in sample_efficiency.BLACK_BOX else "-")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("training simulations N")
    left.set_ylabel("fit seconds (median over seeds, one thread)")
    left.legend(fontsize=7)
    largest = max(result.settings.budgets)
    bars = [(f"simulation ({result.settings.seeds * largest:,} runs)", result.timings["simulation"], "grey"),
            ("exact scan", result.exact.seconds, "black")]
    bars += [(f"{f.method} scan (N = {largest:,})", f.inference.seconds, colors[f.method])
             for f in result.inference_fits() if f.n == largest]
    right.barh(range(len(bars)), [b[1] for b in bars], color=[b[2] for b in bars])
    right.set_yticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    right.invert_yaxis()
    right.set_xlabel("seconds")
    right.set_title(f"simulation and inference ({len(result.observed)} events, "
                    f"{result.settings.grid_points} grid points)", fontsize=10)
    _save(plt, figure, path)


PLOTTERS = {"sample_efficiency": plot_sample_efficiency, "log_ratio": plot_log_ratio, "scans": plot_scans,
            "intervals": plot_intervals, "fisher": plot_fisher, "timings": plot_timings}


def write_figures(result, out_dir: str) -> dict:
    """Draw every figure into ``out_dir``; returns {key: path} in report order."""
    paths = {}
    for key, name, _ in FIGURES:
        paths[key] = os.path.join(out_dir, name)
        PLOTTERS[key](result, paths[key])
    return paths
