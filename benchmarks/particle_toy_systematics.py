"""Expected limits on the particle toy's Wilson coefficients with two systematics: learned likelihoods against
histograms and the truth-level likelihood, with the rate term and profiled nuisance parameters.

The analysis, as an LHC physicist would set it up:

- Process: ``ParticleToy`` (detector resolution (0.25, 0.1)), θ = (c1, c2), with its two systematics as
  Gaussian-constrained nuisance parameters α in units of their ±1σ variations: ``normalisation`` (±10 % on the
  rate) and ``energy_scale`` (±2 % on the detector's energy response), both as event-weight variations
  (``ParticleToy.systematic_weights``), interpolated per event with code4 (``WeightedEvents``) and per bin with
  code4p (histosys) / code4 (normsys) in the histograms, as pyhf does.
- Luminosity L = ``--events`` / σ(SM) (75 expected events at the SM). The likelihood is the extended one:
  log Poisson(n | L σ(θ, α)) + Σ_i log p(x_i | θ, α) + Σ_k log N(α_k; 0, 1) (``ExtendedTerm``).
- Expected limits: the Asimov data set at the SM with α = 0 (n = ν(SM)); for each coefficient the profile
  likelihood ratio q(c) = −2 ln λ(c), maximised over the other coefficient and both α (``profile_scan``) on a
  grid over [−``--box``, ``--box``]. 68 % / 95 % intervals: q ≤ χ²₁ quantile (two-sided, the widths). The
  expected 95 % CLs upper limit (c > 0) with its ±1σ/±2σ bands comes from Cowan, Cranmer, Gross, Vitells
  (EPJC 71 (2011) 1554): CLs_exp(N) = (1 − Φ(√q_A(c) − N)) / Φ(N) = 0.05, with √q_A(c) the Asimov distance
  (``limits.expected_cls``); for a coefficient that enters ν and the shape non-linearly the asymptotic σ is the
  local one, σ(c) = c / √q_A(c).
- "without systematics": the same models with α fixed at 0 (no constraint terms): stat-only limits.

Analyses (all trained or filled from the same ``--train`` weighted events generated at the SM, with weights at
the six basis points of ``ParticleToy.morphing()`` and at the ±1σ variations):

- truth level: the joint likelihood p(x, z | θ, α) from the weights of an independent Asimov sample
  (``WeightedEvents.log_prob``: exact dσ(z|θ)/σ(θ) times the interpolated detector reweighting), evaluated on
  that sample, the information bound of every analysis of x;
- ALICES and SCANDAL on ``WeightedEvents.augmented_data`` over (θ, α): θ ~ the prior box [−1, 1]², α from the
  constraints, as many rows as events; their log r̂(x | θ, α) on the same Asimov sample. Library defaults (the
  joint score's normalisation component is exactly 0, since a normalisation does not change the shape; the score
  term's per-component weights floor that component's spread, so it does not swamp the others);
- SALLY + histogram (MadMiner's "SALLY + histogram"): SALLY's t̂(x) at (θ, α) = 0, trained on rows at that
  point; a 2-D histogram of its two θ components (equal-population 10 × 10 bins);
- histograms of x: 1-D of the measured energy (20 bins) and 2-D of (energy, cos) (10 × 10), equal-population
  bins at the SM; the normalisation as a normsys (0.9, 1.1), the energy scale as a histosys filled from the
  reweighted events. A histogram's Asimov counts are its own expected counts ν_k(SM, 0) (as in pyhf), and its
  rate is its own Σ_k ν_k. The learned and truth-level rows share the rate term σ(θ, α) of the Asimov sample,
  with the exact σ(θ_b) at the basis points (so only the shape term differs between them).

Every histogram limit is checked against pyhf: at our expected 95 % limit c_up (the other coefficient at its
profiled value) ``to_pyhf_workspace`` gives the μ model μ·[ν(θ_up) − ν(SM)] + ν(SM); pyhf's CLs
(``pyhf.infer.hypotest``, q̃_μ, asymptotic) on the Asimov counts is solved for the c where it is 0.05 (secant in
c), and the table gives c_pyhf / c_up.

Run (``--train`` and ``--scandal-train`` choose the budgets, ``--ensemble 3`` adds an ensemble of three ALICES
fits; the results in benchmarks/results/particle_toy_systematics.md are from three runs in parallel, merged, about
25 min on two cores; SCANDAL's fit at 10⁵ events takes about 7 min):
    nice .venv/bin/python benchmarks/particle_toy_systematics.py --train 10000 100000 --scandal-train 10000 \
        --save-rows /tmp/first.pt --out /tmp/first
    nice .venv/bin/python benchmarks/particle_toy_systematics.py --train 10000 --scandal-train --ensemble 3 \
        --save-rows /tmp/second.pt --out /tmp/second
    nice .venv/bin/python benchmarks/particle_toy_systematics.py --train --scandal-train 100000 \
        --save-rows /tmp/third.pt --out /tmp/third
    .venv/bin/python benchmarks/particle_toy_systematics.py --merge /tmp/first.pt /tmp/second.pt /tmp/third.pt
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))

import sluice  # noqa: E402
from sluice import inference  # noqa: E402
from sluice.data.weighted_events import WeightedEvents  # noqa: E402
from sluice.inference.extended import ExtendedTerm  # noqa: E402
from sluice.inference.histograms import HistogramModel  # noqa: E402
from sluice.simulators.particle_toy import ParticleToy  # noqa: E402
from sluice.simulators.priors import Point  # noqa: E402
from sluice.simulators.systematics import Interpolator  # noqa: E402

SM = torch.zeros(2, dtype=torch.float64)
LEVELS = (0.68, 0.95)
COEFFICIENTS = ("c1", "c2")
N_SIGMA = (-2.0, -1.0, 0.0, 1.0, 2.0)


# --- the analyses' likelihoods behind the scans' estimator interface -------------------------------------------
class JointLikelihood:
    """The truth-level likelihood log p(x_i, z_i | θ, α) of the events of a ``WeightedEvents`` (``log_prob``),
    addressed by event index: x = the indices [n, 1] (float), θ = (c1, c2, α...) [P] or [n, P]."""

    def __init__(self, events: WeightedEvents):
        self.events, self.parameter_names_ = events, tuple(events.parameter_names)
        self._reference = {}

    def log_ratio(self, x, theta0, theta1) -> torch.Tensor:
        index = torch.as_tensor(x).reshape(-1).round().long()
        whole = len(index) == len(self.events) and torch.equal(index, torch.arange(len(self.events)))
        rows = self.events if whole else self.events[index]  # slicing costs 3× the likelihood itself

        def log_prob(theta):
            theta = torch.as_tensor(theta, dtype=torch.float64)
            theta = theta.reshape(1, -1) if theta.ndim == 1 else theta
            if theta.shape[0] > 1 and bool((theta == theta[:1]).all()):
                theta = theta[:1]  # one row: σ(θ, α) is computed once, not once per distinct row found
            return rows.log_prob(theta)

        key = (len(index), tuple(torch.as_tensor(theta1, dtype=torch.float64).reshape(-1).tolist()))
        if key not in self._reference:  # the scans keep θ1 = θ_ref: compute it once
            self._reference = {key: log_prob(theta1).detach()}
        return log_prob(theta0) - self._reference[key]


class FixedNuisances:
    """An estimator over (θ, α) seen as one over θ alone with α = 0: the stat-only analysis."""

    def __init__(self, estimator, n_physics: int = 2):
        self.estimator, self.n_physics = estimator, n_physics
        self.n_nuisances = len(estimator.parameter_names_) - n_physics
        self.parameter_names_ = tuple(estimator.parameter_names_[:n_physics])

    def pad(self, theta) -> torch.Tensor:
        theta = torch.as_tensor(theta, dtype=torch.float64)
        theta = theta.reshape(1, -1) if theta.ndim == 1 else theta
        return torch.cat([theta, torch.zeros(theta.shape[0], self.n_nuisances, dtype=theta.dtype)], dim=1)

    def log_ratio(self, x, theta0, theta1) -> torch.Tensor:
        return self.estimator.log_ratio(x, self.pad(theta0), self.pad(theta1))

    def cross_section(self, cross_section):
        return lambda thetas: cross_section(self.pad(thetas))


# --- limits from a profiled Asimov scan -----------------------------------------------------------------------
def crossing_targets() -> dict:
    """The values of q(c) whose crossings are the limits: the two-sided 68 %/95 % ends (χ²₁ quantiles) and, on
    the upper branch, the expected 95 % CLs limit at N = −2 … +2: CLs_exp = (1 − Φ(√q − N)) / Φ(N) = 0.05 at
    √q = N + Φ⁻¹(1 − 0.05 Φ(N)) (N = 0: √q = 1.96, the 95 % end)."""
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    targets = {f"{level:.0%}": inference.wilks_threshold(level, 1) for level in LEVELS}
    for n in N_SIGMA:
        root = n + float(normal.icdf(1 - 0.05 * normal.cdf(torch.tensor(n, dtype=torch.float64))))
        targets[f"CLs {n:+.0f}"] = root**2
    return targets


def profiled_limits(estimator, x, weights, rate: ExtendedTerm, args) -> dict:
    """For each coefficient: the profiled Asimov q(c) on the grid (each point maximised over the other
    coefficient and the nuisances), then each crossing of ``crossing_targets`` refined by regula falsi on the
    profiled q between the grid points that bracket it; the 68 %/95 % widths, the expected CLs limits [5]
    (N = −2 … +2) and the profiled values of the other parameters along the grid."""
    axis = torch.linspace(-args.box, args.box, args.points)
    return {name: _profile_coefficient(estimator, x, weights, rate, args, axis, j)
            for j, name in enumerate(COEFFICIENTS)}


def _profile_coefficient(estimator, x, weights, rate: ExtendedTerm, args, axis: torch.Tensor, j: int) -> dict:
    names = list(estimator.parameter_names_)
    n_observed = float(torch.as_tensor(weights, dtype=torch.float64).sum())
    other = COEFFICIENTS[1 - j]
    bounds = {other: (-args.box, args.box)}
    bounds.update({nuisance: (-5.0, 5.0) for nuisance in names[2:]})
    scan = inference.profile_scan(estimator, x, axis[:, None], [COEFFICIENTS[j]], bounds, weights=weights, rate=rate)
    # profile_scan measures ℓ from θ_ref = (middle of the grid, middle of the nuisance box) = 0 (odd points)
    profiled = scan.nuisance.double()
    free = [names.index(key) for key in bounds]
    box = [None] * len(names)
    box[j] = (-args.box, args.box)
    for key, limits in bounds.items():
        box[names.index(key)] = limits

    def q_at(c: float) -> float:
        start = torch.zeros(len(names), dtype=torch.float64)
        start[j] = c
        start[free] = torch.tensor([_interpolate(axis.double(), profiled[:, k], c) for k in range(len(free))],
                                   dtype=torch.float64)
        theta, value = inference.scans.maximise_experiments(
            estimator, x, start[None], box, torch.zeros(len(names), dtype=torch.float64), weights, free=free,
            rate=rate, n_observed=n_observed)
        solutions[c] = theta[0]
        return -2.0 * (float(value[0]) - scan.max_log_likelihood_ratio)

    def profile_at(c: float) -> torch.Tensor:
        """The profiled parameters (θ, α) [P] at coefficient value c."""
        if c not in solutions:
            q_at(c)
        return solutions[c]

    q, best = scan.q.double(), float(scan.mle[0])
    found, solutions = {}, {}

    def end(target: float, side: int) -> float:  # the CLs median and the 95 % upper end coincide: once
        key = (round(target, 9), side)
        if key not in found:
            found[key] = _crossing(axis.double(), q, best, target, side, q_at)
        return found[key]

    ends = {key: (end(target, -1) if not key.startswith("CLs") else math.nan, end(target, +1))
            for key, target in crossing_targets().items()}
    row = {"q": q, "profiled": profiled, "axis": axis.double(), "best": best, "profile_at": profile_at}
    for level in LEVELS:
        low, high = ends[f"{level:.0%}"]
        row[f"{level:.0%}"] = high - low
    row["limits"] = torch.tensor([ends[f"CLs {n:+.0f}"][1] for n in N_SIGMA], dtype=torch.float64)
    return row


def _crossing(axis: torch.Tensor, q: torch.Tensor, best: float, target: float, side: int, q_at,
              iterations: int = 3) -> float:
    """The c on the ``side`` (+1: above ĉ, −1: below) where the profiled q first reaches ``target``: bracketed
    by the grid, then refined by the Illinois variant of regula falsi on ``q_at``; nan where the grid holds no
    crossing (the limit lies beyond the box)."""
    order = (axis > best).nonzero()[:, 0] if side > 0 else (axis < best).nonzero()[:, 0].flip(0)
    previous_c, previous_q = best, 0.0
    for k in order.tolist():
        c, value = float(axis[k]), float(q[k])
        if value >= target:
            break
        previous_c, previous_q = c, value
    else:
        return math.nan
    low, f_low, high, f_high = previous_c, previous_q - target, c, value - target
    side_kept = 0
    for _ in range(iterations):
        middle = high - f_high * (high - low) / (f_high - f_low)
        f_middle = q_at(middle) - target
        if abs(f_middle) < 1e-4:
            return middle
        if (f_middle > 0) == (f_high > 0):
            high, f_high = middle, f_middle
            f_low = f_low / 2 if side_kept == -1 else f_low
            side_kept = -1
        else:
            low, f_low = middle, f_middle
            f_high = f_high / 2 if side_kept == 1 else f_high
            side_kept = 1
    return high - f_high * (high - low) / (f_high - f_low)


# --- pyhf --------------------------------------------------------------------------------------------------------
def pyhf_limit(model: HistogramModel, row: dict, coefficient: int) -> float:
    """pyhf's expected 95 % CLs limit on the coefficient along our profile path: the c where pyhf's CLs of μ = 1,
    for the signal θ_s = (c, the other coefficient's profiled value at c), on the Asimov counts ν(SM, α = 0),
    is 0.05 (secant on log CLs from our limit ± 0.5 %)."""
    import pyhf

    pyhf.set_backend("numpy")
    counts = model.expected(SM[None])[0]

    def log_cls(c: float) -> float:
        theta = torch.zeros(2, dtype=torch.float64)
        theta[coefficient] = c
        theta[1 - coefficient] = float(row["profile_at"](c)[1 - coefficient])  # re-profiled at c, as ours
        workspace = pyhf.Workspace(model.to_pyhf_workspace(counts, theta))
        pdf = workspace.model()
        value = pyhf.infer.hypotest(1.0, workspace.data(pdf), pdf, test_stat="qtilde")
        return math.log(float(value))

    ours = float(row["limits"][2])
    points = [ours * 0.995, ours * 1.005]
    values = [log_cls(c) - math.log(0.05) for c in points]
    for _ in range(4):
        if values[-1] == values[-2]:
            break
        step = values[-1] * (points[-1] - points[-2]) / (values[-1] - values[-2])
        points.append(points[-1] - step)
        values.append(log_cls(points[-1]) - math.log(0.05))
        if abs(points[-1] - points[-2]) < 1e-4 * abs(points[-1]):
            break
    return points[-1]


def _interpolate(axis: torch.Tensor, values: torch.Tensor, c: float) -> float:
    k = int(torch.searchsorted(axis, torch.tensor(c, dtype=axis.dtype)).clamp(1, len(axis) - 1))
    fraction = (c - float(axis[k - 1])) / float(axis[k] - axis[k - 1])
    return float(values[k - 1] + fraction * (values[k] - values[k - 1]))


# --- the events ------------------------------------------------------------------------------------------------
def weighted_events(toy: ParticleToy, n: int, seed: int, systematics: bool, exact_rate: bool = False):
    """``n`` weighted events generated at the SM: (WeightedEvents, x, partons, basis weights [n, B], the
    variations {name: (down, up)} of the basis weights)."""
    morphing = toy.morphing()
    x, z = toy.sample(SM.float().expand(n, 2), generator=torch.Generator().manual_seed(seed))
    weights = toy.event_weights(z["parton"], morphing.basis_points, generated_at=SM)
    variations = toy.systematic_weights(x, z["parton"], weights)
    basis_cross_sections = toy.cross_section(morphing.basis_points.double()) if exact_rate else None
    events = WeightedEvents(x, weights, morphing, basis_cross_sections,
                            **({"nuisances": toy.nuisances(), "variations": variations} if systematics else {}))
    return events, x, z["parton"], weights, variations


def exact_cross_section(toy: ParticleToy):
    """σ(θ, α) = σ(θ) · f(α_normalisation) [G] for θ [G, 4]: the toy's closed-form σ(θ) times the normalisation's
    code4 factor (0.9, 1.1), as ``WeightedEvents`` scales every weight; the energy scale moves events, not the
    rate (its detector reweighting integrates to 1 over x)."""
    normalisation = Interpolator(1.0, 1.0 - toy.normalisation_uncertainty, 1.0 + toy.normalisation_uncertainty,
                                 "code4")

    def cross_section(thetas) -> torch.Tensor:
        thetas = torch.as_tensor(thetas, dtype=torch.float64)
        return toy.cross_section(thetas[:, :2]) * normalisation.factor(thetas[:, 2])

    return cross_section


def histogram_model(nominal: WeightedEvents, variations, luminosity, bins, observable, systematics: bool):
    if not systematics:
        return HistogramModel(nominal, luminosity, bins=bins, observable=observable)
    normalisation, energy_scale = variations["normalisation"], variations["energy_scale"]
    down_factor = float(normalisation[0].sum() / nominal.basis_weights.sum())
    up_factor = float(normalisation[1].sum() / nominal.basis_weights.sum())
    return HistogramModel(nominal, luminosity, bins=bins, observable=observable,
                          normsys={"normalisation": (down_factor, up_factor)},
                          histosys={"energy_scale": energy_scale}, nuisances=ParticleToy().nuisances())


# --- the benchmark ---------------------------------------------------------------------------------------------
def evaluate(label, train, estimator, asimov, rate, args, rows, pyhf_model=None):
    """Rows with and without systematics for one analysis; ``asimov`` = (x, weights) of its Asimov data."""
    x, weights = asimov
    for systematics in (True, False):
        started = time.perf_counter()
        if systematics:
            model, term = estimator, rate
        else:
            model = FixedNuisances(estimator)
            term = ExtendedTerm(model.cross_section(rate.cross_section), rate.luminosity)
        limits = profiled_limits(model, x, weights, term, args)
        row = {"analysis": label, "train": train, "systematics": systematics, "limits": limits}
        if pyhf_model is not None:
            histogram = pyhf_model(systematics)
            row["pyhf"] = [pyhf_limit(histogram, limits[name], j) / float(limits[name]["limits"][2])
                           for j, name in enumerate(COEFFICIENTS)]
        row["seconds"] = time.perf_counter() - started
        rows.append(row)
        print(f"{label} (train {train}, systematics {systematics}): " + "; ".join(
            f"{name} 68% {limits[name]['68%']:.3f} 95% {limits[name]['95%']:.3f} CLs {limits[name]['limits'].tolist()}"
            for name in COEFFICIENTS) + (f"; pyhf/ours {row['pyhf']}" if "pyhf" in row else "")
            + f"; {row['seconds']:.0f} s", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, nargs="*", default=[10_000, 100_000],
                        help="weighted-event budgets for ALICES, SALLY and the histograms")
    parser.add_argument("--scandal-train", type=int, nargs="*", default=[10_000],
                        help="budgets for SCANDAL (the slowest fit); none to skip it")
    parser.add_argument("--events", type=float, default=75.0, help="expected events at the SM (sets L)")
    parser.add_argument("--asimov", type=int, default=5_000, help="weighted events in the Asimov sample")
    parser.add_argument("--box", type=float, default=1.0, help="each coefficient's grid covers [−box, box]")
    parser.add_argument("--points", type=int, default=11, help="grid points per coefficient (odd: 0 on the grid)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--figure", default=os.path.join(os.path.dirname(__file__), "..", "docs", "figures",
                                                         "particle_toy_brazil.png"))
    parser.add_argument("--ensemble", type=int, default=0,
                        help="also an ensemble of this many ALICES fits (seeds 0, 1, …) at the --train budgets")
    parser.add_argument("--save-rows", help="also save the measured rows to this file (for --merge)")
    parser.add_argument("--merge", nargs="+", help="write the table and figure from rows saved by runs with "
                        "--save-rows (e.g. budgets run in parallel), measuring nothing")
    args = parser.parse_args()
    if args.merge:
        return merge(args)
    if args.points % 2 == 0:
        parser.error("--points must be odd, so that the grid's middle (θ_ref of the profile scans) is 0")
    torch.set_num_threads(1)
    toy = ParticleToy()
    luminosity = args.events / float(toy.cross_section(SM[None]))
    rows, fits = [], {}

    asimov_events, *_ = weighted_events(toy, args.asimov, seed=1000, systematics=True, exact_rate=True)
    rate = ExtendedTerm(exact_cross_section(toy), luminosity, constraints=asimov_events.nuisances,
                        parameter_names=asimov_events.parameter_names)
    asimov_weights = torch.full((args.asimov,), args.events / args.asimov, dtype=torch.float64)
    truth = JointLikelihood(asimov_events)
    evaluate("truth level (joint likelihood from the weights)", args.asimov, truth,
             (torch.arange(args.asimov, dtype=torch.float32)[:, None], asimov_weights), rate, args, rows)
    learned_asimov = (asimov_events.x, asimov_weights)

    for train in sorted(set(args.train) | set(args.scandal_train)):
        run_budget(train, toy, luminosity, rate, learned_asimov, args, rows, fits)
        write(rows, fits, args)  # after each budget: a long run keeps what it has measured
        if args.save_rows:
            save_rows(rows, fits, args)
    figure(rows, args)


def run_budget(train: int, toy: ParticleToy, luminosity: float, rate: ExtendedTerm, learned_asimov, args, rows,
               fits):
    """The histograms, ALICES, SALLY + histogram and SCANDAL from ``train`` weighted events (seed = train)."""
    events, x, z, weights, variations = weighted_events(toy, train, seed=train, systematics=True)
    nominal = WeightedEvents(x, weights, toy.morphing())
    prior = toy.default_prior()
    if train in args.train:
        for label, bins, observable in (("histogram of x: energy, 20 bins", 20, [0]),
                                        ("histogram of x: (energy, cos), 10 × 10 bins", (10, 10), None)):
            build = functools.partial(histogram_model, nominal, variations, luminosity, bins, observable)
            model = build(True)
            evaluate(label, train, model, binned_asimov(model, x), model.rate(), args, rows, build)
    fitted = []
    if train in args.train:
        fitted += [("ALICES", sluice.estimators.ALICES, prior),
                   ("SALLY", sluice.estimators.SALLY, Point(torch.zeros(4)))]
    if train in args.train and args.ensemble > 1:
        fitted.append((f"ALICES ×{args.ensemble} (ensemble)",
                       lambda: sluice.estimators.Ensemble([sluice.estimators.ALICES() for _ in range(args.ensemble)]),
                       prior))
    if train in args.scandal_train:
        fitted.append(("SCANDAL", sluice.estimators.SCANDAL, prior))
    for name, make, sampling in fitted:
        started = time.perf_counter()
        estimator = make().fit(events.augmented_data(sampling, train), seed=0, progress=False)
        fits[f"{name}, {train}"] = time.perf_counter() - started
        print(f"{name} fitted on {train}: {fits[f'{name}, {train}']:.0f} s", flush=True)
        if name == "SALLY":  # MadMiner's "SALLY + histogram": t̂(x)'s θ components, binned like x
            build = functools.partial(histogram_model, nominal, variations, luminosity, (10, 10),
                                      functools.partial(theta_score, estimator))
            model = build(True)
            evaluate("SALLY + histogram of t̂ (10 × 10 bins)", train, model, binned_asimov(model, x), model.rate(),
                     args, rows, build)
        else:
            evaluate(name, train, estimator, learned_asimov, rate, args, rows)


def save_rows(rows, fits, args):
    """The rows without their closures, the fit times and the run's arguments, for ``--merge``."""
    kept = [{**row, "limits": {name: {key: value for key, value in limits.items() if key != "profile_at"}
                               for name, limits in row["limits"].items()}} for row in rows]
    torch.save({"rows": kept, "fits": fits, "args": vars(args)}, args.save_rows)


def merge(args):
    """One table and figure from the rows of several runs: the truth level once, then each run's analyses by
    budget. The command line recorded is each run's."""
    saved = [torch.load(path, weights_only=False) for path in args.merge]
    rows = [row for row in saved[0]["rows"] if row["analysis"].startswith("truth")]
    others, seen = [], set()
    for row in (row for part in saved for row in part["rows"] if not row["analysis"].startswith("truth")):
        key = (row["analysis"], row["train"], row["systematics"])
        if key not in seen:  # an analysis measured by two runs (the same seeds: the same numbers) counts once
            seen.add(key)
            others.append(row)
    rows += sorted(others, key=lambda row: row["train"])  # stable: each budget keeps its runs' order
    fits = {label: seconds for part in saved for label, seconds in part["fits"].items()}
    first = argparse.Namespace(**{**saved[0]["args"], "out": args.out, "figure": args.figure})
    first.train = sorted({value for part in saved for value in part["args"]["train"]})
    first.scandal_train = sorted({value for part in saved for value in part["args"]["scandal_train"]})
    write(rows, fits, first, runs=[part["args"] for part in saved])
    figure(rows, first)


def binned_asimov(model: HistogramModel, x: torch.Tensor):
    """A histogram's Asimov data set as the scans take it: one event of the sample ``x`` in each filled bin,
    weighted by the bin's expected count ν_k(SM, α = 0), so that the counts are ν_k exactly and a likelihood
    evaluation costs one event per bin (not one per Monte-Carlo event)."""
    bins = model.binning.index(model.observe(x))
    order = torch.argsort(bins, stable=True)
    filled, counts = torch.unique_consecutive(bins[order], return_counts=True)
    first = order[torch.cumsum(counts, 0) - counts]
    return x[first], model.expected(SM[None])[0].detach()[filled]


def theta_score(sally, x) -> torch.Tensor:
    """SALLY's t̂(x) at (θ, α) = 0, its θ components [n, 2] (the observables of "SALLY + histogram")."""
    return sally.score(x)[:, :2]


def verdict(rows) -> list[str]:
    """The issue's goal, row by row: learned 95 % widths within 10 % of truth level and below every histogram's
    (same budget, with systematics)."""
    lines = []
    truth = next(row for row in rows if row["analysis"].startswith("truth") and row["systematics"])
    for row in rows:
        if not row["systematics"] or row["analysis"].startswith(("truth", "histogram")):
            continue
        histograms = [other for other in rows if other["systematics"] and other["train"] == row["train"]
                      and other["analysis"].startswith("histogram")]
        parts = []
        for name in COEFFICIENTS:
            ratio = row["limits"][name]["95%"] / truth["limits"][name]["95%"]
            best = min(other["limits"][name]["95%"] for other in histograms) if histograms else math.nan
            parts.append(f"{name}: {ratio:.2f} × truth ({'within' if ratio <= 1.10 else 'misses'} 10 %), "
                         f"{'tighter' if row['limits'][name]['95%'] < best else 'not tighter'} than the best "
                         f"histogram ({best:.3f})")
        lines.append(f"- {row['analysis']}, {row['train']} events: " + "; ".join(parts))
    return lines


def write(rows, fits, args, runs=None):
    truth = {row["systematics"]: row for row in rows if row["analysis"].startswith("truth")}
    lines = ["# Particle toy with two systematics: expected limits on (c1, c2)", "",
             f"Expected (Asimov, SM, α = 0) limits for ν(SM) = {args.events:g} events with the rate term, each "
             "coefficient profiled over the other and (with systematics) over the normalisation (±10 %) and energy "
             "scale (±2 %) nuisance parameters with unit Gaussian constraints. Widths of the 68 %/95 % intervals "
             "(q ≤ χ²₁), in brackets the ratio to the truth level with the same systematics; 95 % CLs: the "
             "expected upper limit on c > 0, median [−1σ, +1σ] [−2σ, +2σ] (asymptotic, Cowan et al. 2011); "
             "pyhf/ours: pyhf's limit along the same profile path over ours (histograms). Grid "
             f"{args.points} points over [−{args.box}, {args.box}]; Asimov sample {args.asimov} weighted events. "
             "Method details: the docstring of benchmarks/particle_toy_systematics.py.", "",
             "| analysis | train | syst. | c1 68% | c1 95% | c2 68% | c2 95% | c1 95% CLs | c2 95% CLs | pyhf/ours "
             "(c1, c2) | s |", "|---" * 11 + "|"]
    for row in rows:
        reference = truth[row["systematics"]]["limits"]
        cells = [f"{row['limits'][name][level]:.3f} ({row['limits'][name][level] / reference[name][level]:.2f})"
                 for name in COEFFICIENTS for level in ("68%", "95%")]
        bands = []
        for name in COEFFICIENTS:
            limit = row["limits"][name]["limits"].tolist()
            bands.append(f"{limit[2]:.3f} [{limit[1]:.3f}, {limit[3]:.3f}] [{limit[0]:.3f}, {limit[4]:.3f}]")
        check = ", ".join(f"{value:.4f}" for value in row["pyhf"]) if "pyhf" in row else "—"
        lines.append(f"| {row['analysis']} | {row['train']} | {'yes' if row['systematics'] else 'no'} | "
                     + " | ".join(cells + bands) + f" | {check} | {row['seconds']:.0f} |")
    lines += ["", "Goal (learned 95 % widths within 10 % of truth level and tighter than every histogram, with "
              "systematics):", ""] + verdict(rows)
    lines += ["", "Fits (augmented data + fit, one thread on a shared 2-core machine): "
              + ", ".join(f"{label} {seconds:.0f} s" for label, seconds in fits.items())]
    lines += [""] + [f"Command: `nice {command_line(run)}`" for run in (runs or [vars(args)])]
    if runs:
        lines += ["", "(runs in parallel, merged with `--merge`)"]
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "particle_toy_systematics.md"), "w") as file:
        file.write(text)


