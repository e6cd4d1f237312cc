"""One way to seed: fit and simulate spawn independent streams from one seed and leave the caller's random state
as it was."""

import torch

import sluice
from sluice.data.simulation import batch_seeds
from sluice.estimators.base import FitSeeds
from sluice.seeding import seeded_global_generator, spawn_seeds

PRIOR = sluice.priors.BoxUniform([-1.0], [-0.4])


def small_data():
    return sluice.simulate(sluice.simulators.GaltonBoard(), PRIOR, n=600, seed=1, progress=False)


def test_fit_streams_are_distinct_from_each_other_and_from_the_simulation_batches():
    seeds = FitSeeds.spawn(0)
    values = [seeds.split, seeds.statistics, seeds.initialisation, seeds.batches]
    assert len(set(values)) == 4
    simulation = {seed for index in range(64) for seed in batch_seeds(0, index)}
    assert not simulation & set(values)
    assert FitSeeds.spawn(0) == seeds != FitSeeds.spawn(1)


def test_fit_and_simulate_leave_the_callers_random_state_as_it_was():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    data = small_data()
    sluice.estimators.ALICES().fit(data, epochs=2, seed=0)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_fit_is_reproducible_from_its_seed_and_the_seed_matters():
    data = small_data()
    x, theta0, theta1 = data.x[:50], torch.tensor([-0.9]), torch.tensor([-0.5])

    def fitted(seed):
        return sluice.estimators.ALICES().fit(data, epochs=3, seed=seed).log_ratio(x, theta0, theta1)

    assert torch.equal(fitted(0), fitted(0))
    assert not torch.equal(fitted(0), fitted(1))


def test_fit_does_not_depend_on_the_callers_global_state():
    data = small_data()
    x, theta0, theta1 = data.x[:50], torch.tensor([-0.9]), torch.tensor([-0.5])
    outputs = []
    for state in (1, 2):
        torch.manual_seed(state)
        outputs.append(sluice.estimators.SCANDAL().fit(data, epochs=2, seed=0).log_ratio(x, theta0, theta1))
    assert torch.equal(*outputs)


def test_spawned_streams_and_the_seeded_fork():
    assert spawn_seeds(5, 0, count=3) == spawn_seeds(5, (0,), count=3) != spawn_seeds(5, 1, count=3)
    with seeded_global_generator(9):
        first = torch.rand(3)
    with seeded_global_generator(9):
        again = torch.rand(3)
    assert torch.equal(first, again)
