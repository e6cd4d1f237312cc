"""sluice.simulate: fields, the θ0/θ1 design, seeds, dropped rows, and the errors for bad calls."""

import pytest
import torch

import sluice
from sluice.data.simulation import DroppedRowsWarning, MiningError
from toys import BlackBox, Exponential, SometimesNaN

FIELDS = ("theta0", "theta1", "y", "x", "log_r_xz", "t_xz0", "t_xz1", "theta", "t_xz")


def test_every_field_has_the_documented_shape():
    mixture = sluice.simulators.GaussianMixture()
    data = sluice.simulate(mixture, mixture.default_prior(), 101, seed=0)
    shapes = {name: tuple(getattr(data, name).shape) for name in FIELDS}
    assert shapes == {"theta0": (101, 2), "theta1": (101, 2), "y": (101,), "x": (101, 2), "log_r_xz": (101,),
                      "t_xz0": (101, 2), "t_xz1": (101, 2), "theta": (101, 2), "t_xz": (101, 2)}
    assert all(getattr(data, name).dtype == torch.float32 for name in FIELDS)
    assert data.parameter_names == ("a", "b") and data.simulator_name == "GaussianMixture"


def test_half_the_rows_are_drawn_at_theta0_and_half_at_theta1():
    board = sluice.simulators.GaltonBoard()
    data = sluice.simulate(board, sluice.priors.Point([-1.0]), 1000, reference=[0.5], seed=0, batch_size=333)
    assert int(data.y.sum()) == 500
    assert torch.all(data.theta[data.y == 0] == -1.0) and torch.all(data.theta[data.y == 1] == 0.5)
    assert torch.all(data.t_xz[data.y == 0] == data.t_xz0[data.y == 0])
    # the rows really were drawn where y says: the exact log r(x|θ0,θ1) is positive on average at θ0
    # (a KL divergence) and negative at θ1
    exact_log_r = board.log_likelihood(data.x, torch.tensor([-1.0])) - board.log_likelihood(data.x, torch.tensor([0.5]))
    assert exact_log_r[data.y == 0].mean() > 0.1 and exact_log_r[data.y == 1].mean() < -0.1


def test_without_reference_theta1_is_an_independent_prior_draw():
    board = sluice.simulators.GaltonBoard()
    data = sluice.simulate(board, board.default_prior(), 2000, seed=0)
    assert torch.all((data.theta1 >= -1.0) & (data.theta1 < -0.4))
    assert abs(float(torch.corrcoef(torch.stack([data.theta0[:, 0], data.theta1[:, 0]]))[0, 1])) < 0.15
    assert (data.theta0 != data.theta1).all()


def test_reference_is_broadcast_to_every_row():
    mixture = sluice.simulators.GaussianMixture()
    data = sluice.simulate(mixture, mixture.default_prior(), 50, reference=[0.1, -0.2], seed=0)
    assert torch.all(data.theta1 == torch.tensor([0.1, -0.2]))


def test_point_prior_gives_local_data():
    board = sluice.simulators.GaltonBoard()
    data = sluice.simulate(board, sluice.priors.Point([-0.7]), 100, seed=0)
    assert torch.all(data.theta0 == -0.7) and torch.all(data.theta1 == -0.7)
    assert torch.all(data.log_r_xz == 0) and torch.equal(data.t_xz0, data.t_xz1)


def test_the_same_seed_gives_identical_tensors_and_another_seed_does_not():
    board = sluice.simulators.GaltonBoard()
    first = sluice.simulate(board, board.default_prior(), 3000, seed=7, batch_size=1000)
    second = sluice.simulate(board, board.default_prior(), 3000, seed=7, batch_size=1000)
    other = sluice.simulate(board, board.default_prior(), 3000, seed=8, batch_size=1000)
    for name in FIELDS:
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    assert not torch.equal(first.theta0, other.theta0) and not torch.equal(first.x, other.x)


def test_simulator_drawing_from_the_global_generator_is_reproducible_and_uncorrelated():
    class GlobalNoise(Exponential):
        def sample(self, theta, generator=None):
            x, z = super().sample(theta, generator)
            return torch.cat([x, torch.rand(x.shape)], dim=1), z  # ignores the generator it is handed

    first = sluice.simulate(GlobalNoise(), Exponential().default_prior(), 2000, seed=1)
    second = sluice.simulate(GlobalNoise(), Exponential().default_prior(), 2000, seed=1)
    assert torch.equal(first.x, second.x)
    u_generator = 1.0 - torch.exp(-first.x[:, 0] * first.theta[:, 0].exp())  # the uniform behind x
    assert abs(float(torch.corrcoef(torch.stack([u_generator, first.x[:, 1]]))[0, 1])) < 0.15


