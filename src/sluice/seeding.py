"""One way to seed: independent streams spawned from one seed, and torch's global generator seeded in a fork.

Every random draw in sluice flows from an explicit seed. ``spawn_seeds(seed, key, count)`` derives ``count``
independent 64-bit seeds from (seed, key) with NumPy's ``SeedSequence``, so two uses of one seed (the rows of
batch 3 and of batch 4; the split, the initialisation and the batch order of a fit) never share a stream.
``torch.manual_seed`` is global and slow; where torch's global generator must be seeded (network
initialisation, prior distributions, user simulators that ignore the generator they are handed),
``seeded_global_generator`` does it inside ``torch.random.fork_rng``, so the caller's state is left as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

__all__ = ["spawn_seeds", "generator", "seeded_global_generator"]


def spawn_seeds(seed: int, key: int | tuple[int, ...] = (), count: int = 3) -> tuple[int, ...]:
    """``count`` independent 64-bit seeds for the stream named ``key`` under ``seed``.

    >>> spawn_seeds(0, 1) == spawn_seeds(0, 1) != spawn_seeds(0, 2)
    True
    """
    key = (key,) if isinstance(key, int) else tuple(key)
    state = np.random.SeedSequence(int(seed), spawn_key=key).generate_state(count, np.uint64)
    return tuple(int(value) for value in state)


def generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``."""
    return torch.Generator().manual_seed(int(seed))


@contextmanager
def seeded_global_generator(seed: int) -> Iterator[None]:
    """Run the block with torch's global CPU generator seeded with ``seed``; restore the caller's state after.

    >>> before = torch.random.get_rng_state()
    >>> with seeded_global_generator(7):
    ...     a = torch.rand(2)
    >>> with seeded_global_generator(7):
    ...     b = torch.rand(2)
    >>> bool(torch.equal(a, b)) and bool(torch.equal(before, torch.random.get_rng_state()))
    True
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))
        yield
