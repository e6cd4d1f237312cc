"""Strong-lensing images with a population of dark-matter subhaloes: θ = (f_sub, β), 64×64 Poisson images."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import Simulator, as_theta_batch
from .priors import BoxUniform

# Geometry: lens at z = 0.2, source at z = 0.6 in flat ΛCDM (H0 = 70 km/s/Mpc, Ωm = 0.3); angular-diameter
# distances in Mpc, computed once (∫ dz/E(z)) and fixed, so D_LS/D_S = 0.6298.
SPEED_OF_LIGHT = 299_792.458  # km/s
NEWTON_G = 4.30091e-9  # Mpc (km/s)² / M_sun
D_LENS, D_SOURCE, D_LENS_SOURCE = 680.603, 1378.982, 868.530  # Mpc
HUBBLE_AT_LENS = 77.267  # H(z = 0.2) in km/s/Mpc
ARCSEC = math.pi / 180.0 / 3600.0  # radians
SERSIC_B1 = 1.678347  # b_n of the Sérsic profile for n = 1: half the light lies inside R_e


def einstein_radius(sigma_v: torch.Tensor) -> torch.Tensor:
    """θ_E = 4π (σ_v/c)² D_LS/D_S of a singular isothermal sphere, in arcsec (0.920″ at σ_v = 225 km/s)."""
    return 4.0 * math.pi * (sigma_v / SPEED_OF_LIGHT) ** 2 * (D_LENS_SOURCE / D_SOURCE) / ARCSEC


def einstein_mass(sigma_v: torch.Tensor) -> torch.Tensor:
    """M_E = c² D_L D_S θ_E² / (4 G D_LS): the projected mass inside θ_E, in M_sun (1.12·10¹¹ at 225 km/s).
    An SIS holds 2 M_E inside 2θ_E, and a point mass m has the Einstein radius θ_E √(m / M_E)."""
    theta_e = einstein_radius(sigma_v) * ARCSEC
    return SPEED_OF_LIGHT**2 * D_LENS * D_SOURCE * theta_e**2 / (4.0 * NEWTON_G * D_LENS_SOURCE)


def host_mass(sigma_v: torch.Tensor) -> torch.Tensor:
    """M_200 = 2 σ_v³ / (√50 G H(z_l)) of an SIS (mean density 200 ρ_crit), in M_sun (9.7·10¹² at 225 km/s)."""
    return 2.0 * sigma_v**3 / (math.sqrt(50.0) * NEWTON_G * HUBBLE_AT_LENS)


def _log_relative_expm1(x: torch.Tensor) -> torch.Tensor:
    """log(expm1(x)/x), smooth through x = 0 (the series x/2 + x²/24 there, with the other branch kept finite)."""
    small = x.abs() < 1e-4
    safe = torch.where(small, torch.ones_like(x), x)
    return torch.where(small, x / 2.0 + x**2 / 24.0, torch.log(torch.expm1(safe) / safe))


def log_power_integral(exponent: torch.Tensor, log_upper: torch.Tensor) -> torch.Tensor:
    """log ∫_1^U μ^s dμ = log L + log(expm1((s+1) L) / ((s+1) L)), L = log U; stable through s = −1."""
    return torch.log(log_upper) + _log_relative_expm1((exponent + 1.0) * log_upper)


class Lensing(Simulator):
    """64×64 images of a Sérsic source lensed by an isothermal host galaxy and its dark-matter subhaloes.

    Per image (every draw is returned in z):

    - host: a singular isothermal sphere at the centre, σ_v ~ N(225, 50) km/s (clamped at 50 km/s), Einstein
      radius θ_E = 4π (σ_v/c)² D_LS/D_S (lens z = 0.2, source z = 0.6), deflection α = θ_E θ/|θ|;
    - subhaloes: n ~ Poisson(n̄), masses μ = m/m_min from dn/dm ∝ m^β on [m_min, m_max] = [10⁷ M_sun, 0.01 M_200],
      positions uniform in the disc of radius 2θ_E, with

          n̄(f_sub, β) = f_sub · M(<2θ_E) / ⟨m⟩_β,    M(<2θ_E) = 2 M_E,    ⟨m⟩_β = m_min Z(β+1)/Z(β),

      Z(s) = ∫_1^U μ^s dμ, U = m_max/m_min; each is a truncated SIS (pseudo-Jaffe without core) of point-mass
      Einstein radius θ_m = θ_E √(m/M_E), truncation radius r_t = ``truncation`` · θ_m and central deflection
      b = θ_m²/r_t: α(R) = b (1 − R/(r_t + √(R² + r_t²))), a point mass far outside r_t;
    - source: circular Sérsic n = 1 (exponential), R_e = 0.3″, ``source_flux`` counts in total, offset ~ N(0, 0.2″)
      per axis; ray shooting at the pixel centres (0.1″ pixels): β = θ − Σ α, I(β) conserves surface brightness;
    - a Gaussian PSF (σ = ``psf_sigma``), a flat sky of ``background`` counts per pixel, then Poisson noise.

    Only the count and the masses depend on θ, so

        log p(x, z | θ) = n log n̄ − n̄ − log n! + Σ_i [β log μ_i − log Z(β)]   (+ θ-free terms),

    z = ``{"n_subhaloes", "masses" [n, S] (μ = m/m_min, 0 where unused), "mask" [n, S], "positions" [n, S, 2],
    "sigma_v", "source_offset" [n, 2], "capped"}``, S the most subhaloes in the batch (at most
    ``max_subhaloes``). A run that draws more than ``max_subhaloes`` is capped: its x is NaN, so sluice.simulate
    drops it with a counted warning; ``n_capped`` and ``n_runs`` count them (about 10⁻⁴ of runs at the default
    prior with the default cap).

    Example::

        simulator = sluice.simulators.Lensing()
        data = sluice.simulate(simulator, simulator.default_prior(), n=1000)   # x: [1000, 64, 64]
    """

    parameter_names = ("f_sub", "beta")
    default_batch_size = 1024  # about 60 MB of temporaries per batch
    max_dropped_fraction = 0.01
    pixels = 64
    pixel_size = 0.1  # arcsec
    source_radius = 0.3  # R_e in arcsec
    source_offset_sd = 0.2  # arcsec
    sigma_v_mean, sigma_v_sd, sigma_v_floor = 225.0, 50.0, 50.0  # km/s
    m_min = 1e7  # M_sun
    max_fraction_of_host = 0.01  # m_max = 0.01 M_200

    def __init__(self, max_subhaloes: int = 512, source_flux: float = 1e4, background: float = 100.0,
                 psf_sigma: float = 0.07, truncation: float = 3.0, threads: int | None = None,
                 device: str | None = None):
        self.max_subhaloes = int(max_subhaloes)
        self.source_flux, self.background = float(source_flux), float(background)
        self.psf_sigma, self.truncation = float(psf_sigma), float(truncation)
        self.threads = threads  # torch threads while rendering (None: leave torch's setting alone)
        # where images are rendered ("cuda": on a GPU; the population is drawn on the CPU, images come back there)
        self.device = None if device is None else torch.device(device)
        self.n_runs = 0
        self.n_capped = 0

    def default_prior(self) -> BoxUniform:
        """f_sub ∈ [0.001, 0.2], β ∈ [−1.5, −0.5]."""
        return BoxUniform(low=[0.001, -1.5], high=[0.2, -0.5])

    # --- the population: n̄(θ) and the mass function ------------------------------------------------------
    def log_upper(self, sigma_v: torch.Tensor) -> torch.Tensor:
        """L = log(m_max/m_min) per host."""
        return torch.log(self.max_fraction_of_host * host_mass(sigma_v) / self.m_min)

    def log_mean_count(self, theta: torch.Tensor, sigma_v: torch.Tensor) -> torch.Tensor:
        """log n̄ = log f_sub + log(2 M_E/m_min) − [log Z(β+1) − log Z(β)], in theta's dtype (at least float32)."""
        log_upper = self.log_upper(sigma_v).to(theta.dtype)
        beta = theta[:, 1]
        log_mean_mass = log_power_integral(beta + 1.0, log_upper) - log_power_integral(beta, log_upper)
        log_inner_mass = torch.log(2.0 * einstein_mass(sigma_v) / self.m_min).to(theta.dtype)
        return torch.log(theta[:, 0]) + log_inner_mass - log_mean_mass

    def joint_log_prob(self, x, z, theta):
        """log Poisson(n | n̄(θ)) + Σ_i [β log μ_i − log Z(β)], in float64."""
        theta = as_theta_batch(theta, z["n_subhaloes"].shape[0], 2).to(torch.float64)
        sigma_v, count = z["sigma_v"].to(torch.float64), z["n_subhaloes"].to(torch.float64)
        log_rate = self.log_mean_count(theta, sigma_v)
        log_poisson = count * log_rate - log_rate.exp() - torch.lgamma(count + 1.0)
        mask = z["mask"].to(torch.float64)
        log_mass = torch.log(torch.where(mask > 0, z["masses"].to(torch.float64), 1.0))
        log_z = log_power_integral(theta[:, 1], self.log_upper(sigma_v))
        log_masses = theta[:, 1] * (mask * log_mass).sum(dim=1) - mask.sum(dim=1) * log_z
        return log_poisson + log_masses

    def sample_masses(self, beta: torch.Tensor, log_upper: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        """Inverse CDF of μ^β on [1, U]: μ = exp(log1p(u · expm1(sL)) / s), s = β + 1 (μ = U^u at s = 0)."""
        s, log_upper = beta[:, None] + 1.0, log_upper[:, None]
        near_zero = s.abs() < 1e-6
        safe = torch.where(near_zero, torch.ones_like(s), s)
        general = torch.log1p(uniforms * torch.expm1(safe * log_upper)) / safe
        return torch.where(near_zero, uniforms * log_upper, general).exp()

    # --- sampling -------------------------------------------------------------------------------------------
    def sample(self, theta, generator=None):
        z = self.sample_population(theta, generator)
        x = self.render(z, noise=True, generator=generator)
        x[z["capped"]] = math.nan
        self.n_runs += x.shape[0]
        self.n_capped += int(z["capped"].sum())
        return x, z

    def sample_population(self, theta, generator=None) -> dict:
        """Every draw of the runs but the pixel noise: the z of ``sample`` (which then renders it)."""
        theta = as_theta_batch(theta, None, 2).detach().to(torch.float64)
        n = theta.shape[0]
        sigma_v = (self.sigma_v_mean + self.sigma_v_sd * torch.randn(n, generator=generator, dtype=torch.float64))
        sigma_v = sigma_v.clamp_min(self.sigma_v_floor)
        offset = self.source_offset_sd * torch.randn(n, 2, generator=generator, dtype=torch.float64)
        count = torch.poisson(self.log_mean_count(theta, sigma_v).exp(), generator=generator)
        capped = count > self.max_subhaloes
        slots = int(count.clamp_max(self.max_subhaloes).max()) if n else 0
        mask = torch.arange(slots, dtype=torch.float64) < count[:, None]
        uniforms = torch.rand(n, slots, 3, generator=generator, dtype=torch.float64)
        masses = self.sample_masses(theta[:, 1], self.log_upper(sigma_v), uniforms[..., 0]) * mask
        radius = 2.0 * einstein_radius(sigma_v)[:, None] * uniforms[..., 1].sqrt()
        angle = 2.0 * math.pi * uniforms[..., 2]
        positions = torch.stack([radius * angle.cos(), radius * angle.sin()], dim=2) * mask[..., None]
        return {"n_subhaloes": count, "masses": masses, "mask": mask, "positions": positions, "sigma_v": sigma_v,
                "source_offset": offset, "capped": capped}

    # --- rendering ------------------------------------------------------------------------------------------
    def pixel_grid(self) -> torch.Tensor:
        """Pixel centres [64·64, 2] in arcsec, (x, y) with x along a row, the optical axis at the image centre."""
        axis = (torch.arange(self.pixels, dtype=torch.float32) - 0.5 * (self.pixels - 1)) * self.pixel_size
        rows, columns = torch.meshgrid(axis, axis, indexing="ij")
        return torch.stack([columns.reshape(-1), rows.reshape(-1)], dim=1)

    def deflection(self, z: dict, points: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
        """α(θ) [n, P, 2] in arcsec at ``points`` [P, 2]: the host SIS plus every subhalo, summed."""
        softening = 1e-4  # arcsec; keeps θ/|θ| finite at a halo's centre
        sigma_v = z["sigma_v"].to(torch.float32)
        theta_e = einstein_radius(sigma_v)
        unit = points / (points.pow(2).sum(dim=1, keepdim=True) + softening**2).sqrt()
        total = theta_e[:, None, None] * unit  # the host
        run, slot = torch.nonzero(z["mask"] > 0, as_tuple=True)
        if run.numel() == 0:
            return total
        mass_ratio = z["masses"][run, slot].to(torch.float64) * self.m_min / einstein_mass(z["sigma_v"][run])
        point_radius = (theta_e[run] * mass_ratio.sqrt().to(torch.float32))  # θ_m
        cutoff = self.truncation * point_radius  # r_t
        strength = point_radius / self.truncation  # b = θ_m² / r_t
        centres = z["positions"][run, slot].to(torch.float32)
        flat = total.view(-1, 2)
        for start in range(0, run.numel(), chunk):  # [chunk, P, 2] at a time bounds the memory
            part = slice(start, start + chunk)
            offset = points[None] - centres[part, None]
            squared = offset.pow(2).sum(dim=2) + softening**2
            a = cutoff[part, None]
            factor = strength[part, None] * (squared.rsqrt() - 1.0 / (a + (squared + a * a).sqrt()))
            rows = (run[part, None] * points.shape[0] + torch.arange(points.shape[0], device=points.device)).reshape(-1)
            flat.index_add_(0, rows, (factor[..., None] * offset).reshape(-1, 2))
        return total

    def psf_kernel(self) -> torch.Tensor:
        """The normalised Gaussian PSF on a 7×7 pixel stencil, [1, 1, 7, 7]."""
        steps = torch.arange(-3, 4, dtype=torch.float32) * self.pixel_size
        profile = torch.exp(-0.5 * (steps / self.psf_sigma) ** 2)
        kernel = profile[:, None] * profile[None, :]
        return (kernel / kernel.sum())[None, None]

    def render(self, z: dict, noise: bool = True, generator=None) -> torch.Tensor:
        """Images [n, 64, 64] in counts: Poisson(PSF ∗ lensed source + background), or the expectation without
        ``noise``. The source surface brightness is I(r) = F k²/(2π) e^(−k r), k = b₁/R_e (total flux F).

        With ``device`` set (e.g. "cuda") the images are rendered there and returned on the CPU; the pixel noise then
        comes from a generator on that device seeded from ``generator``, so a seed gives the same images on
        the same kind of device (not bit for bit the CPU's)."""
        threads_before = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        device = self.device or torch.device("cpu")
        if device.type != "cpu":
            z = {name: z[name].to(device) for name in ("sigma_v", "mask", "masses", "positions", "source_offset")}
        try:
            points = self.pixel_grid().to(device)
            chunk = 1024 if device.type == "cpu" else 16_384
            traced = points[None] - self.deflection(z, points, chunk) - z["source_offset"].to(torch.float32)[:, None]
            k = SERSIC_B1 / self.source_radius
            peak = self.source_flux * k * k / (2.0 * math.pi) * self.pixel_size**2  # counts per pixel at r = 0
            radius = traced.pow(2).sum(dim=2).sqrt()
            source = (peak * torch.exp(-k * radius)).view(-1, 1, self.pixels, self.pixels)
            blurred = F.conv2d(source, self.psf_kernel().to(device), padding=3)[:, 0] + self.background
            if noise:
                blurred = torch.poisson(blurred, generator=generator if device.type == "cpu" else
                                        _seeded_on(device, generator))
            return blurred.cpu()
        finally:
            torch.set_num_threads(threads_before)


def _seeded_on(device: torch.device, generator: torch.Generator | None) -> torch.Generator:
    """A generator on ``device`` seeded from the CPU ``generator`` (afresh where there is none)."""
    on_device = torch.Generator(device=device)
    if generator is None:
        on_device.seed()
    else:
        on_device.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
    return on_device


def lensed_flux_of_centred_source(flux: float, theta_e: float, source_radius: float = Lensing.source_radius) -> float:
    """Total flux of a centred exponential source behind an SIS: F (2kθ_E + e^(−kθ_E)), k = b₁/R_e (both images)."""
    k = SERSIC_B1 / source_radius
    return flux * (2.0 * k * theta_e + math.exp(-k * theta_e))
