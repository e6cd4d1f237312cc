"""Expected 95% limits on the subhalo mass fraction f_sub from strong-lensing images: ALICES against CARL at equal
budget, with the published intervals and an oracle that sees the subhalo catalogue.

Steps (all on CPU, one torch thread unless ``--threads``):

1. throughput: images per minute of ``Lensing.sample`` with 1 and 2 torch threads (2048 images, best of 2);
2. ``sluice.simulate(Lensing(), default prior, n=--train, seed=0)``: θ0, θ1 ~ the prior box
   f_sub ∈ [0.001, 0.2], β ∈ [−1.5, −0.5], joint log r and scores mined;
3. ALICES and CARL with the conv net (``network="auto"`` picks it for images), ``--epochs`` epochs, batch 64,
   the same data, split and seed (equal budget); 20% held out for early stopping;
4. ``--test`` fresh images at the truth f_sub = 0.05, β = −0.9; on a grid of f_sub (β fixed at −0.9) the
   expected log-likelihood ratio per lens, E[log r̂(x|f, −0.9; truth)], is their mean; for N lenses the Asimov
   statistic is q_N(f) = −2N (E[log r̂](f) − max_f' E[log r̂](f')), and the 95% interval is q_N ≤ 3.84 (Wilks,
   one parameter: the β = −0.9 slice), interpolated between grid points;
5. the oracle: the same with log r(z) of the subhalo population itself (count and masses, ``joint_log_prob``):
   the limit if every subhalo were detected and weighed, a bound on what any image analysis can reach.

Run: nice -n 10 .venv/bin/python benchmarks/lensing_limits.py [--train 30000] [--epochs 5] [--test 5000]
     [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import sluice
from sluice.inference import Scan
from sluice.simulators.lensing import Lensing

TRUTH = torch.tensor([0.05, -0.9])
LENSES = (5, 20, 100)
PUBLISHED = {5: (0.012, 0.10), 20: (0.027, 0.077), 100: (0.041, 0.061)}


def images_per_minute(simulator: Lensing, threads: int, n: int = 2048) -> float:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        theta = simulator.default_prior().sample((n,))
        best = float("inf")
        for seed in range(2):
            started = time.perf_counter()
            simulator.sample(theta, torch.Generator().manual_seed(seed))
            best = min(best, time.perf_counter() - started)
        return 60.0 * n / best
    finally:
        torch.set_num_threads(before)


def interval(grid: torch.Tensor, expected_log_ratio: torch.Tensor, lenses: int) -> tuple[float, float]:
    """The 95% interval in f_sub of the Asimov scan N · E[log r](f), β fixed (one parameter)."""
    values = lenses * expected_log_ratio
    best = int(torch.argmax(values))
    scan = Scan(grid[:, :1], values, grid[best, :1], float(values[best]), float(lenses), ("f_sub",))
    return scan.interpolated_interval(0.95)


def oracle_expected_log_ratio(simulator: Lensing, grid: torch.Tensor, n: int = 50_000) -> torch.Tensor:
    """E_z~truth[log p(z|θ_g) − log p(z|truth)] from the subhalo population alone (exact, Monte Carlo)."""
    z = simulator.sample_population(TRUTH.expand(n, 2), torch.Generator().manual_seed(123))
    with torch.no_grad():
        at_truth = simulator.joint_log_prob(TRUTH.expand(n, 2), None, z)
        return torch.stack([(simulator.joint_log_prob(point.expand(n, 2), None, z) - at_truth).mean()
                            for point in grid]).float()


def fmt(bounds) -> str:
    low, high = bounds
    show = lambda v: "open" if v != v else f"{v:.3f}"  # noqa: E731  (nan: the interval reaches the grid's edge)
    return f"[{show(low)}, {show(high)}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=30_000, help="simulated images for training (both methods)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--test", type=int, default=5000, help="images at the truth for the expected limits")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    simulator = Lensing()
    lines, started = [], time.perf_counter()

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    rates = {threads: images_per_minute(simulator, threads) for threads in (1, 2)}
    say(f"simulation: {rates[1]:,.0f} images/min with 1 torch thread, {rates[2]:,.0f} with 2 "
        f"(Lensing.sample, 2048 images, this machine under its current load)")
    clock = time.perf_counter()
    data = sluice.simulate(simulator, simulator.default_prior(), n=args.train, seed=0, progress=False)
    say(f"simulated and mined {len(data):,} images in {time.perf_counter() - clock:.0f} s "
        f"({simulator.n_capped} runs capped at {simulator.max_subhaloes} subhaloes)")

    x_test, _ = simulator.sample(TRUTH.expand(args.test, 2), torch.Generator().manual_seed(1))
    grid = torch.stack([torch.linspace(0.001, 0.2, 400), torch.full((400,), float(TRUTH[1]))], dim=1)
    expected = {}
    for name in ("ALICES", "CARL"):
        clock = time.perf_counter()
        estimator = getattr(sluice.estimators, name)().fit(data, epochs=args.epochs, batch_size=64, seed=0,
                                                           progress=False)
        history = estimator.history_
        say(f"{name}: trained {len(history.train_loss)} epochs in {time.perf_counter() - clock:.0f} s; validation "
            f"loss by epoch {[round(v, 4) for v in history.validation_loss]} (best epoch {history.best_epoch})")
        expected[name] = estimator.log_ratio_table(x_test, grid, TRUTH).mean(dim=1)
    expected["oracle (subhalo catalogue)"] = oracle_expected_log_ratio(simulator, grid)

    say()
    say(f"Expected 95% intervals on f_sub at β = −0.9 (truth f_sub = 0.05; {args.test:,} test images; "
        f"training {args.train:,} images, {args.epochs} epochs):")
    say()
    say("| method | " + " | ".join(f"{n} lenses" for n in LENSES) + " | f̂ (max of E[log r̂]) |")
    say("|---|" + "---|" * (len(LENSES) + 1))
    for name, values in expected.items():
        best = float(grid[int(torch.argmax(values)), 0])
        say(f"| {name} | " + " | ".join(fmt(interval(grid, values, n)) for n in LENSES) + f" | {best:.3f} |")
    say("| published (Brehmer et al. 2019) | " + " | ".join(fmt(PUBLISHED[n]) for n in LENSES) + " | 0.05 |")
    say()
    say(f"total {time.perf_counter() - started:.0f} s; command: nice -n 10 .venv/bin/python "
        f"benchmarks/lensing_limits.py --train {args.train} --epochs {args.epochs} --test {args.test}")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "lensing_limits.md"), "w") as handle:
        handle.write("# Expected limits on f_sub from strong-lensing images\n\n```\n" + "\n".join(lines[:4])
                     + "\n```\n\n" + "\n".join(lines[4:]) + "\n")


if __name__ == "__main__":
    main()
