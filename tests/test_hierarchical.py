"""HierarchicalGaussian: it can be mined, and its exact likelihood is the joint one with z integrated out."""

import torch

import sluice
from conftest import assert_mean_close
from sluice.simulators.hierarchical import HierarchicalGaussian


def test_hierarchical_passes_the_simulator_checks():
    simulator = HierarchicalGaussian()
    report = sluice.check_simulator(simulator, simulator.default_prior(), n=4000)
    assert report.ok, str(report)


def test_exact_score_is_the_joint_score_averaged_over_the_latent_means():
    """∇θ log p(x|θ) = E[t(x,z|θ) | x], with z_k | x, θ ~ N((x_k τ² + μ s_k²)/(τ² + s_k²), τ² s_k²/(τ² + s_k²))."""
    simulator = HierarchicalGaussian()
    theta = torch.tensor([0.3, -0.4], dtype=torch.float64)
    x, _ = simulator.sample(theta.expand(3, 2), generator=torch.Generator().manual_seed(0))
    tau2, s2 = float(theta[1].exp() ** 2), simulator.noise_scales.double() ** 2
    mean = (x.double() * tau2 + theta[0] * s2) / (tau2 + s2)
    sd = (tau2 * s2 / (tau2 + s2)).sqrt()
    z = mean + sd * torch.randn(100_000, *mean.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t_mu = ((z - theta[0]) / tau2).sum(dim=2)
    t_log_tau = ((z - theta[0]) ** 2 / tau2 - 1).sum(dim=2)
    exact = theta.expand(3, 2).clone().requires_grad_(True)
    (score,) = torch.autograd.grad(simulator.log_likelihood(x, exact).sum(), exact)
    for row in range(3):
        assert_mean_close(torch.stack([t_mu[:, row], t_log_tau[:, row]], dim=1), score[row], f"E[t | x] (row {row})")
