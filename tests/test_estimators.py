"""Every estimator of the family: it learns log r on the Galton board and the mixture, round-trips through
save/load, and refuses data that lack the fields it needs."""

import math

import pytest
import torch

import sluice
from sluice.app.benchmarks import GaltonTask, MixtureTask
from sluice.app.benchmarks.sample_efficiency import METHODS

AUGMENTED = [m for m in METHODS if m not in ("CARL", "NDE")]
N_TRAIN = {"galton": 3000, "mixture": 3000}

# The accuracy bounds: 1.5 × the worst error of five seeds at exactly the settings of `fitted` (N_TRAIN runs,
# epochs=60, MixtureTask(n_pairs=1000); data seed = fit seed = 0…4; seed 0 is the one tested). Every seed passes
# with a margin of 1.5, and an error that triples (the median over seeds × 3) fails for every method, since the
# worst seed is less than twice the median for each; the tested seed-0 error tripled fails too, except for CARL,
# whose seed 0 is a lucky one (it fails from 3.7× on Galton, 3.1× on the mixture). The benchmark CSVs in
# benchmarks/results/ do not apply: they train at N = 200, 1 000, 10 000 with early stopping from the default
# epochs. Measured on 2026-11-30 with a throw-away script that loops `getattr(sluice.estimators, m)().fit(
# task.training_data(m, 3000, seed=s), seed=s, epochs=60, progress=False)` over s = 0…4 and scores `task.error`
# (2 shared CPU cores, 2.5–10 min per seed).
#   method   galton MSE, seeds 0…4                        mixture nMSE, seeds 0…4
#   CARL     .00437 .00208 .01049 .00634 .01071           .0495 .1021 .0921 .0767 .0812
#   NDE      .00874 .00658 .01119 .01458 .00761           .1788 .1204 .1040 .1213 .1069
#   ROLR     .00084 .00120 .00106 .00112 .00040           .4336 .5246 .7142 .5954 .3684
#   ALICE    .00068 .00049 .00071 .00124 .00086           .0247 .0423 .0344 .0312 .0397
#   CASCAL   .00044 .00086 .00044 .00040 .00038           .0215 .0378 .0239 .0328 .0273
#   RASCAL   .00038 .00059 .00025 .00060 .00037           .4721 .5747 .3643 .2036 .2052
#   ALICES   .00044 .00086 .00035 .00064 .00047           .0202 .0363 .0229 .0318 .0271
#   SCANDAL  .00111 .00092 .00064 .00041 .00063           .0563 .0423 .0498 .0553 .0591
#   SALLY    .00025 .00012 .00017 .00024 .00026           .1520 .1653 .1617 .2189 .1921
#   (trivial log r̂ ≡ 0: galton .0632, mixture 1.871)
WORST_OF_FIVE_SEEDS = {  # rounded up to 3 significant figures
    "galton": {"CARL": 0.0108, "NDE": 0.0146, "ROLR": 0.00120, "ALICE": 0.00124, "CASCAL": 0.000861,
               "RASCAL": 0.000600, "ALICES": 0.000860, "SCANDAL": 0.00111, "SALLY": 0.000256},
    "mixture": {"CARL": 0.103, "NDE": 0.179, "ROLR": 0.715, "ALICE": 0.0424, "CASCAL": 0.0378,
                "RASCAL": 0.575, "ALICES": 0.0364, "SCANDAL": 0.0592, "SALLY": 0.219},
}
MARGIN = 1.5
# the settings those bounds were measured with (the defaults before issue 16 chose new ones on the task suite):
# pinned, so that the bounds keep meaning what the comment above says; the defaults themselves are judged by the
# suite benchmark (docs/benchmarks.md)
MEASURED_WITH = {"hidden": (64, 64), "learning_rate": 1e-3, "schedule": "plateau"}


def accuracy_bound(task, method: str) -> float:
    if method == "SALLINO":  # being reworked: keeps its old bound, a fraction of the trivial error, until remeasured
        return {"galton": 0.25, "mixture": 0.5}[task.name] * task.trivial_error()
    return MARGIN * WORST_OF_FIVE_SEEDS[task.name][method]


@pytest.fixture(scope="module")
def galton():
    return GaltonTask()


@pytest.fixture(scope="module")
def mixture():
    return MixtureTask(n_pairs=1000)


@pytest.fixture(scope="module")
def fitted(galton, mixture):
    """Each method fitted once per task with its defaults (small budgets, fixed seeds)."""
    models = {}
    for task in (galton, mixture):
        for method in METHODS:
            data = task.training_data(method, N_TRAIN[task.name], seed=0)
            models[task.name, method] = getattr(sluice.estimators, method)(**MEASURED_WITH).fit(data, seed=0,
                                                                                                 epochs=60)
    return models


