"""The training loop: early stopping restores the best weights, non-finite losses are guarded, seeds hold."""

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
