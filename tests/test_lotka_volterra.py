"""Lotka–Volterra: the batched Gillespie against a plain one, the joint quantities, the cap, and the pilot constants."""

import math
import random

import pytest
import torch

import sluice
from conftest import assert_mean_close
from sluice.data.simulation import DroppedRowsWarning
from sluice.mining.joint import autograd_score
from sluice.simulators.lotka_volterra import PILOT_MEAN, PILOT_SD, THETA_STAR, LotkaVolterra

PREDATOR_CHANGE, PREY_CHANGE = (1, -1, 0, 0), (0, 0, 1, -1)
# predators die out by t ≈ 5 and the prey then grow to ≈ 1500: the pure-birth tail does most of the work
PREDATORS_DIE_OUT = tuple(math.log(rate) for rate in (0.002, 1.0, 0.1, 0.005))


def reference_gillespie(theta, uniform_pair, duration=30.0, points=151):
    """A plain, one-run Gillespie in Python floats. ``uniform_pair()`` gives (u₁, u₂) per event: τ = −log(1 − u₁)/Λ,
    reaction = first j with u₂Λ < λ_0 + … + λ_j. Returns the recorded states, the counts N_j and the integrals
    Σ_k τ_k λ_j(s_k; θ) over the intervals between events, the last one cut at T."""
    rates = [math.exp(value) for value in theta]
    predators, prey, now = 50, 100, 0.0
    times = [duration * k / (points - 1) for k in range(points)]
    recorded, counts, integrated = [], [0, 0, 0, 0], [0.0, 0.0, 0.0, 0.0]
    while True:
        lam = [rates[0] * predators * prey, rates[1] * predators, rates[2] * prey, rates[3] * predators * prey]
        total = sum(lam)
        u1, u2 = uniform_pair()
        waiting = -math.log1p(-u1) / total if total > 0 else math.inf
        last = now + waiting >= duration
        interval = duration - now if last else waiting
        for j in range(4):
            integrated[j] += interval * lam[j]
        while len(recorded) < points and (last or times[len(recorded)] < now + waiting):
            recorded.append((predators, prey))
        if last:
            return recorded, counts, integrated
        reaction, cumulative = 0, lam[0]
        while u2 * total >= cumulative:
            reaction += 1
            cumulative += lam[reaction]
        counts[reaction] += 1
        predators += PREDATOR_CHANGE[reaction]
        prey += PREY_CHANGE[reaction]
        now += waiting


@pytest.fixture(scope="module")
def at_theta_star():
    """2000 runs at θ* (float64), capped ones included."""
    simulator = LotkaVolterra()
    theta = torch.tensor(THETA_STAR, dtype=torch.float64).expand(2000, 4)
    x, z = simulator.sample(theta, generator=torch.Generator().manual_seed(11))
    return simulator, theta, x, z


@pytest.mark.parametrize("seed", [0, 1])
def test_a_run_follows_the_reference_gillespie_and_its_score_is_the_closed_form(seed):
    """With the same uniforms, one run makes the same events as a plain Gillespie; the autograd joint score equals
    t_j = N_j − Σ_k τ_k λ_j(s_k; θ) computed along that path, the censored last interval included."""
    theta = torch.tensor(THETA_STAR, dtype=torch.float64) + torch.tensor([0.005, -0.003, 0.002, -0.007],
                                                                          dtype=torch.float64)
    simulator = LotkaVolterra(standardise=False)
    paths = simulator.trajectories(theta[None], torch.Generator().manual_seed(seed))
    uniforms = torch.Generator().manual_seed(seed)

    def uniform_pair():
        pair = torch.rand(1, 2, generator=uniforms, dtype=torch.float64)[0]
        return float(pair[0]), float(pair[1])

    recorded, counts, integrated = reference_gillespie(theta.tolist(), uniform_pair)
    assert min(predators for predators, _ in recorded) > 0  # the path never leaves the lockstep loop
    assert paths.states[0].tolist() == [list(map(float, state)) for state in recorded]
    assert paths.counts[0].tolist() == counts
    exposure = [value / math.exp(rate) for value, rate in zip(integrated, theta.tolist(), strict=True)]
    assert torch.allclose(paths.exposure[0], torch.tensor(exposure, dtype=torch.float64), rtol=1e-9, atol=0.0)

    z = {"counts": paths.counts, "exposure": paths.exposure, "capped": paths.capped}
    score = autograd_score(simulator, simulator.summary_statistics(paths.states), z, theta[None]).score[0]
    closed_form = torch.tensor([n - s for n, s in zip(counts, integrated, strict=True)], dtype=torch.float32)
    assert torch.allclose(score, closed_form, rtol=0.0, atol=1e-3), (score, closed_form)


