"""GaussianMixture: a normalised exact likelihood, and joint quantities that average to the exact ones."""

import torch

import sluice
from conftest import assert_mean_close


def test_exact_likelihood_integrates_to_one():
    mixture = sluice.simulators.GaussianMixture()
    grid = torch.linspace(-6.0, 6.0, 481, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    points = torch.stack([xx.flatten(), yy.flatten()], dim=1)
    for theta in ([0.3, -0.5], [-1.0, 1.0]):
        density = mixture.log_likelihood(points, torch.tensor(theta, dtype=torch.float64)).exp()
        total = float(density.sum() * (grid[1] - grid[0]) ** 2)
        assert abs(total - 1.0) < 1e-4


def test_samples_follow_the_exact_likelihood():
    """E_x[f(x)] under the sampler equals its exact value for the component weight and the mean."""
    mixture = sluice.simulators.GaussianMixture()
    theta = torch.tensor([0.4, -0.2])
    x, z = mixture.sample(theta.expand(100_000, 2), generator=torch.Generator().manual_seed(0))
    weight = torch.sigmoid(2.0 * (theta[0] - theta[1]))
    assert_mean_close(z["component"].float(), weight, "fraction of component 1")
    mean = (1 - weight) * theta + weight * torch.stack([1.5 + theta[1], -1.5 + theta[0]])
    assert_mean_close(x, mean, "mean of x")


def exact_score(mixture, theta, x):
    theta = theta.clone().requires_grad_(True)
    (score,) = torch.autograd.grad(mixture.log_likelihood(x, theta).sum(), theta)
    return score


def test_joint_score_is_unbiased_for_the_exact_score_given_x():
    mixture = sluice.simulators.GaussianMixture()
    theta = torch.tensor([0.2, 0.1])
    data = sluice.simulate(mixture, sluice.priors.Point(theta), 200_000, reference=theta, seed=1)
    exact = exact_score(mixture, data.theta, data.x)
    difference = data.t_xz - exact
    x1, x2 = data.x[:, 0:1], data.x[:, 1:2]
    for name, g in {"1": 1.0, "x1": x1, "x2": x2, "x1·x2": x1 * x2, "x1>0": (x1 > 0).float()}.items():
        assert_mean_close(difference * g, torch.zeros(2), f"E[(t - t_exact) g], g = {name}")


def test_joint_ratio_is_unbiased_for_the_exact_ratio_given_x():
    """E[r(x,z) g(x)] = E[r(x) g(x)] for x ~ θ1."""
    mixture = sluice.simulators.GaussianMixture()
    theta0, theta1 = torch.tensor([0.3, -0.1]), torch.tensor([0.1, 0.2])
    data = sluice.simulate(mixture, sluice.priors.Point(theta0), 200_000, reference=theta1, seed=2)
    at_theta1 = data[data.y == 1]
    exact = mixture.log_likelihood(at_theta1.x, theta0) - mixture.log_likelihood(at_theta1.x, theta1)
    difference = at_theta1.log_r_xz.exp() - exact.exp()
    x1 = at_theta1.x[:, 0]
    for name, g in {"1": 1.0, "x1": x1, "x1>0": (x1 > 0).float()}.items():
        assert_mean_close(difference * g, 0.0, f"E[(r - r_exact) g], g = {name}")
