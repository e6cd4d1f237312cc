"""Neyman construction with toy experiments, and profiling over nuisance parameters."""

from __future__ import annotations

import torch

from .evaluate import log_ratio_table, reference_point
from .extended import ExtendedTerm, observed_count
from .scans import Scan, maximise_experiments

__all__ = ["neyman_thresholds", "profile_scan"]


def neyman_thresholds(estimator, simulator, grid: torch.Tensor, n_events: int | None, level: float = 0.68,
                      n_toys: int = 200, seed: int = 0, refine: bool = True,
                      rate: ExtendedTerm | None = None) -> torch.Tensor:
    """Critical values [G] of q(θ_g) at ``level``: for each grid point, ``n_toys`` experiments of ``n_events``
    simulated at θ_g give the distribution of q(θ_g) = −2[ℓ(θ_g) − ℓ(θ̂)].

    θ̂ is found as ``scan`` finds it with the same ``refine``: the best grid point, refined by L-BFGS-B inside
    the grid's box where that is higher (``refine=True``, as ``scan``'s default), so the thresholds are quantiles
    of the very statistic that ``Scan.q`` reports for the observed events. A point is in the Neyman region
    when the observed q(θ_g) ≤ its threshold (``Scan.region(level, thresholds)``): coverage by construction,
    whether or not Wilks' asymptotics hold. Costs G · n_toys · n_events · G evaluations of log r̂, and with
    ``refine`` G optimisations of all n_toys toys at once (a few dozen passes over their events each).

    With ``rate`` (an ``ExtendedTerm``) the statistic is that of the extended likelihood, as ``scan(...,
    rate=rate)`` reports it: each toy at θ_g has n ~ Poisson(ν(θ_g)) events (``n_events`` must then be None),
    and its rate term uses that n. The auxiliary measurements are data too: each toy draws its own at the
    grid point's nuisance values α_g (``Nuisance.sample_auxiliary``: a ~ N(α_g, s²), or log-normal), and its
    constraint terms use them, so the thresholds are those of the unconditional ensemble, as the observed
    data's q (with ``rate.auxiliary``) is.
    """
    grid = torch.as_tensor(grid, dtype=torch.float32)
    grid = grid[:, None] if grid.ndim == 1 else grid
    if (rate is None) == (n_events is None):
        raise ValueError("neyman_thresholds: give n_events (a fixed number of events per toy) or rate (an "
                         "ExtendedTerm: Poisson counts of mean ν(θ_g)), not both")
    theta_ref = reference_point(grid)
    bounds = list(zip(grid.min(dim=0).values.tolist(), grid.max(dim=0).values.tolist(), strict=True))
    generator = torch.Generator().manual_seed(seed)
    names = getattr(estimator, "parameter_names_", None)
    thresholds = torch.empty(grid.shape[0])
    for g in range(grid.shape[0]):
        counts, weights, size = _toy_counts(rate, grid[g], n_toys, n_events, generator)
        auxiliary = None if rate is None else _toy_auxiliary(rate, grid[g], n_toys, names, generator)
        theta = grid[g].expand(n_toys * size, -1)
        with torch.no_grad():
            x, _ = simulator.sample(theta, generator=generator)
        # the log-likelihood ratio of every toy at every grid point: [G, n_toys], summed as ``scan`` sums
        table = log_ratio_table(estimator, x, grid, theta_ref).reshape(grid.shape[0], n_toys, size)
        if weights is not None:  # Poisson counts: each toy holds its first n_t of the ``size`` events drawn
            table = table * weights.reshape(1, n_toys, size).to(table.dtype)
        values = table.sum(dim=2, dtype=torch.float64).to(table.dtype)
        if rate is not None:  # the rate term at every grid point for every toy's count, measured from θ_ref
            with torch.no_grad():
                at_grid = rate.log_likelihood(grid.double().repeat_interleave(n_toys, dim=0),
                                              counts.repeat(grid.shape[0]), names,
                                              auxiliary.repeat(grid.shape[0], 1)).reshape(grid.shape[0], n_toys)
                at_reference = rate.log_likelihood(theta_ref.double().expand(n_toys, -1), counts, names, auxiliary)
            values = (values.double() + at_grid - at_reference).to(values.dtype)
        maxima, best = values.max(dim=0)
        maxima = maxima.double()
        if refine:
            _, refined = maximise_experiments(estimator, x, grid[best], bounds, theta_ref, weights, rate=rate,
                                              n_observed=counts, auxiliary=auxiliary)
            maxima = torch.maximum(maxima, refined)
        q_at_truth = -2.0 * (values[g].double() - maxima)
        thresholds[g] = torch.quantile(q_at_truth, level).to(torch.float32)
    return thresholds


def _toy_auxiliary(rate: ExtendedTerm, theta: torch.Tensor, n_toys: int, names, generator) -> torch.Tensor:
    """Each toy's auxiliary measurements [n_toys, A], drawn at θ's nuisance values (the constrained columns)."""
    alpha = rate.auxiliary_at(theta, names)
    return torch.stack([nuisance.sample_auxiliary(alpha[k].expand(n_toys), generator)
                        for k, nuisance in enumerate(rate.constraints)], dim=1) if rate.constraints else \
        torch.zeros(n_toys, 0, dtype=torch.float64)


