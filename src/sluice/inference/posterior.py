"""Posteriors from a prior and the surrogate likelihood of N events: exact on a grid, Metropolis–Hastings chains
(run by ``mcmc``, which crosses between separated modes, with the convergence diagnostics of ``convergence``), or a
flow by variational inference; and ``sample_posterior``, posterior draws from any estimator.
log p(θ|x) = Σ_i log r̂(x_i|θ, θ_ref) + log π(θ) + const."""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..seeding import seeded_global_generator
from ..simulators.priors import BoxUniform, outside_support, sample_prior
from .convergence import effective_sample_size, split_r_hat
from .evaluate import summed_log_ratio
from .mcmc import INITIAL_DRAWS, MAX_COMPONENTS, R_HAT_LIMIT, run_metropolis

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
# The chains themselves (start, warm-up, kernels, stopping rule) are ``mcmc.run_metropolis``, which sees only a log
# density; here the estimator becomes that density and the chains a Posterior.

DRAWS_PER_CHAIN = 100  # the default n_chains leaves each chain about this many draws: enough for R-hat and ESS
# chains in the warm-up (the n_chains that go on are picked from them): the mixture fitted to the warm-up needs
# draws from many chains to see every mode; the default n_chains for 10⁴ draws, so it costs those nothing
WARM_UP_CHAINS = 100


def mcmc_posterior(estimator, x_observed, prior, n_samples: int = 10_000, n_chains: int | None = None,
                   warm_up: int = 500, max_steps: int = 10_000, seed: int = 0, initialisation: str = "tempered",
                   max_components: int = MAX_COMPONENTS, initial_draws: int = INITIAL_DRAWS,
                   warm_up_chains: int | None = None) -> Posterior:
    """Draws from p(θ|x) ∝ Π_i r̂(x_i|θ, θ_ref) π(θ) by Metropolis–Hastings, thinned to nearly independent
    draws, with per-parameter diagnostics and a UserWarning when the chains have not mixed. Built to cross between
    separated modes (``sluice.inference.mcmc`` has the details):

    - start: log p(θ|x) on ``initial_draws`` prior draws (default 10⁴), resampled with weights L(θ)^β, the
      likelihood tempered (β ≤ 1) to keep 2 effective draws per chain, so that every mode the prior's draws come
      near gets chains (``initialisation="prior"``: the first prior draws instead, as before);
    - warm-up: ``warm_up_chains`` chains (default max(n_chains, 100)) for at most ``warm_up`` steps: a Gaussian
      random walk, its scale tuned towards the acceptance rate optimal for a random walk (0.234; 0.44 for one
      parameter); from step 100 on, also an independence proposal, a mixture of Student-t (5 degrees of
      freedom) fitted by EM to the chains' draws, with at most ``max_components`` components (chosen by BIC; 1: a
      single Student-t and a warm-up of ``warm_up`` random-walk steps, as before). The warm-up ends early once a
      mixture fitted after step 200 accepts half of its proposals;
    - sampling: ``n_chains`` of those chains, picked at random (default ⌈n_samples/100⌉ within [4, 100]: about
      100 draws per chain, which R-hat needs; but at least 2p + 2 for p parameters); both proposals frozen, two
      kernels alternate, each leaving p(θ|x) invariant: the random walk (with the mixture's pooled
      within-component covariance) and the mixture independence proposal, which jumps between modes with the
      Metropolis–Hastings acceptance min(1, p(θ'|x) q(θ) / (p(θ|x) q(θ'))).

    The chains grow in rounds (1.5 to 3 times longer) until their last m·k steps, thinned by k = 2τ̂ (τ̂ =
    chain draws / ESS over the second half of the steps so far; raised by half after a check that finds too few
    effective draws)
    to m = ⌈n_samples/n_chains⌉ draws per chain, give every parameter a bulk ESS ≥ n_samples (less the
    estimate's noise, 7.5 √n_samples) and a split R-hat ≤ 1.01, or until ``max_steps`` steps (then a
    UserWarning); steps before those kept are burn-in. Chains stuck in separate modes keep R-hat high and so
    warn; a mode that no prior draw comes near is missed by every chain alike, which no diagnostic can see.

    ``x_observed``: the events [n, d] (or [n] scalar events) whose log r̂ are summed. Returns a Posterior:
    ``samples`` [n_samples, p]; ``chains`` [n_chains, m, p] (the thinned draws, chain by chain); ``ess`` and
    ``r_hat`` [p] of those draws (rank-normalised bulk ESS and split R-hat, ArviZ's defaults); ``acceptance``
    (mean over steps after warm-up), ``thinning`` k, ``steps`` (after warm-up) and ``mixture_components`` (of
    the independence proposal).
    """
    # one torch thread: each step evaluates the estimator on a few dozen θ, where a thread pool costs more than it
    # saves, and on a busy machine much more (the caller's setting is restored)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        posterior, mixed = _metropolis(estimator, x_observed, prior, n_samples, n_chains, warm_up, max_steps, seed,
                                       initialisation, max_components, initial_draws, warm_up_chains)
    finally:
        torch.set_num_threads(previous)
    if not mixed:
        warnings.warn(_not_mixed_message(posterior, n_samples, max_steps), UserWarning, stacklevel=2)
    return posterior


