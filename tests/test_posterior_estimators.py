"""NPE and AugmentedNPE on a conjugate Gaussian toy with a latent variable, where the posterior is exact.

Toy: θ ~ N(0, 1), z ~ N(θ, 1), x = z + N(0, 0.3²); z is the latent. Joint score t(x,z|θ) = z − θ.
Marginal x | θ ~ N(θ, s²) with s² = 1.09, so the posterior is N(x/(1 + s²), s²/(1 + s²)) and its score is
−(θ − x/(1 + s²)) (1 + s²)/s².
"""

import math
import statistics

import pytest
import torch
from torch.distributions import Independent, Normal

import sluice
from conftest import assert_mean_close
from sluice.estimators import losses
from sluice.estimators.base import REGISTRY
from sluice.estimators.posterior import NPE, AugmentedNPE, posterior_score_target

LATENT_SD, NOISE_SD = 1.0, 0.3
S2 = LATENT_SD**2 + NOISE_SD**2
PRIOR = Independent(Normal(torch.zeros(1), torch.ones(1)), 1)
OBSERVED = (-1.5, 0.0, 0.7, 2.0)


class LatentGaussian(sluice.Simulator):
    parameter_names = ("mu",)

    def sample(self, theta, generator=None):
        z = theta + LATENT_SD * torch.randn(theta.shape, generator=generator)
        return z + NOISE_SD * torch.randn(theta.shape, generator=generator), {"z": z}

    def joint_log_prob(self, x, z, theta):
        return (-0.5 * ((z["z"] - theta) / LATENT_SD) ** 2).sum(dim=1)


def exact_posterior(x: float) -> Normal:
    return Normal(x / (1 + S2), math.sqrt(S2 / (1 + S2)))


def exact_posterior_score(theta, x):
    return -(theta - x / (1 + S2)) * (1 + S2) / S2


def forward_kl(estimator, n: int = 4000) -> float:
    """E_p[log p(θ|x) − log q̂(θ|x)] averaged over the observations: 0 for the exact posterior."""
    values = []
    for k, x in enumerate(OBSERVED):
        truth = exact_posterior(x)
        theta = truth.mean + truth.stddev * torch.randn(n, 1, generator=torch.Generator().manual_seed(k))
        values.append(float((truth.log_prob(theta[:, 0]) - estimator.log_prob(theta, torch.tensor([x]))).mean()))
    return statistics.fmean(values)


@pytest.fixture(scope="module")
def fitted():
    data = sluice.simulate(LatentGaussian(), PRIOR, 1000, seed=0, progress=False)
    return AugmentedNPE().fit(data, epochs=150, seed=0, prior=PRIOR, progress=False)


def test_posterior_estimators_are_registered():
    assert REGISTRY["NPE"] is NPE and REGISTRY["AugmentedNPE"] is AugmentedNPE


def test_augmented_npe_target_minimised_by_true_posterior_score():
    n = 200_000
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(n, 1, generator=g)
    z = theta + LATENT_SD * torch.randn(n, 1, generator=g)
    x = z + NOISE_SD * torch.randn(n, 1, generator=g)
    target = posterior_score_target(z - theta, theta, PRIOR)  # t + ∇ log π, the prior score by autograd
    truth = exact_posterior_score(theta, x)
    assert_mean_close(target - truth, 0.0, "t(x,z|θ) + ∇ log π(θ) − ∇ log p(θ|x)")
    per_row = torch.func.vmap(lambda a, b: losses.score_loss(a[None], b[None]))
    at_truth = per_row(truth, target)
    for name, perturbed in {"shift": truth + 0.05, "scale 1.1": 1.1 * truth, "scale 0.9": 0.9 * truth,
                            "likelihood score only": truth - (-theta), "tilt in x": truth + 0.05 * x}.items():
        difference = per_row(perturbed, target) - at_truth
        assert difference.mean() > 5 * difference.std() / math.sqrt(n), f"{name}: loss not above the truth's"


