"""check_simulator: the checks to run on a simulator of one's own before spending compute on it."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch

from ..seeding import spawn_seeds
from ..simulators.base import Simulator, sample_seeded
from ..simulators.priors import check_prior, parameter_scale, sample_prior
from .joint import (
    DEFAULT_FD_STEP,
    FiniteDifferenceWarning,
    autograd_score,
    finite_difference_score,
    joint_log_prob_and_score,
)

__all__ = ["check_simulator", "SimulatorReport", "CheckResult"]

Z_LIMIT = 5.0  # a Monte-Carlo mean further than 5 standard errors from its target fails
# E[r] = 1 is tested at θ0 = θ + f (θ' − θ), θ' a prior draw: f starts at NEARBY_FRACTION and shrinks until the
# runs' log r has a standard deviation of at most RATIO_LOG_SD. Far from θ, r is heavy-tailed (its mean carried by
# rare huge values that a sample of thousands misses, so its sample mean and standard error both come out too
# small) and a correct simulator fails; at sd(log r) ≤ 0.5, r is nearly log-normal with a coefficient of variation
# near 0.5, and the standard error of its mean is trustworthy. A wrong density still shows: to first order in the
# step, mean(r − 1) / standard error is that of the mean score along θ0 − θ, whatever the step's size.
NEARBY_FRACTION = 0.1
RATIO_LOG_SD = 0.5
SMALLEST_FRACTION = 1e-4  # below this, θ0 − θ is lost in float32 rounding of θ
# autograd and central finite differences of the joint score must agree to 5% of the score's scale, except on at
# most 5% of the runs: where log p jumps with θ (a support edge that moves with θ, as in sbibm's two moons) the
# finite differences of a few runs straddle the jump; a graph break drops a term from (nearly) every run
AUTOGRAD_TOLERANCE = 0.05
JUMP_SHARE = 0.05


@dataclass
class CheckResult:
    """One line of the report: ``passed`` is True, False, or None (not applicable, for information)."""

    name: str
    passed: bool | None
    detail: str
    meaning: str = ""  # what a failure usually means


@dataclass
class SimulatorReport:
    simulator: str
    results: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return all(result.passed is not False for result in self.results)

    @property
    def failures(self) -> list:
        return [result for result in self.results if result.passed is False]

    def __getitem__(self, name: str) -> CheckResult:
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(f"no check named {name!r}; checks: {[result.name for result in self.results]}")

    def __str__(self) -> str:
        width = max(len(result.name) for result in self.results)
        lines = [f"check_simulator: {self.simulator}", f"  {'check':<{width}}  result  detail"]
        for result in self.results:
            mark = {True: "ok", False: "FAIL", None: "note"}[result.passed]
            lines.append(f"  {result.name:<{width}}  {mark:<6}  {result.detail}")
            if result.passed is False and result.meaning:
                lines.append(f"  {'':<{width}}          usually means: {result.meaning}")
        lines.append("  all checks passed" if self.ok else f"  {len(self.failures)} check(s) failed")
        return "\n".join(lines)

    __repr__ = __str__


def _sample(simulator: Simulator, theta: torch.Tensor, seed: int):
    _, simulator_seed, global_seed = spawn_seeds(seed, 0, count=3)
    return sample_seeded(simulator, theta, simulator_seed, global_seed)


def _rows(z, rows):
    return {key: value[rows] for key, value in z.items()} if isinstance(z, dict) else z[rows]


def _z_score(values: torch.Tensor, target: float) -> float:
    """Largest |mean − target| / standard error over the columns of ``values`` [n, k]."""
    values = values.to(torch.float64)
    error = values.std(dim=0) / math.sqrt(values.shape[0])
    distance = (values.mean(dim=0) - target).abs()
    scores = torch.where(error > 0, distance / error.clamp_min(1e-300),
                         torch.where(distance > 1e-6, torch.inf, 0.0))
    return float(scores.max())


def _nearby_log_ratio(simulator: Simulator, x, z, theta1: torch.Tensor, towards: torch.Tensor):
    """log r(x,z|θ0,θ1) ``[n]`` (float64) of the runs (x, z) drawn at θ1 ``[n, p]``, at θ0 = θ1 + f · ``towards``
    ``[p]``, and f: the largest of NEARBY_FRACTION, shrunk step by step, at which the finite log r have a
    standard deviation of at most RATIO_LOG_SD (or SMALLEST_FRACTION, where none is).

    Near θ1, sd(log r) grows in proportion to f, so each step aims at the target directly (× 0.9 for a margin),
    shrinking by at least 2 and at most 10 times."""
    fraction = NEARBY_FRACTION
    while True:
        theta0 = theta1 + fraction * towards
        with torch.no_grad():
            log_r = (simulator.joint_log_prob(x, z, theta0) - simulator.joint_log_prob(x, z, theta1)).to(torch.float64)
        finite = log_r[torch.isfinite(log_r)]
        spread = float(finite.std()) if finite.numel() > 1 else 0.0
        if spread <= RATIO_LOG_SD or fraction <= SMALLEST_FRACTION:
            return log_r, fraction
        fraction = max(SMALLEST_FRACTION, fraction * min(0.5, max(0.1, 0.9 * RATIO_LOG_SD / spread)))


def check_simulator(simulator: Simulator, prior, n: int = 2000, n_theta: int = 3, seed: int = 0,
                    fd_step: float | None = None) -> SimulatorReport:
    """Check that ``simulator`` can be mined, at ``n_theta`` parameter points drawn from ``prior``:

    - sampling is reproducible from the generator (and torch's seeded global generator);
    - ``joint_log_prob`` re-scores a run to the same finite value twice at the θ that produced it;
    - the autograd score equals central finite differences (a graph break drops score terms);
    - log p(x,z|θ) depends on θ at all;
    - E[t(x,z|θ)] = 0, the information identity E[t_j²] = −E[∂t_j/∂θ_j], and E[r(x,z|θ0,θ1)] = 1 for
      x,z ~ θ (resp. θ1), each within Z_LIMIT standard errors: randomness left out of z or a density that
      does not match the sampler breaks them. θ0 lies a step towards another prior draw, short enough that r
      is not too heavy-tailed for a Monte-Carlo mean (``_nearby_log_ratio``).

    ``fd_step``: the finite-difference step as a fraction of each parameter's prior scale (default: the
    simulator's own ``fd_step``, else DEFAULT_FD_STEP). Returns a ``SimulatorReport``; ``print`` it for the
    table, ``report.ok`` to act on it.
    """
    check_prior(prior, simulator.n_parameters)
    report = SimulatorReport(simulator.name)
    scale = parameter_scale(prior)
    step = (fd_step if fd_step is not None else float(getattr(simulator, "fd_step", DEFAULT_FD_STEP))) * scale
    thetas = sample_prior(prior, n_theta, seed)
    towards = sample_prior(prior, n_theta, seed + 1) - thetas  # θ + f (θ' − θ), f ≤ 1, stays in a convex support

    def run(name: str, meaning: str, check) -> bool:
        try:
            with warnings.catch_warnings():  # the table says it already
                warnings.simplefilter("ignore", FiniteDifferenceWarning)
                passed, detail = check()
        except Exception as error:  # a check that crashes is a failed check, reported with its error
            passed, detail = False, f"raised {type(error).__name__}: {error}"
        report.results.append(CheckResult(name, passed, detail, meaning))
        return passed is not False

    runs = []

    def sampling():
        for j in range(n_theta):
            theta = thetas[j].expand(n, -1).clone()
            x, z = _sample(simulator, theta, seed + 10 + j)
            runs.append((theta, x, z))
        again, _ = _sample(simulator, runs[0][0], seed + 10)
        same = torch.equal(torch.nan_to_num(again), torch.nan_to_num(runs[0][1]))
        return same, f"{n} runs at each of {n_theta} θ; the same seed gives {'the same' if same else 'different'} x"

    if not run("sampling", "sample() draws randomness that the generator does not control (numpy's or Python's "
               "global random state, time, ...): runs cannot be reproduced from a seed", sampling) and not runs:
        return report
    if not simulator.has_joint_log_prob:
        report.results.append(CheckResult("joint_log_prob", None, "not implemented: black-box methods only"))
        return report

    def rescoring():
        theta, x, z = runs[0]
        first = simulator.joint_log_prob(x, z, theta).detach()
        second = simulator.joint_log_prob(x, z, theta).detach()
        if first.shape != (n,):
            return False, f"returned shape {list(first.shape)}, expected [{n}]"
        finite = torch.isfinite(first)
        if not finite.all():
            return False, f"{int((~finite).sum())} of {n} runs get a non-finite log p at the θ that produced them"
        same = torch.allclose(first, second, rtol=1e-5, atol=1e-6)
        return same, "the same finite value twice" if same else "a different value on the second call"

    run("re-scoring", "joint_log_prob draws new random numbers or keeps state instead of reading every random "
        "choice from z; or it gives zero probability to a choice that the run made", rescoring)

    scores = []

    def autograd_agreement():
        theta, x, z = runs[0]
        rows = slice(0, min(n, 200))
        sub_z = _rows(z, rows)
        automatic = autograd_score(simulator, x[rows], sub_z, theta[rows])
        if automatic.score is None:
            return None, f"no autograd ({automatic.reason}): finite differences will be used (2p extra calls per θ)"
        score = automatic.score
        reference = finite_difference_score(simulator, x[rows], sub_z, theta[rows], step)
        # the scale of the score from the autograd values and the median of the differences: a few runs whose
        # finite differences straddle a jump of log p must not inflate it
        typical = torch.maximum(score.pow(2).mean().sqrt(), reference.pow(2).median().sqrt()).clamp_min(1e-12)
        per_run = ((score - reference).abs().amax(dim=1) / typical).nan_to_num(nan=torch.inf)
        differing = per_run >= AUTOGRAD_TOLERANCE
        if not differing.any():
            return True, f"largest |autograd − finite difference| = {float(per_run.max()):.2g} of the score's rms"
        count, total = int(differing.sum()), len(per_run)
        detail = f"{count} of {total} runs differ by up to {float(per_run.max()):.2g} of the score's rms"
        if count <= JUMP_SHARE * total:
            return True, (f"{detail}: log p jumps within the finite-difference step there (a support edge that "
                          f"moves with θ?); the other runs agree to {float(per_run[~differing].max()):.2g}")
        return False, detail

    run("autograd score", "a graph break in joint_log_prob (.item(), float(), a numpy detour, .detach(), an "
        "integer cast of a θ-dependent value) silently drops terms from the score", autograd_agreement)

    def theta_dependence():
        for theta, x, z in runs:
            log_prob, score = joint_log_prob_and_score(simulator, x, z, theta, step)
            scores.append(score)
        moving = any(bool((score != 0).any()) for score in scores)
        return moving, "the score is non-zero" if moving else "the score is zero for every run"

    run("depends on θ", "joint_log_prob leaves out every θ-dependent factor (or θ is cut from the graph): "
        "there is no joint information to mine", theta_dependence)

    def mean_score():
        worst = max(_z_score(score[torch.isfinite(score).all(dim=1)], 0.0) for score in scores)
        return worst < Z_LIMIT, f"largest |mean t| = {worst:.2f} standard errors (limit {Z_LIMIT:g})"

    meaning = ("randomness that is not recorded in z, a θ-dependent factor missing from joint_log_prob, or a "
               "density that does not match what sample() draws")
    if scores:
        run("E[t] = 0", meaning, mean_score)

    def information_identity():
        if autograd_score(simulator, runs[0][1][:2], _rows(runs[0][2], slice(0, 2)), runs[0][0][:2]).score is None:
            return None, "skipped: needs autograd for ∂t/∂θ"
        worst = 0.0
        for theta, x, z in runs:
            theta_var = theta.clone().requires_grad_(True)
            with torch.enable_grad():
                (score,) = torch.autograd.grad(simulator.joint_log_prob(x, z, theta_var).sum(), theta_var,
                                               create_graph=True)
                curvature = []
                for j in range(score.shape[1]):
                    row = None
                    if score.requires_grad:  # a score with no graph to θ has zero curvature
                        (row,) = torch.autograd.grad(score[:, j].sum(), theta_var, retain_graph=True,
                                                     allow_unused=True)
                    curvature.append(torch.zeros(n) if row is None else row[:, j].detach())
            values = score.detach() ** 2 + torch.stack(curvature, dim=1)
            worst = max(worst, _z_score(values[torch.isfinite(values).all(dim=1)], 0.0))
        return worst < Z_LIMIT, f"largest |mean t² + ∂t/∂θ| = {worst:.2f} standard errors (limit {Z_LIMIT:g})"

    if scores:
        run("E[t²] = −E[∂t/∂θ]", meaning, information_identity)

    def mean_ratio():
        worst, fractions = 0.0, []
        for j, (theta1, x, z) in enumerate(runs):
            log_r, fraction = _nearby_log_ratio(simulator, x, z, theta1, towards[j])
            fractions.append(fraction)
            ratio = log_r.exp()
            worst = max(worst, _z_score(ratio[torch.isfinite(ratio)][:, None], 1.0))
        steps = f"{max(fractions):.2g}" if min(fractions) == max(fractions) else \
            f"{min(fractions):.2g} to {max(fractions):.2g}"
        return worst < Z_LIMIT, (f"largest |mean r − 1| = {worst:.2f} standard errors at nearby θ0 ({steps} of the "
                                 f"way to a prior draw, sd(log r) ≤ {RATIO_LOG_SD:g} where reachable; "
                                 f"limit {Z_LIMIT:g})")

    run("E[r] = 1", meaning, mean_ratio)
    return report