def test_seeding_leaves_the_callers_global_generator_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    sluice.simulate(Exponential(), Exponential().default_prior(), 100, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_batches_differ_from_one_another():
    board = sluice.simulators.GaltonBoard()
    data = sluice.simulate(board, board.default_prior(), 2000, seed=0, batch_size=1000)
    assert not torch.equal(data.theta0[:1000], data.theta0[1000:])


def test_rows_with_nan_are_dropped_and_counted():
    simulator = SometimesNaN(threshold=0.45)  # θ ~ U(−0.5, 0.5): about 5% of θ0 and θ1 draws
    with pytest.warns(DroppedRowsWarning, match=r"dropped \d+ of 2000 rows with NaN or inf \(x: \d+"):
        data = sluice.simulate(simulator, simulator.default_prior(), 2000, seed=0, max_dropped_fraction=0.2)
    assert 20 < 2000 - len(data) < 200
    assert torch.isfinite(data.x).all() and torch.all(data.theta <= 0.45)


def test_too_many_bad_rows_stop_the_run():
    simulator = SometimesNaN(threshold=0.0)
    with pytest.raises(MiningError, match="more than max_dropped_fraction"):
        sluice.simulate(simulator, simulator.default_prior(), 2000, seed=0)


def test_a_simulator_may_allow_a_larger_share_of_dropped_rows():
    simulator = SometimesNaN(threshold=0.9)  # x is NaN where θ > 0.9: about 5% of the rows
    with pytest.raises(MiningError, match="more than max_dropped_fraction = 0.01"):
        sluice.simulate(simulator, sluice.priors.BoxUniform([-1.0], [1.0]), 2000, seed=0)
    simulator.max_dropped_fraction = 0.1
    with pytest.warns(DroppedRowsWarning):
        data = sluice.simulate(simulator, sluice.priors.BoxUniform([-1.0], [1.0]), 2000, seed=0)
    assert 0.02 * 2000 < 2000 - len(data) < 0.1 * 2000


def test_black_box_simulator_gives_data_without_joint_fields():
    data = sluice.simulate(BlackBox(), sluice.priors.BoxUniform([-1.0], [1.0]), 100, seed=0)
    assert data.log_r_xz is None and data.t_xz0 is None and data.t_xz is None
    with pytest.raises(ValueError, match="'t_xz0'"):
        data.require(["t_xz0"], user="SCANDAL")


@pytest.mark.parametrize("call, message", [
    (lambda b: sluice.simulate(b, sluice.priors.BoxUniform([-1, -1], [1, 1]), 10), r"event shape \[1\]"),
    (lambda b: sluice.simulate(b, torch.distributions.Normal(0.0, 1.0), 10), "Independent"),
    (lambda b: sluice.simulate(b, "uniform", 10), "torch.distributions.Distribution"),
    (lambda b: sluice.simulate(b, b.default_prior(), 0), "positive whole number"),
    (lambda b: sluice.simulate(b, b.default_prior(), 10, reference=[0.0]), "outside the prior"),
    (lambda b: sluice.simulate(b, b.default_prior(), 10, reference=[-0.5, 1.0]),
     r"one entry per parameter \(1\), got 2"),
    (lambda b: sluice.simulate(object(), b.default_prior(), 10), "sluice.Simulator"),
], ids=["prior-dimension", "prior-scalar", "prior-type", "n", "reference-outside", "reference-length", "simulator"])
def test_bad_calls_get_errors_that_name_the_problem(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call(sluice.simulators.GaltonBoard())


def test_simulator_returning_bad_shapes_is_named():
    class FlatX(Exponential):
        def sample(self, theta, generator=None):
            x, z = super().sample(theta, generator)
            return x[:, 0], z

    with pytest.raises(ValueError, match=r"FlatX.sample must return x of shape \[n, d\]"):
        sluice.simulate(FlatX(), Exponential().default_prior(), 10)


def test_no_progress_output_when_not_on_a_terminal(capfd):
    board = sluice.simulators.GaltonBoard()
    sluice.simulate(board, board.default_prior(), 5000, batch_size=1000)
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


def test_progress_bar_can_be_forced(capfd):
    board = sluice.simulators.GaltonBoard()
    data = sluice.simulate(board, board.default_prior(), 3000, batch_size=1000, progress=True)
    assert len(data) == 3000
