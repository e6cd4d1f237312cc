"""Posteriors from a prior and the surrogate likelihood of N events: exact on a grid, emcee, or a flow by
variational inference. log p(θ|x) = Σ_i log r̂(x_i|θ, θ_ref) + log π(θ) + const."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..seeding import seeded_global_generator
from ..simulators.priors import BoxUniform, outside_support, sample_prior
from .evaluate import summed_log_ratio

__all__ = ["Posterior", "grid_posterior", "mcmc_posterior", "variational_posterior", "log_posterior"]


@dataclass
class Posterior:
    """``samples`` [S, p] from p(θ | x) and how they were drawn."""

    samples: torch.Tensor
    parameter_names: tuple
    method: str

    def mean(self) -> torch.Tensor:
        return self.samples.mean(dim=0)

    def to_arviz(self):
        """An ``arviz.InferenceData`` (needs the optional ``arviz`` package)."""
        try:
            import arviz
        except ImportError:
            raise ImportError("to_arviz needs arviz: pip install 'sluice-sbi[arviz]'") from None
        names = self.parameter_names or tuple(f"theta_{j}" for j in range(self.samples.shape[1]))
        return arviz.from_dict(posterior={name: self.samples[None, :, j].numpy() for j, name in enumerate(names)})


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


def mcmc_posterior(estimator, x_observed, prior, n_samples: int = 10_000, n_walkers: int = 32,
                   burn_in: int = 500, seed: int = 0) -> Posterior:
    """emcee's affine-invariant ensemble sampler; all walkers are evaluated in one batched call per step."""
    import emcee

    start = sample_prior(prior, n_walkers, seed)
    theta_ref = start[0]

    def log_density(walkers: np.ndarray) -> np.ndarray:
        thetas = torch.as_tensor(walkers, dtype=torch.float32)
        return log_posterior(estimator, x_observed, prior, thetas, theta_ref).double().numpy()

    sampler = emcee.EnsembleSampler(n_walkers, start.shape[1], log_density, vectorize=True)
    sampler.random_state = np.random.RandomState(seed).get_state()  # emcee's moves, reproducible
    steps = burn_in + int(np.ceil(n_samples / n_walkers))
    sampler.run_mcmc(start.double().numpy(), steps, progress=False)
    chain = sampler.get_chain(discard=burn_in, flat=True)[-n_samples:]
    posterior = Posterior(torch.as_tensor(chain, dtype=torch.float32), _names(estimator), "emcee")
    posterior.acceptance = float(np.mean(sampler.acceptance_fraction))
    return posterior


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
