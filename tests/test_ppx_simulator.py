"""from_ppx: a Galton board that hands its draws to sluice over PPX (tests/ppx_python_galton.py, a Python process)
is sluice's GaltonBoard: each scores the other's runs to the same joint log-probability, its finite-difference score
is the built-in's autograd score within the finite-difference error, and check_simulator passes. Control flow that
depends on θ is refused; a simulator that crashes, hangs or garbles a message costs its rows only, named by run and
address; processes, pickling and closing behave.

Each run is some twenty ZeroMQ round trips between two processes, so the tests use tens to a few hundred runs.
"""

from __future__ import annotations

import gc
import os
import pathlib
import pickle
import subprocess
import sys
import warnings

import pytest
import torch

import sluice
from sluice.mining.joint import FiniteDifferenceWarning, joint_log_prob_and_score
from sluice.simulators import GaltonBoard
from sluice.simulators.priors import BoxUniform, parameter_scale, sample_prior

pytest.importorskip("zmq", reason='from_ppx needs pyzmq: pip install "sluice-sbi[ppx]"')
pytest.importorskip("flatbuffers", reason='from_ppx needs flatbuffers: pip install "sluice-sbi[ppx]"')

from sluice.simulators.ppx import (  # noqa: E402  (after the skips)
    PPXReplayError,
    PPXRunFailedWarning,
    PPXStartError,
    PPXTraceError,
    PPXUnknownDistributionError,
    from_ppx,
)
from sluice.simulators.ppx.simulator import ORDER, SITES, X_START  # noqa: E402

COMMAND = [sys.executable, str(pathlib.Path(__file__).with_name("ppx_python_galton.py"))]
PRIOR = BoxUniform([-1.0], [-0.4])  # GaltonBoard's default prior
LEVEL_KEYS = ["level"] + [f"level#{k}" for k in range(1, 20)]  # from_ppx's keys of the site met 20 times
READING_WIDTH = 1.5  # the --observe variant's Normal(nail, 1.5) reading
ODD = torch.arange(20) % 2


@pytest.fixture(scope="module")
def galton():
    with from_ppx(COMMAND, ["theta"], prior=PRIOR) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def galton_two_processes():
    with from_ppx(COMMAND, ["theta"], prior=PRIOR, processes=2) as simulator:
        yield simulator


def ppx_latents(z: dict) -> dict:
    """GaltonBoard's z as from_ppx keys it: the 20 decisions, one site each (no bookkeeping: every run met them all)."""
    return {key: z["right"][:, level].to(torch.float64) for level, key in enumerate(LEVEL_KEYS)}


def builtin_latents(z: dict) -> tuple[dict, torch.Tensor]:
    """from_ppx's z of the board as GaltonBoard's {"right", "nail"}, and the final nail: nail_ℓ = 15 + Σ_(k<ℓ) (right_k
    − odd_k)."""
    right = torch.stack([z[key] for key in LEVEL_KEYS], dim=1)
    moves = torch.cumsum(right - ODD, dim=1)
    nail = 15 + torch.cat([torch.zeros(len(right), 1, dtype=right.dtype), moves[:, :-1]], dim=1)
    return {"right": right.to(torch.uint8), "nail": nail.to(torch.uint8)}, 15 + moves[:, -1]


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- the same simulator ---------------------------------------------------------------------------------------

def test_replay_of_the_builtin_boards_runs_gives_its_joint_log_prob_and_log_ratio(galton):
    """On GaltonBoard's own runs (x, z), replay gives its log p(x, z|θ) at the θ1 that drew them and at another θ0,
    and so log r, to 1e-10 (both sum the same 20 float64 logarithms, written differently)."""
    board = GaltonBoard()
    theta1 = sample_prior(PRIOR, 60, seed=0).to(torch.float64)
    theta0 = sample_prior(PRIOR, 60, seed=1).to(torch.float64)
    x, z = board.sample(theta1, generator=seeded(2))
    log_p1, log_p0 = galton.joint_log_prob(x, ppx_latents(z), theta1), galton.joint_log_prob(x, ppx_latents(z), theta0)
    expected1, expected0 = board.joint_log_prob(x, z, theta1), board.joint_log_prob(x, z, theta0)
    assert float((log_p1 - expected1).abs().max()) < 1e-10
    assert float(((log_p0 - log_p1) - (expected0 - expected1)).abs().max()) < 1e-10
    assert float((expected0 - expected1).abs().max()) > 1.0  # θ0 and θ1 differ enough for log r to matter


