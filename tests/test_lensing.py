"""The strong-lensing simulator (physics against closed forms, the mined quantities) and the conv-net ratio
estimators that read its images."""

import math

import pytest
import torch
from scipy import integrate

import sluice
from conftest import assert_mean_close
from sluice.estimators.conv_networks import ConvPotential
from sluice.estimators.networks import Potential
from sluice.mining.joint import autograd_score
from sluice.simulators.lensing import Lensing, einstein_mass, einstein_radius, lensed_flux_of_centred_source

TRUTH = torch.tensor([0.05, -0.9])


@pytest.fixture(scope="module")
def simulator():
    return Lensing()


@pytest.fixture(scope="module")
def small_data(simulator):
    return sluice.simulate(simulator, simulator.default_prior(), n=300, seed=0)


def lone_host(sigma_v: float, offset=(0.0, 0.0)) -> dict:
    """z of one image with no subhaloes."""
    return {"n_subhaloes": torch.zeros(1), "masses": torch.zeros(1, 0), "mask": torch.zeros(1, 0),
            "positions": torch.zeros(1, 0, 2), "sigma_v": torch.tensor([sigma_v], dtype=torch.float64),
            "source_offset": torch.tensor([offset], dtype=torch.float64), "capped": torch.zeros(1, dtype=torch.bool)}


def test_images_have_shape_64_by_64_and_are_finite_counts(simulator):
    x, z = simulator.sample(torch.tensor([[0.2, -1.5], [0.001, -0.5]]).repeat(50, 1),
                            torch.Generator().manual_seed(1))
    assert x.shape == (100, 64, 64) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and (x >= 0).all() and torch.equal(x, x.round())
    assert z["masses"].shape == z["mask"].shape and z["positions"].shape == z["mask"].shape + (2,)
    assert torch.equal(z["mask"].sum(dim=1), z["n_subhaloes"])


def test_sampling_is_reproducible_from_the_generator(simulator):
    theta = simulator.default_prior().sample((20,))
    first, z_first = simulator.sample(theta, torch.Generator().manual_seed(7))
    second, z_second = simulator.sample(theta, torch.Generator().manual_seed(7))
    other, _ = simulator.sample(theta, torch.Generator().manual_seed(8))
    assert torch.equal(first, second) and torch.equal(z_first["masses"], z_second["masses"])
    assert not torch.equal(first, other)


def angular_diameter_distances(z_lens: float, z_source: float, hubble: float = 70.0, omega_matter: float = 0.3):
    """(D_L, D_S, D_LS) in Mpc in flat ΛCDM: comoving D_C(z) = (c/H0) ∫_0^z dz'/E(z'), E = √(Ωm (1+z)³ + 1 − Ωm);
    D_A = D_C/(1+z), and D_LS = (D_C(z_s) − D_C(z_l))/(1 + z_s) (flat space)."""
    speed_of_light = 299_792.458  # km/s, exact

    def comoving(z: float) -> float:
        inverse_e = integrate.quad(lambda t: (omega_matter * (1 + t) ** 3 + 1 - omega_matter) ** -0.5, 0.0, z,
                                   epsabs=0.0, epsrel=1e-12)[0]
        return speed_of_light / hubble * inverse_e

    lens, source = comoving(z_lens), comoving(z_source)
    return lens / (1 + z_lens), source / (1 + z_source), (source - lens) / (1 + z_source)


def test_einstein_radius_and_mass_match_textbook_formulas_in_flat_lcdm():
    """The module's cosmology (lens z = 0.2, source z = 0.6, H0 = 70 km/s/Mpc, Ωm = 0.3) recomputed here: θ_E =
    4π (σ_v/c)² D_LS/D_S, and the SIS's projected mass inside the physical radius R = D_L θ_E, M(<R) = π σ_v² R/G
    (surface density Σ(R) = σ_v²/(2GR) integrated over the disc), with G M_sun and the parsec from the IAU."""
    d_lens, d_source, d_lens_source = angular_diameter_distances(0.2, 0.6)
    sigma_v, speed_of_light = 225.0, 299_792.458  # km/s
    theta_e = 4.0 * math.pi * (sigma_v / speed_of_light) ** 2 * d_lens_source / d_source  # radians
    arcsec = math.pi / (180 * 3600)
    newton_g = 1.3271244e20 / 3.0856775814913673e22 / 1e6  # G M_sun in m³/s² → Mpc (km/s)² per M_sun
    mass = math.pi * sigma_v**2 * d_lens * theta_e / newton_g  # M_sun
    # the module's distances and G carry 6 significant figures (≤ 1.2·10⁻⁶ relative each; M_E has 4 of them)
    sigma = torch.tensor(sigma_v, dtype=torch.float64)
    assert float(einstein_radius(sigma)) == pytest.approx(theta_e / arcsec, rel=1e-5)
    assert float(einstein_mass(sigma)) == pytest.approx(mass, rel=1e-5)
    assert float(einstein_radius(2.0 * sigma) / einstein_radius(sigma)) == pytest.approx(4.0)


