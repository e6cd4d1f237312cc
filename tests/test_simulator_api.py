"""The simulator argument order: the value whose density is taken first, then θ; the old θ-first order is refused."""

import inspect

import pytest
import torch

import sluice
from sluice.simulators.pyro import PyroSimulator
from toys import Exponential

BUILT_IN_AND_PYRO = [*sluice.simulators.BUILT_IN.values(), PyroSimulator]


def arguments(method) -> list[str]:
    return [name for name in inspect.signature(method).parameters if name != "self"]


@pytest.mark.parametrize("simulator_class", [sluice.Simulator, *BUILT_IN_AND_PYRO], ids=lambda c: c.__name__)
def test_joint_log_prob_and_log_likelihood_take_the_value_first(simulator_class):
    assert arguments(simulator_class.joint_log_prob) == ["x", "z", "theta"]
    assert arguments(simulator_class.log_likelihood) == ["x", "theta"]


@pytest.mark.parametrize("base", [sluice.Simulator, sluice.simulators.GaltonBoard], ids=lambda c: c.__name__)
def test_a_subclass_with_theta_first_joint_log_prob_is_refused_when_defined(base):
    new_order = r"joint_log_prob\(self, x, z, theta\)"
    with pytest.raises(TypeError, match=r"OldOrder\.joint_log_prob\(theta, x, z\).*" + new_order):
        class OldOrder(base):
            def joint_log_prob(self, theta, x, z):
                return theta[:, 0]


def test_a_subclass_with_theta_first_log_likelihood_is_refused_when_defined():
    with pytest.raises(TypeError, match=r"OldOrder\.log_likelihood\(theta, x\).*log_likelihood\(self, x, theta\)"):
        class OldOrder(Exponential):
            def log_likelihood(self, theta, x):
                return theta[:, 0]


def test_a_value_first_subclass_is_accepted_and_read_positionally_as_value_then_theta():
    class Shifted(Exponential):
        def log_likelihood(self, x, theta):
            return theta[:, 0] - theta[:, 0].exp() * x[:, 0]

    simulator, x, theta = Shifted(), torch.tensor([[0.5], [2.0]]), torch.tensor([[0.0], [1.0]])
    by_position = simulator.log_likelihood(x, theta)
    assert torch.equal(by_position, simulator.log_likelihood(theta=theta, x=x))
    assert torch.equal(simulator.joint_log_prob(x, {}, theta), by_position)  # Exponential's z is empty
    assert torch.allclose(by_position, torch.tensor([-0.5, 1.0 - 2.0 * torch.e]))
