"""The one score-term component: the targets each family trains on, its weights and clipping, where it warns, and
that the ratio, likelihood and posterior families all carry it."""

import warnings

import pytest
import torch

import sluice
from sluice.estimators import ALICE, ALICES, CARL, CASCAL, NDE, NPE, RASCAL, ROLR, SCANDAL, AugmentedNPE
from sluice.estimators.score_term import ScoreTerm

PRIOR = sluice.priors.BoxUniform([-1.0, -1.0], [1.0, 1.0])


@pytest.fixture(scope="module")
def data():
    return sluice.simulate(sluice.simulators.GaussianMixture(), PRIOR, n=400, seed=3, progress=False)


def test_target_is_the_joint_score_at_the_theta_that_made_x(data):
    target = ScoreTerm(alpha=1.0, scale_free=True, clip=None).targets(data)
    made_at_theta0 = data.y == 0
    assert torch.equal(target[made_at_theta0], data.t_xz0[made_at_theta0])
    assert torch.equal(target[~made_at_theta0], data.t_xz1[~made_at_theta0])


def test_posterior_target_adds_the_prior_score(data):
    prior = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), 2.0 * torch.ones(2)), 1)
    estimator = AugmentedNPE(epochs=1)
    estimator.prior_ = prior
    term = ScoreTerm(1.0, True, None, shift=estimator._score_shift())
    assert torch.allclose(term.targets(data), data.t_xz - data.theta / 4.0, atol=1e-6)  # ∇θ log N(θ; 0, 2²) = −θ/4


def test_scale_free_weights_are_inverse_variances_and_clipping_is_in_standard_deviations(data):
    term = ScoreTerm(alpha=2.0, scale_free=True, clip=1.5).fit(data, theta_std=torch.ones(2))
    spread = data.t_xz.std(dim=0)
    assert torch.allclose(term.weight, 1.0 / spread**2)
    clipped = term.clipped_targets(data)
    assert torch.all(clipped.abs() <= 1.5 * spread + 1e-6)
    assert torch.any(data.t_xz.abs() > 1.5 * spread), "the data should hold targets beyond the bound"
    theta_units = ScoreTerm(alpha=2.0, scale_free=False, clip=None).fit(data, theta_std=torch.tensor([0.5, 3.0]))
    assert torch.allclose(theta_units.weight, torch.tensor([0.25, 9.0]))


def test_term_is_alpha_times_weighted_squared_error_and_vanishes_at_the_target(data):
    term = ScoreTerm(alpha=3.0, scale_free=False, clip=None).fit(data, theta_std=torch.tensor([1.0, 2.0]))
    target = torch.tensor([[1.0, -1.0], [0.0, 2.0]])
    assert float(term(target, target)) == 0.0
    off = target + torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # row 0 off by 1 in θ_0 (weight 1), row 1 in θ_1 (weight 4)
    assert float(term(off, target)) == pytest.approx(3.0 * (1.0 + 4.0) / 2)


@pytest.mark.parametrize("augmented", [CASCAL, RASCAL, ALICES, SCANDAL, AugmentedNPE])
def test_every_augmented_family_trains_with_the_component(data, augmented):
    estimator = augmented(epochs=1).fit(data, epochs=1, seed=0)
    assert isinstance(estimator.score_term_, ScoreTerm)
    assert set(estimator.requires) >= {"t_xz0", "t_xz1"}


@pytest.mark.parametrize("black_box", [CARL, ROLR, ALICE, NDE, NPE])
def test_families_without_the_term_do_not_need_scores_and_warn_when_given_alpha(data, black_box):
    with pytest.warns(UserWarning, match=r"ignores alpha=5"):
        black_box(alpha=5)
    assert not {"t_xz0", "t_xz1"} & set(black_box().requires)
    assert black_box(epochs=1).fit(data, epochs=1, seed=0).score_term_ is None


@pytest.mark.parametrize("augmented", [CASCAL, ALICES, SCANDAL, AugmentedNPE])
def test_augmented_families_take_alpha_without_a_warning(augmented):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        augmented(alpha=5, clip_score=None, scale_free=False)