@pytest.mark.parametrize("method", METHODS)
def test_each_method_is_as_accurate_on_galton_as_its_measured_seed_spread(fitted, galton, method):
    error, bound = galton.error(fitted["galton", method]), accuracy_bound(galton, method)
    assert error < bound, f"{method}: MSE {error:.5f}, bound {bound:.5f} (trivial {galton.trivial_error():.4f})"


@pytest.mark.parametrize("method", METHODS)
def test_each_method_is_as_accurate_on_the_mixture_as_its_measured_seed_spread(fitted, mixture, method):
    error, bound = mixture.error(fitted["mixture", method]), accuracy_bound(mixture, method)
    assert error < bound, f"{method}: nMSE {error:.4f}, bound {bound:.4f} (trivial {mixture.trivial_error():.3f})"


def test_augmented_methods_beat_black_box_at_equal_budget_on_galton(fitted, galton):
    best_black_box = min(galton.error(fitted["galton", m]) for m in ("CARL", "NDE"))
    for method in ("ALICES", "CASCAL", "SCANDAL"):
        assert galton.error(fitted["galton", method]) < best_black_box, method


@pytest.mark.parametrize("method", [m for m in METHODS if m not in ("SALLY", "SALLINO")])
def test_log_ratio_is_a_difference_of_one_function_of_theta(fitted, mixture, method):
    """log r̂(x|θ0, θ1) = g(x, θ0) − g(x, θ1): antisymmetric and zero on the diagonal (which any such parametrisation
    gives by construction), and additive along a chain θ0 → θ1 → θ2, which an antisymmetrised two-point network
    f(x, θ0, θ1) − f(x, θ1, θ0) would not be; scans rely on it, as they measure every θ against one θ_ref."""
    estimator = fitted["mixture", method]
    x, a, b, c = mixture.x[:50], mixture.theta0[:50], mixture.theta1[:50], mixture.theta0[50:100]
    assert torch.allclose(estimator.log_ratio(x, a, b), -estimator.log_ratio(x, b, a), atol=1e-5)
    assert torch.allclose(estimator.log_ratio(x, a, a), torch.zeros(50), atol=1e-5)
    chained = estimator.log_ratio(x, a, b) + estimator.log_ratio(x, b, c)
    assert torch.allclose(chained, estimator.log_ratio(x, a, c), atol=1e-4)  # float32 rounding: ~1e-6


# Measured with the accuracy bounds above (same fits, seeds 0…4), on the Galton board at θ = −0.7: the relative
# squared error of the learned score over x = 8…22, and KL(p ‖ p̂) in nats of the learned likelihoods.
#   score  ALICES  .0102 .0126 .0087 .0129 .0088    SCANDAL .0185 .0136 .0092 .0083 .0119
#          SALLY   .0030 .0018 .0011 .0036 .0032
#   KL     NDE     .0090 .0079 .0041 .0091 .0087    SCANDAL .0095 .0050 .0055 .0057 .0093
WORST_SCORE_ERROR = {"ALICES": 0.0129, "SCANDAL": 0.0185, "SALLY": 0.00363}
WORST_KL = {"NDE": 0.00913, "SCANDAL": 0.00955}


def test_learned_score_approximates_the_exact_score(fitted):
    board = sluice.simulators.GaltonBoard()
    x = torch.arange(8.0, 23.0)[:, None]
    theta = torch.full((len(x), 1), -0.7, dtype=torch.float64, requires_grad=True)
    (exact,) = torch.autograd.grad(board.log_likelihood(x, theta).sum(), theta)
    for method, worst in WORST_SCORE_ERROR.items():
        learned = fitted["galton", method].score(x, torch.tensor([-0.7]))
        relative = float(((learned - exact.float()) ** 2).mean() / (exact.float() ** 2).mean())
        assert relative < MARGIN * worst, f"{method}: relative squared error of the score {relative:.4f}"


def test_likelihood_methods_give_normalised_discrete_likelihoods_close_to_the_exact_one(fitted):
    board = sluice.simulators.GaltonBoard()
    support = torch.arange(-20.0, 51.0)[:, None]
    theta = torch.tensor([-0.7])
    exact = board.log_likelihood(support, theta).double()
    possible = exact > -math.inf
    for method, worst in WORST_KL.items():
        learned = fitted["galton", method].log_likelihood(support, theta).double()
        assert abs(float(learned.exp().sum()) - 1.0) < 1e-4  # a softmax over the support: 1 by construction
        kl = float((exact[possible].exp() * (exact[possible] - learned[possible])).sum())
        assert kl < MARGIN * worst, f"{method}: KL(p ‖ p̂) = {kl:.4f} nats"