def test_the_builtin_board_scores_runs_drawn_through_ppx_as_replay_does(galton):
    """Runs drawn through PPX (decisions chosen by sluice's controller) are board runs: x is the nail the decisions
    lead to, and GaltonBoard's joint log p of them equals the replay's at two θ, to 1e-10."""
    theta1 = sample_prior(PRIOR, 60, seed=3).to(torch.float64)
    theta0 = sample_prior(PRIOR, 60, seed=4).to(torch.float64)
    x, z = galton.sample(theta1, generator=seeded(5))
    assert z[SITES].eq(20).all() and torch.equal(z[ORDER], torch.arange(20).expand(60, 20))
    board_z, final_nail = builtin_latents(z)
    assert torch.equal(x[:, 0], final_nail)
    board = GaltonBoard()
    for theta in (theta1, theta0):
        difference = galton.joint_log_prob(x, z, theta) - board.joint_log_prob(x, board_z, theta)
        assert float(difference.abs().max()) < 1e-10


def test_the_joint_score_is_the_builtin_autograd_score_within_the_finite_difference_error(galton):
    """from_ppx has no autograd: mining takes the central difference (f(θ+h) − f(θ−h))/2h of the replayed log p,
    with h = fd_step × the prior's width, and says so once (FiniteDifferenceWarning). Its error against the built-in
    autograd score t is bounded by the truncation h²/6 sup|f'''| over [θ−h, θ+h] (f''' by autograd at θ and θ ± h,
    doubled for the sup: f''' changes by about 10h ≈ 1% over the step, its logistics' slopes being at most 10), the
    rounding of the float64 log p (20 logarithms within a few ulps: 8 ε |log p|, over h) and of the float32 score that
    sluice stores (2⁻²⁴ |t|)."""
    board = GaltonBoard()
    theta = sample_prior(PRIOR, 40, seed=6).to(torch.float64)
    x, z = board.sample(theta, generator=seeded(7))
    step = galton.fd_step * parameter_scale(PRIOR)
    h = float(step[0])
    with pytest.warns(FiniteDifferenceWarning, match="differentiable = False"):
        _, score = joint_log_prob_and_score(galton, x, ppx_latents(z), theta, step)
    score = score.to(torch.float64)[:, 0]

    def derivatives(at):
        at = at.clone().requires_grad_(True)
        log_p = board.joint_log_prob(x, z, at)
        (first,) = torch.autograd.grad(log_p.sum(), at, create_graph=True)
        (second,) = torch.autograd.grad(first.sum(), at, create_graph=True)
        (third,) = torch.autograd.grad(second.sum(), at)
        return log_p.detach(), first.detach()[:, 0], third[:, 0].abs()

    log_p, exact, third = derivatives(theta)
    sup_third = 2 * torch.stack([third, derivatives(theta - h)[2], derivatives(theta + h)[2]]).amax(dim=0)
    bound = h**2 / 6 * sup_third + 8 * torch.finfo(torch.float64).eps * log_p.abs() / h + 2.0**-24 * exact.abs()
    error = (score - exact).abs()
    assert torch.all(error <= bound), f"largest error / bound: {float((error / bound).max()):.3g}"


