"""Plots (matplotlib): q(θ) curves and contours, posterior pair plots, coverage (written to PNG), and the posterior
diagnostics, SBC rank histograms, the TARP coverage curve, posterior predictive checks and corner plots (returned as
a ``matplotlib.figure.Figure``, written only when given a ``path``)."""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from .inference.scans import Scan, wilks_threshold


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_scan(scans: dict, path: str, theta_true=None, levels=(0.68, 0.95), title: str = "") -> None:
    """q(θ) of each named scan (e.g. {"exact": …, "ALICES": …}): curves in 1-D, Wilks contours in 2-D."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 4.5))
    first = next(iter(scans.values()))
    if first.grid.shape[1] == 1:
        for name, one in scans.items():
            order = torch.argsort(one.grid[:, 0])
            axes.plot(one.grid[order, 0], one.q[order], label=name, lw=2 if name == "exact" else 1.3,
                      color="black" if name == "exact" else None)
        for level in levels:
            axes.axhline(wilks_threshold(level, 1), ls=":", color="grey", lw=0.8)
        axes.set_ylim(0, 3 * wilks_threshold(max(levels), 1))
        axes.set_ylabel("q(θ) = −2 Δ log L")
        axes.set_xlabel(first.parameter_names[0] if first.parameter_names else "θ")
        if theta_true is not None:
            axes.axvline(float(torch.as_tensor(theta_true).reshape(-1)[0]), color="red", lw=0.8, label="true θ")
    else:
        axes_values = [torch.unique(first.grid[:, j]) for j in range(2)]
        shape = (len(axes_values[0]), len(axes_values[1]))
        for k, (name, one) in enumerate(scans.items()):
            axes.contour(axes_values[0], axes_values[1], one.q.reshape(shape).T,
                                   levels=[wilks_threshold(level, 2) for level in levels],
                                   colors="black" if name == "exact" else f"C{k}", linestyles=["-", "--"])
            axes.plot([], [], color="black" if name == "exact" else f"C{k}", label=name)
        if theta_true is not None:
            truth = torch.as_tensor(theta_true).reshape(-1)
            axes.plot(float(truth[0]), float(truth[1]), "r*", ms=10, label="true θ")
        names = first.parameter_names or ("θ₀", "θ₁")
        axes.set_xlabel(names[0])
        axes.set_ylabel(names[1])
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _lower_triangle(axes):
    """(i, j, axis) for the panels on and below the diagonal of a p × p grid of ``axes``, the others switched off:
    the layout of a corner plot."""
    p = axes.shape[0]
    for i in range(p):
        for j in range(p):
            if j > i:
                axes[i, j].axis("off")
            else:
                yield i, j, axes[i, j]


def plot_posterior(samples: dict, path: str, parameter_names=(), bins: int = 40) -> None:
    """A corner-style pair plot of each named sample set [S, p]."""
    plt = _pyplot()
    p = next(iter(samples.values())).shape[1]
    figure, axes = plt.subplots(p, p, figsize=(2.6 * p + 1, 2.6 * p + 1), squeeze=False)
    for i, j, axis in _lower_triangle(axes):
        for k, (name, values) in enumerate(samples.items()):
            if i == j:
                axis.hist(values[:, i].numpy(), bins=bins, histtype="step", density=True, color=f"C{k}",
                          label=name)
            else:
                axis.scatter(values[:2000, j].numpy(), values[:2000, i].numpy(), s=1, alpha=0.3, color=f"C{k}")
        if i == p - 1:
            axis.set_xlabel(parameter_names[j] if parameter_names else f"θ_{j}")
    axes[0, 0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_coverage(results: dict, path: str) -> None:
    """Observed against nominal coverage, with ±2 standard errors, for each named list of Coverage."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    axes.plot([0, 1], [0, 1], color="grey", lw=0.8)
    for name, coverages in results.items():
        nominal = [c.level for c in coverages]
        axes.errorbar(nominal, [c.covered for c in coverages], yerr=[2 * c.standard_error for c in coverages],
                      marker="o", capsize=3, label=name, ls="none")
    axes.set_xlabel("nominal coverage")
    axes.set_ylabel("observed coverage")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _figure(width: float, height: float):
    """A Figure outside pyplot's registry: nothing global changes (no backend switch, no figure left open), and
    a notebook still shows it when it is returned."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _finish(figure, path: str | None):
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=120)
    return figure


def _names(names, p: int) -> list[str]:
    return list(names) if names else [f"θ_{j}" for j in range(p)]


def plot_sbc_ranks(ranks, n_posterior_samples: int, bins: int = 5, names=None, band: float = 0.99,
                   path: str | None = None):
    """SBC rank histograms (Talts et al. 2018), one panel per parameter, of ``ranks`` [n, p] on 0…L
    (L = ``n_posterior_samples``), pooled into ``bins`` groups as ``sbc_uniformity`` pools them, with the
    ``band`` interval of a bin's count under uniformity (Binomial(n, 1/bins)) in grey and each panel's χ²
    p-value in its title. A U: posterior too narrow (or biased both ways); a hump: too wide; a slope: biased."""
    from .inference.diagnostics import sbc_uniformity

    ranks = torch.as_tensor(ranks).reshape(len(ranks), -1)
    n, p = ranks.shape
    p_values = sbc_uniformity(ranks, n_posterior_samples, bins)
    low, high = stats.binom.interval(band, n, 1 / bins)
    figure = _figure(3.2 * p, 2.8)
    axes = figure.subplots(1, p, squeeze=False)[0]
    edges = np.linspace(0, n_posterior_samples + 1, bins + 1)
    for j, (axis, name) in enumerate(zip(axes, _names(names, p), strict=True)):
        axis.axhspan(low, high, color="grey", alpha=0.25, lw=0, label=f"{band:.0%} band, uniform")
        axis.axhline(n / bins, color="grey", lw=0.8)
        axis.hist(ranks[:, j].numpy(), bins=edges, histtype="stepfilled", alpha=0.7, color="C0")
        axis.set_xlabel(f"rank of {name} (0…{n_posterior_samples})")
        axis.set_title(f"χ² p = {float(p_values[j]):.2g}", fontsize=9)
    axes[0].set_ylabel("simulations")
    axes[0].legend(fontsize=7)
    return _finish(figure, path)


def plot_tarp(results, path: str | None = None):
    """TARP expected coverage against credibility (a ``TARP`` or a dict name → ``TARP``), with the diagonal of a
    calibrated posterior and, in grey, its 99% Kolmogorov–Smirnov band for the number of simulations."""
    results = results if isinstance(results, dict) else {"posterior": results}
    figure = _figure(4.5, 4.5)
    axis = figure.subplots()
    n = len(next(iter(results.values())).fractions)
    half_width = stats.kstwo.ppf(0.99, n)
    grid = np.linspace(0, 1, 101)
    axis.fill_between(grid, grid - half_width, grid + half_width, color="grey", alpha=0.25, lw=0,
                      label=f"99% band, {n} simulations")
    axis.plot([0, 1], [0, 1], color="grey", lw=0.8)
    for name, result in results.items():
        axis.plot(result.credibility.numpy(), result.coverage.numpy(),
                  label=f"{name} (max gap {result.max_deviation:.3f}, p = {result.p_value:.2g})")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_xlabel("credibility level 1 − α")
    axis.set_ylabel("expected coverage")
    axis.legend(fontsize=7)
    return _finish(figure, path)


def plot_predictive_check(check, names=None, bins: int = 30, path: str | None = None):
    """A posterior predictive check (``PredictiveCheck``): per component of the statistic, the histogram of its
    replicates with the observed value as a red line and its percentile; the summary p-value in the title."""
    replicated = check.replicated
    k = replicated.shape[1]
    figure = _figure(3.0 * k, 2.8)
    axes = figure.subplots(1, k, squeeze=False)[0]
    for j, (axis, name) in enumerate(zip(axes, list(names) if names else [f"T_{j}" for j in range(k)],
                                         strict=True)):
        axis.hist(replicated[:, j].numpy(), bins=bins, color="C0", alpha=0.7)
        axis.axvline(float(check.observed[j]), color="red", lw=1.5)
        axis.set_xlabel(name)
        axis.set_title(f"percentile {float(check.percentiles[j]):.2f}", fontsize=9)
    figure.suptitle(f"posterior predictive check: p = {check.p_value:.2g}", fontsize=10)
    return _finish(figure, path)


def corner_plot(samples, reference=None, truth=None, names=None, bins: int = 30, path: str | None = None):
    """A corner plot of ``samples`` [S, p] (blue), with ``reference`` samples [R, p] (orange) and the ``truth``
    [p] (red lines) where given: 1-D histograms on the diagonal, 2-D histograms below it. Drawn by the
    ``corner`` package where it is installed, else by matplotlib alone."""
    samples = torch.as_tensor(samples, dtype=torch.float64).reshape(len(samples), -1).numpy()
    p = samples.shape[1]
    reference = None if reference is None else torch.as_tensor(reference, dtype=torch.float64).reshape(-1, p).numpy()
    truth = None if truth is None else torch.as_tensor(truth, dtype=torch.float64).reshape(p).numpy()
    labels = _names(names, p)
    figure = _figure(2.4 * p + 0.6, 2.4 * p + 0.6)
    sets = [(samples, "C0")] + ([(reference, "C1")] if reference is not None else [])
    # one range per parameter over every set drawn, so that the sets share their axes
    ranges = [(min(s[:, j].min() for s, _ in sets), max(s[:, j].max() for s, _ in sets)) for j in range(p)]
    if truth is not None:  # a truth outside every set must still show
        ranges = [(min(low, truth[j]), max(high, truth[j])) for j, (low, high) in enumerate(ranges)]
    ranges = [(low - 0.5, high + 0.5) if high == low else (low, high) for low, high in ranges]  # a constant column
    try:
        import corner
    except ImportError:
        corner = None
    if corner is not None:
        for values, color in sets:
            corner.corner(values, fig=figure, bins=bins, range=ranges, color=color, labels=labels, truths=truth,
                          truth_color="red", hist_kwargs={"density": True}, plot_datapoints=False)
        if path is not None:  # corner sets its own spacing, which tight_layout would undo
            figure.savefig(path, dpi=120)
        return figure
    axes = figure.subplots(p, p, squeeze=False)
    for i, j, axis in _lower_triangle(axes):
        for values, color in sets:
            if i == j:
                axis.hist(values[:, i], bins=bins, range=ranges[i], density=True, histtype="step", color=color)
            elif color == "C0":
                axis.hist2d(values[:, j], values[:, i], bins=bins, range=[ranges[j], ranges[i]], cmin=1,
                            cmap="Blues")
            else:  # the reference as contours over the samples' shading, so that both stay visible
                counts, x_edges, y_edges = np.histogram2d(values[:, j], values[:, i], bins=bins,
                                                          range=[ranges[j], ranges[i]])
                axis.contour((x_edges[1:] + x_edges[:-1]) / 2, (y_edges[1:] + y_edges[:-1]) / 2, counts.T,
                             levels=4, colors=color, linewidths=0.8)
        if truth is not None:
            axis.axvline(truth[j], color="red", lw=0.8)
            if i != j:
                axis.axhline(truth[i], color="red", lw=0.8)
                axis.plot(truth[j], truth[i], "s", color="red", ms=3)
        if i == p - 1:
            axis.set_xlabel(labels[j])
        if j == 0 and i > 0:
            axis.set_ylabel(labels[i])
    return _finish(figure, path)


__all__ = ["plot_scan", "plot_posterior", "plot_coverage", "plot_sbc_ranks", "plot_tarp", "plot_predictive_check",
           "corner_plot", "Scan"]
