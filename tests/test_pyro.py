"""sluice.from_pyro: Pyro models re-scored by replay give the same joint quantities as the built-in simulators."""

import importlib.util
import math
import sys

import pytest
import torch

import sluice
from conftest import assert_mean_close
from sluice.mining.joint import mine

pyro = pytest.importorskip("pyro")
dist = pytest.importorskip("pyro.distributions")
import sluice.simulators.pyro as sluice_pyro  # noqa: E402  (after the skip)
from sluice.simulators.pyro import from_pyro  # noqa: E402

NO_FD = torch.tensor([1e-3, 1e-3])  # finite-difference step: unused, every score here comes from autograd


def galton_model(theta):
    """The Galton board in Pyro: 20 Bernoulli decisions "right_ℓ" per run; x = the final nail (deterministic)."""
    n = theta.shape[0]
    nail = torch.full((n,), 15.0, dtype=theta.dtype)
    with pyro.plate("runs", n):
        for level in range(20):
            wiggle = math.sin(math.pi * level / 19)
            p_left = 0.5 * (1 - wiggle) + wiggle * torch.sigmoid(10 * theta[:, 0] * (2 * nail / 30 - 1))
            right = pyro.sample(f"right_{level}", dist.Bernoulli(probs=1 - p_left))
            nail = nail + right - (level % 2)
        pyro.deterministic("x", nail[:, None], event_dim=1)


def mixture_model(theta):
    """sluice.simulators.GaussianMixture in Pyro: k ~ Bernoulli(σ(2(a − b))), x | k ~ N(μ_k, σ_k² I)."""
    a, b = theta[:, 0], theta[:, 1]
    with pyro.plate("runs", theta.shape[0]):
        k = pyro.sample("component", dist.Bernoulli(logits=2 * (a - b)))
        means = torch.where(k[:, None] == 1, torch.stack([1.5 + b, -1.5 + a], dim=1), torch.stack([a, b], dim=1))
        width = 0.6 + (0.4 - 0.6) * k
        pyro.sample("x", dist.Normal(means, width[:, None]).to_event(1))


def gaussian_chain(theta):
    """A reparameterised latent: z ~ N(θ, 1), x ~ N(z, 1); joint score t = z − θ."""
    with pyro.plate("runs", theta.shape[0]):
        z = pyro.sample("z", dist.Normal(theta[:, 0], 1.0))
        pyro.sample("x", dist.Normal(z, 1.0))


def galton_latents_from_pyro(z: dict) -> dict:
    """Pyro's {"right_ℓ": [n]} as GaltonBoard's {"right", "nail"} [n, 20]: nail_ℓ = 15 + Σ_(k<ℓ) (right_k − odd_k)."""
    right = torch.stack([z[f"right_{level}"] for level in range(20)], dim=1)
    odd = torch.arange(20) % 2
    moves = torch.cumsum(right - odd, dim=1)
    nail = 15 + torch.cat([torch.zeros(len(right), 1), moves[:, :-1]], dim=1)
    return {"right": right.to(torch.uint8), "nail": nail.to(torch.uint8)}, 15 + moves[:, -1]


def assert_same_joint_quantities(mined, expected):
    assert torch.allclose(mined.log_r_xz, expected.log_r_xz, atol=1e-4, rtol=1e-4)
    assert torch.allclose(mined.t_xz0, expected.t_xz0, atol=1e-3, rtol=1e-4)
    assert torch.allclose(mined.t_xz1, expected.t_xz1, atol=1e-3, rtol=1e-4)
    assert expected.log_r_xz.abs().mean() > 0.01 and expected.t_xz0.abs().mean() > 0.1  # not vacuous


def test_pyro_galton_board_mines_the_same_log_r_and_score_as_the_built_in():
    simulator, board = from_pyro(galton_model, ["theta"]), sluice.simulators.GaltonBoard()
    generator = torch.Generator().manual_seed(0)
    theta_run = -1.0 + 0.6 * torch.rand(2000, 1, generator=generator)
    x, z = simulator.sample(theta_run, generator=generator)
    board_z, final_nail = galton_latents_from_pyro(z)
    assert x.shape == (2000, 1) and sorted(z) == sorted(f"right_{level}" for level in range(20))
    assert torch.equal(x[:, 0], final_nail.to(torch.float32))
    theta0, theta1 = torch.full((2000, 1), -0.8), -1.0 + 0.6 * torch.rand(2000, 1, generator=generator)
    assert_same_joint_quantities(mine(simulator, x, z, theta0, theta1, NO_FD[:1]),
                                 mine(board, x, board_z, theta0, theta1, NO_FD[:1]))


