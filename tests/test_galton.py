"""The Galton board: exact likelihood by dynamic programming, against the published figures and the joint quantities."""

import torch

import sluice
from conftest import assert_mean_close

# the Galton board (docs/theory.md): exact log r(x | −0.8, −0.6) for x = 5 … 25
PUBLISHED_LOG_R = [0.744, 0.654, 0.545, 0.419, 0.280, 0.136, -0.004, -0.129, -0.228, -0.291, -0.309, -0.280,
                   -0.210, -0.106, 0.021, 0.159, 0.298, 0.429, 0.545, 0.643, 0.721]


def exact_score(board, theta: float, nails: torch.Tensor) -> torch.Tensor:
    """∂θ log p(x | θ) by autograd through the dynamic program, one row per x in ``nails``."""
    thetas = torch.full((len(nails), 1), theta, dtype=torch.float64, requires_grad=True)
    log_p = board.log_likelihood(nails[:, None].to(torch.float64), thetas)
    (score,) = torch.autograd.grad(log_p.sum(), thetas)
    return score[:, 0]


def test_dynamic_program_is_normalised_and_supported_on_5_to_25():
    board = sluice.simulators.GaltonBoard()
    mass = board.probabilities(torch.tensor([[-1.0], [-0.6], [0.0], [0.7]]))
    assert torch.allclose(mass.sum(dim=1), torch.ones(4, dtype=torch.float64), atol=1e-12)
    outside = torch.cat([mass[:, :5], mass[:, 26:]], dim=1)
    assert torch.all(outside == 0)
    assert torch.all(mass[:, 5:26] > 0)


def test_exact_log_ratio_matches_published_values():
    board = sluice.simulators.GaltonBoard()
    nails = torch.arange(5, 26, dtype=torch.float64)[:, None]
    log_r = board.log_likelihood(nails, torch.tensor([-0.8])) - board.log_likelihood(nails, torch.tensor([-0.6]))
    assert torch.allclose(log_r, torch.tensor(PUBLISHED_LOG_R, dtype=log_r.dtype), atol=1e-3)


def test_fisher_information_at_minus_0_8_is_1_41():
    board = sluice.simulators.GaltonBoard()
    nails = torch.arange(5, 26)
    score = exact_score(board, -0.8, nails)
    p = board.probabilities(torch.tensor([[-0.8]], dtype=torch.float64))[0, 5:26]
    fisher = float((p * score**2).sum())
    assert abs(fisher - 1.41) <= 0.01


def test_trivial_prediction_mse_is_0_063():
    board = sluice.simulators.GaltonBoard()
    p1 = board.probabilities(torch.tensor([[-0.6]], dtype=torch.float64))[0, 5:26]
    mse = float((p1 * torch.tensor(PUBLISHED_LOG_R, dtype=torch.float64) ** 2).sum())
    assert abs(mse - 0.063) < 0.001


def test_sampled_frequencies_match_the_dynamic_program():
    board = sluice.simulators.GaltonBoard()
    n = 200_000
    x, _ = board.sample(torch.full((n, 1), -0.7), generator=torch.Generator().manual_seed(1))
    p = board.probabilities(torch.tensor([[-0.7]]))[0].to(torch.float32)
    indicator = torch.nn.functional.one_hot(x[:, 0].long(), 31).to(torch.float32)[:, 5:26]
    assert_mean_close(indicator[:, p[5:26] > 1e-3], p[5:26][p[5:26] > 1e-3], "histogram of x")


def test_decisions_in_z_reproduce_x():
    board = sluice.simulators.GaltonBoard()
    x, z = board.sample(torch.full((1000, 1), -0.5), generator=torch.Generator().manual_seed(2))
    moves = z["right"].float() - torch.tensor([level % 2 for level in range(20)], dtype=torch.float32)
    assert torch.equal(15 + moves.sum(dim=1), x[:, 0])
    assert torch.equal(z["nail"][:, 1:].float(), 15 + torch.cumsum(moves, dim=1)[:, :-1])


def test_joint_log_prob_marginalises_to_the_exact_likelihood():
    """E_{z~p(z|x,θ1)}[r(x,z|θ0,θ1)] = r(x|θ0,θ1): the mean joint ratio per x bin equals the exact ratio."""
    board = sluice.simulators.GaltonBoard()
    data = sluice.simulate(board, sluice.priors.Point([-0.8]), 400_000, reference=[-0.6], seed=3)
    at_theta1 = data[data.y == 1]
    ratio = at_theta1.log_r_xz.exp()
    for nail in range(8, 23):
        rows = at_theta1.x[:, 0] == nail
        assert_mean_close(ratio[rows], torch.tensor(PUBLISHED_LOG_R[nail - 5]).exp(), f"E[r | x={nail}]",
                          z_limit=5.0)


def test_joint_score_is_unbiased_for_the_exact_score_given_x():
    """E[t(x,z|θ) g(x)] = E[t(x|θ) g(x)] for several g, and E[t | x] = t(x) bin by bin."""
    board = sluice.simulators.GaltonBoard()
    data = sluice.simulate(board, sluice.priors.Point([-0.7]), 200_000, reference=[-0.7], seed=4)
    exact = torch.zeros(31)
    exact[5:26] = exact_score(board, -0.7, torch.arange(5, 26)).to(torch.float32)
    x = data.x[:, 0]
    difference = data.t_xz[:, 0] - exact[x.long()]
    for name, g in {"1": torch.ones_like(x), "x": x - 15, "x²": (x - 15) ** 2, "x>15": (x > 15).float()}.items():
        assert_mean_close(difference * g, 0.0, f"E[(t - t_exact) g], g = {name}")
    for nail in range(8, 23):
        rows = x == nail
        assert_mean_close(data.t_xz[rows, 0], exact[nail], f"E[t | x={nail}]")


def test_log_likelihood_rejects_fractional_x_and_gives_minus_inf_outside_the_board():
    board = sluice.simulators.GaltonBoard()
    assert torch.isneginf(board.log_likelihood(torch.tensor([[2.0], [40.0]]), torch.tensor([-0.7]))).all()
    try:
        board.log_likelihood(torch.tensor([[5.5]]), torch.tensor([-0.7]))
    except ValueError as error:
        assert "whole" in str(error)
    else:
        raise AssertionError("fractional x accepted")
