"""Diagnostics: coverage of confidence regions, the closure test E[r̂] = 1, SBC ranks and their uniformity, TARP
expected coverage, posterior predictive checks and C2ST. Numbers only; their figures are in ``sluice.plots``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy import stats

from ..seeding import seeded_global_generator
from ..simulators.priors import sample_prior
from .evaluate import log_ratio_table
from .scans import maximum_likelihood, wilks_threshold

__all__ = ["Coverage", "coverage", "closure_test", "sbc_ranks", "sbc_uniformity", "c2st", "standardize_by_reference",
           "TARP", "tarp", "tarp_coverage", "PredictiveCheck", "posterior_predictive_check", "mean_of_events"]


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


def _calibration_draws(posterior_sampler, simulator, prior, n_events: int, n_simulations: int,
                       n_posterior_samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The simulations behind SBC and TARP: truths θ*_k ~ prior [K, p] and, for x_k ~ θ*_k (``n_events`` events),
    posterior draws θ_kj ~ q(θ | x_k) [K, S, p]."""
    truths = sample_prior(prior, n_simulations, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    draws = []
    for k in range(n_simulations):
        with torch.no_grad():
            x, _ = simulator.sample(truths[k].expand(n_events, -1), generator=generator)
        draws.append(torch.as_tensor(posterior_sampler(x, n_posterior_samples, seed + k)).reshape(
            n_posterior_samples, truths.shape[1]))
    return truths, torch.stack(draws)


def sbc_ranks(posterior_sampler, simulator, prior, n_events: int, n_simulations: int = 100,
              n_posterior_samples: int = 100, seed: int = 0) -> torch.Tensor:
    """Simulation-based calibration (Talts et al. 2018): for θ* ~ prior and x ~ θ*, the rank of θ* among posterior
    samples, [n_simulations, p]; uniform on 0…n_posterior_samples for a calibrated posterior (test it with
    ``sbc_uniformity``, draw it with ``sluice.plots.plot_sbc_ranks``).

    ``posterior_sampler(x, n, seed)`` returns [n, p] samples of p(θ | x).
    """
    truths, draws = _calibration_draws(posterior_sampler, simulator, prior, n_events, n_simulations,
                                       n_posterior_samples, seed)
    return (draws < truths[:, None, :]).sum(dim=1)


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


C2ST_METHODS = ("sklearn", "torch")


def c2st(reference: torch.Tensor, samples: torch.Tensor, folds: int = 5, epochs: int = 150, seed: int = 0,
         method: str = "sklearn") -> float:
    """Classifier two-sample test: the cross-validated accuracy of a classifier telling ``samples`` [m, d] from
    ``reference`` [n, d] (0.5 when they come from one distribution, 1 when they are disjoint).

    ``method="sklearn"`` (the default) is the protocol of the sbibm benchmark (Lueckmann et al. 2021), so that
    numbers compare with published ones: both sets are z-scored with the mean and standard deviation of the
    REFERENCE set (the first argument; the order matters, as in sbibm, which passes the reference posterior
    first), then scikit-learn's ``MLPClassifier`` (ReLU, two hidden layers of 10·d units, Adam, ``max_iter``
    10 000, otherwise sklearn's defaults, ``random_state=seed``) is scored by 5-fold stratified, shuffled
    cross-validation (sbibm shuffles plain K folds; stratifying keeps each held-out fold as balanced as the
    sets, which removes the fold-to-fold label imbalance from the noise); the result is the mean accuracy over
    the folds. Each point is classified once, by a classifier that never saw it, so for one distribution the
    accuracy is 1/2 within about √(1/4(n + m)). Needs the optional ``sklearn`` extra (scikit-learn).

    ``method="torch"`` is sluice's earlier classifier, kept unchanged so that older numbers can be reproduced:
    the pooled sets z-scored together, a ReLU network of the same widths trained full-batch by Adam for
    ``epochs`` steps per fold (``epochs`` is ignored by ``"sklearn"``).
    """
    if method not in C2ST_METHODS:
        raise ValueError(f"c2st method {method!r} is not one of {C2ST_METHODS}")
    reference = torch.as_tensor(reference).reshape(len(reference), -1).to(torch.float32)
    samples = torch.as_tensor(samples).reshape(len(samples), -1).to(torch.float32)
    if method == "torch":
        return _c2st_torch(reference, samples, folds, epochs, seed)
    try:
        from sklearn.model_selection import StratifiedKFold, cross_val_score
        from sklearn.neural_network import MLPClassifier
        from threadpoolctl import threadpool_limits  # a dependency of scikit-learn
    except ImportError as error:
        raise ImportError("c2st(method='sklearn'), the sbibm protocol, needs scikit-learn: "
                          "pip install 'sluice-sbi[sklearn]' (or pass method='torch')") from error
    features = torch.cat(standardize_by_reference(reference, samples)).numpy()
    labels = torch.cat([torch.zeros(len(reference)), torch.ones(len(samples))]).numpy()
    width = 10 * features.shape[1]
    classifier = MLPClassifier(activation="relu", hidden_layer_sizes=(width, width), max_iter=10_000, solver="adam",
                               random_state=seed)
    splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    # one BLAS thread: the network is small, and on a busy machine a multithreaded BLAS spends its time waiting for
    # cores (measured: 1 000 against 1 000 points in 27 s on one thread, 257 s on two threads under load)
    with threadpool_limits(limits=1):
        return float(cross_val_score(classifier, features, labels, cv=splits, scoring="accuracy").mean())


def standardize_by_reference(reference: torch.Tensor, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(reference − μ)/σ and (samples − μ)/σ with μ, σ [d] the mean and (n − 1)-normalised standard deviation of
    ``reference`` [n, d] alone; a constant column (σ = 0) is only centred."""
    mean, scale = reference.mean(dim=0), reference.std(dim=0)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (reference - mean) / scale, (samples - mean) / scale


def _c2st_torch(samples_a: torch.Tensor, samples_b: torch.Tensor, folds: int, epochs: int, seed: int) -> float:
    """The accuracy of a network trained full-batch on the pooled, pooled-z-scored sets, over ``folds`` folds."""
    features = torch.cat([samples_a, samples_b])
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


@dataclass
class TARP:
    """Expected coverage by random reference points (TARP, Lemos et al. 2023), over K simulations (θ*_k, x_k).

    For each k a reference point θ_r,k is drawn, and f_k is the share of the S posterior draws θ_kj ~ q(θ | x_k)
    closer to θ_r,k than θ*_k is: f_k = #{j : ‖θ_kj − θ_r,k‖ < ‖θ*_k − θ_r,k‖}/S. The ball about θ_r,k holding a
    share 1 − α of q's mass holds θ*_k exactly when f_k < 1 − α, so the expected coverage probability
    ECP(1 − α) = mean_k [f_k < 1 − α] equals 1 − α for every α when q is the true posterior (and, Lemos et al.
    show, with references drawn at random only then); with S draws f_k is a multiple of 1/S, which moves the
    curve by at most 1/(S + 1) (ECP(1) = 1 − 1/(S + 1) on average). Distances are taken after each parameter is
    divided by the spread of the truths, so that no parameter dominates them.

    ``credibility`` [G] (1 − α on a grid from 0 to 1) and ``coverage`` [G] (ECP) make the curve;
    ``fractions`` [K] are the f_k; ``max_deviation`` = max |ECP − (1 − α)|, the curve's largest distance from the
    diagonal; ``area`` = ∫ (ECP − (1 − α)) d(1 − α), its signed area (0 on the diagonal; a posterior too wide or
    too narrow about a reference may still give ≈ 0, so read ``max_deviation`` and ``p_value``);
    ``p_value`` is the Kolmogorov–Smirnov test of calibration: with S draws the count S·f_k is uniform on 0…S
    for the true posterior, (S·f_k + U_k)/(S + 1) with U_k ~ U(0, 1) is exactly uniform on (0, 1), and the KS
    distance of those K values is ``max_deviation`` up to about 1/(S + 1) and the grid step.
    """

    credibility: torch.Tensor
    coverage: torch.Tensor
    fractions: torch.Tensor
    max_deviation: float
    area: float
    p_value: float


def tarp_coverage(draws: torch.Tensor, truths: torch.Tensor, references: torch.Tensor | None = None,
                  points: int = 101, seed: int = 0) -> TARP:
    """TARP expected coverage (see ``TARP``) of posterior ``draws`` [K, S, p] for ``truths`` [K, p].

    ``references`` [K, p] are the reference points; by default uniform in the box spanned by the truths, drawn
    from ``seed`` (which also draws the U_k of the p-value).

    >>> truths = torch.zeros(200, 1)
    >>> result = tarp_coverage(torch.randn(200, 99, 1) * 1e-3 + 5.0, truths)  # every draw far from the truth
    >>> result.max_deviation > 0.9, result.p_value < 1e-10
    (True, True)
    """
    draws = torch.as_tensor(draws, dtype=torch.float64)
    truths = torch.as_tensor(truths, dtype=torch.float64).reshape(draws.shape[0], draws.shape[2])
    generator = torch.Generator().manual_seed(seed)
    low, high = truths.min(dim=0).values, truths.max(dim=0).values
    scale = torch.where(high > low, high - low, torch.ones_like(high))
    if references is None:
        references = low + (high - low) * torch.rand(truths.shape, generator=generator, dtype=torch.float64)
    references = torch.as_tensor(references, dtype=torch.float64).reshape(truths.shape)
    draw_distance = ((draws - references[:, None]) / scale).norm(dim=2)  # [K, S]
    truth_distance = ((truths - references) / scale).norm(dim=1)  # [K]
    closer = (draw_distance < truth_distance[:, None]).sum(dim=1)  # [K], uniform on 0…S when calibrated
    n_draws = draws.shape[1]
    fractions = closer.double() / n_draws
    credibility = torch.linspace(0.0, 1.0, points, dtype=torch.float64)
    ecp = (fractions[None, :] < credibility[:, None]).double().mean(dim=1)
    gap = ecp - credibility
    randomized = (closer.double() + torch.rand(closer.shape, generator=generator, dtype=torch.float64)) / (n_draws + 1)
    return TARP(credibility.float(), ecp.float(), fractions.float(), float(gap.abs().max()),
                float(torch.trapezoid(gap, credibility)), float(stats.kstest(randomized.numpy(), "uniform").pvalue))


def tarp(posterior_sampler, simulator, prior, n_events: int, n_simulations: int = 100,
         n_posterior_samples: int = 100, seed: int = 0, references: torch.Tensor | None = None) -> TARP:
    """TARP (``tarp_coverage``) over ``n_simulations`` data sets θ* ~ prior, x ~ θ* (``n_events`` events each),
    with ``posterior_sampler(x, n, seed)`` → [n, p] as for ``sbc_ranks`` (the same seed gives the same θ*, x)."""
    truths, draws = _calibration_draws(posterior_sampler, simulator, prior, n_events, n_simulations,
                                       n_posterior_samples, seed)
    return tarp_coverage(draws, truths, references, seed=seed)


@dataclass
class PredictiveCheck:
    """A posterior predictive check: a statistic T of the observed data against T of data simulated at
    posterior draws.

    ``observed`` [k] is T(x_o); ``replicated`` [S, k] are T(x_s) for x_s ~ p(x | θ_s), θ_s ~ q(θ | ·);
    ``ranks`` [k] count the replicates below T(x_o) per component; ``percentiles`` [k] are the shares of
    replicates below it (ties count half); ``p_values`` [k] are two-sided Monte-Carlo p-values per component,
    min(1, 2·min(1 + #{T_s ≤ T_o}, 1 + #{T_s ≥ T_o})/(S + 1)); ``p_value`` is the summary: the share of the
    S + 1 statistics (observed included) whose Mahalanobis distance D = (T − T̄)ᵀ Σ⁺ (T − T̄) from their common
    mean T̄ and covariance Σ is at least the observed one's. Small: x_o lies where the predictive rarely goes.
    """

    observed: torch.Tensor
    replicated: torch.Tensor
    ranks: torch.Tensor
    percentiles: torch.Tensor
    p_values: torch.Tensor
    p_value: float


def mean_of_events(x: torch.Tensor) -> torch.Tensor:
    """The default PPC statistic: each data set's mean event, [B, n, d…] → [B, d·…] (B data sets of n events)."""
    return x.reshape(x.shape[0], x.shape[1], -1).double().mean(dim=1)


def posterior_predictive_check(simulator, posterior_samples: torch.Tensor, x_observed: torch.Tensor,
                               statistic=mean_of_events, seed: int = 0) -> PredictiveCheck:
    """Simulate one data set of ``len(x_observed)`` events at each posterior draw ``posterior_samples`` [S, p] and
    compare the ``statistic`` of the observed events ``x_observed`` [n, d] with its S replicates (see
    ``PredictiveCheck``). ``statistic`` maps B data sets of n events [B, n, d…] to [B, k] (default: the mean event).

    When x_o is also the data the posterior was conditioned on, the check is conservative (p-values gather
    about 1/2 even for the true posterior, since the posterior has already been pulled towards x_o): it catches a
    model that cannot make data like x_o, not a posterior too wide or too narrow. To test calibration, condition
    on part of the events and check against the others (a split predictive check): for the true posterior
    the held-out statistic and the S replicates are exchangeable, so ``ranks`` are uniform on 0…S across data
    sets (as SBC ranks, ``sbc_uniformity``) and ``p_value`` is uniform on {1, …, S + 1}/(S + 1).
    """
    draws = torch.as_tensor(posterior_samples, dtype=torch.float32)
    draws = draws.reshape(draws.shape[0], -1)
    x_observed = torch.as_tensor(x_observed)
    n_draws, n_events = draws.shape[0], x_observed.shape[0]
    with torch.no_grad():
        x, _ = simulator.sample(draws.repeat_interleave(n_events, dim=0),
                                generator=torch.Generator().manual_seed(seed))
        replicated = torch.as_tensor(statistic(x.reshape(n_draws, n_events, *x.shape[1:]))).double()
        observed = torch.as_tensor(statistic(x_observed[None])).double()
    replicated = replicated.reshape(n_draws, -1)
    observed = observed.reshape(-1)
    below, equal = (replicated < observed).sum(dim=0), (replicated == observed).sum(dim=0)
    at_most, at_least = below + equal, n_draws - below
    p_values = (2 * torch.minimum(at_most + 1, at_least + 1).double() / (n_draws + 1)).clamp(max=1.0)
    everything = torch.cat([observed[None], replicated])  # the observed statistic first
    centred = everything - everything.mean(dim=0)
    precision = torch.linalg.pinv(torch.atleast_2d(torch.cov(everything.T)))
    distance = ((centred @ precision) * centred).sum(dim=1)
    p_value = float((distance >= distance[0]).double().mean())
    return PredictiveCheck(observed.float(), replicated.float(), below, ((below + equal / 2) / n_draws).float(),
                           p_values.float(), p_value)
