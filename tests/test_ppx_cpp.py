"""The C++ PPX simulators of examples/ppx/ against their built-in twins, through sluice's from_ppx.

examples/ppx/galton.cpp is GaltonBoard and examples/ppx/hierarchical.cpp is HierarchicalGaussian, written in C++
on the header-only client examples/ppx/ppx_client.hpp. They are built once per session with examples/ppx/Makefile
(flatc on sluice's ppx.fbs, then g++ with libzmq); without that toolchain every test here skips, saying what is
missing. Each test replays a few hundred runs (a run is some twenty ZeroMQ round trips), so that the file runs in
seconds.
"""

from __future__ import annotations

import math
import pathlib
import shutil
import subprocess

import pytest
import torch

import sluice
from sluice.mining.joint import finite_difference_score
from sluice.simulators import GaltonBoard, HierarchicalGaussian
from sluice.simulators.priors import parameter_scale, sample_prior

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "ppx"
DEBIAN_PACKAGES = "g++ libzmq3-dev cppzmq-dev libflatbuffers-dev flatbuffers-compiler"

# what each probe needs, and the Debian package that provides it
PROBES = (
    ("libzmq (zmq.h and -lzmq; Debian: libzmq3-dev)",
     '#include <zmq.h>\nint main() { void* context = zmq_ctx_new(); return zmq_ctx_term(context); }\n', True),
    ("cppzmq's zmq.hpp (Debian: cppzmq-dev)", "#include <zmq.hpp>\nint main() { zmq::context_t context; }\n", True),
    ("the FlatBuffers headers (Debian: libflatbuffers-dev)",
     "#include <flatbuffers/flatbuffers.h>\nint main() { flatbuffers::FlatBufferBuilder builder; }\n", False),
)


def missing_toolchain(folder: pathlib.Path) -> str | None:
    """Why the examples cannot be built here (the first thing missing), or None."""
    for program, package in (("make", "make"), ("g++", "g++"), ("flatc", "flatbuffers-compiler")):
        if shutil.which(program) is None:
            return f"{program} is not installed (Debian: {package}); the C++ PPX examples need {DEBIAN_PACKAGES}"
    for what, source, link in PROBES:
        probe = folder / "probe.cpp"
        probe.write_text(source)
        command = ["g++", "-std=c++17", str(probe), "-o", str(folder / "probe")] + (["-lzmq"] if link else [])
        completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if completed.returncode != 0:
            errors = [line for line in completed.stderr.splitlines() if "error" in line] or [completed.stderr.strip()]
            return f"{what} is missing: g++ could not build a probe ({errors[0].strip()})"
    return None