def test_box_prior_adds_no_score_inside():
    theta = torch.rand(10, 2)
    t = torch.randn(10, 2)
    assert torch.equal(posterior_score_target(t, theta, sluice.priors.BoxUniform([0.0, 0.0], [1.0, 1.0])), t)


def test_augmented_npe_matches_exact_posterior(fitted):
    """Mean and sd of 4 000 draws per observation within 4 Monte-Carlo standard errors plus a model-error
    allowance of 0.1 posterior sd (mean) and 10% (sd)."""
    n = 4000
    for x in OBSERVED:
        truth = exact_posterior(x)
        sd = float(truth.stddev)
        samples = fitted.sample(torch.tensor([x]), n, seed=1)[:, 0]
        assert samples.shape == (n,)
        assert abs(float(samples.mean()) - float(truth.mean)) < 4 * sd / math.sqrt(n) + 0.1 * sd, f"mean at x={x}"
        assert abs(float(samples.std()) - sd) < 4 * sd / math.sqrt(2 * n) + 0.1 * sd, f"sd at x={x}"


def test_augmented_npe_implies_the_likelihood_ratio(fitted):
    """log q̂(θ0|x) − log q̂(θ1|x) − log π(θ0) + log π(θ1) against log r(x|θ0,θ1) = −(x−θ0)²/2s² + (x−θ1)²/2s²
    over (θ0, θ1) from the prior, x ~ θ1: normalised MSE below 0.15 (log r̂ ≡ 0 scores 1.2; leaving out
    the prior terms, 0.32)."""
    g = torch.Generator().manual_seed(3)
    theta0, theta1 = torch.randn(2000, 1, generator=g), torch.randn(2000, 1, generator=g)
    x = theta1 + math.sqrt(S2) * torch.randn(2000, 1, generator=g)
    exact = ((-(x - theta0) ** 2 + (x - theta1) ** 2) / (2 * S2))[:, 0]
    predicted = fitted.log_ratio(x, theta0, theta1)
    assert float(((predicted - exact) ** 2).mean() / exact.var()) < 0.15


def test_augmented_npe_beats_npe_at_equal_budget():
    """500 simulations, 3 seeds (data and fit): the median forward KL to the exact posterior of AugmentedNPE is
    below half that of NPE."""
    kl = {NPE: [], AugmentedNPE: []}
    for seed in range(3):
        data = sluice.simulate(LatentGaussian(), PRIOR, 500, seed=seed, progress=False)
        for method in kl:
            kl[method].append(forward_kl(method().fit(data, epochs=100, seed=seed, prior=PRIOR, progress=False)))
    assert statistics.median(kl[AugmentedNPE]) < 0.5 * statistics.median(kl[NPE]), kl


def test_save_and_load_give_the_same_posterior(tmp_path):
    box = sluice.priors.BoxUniform([-1.0], [1.0])
    data = sluice.simulate(LatentGaussian(), box, 300, seed=0, progress=False)
    estimator = AugmentedNPE().fit(data, epochs=3, prior=box, progress=False)
    estimator.save(tmp_path / "npe.pt")
    loaded = sluice.load(tmp_path / "npe.pt")
    assert isinstance(loaded, AugmentedNPE)
    theta, x = torch.linspace(-0.9, 0.9, 7)[:, None], torch.tensor([0.3])
    assert torch.equal(loaded.log_prob(theta, x), estimator.log_prob(theta, x))
    samples = loaded.sample(x, 500, seed=2)
    assert torch.equal(samples, estimator.sample(x, 500, seed=2))
    assert float(samples.min()) >= -1.0 and float(samples.max()) < 1.0, "draws outside the prior's box"
    assert torch.isinf(loaded.log_prob(torch.tensor([[1.5]]), x)).all()


def test_npe_refuses_data_with_a_reference_point():
    data = sluice.simulate(LatentGaussian(), PRIOR, 100, reference=[0.0], seed=0, progress=False)
    with pytest.raises(ValueError, match="without a reference"):
        NPE().fit(data, epochs=1, prior=PRIOR)
