"""Training on another device (``device=``) and rendering lensing images there.

The CPU tests run everywhere; the CUDA tests run only where torch sees a GPU (they are the prepared GPU check:
``pytest tests/test_device.py`` on such a machine)."""

import pytest
import torch

import sluice
from sluice.simulators.lensing import Lensing

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


@pytest.fixture(scope="module")
def galton():
    simulator = sluice.simulators.GaltonBoard()
    return sluice.simulate(simulator, simulator.default_prior(), n=600, seed=0, progress=False)


@pytest.fixture(scope="module")
def mixture():
    simulator = sluice.simulators.GaussianMixture()
    return sluice.simulate(simulator, simulator.default_prior(), n=600, seed=0, progress=False)


@pytest.mark.parametrize("name, problem", [("cuda:7", "asks for a CUDA GPU|has 1 CUDA|has \\d+ CUDA"),
                                           ("gpu", "is not a device name"), ("meta", "trains on 'cpu', 'cuda'")])
def test_a_device_this_machine_cannot_train_on_is_refused_by_name(galton, name, problem):
    with pytest.raises((RuntimeError, ValueError), match=f"ALICES: device='{name}'.*({problem})"):
        sluice.estimators.ALICES(device=name).fit(galton, epochs=1)


def test_device_is_a_hyperparameter_that_is_saved_and_the_fitted_network_lives_on_the_cpu(galton, tmp_path):
    estimator = sluice.estimators.CARL(device="cpu").fit(galton, epochs=2)
    assert estimator.get_params()["device"] == "cpu"
    assert all(p.device.type == "cpu" for p in estimator.model_.parameters())
    estimator.save(tmp_path / "carl.pt")
    assert sluice.load(tmp_path / "carl.pt").device == "cpu"


def test_lensing_rendered_on_an_explicit_cpu_device_is_the_default_rendering():
    theta = torch.tensor([[0.2, -0.9]]).repeat(20, 1)
    default, _ = Lensing().sample(theta, torch.Generator().manual_seed(3))
    explicit, _ = Lensing(device="cpu").sample(theta, torch.Generator().manual_seed(3))
    assert torch.equal(default, explicit)


@needs_cuda
@pytest.mark.parametrize("name", ["CARL", "ALICES", "RASCAL", "NDE", "SCANDAL", "SALLY", "SALLINO"])
def test_estimators_train_on_cuda_and_predict_on_the_cpu(name, galton, mixture):
    if name in ("SALLY", "SALLINO"):  # runs at one reference point
        simulator = sluice.simulators.GaussianMixture()
        galton = mixture = sluice.simulate(simulator, sluice.priors.Point([0.5, 0.0]), n=600, seed=0, progress=False)
    for data in (galton, mixture):
        estimator = getattr(sluice.estimators, name)(device="cuda").fit(data, epochs=3)
        assert all(p.device.type == "cpu" for p in estimator.model_.parameters())
        x, a, b = data.x[:50], data.theta0[:50], data.theta1[:50]
        values = estimator.log_ratio(x, a, b)
        assert values.device.type == "cpu" and torch.isfinite(values).all()
        assert estimator.history_.train_loss[-1] < estimator.history_.train_loss[0]


@needs_cuda
def test_augmented_npe_trains_on_cuda(mixture):
    from sluice.estimators.posterior import AugmentedNPE

    prior = sluice.simulators.GaussianMixture().default_prior()
    estimator = AugmentedNPE(device="cuda").fit(mixture, epochs=3, prior=prior)
    assert torch.isfinite(estimator.sample(mixture.x[0], 50)).all()


@needs_cuda
def test_cuda_training_matches_cpu_training_in_quality(mixture):
    """Same data, seed and epochs: the held-out loss on CUDA is within 2% of the CPU's (float rounding and
    kernels differ, so not bit for bit)."""
    losses = [sluice.estimators.ALICES(device=d).fit(mixture, epochs=20, seed=1).history_.validation_loss[-1]
              for d in ("cpu", "cuda")]
    assert abs(losses[0] - losses[1]) < 0.02 * abs(losses[0])


@needs_cuda
def test_lensing_renders_on_cuda_like_on_the_cpu_and_conv_alices_trains_there():
    theta = torch.tensor([[0.2, -0.9]]).repeat(200, 1)
    cpu, gpu = Lensing(), Lensing(device="cuda")
    z = cpu.sample_population(theta, torch.Generator().manual_seed(4))
    expected_cpu, expected_gpu = cpu.render(z, noise=False), gpu.render(z, noise=False)
    assert expected_gpu.device.type == "cpu"
    assert torch.allclose(expected_gpu, expected_cpu, rtol=1e-4, atol=1e-3)
    noisy = gpu.render(z, noise=True, generator=torch.Generator().manual_seed(5))
    again = gpu.render(z, noise=True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(noisy, noisy.round())
    # the same seed gives the same noise; CUDA's index_add_ sums the subhaloes' deflections in no fixed order,
    # so the expectation can differ in its last bits and flip a rare pixel's draw (seen on an H200)
    assert float((noisy != again).float().mean()) < 1e-2
    # Poisson: the summed residual over 200 × 4096 pixels has variance Σ μ
    residual = float((noisy - expected_gpu).sum()) / float(expected_gpu.sum()) ** 0.5
    assert abs(residual) < 5
    data = sluice.simulate(gpu, gpu.default_prior(), n=400, seed=0, progress=False)
    estimator = sluice.estimators.ALICES(device="cuda").fit(data, epochs=2, batch_size=64)
    values = estimator.log_ratio(data.x[:20], data.theta0[:20], data.theta1[:20])
    assert torch.isfinite(values).all()