def test_check_simulator_passes_on_the_ppx_board(galton_two_processes):
    """sluice's own checks (reproducible sampling, re-scoring, E[t] = 0, E[r] = 1 within 5 standard errors) pass; the
    autograd comparison is a note: there is none through another process."""
    report = sluice.check_simulator(galton_two_processes, PRIOR, n=80, n_theta=2)
    assert report.ok, str(report)
    assert report["autograd score"].passed is None
    assert report["E[r] = 1"].passed and report["E[t] = 0"].passed


def test_observed_sites_make_x_and_their_densities_join_the_joint():
    """With observed=["reading", "nail"], x is the controller's draw at the Observe site (rounded to float32, as x is
    stored) and the Tag's value; log p(x, z|θ) is the board's plus log N(reading; nail, 1.5²), and z holds the
    decisions only, with where each observed site starts in x."""
    with from_ppx(COMMAND + ["--observe"], ["theta"], observed=["reading", "nail"], prior=PRIOR) as simulator:
        theta = sample_prior(PRIOR, 40, seed=8).to(torch.float64)
        x, z = simulator.sample(theta, generator=seeded(9))
        board_z, final_nail = builtin_latents(z)
        assert x.shape == (40, 2) and torch.equal(x[:, 1], final_nail)
        assert torch.equal(x[:, 0], x[:, 0].to(torch.float32).to(torch.float64))
        assert [key for key in z if not key.startswith("#")] == LEVEL_KEYS
        assert torch.equal(z[X_START], torch.tensor([[0, 1]]).expand(40, 2))
        reading = torch.distributions.Normal(final_nail, READING_WIDTH).log_prob(x[:, 0])
        expected = GaltonBoard().joint_log_prob(x, board_z, theta) + reading
        assert float((simulator.joint_log_prob(x, z, theta) - expected).abs().max()) < 1e-10


def test_runs_that_meet_different_sites_are_padded_and_replayed_each_as_it_ran():
    """The theta-branch board draws an extra "kick" ~ N(0, 1) when θ > −0.7: in one batch some runs meet 21 sites,
    others 20; z["kick"] is NaN where a run did not meet it, z["#sites"] counts them, and each run replays (at its own
    θ) to the board's log p plus its kick's log N(kick; 0, 1)."""
    theta = torch.tensor([[-0.9], [-0.5], [-0.95], [-0.6]], dtype=torch.float64)
    with from_ppx(COMMAND + ["--fault", "theta-branch"], ["theta"], prior=PRIOR) as simulator:
        x, z = simulator.sample(theta, generator=seeded(10))
        log_p = simulator.joint_log_prob(x, z, theta)
    kicked = theta[:, 0] > -0.7
    assert list(z)[0] == "level" and "kick" in z
    assert torch.equal(z[SITES], torch.where(kicked, 21, 20))
    assert torch.equal(torch.isnan(z["kick"]), ~kicked)
    board_z, _ = builtin_latents(z)
    kick = torch.distributions.Normal(0.0, 1.0).log_prob(z["kick"].nan_to_num())
    expected = GaltonBoard().joint_log_prob(x, board_z, theta) + torch.where(kicked, kick, 0.0)
    assert float((log_p - expected).abs().max()) < 1e-10


def test_control_flow_that_depends_on_theta_is_refused_naming_run_position_and_addresses():
    """A run recorded without the kick and replayed at a θ that takes it (and the other way round) is
    PPXReplayError naming the run, the position and both sites: never a log p that mixes two traces."""
    with from_ppx(COMMAND + ["--fault", "theta-branch"], ["theta"], prior=PRIOR) as simulator:
        theta = torch.tensor([[-0.5], [-0.9]], dtype=torch.float64)
        x, z = simulator.sample(theta, generator=seeded(11))
        with pytest.raises(PPXReplayError, match=r"run 0, .*position 0 the recorded run met 'kick', the replay "
                                                 r"'level'"):
            simulator.joint_log_prob(x, z, theta.flip(0))
        with pytest.raises(PPXReplayError, match=r"run 1, .*position 0 the recorded run met 'level', the replay "
                                                 r"'kick'"):
            simulator.joint_log_prob(x, z, torch.full_like(theta, -0.5))
        # the replay that failed ran to its end: the same process serves the next run
        assert torch.isfinite(simulator.joint_log_prob(x, z, theta)).all()


