"""The training loop: early stopping restores the best weights, non-finite losses are guarded, seeds hold."""

import math

import pytest
import torch
import torch.nn as nn

from sluice.estimators.training import NonFiniteLossError, _mean_loss, train


def overfitting_problem(seed=0):
    """A wide network on 12 noisy points: the held-out loss falls, then rises as it memorises the noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.linspace(-1, 1, 24)[:, None]
    y = x[:, 0] + 0.5 * torch.randn(24, generator=g)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(1, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))

    def loss_fn(batch):
        return ((model(batch["x"])[:, 0] - batch["y"]) ** 2).mean()

    train_part = {"x": x[::2], "y": y[::2]}
    validation_part = {"x": x[1::2], "y": y[1::2]}
    return model, loss_fn, train_part, validation_part


def test_early_stopping_restores_the_best_weights():
    model, loss_fn, train_part, validation_part = overfitting_problem()
    history = train(model, loss_fn, train_part, validation_part, epochs=400, batch_size=12, learning_rate=1e-2,
                    patience=400)
    best = min(history.validation_loss)
    assert history.best_epoch < len(history.validation_loss) - 1, "the test needs a run that overfits"
    assert history.validation_loss[-1] > best * 1.05
    assert _mean_loss(loss_fn, validation_part, 12) == pytest.approx(best, rel=1e-5)


def test_patience_stops_training_early():
    model, loss_fn, train_part, validation_part = overfitting_problem()
    history = train(model, loss_fn, train_part, validation_part, epochs=2000, batch_size=12, learning_rate=1e-2,
                    patience=25)
    assert history.stopped_early and len(history.validation_loss) == history.best_epoch + 26


def test_batches_with_non_finite_loss_are_skipped_and_counted():
    model, loss_fn, train_part, validation_part = overfitting_problem()
    calls = {"n": 0}

    def sometimes_nan(batch):
        calls["n"] += 1
        return loss_fn(batch) * (float("nan") if calls["n"] % 3 == 0 else 1.0)

    history = train(model, sometimes_nan, train_part, None, epochs=30, batch_size=4, learning_rate=1e-3)
    assert history.skipped_batches == 30 and all(torch.isfinite(torch.tensor(history.train_loss)))


def test_a_loss_that_is_never_finite_stops_with_a_clear_error():
    model, loss_fn, train_part, _ = overfitting_problem()
    with pytest.raises(NonFiniteLossError, match="every batch of epoch 0"):
        train(model, lambda batch: loss_fn(batch) * float("inf"), train_part, None, epochs=5, batch_size=4)


def test_the_same_seed_reproduces_training():
    results = []
    for _ in range(2):
        model, loss_fn, train_part, validation_part = overfitting_problem()
        train(model, loss_fn, train_part, validation_part, epochs=20, batch_size=4, seed=7)
        results.append(model(torch.zeros(1, 1)))
    assert torch.equal(results[0], results[1])


def test_the_cosine_schedule_decays_the_rate_from_its_start_to_its_floor_over_the_epochs():
    """schedule="cosine": the rate of epoch e is η_min + (η0 − η_min)(1 + cos(π e / E)) / 2, whatever the losses."""
    model, loss_fn, train_part, validation_part = overfitting_problem()
    epochs, start, floor = 40, 1e-2, 1e-4
    history = train(model, loss_fn, train_part, validation_part, epochs=epochs, batch_size=12, learning_rate=start,
                    final_learning_rate=floor, patience=epochs, schedule="cosine")
    expected = [floor + (start - floor) * (1 + math.cos(math.pi * e / epochs)) / 2 for e in range(epochs)]
    assert history.learning_rates == pytest.approx(expected, rel=1e-9)


def test_the_plateau_schedule_halves_the_rate_only_when_the_held_out_loss_stalls():
    """schedule="plateau": a loss that never improves halves the rate every patience/3 + 1 epochs (here 3), down
    to the floor; a loss that keeps improving keeps the starting rate. (No held-out rows: the training loss is
    watched, and nothing stops early.)"""
    weight = nn.Parameter(torch.zeros(1))
    rows = {"x": torch.zeros(4, 1)}
    stalled = train(nn.ParameterList([weight]), lambda batch: (weight * 0).sum() + 1.0, rows, None, epochs=30,
                    batch_size=4, learning_rate=1e-2, final_learning_rate=1e-3, patience=6, schedule="plateau")
    assert stalled.learning_rates[:4] == [1e-2] * 4 and stalled.learning_rates[4] == 5e-3
    assert stalled.learning_rates[-1] == pytest.approx(1e-3)
    assert all(b <= a for a, b in zip(stalled.learning_rates, stalled.learning_rates[1:], strict=False))
    assert {round(r / 1e-2, 6) for r in stalled.learning_rates} <= {1.0, 0.5, 0.25, 0.125, 0.1}
    model, loss_fn, train_part, _ = overfitting_problem()
    improving = train(model, loss_fn, train_part, None, epochs=10, batch_size=12, learning_rate=1e-3,
                      schedule="plateau")
    assert improving.learning_rates == [1e-3] * 10


def test_an_unknown_schedule_is_named():
    model, loss_fn, train_part, validation_part = overfitting_problem()
    with pytest.raises(ValueError, match="linear"):
        train(model, loss_fn, train_part, validation_part, epochs=2, batch_size=12, schedule="linear")
    import sluice

    with pytest.raises(ValueError, match="linear"):
        sluice.estimators.ALICES(schedule="linear")
