"""Diagnostics: coverage of confidence regions, the closure test E[r̂] = 1, SBC ranks and their uniformity, and
C2ST."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy import stats

from ..seeding import seeded_global_generator
from ..simulators.priors import sample_prior
from .evaluate import log_ratio_table
from .scans import maximum_likelihood, wilks_threshold

__all__ = ["Coverage", "coverage", "closure_test", "sbc_ranks", "sbc_uniformity", "c2st"]


@dataclass
class Coverage:
    """How often the Wilks region at ``level`` held the true θ in ``n_experiments`` repeated experiments."""

    level: float
    covered: float
    n_experiments: int

    @property
    def standard_error(self) -> float:
        return math.sqrt(self.level * (1 - self.level) / self.n_experiments)


def coverage(estimator, simulator, theta_true, n_events: int, levels=(0.68, 0.95), n_experiments: int = 500,
             bounds=None, grid: torch.Tensor | None = None, seed: int = 0) -> list[Coverage]:
    """Repeat the experiment (``n_events`` at ``theta_true``) and count q(θ_true) ≤ χ²_p(level), where
    q(θ_true) = −2[ℓ(θ_true) − ℓ(θ̂)]. θ̂ is the maximum over a fine ``grid`` [G, p] when one is given (all
    experiments in one batched table), else found by optimisation inside ``bounds`` [(low, high)]."""
    theta_true = torch.as_tensor(theta_true, dtype=torch.float32).reshape(-1)
    p = theta_true.numel()
    bounds = bounds or [(float(t) - 1.0, float(t) + 1.0) for t in theta_true]
    with torch.no_grad():
        x, _ = simulator.sample(theta_true.expand(n_experiments * n_events, -1),
                                generator=torch.Generator().manual_seed(seed))
    if grid is not None:
        grid = torch.as_tensor(grid, dtype=torch.float32)
        grid = grid[:, None] if grid.ndim == 1 else grid
        group = max(1, 20_000_000 // (grid.shape[0] * n_events))  # experiments per table, bounding memory
        maxima = []
        for start in range(0, n_experiments, group):
            block = x[start * n_events:min(start + group, n_experiments) * n_events]
            table = log_ratio_table(estimator, block, grid, theta_true).reshape(grid.shape[0], -1, n_events)
            maxima.append(table.sum(dim=2).max(dim=0).values)
        q = (2.0 * torch.cat(maxima)).clamp_min(0.0)
        return [Coverage(level, float((q <= wilks_threshold(level, p)).float().mean()), n_experiments)
                for level in levels]
    q = torch.empty(n_experiments)
    for k in range(n_experiments):
        events = x[k * n_events:(k + 1) * n_events]
        _, best = maximum_likelihood(estimator, events, theta_true, bounds, theta_true)
        q[k] = max(0.0, 2.0 * best)  # ℓ is measured relative to θ_true, so ℓ(θ_true) = 0
    return [Coverage(level, float((q <= wilks_threshold(level, p)).float().mean()), n_experiments) for level in levels]


def closure_test(estimator, simulator, theta0, theta1, n: int = 50_000, seed: int = 0) -> tuple[float, float]:
    """E_{x~θ1}[r̂(x|θ0,θ1)], which is 1 for the true ratio: (mean, its standard error)."""
    theta0 = torch.as_tensor(theta0, dtype=torch.float32).reshape(-1)
    theta1 = torch.as_tensor(theta1, dtype=torch.float32).reshape(-1)
    with torch.no_grad():
        x, _ = simulator.sample(theta1.expand(n, -1), generator=torch.Generator().manual_seed(seed))
    ratio = log_ratio_table(estimator, x, theta0[None], theta1)[0].double().exp()
    return float(ratio.mean()), float(ratio.std() / math.sqrt(n))


def sbc_ranks(posterior_sampler, simulator, prior, n_events: int, n_simulations: int = 100,
              n_posterior_samples: int = 100, seed: int = 0) -> torch.Tensor:
    """Simulation-based calibration: for θ* ~ prior and x ~ θ*, the rank of θ* among posterior samples,
    [n_simulations, p]; uniform on 0…n_posterior_samples for a calibrated posterior.

    ``posterior_sampler(x, n, seed)`` returns [n, p] samples of p(θ | x).
    """
    truths = sample_prior(prior, n_simulations, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    ranks = torch.empty(n_simulations, truths.shape[1], dtype=torch.long)
    for k in range(n_simulations):
        with torch.no_grad():
            x, _ = simulator.sample(truths[k].expand(n_events, -1), generator=generator)
        samples = posterior_sampler(x, n_posterior_samples, seed + k)
        ranks[k] = (samples < truths[k]).sum(dim=0)
    return ranks


def sbc_uniformity(ranks: torch.Tensor, n_posterior_samples: int, bins: int = 5) -> torch.Tensor:
    """p-values [p] of Pearson's χ² test that each parameter's SBC ranks [n, p] are uniform on 0…L
    (L = ``n_posterior_samples``).

    The L + 1 rank values are pooled into ``bins`` groups of (L + 1)/bins consecutive ranks, each with expected
    count E = n/bins under uniformity; χ² = Σ_b (O_b − E)²/E has bins − 1 degrees of freedom. A posterior too
    narrow piles ranks into the outer groups, one too wide into the middle ones, one biased into one side: all
    give small p-values, where the mean rank alone stays at L/2 for the first two. The χ² approximation wants
    E ≥ 5.

    >>> flat = torch.arange(20).repeat(10)[:, None]  # every rank of 0…19 ten times
    >>> float(sbc_uniformity(flat, 19)[0])
    1.0
    >>> u_shaped = torch.tensor([0, 19]).repeat(100)[:, None]  # truths always outside the samples: too narrow
    >>> float(sbc_uniformity(u_shaped, 19)[0]) < 1e-10
    True
    """
    if (n_posterior_samples + 1) % bins:
        raise ValueError(f"{bins} bins do not split the {n_posterior_samples + 1} rank values 0…{n_posterior_samples} "
                         "evenly: choose bins dividing n_posterior_samples + 1")
    ranks = torch.as_tensor(ranks)
    ranks = ranks.reshape(ranks.shape[0], -1)
    if ranks.min() < 0 or ranks.max() > n_posterior_samples:
        raise ValueError(f"ranks must lie in 0…{n_posterior_samples}")
    group = (ranks // ((n_posterior_samples + 1) // bins)).double()  # [n, p] group index 0…bins−1
    observed = torch.stack([(group == b).sum(dim=0) for b in range(bins)]).double()  # [bins, p]
    expected = ranks.shape[0] / bins
    statistic = ((observed - expected) ** 2 / expected).sum(dim=0)
    return torch.as_tensor(stats.chi2.sf(statistic.numpy(), bins - 1))


def c2st(samples_a: torch.Tensor, samples_b: torch.Tensor, folds: int = 5, epochs: int = 150, seed: int = 0) -> float:
    """Classifier two-sample test: the cross-validated accuracy of a small network telling the sets apart
    (0.5 when they come from the same distribution, 1 when they are disjoint)."""
    features = torch.cat([samples_a, samples_b]).to(torch.float32)
    features = (features - features.mean(dim=0)) / features.std(dim=0).clamp_min(1e-12)
    labels = torch.cat([torch.zeros(len(samples_a)), torch.ones(len(samples_b))])
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    correct = 0
    with seeded_global_generator(seed):
        for fold in range(folds):
            held = order[fold::folds]
            train = order[torch.isin(order, held, invert=True)]
            width = 10 * features.shape[1]
            classifier = torch.nn.Sequential(torch.nn.Linear(features.shape[1], width), torch.nn.ReLU(),
                                             torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, 1))
            optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-2)
            for _ in range(epochs):
                loss = torch.nn.functional.binary_cross_entropy_with_logits(classifier(features[train])[:, 0],
                                                                            labels[train])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                correct += int(((classifier(features[held])[:, 0] > 0).float() == labels[held]).sum())
    return correct / len(labels)
