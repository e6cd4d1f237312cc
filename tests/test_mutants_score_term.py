"""The score term's details that mutation testing (tools/mutation.sh) found unpinned by tests/test_score_term.py:
the spread behind the weights and bounds (one column, two rows, one row, spreads below 1), exact clipping, the
unfitted term, the constructor arguments that reach the fitted term, and the full text and origin of the warning
of a family that ignores them.

Most targets are small hand-made tables: ``ScoreTerm`` reads only ``data.t_xz`` and ``data.theta``.
"""

import math
import warnings
from types import SimpleNamespace

import pytest
import torch

import sluice
from sluice.estimators import ALICE, CARL, NDE, NPE, RASCAL, ROLR, AugmentedNPE
from sluice.estimators.posterior import prior_score
from sluice.estimators.score_term import ScoreTerm


def table(t_xz):
    """Rows with joint scores ``t_xz`` [n, p] (θ is not read without a shift)."""
    t_xz = torch.as_tensor(t_xz, dtype=torch.float32)
    return SimpleNamespace(t_xz=t_xz, theta=torch.zeros_like(t_xz))


@pytest.mark.parametrize("t_xz, variance", [([[0.1], [-0.1]], [0.02]),
                                            ([[0.5, 3.0], [-0.5, -3.0]], [0.5, 18.0])],
                         ids=["one parameter", "two parameters"])
def test_scale_free_weight_is_one_over_the_sample_variance_of_each_column_even_below_one(t_xz, variance):
    # two rows ±a have sample variance (a² + a²)/(2 − 1) = 2a²
    term = ScoreTerm(alpha=1.0, scale_free=True, clip=None).fit(table(t_xz), theta_std=torch.ones(len(variance)))
    assert torch.allclose(term.weight, 1.0 / torch.tensor(variance), rtol=1e-5)


def test_one_row_has_no_spread_to_measure_so_weights_are_one_and_bounds_are_clip():
    term = ScoreTerm(alpha=1.0, scale_free=True, clip=2.5).fit(table([[5.0, -2.0]]), theta_std=torch.ones(2))
    assert torch.equal(term.weight, torch.ones(2))
    assert torch.equal(term.bound, torch.full((2,), 2.5))


def test_targets_beyond_clip_standard_deviations_are_set_to_the_bound_and_the_others_are_untouched():
    # each column holds 0, 0, ±3: sample standard deviation √3, so at clip = 1 only the ±3 moves, to ±√3
    rows = table([[0.0, 0.0], [0.0, 0.0], [3.0, -3.0]])
    term = ScoreTerm(alpha=1.0, scale_free=True, clip=1.0).fit(rows, theta_std=torch.ones(2))
    root3 = math.sqrt(3.0)
    assert torch.allclose(term.bound, torch.full((2,), root3))
    assert torch.allclose(term.clipped_targets(rows), torch.tensor([[0.0, 0.0], [0.0, 0.0], [root3, -root3]]))
    unclipped = ScoreTerm(alpha=1.0, scale_free=True, clip=None).fit(rows, theta_std=torch.ones(2))
    assert torch.equal(unclipped.clipped_targets(rows), rows.t_xz)


def test_an_unfitted_term_is_the_plain_squared_error_on_unclipped_targets():
    rows = table([[0.0, 0.0], [0.0, 0.0], [3.0, -3.0]])
    term = ScoreTerm(alpha=2.0, scale_free=True, clip=1.0)
    assert torch.equal(term.clipped_targets(rows), rows.t_xz)
    score_hat = torch.tensor([[1.0, 2.0], [0.0, 1.0], [3.0, -3.0]])
    assert float(term(score_hat, rows.t_xz)) == pytest.approx(2.0 * (1 + 4 + 1 + 0) / 3)


@pytest.fixture(scope="module")
def data():
    return sluice.simulate(sluice.simulators.GaussianMixture(), sluice.priors.BoxUniform([-1.0, -1.0], [1.0, 1.0]),
                           n=400, seed=3, progress=False)


def test_the_constructor_arguments_reach_the_fitted_term(data):
    in_theta_units = RASCAL(alpha=0.5, scale_free=False, clip_score=2.0, epochs=1).fit(data, epochs=1, seed=0)
    term = in_theta_units.score_term_
    assert (term.alpha, term.scale_free, term.clip) == (0.5, False, 2.0)
    assert torch.allclose(term.weight, in_theta_units.model_.theta_scale.std ** 2)
    assert RASCAL(epochs=1).fit(data, epochs=1, seed=0).score_term_.scale_free is True


