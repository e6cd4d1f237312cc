"""Auto: the held-out criterion ranks estimators by their true error (the decomposition of docs/theory.md,
"Choosing among estimators without the truth"), selection and stacking pick the better candidate, every candidate
holds out the same rows, and the fitted choice survives save and load.

Fixed predictors built from GaussianMixture's exact likelihood, plus known shifts, make the expectations exact."""

import math

import pytest
import torch

import sluice
from conftest import assert_mean_close
from sluice.data.augmented import AugmentedData
from sluice.estimators import ALICE, Auto, losses
from sluice.estimators.auto import DEFAULT_CANDIDATES, ratio_criterion_rows, score_residual_rows
from sluice.estimators.base import FitSeeds
from sluice.inference.exact import ExactLikelihood

MIXTURE = sluice.simulators.GaussianMixture()
EXACT = ExactLikelihood(MIXTURE)


class Shifted:
    """A candidate that learns nothing: log r̂ = log r(x|θ0,θ1) + ``shift`` and t̂ = t(x|θ) + ``score_shift``,
    from the mixture's exact likelihood. It needs only the black-box fields."""

    requires = ("theta0", "theta1", "y", "x")

    def __init__(self, shift: float = 0.0, score_shift=(0.0, 0.0)):
        self.shift, self.score_shift = shift, torch.tensor(score_shift)

    def fit(self, data, epochs=None, batch_size=None, validation_fraction=0.2, seed=0, progress=None):
        self.parameter_names_ = data.parameter_names
        return self

    def log_ratio(self, x, theta0, theta1):
        return EXACT.log_ratio(x, theta0, theta1) + self.shift

    def score(self, x, theta):
        return EXACT.score(x, theta) + self.score_shift


@pytest.fixture(scope="module")
def rows():
    return sluice.simulate(MIXTURE, MIXTURE.default_prior(), n=20_000, seed=1)


def bernoulli_kl(s: torch.Tensor, s_hat: torch.Tensor) -> torch.Tensor:
    """KL(Bern(s) ‖ Bern(ŝ)) per row, in float64."""
    s, s_hat = s.double(), s_hat.double()
    return s * torch.log(s / s_hat) + (1 - s) * torch.log((1 - s) / (1 - s_hat))


def test_held_out_alice_loss_differences_equal_bernoulli_kl_differences(rows):
    """L_ALICE(ŝ) = E_x[KL(s(x) ‖ ŝ(x))] + E_x[H(s(x))]: the loss difference of the exact log r and log r + δ is
    E[KL(s ‖ σ(−log r − δ))], within 5 paired Monte-Carlo standard errors."""
    log_r = EXACT.log_ratio(rows.x, rows.theta0, rows.theta1).double()
    delta = 0.5
    exact_rows = ratio_criterion_rows(log_r, rows, "alice")
    shifted_rows = ratio_criterion_rows(log_r + delta, rows, "alice")
    # the per-row criterion is losses.alice_loss row by row (same clip), so the two cannot drift apart
    assert torch.allclose(shifted_rows.mean(), losses.alice_loss(log_r + delta, rows.log_r_xz.double()), rtol=1e-12)
    kl = bernoulli_kl(torch.sigmoid(-log_r), torch.sigmoid(-(log_r + delta)))
    assert kl.mean() > 20 * kl.std() / math.sqrt(len(kl)), "the perturbation must matter, or the test is vacuous"
    assert_mean_close((shifted_rows - exact_rows) - kl, 0.0, "ALICE loss difference − KL difference")