def test_host_deflection_has_magnitude_einstein_radius_everywhere(simulator):
    z = lone_host(260.0)
    alpha = simulator.deflection(z, simulator.pixel_grid())[0]
    theta_e = float(einstein_radius(torch.tensor(260.0)))
    assert torch.allclose(alpha.norm(dim=1), torch.full((64 * 64,), theta_e), rtol=1e-4)
    points = simulator.pixel_grid()  # and it points away from the centre
    assert torch.all((alpha * points).sum(dim=1) > 0)


def test_a_subhalo_far_outside_its_truncation_radius_deflects_like_a_point_mass(simulator):
    z = lone_host(225.0)
    mass_ratio = 10.0  # m = 10⁸ M_sun: θ_m = 0.027″, r_t = 0.08″
    z.update(n_subhaloes=torch.ones(1), masses=torch.tensor([[mass_ratio]]), mask=torch.ones(1, 1),
             positions=torch.zeros(1, 1, 2, dtype=torch.float64))
    points = torch.tensor([[2.5, 0.0], [0.0, -3.0]])
    total = simulator.deflection(z, points)[0]
    host = simulator.deflection(lone_host(225.0), points)[0]
    theta_m2 = float(einstein_radius(torch.tensor(225.0))) ** 2 * mass_ratio * simulator.m_min / float(
        einstein_mass(torch.tensor(225.0, dtype=torch.float64)))
    expected = theta_m2 / points.norm(dim=1)  # θ_m²/R, up to a relative r_t/(2R) ≈ 1.5 %
    assert torch.allclose((total - host).norm(dim=1), expected, rtol=0.03)


def test_unlensed_image_holds_the_sersic_total_flux(simulator):
    image = simulator.render(lone_host(0.0, offset=(0.3, -0.2)), noise=False)
    assert float(image.sum() - 64 * 64 * simulator.background) == pytest.approx(simulator.source_flux, rel=5e-3)


def test_lensed_centred_source_is_magnified_as_the_sis_predicts(simulator):
    sigma_v = 225.0
    image = simulator.render(lone_host(sigma_v), noise=False)
    theta_e = float(einstein_radius(torch.tensor(sigma_v)))
    expected = lensed_flux_of_centred_source(simulator.source_flux, theta_e)  # ≈ 10.3 F: a full ring
    assert float(image.sum() - 64 * 64 * simulator.background) == pytest.approx(expected, rel=0.02)


def test_joint_score_has_mean_zero(simulator):
    for theta in (TRUTH, torch.tensor([0.15, -1.3]), torch.tensor([0.002, -0.6])):
        # log p(x, z|θ) reads only the population, so the noise-free part of z suffices (and is fast)
        z = simulator.sample_population(theta.expand(20_000, 2), torch.Generator().manual_seed(2))
        score = autograd_score(simulator, None, z, theta.expand(20_000, 2)).score
        assert_mean_close(score, torch.zeros(2), f"E[t(x,z|{theta.tolist()})]")