# --- simulators that misbehave ----------------------------------------------------------------------------------

# (fault, its error, what the error says, the timeout per reply: short where the fault is a hang, the default
# elsewhere, lest a loaded machine's slow reply pass for a hang)
FAULTS = [
    ("crash-below:-0.95", "PPXCrashError", "exited with code 1 .*deliberate crash", 10.0),
    ("hang-below:-0.95", "PPXTimeoutError", r"no reply within 1.5 s", 1.5),
    ("malformed-below:-0.95", "PPXProtocolError", "not a PPX FlatBuffer", 10.0),
]


@pytest.mark.parametrize("fault, error, detail, timeout", FAULTS, ids=[fault.split("-")[0] for fault, *_ in FAULTS])
def test_a_run_that_fails_twice_is_a_nan_row_named_by_run_and_address(galton, fault, error, detail, timeout):
    """The run at θ = −0.99 fails on its first process and again on a fresh one: its row is NaN and a
    PPXRunFailedWarning names the error, the run and the address where it happened; the other rows are those of a
    simulator without the fault (each row's draws come from its own seed)."""
    theta = torch.tensor([[-0.5], [-0.99], [-0.6]])
    with from_ppx(COMMAND + ["--fault", fault], ["theta"], prior=PRIOR, timeout=timeout) as faulty:
        with pytest.warns(PPXRunFailedWarning, match=rf"(?s)1 of 3 runs failed .*{error}: run 1, address 'theta'"
                                                     rf".*{detail}"):
            x, z = faulty.sample(theta, generator=seeded(12))
    clean_x, clean_z = galton.sample(theta, generator=seeded(12))
    assert torch.isnan(x[1]).all() and z[SITES][1] == -1
    assert torch.equal(x[[0, 2]], clean_x[[0, 2]])
    assert all(torch.equal(z[key][[0, 2]], clean_z[key][[0, 2]]) for key in LEVEL_KEYS)


def test_an_unknown_distribution_fails_every_run_and_is_raised_with_its_run_and_address():
    with from_ppx(COMMAND + ["--fault", "unknown-distribution"], ["theta"], prior=PRIOR) as faulty:
        with pytest.raises(PPXUnknownDistributionError, match="run 0, address 'level': distribution type 42"):
            faulty.sample(torch.tensor([[-0.5]]), generator=seeded(13))


def test_simulate_keeps_every_good_row_of_a_crashing_simulator(galton):
    """sluice.simulate on a simulator that crashes whenever θ < −0.9 (in sampling or in a replay) drops exactly the
    rows with θ0 < −0.9 (θ1 is the reference −0.5), counts them, and keeps the others as a simulator without the
    fault makes them, field by field."""
    settings = dict(n=16, reference=[-0.5], seed=0, batch_size=8)
    clean = sluice.simulate(galton, PRIOR, **settings)
    bad = clean.theta0[:, 0] < -0.9
    assert bad.any() and not bad.all()
    with from_ppx(COMMAND + ["--fault", "crash-below:-0.9"], ["theta"], prior=PRIOR) as faulty:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            kept = sluice.simulate(faulty, PRIOR, max_dropped_fraction=0.5, **settings)
    assert len(kept) == int((~bad).sum())
    for name, value in clean[~bad].fields().items():
        assert torch.equal(getattr(kept, name), value), name
    assert any(issubclass(w.category, sluice.data.simulation.DroppedRowsWarning) for w in caught)
    assert any(issubclass(w.category, PPXRunFailedWarning) and "PPXCrashError" in str(w.message) for w in caught)


