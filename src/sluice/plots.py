"""Plots (matplotlib, PNG): q(θ) curves and contours, posterior pair plots, coverage."""

from __future__ import annotations

import torch

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


def plot_posterior(samples: dict, path: str, parameter_names=(), bins: int = 40) -> None:
    """A corner-style pair plot of each named sample set [S, p]."""
    plt = _pyplot()
    p = next(iter(samples.values())).shape[1]
    figure, axes = plt.subplots(p, p, figsize=(2.6 * p + 1, 2.6 * p + 1), squeeze=False)
    for i in range(p):
        for j in range(p):
            axis = axes[i, j]
            if j > i:
                axis.axis("off")
                continue
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


__all__ = ["plot_scan", "plot_posterior", "plot_coverage", "Scan"]