@pytest.mark.parametrize("theta", [[0.05, -0.9], [0.12, -1.0], [0.003, -1.4]])
def test_count_and_mass_terms_are_differentiable_and_match_finite_differences(simulator, theta):
    z = {"n_subhaloes": torch.tensor([0.0, 3.0, 12.0]), "sigma_v": torch.tensor([180.0, 225.0, 300.0]),
         "masses": torch.tensor([[0.0] * 4, [2.0, 50.0, 1e3, 0.0], [1.5, 8.0, 4e4, 3e2]], dtype=torch.float64),
         "mask": torch.tensor([[0.0] * 4, [1.0, 1.0, 1.0, 0.0], [1.0] * 4])}
    base = torch.tensor(theta, dtype=torch.float64).expand(3, 2).clone().requires_grad_(True)
    (score,) = torch.autograd.grad(simulator.joint_log_prob(None, z, base).sum(), base)
    step = 1e-6
    for j in range(2):
        shift = torch.zeros(3, 2, dtype=torch.float64)
        shift[:, j] = step
        with torch.no_grad():
            difference = (simulator.joint_log_prob(None, z, base + shift)
                          - simulator.joint_log_prob(None, z, base - shift)) / (2 * step)
        assert torch.allclose(score[:, j], difference, rtol=1e-5, atol=1e-6), (j, score[:, j], difference)


def test_mean_count_is_f_sub_times_inner_mass_over_mean_subhalo_mass(simulator):
    sigma_v = torch.tensor([225.0], dtype=torch.float64)
    upper = float(simulator.log_upper(sigma_v).exp())
    for beta in (-1.5, -1.0, -0.9):
        mu = torch.logspace(0.0, math.log10(upper), 200_001, dtype=torch.float64)
        weight = mu**beta
        mean_mass = simulator.m_min * torch.trapezoid(weight * mu, mu) / torch.trapezoid(weight, mu)
        expected = 0.05 * 2.0 * float(einstein_mass(sigma_v)) / float(mean_mass)
        rate = simulator.log_mean_count(torch.tensor([[0.05, beta]], dtype=torch.float64), sigma_v).exp()
        assert float(rate) == pytest.approx(expected, rel=1e-4)


def test_check_simulator_passes_on_a_small_run(simulator):
    report = sluice.check_simulator(simulator, simulator.default_prior(), n=300, n_theta=2)
    assert report.ok, str(report)


def test_augmented_image_data_round_trip_through_hdf5(small_data, tmp_path):
    assert small_data.x.shape == (len(small_data), 64, 64)
    small_data.save(tmp_path / "lensing.h5")
    again = sluice.AugmentedData.load(tmp_path / "lensing.h5")
    assert torch.equal(again.x, small_data.x) and torch.equal(again.t_xz0, small_data.t_xz0)


def test_network_choice_keeps_vector_x_on_the_mlp_and_refuses_conv_for_it():
    data = sluice.AugmentedData(theta0=torch.rand(40, 1), theta1=torch.rand(40, 1), y=torch.arange(40) % 2,
                                x=torch.randn(40, 3))
    assert isinstance(sluice.estimators.CARL().fit(data, epochs=1).model_, Potential)
    with pytest.raises(ValueError, match="network='conv' needs images"):
        sluice.estimators.CARL(network="conv").fit(data, epochs=1)


def test_alices_with_the_conv_net_round_trips_and_its_scan_table_equals_one_call_per_point(small_data, tmp_path):
    estimator = sluice.estimators.ALICES().fit(small_data, epochs=2, batch_size=64)
    assert isinstance(estimator.model_, ConvPotential)
    x, a, b = small_data.x[:30], small_data.theta0[:30], small_data.theta1[:30]
    forward, backward = estimator.log_ratio(x, a, b), estimator.log_ratio(x, b, a)
    assert torch.isfinite(forward).all()
    # antisymmetric and zero on the diagonal by construction (a difference of one potential): a cheap guard
    assert torch.allclose(forward, -backward, atol=1e-5)
    assert torch.allclose(estimator.log_ratio(x, a, a), torch.zeros(30), atol=1e-6)
    assert estimator.score(x, a).shape == (30, 2)
    estimator.save(tmp_path / "alices.pt")
    assert torch.allclose(sluice.load(tmp_path / "alices.pt").log_ratio(x, a, b), forward, atol=1e-6)
    grid = sluice.inference.make_grid([0.01, -0.9], [0.2, -0.9], [5, 1])  # the one-encoding table of scans
    table = sluice.inference.evaluate.log_ratio_table(estimator, x, grid, TRUTH)
    direct = torch.stack([estimator.log_ratio(x, point, TRUTH) for point in grid])
    assert torch.allclose(table, direct, atol=1e-5)
