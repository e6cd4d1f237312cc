"""Each loss, in expectation, is lowest at the true ratio or score (a latent-variable Gaussian toy).

Toy: z ~ N(θ, 1), x = z + N(0, 1). Joint: log r(x,z|θ0,θ1) = −(z−θ0)²/2 + (z−θ1)²/2, t(x,z|θ) = z − θ.
Marginal: x ~ N(θ, 2), so log r(x|θ0,θ1) = −(x−θ0)²/4 + (x−θ1)²/4 and t(x|θ) = (x − θ)/2.
Losses are compared on the same samples (paired), and must be higher away from the truth by more than
5 standard errors of the paired difference.
"""

import math

import pytest
import torch

from sluice.estimators import losses

THETA0, THETA1, N = 0.3, -0.2, 200_000


def toy(seed=0):
    g = torch.Generator().manual_seed(seed)
    y = (torch.arange(N) % 2).float()
    theta = torch.where(y == 0, THETA0, THETA1)
    z = theta + torch.randn(N, generator=g)
    x = z + torch.randn(N, generator=g)
    return {"x": x, "y": y, "theta": theta,
            "log_r_xz": -(z - THETA0) ** 2 / 2 + (z - THETA1) ** 2 / 2, "t_xz": (z - theta)[:, None],
            "log_r": -(x - THETA0) ** 2 / 4 + (x - THETA1) ** 2 / 4, "t": ((x - theta) / 2)[:, None]}


def assert_truth_is_lowest(per_sample, truth, perturbations):
    """per_sample(prediction) -> loss per row [N]; truth and each perturbation are predictions."""
    at_truth = per_sample(truth)
    for name, perturbed in perturbations.items():
        difference = per_sample(perturbed) - at_truth
        error = difference.std() / math.sqrt(N)
        assert difference.mean() > 5 * error, f"{name}: loss not higher than at the truth"


def ratio_perturbations(log_r, x):
    return {"shift +0.1": log_r + 0.1, "shift −0.1": log_r - 0.1, "scale 1.2": 1.2 * log_r,
            "scale 0.8": 0.8 * log_r, "tilt": log_r + 0.1 * x}


def per_row(loss_fn):
    """Evaluate a mean-reducing loss row by row by vectorising over single-row calls."""
    return lambda *args: torch.func.vmap(lambda *a: loss_fn(*(v[None] for v in a)))(*args)


def test_carl_minimised_by_true_ratio():
    d = toy()
    loss = lambda log_r_hat: per_row(losses.carl_loss)(log_r_hat, d["y"])  # noqa: E731
    assert_truth_is_lowest(loss, d["log_r"], ratio_perturbations(d["log_r"], d["x"]))


def test_rolr_minimised_by_true_ratio():
    d = toy()
    loss = lambda log_r_hat: per_row(losses.rolr_loss)(log_r_hat, d["log_r_xz"], d["y"])  # noqa: E731
    assert_truth_is_lowest(loss, d["log_r"], ratio_perturbations(d["log_r"], d["x"]))


def test_alice_minimised_by_true_ratio():
    d = toy()
    loss = lambda log_r_hat: per_row(losses.alice_loss)(log_r_hat, d["log_r_xz"])  # noqa: E731
    assert_truth_is_lowest(loss, d["log_r"], ratio_perturbations(d["log_r"], d["x"]))


def test_score_loss_minimised_by_true_score():
    d = toy()
    loss = lambda t_hat: per_row(losses.score_loss)(t_hat, d["t_xz"])  # noqa: E731
    t = d["t"]
    assert_truth_is_lowest(loss, t, {"shift": t + 0.05, "scale 1.2": 1.2 * t, "scale 0.8": 0.8 * t,
                                     "joint-like": t + 0.2 * (d["x"][:, None] - d["theta"][:, None])})


def test_score_loss_mask_and_weight():
    t_hat, t = torch.tensor([[1.0, 2.0], [3.0, 0.0]]), torch.zeros(2, 2)
    assert float(losses.score_loss(t_hat, t)) == pytest.approx((5 + 9) / 2)
    assert float(losses.score_loss(t_hat, t, mask=torch.tensor([1.0, 0.0]))) == pytest.approx(5 / 2)
    assert float(losses.score_loss(t_hat, t, weight=torch.tensor([1.0, 0.5]))) == pytest.approx((1 + 2 + 9) / 2)