def test_bernoulli_kl_is_half_s_one_minus_s_times_squared_log_ratio_error_to_second_order(rows):
    """KL(s ‖ ŝ) = ½ s(1−s) u² − (1/6) s(1−s)(1−2s) u³ + O(u⁴) with u = log r̂ − log r (docs/theory.md): the
    relative error of the quadratic term is at most |u|/3 + O(u²)."""
    log_r = EXACT.log_ratio(rows.x[:2000], rows.theta0[:2000], rows.theta1[:2000]).double().clamp(-10, 10)
    s = torch.sigmoid(-log_r)
    for u in (1e-2, -1e-2):
        kl = bernoulli_kl(s, torch.sigmoid(-(log_r + u)))
        quadratic = 0.5 * s * (1 - s) * u**2
        cubic = -(1 / 6) * s * (1 - s) * (1 - 2 * s) * u**3
        assert ((kl / quadratic - 1).abs() <= abs(u) / 3 + u**2).all()
        assert ((kl - quadratic - cubic).abs() <= s * (1 - s) * u**4).all()  # the u⁴ coefficient is below 1/24


def test_held_out_score_residual_differences_equal_the_squared_score_error(rows):
    """E‖t̂ − t(x,z)‖²_w = E‖t̂ − t(x)‖²_w + E‖t(x) − t(x,z)‖²_w: for t̂ = t(x) + c the residual grows by Σ_j w_j c_j²,
    within 5 paired Monte-Carlo standard errors (the cross term averages to zero since E[t(x,z)|x] = t(x))."""
    t_xz = rows.t_xz.double()
    weight = 1.0 / t_xz.var(dim=0)
    shift = 0.3 * t_xz.std(dim=0)
    exact_score = EXACT.score(rows.x, rows.theta).double()
    difference = score_residual_rows(exact_score + shift, t_xz, weight) - score_residual_rows(exact_score, t_xz, weight)
    assert_mean_close(difference, float((weight * shift**2).sum()), "score residual difference")


@pytest.mark.parametrize("criterion", ["alice", "score"])
def test_the_exact_predictor_has_the_lowest_held_out_criterion(rows, criterion):
    """Against shifts of ±1 in log r (and ±σ_t in t̂) the exact predictor wins, by more than 5 paired standard
    errors: the gap is ½ E[s(1−s)] ≈ 0.05 nats (resp. 1 per component), the noise about 0.005 on 4 000 rows."""
    sigma = rows.t_xz.std(dim=0)
    candidates = [Shifted(0.0), Shifted(1.0, sigma.tolist()), Shifted(-1.0, (-sigma).tolist())]
    auto = Auto(candidates, combine="select", criterion=criterion).fit(rows)
    assert auto.criterion_ == criterion
    exact, *shifted = auto.selection_
    assert auto.members_ == [candidates[0]] and exact["weight"] == 1.0
    for row in shifted:
        assert row["criterion"] - exact["criterion"] > 5 * row["difference_error"] > 0
        assert row["score_residual"] > exact["score_residual"]


def test_stacking_finds_the_held_out_optimum_of_the_pool(rows):
    """Two candidates log r ± δ pool to log r + δ(w₁ − w₂); the stacked weights must put that shift at the
    one-dimensional minimiser c* of the held-out criterion (Newton's method here), which itself lies within 5
    standard errors of 0, the population optimum."""
    delta = 0.5
    auto = Auto([Shifted(delta), Shifted(-delta)], combine="stack", criterion="alice").fit(rows)
    weights = torch.tensor([row["weight"] for row in auto.selection_], dtype=torch.float64)
    assert (weights >= 0).all() and math.isclose(float(weights.sum()), 1.0, abs_tol=1e-12)
    assert torch.allclose(auto.weights_, weights)
    _, held_out = rows.split(0.2, FitSeeds.spawn(0).split)
    log_r = EXACT.log_ratio(held_out.x, held_out.theta0, held_out.theta1).double()
    label = torch.sigmoid(-held_out.log_r_xz.double().clamp(-20, 20))
    c = torch.zeros((), dtype=torch.float64)
    for _ in range(20):  # Newton on the convex c ↦ mean ℓ(log r + c): ∂ℓ/∂c = s − ŝ, ∂²ℓ/∂c² = ŝ(1 − ŝ)
        s_hat = torch.sigmoid(-(log_r + c))
        c = c - (label - s_hat).mean() / (s_hat * (1 - s_hat)).mean()
    s_hat = torch.sigmoid(-(log_r + c))
    standard_error = (label - s_hat).std() / math.sqrt(len(label)) / (s_hat * (1 - s_hat)).mean()
    assert abs(float(c)) < 5 * standard_error
    pooled_shift = delta * (weights[0] - weights[1])
    # L-BFGS stops at a gradient of ~1e-12; 1e-4 is far above that and far below the standard error (~1e-2)
    assert abs(float(pooled_shift - c)) < 1e-4 < float(standard_error) / 10