def test_a_crash_that_does_not_recur_costs_nothing(galton, tmp_path):
    """A process that dies once (in its second run) is replaced and the run retried: the data are those of a
    simulator that never crashed."""
    settings = dict(n=6, seed=4)
    with from_ppx(COMMAND + ["--fault", f"crash-once:{tmp_path / 'crashed'}"], ["theta"], prior=PRIOR) as once:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PPXRunFailedWarning)
            data = sluice.simulate(once, PRIOR, **settings)
    assert (tmp_path / "crashed").exists()
    clean = sluice.simulate(galton, PRIOR, **settings)
    assert all(torch.equal(getattr(data, name), value) for name, value in clean.fields().items())


def test_a_simulator_that_cannot_start_is_a_start_error():
    with pytest.raises(PPXStartError, match="could not start"):
        from_ppx([str(pathlib.Path(__file__).with_name("no-such-simulator"))], ["theta"]).sample(torch.zeros(1, 1))
    with pytest.raises(PPXStartError, match="did not complete the PPX handshake.*exited with code 0"):
        from_ppx([sys.executable, "-c", "pass"], ["theta"]).sample(torch.zeros(1, 1))


# --- processes, pickling, closing -------------------------------------------------------------------------------

def test_two_processes_give_the_same_data_as_one(galton, galton_two_processes):
    settings = dict(n=12, seed=5, batch_size=6)
    one, two = sluice.simulate(galton, PRIOR, **settings), sluice.simulate(galton_two_processes, PRIOR, **settings)
    assert all(torch.equal(getattr(two, name), value) for name, value in one.fields().items())


def test_the_simulator_pickles_and_its_copies_start_their_own_processes(galton):
    """A pickled copy carries the command, not the processes: it starts its own on first use and draws the same runs
    from the same seed; sluice.simulate with workers (forked processes, each with its copy) gives the same data."""
    galton.sample(torch.tensor([[-0.7]]))  # the original has a process running
    copy = pickle.loads(pickle.dumps(galton))
    assert copy.command == galton.command and copy._connections == [None]
    theta = sample_prior(PRIOR, 5, seed=14)
    with copy:
        assert torch.equal(copy.sample(theta, seeded(15))[0], galton.sample(theta, seeded(15))[0])
    settings = dict(n=8, seed=6, batch_size=4)
    here, in_workers = sluice.simulate(galton, PRIOR, **settings), sluice.simulate(galton, PRIOR, workers=2, **settings)
    assert all(torch.equal(getattr(in_workers, name), value) for name, value in here.fields().items())


def test_close_and_garbage_collection_stop_the_processes():
    simulator = from_ppx(COMMAND, ["theta"])
    simulator.sample(torch.tensor([[-0.7]]))
    process, folder = simulator._connections[0].process, simulator._directory
    simulator.close()
    assert process.poll() is not None and not os.path.exists(folder)
    simulator.sample(torch.tensor([[-0.7]]))  # a closed simulator starts afresh when used again
    process = simulator._connections[0].process
    del simulator
    gc.collect()
    assert process.wait(timeout=5) is not None


def test_a_simulator_already_running_at_an_address(galton, tmp_path):
    """from_ppx("ipc://…") connects to a simulator started elsewhere, runs it like one it started, and leaves it
    running when closed; more than one process is refused (it is one simulator)."""
    address = f"ipc://{tmp_path}/galton"
    server = subprocess.Popen(COMMAND + [address])
    try:
        theta = sample_prior(PRIOR, 5, seed=16)
        with from_ppx(address, ["theta"]) as connected:
            assert torch.equal(connected.sample(theta, seeded(17))[0], galton.sample(theta, seeded(17))[0])
        assert server.poll() is None
        with pytest.raises(ValueError, match="processes must be 1 for a simulator at an address"):
            from_ppx(address, ["theta"], processes=2)
    finally:
        server.terminate()
        server.wait(timeout=5)


# --- replays that must be refused, and the runs they leave behind -----------------------------------------------

