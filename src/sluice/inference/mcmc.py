"""Metropolis–Hastings chains for any log density on R^p, built to cross between separated modes.

Three stages (``run_metropolis``):

1. Start: the log density on many prior draws (10⁴ by default), and the chains started from a tempered importance
   resampling of them: weights w_i ∝ L(θ_i)^β (L = density / prior), β ≤ 1 the largest that keeps an effective
   sample size of TEMPERED_ESS_PER_CHAIN draws per chain. The tempered posterior π(θ) L(θ)^β is wider than the
   posterior and has mass in every mode that the prior's draws come near, so chains start in all of those (the
   start need not be exact: it is burnt in).
2. Warm-up, with more chains than go on if asked (``warm_up_chains``): an adaptive Gaussian random walk; from
   half of MIN_WARM_UP on, also a Student-t mixture fitted by EM to the chains' recent draws (its number of
   components by BIC), proposed as an independence kernel. The mixture has a component on each mode some chain
   has found (up to MAX_COMPONENTS). The warm-up ends early, once a mixture fitted after MIN_WARM_UP steps accepts
   half of its proposals: then a near-Gaussian posterior costs hardly more warm-up than before. The proposal kept
   is the mixture fitted after MIN_WARM_UP that accepted the most.
3. Sampling: both proposals frozen, two Metropolis–Hastings kernels alternate, each leaving the target invariant:
   the random walk (covariance: the mixture's pooled within-component covariance, so that it steps at the scale of
   one mode) and the mixture independence proposal, accepted with min(1, p(θ')q(θ) / (p(θ)q(θ'))), which lets a
   chain jump between modes in one step and so moves mass between them at the right rates. The chains grow in
   rounds, their spacing re-estimated each round from the latest half of the steps, until their thinned draws
   reach the ESS asked for and a split R-hat ≤ 1.01 (Vehtari et al. 2021), or ``max_steps``.

Every adaptation happens before the kept draws: the kernels that produce them are fixed, so they leave the target
invariant whatever the warm-up did. What the diagnostics can and cannot see: chains stuck in separate modes (a
mode the mixture has no component for, or more modes than components) keep R-hat high, and the caller warns; a
mode that no prior draw comes near (a narrow one in a wide prior) is missed by every chain alike, which no
comparison of chains can see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .convergence import effective_sample_size, split_r_hat

__all__ = ["MetropolisRun", "StudentTMixture", "fit_student_t_mixture", "run_metropolis", "tempered_resample"]

R_HAT_LIMIT = 1.01  # Vehtari et al. (2021): split R-hat above 1.01 says the chains have not mixed
# the bulk-ESS estimate of S independent draws scatters with a standard deviation of about 2.4 √S (measured over
# 200 sets of 4×100, 20×100, 100×100 standard normal draws; its mean is 1.02–1.04 S): an ESS is "below the S draws
# asked for" when it falls more than 3 of those below S
ESS_NOISE = 7.5
WARM_UP_BLOCK = 25  # warm-up steps between two adaptations of the proposals
MIN_WARM_UP = 200  # the warm-up may end early after this many steps (the sampler's earlier fixed warm-up) ...
GOOD_ACCEPTANCE = 0.5  # ... in a block whose independence steps accept at least this fraction
FIT_EVERY = 4  # beyond MIN_WARM_UP, blocks between two fits of the mixture
# keep one step in 2τ̂ (τ̂: integrated autocorrelation time): at lag τ a random walk still correlates (AR(1) with
# τ = 30: 0.94^30 ≈ 0.15), at lag 2τ hardly (0.02), so the thinned draws are nearly independent
THINNING_IN_TAU = 2.0
STUDENT_DOF = 5.0  # degrees of freedom of the independence proposal: tails heavier than a Gaussian posterior's
INITIAL_DRAWS = 10_000  # prior draws on which the start is resampled
TEMPERED_ESS_PER_CHAIN = 2  # the tempering keeps this many effective draws per chain: few duplicated starts
DENSITY_BATCH = 2048  # prior draws per call of the log density at the start
MAX_COMPONENTS = 8  # the most components of the independence mixture
EM_POINTS = 2000  # warm-up draws, evenly spaced, to which the mixture is fitted: enough for 8 components in 10-d
PATIENCE = 2  # the BIC search over K stops once this many K in a row do worse than the best
EM_RESTARTS = 2  # EM runs from this many k-means++ seeds per K > 1, the best likelihood kept: fewer poor optima
EM_ITERATIONS = 50
EM_TOLERANCE = 1e-4  # stop EM when the mean log-likelihood per point improves by less: a proposal needs no more


@dataclass
class MetropolisRun:
    """What ``run_metropolis`` returns: the thinned ``draws`` [W, m, p]; their bulk ``ess`` and split ``r_hat``
    [p]; the mean ``acceptance`` after warm-up; the ``thinning`` k; the ``steps`` after warm-up; whether the chains
    ``mixed`` (ESS and R-hat both met); the frozen independence ``proposal``."""

    draws: np.ndarray
    ess: np.ndarray
    r_hat: np.ndarray
    acceptance: float
    thinning: int
    steps: int
    mixed: bool
    proposal: StudentTMixture


def run_metropolis(log_density, prior_draws: np.ndarray, log_prior: np.ndarray, n_samples: int, n_chains: int,
                   warm_up: int, max_steps: int, seed: int, initialisation: str = "tempered",
                   max_components: int = MAX_COMPONENTS, warm_up_chains: int | None = None) -> MetropolisRun:
    """Chains of the density exp(``log_density``) (a function of θ [N, p] float64 → log density [N], −inf
    outside its support, up to a constant), thinned to ⌈n_samples / n_chains⌉ nearly independent draws each.

    ``prior_draws`` [M, p] and their ``log_prior`` [M]: draws of the prior, which the start resamples
    (``initialisation="tempered"``, the default) or whose first chains are the start (``"prior"``).
    ``warm_up_chains`` (≥ n_chains; default n_chains) chains run the warm-up, and ``n_chains`` of them, picked
    at random, go on: more chains give the mixture more of the posterior to fit. ``max_components``: the most
    components of the independence mixture (1: a single Student-t with the warm-up's mean and covariance, and a
    warm-up of random-walk steps only)."""
    if initialisation not in ("tempered", "prior"):
        raise ValueError(f"initialisation must be 'tempered' or 'prior', got {initialisation!r}")
    generator = np.random.default_rng(seed)
    per_chain = -(-n_samples // n_chains)
    starts = max(n_chains, warm_up_chains or n_chains)
    if initialisation == "prior":
        state = prior_draws[:starts]
        log_p = log_density(state)
        spread = _covariance(state)
    else:
        values = np.concatenate([log_density(prior_draws[i:i + DENSITY_BATCH])
                                 for i in range(0, prior_draws.shape[0], DENSITY_BATCH)])
        picked, spread = tempered_resample(prior_draws, values - log_prior, starts,
                                           TEMPERED_ESS_PER_CHAIN * starts, generator)
        state, log_p = prior_draws[picked], values[picked]
    state, log_p, walk, independence = _warm_up(log_density, state, log_p, spread, warm_up, max_components,
                                                generator)
    if starts > n_chains:  # which chains go on is chosen blind to where they are: no bias
        kept = np.sort(generator.choice(starts, size=n_chains, replace=False))
        state, log_p = state[kept], log_p[kept]
    steps, accepted, floor, length = [], 0.0, 1, 2 * per_chain
    while True:
        while len(steps) < length:
            if len(steps) % 2 == 0:
                state, log_p, rate = _random_walk_step(log_density, state, log_p, walk, generator)
            else:
                state, log_p, rate = _independence_step(log_density, state, log_p, independence, generator)
            steps.append(state)
            accepted += rate
        chain = np.stack(steps, axis=1)  # [chains, steps, p]
        # τ̂ from the second half only: the first still holds the approach to equilibrium, whose drift would
        # inflate it (and, the spacing fixed on it, the run) long after the chains have settled
        recent = chain[:, chain.shape[1] // 2:]
        tau = recent.shape[0] * recent.shape[1] / max(float(effective_sample_size(recent).min()), 1.0)
        thinning = max(floor, math.ceil(THINNING_IN_TAU * tau))
        at_limit = len(steps) >= max_steps
        k = max(1, len(steps) // per_chain) if at_limit else thinning
        if len(steps) >= per_chain * k:
            draws = chain[:, len(steps) - per_chain * k::k]
            ess, r_hat = effective_sample_size(draws), split_r_hat(draws)
            enough = ess.min() >= n_samples - ESS_NOISE * math.sqrt(n_samples)
            mixed = bool(enough and r_hat.max() <= R_HAT_LIMIT)
            if mixed or at_limit:
                break
            if not enough:  # the thinned draws still correlate: space them further from now on
                floor = math.ceil(1.5 * k)
        # towards the length the spacing asks for, but at most three times longer: τ̂ is estimated afresh at every
        # length, so a too large early estimate costs one growth step, not a run sized on it; and by half at
        # least, so that a chain still drifting leaves its start behind in the burn-in
        length = min(max_steps, max(math.ceil(1.5 * len(steps)), min(per_chain * thinning, 3 * len(steps))))
    return MetropolisRun(draws, ess, r_hat, accepted / len(steps), k, len(steps), mixed, independence)


def tempered_resample(draws: np.ndarray, log_likelihood: np.ndarray, n: int, target_ess: float,
                      generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices [n] of ``draws`` [M, p] (from the prior) resampled with weights w_i ∝ L_i^β, L_i = exp(
    ``log_likelihood``), and the weighted covariance [p, p] of the draws under those weights.

    β ∈ [0, 1] is the largest whose weights keep an effective sample size (Σw)²/Σw² ≥ ``target_ess``
    (bisection; β = 1, plain importance resampling of the posterior, when that already does). Systematic
    resampling: one uniform u, the draws at the quantiles (u + j)/n of the cumulative weights, so each draw is
    picked ⌊n w_i⌋ or ⌈n w_i⌉ times."""
    finite = np.isfinite(log_likelihood)
    if not finite.any():  # no draw has positive density: start from the first n prior draws
        return np.arange(n) % draws.shape[0], _covariance(draws)
    centred = np.where(finite, log_likelihood - log_likelihood[finite].max(), -np.inf)

    def weights(beta: float) -> np.ndarray:
        w = np.exp(beta * centred)
        return w / w.sum()

    def ess(beta: float) -> float:
        return 1.0 / float((weights(beta) ** 2).sum())

    low, high = 0.0, 1.0
    if ess(high) < target_ess:
        for _ in range(50):  # ESS falls as β grows: bisect to the largest β with ESS ≥ target
            middle = (low + high) / 2
            low, high = (middle, high) if ess(middle) >= target_ess else (low, middle)
        high = low
    w = weights(high)
    positions = (generator.random() + np.arange(n)) / n
    indices = np.minimum(np.searchsorted(np.cumsum(w), positions), draws.shape[0] - 1)
    mean = w @ draws
    covariance = (w[:, None] * (draws - mean)).T @ (draws - mean)
    return indices, covariance + 1e-10 * max(float(np.diagonal(covariance).mean()), 1e-12) * np.eye(draws.shape[1])


