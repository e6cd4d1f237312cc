"""Mining: the identities E[r] = 1 and E[t] = 0, autograd against finite differences, and the fallback."""

import warnings

import pytest
import torch

import sluice
from conftest import assert_mean_close
from sluice.mining.joint import (
    FiniteDifferenceWarning,
    autograd_score,
    finite_difference_score,
    joint_log_prob_and_score,
    mine,
)
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


def exponential_runs(n=200, seed=0, dtype=torch.float32):
    """n runs of the Exponential toy at θ ~ its prior: (x [n, 1], z, θ [n, 1]) in ``dtype``."""
    simulator = Exponential()
    theta = simulator.default_prior().sample((n,))
    x, z = simulator.sample(theta, generator=torch.Generator().manual_seed(seed))
    return x.to(dtype), z, theta.to(dtype)


class NoGraphExponential(Exponential):
    """Differentiable in principle, but returns log p(x,z|θ) cut from θ's autograd graph."""

    def joint_log_prob(self, x, z, theta):
        return super().joint_log_prob(x, z, theta.detach())


class FlaggedExponential(Exponential):
    differentiable = False


def test_a_differentiable_simulator_is_scored_by_autograd_without_a_warning(monkeypatch):
    monkeypatch.setattr(sluice.mining.joint, "_told_about_finite_differences", set())
    x, z, theta = exponential_runs()
    assert autograd_score(Exponential(), x, z, theta).score is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error", FiniteDifferenceWarning)
        joint = mine(Exponential(), x, z, theta, theta + 0.1, torch.tensor([1e-3]))
    assert torch.allclose(joint.t_xz0, 1.0 - theta.exp() * x, atol=1e-6)


def test_autograd_says_why_it_cannot_score_a_simulator():
    x, z, theta = exponential_runs(n=10)
    assert autograd_score(FlaggedExponential(), x, z, theta).reason == "differentiable = False"
    assert autograd_score(NoGraphExponential(), x, z, theta).reason == \
        "joint_log_prob returned a value with no autograd graph to θ"
    try:  # the first line of the error that the numpy simulator raises under autograd is quoted
        NumpyExponential().joint_log_prob(x, z, theta.clone().requires_grad_(True))
    except RuntimeError as error:
        first_line = str(error).splitlines()[0]
    assert autograd_score(NumpyExponential(), x, z, theta).reason == \
        f"joint_log_prob failed under autograd ({first_line})"


def test_a_log_prob_cut_from_theta_falls_back_to_finite_differences_and_says_why(monkeypatch):
    monkeypatch.setattr(sluice.mining.joint, "_told_about_finite_differences", set())
    x, z, theta = exponential_runs()
    with pytest.warns(FiniteDifferenceWarning) as told:
        log_prob, score = joint_log_prob_and_score(NoGraphExponential(), x, z, theta, torch.tensor([1e-3]))
    assert str(told[0].message).startswith("NoGraphExponential: joint_log_prob returned a value with no autograd "
                                           "graph to θ; the joint score is taken by central finite differences")
    # central differences with step h err by h²/6 · |∂³ log p| = h²/6 · e^θ x: below 1e-5 for these runs
    assert torch.allclose(score, 1.0 - theta.exp() * x, atol=1e-5)
    assert torch.allclose(log_prob, Exponential().joint_log_prob(x, z, theta))


@pytest.mark.parametrize("simulator", [Exponential(), FlaggedExponential()], ids=["autograd", "finite differences"])
def test_mined_quantities_are_float32_even_for_a_simulator_that_computes_in_float64(simulator, monkeypatch):
    monkeypatch.setattr(sluice.mining.joint, "_told_about_finite_differences", {simulator.name})  # already told
    x, z, theta = exponential_runs(dtype=torch.float64)
    joint = mine(simulator, x, z, theta, theta + 0.1, torch.tensor([1e-3]))
    assert simulator.joint_log_prob(x, z, theta).dtype == torch.float64, "the toy must work in float64"
    assert {joint.log_r_xz.dtype, joint.t_xz0.dtype, joint.t_xz1.dtype} == {torch.float32}


class LatentGaussian(sluice.Simulator):
    """z ~ N(θ, 1), x = z + N(0, 1), scored only by finite differences: t(x,z|θ) = z − θ, exactly."""

    parameter_names = ("mu",)
    differentiable = False

    def sample(self, theta, generator=None):
        z = theta + torch.randn(theta.shape, generator=generator)
        return z + torch.randn(theta.shape, generator=generator), {"z": z}

    def joint_log_prob(self, x, z, theta):
        return (-0.5 * (z["z"] - theta) ** 2 - 0.5 * (x - z["z"]) ** 2).sum(dim=1)


def test_finite_differences_score_each_run_at_its_own_latent(monkeypatch):
    monkeypatch.setattr(sluice.mining.joint, "_told_about_finite_differences", set())
    simulator = LatentGaussian()
    theta0, theta1 = torch.full((300, 1), 0.5), torch.full((300, 1), -0.5)
    x, z = simulator.sample(theta1, generator=torch.Generator().manual_seed(2))
    with pytest.warns(FiniteDifferenceWarning):
        joint = mine(simulator, x, z, theta0, theta1, torch.tensor([1e-3]))
    # log p is quadratic in θ, so central differences are exact up to rounding (float64, then float32)
    assert torch.allclose(joint.t_xz0, z["z"] - theta0, rtol=1e-6, atol=1e-6)
    assert torch.allclose(joint.t_xz1, z["z"] - theta1, rtol=1e-6, atol=1e-6)
    expected = simulator.joint_log_prob(x, z, theta0) - simulator.joint_log_prob(x, z, theta1)
    assert torch.allclose(joint.log_r_xz, expected)


class NumpyLogProb(Exponential):
    def joint_log_prob(self, x, z, theta):
        return super().joint_log_prob(x, z, theta).detach().numpy()


class FloatLogProb(Exponential):
    def joint_log_prob(self, x, z, theta):
        return 0.0


class ColumnLogProb(Exponential):
    def joint_log_prob(self, x, z, theta):
        return super().joint_log_prob(x, z, theta)[:, None]


@pytest.mark.parametrize("simulator, got", [(ColumnLogProb(), "[10, 1]"), (NumpyLogProb(), "ndarray"),
                                            (FloatLogProb(), "float")], ids=["column", "numpy", "float"])
def test_a_joint_log_prob_of_the_wrong_shape_or_type_is_named_with_what_it_returned(simulator, got):
    x, z, theta = exponential_runs(n=10)
    with pytest.raises(ValueError) as raised:
        mine(simulator, x, z, theta, theta, torch.tensor([1e-3]))
    assert str(raised.value) == f"{simulator.name}.joint_log_prob must return a tensor of shape [n] = [10], got {got}"