def test_predator_free_tail_matches_the_reference_in_distribution():
    """Runs whose predators die out finish as a pure birth process drawn in blocks; in distribution they match
    the plain Gillespie (prey at t = 10, 20, 30, prey births, ∫Y dt), within 5 standard errors."""
    n_fast, n_slow = 2000, 300
    simulator = LotkaVolterra(standardise=False)
    paths = simulator.trajectories(torch.tensor(PREDATORS_DIE_OUT).expand(n_fast, 4), torch.Generator().manual_seed(3))
    assert paths.states[:, -1, 0].eq(0).all() and not paths.capped.any()
    fast = torch.stack([paths.states[:, 50, 1], paths.states[:, 100, 1], paths.states[:, 150, 1],
                        paths.counts[:, 2], paths.exposure[:, 2] / 30], dim=1)
    rng = random.Random(4)
    slow = []
    for _ in range(n_slow):
        recorded, counts, integrated = reference_gillespie(PREDATORS_DIE_OUT, lambda: (rng.random(), rng.random()))
        slow.append([recorded[50][1], recorded[100][1], recorded[150][1], counts[2],
                     integrated[2] / math.exp(PREDATORS_DIE_OUT[2]) / 30])
    slow = torch.tensor(slow, dtype=torch.float64)
    error = (fast.var(dim=0) / n_fast + slow.var(dim=0) / n_slow).sqrt()
    z_scores = (fast.mean(dim=0) - slow.mean(dim=0)).abs() / error
    assert torch.all(z_scores < 5), z_scores


def test_recorded_states_are_consistent_with_the_counts(at_theta_star):
    """States are whole and non-negative, start at (50, 100), and X_T − X_0 = N_1 − N_2, Y_T − Y_0 = N_3 − N_4."""
    simulator = LotkaVolterra(standardise=False)
    theta = torch.tensor(THETA_STAR, dtype=torch.float64).expand(300, 4)
    paths = simulator.trajectories(theta, torch.Generator().manual_seed(5))
    done = ~paths.capped
    states, counts = paths.states[done], paths.counts[done]
    assert torch.all(states >= 0) and torch.equal(states, states.round())
    assert torch.all(states[:, 0] == torch.tensor([50.0, 100.0], dtype=torch.float64))
    assert torch.equal(states[:, -1, 0] - 50, counts[:, 0] - counts[:, 1])
    assert torch.equal(states[:, -1, 1] - 100, counts[:, 2] - counts[:, 3])
    assert torch.all(paths.exposure >= 0)
    _, _, x, z = at_theta_star
    assert torch.isfinite(x[~z["capped"]]).all() and torch.isnan(x[z["capped"]]).all()


def test_joint_score_has_mean_zero(at_theta_star):
    simulator, theta, x, z = at_theta_star
    score = autograd_score(simulator, x, z, theta).score
    assert_mean_close(score, torch.zeros(4), "E[t(x,z|θ*)]")


def test_joint_ratio_has_mean_one_at_a_nearby_theta(at_theta_star):
    simulator, theta1, x, z = at_theta_star
    theta0 = theta1 + torch.tensor([0.005, -0.005, 0.005, -0.005], dtype=torch.float64)
    log_r = simulator.joint_log_prob(x, z, theta0) - simulator.joint_log_prob(x, z, theta1)
    assert_mean_close(log_r.exp(), 1.0, "E[r(x,z|θ0,θ*)]")
    closed_form = (z["counts"] * (theta0 - theta1) - (theta0.exp() - theta1.exp()) * z["exposure"]).sum(dim=1)
    assert torch.allclose(log_r, closed_form, rtol=1e-9, atol=1e-9)