def test_a_replay_that_fails_inside_a_rejection_loop_finishes_the_run_on_the_same_process():
    """The rejection variant draws u ~ U(0, 1) until u ≤ θ + 1.3. A run recorded at θ = −0.35 (one u, in (0.3, 0.95])
    and replayed at θ = −1 meets a second u the record lacks: PPXReplayError. The controller then answers the rest
    of the run with draws that move on (a fixed draw above 0.3 would loop forever), the run reaches its end, and the
    same process serves the next replay."""
    with from_ppx(COMMAND + ["--fault", "rejection"], ["theta"], prior=PRIOR) as simulator:
        theta = torch.tensor([[-0.35]], dtype=torch.float64)
        x, z = simulator.sample(theta, generator=seeded(23))
        assert z[SITES][0] == 21 and 0.3 < float(z["u"][0]) <= 0.95  # the case described above
        process = simulator._connections[0].process
        with pytest.raises(PPXReplayError, match=r"run 0, .*the recorded run met 'level', the replay 'u#1'"):
            simulator.joint_log_prob(x, z, torch.full_like(theta, -1.0))
        assert torch.isfinite(simulator.joint_log_prob(x, z, theta)).all()
        assert simulator._connections[0].process is process and process.poll() is None


def test_a_run_that_does_not_end_after_a_replay_failure_is_stopped_and_its_process_replaced(monkeypatch):
    """Replayed at θ = −2 the rejection loop can never end (u ≤ −0.7): after FINISH_MESSAGES answers the controller
    gives up on the run, raises the PPXReplayError, and stops the process; the next replay starts a fresh one."""
    monkeypatch.setattr(sluice.simulators.ppx.controller, "FINISH_MESSAGES", 50)
    with from_ppx(COMMAND + ["--fault", "rejection"], ["theta"], prior=PRIOR) as simulator:
        theta = torch.tensor([[-0.35]], dtype=torch.float64)
        x, z = simulator.sample(theta, generator=seeded(23))
        process = simulator._connections[0].process
        with pytest.raises(PPXReplayError, match=r"run 0, .*the recorded run met 'level', the replay 'u#1'"):
            simulator.joint_log_prob(x, z, torch.full_like(theta, -2.0))
        assert process.poll() is not None
        assert torch.isfinite(simulator.joint_log_prob(x, z, theta)).all()


@pytest.mark.parametrize("observed", [None, ["o", "nail"]], ids=["in-z", "in-x"])
def test_an_observe_whose_own_value_changes_with_theta_is_refused_on_replay(observed):
    """An Observe that reports its own value 3(θ + 1): recorded at θ = −0.7 (0.9) and replayed at θ = −0.4 (the
    simulator reports 1.8) it is a PPXReplayError naming the run and the site, never a log p of the recorded 0.9;
    replayed at the θ that made it, it scores (as an observed site, its float32 x equals its float32 value)."""
    command = COMMAND + ["--fault", "observe-theta"] + ([] if observed is None else ["--observe"])
    with from_ppx(command, ["theta"], observed=observed, prior=PRIOR) as simulator:
        theta = torch.tensor([[-0.7]], dtype=torch.float64)
        x, z = simulator.sample(theta, generator=seeded(21))
        if observed is None:
            assert float(z["o"][0]) == 3.0 * (-0.7 + 1.0)
        assert torch.isfinite(simulator.joint_log_prob(x, z, theta)).all()
        with pytest.raises(PPXReplayError, match=r"run 0, address 'o': .*another value on replay"):
            simulator.joint_log_prob(x, z, torch.full_like(theta, -0.4))


