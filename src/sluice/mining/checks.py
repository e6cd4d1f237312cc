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


def check_simulator(simulator: Simulator, prior, n: int = 2000, n_theta: int = 3, seed: int = 0,
                    fd_step: float = DEFAULT_FD_STEP) -> SimulatorReport:
    """Check that ``simulator`` can be mined, at ``n_theta`` parameter points drawn from ``prior``:

    - sampling is reproducible from the generator (and torch's seeded global generator);
    - ``joint_log_prob`` re-scores a run to the same finite value twice at the θ that produced it;
    - the autograd score equals central finite differences (a graph break drops score terms);
    - log p(x,z|θ) depends on θ at all;
    - E[t(x,z|θ)] = 0, the information identity E[t_j²] = −E[∂t_j/∂θ_j], and E[r(x,z|θ0,θ1)] = 1 for
      x,z ~ θ (resp. θ1), each within Z_LIMIT standard errors: randomness left out of z or a density that
      does not match the sampler breaks them.

    Returns a ``SimulatorReport``; ``print`` it for the table, ``report.ok`` to act on it.
    """
    check_prior(prior, simulator.n_parameters)
    report = SimulatorReport(simulator.name)
    scale = parameter_scale(prior)
    step = fd_step * scale
    thetas = sample_prior(prior, n_theta, seed)
    nearby = thetas + 0.1 * (sample_prior(prior, n_theta, seed + 1) - thetas)  # stays inside a convex support

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
        typical = reference.pow(2).mean().sqrt().clamp_min(1e-12)
        worst = float((score - reference).abs().max() / typical)
        return worst < 0.05, f"largest |autograd − finite difference| = {worst:.2g} of the score's rms"

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
        worst = 0.0
        for j, (theta1, x, z) in enumerate(runs):
            theta0 = nearby[j].expand(n, -1).clone()
            with torch.no_grad():
                log_r = simulator.joint_log_prob(x, z, theta0) - simulator.joint_log_prob(x, z, theta1)
            ratio = log_r.to(torch.float64).exp()
            worst = max(worst, _z_score(ratio[torch.isfinite(ratio)][:, None], 1.0))
        return worst < Z_LIMIT, f"largest |mean r − 1| = {worst:.2f} standard errors at nearby θ0 (limit {Z_LIMIT:g})"

    run("E[r] = 1", meaning, mean_ratio)
    return report
