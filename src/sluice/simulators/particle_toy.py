"""ParticleToy: a two-coefficient "EFT" process, dσ quadratic in (c1, c2), detector smearing, exact likelihoods."""

from __future__ import annotations

import math

import torch

from .base import Simulator, as_theta_batch
from .morphing import Morphing, monomial_powers, monomials
from .priors import BoxUniform
from .systematics import Nuisance

POWERS = monomial_powers(2, 2)  # 1, c1, c2, c1², c1·c2, c2²
ANGLE_INTEGRALS = (2.0, 0.0, 2.0 / 3.0)  # ∫_{-1}^{1} cos^j d cos, j = 0, 1, 2


class ParticleToy(Simulator):
    """Events of a toy 2 → 2 process with two Wilson coefficients θ = (c1, c2), seen in z = (E, cos), an
    energy E ≥ 0 and a decay angle cos ∈ [−1, 1]. Three helicity amplitudes and an incoherent background,

        A_L = (1 + cos)/√2 · (1 + a c1 E + b c2 E)        A_0 = √(1 − cos²) · d c2 E
        A_R = (1 − cos)/√2 · (1 + a c1 E − b c2 E)        dσ(z|θ) = e^(−E) [|A_L|² + |A_R|² + |A_0|² + β],

    give the SM term (1 + cos²) + β, the interferences 2a c1 E (1 + cos²) (rate and energy spectrum) and
    4b c2 E cos (an asymmetry that leaves σ unchanged), and the squared terms a² c1² E² (1 + cos²),
    4ab c1 c2 E² cos and c2² E² [b² (1 + cos²) + d² (1 − cos²)]: dσ(z|θ) = Σ_m c_m(θ) f_m(z) over the
    monomials 1, c1, c2, c1², c1·c2, c2², positive for every θ (a sum of squares plus β > 0). With
    a = b = d = 1/2 and β = 0.2, σ(θ) = ∫dσ = 46/15 + 8/3 c1 + 4/3 c1² + 2 c2², in closed form.

    Detector: x = z + N(0, diag(s_E², s_cos²)), ``resolution`` = (s_E, s_cos) = (0.25, 0.1), independent
    of θ. z = ``{"parton": [n, 2]}``; joint_log_prob = log dσ(z|θ) − log σ(θ) (the smearing cancels).
    ``log_likelihood`` is exact: p(x|θ) = Σ_m c_m(θ) K_m(x) / σ(θ), K_m = f_m convolved with the
    resolution in closed form (truncated-Gaussian moments). With ``resolution=(0, 0)``, x = z and it is the
    parton-level ("truth-level") likelihood. ``event_weights`` gives the weights a generator would give
    (for morphing), ``morphing()`` a well-conditioned basis for them.

    Systematics, asked for only through ``nuisances()`` and ``systematic_weights`` (the simulator itself is
    nuisance-free): a normalisation uncertainty of ±``normalisation_uncertainty`` (10 %) on the rate, and an
    energy-scale uncertainty of ±``energy_scale_uncertainty`` (2 %) on the detector's energy response,
    x_E = (1 + ε α) E + s_E · noise, both as event-weight variations at α = ±1 (docs/systematics.md).
    """

    parameter_names = ("c1", "c2")
    default_batch_size = 100_000
    energy_coupling, interference, longitudinal, background = 0.5, 0.5, 0.5, 0.2  # a, b, d, β
    normalisation_uncertainty, energy_scale_uncertainty = 0.1, 0.02  # the ±1σ variations: δ_N, ε

    def __init__(self, resolution=(0.25, 0.1)):
        self.resolution = tuple(float(s) for s in resolution)
        if len(self.resolution) != 2 or min(self.resolution) < 0:
            raise ValueError(f"ParticleToy: resolution must be two widths ≥ 0 (energy, angle), got {resolution}")
        a, b, d, beta = self.energy_coupling, self.interference, self.longitudinal, self.background
        table = torch.zeros(len(POWERS), 3, 3, dtype=torch.float64)  # [monomial m, power of E, power of cos]
        table[0, 0, 0], table[0, 0, 2] = 1.0 + beta, 1.0
        table[1, 1, 0], table[1, 1, 2] = 2 * a, 2 * a
        table[2, 1, 1] = 4 * b
        table[3, 2, 0], table[3, 2, 2] = a * a, a * a
        table[4, 2, 1] = 4 * a * b
        table[5, 2, 0], table[5, 2, 2] = b * b + d * d, b * b - d * d
        self._table = table
        moments = torch.tensor([math.factorial(k) for k in range(3)], dtype=torch.float64)  # ∫ E^k e^(−E) dE
        self._totals = torch.einsum("mkj,k,j->m", table, moments, torch.tensor(ANGLE_INTEGRALS, dtype=torch.float64))

    def default_prior(self) -> BoxUniform:
        return BoxUniform(low=[-1.0, -1.0], high=[1.0, 1.0])

    def morphing(self) -> Morphing:
        """Morphing over the basis SM, (±1, 0), (0, ±1), (1, 1) (condition number 8)."""
        basis = [[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [1.0, 1.0]]
        return Morphing(basis, powers=POWERS, parameter_names=self.parameter_names)

    # --- the parton level -------------------------------------------------------------------------------
    def components(self, z: torch.Tensor) -> torch.Tensor:
        """f_m(z) [n, 6] in float64, zero outside E ≥ 0, |cos| ≤ 1: dσ(z|θ) = Σ_m c_m(θ) f_m(z)."""
        z = torch.as_tensor(z, dtype=torch.float64)
        energy, angle = z[:, 0], z[:, 1]
        inside = (energy >= 0) & (angle.abs() <= 1)
        energy_powers = torch.stack([torch.ones_like(energy), energy, energy**2], dim=1)
        angle_powers = torch.stack([torch.ones_like(angle), angle, angle**2], dim=1)
        values = torch.einsum("mkj,nk,nj->nm", self._table, energy_powers, angle_powers)
        return torch.where(inside[:, None], values * torch.exp(-energy.clamp_min(0))[:, None], 0.0)

    def cross_section(self, theta) -> torch.Tensor:
        """σ(θ) = Σ_m c_m(θ) ∫f_m: [n], differentiable in θ (in θ's dtype)."""
        theta = as_theta_batch(theta, None, 2)
        return monomials(theta, POWERS) @ self._totals.to(theta.dtype)

    def differential_cross_section(self, z, theta) -> torch.Tensor:
        """dσ(z|θ): [n], in θ's dtype (float64 unless θ is float32)."""
        z = torch.as_tensor(z, dtype=torch.float64)
        theta = as_theta_batch(theta, z.shape[0], 2)
        return (monomials(theta, POWERS) * self.components(z).to(theta.dtype)).sum(dim=1)

    def event_weights(self, z, basis_points, generated_at=None) -> torch.Tensor:
        """Weights [n, B] of the events z at ``basis_points`` [B, 2], as a generator gives them: with
        ``generated_at`` (the θ the events were sampled at: [2], or [n, 2], one per event),
        w_ib = dσ(z_i|θ_b) / (n p(z_i|θ_gen)), so that Σ_i w_ib estimates σ(θ_b); without it, w_ib = dσ(z_i|θ_b)."""
        z = torch.as_tensor(z, dtype=torch.float64)
        basis = torch.as_tensor(basis_points, dtype=torch.float64)
        weights = self.components(z) @ monomials(basis, POWERS).T
        if generated_at is not None:
            theta = as_theta_batch(torch.as_tensor(generated_at, dtype=torch.float64), z.shape[0], 2)
            density = self.differential_cross_section(z, theta) / self.cross_section(theta)
            weights = weights / (z.shape[0] * density[:, None])
        return weights

    def sample(self, theta, generator=None):
        """Exact draws of z by rejection from the envelope e^(−E) Σ_k B_k E^k, B_k = Σ_j |coefficient of
        E^k cos^j| (a mixture of Gamma(k+1) in E, uniform in cos), then the detector smearing."""
        theta = as_theta_batch(theta, None, 2).detach().to(torch.float64)
        n = theta.shape[0]
        coefficients = torch.einsum("nm,mkj->nkj", monomials(theta, POWERS), self._table)  # [n, k, j]
        bounds = coefficients.abs().sum(dim=2)  # ≥ |Σ_j coefficient cos^j| for |cos| ≤ 1
        mixture = bounds * torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64)  # B_k k!
        z = torch.empty(n, 2, dtype=torch.float64)
        pending = torch.arange(n)
        while pending.numel():
            m = pending.numel()
            order = torch.multinomial(mixture[pending], 1, generator=generator)[:, 0]
            uniforms = torch.rand(m, 3, generator=generator, dtype=torch.float64)
            used = torch.arange(3)[None, :] <= order[:, None]  # Gamma(k+1) = sum of k+1 unit exponentials
            energy = -(torch.log1p(-uniforms) * used).sum(dim=1)
            angle = 2.0 * torch.rand(m, generator=generator, dtype=torch.float64) - 1.0
            energy_powers = torch.stack([torch.ones_like(energy), energy, energy**2], dim=1)
            angle_powers = torch.stack([torch.ones_like(angle), angle, angle**2], dim=1)
            target = torch.einsum("nkj,nk,nj->n", coefficients[pending], energy_powers, angle_powers)
            envelope = (bounds[pending] * energy_powers).sum(dim=1)
            accept = torch.rand(m, generator=generator, dtype=torch.float64) * envelope < target
            z[pending[accept]] = torch.stack([energy, angle], dim=1)[accept]
            pending = pending[~accept]
        noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        x = z + noise * torch.tensor(self.resolution, dtype=torch.float64)
        return x.to(torch.float32), {"parton": z}

    def joint_log_prob(self, x, z, theta):
        parton = z["parton"]
        return torch.log(self.differential_cross_section(parton, theta)) - torch.log(self.cross_section(theta))

    # --- systematics ------------------------------------------------------------------------------------
    def nuisances(self) -> tuple[Nuisance, Nuisance]:
        """The two systematics' nuisance parameters, α in units of their ±1σ variations (Gaussian constraints)."""
        return Nuisance("normalisation"), Nuisance("energy_scale")

    def systematic_weights(self, x, z, weights) -> dict:
        """The event weights at α = −1 and +1 of each systematic, ``{name: (down, up)}`` for
        ``WeightedEvents(..., nuisances=toy.nuisances(), variations=...)``, from the nominal ``weights`` [n]
        or [n, B] (e.g. ``event_weights``) of the events ``x`` [n, 2] with partons ``z`` [n, 2]:

            normalisation   w (1 ∓ δ_N)
            energy_scale    w · N(x_E; (1 ∓ ε) E, s_E²) / N(x_E; E, s_E²)

        the second the ratio of the detector densities p(x|z, α = ∓1)/p(x|z, 0) when the energy response is
        scaled by 1 ∓ ε: exact joint weights at α = ±1, the same at every θ. Needs s_E > 0 (a weight cannot
        move x)."""
        width = self.resolution[0]
        if width == 0:
            raise ValueError("ParticleToy: the energy-scale variation reweights the detector's energy response, so it "
                             "needs resolution[0] > 0 (at truth level a scale shift moves x, which a weight cannot)")
        x, z = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(z, dtype=torch.float64)
        weights = torch.as_tensor(weights, dtype=torch.float64)
        delta, epsilon = self.normalisation_uncertainty, self.energy_scale_uncertainty
        measured, energy = x[:, 0], z[:, 0]

        def detector_ratio(sign: float) -> torch.Tensor:  # N(x; (1 + sign ε) E, s²) / N(x; E, s²)
            shifted, nominal = measured - (1 + sign * epsilon) * energy, measured - energy
            ratio = torch.exp(-(shifted**2 - nominal**2) / (2 * width**2))
            return ratio[:, None] if weights.ndim == 2 else ratio

        return {"normalisation": (weights * (1 - delta), weights * (1 + delta)),
                "energy_scale": (weights * detector_ratio(-1.0), weights * detector_ratio(1.0))}

    def shift_energy_scale(self, x, z, alpha) -> torch.Tensor:
        """The events ``x`` [n, 2] (partons ``z``) as the detector would measure them at energy-scale nuisance
        ``alpha`` (a number or [n]): x_E + ε α E, the same noise. Exact draws at α from draws at α = 0."""
        x = torch.as_tensor(x)
        energy = torch.as_tensor(z, dtype=torch.float64)[:, 0]
        shifted = x.to(torch.float64).clone()
        shifted[:, 0] = shifted[:, 0] + self.energy_scale_uncertainty * torch.as_tensor(alpha, dtype=torch.float64) \
            * energy
        return shifted.to(x.dtype)

    # --- the detector level -----------------------------------------------------------------------------
    def detector_components(self, x) -> torch.Tensor:
        """K_m(x) = ∫ f_m(z) N(x; z, diag(s²)) dz: [n, 6] in float64, so p(x|θ) = Σ_m c_m(θ) K_m(x) / σ(θ)."""
        x = torch.as_tensor(x, dtype=torch.float64)
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"ParticleToy: x must have shape [n, 2], got {list(x.shape)}")
        energy = _energy_moments(x[:, 0], self.resolution[0])
        angle = _angle_moments(x[:, 1], self.resolution[1])
        return torch.einsum("mkj,nk,nj->nm", self._table, energy, angle)

    def log_likelihood(self, x, theta):
        x = torch.as_tensor(x)
        theta = as_theta_batch(theta, x.shape[0], 2)
        density = (monomials(theta, POWERS) * self.detector_components(x).to(theta.dtype)).sum(dim=1)
        return torch.log(density.clamp_min(1e-300)) - torch.log(self.cross_section(theta))