def _toy_counts(rate, theta: torch.Tensor, n_toys: int, n_events, generator):
    """(counts [n_toys] or None, weights [n_toys · size] or None, size): with a rate term, Poisson counts of
    mean ν(θ) and the events drawn per toy (the largest count), weighted 1 for the first n_t of them, else 0."""
    if rate is None:
        return None, None, int(n_events)
    expected = float(rate.expected_events(theta.double().reshape(1, -1))[0])
    if not expected > 0:
        raise ValueError(f"neyman_thresholds: the rate term expects ν = {expected:.3g} ≤ 0 events at θ = "
                         f"{theta.tolist()}")
    counts = torch.poisson(torch.full((n_toys,), expected, dtype=torch.float64), generator=generator)
    size = max(int(counts.max()), 1)
    weights = (torch.arange(size, dtype=torch.float64)[None, :] < counts[:, None]).to(torch.float64).reshape(-1)
    return counts, weights, size


def profile_scan(estimator, x_observed, grid: torch.Tensor, parameters_of_interest, nuisance_bounds: dict,
                 weights=None, rate: ExtendedTerm | None = None) -> Scan:
    """Scan over the parameters of interest with every other parameter profiled (maximised) away:
    ℓ_p(ψ_g) = max_ν Σ_i w_i log r̂(x_i | ψ_g, ν, θ_ref).

    ``parameters_of_interest``: names (from the estimator's parameter_names_) whose values ``grid`` [G, k]
    holds; ``nuisance_bounds``: {name: (low, high)} for each remaining parameter. At each grid point the
    nuisance parameters ν [p − k] are found by L-BFGS-B with the gradient of Σ log r̂ in ν
    (``maximise_experiments``: autograd, else central differences), warm-started from the solution at the
    nearest grid point already profiled (the first starts at the middle of the box). The MLE is then refined
    over all parameters at once. The result's grid is over the parameters of interest, so Wilks uses k degrees
    of freedom; the profiled nuisance values are in ``scan.nuisance`` [G, p − k], and ``n_events`` = Σ w_i.

    With ``rate`` (an ``ExtendedTerm``) the profiled likelihood is the extended one: its rate term (n =
    ``rate.n_observed``, else Σ w_i) and the constraint terms of the nuisance parameters it names are added.
    """
    names = list(estimator.parameter_names_)
    interest = [names.index(name) for name in parameters_of_interest]
    nuisance = [names.index(name) for name in nuisance_bounds]
    if sorted(interest + nuisance) != list(range(len(names))):
        raise ValueError(f"parameters of interest {list(parameters_of_interest)} and nuisance parameters "
                         f"{list(nuisance_bounds)} must together name each of {names} once")
    grid = torch.as_tensor(grid, dtype=torch.float32)
    grid = grid[:, None] if grid.ndim == 1 else grid
    bounds = [None] * len(names)
    for k, j in enumerate(interest):
        bounds[j] = (float(grid[:, k].min()), float(grid[:, k].max()))
    for j in nuisance:
        bounds[j] = tuple(float(limit) for limit in nuisance_bounds[names[j]])
    middle = torch.tensor([(bounds[j][0] + bounds[j][1]) / 2 for j in nuisance], dtype=torch.float64)

    def full(point: torch.Tensor, nuisance_values: torch.Tensor) -> torch.Tensor:
        theta = torch.empty(len(names), dtype=torch.float64)
        theta[interest], theta[nuisance] = point.double(), nuisance_values.double()
        return theta

    theta_ref = full(grid[grid.shape[0] // 2], middle)
    extended = {} if rate is None else {"rate": rate, "n_observed": observed_count(rate, x_observed, weights)}
    values = torch.empty(grid.shape[0], dtype=torch.float64)
    profiled = torch.empty(grid.shape[0], len(nuisance), dtype=torch.float64)
    # warm starts: each point starts from the solution at the nearest point already done (in units of the
    # grid's extent, so that parameters of different scales count alike)
    extent = (grid.max(dim=0).values - grid.min(dim=0).values).clamp_min(1e-12)
    for g in range(grid.shape[0]):
        if g == 0:
            start = middle
        else:
            distance = ((grid[:g] - grid[g]) / extent).square().sum(dim=1)
            start = profiled[int(torch.argmin(distance))]
        theta, value = maximise_experiments(estimator, x_observed, full(grid[g], start)[None], bounds, theta_ref,
                                            weights, free=nuisance, **extended)
        values[g], profiled[g] = value[0], theta[0, nuisance]
    best = int(torch.argmax(values))
    # the global maximum, refined over every parameter at once from the best profiled point
    refined, refined_value = maximise_experiments(estimator, x_observed, full(grid[best], profiled[best])[None],
                                                  bounds, theta_ref, weights, **extended)
    if float(refined_value[0]) > float(values[best]):
        mle, mle_value = refined[0, interest].to(torch.float32), float(refined_value[0])
    else:
        mle, mle_value = grid[best], float(values[best])
    n_events = float(len(x_observed) if weights is None else torch.as_tensor(weights, dtype=torch.float64).sum())
    result = Scan(grid, values, mle, mle_value, n_events, tuple(parameters_of_interest))
    result.nuisance = profiled.to(torch.float32)
    return result