def test_a_good_candidate_outweighs_an_untrained_one(rows):
    """The exact predictor against an ALICE that learned nothing (learning rate 0): select picks the exact one,
    and stacking gives it w > 0.9. Why the margin is safe: the held-out criterion J(w) of the pool
    log r + w d, d = log r̂_bad − log r, has J'(0) = −mean (s(x) − s(x,z)) d, of mean zero, and
    J''(0) = mean s(1−s) d², so the fitted weight of the bad one is about max(0, −J'(0)/J''(0)); the test checks
    that 5 standard errors of that are below 0.1 on these rows before asserting."""
    bad = ALICE(hidden=(16,), learning_rate=0.0)
    for combine in ("select", "stack"):
        auto = Auto([Shifted(0.0), bad], combine=combine, criterion="alice").fit(rows, epochs=1)
        good_row, bad_row = auto.selection_
        assert good_row["weight"] > 0.9 and good_row["weight"] + bad_row["weight"] == pytest.approx(1.0, abs=1e-12)
    _, held_out = rows.split(0.2, FitSeeds.spawn(0).split)
    log_r = EXACT.log_ratio(held_out.x, held_out.theta0, held_out.theta1).double()
    d = bad.log_ratio(held_out.x, held_out.theta0, held_out.theta1).double() - log_r
    s = torch.sigmoid(-log_r)
    gradient_rows = (s - torch.sigmoid(-held_out.log_r_xz.double().clamp(-20, 20))) * d
    margin = 5 * gradient_rows.std() / math.sqrt(len(d)) / (s * (1 - s) * d**2).mean()
    assert margin < 0.1
    assert bad_row["criterion"] - good_row["criterion"] > 5 * bad_row["difference_error"]


def test_every_candidate_holds_out_the_same_rows(rows, monkeypatch):
    """Each candidate's fit and Auto's own scoring split with the same fraction and seed, so they hold out the
    same rows: those of data.split(fraction, FitSeeds.spawn(seed).split)."""
    data = rows[:600]
    calls = []
    original = AugmentedData.split

    def recording(self, fraction, seed=0):
        parts = original(self, fraction, seed)
        calls.append((fraction, seed, parts[1].x.clone()))
        return parts

    monkeypatch.setattr(AugmentedData, "split", recording)
    auto = Auto(["ALICES", "CARL"], hidden=(16,)).fit(data, epochs=1, validation_fraction=0.25, seed=3)
    expected = original(data, 0.25, FitSeeds.spawn(3).split)[1].x
    assert len(calls) == 3  # ALICES, CARL, then Auto's scoring
    assert all(fraction == 0.25 and seed == FitSeeds.spawn(3).split for fraction, seed, _ in calls)
    assert all(torch.equal(x, expected) for _, _, x in calls)
    assert auto.n_held_out_ == 150