def test_a_fitted_posterior_term_adds_the_prior_score_it_was_given(data):
    prior = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), 2.0 * torch.ones(2)), 1)
    estimator = AugmentedNPE(epochs=1).fit(data, epochs=1, seed=0, prior=prior)
    expected = data.t_xz + prior_score(prior, data.theta)  # ∇θ log N(θ; 0, 2²) = −θ/4: not zero
    assert torch.allclose(estimator.score_term_.targets(data), expected, atol=1e-6)


@pytest.mark.parametrize("black_box", [CARL, ROLR, ALICE, NDE, NPE])
def test_a_family_without_the_term_names_all_it_ignores_in_one_warning(black_box):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        black_box(alpha=5, clip_score=None)
    assert len(caught) == 1 and caught[0].category is UserWarning
    reason = black_box.no_score_reason  # "it has no score term"; NDE and NPE add which family has it
    assert str(caught[0].message) == f"{black_box.__name__} ignores alpha=5, clip_score=None: {reason}"


@pytest.mark.parametrize("argument, value", [("alpha", 5), ("scale_free", False), ("clip_score", None)])
def test_each_score_argument_set_away_from_its_default_is_named(argument, value):
    with pytest.warns(UserWarning) as caught:
        CARL(**{argument: value})
    assert str(caught[0].message) == f"CARL ignores {argument}={value!r}: it has no score term"


def test_carl_names_an_ignored_ratio_clip():
    with pytest.warns(UserWarning) as caught:
        CARL(clip_log_r=5.0)
    assert str(caught[0].message) == "CARL ignores clip_log_r=5.0: it does not regress on the joint ratio"


# The test below reads the call stack: tools/mutation.sh deselects it (-k "not at_the_callers_line"),
# since mutmut reaches every mutated function through a trampoline that adds stack frames.
@pytest.mark.parametrize("family, arguments", [(CARL, {"alpha": 5}), (NDE, {"scale_free": False}), (NPE, {"alpha": 2}),
                                               (CARL, {"clip_log_r": 5.0})], ids=["CARL", "NDE", "NPE", "clip_log_r"])
def test_an_ignored_argument_is_reported_at_the_callers_line(family, arguments):
    with pytest.warns(UserWarning) as caught:
        family(**arguments)  # called here, not through a helper: one frame further up is pytest, not this file
    assert caught[0].filename == __file__, "the warning must point at the line that built the estimator"


def test_the_floor_is_three_hundredths_of_the_widest_spread():
    """Spreads 0.04 and 0.01 of the widest (standardised units): the first keeps 1/Var, the second is floored to
    0.03 of the widest, so no weight exceeds ~1100 times the widest component's (1e-3 let a normalisation
    nuisance's weight reach 10⁶ times and spoiled ALICES on the particle toy)."""
    rows = table([[100.0, 4.0, 1.0], [-100.0, -4.0, -1.0]])  # spreads √2 · (100, 4, 1)
    term = ScoreTerm(alpha=1.0, scale_free=True, clip=None).fit(rows, theta_std=torch.ones(3))
    widest = 2.0 * 100.0**2
    torch.testing.assert_close(term.weight, torch.tensor([1 / widest, 1 / (2.0 * 4.0**2), 1 / (0.03**2 * widest)]))


def test_a_score_component_that_never_varies_does_not_bury_the_others():
    """A normalisation nuisance's joint score is 0 in every event: its weight 1/Var would be 1/rounding² and drown
    every other term. Its spread is floored at MIN_RELATIVE_SPREAD of the largest, in standardised-θ units."""
    from sluice.estimators.score_term import MIN_RELATIVE_SPREAD

    rows = table([[1.0, 0.0], [-1.0, 1e-16], [3.0, 0.0], [-3.0, -1e-16]])
    theta_std = torch.tensor([1.0, 4.0])
    term = ScoreTerm(alpha=1.0, scale_free=True, clip=None).fit(rows, theta_std=theta_std)
    spread = rows.t_xz[:, 0].std()
    assert torch.allclose(term.weight[0], 1.0 / spread**2)  # the varying column is untouched
    floored = MIN_RELATIVE_SPREAD * spread * theta_std[0] / theta_std[1]
    assert torch.allclose(term.weight[1], 1.0 / floored**2, rtol=1e-5)
    # the floor follows the units: θ_2 in units c times larger (t_2 / c, σ_θ2 · c) scales its weight by c²
    rescaled = ScoreTerm(alpha=1.0, scale_free=True, clip=None).fit(rows, theta_std=torch.tensor([1.0, 8.0]))
    assert torch.allclose(rescaled.weight[1], 4.0 * term.weight[1], rtol=1e-5)