def _metropolis(estimator, x_observed, prior, n_samples: int, n_chains: int | None, warm_up: int, max_steps: int,
                seed: int, initialisation: str, max_components: int, initial_draws: int,
                warm_up_chains: int | None) -> tuple[Posterior, bool]:
    """The sampler of ``mcmc_posterior``: (the Posterior, whether the chains mixed)."""
    if n_chains is None:  # at least 2p + 2 chains, so that the warm-up's covariance of the chains has full rank
        floor = 2 * int(sample_prior(prior, 1, seed).shape[-1]) + 2
        n_chains = min(max(100, floor), max(4, floor, -(-n_samples // DRAWS_PER_CHAIN)))
    warm_up_chains = max(n_chains, WARM_UP_CHAINS if warm_up_chains is None else warm_up_chains)
    draws = sample_prior(prior, warm_up_chains if initialisation == "prior" else max(initial_draws, warm_up_chains),
                         seed)
    theta_ref = draws[0]

    # the chains live in numpy float64: torch's thread pool costs more than these [W, p] products themselves
    def log_density(thetas: np.ndarray) -> np.ndarray:
        value = log_posterior(estimator, x_observed, prior, torch.as_tensor(thetas, dtype=torch.float32), theta_ref)
        return np.nan_to_num(value.double().numpy(), nan=-np.inf, posinf=-np.inf)  # NaN, +inf: never accepted

    log_prior = prior.log_prob(draws).double().numpy()
    run = run_metropolis(log_density, draws.double().numpy(), log_prior, n_samples, n_chains, warm_up, max_steps,
                         seed, initialisation, max_components, warm_up_chains)
    chains = torch.as_tensor(run.draws, dtype=torch.float32)
    posterior = Posterior(chains.reshape(-1, chains.shape[2])[:n_samples], _names(estimator), "metropolis",
                          chains=chains, ess=torch.as_tensor(run.ess), r_hat=torch.as_tensor(run.r_hat),
                          acceptance=run.acceptance)
    posterior.thinning, posterior.steps = run.thinning, run.steps
    posterior.mixture_components = int(run.proposal.weights.shape[0])
    return posterior, run.mixed


def _not_mixed_message(posterior: Posterior, n_samples: int, max_steps: int) -> str:
    n_chains = posterior.chains.shape[0]
    return (f"mcmc_posterior: the chains have not mixed after {posterior.steps} steps of {n_chains} chains: "
            f"largest split R-hat {float(posterior.r_hat.max()):.3f} (should be ≤ {R_HAT_LIMIT}), smallest ESS "
            f"{float(posterior.ess.min()):.0f} for the {n_samples} draws asked for. Raise max_steps (now "
            f"{max_steps}) or warm_up; an R-hat that stays high with more steps means chains stuck in separate "
            "modes that the mixture proposal does not cover: raise max_components or warm_up_chains, or use another "
            "sampler")


# --- one entry point -----------------------------------------------------------------------------------------------

def sample_posterior(estimator, x_observed, prior, n_samples: int = 10_000, seed: int = 0,
                     **mcmc_options) -> Posterior:
    """``n_samples`` draws [n_samples, p] from p(θ | x_observed) with any estimator.

    An estimator with its own ``sample(x, n)`` (NPE: an amortised posterior, trained under its own prior, which
    ``prior`` does not replace) gives its draws directly, for one observation only. One with ``log_ratio`` or
    ``log_likelihood`` (the ratio family, NDE, SCANDAL, SALLY, ensembles, ``ExactLikelihood``) goes through
    ``mcmc_posterior`` (``mcmc_options``: n_chains, warm_up, max_steps, initialisation, max_components,
    initial_draws, warm_up_chains), whose ``ess``, ``r_hat`` and warning tell whether to trust the draws.

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