@pytest.mark.parametrize("method", METHODS)
def test_save_and_load_give_identical_outputs(fitted, mixture, tmp_path, method):
    estimator = fitted["mixture", method]
    estimator.save(tmp_path / "model.pt")
    again = sluice.load(tmp_path / "model.pt")
    assert type(again) is type(estimator)
    x, a, b = mixture.x[:40], mixture.theta0[:40], mixture.theta1[:40]
    assert torch.equal(again.log_ratio(x, a, b), estimator.log_ratio(x, a, b))
    assert torch.equal(again.score(x, a), estimator.score(x, a))
    if hasattr(estimator, "log_likelihood"):
        assert torch.equal(again.log_likelihood(x, a), estimator.log_likelihood(x, a))


def test_ensemble_averages_and_round_trips(fitted, galton, tmp_path):
    members = [fitted["galton", m] for m in ("ALICES", "CASCAL", "RASCAL")]
    ensemble = sluice.estimators.Ensemble(members)
    x, a, b = galton.x, torch.tensor([-0.8]), torch.tensor([-0.6])
    stacked = torch.stack([m.log_ratio(x, a, b) for m in members])
    mean, spread = ensemble.log_ratio_with_uncertainty(x, a, b)
    assert torch.allclose(mean, stacked.mean(dim=0)) and torch.allclose(spread, stacked.std(dim=0))
    assert torch.all(spread > 0)
    ensemble.save(tmp_path / "ensemble.pt")
    assert torch.equal(sluice.load(tmp_path / "ensemble.pt").log_ratio(x, a, b), mean)


def test_ensemble_fit_uses_a_seed_per_member(galton):
    data = galton.training_data("ALICES", 300, seed=0)
    ensemble = sluice.estimators.Ensemble([sluice.estimators.ALICES(), sluice.estimators.ALICES()]).fit(data, epochs=3)
    first, second = (m.log_ratio(galton.x, torch.tensor([-0.8]), torch.tensor([-0.6])) for m in ensemble.estimators)
    assert not torch.equal(first, second)


def test_an_ensemble_carries_its_members_parameter_names_and_scans_as_their_mean(fitted, galton):
    """An ensemble carries its members' parameter names (``profile_scan`` and the rate term locate parameters by
    them), and its scan is the mean of the members' log-likelihood ratios."""
    members = [fitted["galton", m] for m in ("ALICES", "CASCAL")]
    ensemble = sluice.estimators.Ensemble(members)
    assert ensemble.parameter_names_ == members[0].parameter_names_
    grid = torch.linspace(-0.9, -0.5, 5)[:, None]
    scans = [sluice.inference.scan(model, galton.x[:50], grid, refine=False) for model in (*members, ensemble)]
    expected = (scans[0].log_likelihood_ratio + scans[1].log_likelihood_ratio) / 2
    torch.testing.assert_close(scans[2].log_likelihood_ratio, expected, rtol=1e-5, atol=1e-4)
    with pytest.raises(AttributeError, match="not fitted"):
        _ = sluice.estimators.Ensemble([sluice.estimators.ALICES()]).parameter_names_


def test_the_same_seed_gives_the_same_estimator(galton):
    data = galton.training_data("ALICES", 400, seed=0)
    first = sluice.estimators.ALICES().fit(data, seed=3, epochs=5)
    second = sluice.estimators.ALICES().fit(data, seed=3, epochs=5)
    x, a, b = galton.x, torch.tensor([-0.8]), torch.tensor([-0.6])
    assert torch.equal(first.log_ratio(x, a, b), second.log_ratio(x, a, b))


def test_galton_likelihood_is_categorical_and_mixture_a_flow(fitted):
    assert type(fitted["galton", "NDE"].model_).__name__ == "CategoricalLikelihood"
    assert type(fitted["mixture", "SCANDAL"].model_).__name__ == "FlowLikelihood"


@pytest.mark.parametrize("method, field", [("SCANDAL", "t_xz0"), ("ALICES", "log_r_xz"), ("ROLR", "log_r_xz"),
                                           ("CASCAL", "t_xz0"), ("SALLY", "t_xz0"), ("RASCAL", "log_r_xz")])