def test_a_site_whose_shape_changes_with_theta_is_refused_on_replay():
    """"vector" holds 1 value when θ < −0.7 and 2 otherwise: a run recorded at θ = −0.9 and replayed at −0.5 is a
    PPXReplayError naming the run, the site and both shapes (not a broadcast of the recorded value)."""
    with from_ppx(COMMAND + ["--fault", "shape-theta"], ["theta"], prior=PRIOR) as simulator:
        theta = torch.tensor([[-0.9]], dtype=torch.float64)
        x, z = simulator.sample(theta, generator=seeded(22))
        assert z["vector"].shape == (1, 1)
        with pytest.raises(PPXReplayError, match=r"run 0, address 'vector': .*shape \[2\] on replay.*\[1\]"):
            simulator.joint_log_prob(x, z, torch.full_like(theta, -0.5))


@pytest.mark.parametrize("observe", [True, False], ids=["tag", "run-result"])
def test_x_that_depends_on_theta_beyond_the_draws_is_refused_and_the_process_serves_on(observe):
    """The nail reported as nail + θ (the Tag "nail", or the RunResult): a replay at another θ is PPXReplayError;
    the run that failed was finished, so the same process then replays at the recorded θ."""
    command = COMMAND + ["--fault", "theta-in-x"] + (["--observe"] if observe else [])
    observed = ["reading", "nail"] if observe else None
    message = "observed Tag 'nail' has another value on replay" if observe else "the RunResult differs on replay"
    with from_ppx(command, ["theta"], observed=observed, prior=PRIOR) as simulator:
        theta = torch.tensor([[-0.6], [-0.8]], dtype=torch.float64)
        x, z = simulator.sample(theta, generator=seeded(23))
        process = simulator._connections[0].process
        with pytest.raises(PPXReplayError, match=rf"run 0\b.*{message}"):
            simulator.joint_log_prob(x, z, theta + 0.1)
        assert torch.isfinite(simulator.joint_log_prob(x, z, theta)).all()
        assert simulator._connections[0].process is process


@pytest.mark.parametrize("address", ["level#1", "#sites"])
def test_an_address_with_the_reserved_hash_is_refused(address):
    """z keys a site met again as "level#1" and keeps its bookkeeping under "#sites": a site whose own address
    contains "#" would collide with them, so it is a PPXTraceError naming it."""
    with from_ppx(COMMAND + ["--fault", f"address:{address}"], ["theta"], prior=PRIOR) as simulator:
        with pytest.raises(PPXTraceError, match=rf"run 0, address '{address}': .*'#'"):
            simulator.sample(torch.tensor([[-0.5]]), generator=seeded(24))


# --- errors of the distributions a simulator reports -------------------------------------------------------------

def test_a_distribution_that_torch_refuses_is_a_nan_row_named_by_run_and_address(galton):
    """Categorical probs (0.5, −0.05) at θ < −0.95: torch cannot draw from it. That run's row is NaN with a warning
    naming PPXDistributionError, the run and the site; the other rows are a clean simulator's."""
    theta = torch.tensor([[-0.5], [-0.99], [-0.6]])
    with from_ppx(COMMAND + ["--fault", "negative-probs-below:-0.95"], ["theta"], prior=PRIOR) as faulty:
        with pytest.warns(PPXRunFailedWarning, match=r"(?s)1 of 3 runs failed .*PPXDistributionError: run 1, "
                                                     r"address 'bad': .*Categorical"):
            x, z = faulty.sample(theta, generator=seeded(12))
    clean_x, _ = galton.sample(theta, generator=seeded(12))
    assert torch.isnan(x[1]).all() and z[SITES][1] == -1
    assert torch.equal(x[[0, 2]], clean_x[[0, 2]])


def test_a_recorded_category_that_does_not_exist_at_theta_is_a_nan_row_named_by_run_and_address():
    """"category" has two categories at θ > −0.7 and one below: a run that chose category 1 at θ = −0.5, replayed
    at −0.9, cannot be scored by torch. Its row is NaN with a warning naming the run and the site; the other row of
    the batch is scored."""
    with from_ppx(COMMAND + ["--fault", "categories"], ["theta"], prior=PRIOR) as simulator:
        theta = torch.tensor([[-0.5], [-0.9]], dtype=torch.float64)
        x, z = simulator.sample(theta, generator=seeded(25))
        assert float(z["category"][0]) == 1.0 and float(z["category"][1]) == 0.0
        with pytest.warns(PPXRunFailedWarning, match=r"(?s)1 of 2 runs failed .*PPXDistributionError: run 0, "
                                                     r"address 'category'"):
            log_p = simulator.joint_log_prob(x, z, torch.tensor([[-0.9], [-0.9]], dtype=torch.float64))
        assert torch.isnan(log_p[0]) and torch.isfinite(log_p[1])


