"""Expected limits on the particle toy's Wilson coefficients: ALICES from weighted events against histograms and
the exact likelihoods.

Weighted events (``--train`` of them, generated at the SM, with weights at the six basis points of
``ParticleToy.morphing()``) are the whole training budget. From them:

- ALICES (defaults) trains on ``WeightedEvents.augmented_data`` (θ0, θ1 ~ the prior box [−1, 1]², as many rows
  as events), once on the detector-level x and once on the parton-level z;
- 2-D histograms of x (E bins at quantiles of the SM sample, cos bins uniform, the outer bins open) with
  templates at every θ from the same events by morphing: p(bin|θ) = Σ_m c_m(θ) H_bm / Σ_m c_m(θ) T_m.

The expected (Asimov) scans for ``--events`` events at the SM use ``sluice.inference.asimov_scan`` (``--asimov``
weighted events, shape only: the rate is not used) on a grid over [−``--box``, ``--box``]², and are compared
with the exact likelihood of x (the closed-form smeared density) and the truth-level likelihood of z. The
table gives the areas of the 68% and 95% Wilks regions (χ²₂) and the widths of the profiled 1-D intervals
(χ²₁, the profile taken over the grid), and how far each scan's q is from the exact detector-level one.
``--seeds`` repeats each ALICES training with other data and network seeds.

Run: .venv/bin/python benchmarks/particle_toy_limits.py [--train 100000] [--events 50] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from sluice.morphing import monomials
from sluice.weighted_events import WeightedEvents

import sluice
from sluice import inference
from sluice.simulators.particle_toy import ParticleToy

SM = torch.zeros(2)
LEVELS = (0.68, 0.95)


class MonomialLikelihood:
    """p(x|θ) = Σ_m c_m(θ) F_m(x) / σ(θ) behind the estimator interface that the scans use (``log_ratio_table``):
    the exact densities (F = the toy's components) and histogram templates (F = bin contents) alike."""

    def __init__(self, features, cross_section, powers, parameter_names):
        self.features, self.cross_section, self.powers = features, cross_section, powers
        self.parameter_names_ = tuple(parameter_names)

    def log_ratio_table(self, x, thetas, theta_ref) -> torch.Tensor:
        """log p(x_i|θ_g) − log p(x_i|θ_ref): [G, n]."""
        features = self.features(x)

        def log_density(block):
            block = block.double()
            return torch.log(monomials(block, self.powers) @ features.T) - torch.log(self.cross_section(block))[:, None]

        reference = log_density(theta_ref.reshape(1, -1))
        return torch.cat([(log_density(thetas[start:start + 256]) - reference).float()
                          for start in range(0, thetas.shape[0], 256)])

    def log_ratio(self, x, theta0, theta1) -> torch.Tensor:
        thetas = torch.stack([torch.as_tensor(theta0).reshape(-1), torch.as_tensor(theta1).reshape(-1)])
        return self.log_ratio_table(x, thetas[:1], thetas[1])[0]


def histogram(events: WeightedEvents, energy_bins: int, angle_bins: int) -> MonomialLikelihood:
    """Templates from the weighted events: H_bm = Σ_{i in bin b} f_m(z_i), morphed to any θ."""
    x = events.x.double()
    quantiles = torch.linspace(0.0, 1.0, energy_bins + 1, dtype=torch.float64)[1:-1]
    energy_edges = torch.quantile(x[:, 0], quantiles)
    angle_edges = torch.linspace(-1.0, 1.0, angle_bins + 1, dtype=torch.float64)[1:-1]

    def bins(values):
        values = torch.as_tensor(values, dtype=torch.float64)
        return (torch.bucketize(values[:, 0].contiguous(), energy_edges) * angle_bins
                + torch.bucketize(values[:, 1].contiguous(), angle_edges))

    components = events.morphing.components(events.basis_weights)
    contents = torch.zeros(energy_bins * angle_bins, components.shape[1], dtype=torch.float64)
    contents.index_add_(0, bins(x), components)
    totals = contents.sum(dim=0)
    return MonomialLikelihood(lambda values: contents[bins(values)],
                              lambda thetas: monomials(thetas, events.morphing.powers) @ totals,
                              events.morphing.powers, events.morphing.parameter_names)


def exact(simulator: ParticleToy) -> MonomialLikelihood:
    return MonomialLikelihood(simulator.detector_components, simulator.cross_section,
                              simulator.morphing().powers, simulator.parameter_names)


def region_area(scan: inference.Scan, level: float) -> float:
    cells = torch.tensor([float(torch.unique(scan.grid[:, j]).diff().mean()) for j in range(2)]).prod()
    return float(scan.region(level).float().sum() * cells)


def profiled_width(scan: inference.Scan, level: float, parameter: int) -> float:
    """Width of the 1-D interval where the grid profile min_other q ≤ χ²₁(level), interpolated; nan where the
    interval reaches the edge of the grid."""
    axis = torch.unique(scan.grid[:, parameter])
    q = scan.q.reshape(len(axis), len(axis))
    profile = q.min(dim=1 - parameter).values
    one_dimensional = inference.Scan(axis[:, None], -0.5 * profile, scan.mle[parameter:parameter + 1], 0.0,
                                     scan.n_events)
    low, high = one_dimensional.interpolated_interval(level)
    return high - low


def measure(label, model, simulator, args, grid, exact_scan=None) -> dict:
    """One row of the table; ``exact_scan`` (the exact likelihood of x) gives the rms of q − q_exact over the
    exact 95% region, a direct measure of how well the analysis reproduces the optimal detector-level one."""
    started = time.perf_counter()
    scan = inference.asimov_scan(model, simulator, SM, args.events, grid, n_samples=args.asimov, seed=1)
    edge = torch.isclose(scan.grid.abs(), torch.tensor(args.box)).any(dim=1)
    row = {"analysis": label, "touches edge": bool(scan.region(0.95)[edge].any()),
           "seconds": time.perf_counter() - started, "scan": scan, "rms dq": float("nan")}
    if exact_scan is not None:
        inside = exact_scan.region(0.95)
        row["rms dq"] = float(((scan.q - exact_scan.q)[inside] ** 2).mean().sqrt())
    for level in LEVELS:
        row[f"area {level:.0%}"] = region_area(scan, level)
        for j, name in enumerate(("c1", "c2")):
            row[f"{name} {level:.0%}"] = profiled_width(scan, level, j)
    print(f"{label}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if isinstance(v, float)), flush=True)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=100_000, help="weighted events generated at the SM")
    parser.add_argument("--events", type=float, default=50.0, help="expected events in the measurement")
    parser.add_argument("--asimov", type=int, default=20_000, help="Monte-Carlo events in each Asimov set")
    parser.add_argument("--box", type=float, default=1.0, help="the scan grid covers [−box, box]²")
    parser.add_argument("--points", type=int, default=81, help="grid points per parameter")
    parser.add_argument("--seeds", type=int, default=3, help="ALICES trainings (data and network seeds) per setting")
    parser.add_argument("--long-epochs", type=int, default=100, help="epochs of the longer ALICES trainings")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    detector, truth = ParticleToy(), ParticleToy(resolution=(0.0, 0.0))
    morphing = detector.morphing()
    x, z = detector.sample(SM.expand(args.train, 2), generator=torch.Generator().manual_seed(0))
    weights = detector.event_weights(z["parton"], morphing.basis_points, generated_at=SM)
    events, parton_events = WeightedEvents(x, weights, morphing), WeightedEvents(z["parton"], weights, morphing)
    grid = inference.make_grid([-args.box] * 2, [args.box] * 2, args.points)
    prior = detector.default_prior()
    check_x, check_theta = x[:500], torch.rand(2, generator=torch.Generator().manual_seed(1)) * 2 - 1
    difference = exact(detector).log_ratio(check_x, check_theta, SM) - \
        inference.ExactLikelihood(detector).log_ratio(check_x, check_theta, SM)
    assert float(difference.abs().max()) < 1e-4, "the fast exact likelihood disagrees with ExactLikelihood"

    truth_row = measure("truth level: exact likelihood of z", exact(truth), truth, args, grid)
    optimum = measure("detector level: exact likelihood of x", exact(detector), detector, args, grid)
    truth_row["rms dq"], optimum["rms dq"] = 0.0, 0.0
    rows, fits = [truth_row, optimum], {}
    settings = (("ALICES on x, {} epochs", events, detector, optimum, None),
                ("ALICES on x, {} epochs", events, detector, optimum, args.long_epochs),
                ("ALICES on z, {} epochs", parton_events, truth, truth_row, args.long_epochs))
    for template, sample, simulator, reference, epochs in settings:
        label = template.format("default" if epochs is None else epochs)
        group = []
        for seed in range(args.seeds):
            started = time.perf_counter()
            data = sample.augmented_data(prior, args.train, seed=seed)
            estimator = sluice.estimators.ALICES(**({} if epochs is None else {"patience": epochs})).fit(
                data, epochs=epochs, seed=seed, progress=False)
            history = estimator.history_
            fits[f"{label}, seed {seed}"] = (time.perf_counter() - started, len(history.train_loss),
                                             history.best_epoch + 1)
            group.append(measure(f"{label}, seed {seed}", estimator, simulator, args, grid, reference["scan"]))
        rows += group + ([mean_row(f"{label}: mean of {args.seeds} seeds", group)] if args.seeds > 1 else [])
    for energy_bins, angle_bins in ((5, 5), (10, 10), (20, 20)):
        templates = histogram(events, energy_bins, angle_bins)
        rows.append(measure(f"histogram of x, {energy_bins}×{angle_bins} bins", templates, detector, args, grid,
                            optimum["scan"]))
    write(rows, fits, args)


def mean_row(label: str, group: list) -> dict:
    numbers = [key for key, value in group[0].items() if isinstance(value, float) and key != "seconds"]
    row = {key: sum(member[key] for member in group) / len(group) for key in numbers}
    return {**row, "analysis": f"**{label}**", "touches edge": any(member["touches edge"] for member in group)}


def write(rows, fits, args):
    truth = rows[0]
    columns = [f"{kind} {level:.0%}" for level in LEVELS for kind in ("area", "c1", "c2")]
    lines = ["# Particle toy: expected limits on (c1, c2) from weighted events", "",
             f"Expected (Asimov) limits at the SM for {args.events:g} events (shape only), from "
             f"{args.asimov} Monte-Carlo events per Asimov set, grid {args.points}² over [−{args.box}, {args.box}]². "
             f"Training budget: {args.train} weighted events generated at the SM (weights at 6 basis points). "
             "Areas of the Wilks regions (χ²₂) and widths of the profiled intervals (χ²₁); in brackets the ratio "
             "to the truth level (exact likelihood of the parton-level z). rms Δq: the root mean square of "
             "q − q_exact over the grid points inside the exact 95% region, against the exact likelihood of the "
             "same input (x, or z for the rows on z): 0 for an optimal analysis of that input. ALICES trains on the "
             "events' augmented data (as many rows as events, θ0 and θ1 from the prior [−1, 1]², 20% held out); "
             "'default epochs' is the library's default budget, otherwise ALICES(patience=epochs).fit(data, "
             "epochs=epochs). Histogram templates are morphed from the same events.", "",
             "| analysis | " + " | ".join(columns) + " | rms Δq |", "|---" * (len(columns) + 2) + "|"]
    for row in rows:
        cells = [f"{row[c]:.3f} ({row[c] / truth[c]:.2f})" for c in columns]
        lines.append(f"| {row['analysis']}{' (95% region reaches the grid edge)' if row['touches edge'] else ''} | "
                     + " | ".join(cells) + f" | {row['rms dq']:.3f} |")
    lines += ["", "ALICES fits (augmented data + fit, one thread on a shared 2-core machine):", ""]
    lines += [f"- {label}: {seconds:.0f} s, {epochs} epochs run, best epoch {best}"
              for label, (seconds, epochs, best) in fits.items()]
    lines += ["", "Command: `.venv/bin/python benchmarks/particle_toy_limits.py " + " ".join(
        f"--{name.replace('_', '-')} {value}" for name, value in vars(args).items() if name != "out") + "`"]
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "particle_toy_limits.md"), "w") as file:
        file.write(text)


if __name__ == "__main__":
    main()