def test_negative_log_likelihood_minimised_by_true_density():
    d = toy()
    x, theta = d["x"], d["theta"]

    def log_normal(mean, variance):
        return -0.5 * (x - mean) ** 2 / variance - 0.5 * torch.log(2 * math.pi * variance)

    loss = lambda log_p: -log_p  # noqa: E731
    assert_truth_is_lowest(loss, log_normal(theta, torch.tensor(2.0)),
                           {"too narrow": log_normal(theta, torch.tensor(1.5)),
                            "too wide": log_normal(theta, torch.tensor(2.6)),
                            "shifted": log_normal(theta + 0.1, torch.tensor(2.0))})
    assert float(losses.negative_log_likelihood(torch.tensor([-1.0, -3.0]))) == 2.0


def test_clipping_bounds_extreme_targets():
    huge = torch.tensor([500.0, -500.0])
    assert torch.isfinite(losses.rolr_loss(torch.zeros(2), huge, torch.tensor([1.0, 0.0]), clip=20.0))
    assert torch.isfinite(losses.alice_loss(torch.zeros(2), huge))


def test_rolr_row_is_squared_error_of_r_at_theta1_and_of_one_over_r_at_theta0():
    # r̂ = 2 against r(x,z) = 1: a row drawn at θ1 (y = 1) costs (2 − 1)² = 1, one drawn at θ0 (1/2 − 1)² = 1/4
    log_r_hat = torch.full((2,), math.log(2.0), dtype=torch.float64)
    log_r_xz, y = torch.zeros(2, dtype=torch.float64), torch.tensor([1.0, 0.0], dtype=torch.float64)
    assert float(losses.rolr_loss(log_r_hat, log_r_xz, y)) == pytest.approx((1.0 + 0.25) / 2, rel=1e-12)


@pytest.mark.parametrize("y", [0.0, 1.0])
@pytest.mark.parametrize("beyond", [25.0, -25.0])
def test_rolr_clips_both_log_ratios_at_plus_minus_20_by_default(beyond, y):
    def loss(log_r_hat, log_r_xz, **clip):
        as_row = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
        return float(losses.rolr_loss(as_row(log_r_hat), as_row(log_r_xz), as_row(y), **clip))

    edge = math.copysign(20.0, beyond)
    assert loss(beyond, 0.0) == loss(edge, 0.0)  # the prediction log r̂ is clipped ...
    assert loss(0.0, beyond) == loss(0.0, edge)  # ... and so is the target log r(x,z)
    # with y = 1 only the r̂ term counts, with y = 0 only the 1/r̂ term: where that term is ~e^{±2·25}, the clip shows
    if (beyond > 0) == (y == 1):
        assert loss(beyond, 0.0, clip=30.0) != loss(edge, 0.0), "the comparison must be able to see a clip"


@pytest.mark.parametrize("beyond", [25.0, -25.0])
def test_alice_clips_the_soft_label_target_at_plus_minus_20_by_default(beyond):
    # the loss moves with the soft label s at the rate ∂L/∂s = log r̂, so a far prediction (log r̂ = 30, float64)
    # separates s = σ(∓20) from s = σ(∓25) (they differ by ~2e-9, far above float64 rounding)
    log_r_hat = torch.tensor([30.0], dtype=torch.float64)
    target = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    at_edge = float(losses.alice_loss(log_r_hat, target(math.copysign(20.0, beyond))))
    assert float(losses.alice_loss(log_r_hat, target(beyond))) == at_edge
    assert float(losses.alice_loss(log_r_hat, target(beyond), clip=30.0)) != at_edge, "the clip must be visible"


def test_score_loss_moves_the_weight_to_the_device_of_the_predictions():
    # predictions on the "meta" device stand in for a GPU: a weight left on the CPU could not multiply them
    t_hat = torch.zeros(3, 2, device="meta")
    loss = losses.score_loss(t_hat, torch.zeros(3, 2, device="meta"), weight=torch.tensor([1.0, 2.0]))
    assert loss.device.type == "meta" and loss.shape == ()
