"""The stochastic Lotka–Volterra predator–prey model: a Markov jump process run by a batched Gillespie algorithm."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from .base import Simulator, as_theta_batch
from .priors import BoxUniform

THETA_STAR = (math.log(0.01), math.log(0.5), math.log(1.0), math.log(0.01))  # the published parameter point

# Mean and standard deviation of the nine raw summaries over the uncapped runs among 20,000 at θ*, simulated in
# batches of 4096 from torch.Generator().manual_seed(0): benchmarks/lotka_volterra_pilot.py computes them again and
# says whether they still match. Fixed numbers, so that x means the same thing whatever else is simulated.
PILOT_MEAN = (89.7689, 46.1552, 8.42196, 7.70469, 0.979429, 0.936191, 0.97018, 0.911663, 0.102493)
PILOT_SD = (21.4301, 81.2772, 0.62787, 0.73298, 0.00896345, 0.0217922, 0.0120932, 0.0236257, 0.174386)

# Reactions j = 0 … 3: predator birth (X+1), predator death (X−1), prey birth (Y+1), predation (Y−1). The loop
# picks reaction j with one comparison, g = ([j ≥ 1], [j ≥ 2], [j ≥ 3]), and sums g into the tally G; so
# N_3 = G_3, N_2 = G_2 − G_3, N_1 = G_1 − G_2 and N_0 = (X_T − X_0) + N_1. An event changes (X, Y) by
# (1 − 2g_1 + g_2, g_2 − 2g_3): the constant 1 is added apart, the rest is _TALLY_TO_STATE @ g.
_TALLY_TO_STATE = torch.tensor([[-2.0, 1.0, 0.0], [0.0, 1.0, -2.0]], dtype=torch.float64)
_PREY_BIRTH_TALLY = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
CHECK_EVERY = 32  # iterations between compactions of the working set (and draws of uniforms)
PREY_ONLY_BLOCK = 2048  # prey births drawn at a time for runs whose predators died out


@contextlib.contextmanager
def _torch_threads(threads: int | None):
    """Run the block with ``threads`` torch threads: the loop's tensors are small, and a second thread mostly waits
    (on a busy machine it can cost ten times more than it gives)."""
    before = torch.get_num_threads()
    if threads is None or threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Trajectories:
    """n simulated paths: ``states`` [n, 151, 2] (X, Y at the recorded times), ``counts`` N_j and ``exposure``
    A_j = ∫ h_j(s(t)) dt, both [n, 4] float64, and ``capped`` [n] (stopped at ``max_events`` events before T)."""

    states: torch.Tensor
    counts: torch.Tensor
    exposure: torch.Tensor
    capped: torch.Tensor


@dataclass
class _PreyBirths:
    """Prey births of r runs without predators, clock in recording intervals: ``count``, ``exposure`` ∫ Y dt,
    ``capped``, ``end`` (clock of the last birth), ``by_point`` [r, 151] (births at or before each recorded point)."""

    count: torch.Tensor
    exposure: torch.Tensor
    capped: torch.Tensor
    end: torch.Tensor
    by_point: torch.Tensor


class LotkaVolterra(Simulator):
    """Predators X and prey Y, from (X, Y) = (50, 100) at t = 0 to T = 30, recorded every 0.2 (151 points).

    Four reactions with rates λ_j = exp(θ_j) h_j(X, Y): predator birth XY (X+1), predator death X (X−1),
    prey birth Y (Y+1), predation XY (Y−1). Runs are simulated exactly (Gillespie), all in lockstep.

    The path density is p(path | θ) = Π_events λ_e(s_{k−1}) e^{−τ_k Λ(s_{k−1})} · e^{−(T − t_last) Λ(s_last)},
    Λ = Σ_j λ_j, so with N_j the number of reactions j and the exposure A_j = ∫_0^T h_j(s(t)) dt

        log p(x, z | θ) = Σ_j [N_j θ_j − e^{θ_j} A_j] + const,      t_j(x, z | θ) = N_j − e^{θ_j} A_j,

    and z = ``{"counts": N [n, 4], "exposure": A [n, 4], "capped": [n]}`` (float64, bool) holds all of it;
    joint_log_prob returns the value relative to θ* (a constant per run), which keeps log r accurate in float32.

    x holds nine summaries of the 151 recorded points: the means of X and Y, log(var + 1) of each, their
    lag-1 and lag-2 autocorrelations and the X–Y correlation, standardised by the fixed pilot-run constants
    ``PILOT_MEAN`` and ``PILOT_SD`` (``standardise=False``: the raw summaries).

    Runaway runs (the predators die out and the prey grow exponentially) are stopped after ``max_events``
    events: ``z["capped"]`` marks them, ``n_capped`` and ``n_runs`` count them per instance, and their x is
    NaN, so ``sluice.simulate`` drops them with a counted ``DroppedRowsWarning`` (their z is the exact density
    of the path stopped at the cap, a stopping time, so E[t] = 0 and E[r] = 1 hold over all runs; dropping
    them conditions the data on "not capped"). At the default prior about 0.5 % of runs are capped, so this
    simulator's ``max_dropped_fraction`` is 5 % (the 1 % default would stop small runs by chance).
    ``threads``: torch threads while simulating (default 1, the fastest for these
    small tensors; None leaves torch's setting alone).

    Example::

        simulator = sluice.simulators.LotkaVolterra()
        data = sluice.simulate(simulator, simulator.default_prior(), n=1000)
    """

    parameter_names = ("log_predator_birth", "log_predator_death", "log_prey_birth", "log_predation")
    initial_state = (50.0, 100.0)
    duration = 30.0
    n_recorded = 151
    default_batch_size = 16_384  # measured: runs per CPU-second grow to here (×1.7 over 4096), then level off
    max_dropped_fraction = 0.05  # about 0.5 % of runs are capped at the default prior: see above

    def __init__(self, max_events: int = 100_000, standardise: bool = True, threads: int | None = 1):
        self.max_events = int(max_events)
        self.standardise = standardise
        self.threads = threads  # torch threads while simulating (None: leave torch's setting alone)
        self.n_runs = 0  # runs simulated by sample(), and how many of them were capped
        self.n_capped = 0

    def default_prior(self) -> BoxUniform:
        """The published "zoom" box: θ* ± 0.01 in every log rate."""
        theta_star = torch.tensor(THETA_STAR)
        return BoxUniform(low=theta_star - 0.01, high=theta_star + 0.01)

    def wide_prior(self, half_width: float = 0.5) -> BoxUniform:
        """θ* ± ``half_width`` in every log rate: a broader training range, for amortised inference beyond the
        zoom box (at ± 0.5 about 40 % of runs lose their predators and 0.6 % are capped)."""
        theta_star = torch.tensor(THETA_STAR)
        return BoxUniform(low=theta_star - half_width, high=theta_star + half_width)

    @property
    def record_every(self) -> float:
        """Time between recorded points: T / 150 = 0.2."""
        return self.duration / (self.n_recorded - 1)

    def recorded_times(self) -> torch.Tensor:
        """The 151 times 0, 0.2, …, 30 (float64)."""
        return torch.arange(self.n_recorded, dtype=torch.float64) * self.record_every

    def sample(self, theta, generator=None):
        theta = as_theta_batch(theta, None, 4)
        paths = self.trajectories(theta, generator)
        summaries = self.summary_statistics(paths.states)
        if self.standardise:
            mean, sd = torch.tensor(PILOT_MEAN, dtype=torch.float64), torch.tensor(PILOT_SD, dtype=torch.float64)
            summaries = (summaries - mean) / sd
        summaries[paths.capped] = math.nan
        self.n_runs += len(theta)
        self.n_capped += int(paths.capped.sum())
        return summaries.to(torch.float32), {"counts": paths.counts, "exposure": paths.exposure,
                                             "capped": paths.capped}

    def joint_log_prob(self, x, z, theta):
        """Σ_j [N_j (θ_j − θ*_j) − e^{θ*_j} expm1(θ_j − θ*_j) A_j]: log p(x, z | θ) − log p(x, z | θ*), in float64."""
        shift = theta.to(torch.float64) - torch.tensor(THETA_STAR, dtype=torch.float64)
        rate_star = torch.tensor(THETA_STAR, dtype=torch.float64).exp()
        counts, exposure = z["counts"].to(torch.float64), z["exposure"].to(torch.float64)
        return (counts * shift - rate_star * torch.expm1(shift) * exposure).sum(dim=1)

    @staticmethod
    def summary_statistics(states: torch.Tensor) -> torch.Tensor:
        """The nine raw summaries ``[n, 9]`` (float64) of recorded states ``[n, T, 2]``: mean X, mean Y,
        log(var X + 1), log(var Y + 1), lag-1 and lag-2 autocorrelation of X, of Y, and corr(X, Y).

        Variances divide by T; the lag-k autocorrelation is Σ_t (u_t u_{t+k}) / Σ_t u_t², u the centred series
        (0 for a constant series).
        """
        states = states.to(torch.float64)
        mean = states.mean(dim=1)  # [n, 2]
        centred = states - mean[:, None, :]
        sum_squares = (centred**2).sum(dim=1)  # [n, 2]
        variance = sum_squares / states.shape[1]
        safe = sum_squares.clamp_min(1e-300)
        lag1 = (centred[:, 1:] * centred[:, :-1]).sum(dim=1) / safe
        lag2 = (centred[:, 2:] * centred[:, :-2]).sum(dim=1) / safe
        cross = (centred[:, :, 0] * centred[:, :, 1]).sum(dim=1) / (safe[:, 0] * safe[:, 1]).sqrt()
        return torch.stack([mean[:, 0], mean[:, 1], variance[:, 0].log1p(), variance[:, 1].log1p(),
                            lag1[:, 0], lag2[:, 0], lag1[:, 1], lag2[:, 1], cross], dim=1)

    def trajectories(self, theta, generator: torch.Generator | None = None) -> Trajectories:
        """Simulate one path per row of ``theta`` [n, 4] by a lockstep Gillespie algorithm.

        Every iteration makes one event in each run still going, from two uniforms (u₁, u₂): the waiting time
        τ = −log(1 − u₁)/Λ and the reaction, the first j with u₂Λ < Σ_{i≤j} λ_i. The uniforms come from
        ``generator`` as ``torch.rand(32, 2, m, dtype=float64)`` for every ``CHECK_EVERY`` = 32 iterations of
        the m runs in the working set. A run ends when its next event would fall at or after T (the interval up
        to T still counts in the exposure), when Λ = 0 (extinction: the state stays constant), or once it has
        made ``max_events`` events (capped). Every 32 iterations finished runs are compacted away, and runs
        whose predators died out are finished in one go: only prey births remain, a pure birth process whose
        waiting times are drawn a block at a time. The clock counts recording intervals (t / 0.2), so that the
        recorded points are the integers 0 … 150. A recorded point holds the state just after the events at or
        before it.
        """
        with _torch_threads(self.threads):
            return self._simulate(as_theta_batch(theta, None, 4).detach().to(torch.float64), generator)

    def _simulate(self, theta: torch.Tensor, generator) -> Trajectories:
        n, points = theta.shape[0], self.n_recorded
        out = Trajectories(states=torch.full((n, points, 2), math.nan, dtype=torch.float64),
                           counts=torch.zeros(n, 4, dtype=torch.float64),
                           exposure=torch.zeros(n, 4, dtype=torch.float64),
                           capped=torch.zeros(n, dtype=torch.bool))
        stopped_at = torch.full((n,), math.inf, dtype=torch.float64)  # clock of a capped run's last event
        # the working set; runs lie along the last axis ([4, m] rates, [2, m] states) so that every operation
        # runs over contiguous memory
        runs = {"row": torch.arange(n), "rate": (theta.exp() * self.record_every).T.contiguous(),  # per interval
                "state": torch.tensor(self.initial_state, dtype=torch.float64)[:, None].repeat(1, n),
                "clock": torch.zeros(n, dtype=torch.float64),
                "slot": torch.arange(n, dtype=torch.float64) * points,  # row of the run in the flattened states
                "next_record": torch.zeros(n, dtype=torch.float64),  # first recorded point not yet written
                "tally": torch.zeros(3, n, dtype=torch.float64),
                "exposure": torch.zeros(3, n, dtype=torch.float64)}  # ∫XY, ∫X, ∫Y dt in recording intervals
        going = torch.ones(n, dtype=torch.bool)
        flat_states = out.states.view(-1, 2)
        iteration = 0
        while iteration < self.max_events and len(going) > 0:
            block = min(CHECK_EVERY, self.max_events - iteration)  # iterations until the next check
            uniforms = torch.rand(block, 2, len(going), generator=generator, dtype=torch.float64)
            exponentials = -torch.log1p(-uniforms[:, 0])
            for i in range(block):
                going = self._step(runs, exponentials[i], uniforms[i, 1], flat_states)
            iteration += block
            self._finish_prey_only(runs, going, self.max_events - iteration, out, stopped_at, generator)
            n_going = int(going.sum())
            if n_going < 0.75 * len(going):
                self._store(runs, ~going, out)
                runs = {key: value[..., going] for key, value in runs.items()}
                going = going[going]
        out.capped[runs["row"][going]] = True  # still going after max_events events
        stopped_at[runs["row"][going]] = runs["clock"][going]
        self._store(runs, torch.ones_like(going), out)
        out.states = self._fill_forward(out.states, stopped_at)
        return out

    def _step(self, runs: dict, exponential: torch.Tensor, uniform: torch.Tensor, recorded: torch.Tensor):
        """One Gillespie event for every run in the working set, from an Exp(1) draw (the waiting time) and a
        uniform (the reaction) per run; returns which runs made one (the others are done)."""
        end = float(self.n_recorded - 1)
        state, clock, rate = runs["state"], runs["clock"], runs["rate"]
        predators, prey = state[0], state[1]
        both = predators * prey
        # partial sums of λ = e^θ (XY, X, Y, XY): λ_0, λ_0 + λ_1, λ_0 + λ_1 + λ_2 and Λ
        partial = torch.stack([rate[0] * both, predators, prey])
        partial[1].mul_(rate[1]).add_(partial[0])
        partial[2].mul_(rate[2]).add_(partial[1])
        total = torch.addcmul(partial[2], rate[3], both)
        then = clock + (exponential / total).nan_to_num_(nan=math.inf)  # Λ = 0: no event ever (0/0 once in 2^53)
        happens = then < end  # a finished run sits at clock = end, so it never moves again
        limited = then.clamp_max(end)
        runs["exposure"].addcmul_(torch.stack([both, predators, prey]), limited - clock)  # ∫XY, ∫X, ∫Y
        crossing = torch.nonzero(then > runs["next_record"])[:, 0]  # recorded points in [clock, then) get this state
        if len(crossing) > 0:  # write the first; _fill_forward copies it to the rest (the same state)
            slots = runs["slot"][crossing] + runs["next_record"][crossing]
            recorded.index_copy_(0, slots.long(), state[:, crossing].T)
            next_record = torch.maximum(runs["next_record"], then.ceil())
            runs["next_record"] = torch.where(happens, next_record, math.inf)  # a finished run records no more
        # the reaction is the number of partial sums ≤ u Λ: g = ([λ_0 ≤ u Λ], [λ_0 + λ_1 ≤ u Λ], [... + λ_2 ≤ u Λ])
        threshold = torch.where(happens, uniform * total, -1.0)  # runs that do not move get g = 0
        tally = (partial <= threshold).view(torch.uint8).to(torch.float64)  # (uint8 converts faster than bool)
        runs["tally"] += tally
        runs["state"] = torch.addmm(state, _TALLY_TO_STATE, tally)
        runs["state"][0] += happens
        runs["clock"] = limited
        return happens

    def _store(self, runs: dict, which: torch.Tensor, out: Trajectories) -> None:
        rows = runs["row"][which]
        tally, exposure = runs["tally"][:, which], runs["exposure"][:, which] * self.record_every
        predator_change = runs["state"][0, which] - self.initial_state[0]
        out.counts[rows] = torch.stack([predator_change + tally[0] - tally[1], tally[0] - tally[1],
                                        tally[1] - tally[2], tally[2]], dim=1)
        out.exposure[rows] = torch.stack([exposure[0], exposure[1], exposure[2], exposure[0]], dim=1)

    def _finish_prey_only(self, runs: dict, going: torch.Tensor, budget: int, out: Trajectories,
                          stopped_at: torch.Tensor, generator) -> None:
        """Finish the runs whose predators died out (marking them done in ``going``): only prey births remain."""
        which = torch.nonzero(going & (runs["state"][0] == 0))[:, 0]
        if len(which) == 0:
            return
        prey, clock = runs["state"][1, which], runs["clock"][which]
        births = self._prey_births(prey, clock, runs["rate"][2, which], budget, generator)
        runs["tally"][:, which] += _PREY_BIRTH_TALLY[:, None] * births.count
        runs["exposure"][2, which] += births.exposure
        # the recorded points not yet written (up to the cap, for a capped run) get (0, prey + births so far)
        points = torch.arange(self.n_recorded, dtype=torch.float64)
        pending = points >= clock[:, None]
        rows = runs["row"][which]
        values = torch.stack([torch.zeros_like(births.by_point), prey[:, None] + births.by_point], dim=2)
        out.states[rows] = torch.where(pending[:, :, None], values, out.states[rows])
        out.capped[rows[births.capped]] = True
        stopped_at[rows[births.capped]] = births.end[births.capped]
        runs["state"][1, which] = prey + births.count
        runs["clock"][which] = float(self.n_recorded - 1)
        runs["next_record"][which] = math.inf
        going[which] = False

    def _prey_births(self, prey, clock, rate, budget: int, generator) -> _PreyBirths:
        """A pure birth process (rate ``rate``·Y per recording interval) from ``prey`` at ``clock`` to the end,
        or until ``budget`` births."""
        r, end = len(prey), float(self.n_recorded - 1)
        points = torch.arange(self.n_recorded, dtype=torch.float64)
        count = torch.zeros(r, dtype=torch.float64)
        exposure = torch.zeros(r, dtype=torch.float64)
        by_point = torch.zeros(r, self.n_recorded, dtype=torch.float64)
        clock = clock.clone()
        capped = torch.zeros(r, dtype=torch.bool)
        going = torch.ones(r, dtype=torch.bool)
        steps = torch.arange(PREY_ONLY_BLOCK, dtype=torch.float64)
        while True:
            live = torch.nonzero(going)[:, 0]
            if len(live) == 0:
                break
            draws = -torch.log1p(-torch.rand(len(live), PREY_ONLY_BLOCK, generator=generator, dtype=torch.float64))
            population = (prey[live] + count[live])[:, None] + steps
            event_times = clock[live, None] + (draws / (rate[live, None] * population)).cumsum(dim=1)
            happens = (event_times < end) & (steps < (budget - count[live])[:, None])
            made = happens.sum(dim=1)
            happened = torch.where(happens, event_times, math.inf)
            by_point[live] += torch.searchsorted(happened, points.expand(len(live), -1).contiguous(), right=True)
            last = event_times.gather(1, (made - 1).clamp_min(0)[:, None])[:, 0]
            clock[live] = torch.where(made > 0, last, clock[live])
            count[live] += made
            capped_now = count[live] == budget
            ended = ~capped_now & (made < PREY_ONLY_BLOCK)  # the next birth would fall at or after the end
            tail = torch.where(ended, (end - clock[live]) * (prey[live] + count[live]), 0.0)
            exposure[live] += (draws * happens).sum(dim=1) / rate[live] + tail  # Σ τ_i Y_i = Σ draw_i / rate
            capped[live] = capped_now
            going[live] = ~(capped_now | ended)
        return _PreyBirths(count=count, exposure=exposure, capped=capped, end=clock, by_point=by_point)

    @staticmethod
    def _fill_forward(recorded: torch.Tensor, stopped_at: torch.Tensor) -> torch.Tensor:
        """Copy each written state to the unwritten recorded points after it; a capped run's points from its
        last event on (``stopped_at``, a clock) are unknown: NaN."""
        written = ~torch.isnan(recorded[:, :, 0])
        positions = torch.arange(recorded.shape[1])
        source = torch.where(written, positions, 0).cummax(dim=1).values
        filled = recorded.gather(1, source[:, :, None].expand(-1, -1, 2))
        unknown = positions.to(torch.float64) >= stopped_at[:, None]
        return filled.masked_fill(unknown[:, :, None], math.nan)