def test_missing_joint_fields_are_named(method, field):
    data = sluice.simulate(sluice.simulators.GaltonBoard(), sluice.priors.Point([-0.7]), 100, seed=0)
    black_box = sluice.AugmentedData(theta0=data.theta0, theta1=data.theta1, y=data.y, x=data.x)
    with pytest.raises(ValueError, match=f"{method} needs .*'{field}'"):
        getattr(sluice.estimators, method)().fit(black_box)


def test_black_box_methods_train_on_black_box_data():
    data = sluice.simulate(sluice.simulators.GaltonBoard(), sluice.priors.BoxUniform([-1.0], [-0.4]), 300, seed=0)
    black_box = sluice.AugmentedData(theta0=data.theta0, theta1=data.theta1, y=data.y, x=data.x)
    for method in ("CARL", "NDE"):
        getattr(sluice.estimators, method)().fit(black_box, epochs=2)


def test_sally_needs_runs_at_its_reference_point():
    board = sluice.simulators.GaltonBoard()
    data = sluice.simulate(board, board.default_prior(), 200, seed=0)
    with pytest.raises(ValueError, match="needs runs at one reference point"):
        sluice.estimators.SALLY().fit(data)
    with pytest.raises(ValueError, match="only 0 runs were made at θ_ref"):
        sluice.estimators.SALLY(theta_ref=[-0.123]).fit(data)


def test_misuse_gets_clear_errors(tmp_path):
    with pytest.raises(TypeError, match="needs sluice.AugmentedData"):
        sluice.estimators.CARL().fit({"x": torch.zeros(3)})
    with pytest.raises(RuntimeError, match="not fitted yet"):
        sluice.estimators.ALICES().log_ratio(torch.zeros(3, 1), torch.zeros(1), torch.zeros(1))
    with pytest.raises(ValueError, match="unknown activation"):
        sluice.estimators.CARL(activation="swish").fit(
            sluice.simulate(sluice.simulators.GaltonBoard(), sluice.priors.Point([-0.7]), 50, reference=[-0.6]))
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a readable sluice model"):
        sluice.load(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        sluice.load(tmp_path / "absent.pt")


def test_save_refuses_to_overwrite(tmp_path, fitted):
    path = tmp_path / "m.pt"
    path.write_bytes(b"user's file")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        fitted["galton", "CARL"].save(path)
    assert path.read_bytes() == b"user's file"


def test_simulator_without_joint_log_prob_runs_black_box_methods_and_augmented_ones_refuse():
    from toys import BlackBox

    data = sluice.simulate(BlackBox(), sluice.priors.BoxUniform([-1.0], [1.0]), 400, seed=0)
    assert data.log_r_xz is None and data.t_xz0 is None
    for method in ("CARL", "NDE"):
        estimator = getattr(sluice.estimators, method)().fit(data, epochs=2)
        assert torch.isfinite(estimator.log_ratio(data.x[:5], data.theta0[:5], data.theta1[:5])).all()
    with pytest.raises(ValueError, match=r"ALICES needs .*joint log ratio.*data from BlackBox .*no joint_log_prob"):
        sluice.estimators.ALICES().fit(data)
    with pytest.raises(ValueError, match=r"SCANDAL needs .*joint score"):
        sluice.estimators.SCANDAL().fit(data)


@pytest.mark.parametrize("method", ["NDE", "SCANDAL"])
def test_categorical_models_refuse_x_outside_their_support_by_name(fitted, galton, method):
    model = fitted["galton", method]
    inside = torch.tensor([[5.0], [6.0]])
    assert torch.isfinite(model.log_ratio(inside, [-0.8], [-0.6])).all()
    with pytest.raises(ValueError, match=rf"{method}: 2 of 3 x lie outside.*\[\[1000.0\], \[2.5\]\]"):
        model.log_ratio(torch.tensor([[5.0], [1000.0], [2.5]]), [-0.8], [-0.6])


def test_arguments_an_estimator_does_not_use_are_named_in_a_warning():
    with pytest.warns(UserWarning, match="CARL ignores alpha=2.0: it has no score term"):
        sluice.estimators.CARL(alpha=2.0)
    with pytest.warns(UserWarning, match="CASCAL ignores clip_log_r=5"):
        sluice.estimators.CASCAL(clip_log_r=5)
    with pytest.warns(UserWarning, match="NDE ignores clip_score=None"):
        sluice.estimators.NDE(clip_score=None)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sluice.estimators.ALICES(alpha=3.0, clip_log_r=5.0)  # uses both: no warning
        sluice.estimators.SCANDAL(alpha=0.5)