def test_one_failed_run_alone_in_its_batch_is_a_nan_row_not_an_error(galton):
    """simulate's last batch may hold a single row: a run that crashes twice gives a NaN row there too (simulate then
    drops it within max_dropped_fraction), once the simulator knows x's width from a run that worked."""
    with from_ppx(COMMAND + ["--fault", "crash-below:-0.95"], ["theta"], prior=PRIOR) as faulty:
        faulty.sample(torch.tensor([[-0.5]]), generator=seeded(26))
        with pytest.warns(PPXRunFailedWarning, match="1 of 1 runs failed .*PPXCrashError"):
            x, z = faulty.sample(torch.tensor([[-0.99]]), generator=seeded(27))
    assert x.shape == (1, 1) and torch.isnan(x).all() and z[SITES][0] == -1


def test_an_unknown_distribution_is_not_retried_on_a_fresh_process():
    """Every run would meet the unknown distribution again: one process is started, none for a retry."""
    with from_ppx(COMMAND + ["--fault", "unknown-distribution"], ["theta"], prior=PRIOR) as faulty:
        with pytest.raises(PPXUnknownDistributionError):
            faulty.sample(torch.tensor([[-0.5], [-0.6]]), generator=seeded(13))
        assert faulty._generation == 1


def test_the_simulators_output_file_keeps_a_bounded_tail(monkeypatch):
    """A simulator that writes 4 kB a run: with LOG_LIMIT = 10 kB its output file never holds much more than that
    (the tail is kept), and what it wrote last is still there to quote."""
    monkeypatch.setattr(sluice.simulators.ppx.controller, "LOG_LIMIT", 10_000)
    with from_ppx(COMMAND + ["--fault", "chatty"], ["theta"], prior=PRIOR) as chatty:
        chatty.sample(torch.full((12, 1), -0.5), generator=seeded(28))
        connection = chatty._connections[0]
        assert os.fstat(connection._log.fileno()).st_size <= 10_000 + 4096
        assert connection.output().endswith("chatter ")


def test_the_joint_log_ratio_is_the_float64_difference_of_large_log_probs():
    """With a θ-free Observe of log N(141; 0, 1) ≈ −9942 in every run, log r(x,z|θ0,θ1) is the board's O(1) ratio:
    mining subtracts the float64 log-probabilities before rounding to float32, so log r is within half a float32
    ulp of its own size (rounding each log p first would cost ulp(1e4) ≈ 1e-3)."""
    from sluice.mining.joint import mine
    with from_ppx(COMMAND + ["--fault", "heavy"], ["theta"], prior=PRIOR) as heavy:
        theta1 = sample_prior(PRIOR, 20, seed=29).to(torch.float64)
        theta0 = sample_prior(PRIOR, 20, seed=30).to(torch.float64)
        x, z = heavy.sample(theta1, generator=seeded(31))
        exact = heavy.joint_log_prob(x, z, theta0) - heavy.joint_log_prob(x, z, theta1)
        assert float(heavy.joint_log_prob(x, z, theta1).abs().min()) > 9e3
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FiniteDifferenceWarning)
            log_r = mine(heavy, x, z, theta0, theta1, heavy.fd_step * parameter_scale(PRIOR)).log_r_xz
    half_ulp = exact.abs() * 2.0**-24 + 1e-12
    assert torch.all((log_r.to(torch.float64) - exact).abs() <= half_ulp)
