"""The sbibm benchmark tasks whose joint density is known, as sluice simulators, and a reader of sbibm's reference data.

sbibm (Lueckmann et al., "Benchmarking simulation-based inference", AISTATS 2021) is the field's yardstick. Six
of its tasks can be "opened": every random choice of a run can be recorded, and log p(x, z | θ) written down, so
that sluice's augmented methods run on them. The constants are those of sbibm 1.1.0; docs/sbibm.md gives each
task's formula, prior, latent and why.

| sbibm task | class | θ | x | latent z | exact log p(x \\| θ) |
|---|---|---|---|---|---|
| ``gaussian_linear`` | ``SbibmGaussianLinear`` | 10 | 10 | none | yes, and the posterior |
| ``gaussian_linear_uniform`` | ``SbibmGaussianLinearUniform`` | 10 | 10 | none | yes |
| ``slcp`` | ``SbibmSLCP`` | 5 | 8 | none | yes |
| ``gaussian_mixture`` | ``SbibmGaussianMixture`` | 2 | 2 | the component | yes |
| ``bernoulli_glm`` | ``SbibmBernoulliGLM`` | 10 | 10 | the 100 responses | up to a θ-free constant |
| ``two_moons`` | ``SbibmTwoMoons`` | 2 | 2 | none (x ↔ (a, r) given θ) | yes |

Where no latent is natural (x is one Gaussian draw, or an invertible function of the draws given θ) z is the empty
dict and ``joint_log_prob`` is the exact log p(x | θ). Densities are computed in float64 and returned in θ's dtype;
x is float32.

``load_reference(task, observation)`` (from ``sbibm_reference``) reads sbibm's observations, reference posterior
samples and true parameters from the sbibm 1.1.0 wheel (a zip archive; sbibm itself is not imported).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.distributions import MultivariateNormal

from .base import Simulator, as_theta_batch
from .priors import BoxUniform
from .sbibm_reference import WHEEL_ENVIRONMENT_VARIABLE, load_reference

__all__ = ["SbibmGaussianLinear", "SbibmGaussianLinearUniform", "SbibmSLCP", "SbibmGaussianMixture",
           "SbibmBernoulliGLM", "SbibmTwoMoons", "SBIBM_SIMULATORS", "load_reference", "WHEEL_ENVIRONMENT_VARIABLE"]

LOG_2PI = math.log(2.0 * math.pi)


def _check_x(simulator: Simulator, x, dimension: int) -> torch.Tensor:
    """``x`` as a tensor after checking it is ``[n, dimension]``; otherwise a ValueError naming the simulator."""
    x = torch.as_tensor(x)
    if x.ndim != 2 or x.shape[1] != dimension:
        raise ValueError(f"{simulator.name}: x must have shape [n, {dimension}], got {list(x.shape)}")
    return x


def _float64(simulator: Simulator, x, dimension: int, theta) -> tuple[torch.Tensor, torch.Tensor, torch.dtype]:
    """x (checked) and θ (broadcast to x's rows) in float64, and θ's own dtype, in which results are returned."""
    x = _check_x(simulator, x, dimension)
    theta = as_theta_batch(theta, x.shape[0], simulator.n_parameters)
    return x.to(torch.float64), theta.to(torch.float64), theta.dtype


def _log_normal(value: torch.Tensor, mean, variance: float) -> torch.Tensor:
    """log N(value; mean, variance) elementwise."""
    return -0.5 * (value - mean) ** 2 / variance - 0.5 * math.log(variance) - 0.5 * LOG_2PI


class _SbibmTask(Simulator):
    """What the sbibm tasks share: ``task_name``, sbibm's name of the task (for ``load_reference``)."""

    task_name: str = ""
    default_batch_size = 100_000

    def _theta_batch(self, theta) -> torch.Tensor:
        """θ as float32 ``[n, p]`` for ``sample`` (a [p] vector is one run)."""
        return as_theta_batch(theta, None, self.n_parameters).to(torch.float32)


class SbibmGaussianLinear(_SbibmTask):
    """sbibm's ``gaussian_linear``: θ ∈ R¹⁰ with prior N(0, 0.1 I), and

        x | θ ~ N(θ, 0.1 I),      x ∈ R¹⁰,

    (sbibm's ``prior_scale`` and ``simulator_scale`` of 0.1 are variances: it inverts 0.1 I into the precision).
    No latent: x is one Gaussian draw, so z = {} and log p(x, z | θ) = log p(x | θ) = Σ_j log N(x_j; θ_j, 0.1).
    Both prior and likelihood are Gaussian, so ``posterior(x_o)`` is exact: N(x_o/2, 0.05 I).
    """

    task_name = "gaussian_linear"
    parameter_names = tuple(f"theta_{j}" for j in range(1, 11))
    dimension = 10
    prior_variance = 0.1
    noise_variance = 0.1

    def default_prior(self) -> MultivariateNormal:
        """N(0, 0.1 I₁₀) (torch's MultivariateNormal serves as the prior: sample, log_prob and support as sluice's)."""
        return MultivariateNormal(torch.zeros(self.dimension), covariance_matrix=self.prior_variance
                                  * torch.eye(self.dimension))

    def sample(self, theta, generator=None):
        theta = self._theta_batch(theta)
        noise = torch.randn(theta.shape, generator=generator)
        return theta + math.sqrt(self.noise_variance) * noise, {}

    def joint_log_prob(self, x, z, theta):
        return self.log_likelihood(x, theta)

    def log_likelihood(self, x, theta):
        x64, theta64, dtype = _float64(self, x, self.dimension, theta)
        return _log_normal(x64, theta64, self.noise_variance).sum(dim=1).to(dtype)

    def posterior(self, x_o) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact posterior N(μ, Σ) given one observation ``x_o`` ([d] or [1, d]): float64 mean [p] and
        covariance [p, p],

            Σ = (Σ₀⁻¹ + Σₓ⁻¹)⁻¹,      μ = Σ Σₓ⁻¹ x_o      (prior mean 0),

        here Σ = 0.05 I and μ = x_o / 2. Only for this task's own Gaussian prior (not the uniform variant)."""
        x_o = torch.as_tensor(x_o, dtype=torch.float64)
        if x_o.ndim == 2 and x_o.shape[0] == 1:
            x_o = x_o[0]
        if x_o.shape != (self.dimension,):
            raise ValueError(f"{self.name}.posterior: x_o must have shape [{self.dimension}] or [1, {self.dimension}], "
                             f"got {list(x_o.shape)}")
        variance = 1.0 / (1.0 / self.prior_variance + 1.0 / self.noise_variance)
        mean = variance / self.noise_variance * x_o
        return mean, variance * torch.eye(self.dimension, dtype=torch.float64)


class SbibmGaussianLinearUniform(SbibmGaussianLinear):
    """sbibm's ``gaussian_linear_uniform``: as ``gaussian_linear`` (x | θ ~ N(θ, 0.1 I), no latent) with the prior
    U(−1, 1)¹⁰. Its posterior is N(x_o, 0.1 I) truncated to the box, so ``posterior`` is not offered."""

    task_name = "gaussian_linear_uniform"

    def default_prior(self) -> BoxUniform:
        """U(−1, 1)¹⁰."""
        return BoxUniform(low=[-1.0] * self.dimension, high=[1.0] * self.dimension)

    def posterior(self, x_o):
        raise NotImplementedError(f"{self.name}: the posterior is a truncated Gaussian; only gaussian_linear's "
                                  "Gaussian prior gives the closed form")


class SbibmSLCP(_SbibmTask):
    """sbibm's ``slcp`` ("simple likelihood, complex posterior"): θ ∈ R⁵ with prior U(−3, 3)⁵, and x ∈ R⁸ as four
    independent draws x_k ~ N(m, S), stored (x_1, x_2, …) with x_k = (x[2k−2], x[2k−1]):

        m = (θ₁, θ₂),   s₁ = θ₃²,  s₂ = θ₄²,  ρ = tanh θ₅,
        S = [[s₁², ρ s₁ s₂], [ρ s₁ s₂, s₂²]] + 10⁻⁶ I      (sbibm's ε keeps S positive definite at θ₃ or θ₄ = 0).

    No latent: z = {} and log p(x, z | θ) = log p(x | θ) = Σ_k log N(x_k; m, S). (Not the same task as sluice's
    suite ``SLCP``, which adds a shared latent offset and narrows the prior.)
    """

    task_name = "slcp"
    parameter_names = tuple(f"theta_{j}" for j in range(1, 6))
    n_draws = 4
    jitter = 1e-6

    def default_prior(self) -> BoxUniform:
        """U(−3, 3)⁵."""
        return BoxUniform(low=[-3.0] * 5, high=[3.0] * 5)

    def _scale_tril(self, theta: torch.Tensor) -> torch.Tensor:
        """The Cholesky factor L of S, ``[n, 2, 2]``, in closed form: L₁₁ = √S₁₁, L₂₁ = S₁₂/L₁₁,
        L₂₂ = √(S₂₂ − L₂₁²)."""
        s1, s2, rho = theta[:, 2] ** 2, theta[:, 3] ** 2, torch.tanh(theta[:, 4])
        l11 = torch.sqrt(s1**2 + self.jitter)
        l21 = rho * s1 * s2 / l11
        l22 = torch.sqrt(s2**2 + self.jitter - l21**2)
        zero = torch.zeros_like(l11)
        return torch.stack([torch.stack([l11, zero], dim=1), torch.stack([l21, l22], dim=1)], dim=1)

    def sample(self, theta, generator=None):
        theta = self._theta_batch(theta)
        n = theta.shape[0]
        scale_tril = self._scale_tril(theta.to(torch.float64))
        noise = torch.randn(n, self.n_draws, 2, generator=generator, dtype=torch.float64)
        draws = theta[:, None, :2].to(torch.float64) + torch.einsum("nij,nkj->nki", scale_tril, noise)
        return draws.reshape(n, 2 * self.n_draws).to(torch.float32), {}

    def joint_log_prob(self, x, z, theta):
        return self.log_likelihood(x, theta)

    def log_likelihood(self, x, theta):
        x64, theta64, dtype = _float64(self, x, 2 * self.n_draws, theta)
        draws = x64.reshape(-1, self.n_draws, 2)
        gaussian = MultivariateNormal(theta64[:, None, :2], scale_tril=self._scale_tril(theta64)[:, None])
        return gaussian.log_prob(draws).sum(dim=1).to(dtype)


class SbibmGaussianMixture(_SbibmTask):
    """sbibm's ``gaussian_mixture``: θ ∈ R² with prior U(−10, 10)², and a latent component k ∈ {0, 1}:

        k ~ Bernoulli(½),      x | k ~ N(θ, σ_k² I),      σ₀ = 1, σ₁ = 0.1,

    z = ``{"component": k}`` (int64); log p(x, z | θ) = log ½ + log N(x; θ, σ_k² I), and the exact
    log p(x | θ) = logsumexp_k of the same.
    """

    task_name = "gaussian_mixture"
    parameter_names = ("theta_1", "theta_2")
    widths = (1.0, 0.1)

    def default_prior(self) -> BoxUniform:
        """U(−10, 10)²."""
        return BoxUniform(low=[-10.0, -10.0], high=[10.0, 10.0])

    def _log_joint_per_component(self, x, theta) -> tuple[torch.Tensor, torch.dtype]:
        """log ½ + log N(x; θ, σ_k² I) for both k: ``[n, 2]`` in float64, and θ's dtype."""
        x64, theta64, dtype = _float64(self, x, 2, theta)
        per_component = [_log_normal(x64, theta64, width**2).sum(dim=1) for width in self.widths]
        return torch.stack(per_component, dim=1) + math.log(0.5), dtype

    def sample(self, theta, generator=None):
        theta = self._theta_batch(theta)
        component = (torch.rand(theta.shape[0], generator=generator) < 0.5).long()
        widths = torch.tensor(self.widths)[component]
        return theta + widths[:, None] * torch.randn(theta.shape, generator=generator), {"component": component}

    def joint_log_prob(self, x, z, theta):
        per_component, dtype = self._log_joint_per_component(x, theta)
        component = torch.as_tensor(z["component"]).long()
        if not bool(((component == 0) | (component == 1)).all()):
            raise ValueError(f"{self.name}: z['component'] must hold 0 or 1")
        return per_component.gather(1, component[:, None])[:, 0].to(dtype)

    def log_likelihood(self, x, theta):
        per_component, dtype = self._log_joint_per_component(x, theta)
        return torch.logsumexp(per_component, dim=1).to(dtype)


def _bernoulli_glm_design_matrix() -> torch.Tensor:
    """sbibm's design matrix X ``[100, 10]`` (float64 of its float32 entries): a column of ones (the offset), then
    the stimulus I delayed by 0 … 8 steps, X[t, 1 + ℓ] = I[t − ℓ] for t ≥ ℓ and 0 before.

    The stimulus is sbibm's white noise: 100 draws of numpy's legacy ``RandomState(42).randn``, cast to float32.
    The legacy generator's stream is frozen by numpy's compatibility policy, so the matrix is rebuilt here exactly
    (tests compare it with the wheel's stored ``design_matrix.pt`` where the wheel is at hand)."""
    n_bins, n_lags = SbibmBernoulliGLM.n_bins, SbibmBernoulliGLM.n_lags
    stimulus = np.random.RandomState(42).randn(n_bins).astype(np.float32)
    design = np.zeros((n_bins, 1 + n_lags), dtype=np.float32)
    design[:, 0] = 1.0
    for lag in range(n_lags):
        design[lag:, 1 + lag] = stimulus[: n_bins - lag]
    return torch.from_numpy(design).to(torch.float64)


def _bernoulli_glm_prior_precision() -> torch.Tensor:
    """sbibm's prior precision B⁻¹ ``[10, 10]`` (float64): ½ for the offset β₀; FᵀF for the filter h ∈ R⁹, with
    D the first-difference matrix (1 on the diagonal, −1 below it) and F = D² + diag(√(j/9)), j = 0 … 8: a
    penalty on second differences of h (smoothness) plus a ridge that grows with the lag."""
    m = SbibmBernoulliGLM.n_lags
    difference = torch.eye(m, dtype=torch.float64) - torch.diag(torch.ones(m - 1, dtype=torch.float64), -1)
    f = difference @ difference + torch.diag(torch.sqrt(torch.arange(m, dtype=torch.float64) / m))
    precision = torch.zeros(m + 1, m + 1, dtype=torch.float64)
    precision[0, 0] = 0.5
    precision[1:, 1:] = f.T @ f
    return precision


class SbibmBernoulliGLM(_SbibmTask):
    """sbibm's ``bernoulli_glm``: a neuron's spikes y ∈ {0, 1}¹⁰⁰ in 100 time bins from a logistic GLM with
    θ = (β₀, h₁ … h₉) (offset and a 9-step stimulus filter),

        ψ = X θ,      y_t ~ Bernoulli(σ(ψ_t)) independently,      x = Xᵀ y ∈ R¹⁰,

    X the fixed design matrix [100, 10] (a column of ones, then the stimulus delayed by 0 … 8 steps;
    ``design_matrix``). x is sbibm's summary: the spike count Σ_t y_t and the spike-triggered sums
    Σ_t y_t I_{t−ℓ}, ℓ = 0 … 8, which sbibm computes as a convolution and which equal Xᵀy. Prior: N(0, B) with
    the smoothness precision B⁻¹ of ``prior_precision``.

    z = ``{"spikes": y [n, 100]}`` (float32 0/1). x is a deterministic function of z, so
    p(x, z | θ) = p(y | θ) δ(x − Xᵀy) and ``joint_log_prob`` returns

        log p(y | θ) = Σ_t [y_t ψ_t − log(1 + e^{ψ_t})] = θᵀx − Σ_t log(1 + e^{ψ_t}),

    after checking that x = Xᵀy (to float32 rounding); x and z from different runs are a ValueError, not a
    density of −∞, since they never come from the simulator together.

    The second form shows that x is a sufficient statistic: log p(x | θ) = θᵀx − Σ_t log(1 + e^{ψ_t}) + log N(x),
    N(x) the number of spike trains with Xᵀy = x, which does not depend on θ (and is 1 for a generic real
    stimulus). So the joint ratio and joint score equal the exact ones; ``unnormalised_log_likelihood`` gives
    log p(x | θ) − log N(x). ``log_likelihood`` itself is not offered: N(x) is not tractable.
    """

    task_name = "bernoulli_glm"
    parameter_names = ("beta_0",) + tuple(f"h_{j}" for j in range(1, 10))
    n_bins = 100
    n_lags = 9
    dimension = 10

    def __init__(self):
        self.design_matrix = _bernoulli_glm_design_matrix()  # [100, 10], float64
        self.prior_precision = _bernoulli_glm_prior_precision()  # [10, 10], float64

    def default_prior(self) -> MultivariateNormal:
        """N(0, B), B⁻¹ = ``prior_precision`` (a torch MultivariateNormal, in float32 like sbibm's)."""
        return MultivariateNormal(torch.zeros(self.dimension), precision_matrix=self.prior_precision.float())

    def summary(self, spikes) -> torch.Tensor:
        """x = Xᵀy ``[n, 10]`` (float64) of spike trains ``spikes`` [n, 100]."""
        return torch.as_tensor(spikes).to(torch.float64) @ self.design_matrix

    def sample(self, theta, generator=None):
        theta = self._theta_batch(theta)
        rate = torch.sigmoid(theta.to(torch.float64) @ self.design_matrix.T)
        spikes = (torch.rand(rate.shape, generator=generator, dtype=torch.float64) < rate).to(torch.float32)
        return self.summary(spikes).to(torch.float32), {"spikes": spikes}

    def _log_partition(self, theta64: torch.Tensor) -> torch.Tensor:
        """A(θ) = Σ_t log(1 + e^{ψ_t}) ``[n]``."""
        return torch.nn.functional.softplus(theta64 @ self.design_matrix.T).sum(dim=1)

    def joint_log_prob(self, x, z, theta):
        x64, theta64, dtype = _float64(self, x, self.dimension, theta)
        spikes = torch.as_tensor(z["spikes"]).to(torch.float64)
        if spikes.shape != (x64.shape[0], self.n_bins) or not bool(((spikes == 0) | (spikes == 1)).all()):
            raise ValueError(f"{self.name}: z['spikes'] must be [n, {self.n_bins}] of 0/1, got "
                             f"{list(spikes.shape)}")
        summary = self.summary(spikes)
        # x is stored in float32: allow its rounding (|x| ≤ 100 here, float32 keeps 7 digits)
        mismatch = (x64 - summary).abs() > 1e-4 * (1.0 + summary.abs())
        if bool(mismatch.any()):
            rows = int(mismatch.any(dim=1).sum())
            raise ValueError(f"{self.name}: x is not the summary Xᵀy of z['spikes'] in {rows} row(s): x and z come "
                             "from different runs")
        return ((theta64 * summary).sum(dim=1) - self._log_partition(theta64)).to(dtype)

    def unnormalised_log_likelihood(self, x, theta) -> torch.Tensor:
        """log p(x | θ) − log N(x) = θᵀx − Σ_t log(1 + e^{ψ_t}) ``[n]``: exact up to a θ-free term, which is all
        that ratios, scores and posteriors need."""
        x64, theta64, dtype = _float64(self, x, self.dimension, theta)
        return ((theta64 * x64).sum(dim=1) - self._log_partition(theta64)).to(dtype)


class SbibmTwoMoons(_SbibmTask):
    """sbibm's ``two_moons``: θ ∈ R² with prior U(−1, 1)², latents a ~ U(−π/2, π/2) and r ~ N(0.1, 0.01²), and

        x = (r cos a + 0.25, r sin a) + (−|θ₁ + θ₂|/√2, (−θ₁ + θ₂)/√2).

    Given θ, x is an invertible function of (a, r): with (u, v) = x − (0.25 − |θ₁ + θ₂|/√2, (−θ₁ + θ₂)/√2),
    r = sign(u) √(u² + v²) (cos a > 0, so u has the sign of r) and a = atan(v/u). A change of variables, with
    Jacobian |∂(u, v)/∂(a, r)| = |r|, gives the exact

        log p(x | θ) = log N(r; 0.1, 0.01²) − log π − log |r|.

    (sbibm's own ``_likelihood`` keeps only the first term, enough for its reference posterior at a fixed x but not
    a normalised density; the −log |r| term depends on θ through r.) z = {}: recording (a, r) would make
    p(x | z, θ) a point mass, and nothing is lost without them, since (x, θ) give them back; so
    log p(x, z | θ) = log p(x | θ).
    """

    task_name = "two_moons"
    parameter_names = ("theta_1", "theta_2")
    radius_mean, radius_sd = 0.1, 0.01
    base_offset = 0.25

    def default_prior(self) -> BoxUniform:
        """U(−1, 1)²."""
        return BoxUniform(low=[-1.0, -1.0], high=[1.0, 1.0])

    def _shift(self, theta: torch.Tensor) -> torch.Tensor:
        """The θ-dependent shift (0.25 − |θ₁ + θ₂|/√2, (−θ₁ + θ₂)/√2) ``[n, 2]``, 0.25 included."""
        first = self.base_offset - torch.abs(theta[:, 0] + theta[:, 1]) / math.sqrt(2.0)
        return torch.stack([first, (theta[:, 1] - theta[:, 0]) / math.sqrt(2.0)], dim=1)

    def sample(self, theta, generator=None):
        theta = self._theta_batch(theta)
        n = theta.shape[0]
        angle = math.pi * (torch.rand(n, generator=generator, dtype=torch.float64) - 0.5)
        radius = self.radius_mean + self.radius_sd * torch.randn(n, generator=generator, dtype=torch.float64)
        moon = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
        return (moon + self._shift(theta.to(torch.float64))).to(torch.float32), {}

    def joint_log_prob(self, x, z, theta):
        return self.log_likelihood(x, theta)

    def log_likelihood(self, x, theta):
        x64, theta64, dtype = _float64(self, x, 2, theta)
        centred = x64 - self._shift(theta64)
        distance = torch.sqrt((centred**2).sum(dim=1))
        radius = torch.where(centred[:, 0] >= 0, distance, -distance)
        log_p = _log_normal(radius, self.radius_mean, self.radius_sd**2) - math.log(math.pi) - torch.log(distance)
        return log_p.to(dtype)


# the six sbibm tasks by sbibm's names
SBIBM_SIMULATORS = {cls.task_name: cls for cls in (SbibmGaussianLinear, SbibmGaussianLinearUniform, SbibmSLCP,
                                                     SbibmGaussianMixture, SbibmBernoulliGLM, SbibmTwoMoons)}