def test_save_and_load_keep_predictions_weights_and_the_record(rows, tmp_path):
    data = rows[:1000]
    auto = Auto(["ALICES", "SCANDAL"], combine="stack", gate=True, hidden=(16, 16)).fit(data, epochs=2)
    assert len(auto) == 2, "both members must be kept for the spread to be tested"
    path = tmp_path / "auto.pt"
    auto.save(path)
    again = sluice.load(path)
    x, theta0, theta1 = data.x[:7], torch.tensor([0.2, -0.1]), torch.tensor([0.0, 0.3])
    mean, spread = auto.log_ratio_with_uncertainty(x, theta0, theta1)
    assert (spread > 0).all()
    assert all(torch.equal(a, b) for a, b in zip(again.log_ratio_with_uncertainty(x, theta0, theta1), (mean, spread),
                                                 strict=True))
    assert torch.equal(again.log_ratio(x, theta0, theta1), mean)
    assert torch.equal(again.score(x, theta0), auto.score(x, theta0))
    assert torch.equal(again.weights_, auto.weights_) and again.selection_ == auto.selection_
    assert again.parameter_names_ == ("a", "b") and again.report() == auto.report()
    assert again.gate and again.gate_[0] == auto.gate_[0] == 20.0 and torch.equal(again.gate_[1], auto.gate_[1])
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        sluice.load(truncated)
    with pytest.raises(FileExistsError):
        auto.save(path)


def test_pooled_predictions_are_the_weighted_sums_and_need_every_member():
    """log r̂ = Σ w_k log r̂_k, spread = √Σ w_k (log r̂_k − log r̂)², t̂ = Σ w_k t̂_k; a member without a
    likelihood makes log_likelihood an AttributeError naming it."""
    auto = Auto([Shifted(1.0, (1.0, 0.0)), Shifted(-3.0, (0.0, 2.0))])
    auto.members_, auto.weights_ = auto.candidates, torch.tensor([0.75, 0.25], dtype=torch.float64)
    x, theta0, theta1 = torch.tensor([[0.0, 0.0], [1.0, -1.0]]), torch.tensor([0.2, 0.1]), torch.zeros(2)
    mean, spread = auto.log_ratio_with_uncertainty(x, theta0, theta1)
    exact = EXACT.log_ratio(x, theta0, theta1)
    assert torch.allclose(mean, exact + 0.75 * 1.0 + 0.25 * -3.0)
    assert torch.allclose(spread, torch.full((2,), math.sqrt(0.75 * 1.0**2 + 0.25 * 3.0**2)))
    assert torch.allclose(auto.score(x, theta0), EXACT.score(x, theta0) + torch.tensor([0.75, 0.5]))
    with pytest.raises(AttributeError, match="Shifted"):
        auto.log_likelihood(x, theta0)


class ShiftedRatio(ALICE):
    """A ratio-family member (clip_log_r = 20) that learns nothing: log r̂ = log r + ``shift``."""

    shift = 0.0

    def log_ratio(self, x, theta0, theta1):
        return EXACT.log_ratio(x, theta0, theta1) + self.shift


def test_the_gate_trusts_the_density_members_alone_beyond_the_ratio_members_clip():
    """With a ratio member (clip 20) and a density member, rows where the density's |log r̂| exceeds 20 take the
    density alone; the others the stacked weights. gate=False, or members of one kind only, pool everywhere."""
    ratio, density = ShiftedRatio(), Shifted(-1.0)
    ratio.shift = 2.0
    x, theta0, theta1 = torch.tensor([[1.0, 1.0], [3.0, 3.0]]), torch.tensor([1.0, 1.0]), torch.tensor([-1.0, -1.0])
    exact = EXACT.log_ratio(x, theta0, theta1)
    assert exact[0].abs() < 19 and exact[1].abs() > 21, "one row on each side of the clip"
    pooled = exact + 0.25 * 2.0 + 0.75 * -1.0
    for gate, expected in ((True, torch.stack([pooled[0], exact[1] - 1.0])), (False, pooled)):
        auto = Auto([ratio, density], gate=gate)
        auto.members_, auto.weights_ = [ratio, density], torch.tensor([0.25, 0.75], dtype=torch.float64)
        auto.gate_ = sluice.estimators.auto.ratio_gate(auto.members_) if gate else None
        mean, spread = auto.log_ratio_with_uncertainty(x, theta0, theta1)
        assert torch.allclose(mean, expected, atol=1e-5)
        assert torch.allclose(auto.log_ratio(x, theta0, theta1), mean)
        assert (spread[1] == 0) == gate, "a gated row has one member, so no spread"
    assert sluice.estimators.auto.ratio_gate([ratio, ShiftedRatio()]) is None
    assert sluice.estimators.auto.ratio_gate([density]) is None


