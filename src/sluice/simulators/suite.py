"""Six benchmark simulators with an exact log p(x | θ), each chosen to break likelihood(-ratio) estimators its own way.

Together with GaltonBoard, GaussianMixture and HierarchicalGaussian they form the benchmark task suite
(docs/tasks.md): heavy tails (``StudentT``), a few informative directions hidden in 20 dimensions
(``RotatedLinear``), discrete overdispersed counts (``OverdispersedCounts``), a θ-dependent support with x
nearly deterministic given z (``UniformWidth``), a latent that sets the shape of p(x | θ) (``GammaShapeMixture``)
and a multimodal posterior (``SLCP``). Every one returns x as float32 and a dict z of the latent draws;
``joint_log_prob`` is the full log p(x, z | θ), θ-free terms included, and both it and ``log_likelihood`` are
computed in float64 and returned in θ's dtype.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Gamma, MultivariateNormal, NegativeBinomial, Normal, Poisson
from torch.distributions import StudentT as StudentTDistribution

from .base import Simulator, as_theta_batch
from .priors import BoxUniform

__all__ = ["StudentT", "RotatedLinear", "OverdispersedCounts", "UniformWidth", "GammaShapeMixture", "SLCP",
           "SUITE_SIMULATORS"]


def _check_x(simulator: Simulator, x, dimension: int) -> torch.Tensor:
    """``x`` as a tensor after checking it is ``[n, dimension]``; otherwise a ValueError naming the simulator."""
    x = torch.as_tensor(x)
    if x.ndim != 2 or x.shape[1] != dimension:
        raise ValueError(f"{simulator.name}: x must have shape [n, {dimension}], got {list(x.shape)}")
    return x


def _float64(x: torch.Tensor, theta, n_parameters: int) -> tuple[torch.Tensor, torch.Tensor, torch.dtype]:
    """x and θ (broadcast to x's rows) in float64, and θ's own dtype, in which the result is returned: sums of
    many log-density terms lose digits in float32."""
    theta = as_theta_batch(theta, x.shape[0], n_parameters)
    return x.to(torch.float64), theta.to(torch.float64), theta.dtype


def _constant(value: float) -> torch.Tensor:
    """A float64 scalar tensor: torch.distributions makes plain Python numbers float32 (0.3 → 0.30000001)."""
    return torch.tensor(value, dtype=torch.float64)


def _standard_gamma(concentration: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One Gamma(concentration, rate 1) draw per entry of ``concentration``, from ``generator`` (the sampler of
    torch.distributions.Gamma takes no generator, so its draws could not be reproduced from a seed)."""
    return torch._standard_gamma(concentration, generator=generator)


def _log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 − eᵈ) for d < 0, accurate at both ends (Mächler's switch at d = −log 2)."""
    near_zero = d > -math.log(2.0)
    return torch.where(near_zero, torch.log(-torch.expm1(d.clamp(max=-1e-300))), torch.log1p(-torch.exp(d)))


def _log_normal_cdf_difference(upper: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
    """log(Φ(upper) − Φ(lower)) for upper > lower, finite far in either tail.

    Where both arguments are positive the difference is rewritten as Φ(−lower) − Φ(−upper), so that it is
    always taken between two lower-tail probabilities, which log_ndtr gives to full relative precision:
    log Φ(a) + log(1 − exp(log Φ(b) − log Φ(a))) with b < 0.
    """
    flip = lower > 0
    a = torch.where(flip, -lower, upper)
    b = torch.where(flip, -upper, lower)
    log_a, log_b = torch.special.log_ndtr(a), torch.special.log_ndtr(b)
    return log_a + _log1mexp(log_b - log_a)


class StudentT(Simulator):
    """Heavy tails from a latent scale: θ = (μ, log σ), x ∈ R², for j = 1, 2

        λ_j ~ Gamma(ν/2, rate ν/2),     x_j | λ_j ~ N(μ, σ²/λ_j),      ν = 2,

    z = ``{"precision": λ [n, 2]}``; log p(x, z | θ) = Σ_j [log N(x_j; μ, σ²/λ_j) + log Gamma(λ_j; ν/2, ν/2)].
    Integrating λ out gives the exact p(x | θ) = Π_j Student-t_ν(x_j; μ, σ), whose variance is infinite at ν = 2.

    In the suite because its tails are polynomial: a few runs lie far out, where a network has seen almost no
    data and a squared loss on the joint score t_μ = Σ_j λ_j (x_j − μ)/σ² meets large values.
    """

    parameter_names = ("mu", "log_sigma")
    degrees_of_freedom = 2.0
    dimension = 2
    default_batch_size = 100_000

    def default_prior(self) -> BoxUniform:
        """μ ∈ [−1, 1], log σ ∈ [−0.5, 0.5]."""
        return BoxUniform(low=[-1.0, -0.5], high=[1.0, 0.5])

    def sample(self, theta, generator=None):
        theta = as_theta_batch(theta, None, 2).to(torch.float32)
        n, half_nu = theta.shape[0], 0.5 * self.degrees_of_freedom
        precision = _standard_gamma(torch.full((n, self.dimension), half_nu), generator) / half_nu
        noise = torch.randn(n, self.dimension, generator=generator)
        x = theta[:, :1] + theta[:, 1:].exp() * noise / precision.sqrt()
        return x, {"precision": precision}

    def joint_log_prob(self, x, z, theta):
        x64, theta64, dtype = _float64(_check_x(self, x, self.dimension), theta, 2)
        precision = z["precision"].to(torch.float64)
        half_nu = _constant(0.5 * self.degrees_of_freedom)
        observed = Normal(theta64[:, :1], theta64[:, 1:].exp() / precision.sqrt()).log_prob(x64)
        latent = Gamma(half_nu, half_nu).log_prob(precision)
        return (observed + latent).sum(dim=1).to(dtype)

    def log_likelihood(self, x, theta):
        x64, theta64, dtype = _float64(_check_x(self, x, self.dimension), theta, 2)
        student = StudentTDistribution(self.degrees_of_freedom, theta64[:, :1], theta64[:, 1:].exp())
        return student.log_prob(x64).sum(dim=1).to(dtype)


class RotatedLinear(Simulator):
    """Few informative directions hidden by a rotation: θ ∈ R⁵, x ∈ R²⁰, with a latent location

        z ~ N(θ, τ² I₅),      x = Q [z + σ ε ; η],      ε ~ N(0, I₅), η ~ N(0, I₁₅),

    Q a fixed 20×20 orthogonal matrix (the Q of the QR decomposition of a Gaussian matrix drawn from seed
    ``rotation_seed``, with the signs that make R's diagonal positive). z = ``{"location": z [n, 5]}``; with
    y = Qᵀx,  log p(x, z | θ) = log N(z; θ, τ²I) + log N(y_{1:5}; z, σ²I) + log N(y_{6:20}; 0, I), and the exact
    p(x | θ) = N(y_{1:5}; θ, (τ² + σ²) I) N(y_{6:20}; 0, I) (|det Q| = 1).

    In the suite because only 5 of 20 directions carry information, and every coordinate of x mixes them with
    noise: an estimator must find the subspace, and a density estimator must model 15 directions of pure noise.
    """

    parameter_names = tuple(f"theta_{j}" for j in range(1, 6))
    latent_width = 0.5  # τ
    noise_width = 0.5  # σ
    n_noise_directions = 15
    default_batch_size = 100_000

    def __init__(self, rotation_seed: int = 16):
        gaussian = torch.randn(self.dimension, self.dimension, dtype=torch.float64,
                               generator=torch.Generator().manual_seed(rotation_seed))
        q, r = torch.linalg.qr(gaussian)
        self.rotation = q * torch.sign(torch.diagonal(r))  # [20, 20], float64; x = rotation @ y

    @property
    def dimension(self) -> int:
        return len(self.parameter_names) + self.n_noise_directions

    def default_prior(self) -> BoxUniform:
        """θ ∈ [−1, 1]⁵."""
        return BoxUniform(low=[-1.0] * 5, high=[1.0] * 5)

    def _rotate_back(self, x) -> torch.Tensor:
        """y = Qᵀ x for each row: ``[n, 20]`` in float64."""
        return _check_x(self, x, self.dimension).to(torch.float64) @ self.rotation

    def sample(self, theta, generator=None):
        theta = as_theta_batch(theta, None, 5).to(torch.float32)
        n = theta.shape[0]
        location = theta + self.latent_width * torch.randn(n, 5, generator=generator)
        informative = location + self.noise_width * torch.randn(n, 5, generator=generator)
        noise = torch.randn(n, self.n_noise_directions, generator=generator)
        y = torch.cat([informative, noise], dim=1).to(torch.float64)
        return (y @ self.rotation.T).to(torch.float32), {"location": location}

    def joint_log_prob(self, x, z, theta):
        y = self._rotate_back(x)
        theta = as_theta_batch(theta, y.shape[0], 5)
        theta64 = theta.to(torch.float64)
        location = z["location"].to(torch.float64)
        latent = Normal(theta64, self.latent_width).log_prob(location).sum(dim=1)
        informative = Normal(location, self.noise_width).log_prob(y[:, :5]).sum(dim=1)
        noise = Normal(_constant(0.0), _constant(1.0)).log_prob(y[:, 5:]).sum(dim=1)
        return (latent + informative + noise).to(theta.dtype)

    def log_likelihood(self, x, theta):
        y = self._rotate_back(x)
        theta = as_theta_batch(theta, y.shape[0], 5)
        width = math.hypot(self.latent_width, self.noise_width)
        informative = Normal(theta.to(torch.float64), width).log_prob(y[:, :5]).sum(dim=1)
        noise = Normal(_constant(0.0), _constant(1.0)).log_prob(y[:, 5:]).sum(dim=1)
        return (informative + noise).to(theta.dtype)


class OverdispersedCounts(Simulator):
    """A discrete histogram: 8 bins of counts, signal strength μ on a sloped background, θ = (μ, β):

        λ_j(θ) = 20 exp(β u_j) + μ · 15 exp(−(u_j − 0.2)² / (2 · 0.15²)),    u_j = −1 + 2(j − 1)/7,
        z_j ~ Gamma(k, rate k),      x_j | z_j ~ Poisson(λ_j z_j),      k = 10,

    z = ``{"overdispersion": z [n, 8]}`` (a per-bin factor of mean 1 and variance 1/k);
    log p(x, z | θ) = Σ_j [log Poisson(x_j; λ_j z_j) + log Gamma(z_j; k, k)]. The exact p(x | θ) is a product of
    negative binomials: x_j has mean λ_j and variance λ_j + λ_j²/k.

    In the suite because x is discrete (float32 integer counts): a density estimator must not put density on the
    integers, and the likelihood ratio jumps between neighbouring x; the signal is a bump over 3 of the 8 bins.
    """

    parameter_names = ("mu", "beta")
    overdispersion_shape = 10.0  # k
    n_bins = 8
    background_scale = 20.0
    signal_scale = 15.0
    signal_centre, signal_width = 0.2, 0.15
    default_batch_size = 100_000

    def __init__(self):
        self.bin_centres = torch.linspace(-1.0, 1.0, self.n_bins, dtype=torch.float64)  # u_j
        self.signal_shape = self.signal_scale * torch.exp(
            -0.5 * ((self.bin_centres - self.signal_centre) / self.signal_width) ** 2)  # s_j

    def default_prior(self) -> BoxUniform:
        """μ ∈ [0, 2], β ∈ [−0.7, 0.7]: with β ∈ [−1, 1] the exact log r of the suite's check (docs/tasks.md) reached
        −52 at its 1% quantile (the background at the edge bins then changes by a factor e² across the prior);
        ±0.7 brings that to −25."""
        return BoxUniform(low=[0.0, -0.7], high=[2.0, 0.7])

    def rates(self, theta) -> torch.Tensor:
        """λ_j(θ) ``[n, 8]`` in θ's dtype: the expected count of each bin."""
        theta = as_theta_batch(theta, None, 2)
        centres, signal = self.bin_centres.to(theta.dtype), self.signal_shape.to(theta.dtype)
        return self.background_scale * torch.exp(theta[:, 1:] * centres) + theta[:, :1] * signal

    def _check_counts(self, x) -> torch.Tensor:
        x = _check_x(self, x, self.n_bins)
        if not (torch.all(x >= 0) and torch.all(x == torch.round(x))):
            raise ValueError(f"{self.name}: x must hold non-negative integer counts")
        return x

    def sample(self, theta, generator=None):
        theta = as_theta_batch(theta, None, 2).to(torch.float32)
        k = self.overdispersion_shape
        overdispersion = _standard_gamma(torch.full((theta.shape[0], self.n_bins), k), generator) / k
        x = torch.poisson(self.rates(theta) * overdispersion, generator=generator)
        return x, {"overdispersion": overdispersion}

    def joint_log_prob(self, x, z, theta):
        x64, theta64, dtype = _float64(self._check_counts(x), theta, 2)
        overdispersion = z["overdispersion"].to(torch.float64)
        k = _constant(self.overdispersion_shape)
        observed = Poisson(self.rates(theta64) * overdispersion).log_prob(x64)
        latent = Gamma(k, k).log_prob(overdispersion)
        return (observed + latent).sum(dim=1).to(dtype)

    def log_likelihood(self, x, theta):
        x64, theta64, dtype = _float64(self._check_counts(x), theta, 2)
        k = self.overdispersion_shape
        # NegativeBinomial(k, p) counts successes (probability p) before k failures: mean k p/(1 − p) = λ
        # for logit p = log λ − log k
        counts = NegativeBinomial(total_count=k, logits=torch.log(self.rates(theta64)) - math.log(k))
        return counts.log_prob(x64).sum(dim=1).to(dtype)


class UniformWidth(Simulator):
    """A θ-dependent support, blurred a little: θ = (w₁, w₂) widths, for j = 1, 2

        u_j ~ U(0, 1),      x_j = w_j u_j + σ ε_j,      ε_j ~ N(0, 1),      σ = 0.1,

    z = ``{"uniform": u [n, 2]}``; log p(x, z | θ) = Σ_j log N(x_j; w_j u_j, σ²) (p(u) = 1 does not depend on θ),
    and the exact p(x_j | w_j) = [Φ(x_j/σ) − Φ((x_j − w_j)/σ)] / w_j, a box [0, w_j] with edges blurred by σ.

    In the suite because x is nearly a deterministic function of z (σ ≪ w): the joint score is large and almost
    unrelated to the exact score away from the edges, where p(x | θ) is flat, and the likelihood ratio falls
    steeply at an edge that moves with θ. σ sets how steeply: at σ = 0.1 the exact log r of the suite's check
    (docs/tasks.md) has its 1% quantile at −24, where 0.15 would give −12 and 0.2 −8.
    """

    parameter_names = ("w1", "w2")
    blur = 0.1  # σ
    default_batch_size = 100_000

    def default_prior(self) -> BoxUniform:
        """w ∈ [1, 2]²."""
        return BoxUniform(low=[1.0, 1.0], high=[2.0, 2.0])

    def sample(self, theta, generator=None):
        theta = as_theta_batch(theta, None, 2).to(torch.float32)
        uniform = torch.rand(theta.shape[0], 2, generator=generator)
        x = theta * uniform + self.blur * torch.randn(theta.shape[0], 2, generator=generator)
        return x, {"uniform": uniform}

    def joint_log_prob(self, x, z, theta):
        x64, theta64, dtype = _float64(_check_x(self, x, 2), theta, 2)
        mean = theta64 * z["uniform"].to(torch.float64)
        return Normal(mean, self.blur).log_prob(x64).sum(dim=1).to(dtype)

    def log_likelihood(self, x, theta):
        x64, theta64, dtype = _float64(_check_x(self, x, 2), theta, 2)
        box = _log_normal_cdf_difference(x64 / self.blur, (x64 - theta64) / self.blur) - torch.log(theta64)
        return box.sum(dim=1).to(dtype)


class GammaShapeMixture(Simulator):
    """A latent that sets the shape: θ = (log λ, log β), x ∈ (0, ∞)², for j = 1, 2

        k_j = 1 + N_j,  N_j ~ Poisson(λ),      x_j | k_j ~ Gamma(shape k_j, rate β),

    z = ``{"shape": k [n, 2]}`` (int64, ≥ 1); log p(x, z | θ) = Σ_j [log Poisson(k_j − 1; λ) + log Gamma(x_j; k_j, β)].
    The exact p(x_j | θ) = Σ_{m ≥ 0} Poisson(m; λ) Gamma(x_j; m + 1, β) = β e^{−λ − βx_j} Σ_m (λβx_j)^m / (m!)²
    sums in closed form: β e^{−λ − βx_j} I₀(2 √(λβx_j)), I₀ the modified Bessel function (evaluated as the
    exponentially scaled i0e, so that it does not overflow).

    In the suite because the latent changes the shape of p(x | z, θ) (from an exponential at k = 1 to a near
    Gaussian at large k) and λ enters only through that mixture over shapes: the joint score for log λ,
    k − 1 − λ, is a noisy proxy of the exact one.
    """

    parameter_names = ("log_lambda", "log_beta")
    default_batch_size = 100_000

    def default_prior(self) -> BoxUniform:
        """log λ ∈ [0, 2] (λ from 1 to 7.4), log β ∈ [−0.5, 0.5]."""
        return BoxUniform(low=[0.0, -0.5], high=[2.0, 0.5])

    def sample(self, theta, generator=None):
        theta = as_theta_batch(theta, None, 2).to(torch.float32)
        n = theta.shape[0]
        shape = 1.0 + torch.poisson(theta[:, :1].exp().expand(n, 2).contiguous(), generator=generator)
        x = _standard_gamma(shape, generator) / theta[:, 1:].exp()
        return x, {"shape": shape.to(torch.int64)}

    def joint_log_prob(self, x, z, theta):
        x64, theta64, dtype = _float64(_check_x(self, x, 2), theta, 2)
        shape = z["shape"].to(torch.float64)
        latent = Poisson(theta64[:, :1].exp()).log_prob(shape - 1.0)
        observed = Gamma(shape, theta64[:, 1:].exp()).log_prob(x64)
        return (latent + observed).sum(dim=1).to(dtype)

    def log_likelihood(self, x, theta):
        x64, theta64, dtype = _float64(_check_x(self, x, 2), theta, 2)
        log_lambda, log_beta = theta64[:, :1], theta64[:, 1:]
        rate_x = log_beta.exp() * x64
        bessel_argument = 2.0 * torch.sqrt(log_lambda.exp() * rate_x)
        # log I0(y) = log i0e(y) + y
        log_density = log_beta - log_lambda.exp() - rate_x + torch.log(torch.special.i0e(bessel_argument)) \
            + bessel_argument
        return log_density.sum(dim=1).to(dtype)


class SLCP(Simulator):
    """A multimodal posterior, after the "simple likelihood, complex posterior" task: θ ∈ R⁵, x ∈ R⁸ as four
    draws x_1 … x_4 of a 2-D Gaussian that share a latent offset c:

        c ~ N(0, 0.3² I₂),      x_k | c ~ N(m + c, S),   m = (θ₁, θ₂),
        S = [[s₁², ρ s₁ s₂], [ρ s₁ s₂, s₂²]],   s₁ = 0.3 + θ₃²,  s₂ = 0.3 + θ₄²,  ρ = 0.9 tanh θ₅,

    z = ``{"offset": c [n, 2]}``; log p(x, z | θ) = Σ_k log N(x_k; m + c, S) + log N(c; 0, 0.3² I). Integrating c
    out, x is an 8-D Gaussian with mean (m, m, m, m) and covariance (I₄ ⊗ S) + 0.3² (1 1ᵀ ⊗ I₂); its exact
    density splits into the mean x̄ and the deviations d_k = x_k − x̄ (an orthogonal change of variables):

        log p(x | θ) = log N(2x̄; 2m, S + 4 · 0.3² I) + Σ_k log N(d_k; 0, S) + log 2π + ½ log det S,

    where the last two terms undo the fourth 2-D normaliser counted by the sum over k (the d_k span 6 dimensions).

    In the suite because θ₃ and θ₄ enter only through their squares: the posterior has four modes (signs of θ₃, θ₄),
    and the shared offset correlates the four draws, so that no single draw is informative about m alone.
    """

    parameter_names = tuple(f"theta_{j}" for j in range(1, 6))
    n_draws = 4
    offset_width = 0.3
    default_batch_size = 100_000

    def default_prior(self) -> BoxUniform:
        """θ₁, θ₂ ∈ [−1, 1], θ₃, θ₄ ∈ [−0.7, 0.7] (s from 0.3 to 0.79), θ₅ ∈ [−0.7, 0.7] (|ρ| ≤ 0.54).

        Narrower than the first choice θ₃, θ₄ ∈ [−1.2, 1.2], θ₅ ∈ [−1, 1], whose exact log r in the suite's check
        (docs/tasks.md) reached −104 at its 1% quantile: eight coordinates drawn with a wide S and scored at a
        narrow one. This prior brings it to −29."""
        return BoxUniform(low=[-1.0, -1.0, -0.7, -0.7, -0.7], high=[1.0, 1.0, 0.7, 0.7, 0.7])

    @staticmethod
    def _scale_tril(theta: torch.Tensor) -> torch.Tensor:
        """The Cholesky factor L of S, ``[n, 2, 2]``: L = [[s₁, 0], [ρ s₂, s₂ √(1 − ρ²)]]."""
        s1, s2 = 0.3 + theta[:, 2] ** 2, 0.3 + theta[:, 3] ** 2
        rho = 0.9 * torch.tanh(theta[:, 4])
        zero = torch.zeros_like(s1)
        return torch.stack([torch.stack([s1, zero], dim=1),
                            torch.stack([rho * s2, s2 * torch.sqrt(1.0 - rho**2)], dim=1)], dim=1)

    def sample(self, theta, generator=None):
        theta = as_theta_batch(theta, None, 5).to(torch.float32)
        n = theta.shape[0]
        offset = self.offset_width * torch.randn(n, 2, generator=generator)
        noise = torch.randn(n, self.n_draws, 2, generator=generator)
        draws = (theta[:, None, :2] + offset[:, None, :]
                 + torch.einsum("nij,nkj->nki", self._scale_tril(theta), noise))
        return draws.reshape(n, 2 * self.n_draws), {"offset": offset}

    def joint_log_prob(self, x, z, theta):
        x64, theta64, dtype = _float64(_check_x(self, x, 2 * self.n_draws), theta, 5)
        offset = z["offset"].to(torch.float64)
        draws = x64.reshape(-1, self.n_draws, 2)
        centre = (theta64[:, :2] + offset)[:, None, :]
        observed = MultivariateNormal(centre, scale_tril=self._scale_tril(theta64)[:, None]).log_prob(draws)
        latent = Normal(_constant(0.0), _constant(self.offset_width)).log_prob(offset).sum(dim=1)
        return (observed.sum(dim=1) + latent).to(dtype)

    def log_likelihood(self, x, theta):
        x64, theta64, dtype = _float64(_check_x(self, x, 2 * self.n_draws), theta, 5)
        draws = x64.reshape(-1, self.n_draws, 2)
        mean_draw = draws.mean(dim=1)
        scale_tril = self._scale_tril(theta64)
        covariance = scale_tril @ scale_tril.transpose(1, 2)
        # 2x̄ = the component of x along (1,1,1,1)/2 ⊗ I₂: its covariance is S + 4 · 0.3² I
        mean_covariance = covariance + self.n_draws * self.offset_width**2 * torch.eye(2, dtype=torch.float64)
        mean_term = MultivariateNormal(2.0 * theta64[:, :2], covariance_matrix=mean_covariance) \
            .log_prob(2.0 * mean_draw)
        deviations = MultivariateNormal(torch.zeros(2, dtype=torch.float64), scale_tril=scale_tril[:, None]) \
            .log_prob(draws - mean_draw[:, None, :]).sum(dim=1)
        half_log_det = torch.log(torch.diagonal(scale_tril, dim1=1, dim2=2)).sum(dim=1)
        total = mean_term + deviations + math.log(2.0 * math.pi) + half_log_det
        return total.to(dtype)


# the six new tasks by their built-in names (sluice.simulators.BUILT_IN holds them too)
SUITE_SIMULATORS = {"student_t": StudentT, "linear20": RotatedLinear, "counts": OverdispersedCounts,
                    "support": UniformWidth, "shape": GammaShapeMixture, "slcp": SLCP}
