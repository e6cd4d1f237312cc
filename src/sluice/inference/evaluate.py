"""Batched evaluation of log r̂(x_i | θ_g, θ_ref) for many θ and many events at once: the work behind scans,
toys and posteriors; and the summed log-likelihood ratio of whole experiments with its gradient in θ, the
objective of maximum likelihood and profiling."""

from __future__ import annotations

import torch

from ..estimators.base import PotentialPredictions

ROWS_PER_PASS = 262_144  # (θ, event) pairs evaluated per forward pass
# central differences step by this fraction of each parameter's range: log r̂ comes back in float32 (relative
# rounding 6e-8), so a step of 1e-8 (SciPy's default) sees the rounding only, while 1e-3 of the range keeps
# both the rounding error of the quotient (about 6e-8 Σ|log r̂| / step) and its truncation error (about
# step² |∂³ℓ| / 6) far below the gradient that the optimiser needs to resolve
FINITE_DIFFERENCE_STEP = 1e-3


def reference_point(grid: torch.Tensor) -> torch.Tensor:
    """The reference θ of a scan; any fixed point serves, since q(θ) only uses differences."""
    return grid[grid.shape[0] // 2]


def log_ratio_table(estimator, x: torch.Tensor, thetas: torch.Tensor, theta_ref: torch.Tensor,
                    differentiable: bool = False) -> torch.Tensor:
    """log r̂(x_i | θ_g, θ_ref) for every row θ_g of ``thetas`` [G, p] and event x_i: shape [G, n].

    Models whose network is a potential g(x,θ) (the ratio family, NDE, SCANDAL) are evaluated as
    g(x_i,θ_g) − g(x_i,θ_ref) with the reference term computed once; others through ``log_ratio``.
    With ``differentiable`` the table keeps its graph to ``thetas`` (potential models only).
    """
    x = torch.as_tensor(x, dtype=torch.float32)
    x = x[:, None] if x.ndim == 1 else x
    n, G = x.shape[0], thetas.shape[0]
    thetas = thetas.to(torch.float32)
    theta_ref = torch.as_tensor(theta_ref, dtype=torch.float32)
    potential = isinstance(estimator, PotentialPredictions)
    if differentiable and not potential:
        raise ValueError(f"{type(estimator).__name__} gives no differentiable log r̂ in θ")
    repeated = _repeated_rows(x)
    if repeated is not None:  # discrete x (many repeated events): evaluate each distinct event once
        distinct, inverse = repeated
        return log_ratio_table(estimator, distinct, thetas, theta_ref, differentiable)[:, inverse]
    if not differentiable and hasattr(estimator, "log_ratio_table"):  # a shortcut of the estimator's own
        table = estimator.log_ratio_table(x, thetas, theta_ref)
        if table is not None:
            return table
    per_pass = max(1, ROWS_PER_PASS // n)
    with torch.enable_grad() if differentiable else torch.no_grad():
        if potential:
            reference = estimator.model_(x, theta_ref.expand(n, -1))
        rows = []
        for start in range(0, G, per_pass):
            block = thetas[start:start + per_pass]
            m = block.shape[0]
            x_rep = x.repeat(m, *([1] * (x.ndim - 1)))
            theta_rep = block.repeat_interleave(n, dim=0)
            if potential:
                rows.append(estimator.model_(x_rep, theta_rep).reshape(m, n) - reference)
            else:
                rows.append(estimator.log_ratio(x_rep, theta_rep, theta_ref.expand(m * n, -1)).reshape(m, n))
    return torch.cat(rows)


def _repeated_rows(x: torch.Tensor, sample: int = 256):
    """(distinct rows, inverse index) when the rows of ``x`` [n, d] repeat (at most n/4 distinct), else None.

    Sorting continuous rows costs more than it saves, so the first ``sample`` rows decide first: more than a
    quarter of them distinct, and x is taken as continuous."""
    if x.ndim != 2 or x.shape[0] <= 64:
        return None
    if torch.unique(x[:sample], dim=0).shape[0] * 4 > min(sample, x.shape[0]):
        return None
    if x.shape[1] == 1:  # one column: the flat unique, much faster than sorting rows
        distinct, inverse = torch.unique(x[:, 0], return_inverse=True)
        distinct = distinct[:, None]
    else:
        distinct, inverse = torch.unique(x, dim=0, return_inverse=True)
    return (distinct, inverse) if distinct.shape[0] * 4 <= x.shape[0] else None


def summed_log_ratio(estimator, x: torch.Tensor, thetas: torch.Tensor, theta_ref: torch.Tensor,
                     weights: torch.Tensor | None = None, differentiable: bool = False) -> torch.Tensor:
    """Σ_i w_i log r̂(x_i | θ_g, θ_ref) for each row of ``thetas``: shape [G]."""
    table = log_ratio_table(estimator, x, thetas, theta_ref, differentiable)
    if weights is not None:
        table = table * torch.as_tensor(weights, dtype=torch.float32)
    # accumulated in float64: the rounding of a float32 sum grows with the number of events
    return table.sum(dim=1, dtype=torch.float64).to(table.dtype)


class ExperimentLogRatio:
    """ℓ_t(θ_t) = Σ_{i in t} w_i log r̂(x_i | θ_t, θ_ref) for T experiments, each at its own θ_t, with its
    gradient ∂ℓ_t/∂θ_t: the objective of maximum likelihood, profiling and the refined Neyman statistic.

    ``x`` [T·n, ...]: the experiments' events in T consecutive blocks of n; ``theta_ref`` [p]; ``weights``
    [T·n] or None. Discrete events are grouped once here (each distinct (experiment, event) evaluated once,
    its weights summed), so an instance serves every evaluation of one maximisation.

    The gradient comes from autograd wherever log r̂ keeps its graph to θ: potential models (the ratio family,
    NDE, SCANDAL) through their network g(x, θ), and any other estimator whose ``log_ratio`` returns a tensor
    that requires grad. Where ``log_ratio`` runs under no_grad (SALLY, SALLINO, NPE, ensembles,
    ``ExactLikelihood``) it comes from central differences with a step of ``FINITE_DIFFERENCE_STEP`` times each
    parameter's range (one-sided at a bound): 2k more evaluations for k free parameters; those evaluations use
    the estimator's own ``log_ratio_table`` where it has one (the exact Galton likelihood: one distribution per
    θ) and the table stays small. θ reaches ``log_ratio`` in float64, and the sums are accumulated in float64.
    """

    TABLE_LIMIT = 4 * ROWS_PER_PASS  # the largest [T, distinct events] table worth computing for T experiments

    def __init__(self, estimator, x: torch.Tensor, n_experiments: int, theta_ref: torch.Tensor,
                 weights: torch.Tensor | None = None):
        x = torch.as_tensor(x, dtype=torch.float32)
        x = x[:, None] if x.ndim == 1 else x
        experiment = torch.arange(n_experiments).repeat_interleave(x.shape[0] // n_experiments)
        weights = torch.ones(x.shape[0], dtype=torch.float64) if weights is None else \
            torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        repeated = _repeated_rows(x)
        self.events, self.event_index = repeated if repeated is not None else (x, torch.arange(x.shape[0]))
        if repeated is not None:  # discrete x: each distinct (experiment, event) once, with its weights summed
            n_events = self.events.shape[0]
            pairs, inverse = torch.unique(experiment * n_events + self.event_index, return_inverse=True)
            weights = torch.zeros(pairs.shape[0], dtype=torch.float64).index_add_(0, inverse, weights)
            experiment, self.event_index = pairs // n_events, pairs % n_events
            x = self.events[self.event_index]
        self.estimator, self.x, self.experiment, self.weights = estimator, x, experiment, weights
        self.n_experiments = n_experiments
        self.theta_ref = torch.as_tensor(theta_ref, dtype=torch.float64).reshape(-1)
        self.route = self._route()
        self._at_reference = {}

    def _route(self) -> str:
        """"network" (a potential's g(x, θ)), "autograd" (log_ratio keeps its graph), "table" (the estimator's
        own log_ratio_table, no gradient) or "rows" (log_ratio row by row, no gradient)."""
        if isinstance(self.estimator, PotentialPredictions):
            return "network"
        probe = self.theta_ref[None].clone().requires_grad_(True)
        with torch.enable_grad():
            if self.estimator.log_ratio(self.x[:1], probe, self.theta_ref[None]).requires_grad:
                return "autograd"
        if hasattr(self.estimator, "log_ratio_table") and \
                self.n_experiments * self.events.shape[0] <= self.TABLE_LIMIT:
            return "table"
        return "rows"

    def __call__(self, thetas: torch.Tensor, free=None, bounds=None):
        """(ℓ [T], ∂ℓ/∂θ [T, k] in the ``free`` parameters (None: all p), resolution [T]), float64.

        ``bounds``: [(low, high)] for each of the p parameters, which finite differences stay inside and take
        their step from. The resolution is the rounding of ℓ_t that log r̂'s precision allows, eps · Σ_i |w_i| s_i
        (eps = 1.2e-7 for a float32 log r̂; s_i = |log r̂_i|, or |g(x_i,θ)| + |g(x_i,θ_ref)| for a potential):
        differences of ℓ below it are noise."""
        thetas = torch.as_tensor(thetas, dtype=torch.float64)
        free = list(range(thetas.shape[1])) if free is None else list(free)
        if self.route in ("network", "autograd"):
            values, resolution, gradient = self._sums(thetas, with_gradient=True)
            return values, gradient[:, free], resolution
        values, resolution, _ = self._sums(thetas)
        return values, self._central_differences(thetas, free, bounds), resolution

    def _log_ratio(self, rows: slice, theta_rows):
        """(log r̂(x_i | θ_i, θ_ref) [m] for the paired ``rows``, the size of what was rounded to get it [m])."""
        x = self.x[rows]
        reference = self.theta_ref.expand(x.shape[0], -1)
        if self.route == "network":  # through the network, since the estimator's log_ratio runs under no_grad
            key = (rows.start, rows.stop)
            if key not in self._at_reference:  # g(x, θ_ref) is the same at every evaluation
                with torch.no_grad():
                    self._at_reference[key] = self.estimator.model_(x, reference.to(torch.float32))
            at_reference = self._at_reference[key]
            at_theta = self.estimator.model_(x, theta_rows.to(torch.float32))
            return at_theta - at_reference, at_theta.detach().abs() + at_reference.abs()
        log_r = self.estimator.log_ratio(x, theta_rows, reference)
        return log_r, log_r.detach().abs()

    def _sums(self, thetas: torch.Tensor, with_gradient: bool = False):
        """(ℓ [T], resolution [T], ∂ℓ/∂θ [T, p] or None without ``with_gradient``)."""
        if self.route == "table":
            table = self.estimator.log_ratio_table(self.events, thetas, self.theta_ref)
            if table is not None:
                log_r = table[self.experiment, self.event_index]
                return *self._accumulate(log_r, log_r.abs(), slice(None)), None
            self.route = "rows"  # the estimator's table does not serve this x
        leaf = thetas.detach().clone().requires_grad_(with_gradient)
        values = resolution = torch.zeros(self.n_experiments, dtype=torch.float64)
        gradient = torch.zeros_like(leaf) if with_gradient else None
        with torch.enable_grad() if with_gradient else torch.no_grad():
            for start in range(0, self.x.shape[0], ROWS_PER_PASS):
                rows = slice(start, start + ROWS_PER_PASS)
                log_r, rounded = self._log_ratio(rows, leaf[self.experiment[rows]])
                if with_gradient and log_r.requires_grad:
                    # a row depends on its own experiment's θ only, so the sum's gradient is ∂ℓ_t/∂θ_t; grad, not
                    # backward, so the network's own parameters collect no .grad
                    (part,) = torch.autograd.grad((log_r.double() * self.weights[rows]).sum(), leaf,
                                                  allow_unused=True)
                    gradient = gradient if part is None else gradient + part
                part_values, part_resolution = self._accumulate(log_r.detach(), rounded, rows)
                values, resolution = values + part_values, resolution + part_resolution
        return values, resolution, gradient

    def _accumulate(self, log_r: torch.Tensor, rounded: torch.Tensor, rows: slice):
        """(Σ_i w_i log r̂_i per experiment [T], its resolution eps · Σ_i |w_i| s_i [T]) over ``rows``."""
        experiment, weights = self.experiment[rows], self.weights[rows]

        def per_experiment(terms: torch.Tensor) -> torch.Tensor:
            return torch.zeros(self.n_experiments, dtype=torch.float64).index_add_(0, experiment, terms)

        return (per_experiment(log_r.double() * weights),
                torch.finfo(log_r.dtype).eps * per_experiment(rounded.double() * weights.abs()))

    def _central_differences(self, thetas: torch.Tensor, free, bounds) -> torch.Tensor:
        """∂ℓ_t/∂θ_tj [T, k] for j in ``free`` by central differences that stay inside ``bounds``: every
        experiment moves at once (each ℓ_t depends on its own θ_t only), so the gradient costs 2k evaluations."""
        steps = finite_difference_steps(thetas, bounds)
        gradient = torch.empty(thetas.shape[0], len(free), dtype=torch.float64)
        for column, j in enumerate(free):
            low, high = (None, None) if bounds is None else bounds[j]
            up, down = thetas.clone(), thetas.clone()
            up[:, j], down[:, j] = thetas[:, j] + steps[:, j], thetas[:, j] - steps[:, j]
            if high is not None:
                up[:, j] = up[:, j].clamp_max(float(high))
            if low is not None:
                down[:, j] = down[:, j].clamp_min(float(low))
            gradient[:, column] = (self._sums(up)[0] - self._sums(down)[0]) / (up[:, j] - down[:, j])
        return gradient


def finite_difference_steps(thetas: torch.Tensor, bounds=None) -> torch.Tensor:
    """The central-difference step [T, p]: ``FINITE_DIFFERENCE_STEP`` times each parameter's range, or times
    max(1, |θ_j|) where a bound is missing."""
    steps = FINITE_DIFFERENCE_STEP * thetas.abs().clamp_min(1.0)
    for j, (low, high) in enumerate(bounds or []):
        if low is not None and high is not None:
            steps[:, j] = FINITE_DIFFERENCE_STEP * (float(high) - float(low))
    return steps