def _warm_up(log_density, state: np.ndarray, log_p: np.ndarray, spread: np.ndarray, steps: int,
             max_components: int, generator: np.random.Generator):
    """Adaptive proposals from the chains' start [W, p], in blocks of WARM_UP_BLOCK steps, for ``steps`` steps at
    most. After each block the random walk's scale moves by 2·(acceptance − target) in log (a Robbins–Monro
    step: halves it within a block of no acceptance) and its covariance is updated: that of the chains over the
    last two blocks (``spread`` before any) until a mixture is fitted, then the mixture's pooled within-component
    covariance. With ``max_components`` > 1, a Student-t mixture is fitted to the draws of the warm-up's second
    half so far after the blocks in ``_fit_blocks``, and from then on random-walk and independence steps
    alternate; each mixture's acceptance is measured on the blocks it serves. A block whose independence steps
    accepted ≥ GOOD_ACCEPTANCE, with a mixture fitted after MIN_WARM_UP steps (``steps`` if fewer), ends the
    warm-up: that proposal is good, and more adaptation would buy little.

    Returns (state, log p, Cholesky factor of the frozen random-walk covariance [p, p], the frozen independence
    proposal): of the mixtures fitted after MIN_WARM_UP steps, the one that accepted the most (EM and BIC pick a
    poor fit now and then: a measured acceptance is what counts), or with ``max_components`` = 1 a Student-t with
    the mean and covariance of the warm-up's second half."""
    p = state.shape[1]
    target = 0.44 if p == 1 else 0.234  # optimal random-walk acceptance (Roberts, Gelman & Gilks 1997)
    log_scale = math.log(2.38 / math.sqrt(p))  # optimal scale for a Gaussian target with that covariance
    blocks = max(1, math.ceil(steps / WARM_UP_BLOCK))
    shortest = min(blocks, math.ceil(MIN_WARM_UP / WARM_UP_BLOCK))
    fits = _fit_blocks(shortest, blocks) if max_components > 1 else set()
    # tried: [mixture, the acceptance rates of its independence steps, the block after which it was fitted]
    covariance, visited, mixture, tried = spread, [state], None, []
    for block in range(1, blocks + 1):
        walk = math.exp(log_scale) * _cholesky(covariance)
        walk_rates = []
        for step in range(WARM_UP_BLOCK):
            if mixture is not None and step % 2 == 1:
                state, log_p, rate = _independence_step(log_density, state, log_p, mixture, generator)
                tried[-1][1].append(rate)
            else:
                state, log_p, rate = _random_walk_step(log_density, state, log_p, walk, generator)
                walk_rates.append(rate)
            visited.append(state)
        log_scale += 2.0 * (sum(walk_rates) / len(walk_rates) - target)
        # only a mixture fitted after MIN_WARM_UP may end the warm-up: earlier ones saw chains still on their way,
        # their share of each mode not yet the posterior's, and accept more there than they will later
        if tried and tried[-1][2] >= shortest and np.mean(tried[-1][1][-(WARM_UP_BLOCK // 2):]) >= GOOD_ACCEPTANCE:
            break
        if block in fits:
            mixture = fit_student_t_mixture(_spaced(visited[len(visited) // 2:]), max_components, generator)
            tried.append([mixture, [], block])
        covariance = mixture.pooled_covariance() if mixture is not None else \
            _covariance(np.concatenate(visited[-2 * WARM_UP_BLOCK:]))
    if tried:  # of those fitted after MIN_WARM_UP (else of all), the mixture that accepted the most
        late = [entry for entry in tried if entry[2] >= shortest and entry[1]] or tried
        mixture = max(late, key=lambda entry: np.mean(entry[1]) if entry[1] else -1.0)[0]
        covariance = mixture.pooled_covariance()
    else:
        second_half = np.concatenate(visited[len(visited) // 2:])
        mixture = StudentTMixture(np.ones(1), second_half.mean(axis=0)[None], _covariance(second_half)[None])
    return state, log_p, math.exp(log_scale) * _cholesky(covariance), mixture


def _fit_blocks(shortest: int, blocks: int) -> set[int]:
    """The blocks after which the warm-up (re)fits its mixture: at 1/2, 3/4 and the end of the shortest warm-up,
    then every FIT_EVERY blocks; not after the last block, where its acceptance could not be measured (unless
    the warm-up is a single block)."""
    fits = {math.ceil(shortest / 2), math.ceil(3 * shortest / 4), shortest} | set(range(shortest, blocks, FIT_EVERY))
    return {block for block in fits if block < blocks} or {blocks}


def _spaced(visited: list[np.ndarray]) -> np.ndarray:
    """At most EM_POINTS of the states [W, p] in ``visited``, evenly spaced over steps and chains."""
    points = np.concatenate(visited)
    return points[np.linspace(0, points.shape[0] - 1, min(EM_POINTS, points.shape[0])).astype(int)]


def _random_walk_step(log_density, state, log_p, walk: np.ndarray, generator):
    """θ' = θ + L ε, ε ~ N(0, I), accepted with probability min(1, p(θ'|x)/p(θ|x)); (state, log p, rate)."""
    proposal = state + generator.standard_normal(state.shape) @ walk.T
    log_proposal = log_density(proposal)
    accept = np.log(generator.random(state.shape[0])) < log_proposal - log_p
    return np.where(accept[:, None], proposal, state), np.where(accept, log_proposal, log_p), float(accept.mean())


def _independence_step(log_density, state, log_p, proposal_distribution: StudentTMixture, generator):
    """θ' ~ q, accepted with probability min(1, p(θ'|x) q(θ) / (p(θ|x) q(θ'))); (state, log p, rate)."""
    proposal = proposal_distribution.sample(state.shape[0], generator)
    log_proposal = log_density(proposal)
    # q(θ) at the current state, recomputed: the random-walk steps in between have moved it
    log_q = proposal_distribution.log_prob
    log_ratio = (log_proposal - log_q(proposal)) - (log_p - log_q(state))
    accept = np.log(generator.random(state.shape[0])) < log_ratio
    return np.where(accept[:, None], proposal, state), np.where(accept, log_proposal, log_p), float(accept.mean())


class StudentTMixture:
    """q(θ) = Σ_k w_k t_ν(θ; μ_k, Σ_k): ``weights`` [K], ``means`` [K, p], scale matrices ``covariances``
    [K, p, p] (float64), ν = ``dof``. A draw picks k with probability w_k, then θ = μ_k + L_k z √(ν/u),
    z ~ N(0, I), u ~ χ²_ν; log t_ν(θ; μ, Σ) = log Γ((ν+p)/2) − log Γ(ν/2) − p/2 log(νπ) − log det L
    − (ν+p)/2 · log(1 + δᵀΣ⁻¹δ/ν), δ = θ − μ, Σ = L Lᵀ."""

    def __init__(self, weights: np.ndarray, means: np.ndarray, covariances: np.ndarray, dof: float = STUDENT_DOF):
        self.weights, self.means, self.covariances, self.dof = weights / weights.sum(), means, covariances, dof
        self.factors = np.stack([_cholesky(c) for c in covariances])
        self.whitening = np.linalg.inv(self.factors)  # L⁻¹ once: a product per step, cheaper than a solve
        p = means.shape[1]
        self.log_normalisers = (np.log(self.weights) + math.lgamma((dof + p) / 2) - math.lgamma(dof / 2)
                                - p / 2 * math.log(dof * math.pi)
                                - np.log(np.diagonal(self.factors, axis1=1, axis2=2)).sum(axis=1))

    def sample(self, n: int, generator: np.random.Generator) -> np.ndarray:
        # one component: no draw of it, so that the random stream is that of a single Student-t
        component = (np.zeros(n, dtype=int) if self.weights.shape[0] == 1
                     else generator.choice(self.weights.shape[0], size=n, p=self.weights))
        z = np.einsum("nij,nj->ni", self.factors[component], generator.standard_normal((n, self.means.shape[1])))
        return self.means[component] + z * np.sqrt(self.dof / generator.chisquare(self.dof, n))[:, None]

    def log_prob(self, theta: np.ndarray) -> np.ndarray:
        whitened = np.einsum("kij,knj->kni", self.whitening, theta[None] - self.means[:, None])  # [K, n, p]
        p = self.means.shape[1]
        per_component = (self.log_normalisers[:, None]
                         - (self.dof + p) / 2 * np.log1p((whitened ** 2).sum(axis=2) / self.dof))
        return _logsumexp(per_component, axis=0)

    def pooled_covariance(self) -> np.ndarray:
        """Σ_k w_k Σ_k [p, p]: the covariance within one component, averaged over them."""
        return np.einsum("k,kij->ij", self.weights, self.covariances)


def fit_student_t_mixture(points: np.ndarray, max_components: int, generator: np.random.Generator,
                          dof: float = STUDENT_DOF) -> StudentTMixture:
    """A Student-t mixture with the locations, scale matrices and weights of the Gaussian mixture fitted to
    ``points`` [N, p] by EM, for K = 1 … ``max_components`` components, the K of least BIC,
    −2 log L + (K − 1 + K p + K p(p+1)/2) log N. The search stops once PATIENCE K in a row do worse than the best,
    or when a component would have fewer than 10(p + 1) points. Each K > 1 is fitted from EM_RESTARTS seeds,
    the best likelihood kept."""
    n, p = points.shape
    mean, factor = points.mean(axis=0), _cholesky(_covariance(points))
    whitened = np.linalg.solve(factor, (points - mean).T).T  # EM in whitened coordinates: scale-free ridge
    best_bic, best = math.inf, (np.ones(1), np.zeros((1, p)), np.eye(p)[None])
    best_k = 0
    for k in range(1, max_components + 1):
        if n < 10 * (p + 1) * k:
            break
        fit = max((_expectation_maximisation(whitened, k, generator) for _ in range(EM_RESTARTS if k > 1 else 1)),
                  key=lambda candidate: candidate[3])
        parameters = fit[0].shape[0] * (1 + p + p * (p + 1) / 2) - 1
        bic = -2 * fit[3] + parameters * math.log(n)
        if bic < best_bic:
            best_bic, best, best_k = bic, fit[:3], k
        elif k >= best_k + PATIENCE:
            break
    weights, means, covariances = best
    return StudentTMixture(weights, mean + means @ factor.T, factor @ covariances @ factor.T, dof)


def _expectation_maximisation(points: np.ndarray, k: int, generator: np.random.Generator):
    """EM for a Gaussian mixture of k components on ``points`` [N, p] (whitened), started from k-means++ seeds
    (Arthur & Vassilvitskii 2007) by nearest-seed assignment. A component left with fewer than p + 1 points is
    dropped. Returns (weights [K'], means [K', p], covariances [K', p, p], total log-likelihood)."""
    n, p = points.shape
    seeds = [points[generator.integers(n)]]
    distance = ((points - seeds[0]) ** 2).sum(axis=1)
    for _ in range(k - 1):
        seeds.append(points[generator.choice(n, p=distance / distance.sum())] if distance.sum() > 0 else seeds[0])
        distance = np.minimum(distance, ((points - seeds[-1]) ** 2).sum(axis=1))
    nearest = np.argmin(((points[:, None] - np.stack(seeds)[None]) ** 2).sum(axis=2), axis=1)
    responsibility = np.eye(k)[nearest]  # [N, k]
    previous = -math.inf
    for _ in range(EM_ITERATIONS):
        responsibility = responsibility[:, responsibility.sum(axis=0) >= p + 1]
        counts = responsibility.sum(axis=0)
        weights = counts / n
        means = responsibility.T @ points / counts[:, None]
        centred = points[None] - means[:, None]  # [K, N, p]
        weighted = centred * responsibility.T[:, :, None]
        covariances = np.matmul(weighted.transpose(0, 2, 1), centred) / counts[:, None, None]
        covariances += 1e-6 * np.eye(p)  # ridge in whitened units: keeps a collapsing component invertible
        factors = np.linalg.cholesky(covariances)
        solved = np.matmul(centred, np.linalg.inv(factors).transpose(0, 2, 1))  # L⁻¹δ [K, N, p]
        log_component = (np.log(weights)[:, None] - 0.5 * (solved ** 2).sum(axis=2)
                         - np.log(np.diagonal(factors, axis1=1, axis2=2)).sum(axis=1)[:, None]
                         - p / 2 * math.log(2 * math.pi))  # [K, N]
        log_total = _logsumexp(log_component, axis=0)
        responsibility = np.exp(log_component - log_total).T
        log_likelihood = float(log_total.sum())
        if log_likelihood - previous < EM_TOLERANCE * n:
            break
        previous = log_likelihood
    return weights, means, covariances, log_likelihood


def _logsumexp(values: np.ndarray, axis: int) -> np.ndarray:
    top = values.max(axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return np.log(np.exp(values - top).sum(axis=axis)) + np.squeeze(top, axis=axis)


def _covariance(draws: np.ndarray) -> np.ndarray:
    """Sample covariance [p, p] of ``draws`` [N, p], plus a relative jitter of 1e-10 of its mean variance so that
    its Cholesky factor exists when the chains collapse onto one point."""
    p = draws.shape[1]
    covariance = np.nan_to_num(np.atleast_2d(np.cov(draws.T))) if draws.shape[0] > 1 else np.eye(p)
    return covariance + 1e-10 * max(float(np.diagonal(covariance).mean()), 1e-12) * np.eye(p)


def _cholesky(covariance: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor; the square root of the diagonal where the matrix is not positive definite."""
    try:
        return np.linalg.cholesky(covariance)
    except np.linalg.LinAlgError:
        return np.diag(np.sqrt(np.clip(np.diagonal(covariance), 1e-24, None)))