def test_black_box_data_skip_augmented_candidates_and_fall_back_to_carl(rows):
    data = rows[:800]
    black_box = AugmentedData(data.theta0, data.theta1, data.y, data.x, parameter_names=data.parameter_names)
    with pytest.warns(UserWarning, match=r"skipping ALICES \(needs log_r_xz, t_xz0, t_xz1\)"):
        auto = Auto(["ALICES", "CARL"], hidden=(16,)).fit(black_box, epochs=1)
    assert auto.criterion_ == "carl" and [row["name"] for row in auto.selection_] == ["CARL"]
    assert auto.weights_.tolist() == [1.0] and "skipped ALICES" in auto.report()
    _, held_out = black_box.split(0.2, FitSeeds.spawn(0).split)
    carl = losses.carl_loss(auto.log_ratio(held_out.x, held_out.theta0, held_out.theta1), held_out.y)
    assert auto.selection_[0]["criterion"] == pytest.approx(float(carl), rel=1e-6)
    with pytest.raises(ValueError, match="log_r_xz"):
        Auto(["ALICES", "ALICE"]).fit(black_box, epochs=1)
    with pytest.raises(ValueError, match="log_r_xz"):
        Auto(["CARL"], criterion="alice").fit(black_box, epochs=1)


def test_unknown_candidates_and_arguments_are_refused_by_name():
    with pytest.raises(ValueError, match="NoSuchMethod"):
        Auto(["ALICES", "NoSuchMethod"])
    with pytest.raises(TypeError, match="no_such_argument"):
        Auto(["ALICES"], no_such_argument=1)
    with pytest.raises(ValueError, match="combine"):
        Auto(combine="average")
    with pytest.raises(RuntimeError, match="not fitted"):
        Auto().log_ratio(torch.zeros(1, 2), torch.zeros(2), torch.zeros(2))


def test_the_default_criterion_is_the_score_residual_where_the_data_hold_joint_scores(rows):
    """criterion="auto" resolves to "score" with joint scores, to "alice" with log r(x,z) alone, to "carl" with
    neither; the default candidates are a ratio model and a likelihood model."""
    assert DEFAULT_CANDIDATES == ("ALICES", "SCANDAL")
    assert Auto([Shifted(0.0), Shifted(1.0)]).fit(rows).criterion_ == "score"
    fields = {name: getattr(rows, name) for name in ("theta0", "theta1", "y", "x", "log_r_xz")}
    no_scores = sluice.AugmentedData(**fields, parameter_names=rows.parameter_names)
    assert Auto([Shifted(0.0), Shifted(1.0)]).fit(no_scores).criterion_ == "alice"


def test_decisive_selects_a_clear_winner_and_stacks_candidates_it_cannot_tell_apart(rows):
    """combine="decisive": the exact predictor beats log r + 1 by far more than 3 paired standard errors (see the
    test above), so it is selected alone; log r ± 0.05 are indistinguishable on 4 000 rows (the gap, ½ E[s(1−s)]
    δ² ≈ 10⁻⁴ nats, is far below 3 paired standard errors), so they are stacked."""
    clear = Auto([Shifted(0.0), Shifted(1.0)], combine="decisive", criterion="alice").fit(rows)
    assert [row["weight"] for row in clear.selection_] == [1.0, 0.0]
    close = Auto([Shifted(0.05), Shifted(-0.05)], combine="decisive", criterion="alice").fit(rows)
    assert all(row["weight"] > 0.2 for row in close.selection_)