def command_line(arguments: dict) -> str:
    """The command that measured with ``arguments`` (outputs and merge options left out)."""
    return ".venv/bin/python benchmarks/particle_toy_systematics.py " + " ".join(
        f"--{name.replace('_', '-')} {' '.join(map(str, value)) if isinstance(value, list) else value}".rstrip()
        for name, value in arguments.items() if name not in ("out", "figure", "save_rows", "merge"))


def figure(rows, args):
    """The Brazil band: expected 95 % CLs upper limits on c1 and c2 (median, ±1σ green, ±2σ yellow) of every
    analysis with systematics at the largest budget it has, and the truth level's median as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = {}
    for row in rows:
        if row["systematics"]:
            chosen[row["analysis"]] = row  # rows come in increasing budget, so the largest stays
    labels = list(chosen)
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.55 * len(labels) + 1.5), sharey=True)
    for axis, name in zip(axes, COEFFICIENTS, strict=True):
        for k, label in enumerate(labels):
            limit = chosen[label]["limits"][name]["limits"].tolist()
            y = len(labels) - 1 - k
            axis.fill_betweenx([y - 0.35, y + 0.35], limit[0], limit[4], color="#fde725", lw=0)
            axis.fill_betweenx([y - 0.35, y + 0.35], limit[1], limit[3], color="#35b779", lw=0)
            axis.plot([limit[2]] * 2, [y - 0.35, y + 0.35], color="black", ls="--")
        truth = chosen[labels[0]]["limits"][name]["limits"][2]
        axis.axvline(float(truth), color="grey", lw=0.8)
        axis.set_xlabel(f"expected 95% CLs upper limit on {name}")
    axes[0].set_yticks(range(len(labels)))
    axes[0].set_yticklabels([f"{label} ({chosen[label]['train']})" for label in reversed(labels)], fontsize=8)
    fig.suptitle(f"Particle toy, {args.events:g} SM events, two systematics profiled: median, ±1σ, ±2σ")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.figure)), exist_ok=True)
    fig.savefig(args.figure, dpi=120)


if __name__ == "__main__":
    main()
