"""Posteriors from a prior and the surrogate likelihood of N events: exact on a grid, Metropolis–Hastings chains
(with their convergence diagnostics, from ``convergence``), or a flow by variational inference; and
``sample_posterior``, posterior draws from any estimator. log p(θ|x) = Σ_i log r̂(x_i|θ, θ_ref) + log π(θ) + const."""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..seeding import seeded_global_generator
from ..simulators.priors import BoxUniform, outside_support, sample_prior
from .convergence import effective_sample_size, split_r_hat
from .evaluate import summed_log_ratio

__all__ = ["Posterior", "effective_sample_size", "grid_posterior", "log_posterior", "mcmc_posterior",
           "sample_posterior", "split_r_hat", "variational_posterior"]


@dataclass
class Posterior:
    """``samples`` [S, p] from p(θ | x) and how they were drawn. MCMC fills ``chains`` [W, m, p] (the draws
    chain by chain), ``ess`` and ``r_hat`` [p] (bulk effective sample size and split R-hat of those draws) and
    ``acceptance`` (the mean acceptance rate); other methods leave them None."""

    samples: torch.Tensor
    parameter_names: tuple
    method: str
    chains: torch.Tensor | None = None
    ess: torch.Tensor | None = None
    r_hat: torch.Tensor | None = None
    acceptance: float | None = None

    def mean(self) -> torch.Tensor:
        return self.samples.mean(dim=0)

    def to_arviz(self):
        """An ``arviz.InferenceData`` (needs the optional ``arviz`` package)."""
        try:
            import arviz
        except ImportError:
            raise ImportError("to_arviz needs arviz: pip install 'sluice-sbi[arviz]'") from None
        names = self.parameter_names or tuple(f"theta_{j}" for j in range(self.samples.shape[1]))
        draws = self.chains if self.chains is not None else self.samples[None]  # [chain, draw, p]
        return arviz.from_dict(posterior={name: draws[:, :, j].numpy() for j, name in enumerate(names)})


def log_posterior(estimator, x_observed, prior, thetas: torch.Tensor, theta_ref: torch.Tensor,
                  differentiable: bool = False) -> torch.Tensor:
    """Σ_i log r̂(x_i|θ, θ_ref) + log π(θ) for each row of ``thetas`` [G, p]; −inf outside the prior."""
    outside = outside_support(prior, thetas.detach())
    safe = torch.where(outside[:, None], theta_ref.expand_as(thetas), thetas)
    value = summed_log_ratio(estimator, x_observed, safe, theta_ref, differentiable=differentiable)
    value = value + prior.log_prob(safe)
    return torch.where(outside, torch.full_like(value, float("-inf")), value)


def _names(estimator) -> tuple:
    return tuple(getattr(estimator, "parameter_names_", ()))


