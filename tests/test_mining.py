"""Mining: the identities E[r] = 1 and E[t] = 0, autograd against finite differences, and the fallback."""

import warnings

import pytest
import torch

import sluice
from conftest import assert_mean_close
from sluice.mining.joint import FiniteDifferenceWarning, finite_difference_score, joint_log_prob_and_score, mine
from toys import Exponential, NumpyExponential


@pytest.mark.parametrize("simulator", [sluice.simulators.GaltonBoard(), sluice.simulators.GaussianMixture()],
                         ids=lambda s: s.name)
def test_joint_ratio_has_mean_one_and_joint_score_mean_zero(simulator):
    data = sluice.simulate(simulator, simulator.default_prior(), 100_000, seed=5)
    at_theta1 = data.y == 1
    assert_mean_close(data.log_r_xz[at_theta1].exp(), 1.0, "E_{x,z~θ1}[r(x,z|θ0,θ1)]")
    assert_mean_close(data.t_xz, torch.zeros(simulator.n_parameters), "E_{x,z~θ}[t(x,z|θ)]")
    assert_mean_close(data.t_xz0[~at_theta1], torch.zeros(simulator.n_parameters), "E_{x,z~θ0}[t(x,z|θ0)]")


@pytest.mark.parametrize("simulator", [sluice.simulators.GaltonBoard(), sluice.simulators.GaussianMixture()],
                         ids=lambda s: s.name)
def test_autograd_score_equals_finite_differences(simulator):
    prior = simulator.default_prior()
    theta = prior.sample((500,))
    x, z = simulator.sample(theta, generator=torch.Generator().manual_seed(0))
    _, autograd = joint_log_prob_and_score(simulator, x, z, theta, torch.full((simulator.n_parameters,), 1e-3))
    numeric = finite_difference_score(simulator, x, z, theta, torch.full((simulator.n_parameters,), 1e-4))
    assert torch.allclose(autograd, numeric, atol=1e-4, rtol=1e-4)


def test_joint_log_ratio_is_the_difference_of_joint_log_probs():
    board = sluice.simulators.GaltonBoard()
    theta0, theta1 = torch.full((300, 1), -0.9), torch.full((300, 1), -0.5)
    x, z = board.sample(theta1, generator=torch.Generator().manual_seed(1))
    joint = mine(board, x, z, theta0, theta1, torch.tensor([1e-3]))
    expected = board.joint_log_prob(x, z, theta0) - board.joint_log_prob(x, z, theta1)
    assert torch.allclose(joint.log_r_xz, expected)
    assert not torch.allclose(joint.t_xz0, joint.t_xz1)


def test_exponential_joint_score_is_exact():
    simulator = Exponential()
    data = sluice.simulate(simulator, simulator.default_prior(), 1000, seed=0)
    assert torch.allclose(data.t_xz, 1.0 - data.theta.exp() * data.x, atol=1e-5)


def test_non_differentiable_simulator_falls_back_to_finite_differences_and_says_so_once(monkeypatch):
    monkeypatch.setattr(sluice.mining.joint, "_told_about_finite_differences", set())
    simulator = NumpyExponential()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = sluice.simulate(simulator, simulator.default_prior(), 2000, seed=0, batch_size=500)
        again = sluice.simulate(simulator, simulator.default_prior(), 100, seed=1)
    told = [w for w in caught if issubclass(w.category, FiniteDifferenceWarning)]
    assert len(told) == 1 and "finite differences" in str(told[0].message)
    exact = Exponential()
    assert torch.allclose(data.t_xz0, 1.0 - data.theta0.exp() * data.x, atol=1e-4)
    assert torch.allclose(data.t_xz1, 1.0 - data.theta1.exp() * data.x, atol=1e-4)
    reference = sluice.simulate(exact, exact.default_prior(), 2000, seed=0, batch_size=500)
    assert torch.allclose(data.log_r_xz, reference.log_r_xz, atol=1e-5)
    assert len(again) == 100


def test_simulator_marked_not_differentiable_uses_finite_differences(monkeypatch):
    monkeypatch.setattr(sluice.mining.joint, "_told_about_finite_differences", set())

    class Flagged(Exponential):
        differentiable = False

    with pytest.warns(FiniteDifferenceWarning, match="differentiable = False"):
        data = sluice.simulate(Flagged(), Exponential().default_prior(), 500, seed=0)
    assert torch.allclose(data.t_xz, 1.0 - data.theta.exp() * data.x, atol=1e-4)


def test_joint_log_prob_of_wrong_shape_is_named():
    class WrongShape(Exponential):
        def joint_log_prob(self, x, z, theta):
            return super().joint_log_prob(x, z, theta)[:, None]

    with pytest.raises(ValueError, match=r"WrongShape.joint_log_prob must return a tensor of shape \[n\]"):
        sluice.simulate(WrongShape(), Exponential().default_prior(), 10)