@pytest.fixture(scope="session")
def binaries(tmp_path_factory) -> dict[str, str]:
    """The built examples: {"galton": path, "hierarchical": path}, in a temporary build folder."""
    pytest.importorskip("zmq", reason='from_ppx needs pyzmq: pip install "sluice-sbi[ppx]"')
    pytest.importorskip("flatbuffers", reason='from_ppx needs flatbuffers: pip install "sluice-sbi[ppx]"')
    from sluice.simulators.ppx import SCHEMA

    build = tmp_path_factory.mktemp("ppx-build")
    reason = missing_toolchain(build)
    if reason is not None:
        pytest.skip(reason)
    completed = subprocess.run(["make", "-C", str(EXAMPLES), "-j2", f"BUILD={build}", f"SCHEMA={SCHEMA}"],
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, f"examples/ppx/Makefile failed:\n{completed.stdout}\n{completed.stderr}"
    return {name: str(build / name) for name in ("galton", "hierarchical")}


def cpp_galton(binaries, processes: int = 2):
    from sluice.simulators.ppx import from_ppx

    return from_ppx([binaries["galton"]], ["theta"], prior=GaltonBoard().default_prior(), processes=processes)


def cpp_hierarchical(binaries, processes: int = 2):
    from sluice.simulators.ppx import from_ppx

    return from_ppx([binaries["hierarchical"]], ["mu", "log_tau"], observed=["x"],
                    prior=HierarchicalGaussian().default_prior(), processes=processes)


@pytest.fixture(scope="session")
def galton(binaries):
    with cpp_galton(binaries) as simulator:
        yield simulator


@pytest.fixture(scope="session")
def hierarchical(binaries):
    with cpp_hierarchical(binaries) as simulator:
        yield simulator


def site_keys(address: str, count: int) -> list[str]:
    """The z keys from_ppx gives a site met ``count`` times: the address, then address#1, address#2, …"""
    return [address] + [f"{address}#{k}" for k in range(1, count)]


def galton_runs(n: int, seed: int):
    """n runs of the built-in board at θ from its prior, their z as from_ppx keys it, and a second θ per run."""
    board = GaltonBoard()
    prior = board.default_prior()
    theta = sample_prior(prior, n, seed=seed)
    x, z = board.sample(theta, generator=torch.Generator().manual_seed(seed + 1))
    ppx_z = {key: z["right"][:, level].to(torch.float64)
             for level, key in enumerate(site_keys("right", board.n_levels))}
    other = sample_prior(prior, n, seed=seed + 2)
    return board, x, z, ppx_z, theta.to(torch.float64), other.to(torch.float64)


def test_cpp_galton_log_ratio_is_the_builtin_one_on_its_runs(galton):
    """Replayed on the built-in board's own runs (x, z), the C++ board gives the built-in's log p(x, z|θ) and log r
    to 1e-10: the same probabilities at every nail, and (the replay checks its RunResult against x) the same moves."""
    board, x, z, ppx_z, theta1, theta0 = galton_runs(200, seed=0)
    log_p1 = galton.joint_log_prob(x, ppx_z, theta1)
    log_r = galton.joint_log_prob(x, ppx_z, theta0) - log_p1
    expected_log_p1 = board.joint_log_prob(x, z, theta1)
    expected_log_r = board.joint_log_prob(x, z, theta0) - expected_log_p1
    assert float((log_p1 - expected_log_p1).abs().max()) < 1e-10
    assert float((log_r - expected_log_r).abs().max()) < 1e-10


def test_cpp_galton_score_is_the_builtin_one_within_the_finite_difference_error(galton):
    """from_ppx's joint score is a central difference (f(θ+h) − f(θ−h))/2h of the replayed log p; it must equal the
    built-in's autograd score t within that difference's error: the truncation h²/6 max|f'''| on [θ−h, θ+h]
    (f''' by autograd at θ−h, θ, θ+h; it changes by a fraction ~h of itself across the step), the float64 rounding
    of log p (a sum of 20 non-positive logarithms, each within a few ulps: 8 ε |log p|) divided by h, and the
    float32 rounding of the score that sluice stores (2⁻²⁴ |t|)."""
    board, x, z, ppx_z, theta, _ = galton_runs(200, seed=3)
    step = galton.fd_step * parameter_scale(galton.default_prior())
    h = float(step[0])
    score = finite_difference_score(galton, x, ppx_z, theta, step).to(torch.float64)[:, 0]

    def derivatives(at: torch.Tensor):
        at = at.clone().requires_grad_(True)
        log_p = board.joint_log_prob(x, z, at)
        (first,) = torch.autograd.grad(log_p.sum(), at, create_graph=True)
        (second,) = torch.autograd.grad(first.sum(), at, create_graph=True)
        (third,) = torch.autograd.grad(second.sum(), at)
        return log_p.detach(), first.detach()[:, 0], third[:, 0]

    log_p, exact, third = derivatives(theta)
    largest_third = torch.stack([third.abs(), derivatives(theta - h)[2].abs(), derivatives(theta + h)[2].abs()]).amax(0)
    bound = h**2 / 6 * largest_third + 8 * torch.finfo(torch.float64).eps * log_p.abs() / h + 2.0**-24 * exact.abs()
    error = (score - exact).abs()
    assert torch.all(error <= bound), f"worst error / bound: {float((error / bound).max()):.3g}"
    assert error.max() > 0  # a score taken by finite differences, not the built-in's own


@pytest.mark.parametrize("name", ["galton", "hierarchical"])
def test_check_simulator_passes_on_the_cpp_simulators(name, request):
    """sluice.check_simulator on each C++ simulator: reproducible sampling, a finite re-score, a θ-dependent log p,
    E[t] = 0 and E[r] = 1 (each within its 5 standard errors) all pass."""
    simulator = request.getfixturevalue(name)
    report = sluice.check_simulator(simulator, simulator.default_prior(), n=100, n_theta=1, seed=0)
    assert report.ok, str(report)
    for check in ("sampling", "re-scoring", "depends on θ", "E[t] = 0", "E[r] = 1"):
        assert report[check].passed is True, str(report)


def test_cpp_hierarchical_log_ratio_is_its_builtin_twins(hierarchical):
    """Replayed on HierarchicalGaussian's own runs, the C++ simulator gives its log r to float64 rounding, and a
    log p(x, z|θ) that differs from the built-in's only by the constant the built-in leaves out, −Σ_k log s_k − K log 2π
    (one normaliser for each z_k and each x_k): the C++ noise scales are the built-in's."""
    twin = HierarchicalGaussian()
    prior = twin.default_prior()
    theta1 = sample_prior(prior, 200, seed=0)
    x, z = twin.sample(theta1, generator=torch.Generator().manual_seed(1))
    ppx_z = {key: z["group_means"][:, k].to(torch.float64)
             for k, key in enumerate(site_keys("group_mean", twin.n_groups))}
    theta1, theta0 = theta1.to(torch.float64), sample_prior(prior, 200, seed=2).to(torch.float64)
    log_p1 = hierarchical.joint_log_prob(x, ppx_z, theta1)
    log_r = hierarchical.joint_log_prob(x, ppx_z, theta0) - log_p1
    expected_log_p1 = twin.joint_log_prob(x, z, theta1)
    expected_log_r = twin.joint_log_prob(x, z, theta0) - expected_log_p1
    # sums of 16 float64 terms, each at most |log p| in size: rounding within 1e-12 of it
    rounding = 1e-10 + 1e-12 * float(expected_log_p1.abs().max() + expected_log_r.abs().max())
    assert float((log_r - expected_log_r).abs().max()) < rounding
    constant = -twin.noise_scales.to(torch.float64).log().sum() - twin.n_groups * math.log(2 * math.pi)
    assert float((log_p1 - expected_log_p1 - constant).abs().max()) < rounding


def test_cpp_hierarchical_draws_x_from_the_builtins_marginal(hierarchical):
    """x of the C++ simulator, drawn by sluice at its Observe sites, has the built-in's marginal: x_k ~ N(μ, τ² + s_k²)
    independently, so the standardised u = (x_k − μ)/√(τ² + s_k²) of m = 100 runs × 8 groups have mean 0 (standard
    error 1/√m) and Σu² ~ χ²_m (standard deviation √(2m)): both within 5 standard errors."""
    twin = HierarchicalGaussian()
    theta = sample_prior(twin.default_prior(), 100, seed=4)
    x, z = hierarchical.sample(theta, generator=torch.Generator().manual_seed(5))
    assert x.shape == (100, twin.n_groups)
    assert [key for key in z if not key.startswith("#")] == site_keys("group_mean", twin.n_groups)
    variance = (2 * theta[:, 1:]).exp().to(torch.float64) + twin.noise_scales.to(torch.float64) ** 2
    u = (x.to(torch.float64) - theta[:, :1].to(torch.float64)) / variance.sqrt()
    m = u.numel()
    assert abs(float(u.mean())) < 5 / math.sqrt(m)
    assert abs(float((u**2).sum()) - m) < 5 * math.sqrt(2 * m)


def test_simulate_with_two_processes_is_the_one_process_run(binaries, galton):
    """sluice.simulate through two C++ processes gives the data of one process, row for row: every run draws from its
    own seeded generator, wherever it runs; the joint fields are finite."""
    prior = galton.default_prior()
    data = sluice.simulate(galton, prior, 32, seed=7, progress=False)
    with cpp_galton(binaries, processes=1) as single:
        again = sluice.simulate(single, prior, 32, seed=7, progress=False)
    assert len(data) == 32
    for field in ("theta0", "theta1", "y", "x", "log_r_xz", "t_xz0", "t_xz1"):
        assert torch.equal(getattr(data, field), getattr(again, field)), field
    assert torch.isfinite(data.log_r_xz).all() and torch.isfinite(data.t_xz0).all()


def test_cpp_client_answers_the_handshake_and_exits_cleanly_on_reset(binaries, tmp_path):
    """ppx_client.hpp reports the model's name in its HandshakeResult, and on Reset acknowledges and returns from
    serve(): the process exits by itself with status 0 (not stopped by the controller's terminate or kill)."""
    from sluice.simulators.ppx.controller import SimulatorConnection

    connection = SimulatorConnection(f"ipc://{tmp_path}/galton", [binaries["galton"]]).open()
    process = connection.process
    assert connection.model_name == "Galton board"
    connection.close()
    assert process.returncode == 0