def test_pilot_constants_describe_the_summaries_at_theta_star(at_theta_star):
    """The hard-coded standardisation gives x at θ* mean 0 (within 5 standard errors) and sd near 1 (the prey
    summaries have heavy tails: runs whose predators die out, so their sd is only loosely pinned by 2000 runs)."""
    _, _, x, z = at_theta_star
    finite = x[~z["capped"]]
    assert_mean_close(finite, torch.zeros(9), "standardised summaries at θ*")
    assert torch.all((finite.std(dim=0).log()).abs() < math.log(2.0))
    assert len(PILOT_MEAN) == len(PILOT_SD) == 9


def test_same_seed_same_runs_other_seed_other_runs():
    """(Short runs that end in the pure-birth tail, which draws from the generator too.)"""
    simulator = LotkaVolterra()
    theta = torch.tensor(PREDATORS_DIE_OUT) + 0.01 * torch.randn(40, 4, generator=torch.Generator().manual_seed(0))
    x1, z1 = simulator.sample(theta, generator=torch.Generator().manual_seed(7))
    x2, z2 = simulator.sample(theta, generator=torch.Generator().manual_seed(7))
    x3, _ = simulator.sample(theta, generator=torch.Generator().manual_seed(8))
    assert torch.equal(x1.nan_to_num(), x2.nan_to_num())
    assert all(torch.equal(z1[key], z2[key]) for key in z1)
    assert not torch.equal(x1.nan_to_num(), x3.nan_to_num())


@pytest.mark.parametrize(("theta", "cap"), [(THETA_STAR, 5900), (PREDATORS_DIE_OUT, 1500)],
                         ids=["theta_star", "predators_die_out"])
def test_capped_runs_are_counted_and_their_stopped_paths_keep_the_identities(theta, cap):
    """With the cap near the median number of events about half the runs stop early: they are marked and counted,
    x is NaN, and z — the density of the path stopped at the cap — still gives E[t] = 0."""
    n = 1000
    simulator = LotkaVolterra(max_events=cap)
    thetas = torch.tensor(theta, dtype=torch.float64).expand(n, 4)
    x, z = simulator.sample(thetas, generator=torch.Generator().manual_seed(9))
    capped = z["capped"]
    assert 0.2 < capped.double().mean() < 0.8
    assert simulator.n_capped == int(capped.sum()) and simulator.n_runs == n
    assert torch.isnan(x[capped]).all() and torch.isfinite(x[~capped]).all()
    assert torch.all(z["counts"][capped].sum(dim=1) == cap) and torch.all(z["counts"][~capped].sum(dim=1) < cap)
    assert_mean_close(autograd_score(simulator, x, z, thetas).score, torch.zeros(4), "E[t] with the cap")


def test_simulate_drops_capped_runs_with_a_counted_warning():
    simulator = LotkaVolterra(max_events=6000)
    with pytest.warns(DroppedRowsWarning, match=r"dropped \d+ of 200 rows with NaN or inf \(x: \d+\)") as caught:
        data = sluice.simulate(simulator, simulator.default_prior(), n=200, seed=0, max_dropped_fraction=1.0)
    assert 0 < simulator.n_capped < 200
    assert len(data) == 200 - simulator.n_capped
    assert f"dropped {simulator.n_capped} of 200" in str(caught[0].message)


def test_default_prior_is_the_published_zoom_box():
    prior = LotkaVolterra().default_prior()
    theta_star = torch.tensor(THETA_STAR)
    assert torch.allclose(prior.low, theta_star - 0.01) and torch.allclose(prior.high, theta_star + 0.01)


def test_check_simulator_passes():
    simulator = LotkaVolterra()
    report = sluice.check_simulator(simulator, simulator.default_prior(), n=500, n_theta=2)
    assert report.ok, str(report)