def test_pyro_mixture_mines_the_same_log_r_and_score_as_the_built_in_for_the_same_draws():
    simulator, mixture = from_pyro(mixture_model, ["a", "b"]), sluice.simulators.GaussianMixture()
    generator = torch.Generator().manual_seed(1)
    theta_run, theta0, theta1 = (2 * torch.rand(3, 1000, 2, generator=generator) - 1).unbind(0)
    x, mixture_z = mixture.sample(theta_run, generator=generator)
    z = {"component": mixture_z["component"].to(torch.float32)}
    assert_same_joint_quantities(mine(simulator, x, z, theta0, theta1, NO_FD),
                                 mine(mixture, x, mixture_z, theta0, theta1, NO_FD))
    # the full joint density, normalising constants included
    assert torch.allclose(simulator.joint_log_prob(x, z, theta0), mixture.joint_log_prob(x, mixture_z, theta0),
                          atol=1e-4)


def test_pyro_mixture_samples_x_as_a_two_column_tensor_with_the_built_in_mean():
    simulator, mixture = from_pyro(mixture_model, ["a", "b"]), sluice.simulators.GaussianMixture()
    theta = torch.tensor([0.3, -0.2]).expand(20_000, 2)
    x, z = simulator.sample(theta, generator=torch.Generator().manual_seed(2))
    assert x.shape == (20_000, 2) and x.dtype == torch.float32 and set(z) == {"component"}
    reference, _ = mixture.sample(theta, generator=torch.Generator().manual_seed(3))
    assert_mean_close(x, reference.mean(dim=0), "mean of the Pyro mixture's x")


def test_reparameterised_latent_gets_the_score_of_its_density_not_the_pathwise_derivative():
    simulator = from_pyro(gaussian_chain, ["mu"])
    generator = torch.Generator().manual_seed(4)
    theta = torch.randn(500, 1, generator=generator)
    x, z = simulator.sample(theta, generator=generator)
    # a z that still carries a graph to θ, as an rsample would: the replay must cut it
    theta_var = theta.clone().requires_grad_(True)
    pathwise_z = {"z": theta_var[:, 0] + (z["z"] - theta[:, 0])}
    (score,) = torch.autograd.grad(simulator.joint_log_prob(x, pathwise_z, theta_var).sum(), theta_var)
    assert torch.allclose(score[:, 0], z["z"] - theta[:, 0], atol=1e-5)  # t = z − θ
    # the pathwise derivative of log N(z; θ, 1) + log N(x; z, 1) with z = θ + ε would be x − z
    assert (score[:, 0] - (x[:, 0] - z["z"])).abs().mean() > 0.5


def test_joint_score_has_mean_zero_in_simulated_data():
    for model, names in [(mixture_model, ["a", "b"]), (gaussian_chain, ["mu"])]:
        simulator = from_pyro(model, names)
        prior = sluice.priors.BoxUniform(low=[-1.0] * len(names), high=[1.0] * len(names))
        data = sluice.simulate(simulator, prior, n=4000, seed=0)
        assert_mean_close(data.t_xz, torch.zeros(len(names)), f"E[t] of {model.__name__}")


def test_sample_is_reproducible_from_the_generator_and_leaves_the_global_generator_alone():
    simulator = from_pyro(mixture_model, ["a", "b"])
    theta = torch.zeros(100, 2)
    state = torch.get_rng_state()
    first = simulator.sample(theta, generator=torch.Generator().manual_seed(5))
    again = simulator.sample(theta, generator=torch.Generator().manual_seed(5))
    other = simulator.sample(theta, generator=torch.Generator().manual_seed(6))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1]["component"], again[1]["component"])
    assert not torch.equal(first[0], other[0])
    prior = sluice.priors.BoxUniform(low=[-1.0, -1.0], high=[1.0, 1.0])
    assert torch.equal(sluice.simulate(simulator, prior, n=64, seed=7).x, sluice.simulate(simulator, prior, n=64,
                                                                                          seed=7).x)


def test_check_simulator_passes_on_the_pyro_mixture():
    report = sluice.check_simulator(from_pyro(mixture_model, ["a", "b"]),
                                    sluice.priors.BoxUniform(low=[-1.0, -1.0], high=[1.0, 1.0]))
    assert report.ok, str(report)


def test_sites_outside_the_runs_plate_and_missing_latents_are_reported():
    def unplated(theta):
        shared = pyro.sample("shared", dist.Normal(0.0, 1.0))
        with pyro.plate("runs", theta.shape[0]):
            pyro.sample("x", dist.Normal(theta[:, 0] + shared, 1.0))

    with pytest.raises(ValueError, match="'shared'.*plate"):
        from_pyro(unplated, ["mu"]).sample(torch.zeros(3, 1))
    with pytest.raises(ValueError, match="observed site"):
        from_pyro(gaussian_chain, ["mu"], observed=("y",)).sample(torch.zeros(3, 1))
    with pytest.raises(KeyError, match="'z'"):
        from_pyro(gaussian_chain, ["mu"]).joint_log_prob(torch.zeros(3, 1), {}, torch.zeros(3, 1))


def test_without_pyro_the_module_imports_and_from_pyro_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyro", None)  # `import pyro` now raises ImportError
    spec = importlib.util.spec_from_file_location("sluice.simulators._pyro_without_pyro", sluice_pyro.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # no Pyro needed to import the module
    with pytest.raises(ImportError, match=r'pip install "sluice-sbi\[pyro\]"'):
        module.from_pyro(gaussian_chain, ["mu"])