def _energy_moments(x: torch.Tensor, width: float) -> torch.Tensor:
    """∫_0^∞ E^k e^(−E) N(x; E, width²) dE for k = 0, 1, 2: [n, 3]. Completing the square,
    e^(−E) N(x; E, s²) = e^(−x + s²/2) N(E; μ, s²) with μ = x − s², so these are e^(−x + s²/2) times the
    moments of N(μ, s²) over E ≥ 0: M0 = Φ(μ/s), M1 = μ M0 + s φ(μ/s), M2 = μ M1 + s² M0."""
    if width == 0:
        inside = (x >= 0).to(x.dtype)
        return torch.stack([torch.ones_like(x), x, x**2], dim=1) * (torch.exp(-x.clamp_min(0)) * inside)[:, None]
    mean = x - width**2
    standard = mean / width
    m0 = torch.special.ndtr(standard)
    m1 = mean * m0 + width * torch.exp(-0.5 * standard**2) / math.sqrt(2 * math.pi)
    m2 = mean * m1 + width**2 * m0
    return torch.stack([m0, m1, m2], dim=1) * torch.exp(-x + 0.5 * width**2)[:, None]


def _angle_moments(x: torch.Tensor, width: float) -> torch.Tensor:
    """∫_{-1}^{1} c^j N(x; c, width²) dc for j = 0, 1, 2: [n, 3], from the moments of N(x, s²) on [−1, 1]:
    N0 = Φ(β) − Φ(α), N1 = x N0 + s (φ(α) − φ(β)), N2 = x N1 + s² N0 − s (φ(α) + φ(β)), α, β = (∓1 − x)/s."""
    if width == 0:
        inside = (x.abs() <= 1).to(x.dtype)
        return torch.stack([torch.ones_like(x), x, x**2], dim=1) * inside[:, None]
    alpha, beta = (-1.0 - x) / width, (1.0 - x) / width
    density_alpha = torch.exp(-0.5 * alpha**2) / math.sqrt(2 * math.pi)
    density_beta = torch.exp(-0.5 * beta**2) / math.sqrt(2 * math.pi)
    n0 = torch.special.ndtr(beta) - torch.special.ndtr(alpha)
    n1 = x * n0 + width * (density_alpha - density_beta)
    n2 = x * n1 + width**2 * n0 - width * (density_alpha + density_beta)
    return torch.stack([n0, n1, n2], dim=1)