def grid_posterior(estimator, x_observed, prior: BoxUniform, points: int = 201, n_samples: int = 10_000,
                   seed: int = 0) -> Posterior:
    """The posterior evaluated exactly on a regular grid over a box prior (p ≤ 3), sampled by drawing cells in
    proportion to their mass and a uniform position inside each."""
    if not isinstance(prior, BoxUniform) or prior.low.numel() > 3:
        raise ValueError("grid_posterior needs a BoxUniform prior over at most 3 parameters")
    from .scans import make_grid

    p = prior.low.numel()
    width = (prior.high - prior.low) / points
    centres = make_grid(prior.low + width / 2, prior.high - width / 2, points)
    values = log_posterior(estimator, x_observed, prior, centres, centres[centres.shape[0] // 2])
    weights = torch.softmax(values.double(), dim=0)
    generator = torch.Generator().manual_seed(seed)
    cells = torch.multinomial(weights, n_samples, replacement=True, generator=generator)
    jitter = (torch.rand(n_samples, p, generator=generator) - 0.5) * width
    posterior = Posterior(centres[cells] + jitter, _names(estimator), "grid")
    posterior.grid, posterior.grid_log_density = centres, values
    return posterior


# --- MCMC --------------------------------------------------------------------------------------------------------
# Independent Metropolis–Hastings chains, all advanced by one batched evaluation of log r̂ per step, thinned until
# their draws are nearly independent, with the diagnostics of Vehtari et al. (2021) to check it.

R_HAT_LIMIT = 1.01  # Vehtari et al. (2021): split R-hat above 1.01 says the chains have not mixed
# the bulk-ESS estimate of S independent draws scatters with a standard deviation of about 2.4 √S (measured over
# 200 sets of 4×100, 20×100, 100×100 standard normal draws; its mean is 1.02–1.04 S): an ESS is "below the S draws
# asked for" when it falls more than 3 of those below S
ESS_NOISE = 7.5
DRAWS_PER_CHAIN = 100  # the default n_chains leaves each chain about this many draws: enough for R-hat and ESS
WARM_UP_BLOCK = 25  # warm-up steps between two adaptations of the random walk
# keep one step in 2τ̂ (τ̂: integrated autocorrelation time): at lag τ a random walk still correlates (AR(1) with
# τ = 30: 0.94^30 ≈ 0.15), at lag 2τ hardly (0.02), so the thinned draws are nearly independent
THINNING_IN_TAU = 2.0
STUDENT_DOF = 5.0  # degrees of freedom of the independence proposal: tails heavier than a Gaussian posterior's


def mcmc_posterior(estimator, x_observed, prior, n_samples: int = 10_000, n_chains: int | None = None,
                   warm_up: int = 200, max_steps: int = 10_000, seed: int = 0) -> Posterior:
    """Draws from p(θ|x) ∝ Π_i r̂(x_i|θ, θ_ref) π(θ) by Metropolis–Hastings, thinned to nearly independent
    draws, with per-parameter diagnostics and a UserWarning when the chains have not mixed.

    ``n_chains`` independent chains (default ⌈n_samples/100⌉ within [4, 100]: about 100 draws per chain, which
    R-hat needs; but at least 2p + 2 for p parameters, whose covariance the warm-up estimates from the chains)
    start from prior draws. Warm-up (``warm_up`` steps): a Gaussian random walk with the chains'
    current covariance, its scale tuned towards the acceptance rate optimal for a random walk (0.234; 0.44 for
    one parameter). Then both proposals are frozen and two kernels alternate, each leaving p(θ|x) invariant:
    that random walk, and an independence proposal, a Student-t (5 degrees of freedom) with the mean and
    covariance of the warm-up's second half, which crosses a near-Gaussian posterior in one step. The chains run
    until their last m·k steps, thinned by k ≥ 2τ̂ (τ̂ = chain draws / ESS) to m = ⌈n_samples/n_chains⌉
    draws per chain, give every parameter a bulk ESS ≥ n_samples (less the estimate's noise, 7.5 √n_samples)
    and a split R-hat ≤ 1.01, or until
    ``max_steps`` steps (then a UserWarning); steps before those kept are burn-in.

    ``x_observed``: the events [n, d] (or [n] scalar events) whose log r̂ are summed. Returns a Posterior:
    ``samples`` [n_samples, p]; ``chains`` [n_chains, m, p] (the thinned draws, chain by chain); ``ess`` and
    ``r_hat`` [p] of those draws (rank-normalised bulk ESS and split R-hat, ArviZ's defaults); ``acceptance``
    (mean over steps after warm-up), ``thinning`` k and ``steps`` (after warm-up).
    """
    # one torch thread: each step evaluates the estimator on a few dozen θ, where a thread pool costs more than it
    # saves, and on a busy machine much more (the caller's setting is restored)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        posterior, mixed = _metropolis(estimator, x_observed, prior, n_samples, n_chains, warm_up, max_steps, seed)
    finally:
        torch.set_num_threads(previous)
    if not mixed:
        warnings.warn(_not_mixed_message(posterior, n_samples, max_steps), UserWarning, stacklevel=2)
    return posterior


def _metropolis(estimator, x_observed, prior, n_samples: int, n_chains: int | None, warm_up: int, max_steps: int,
                seed: int) -> tuple[Posterior, bool]:
    """The sampler of ``mcmc_posterior``: (the Posterior, whether the chains mixed)."""
    if n_chains is None:  # at least 2p + 2 chains, so that the warm-up's covariance of the chains has full rank
        floor = 2 * int(sample_prior(prior, 1, seed).shape[-1]) + 2
        n_chains = min(max(100, floor), max(4, floor, -(-n_samples // DRAWS_PER_CHAIN)))
    per_chain = -(-n_samples // n_chains)
    # the chains live in numpy float64: torch's thread pool costs more than these [W, p] products themselves
    state = sample_prior(prior, n_chains, seed).double().numpy()
    theta_ref = torch.as_tensor(state[0], dtype=torch.float32)
    generator = np.random.default_rng(seed)

    def log_density(thetas: np.ndarray) -> np.ndarray:
        value = log_posterior(estimator, x_observed, prior, torch.as_tensor(thetas, dtype=torch.float32), theta_ref)
        return np.nan_to_num(value.double().numpy(), nan=-np.inf, posinf=-np.inf)  # NaN, +inf: never accepted

    log_p = log_density(state)
    state, log_p, walk, warm_draws = _warm_up(log_density, state, log_p, warm_up, generator)
    independence = _StudentT(warm_draws.mean(axis=0), _covariance(warm_draws), STUDENT_DOF)
    steps, accepted, thinning, length = [], 0.0, 1, 2 * per_chain
    while True:
        while len(steps) < length:
            if len(steps) % 2 == 0:
                state, log_p, rate = _random_walk_step(log_density, state, log_p, walk, generator)
            else:
                state, log_p, rate = _independence_step(log_density, state, log_p, independence, generator)
            steps.append(state)
            accepted += rate
        chain = np.stack(steps, axis=1)  # [chains, steps, p]
        tau = chain.shape[0] * chain.shape[1] / max(float(effective_sample_size(chain).min()), 1.0)
        thinning = max(thinning, math.ceil(THINNING_IN_TAU * tau))
        at_limit = len(steps) >= max_steps
        k = max(1, len(steps) // per_chain) if at_limit else thinning
        if len(steps) >= per_chain * k:
            draws = chain[:, len(steps) - per_chain * k::k]
            ess, r_hat = effective_sample_size(draws), split_r_hat(draws)
            enough = ess.min() >= n_samples - ESS_NOISE * math.sqrt(n_samples)
            mixed = enough and r_hat.max() <= R_HAT_LIMIT
            if mixed or at_limit:
                break
            if not enough:  # the thinned draws still correlate: space them further
                thinning = math.ceil(1.5 * thinning)
        # grow by half at least, so that a chain still drifting leaves its start behind in the burn-in
        length = min(max_steps, max(per_chain * thinning, math.ceil(1.5 * len(steps))))
    chains = torch.as_tensor(draws, dtype=torch.float32)
    posterior = Posterior(chains.reshape(-1, chains.shape[2])[:n_samples], _names(estimator), "metropolis",
                          chains=chains, ess=torch.as_tensor(ess), r_hat=torch.as_tensor(r_hat),
                          acceptance=accepted / len(steps))
    posterior.thinning, posterior.steps = k, len(steps)
    return posterior, mixed


def _not_mixed_message(posterior: Posterior, n_samples: int, max_steps: int) -> str:
    n_chains = posterior.chains.shape[0]
    return (f"mcmc_posterior: the chains have not mixed after {posterior.steps} steps of {n_chains} chains: "
            f"largest split R-hat {float(posterior.r_hat.max()):.3f} (should be ≤ {R_HAT_LIMIT}), smallest ESS "
            f"{float(posterior.ess.min()):.0f} for the {n_samples} draws asked for. Raise max_steps (now "
            f"{max_steps}) or warm_up; an R-hat that stays high with more steps means chains stuck in separate "
            "modes: more chains (n_chains) or another sampler")


def _warm_up(log_density, state: np.ndarray, log_p: np.ndarray, steps: int, generator: np.random.Generator):
    """Adaptive random walk from the chains' start [W, p]: every WARM_UP_BLOCK steps its covariance becomes that
    of the chains over the last two blocks and its scale moves by 2·(acceptance − target) in log (a
    Robbins–Monro step: halves it within a block of no acceptance). Returns (state, log p, Cholesky factor of
    the frozen random-walk covariance [p, p], the draws of the warm-up's second half [N, p])."""
    p = state.shape[1]
    target = 0.44 if p == 1 else 0.234  # optimal random-walk acceptance (Roberts, Gelman & Gilks 1997)
    log_scale = math.log(2.38 / math.sqrt(p))  # optimal scale for a Gaussian target with that covariance
    covariance, visited = _covariance(state), [state]
    for _ in range(max(1, math.ceil(steps / WARM_UP_BLOCK))):
        walk = math.exp(log_scale) * _cholesky(covariance)
        rates = []
        for _ in range(WARM_UP_BLOCK):
            state, log_p, rate = _random_walk_step(log_density, state, log_p, walk, generator)
            visited.append(state)
            rates.append(rate)
        log_scale += 2.0 * (sum(rates) / len(rates) - target)
        covariance = _covariance(np.concatenate(visited[-2 * WARM_UP_BLOCK:]))
    walk = math.exp(log_scale) * _cholesky(covariance)
    return state, log_p, walk, np.concatenate(visited[len(visited) // 2:])


def _random_walk_step(log_density, state, log_p, walk: torch.Tensor, generator):
    """θ' = θ + L ε, ε ~ N(0, I), accepted with probability min(1, p(θ'|x)/p(θ|x)); (state, log p, rate)."""
    proposal = state + generator.standard_normal(state.shape) @ walk.T
    log_proposal = log_density(proposal)
    accept = np.log(generator.random(state.shape[0])) < log_proposal - log_p
    return np.where(accept[:, None], proposal, state), np.where(accept, log_proposal, log_p), float(accept.mean())


def _independence_step(log_density, state, log_p, proposal_distribution: _StudentT, generator):
    """θ' ~ q, accepted with probability min(1, p(θ'|x) q(θ) / (p(θ|x) q(θ'))); (state, log p, rate)."""
    proposal = proposal_distribution.sample(state.shape[0], generator)
    log_proposal = log_density(proposal)
    # q(θ) at the current state, recomputed: the random-walk steps in between have moved it
    log_q = proposal_distribution.log_prob
    log_ratio = (log_proposal - log_q(proposal)) - (log_p - log_q(state))
    accept = np.log(generator.random(state.shape[0])) < log_ratio
    return np.where(accept[:, None], proposal, state), np.where(accept, log_proposal, log_p), float(accept.mean())


class _StudentT:
    """Multivariate Student-t with ν degrees of freedom, location μ [p] and scale matrix Σ [p, p] (float64):
    θ = μ + L z √(ν/u), z ~ N(0, I), u ~ χ²_ν; log q(θ) = −(ν+p)/2 · log(1 + δᵀΣ⁻¹δ/ν) + const."""

    def __init__(self, mean: np.ndarray, covariance: np.ndarray, dof: float):
        self.mean, self.factor, self.dof = mean, _cholesky(covariance), dof
        self.whitening = np.linalg.inv(self.factor)  # L⁻¹ once: a product per step, cheaper than a solve

    def sample(self, n: int, generator: np.random.Generator) -> np.ndarray:
        z = generator.standard_normal((n, self.mean.shape[0]))
        return self.mean + (z @ self.factor.T) * np.sqrt(self.dof / generator.chisquare(self.dof, n))[:, None]

    def log_prob(self, theta: np.ndarray) -> np.ndarray:
        whitened = (theta - self.mean) @ self.whitening.T
        return -(self.dof + self.mean.shape[0]) / 2 * np.log1p((whitened ** 2).sum(axis=1) / self.dof)


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


# --- one entry point -----------------------------------------------------------------------------------------------

def sample_posterior(estimator, x_observed, prior, n_samples: int = 10_000, seed: int = 0,
                     **mcmc_options) -> Posterior:
    """``n_samples`` draws [n_samples, p] from p(θ | x_observed) with any estimator.

    An estimator with its own ``sample(x, n)`` (NPE: an amortised posterior, trained under its own prior, which
    ``prior`` does not replace) gives its draws directly, for one observation only. One with ``log_ratio`` or
    ``log_likelihood`` (the ratio family, NDE, SCANDAL, SALLY, ensembles, ``ExactLikelihood``) goes through
    ``mcmc_posterior`` (``mcmc_options``: n_chains, warm_up, max_steps), whose ``ess``, ``r_hat`` and warning
    tell whether to trust the draws.

    ``x_observed``: one observation [d] or [1, d], or n i.i.d. trials [n_trials, d], whose log-likelihoods add
    up: log p(θ | x_1…x_n) = Σ_i log p(x_i | θ) + log π(θ) + const. (``mcmc_posterior`` itself reads a 1-D
    tensor as n scalar events; here [d] is one observation, so pass scalar events as [n, 1].)

    >>> import torch, sluice
    >>> from sluice.inference import ExactLikelihood
    >>> from sluice.inference.posterior import sample_posterior
    >>> mixture = sluice.simulators.GaussianMixture()
    >>> posterior = sample_posterior(ExactLikelihood(mixture), torch.zeros(20, 2), mixture.default_prior(), 400)
    >>> posterior.samples.shape, bool(posterior.r_hat.max() <= 1.01)
    (torch.Size([400, 2]), True)
    """
    x = torch.as_tensor(x_observed, dtype=torch.float32)
    x = x[None] if x.ndim == 1 else x
    if callable(getattr(estimator, "sample", None)):
        if x.shape[0] != 1:
            raise ValueError(f"{type(estimator).__name__} estimates the posterior of one observation; it cannot "
                             f"combine {x.shape[0]} trials. Use a likelihood or likelihood-ratio estimator")
        if "seed" in inspect.signature(estimator.sample).parameters:
            draws = estimator.sample(x[0], n_samples, seed=seed)
        else:
            with seeded_global_generator(seed):
                draws = estimator.sample(x[0], n_samples)
        return Posterior(torch.as_tensor(draws, dtype=torch.float32).reshape(n_samples, -1), _names(estimator),
                         f"{type(estimator).__name__}.sample")
    if not hasattr(estimator, "log_ratio"):
        if not hasattr(estimator, "log_likelihood"):
            raise TypeError(f"{type(estimator).__name__} has none of sample, log_ratio and log_likelihood")
        estimator = _RatioOfLikelihoods(estimator)
    return mcmc_posterior(estimator, x, prior, n_samples, seed=seed, **mcmc_options)


class _RatioOfLikelihoods:
    """log r(x|θ0,θ1) = log p(x|θ0) − log p(x|θ1) for an estimator that gives ``log_likelihood`` only."""

    def __init__(self, estimator):
        self.estimator = estimator
        self.parameter_names_ = _names(estimator)

    def log_ratio(self, x, theta0, theta1) -> torch.Tensor:
        return self.estimator.log_likelihood(x, theta0) - self.estimator.log_likelihood(x, theta1)


def variational_posterior(estimator, x_observed, prior: BoxUniform, steps: int = 800, n_draws: int = 128,
                          n_samples: int = 10_000, learning_rate: float = 1e-2, seed: int = 0) -> Posterior:
    """A normalising flow q(θ) fit by reverse KL, E_q[log q(θ) − log p̂(x|θ) − log π(θ)], with the
    reparameterisation gradient. The flow lives on R^p and a logistic map carries it into the prior's box."""
    import zuko

    if not isinstance(prior, BoxUniform):
        raise ValueError("variational_posterior needs a BoxUniform prior")
    low, width = prior.low, prior.high - prior.low
    theta_ref = low + width / 2
    with seeded_global_generator(seed):
        flow = zuko.flows.NSF(features=low.numel(), context=0, transforms=3, hidden_features=(64, 64),
                              activation=torch.nn.ELU)
        optimizer = torch.optim.Adam(flow.parameters(), lr=learning_rate)
        for _ in range(steps):
            u, log_q_u = flow().rsample_and_log_prob((n_draws,))
            theta = low + width * torch.sigmoid(u)
            log_jacobian = (torch.log(width) + torch.nn.functional.logsigmoid(u) +
                            torch.nn.functional.logsigmoid(-u)).sum(dim=1)
            target = log_posterior(estimator, x_observed, prior, theta, theta_ref, differentiable=True)
            loss = (log_q_u - log_jacobian - target).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            samples = low + width * torch.sigmoid(flow().sample((n_samples,)))
    return Posterior(samples, _names(estimator), "variational")
