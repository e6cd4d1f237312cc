"""The one training loop: Adam, a decaying learning rate, mini-batches, early stopping on held-out data.

Rows come from a source with ``shuffled(generator, batch_size)`` and ``in_order(batch_size)``: ``TensorRows``
(a dict of tensors in memory, shuffled as a whole each epoch) or ``BlockRows`` (data on disk, read in blocks of
consecutive rows: each epoch visits the blocks in a random order, ``blocks_in_memory`` at a time, shuffling the
rows of the blocks held; memory stays at blocks_in_memory × block_rows rows whatever the file's size). Block
shuffling loses nothing here: sluice.simulate's rows are exchangeable (each draws its own θ), so a block is as
good a sample as any other rows.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

__all__ = ["TrainingHistory", "NonFiniteLossError", "train", "TensorRows", "BlockRows"]


class NonFiniteLossError(RuntimeError):
    """The loss stayed NaN or inf: the data hold extreme targets or the learning rate is too high."""


@dataclass
class TrainingHistory:
    train_loss: list = field(default_factory=list)
    validation_loss: list = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False
    skipped_batches: int = 0
    seconds: float = 0.0
    learning_rates: list = field(default_factory=list)  # the rate each epoch trained at


def _batches(tensors: dict, order: torch.Tensor, batch_size: int):
    for start in range(0, order.numel(), batch_size):
        rows = order[start:start + batch_size]
        yield {name: value[rows] for name, value in tensors.items()}


class TensorRows:
    """Rows in memory: a dict of tensors with a common first dimension."""

    def __init__(self, tensors: dict):
        self.tensors = tensors
        self.n = next(iter(tensors.values())).shape[0]

    def __len__(self) -> int:
        return self.n

    def shuffled(self, generator: torch.Generator, batch_size: int):
        return _batches(self.tensors, torch.randperm(self.n, generator=generator), batch_size)

    def in_order(self, batch_size: int):
        return _batches(self.tensors, torch.arange(self.n), batch_size)


class BlockRows:
    """Rows of on-disk data (``sluice.data.OnDiskData``) read a few blocks at a time (module notes).

    ``to_tensors(data) -> dict`` turns the AugmentedData of the blocks held into training tensors (an
    estimator's ``_tensors``). ``most_rows_held`` records the most rows it ever held at once."""

    def __init__(self, data, to_tensors: Callable, blocks_in_memory: int | None = None):
        self.data, self.to_tensors = data, to_tensors
        self.blocks_in_memory = int(blocks_in_memory or data.blocks_in_memory)
        self.most_rows_held = 0

    def __len__(self) -> int:
        return len(self.data)

    def _groups(self, order: list):
        for start in range(0, len(order), self.blocks_in_memory):
            tensors = self.to_tensors(self.data.read_blocks(order[start:start + self.blocks_in_memory]))
            rows = next(iter(tensors.values())).shape[0]
            self.most_rows_held = max(self.most_rows_held, rows)
            yield tensors, rows

    def shuffled(self, generator: torch.Generator, batch_size: int):
        order = torch.randperm(len(self.data.blocks), generator=generator).tolist()
        for tensors, rows in self._groups(order):
            yield from _batches(tensors, torch.randperm(rows, generator=generator), batch_size)

    def in_order(self, batch_size: int):
        for tensors, rows in self._groups(list(range(len(self.data.blocks)))):
            yield from _batches(tensors, torch.arange(rows), batch_size)


def _as_rows(rows):
    return rows if hasattr(rows, "shuffled") else TensorRows(rows)


def _on(batch: dict, device) -> dict:
    return batch if device is None else {name: value.to(device, non_blocking=True) for name, value in batch.items()}


def _mean_loss(loss_fn, rows, batch_size: int, device=None) -> float:
    """The loss over all ``rows`` (a source, or a dict of tensors); score terms need autograd, so no no_grad."""
    total, n = 0.0, 0
    for batch in _as_rows(rows).in_order(batch_size):
        batch = _on(batch, device)
        size = next(iter(batch.values())).shape[0]
        total += float(loss_fn(batch).detach()) * size
        n += size
    return total / n


def train(model: nn.Module, loss_fn: Callable[[dict], torch.Tensor], train_tensors,
          validation_tensors, *, epochs: int, batch_size: int, learning_rate: float = 1e-3,
          final_learning_rate: float = 1e-5, patience: int = 30, clip_grad_norm: float = 10.0, seed: int = 0,
          progress: bool | None = None, description: str = "training", device=None,
          schedule: str = "cosine") -> TrainingHistory:
    """Minimise ``loss_fn(batch)`` over ``train_tensors`` (a dict of tensors with a common first dimension, or a
    row source such as ``BlockRows``); ``validation_tensors`` likewise, or None.

    Adam from ``learning_rate`` down to ``final_learning_rate``: along a cosine over the ``epochs``
    (``schedule="cosine"``, the default: a known, smooth decay whatever the noise of the validation loss) or halved
    whenever the validation loss (else the training loss) stalls (``schedule="plateau"``, ReduceLROnPlateau);
    gradient norms clipped to ``clip_grad_norm``; a batch whose loss is NaN or inf is skipped and counted,
    and a run whose every batch of an epoch is non-finite stops with NonFiniteLossError. With validation
    data, training stops after ``patience`` epochs without improvement and the best weights (a deep copy
    taken when they were best) are restored. ``device``: where each batch goes before the loss (the model must
    be there already); None leaves the batches where they are.
    """
    started = time.perf_counter()
    history = TrainingHistory()
    # foreach: one update per step for all the parameter tensors, not a loop over them (small networks: fewer calls)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, foreach=True)
    if schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs),
                                                               eta_min=min(final_learning_rate, learning_rate))
    elif schedule == "plateau":  # halve the learning rate whenever the held-out loss stalls for a third of the patience
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=max(1, patience // 3),
                                                               min_lr=final_learning_rate)
    else:
        raise ValueError(f"schedule must be 'cosine' or 'plateau', got {schedule!r}")
    generator = torch.Generator().manual_seed(seed)
    training = _as_rows(train_tensors)
    validation = _as_rows(validation_tensors) if validation_tensors else None
    best_loss, best_state, waited = math.inf, None, 0
    bar = None
    if progress or (progress is None and sys.stderr.isatty()):
        from rich.progress import Progress

        bar = Progress(transient=True)
        task = bar.add_task(description, total=epochs)
        bar.start()
    try:
        for epoch in range(epochs):
            model.train()
            history.learning_rates.append(optimizer.param_groups[0]["lr"])
            running, counted, skipped = 0.0, 0, 0
            for batch in training.shuffled(generator, batch_size):
                loss = loss_fn(_on(batch, device))
                if not torch.isfinite(loss):
                    skipped += 1
                    continue
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
                optimizer.step()
                running += float(loss.detach())
                counted += 1
            history.skipped_batches += skipped
            if counted == 0:
                raise NonFiniteLossError(f"{description}: every batch of epoch {epoch} gave a NaN or inf loss; "
                                         "check the data for extreme targets or lower the learning rate")
            history.train_loss.append(running / counted)
            model.eval()
            current = _mean_loss(loss_fn, validation, 4 * batch_size, device) if validation else history.train_loss[-1]
            history.validation_loss.append(current)
            if schedule == "plateau":
                scheduler.step(current)
            else:
                scheduler.step()
            if current < best_loss:
                best_loss, waited, history.best_epoch = current, 0, epoch
                best_state = copy.deepcopy(model.state_dict())
            else:
                waited += 1
                if validation and waited >= patience:
                    history.stopped_early = True
                    break
            if bar is not None:
                bar.update(task, completed=epoch + 1)
    finally:
        if bar is not None:
            bar.stop()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    history.seconds = time.perf_counter() - started
    return history
