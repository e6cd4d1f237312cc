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
On a GPU: --device cuda renders the images and trains there (``Lensing(device=...)``, ``ALICES(device=...)``);
--time-limit S first times one epoch on a tenth of the data and lowers --epochs so that both fits together take
about S seconds (the same epochs for both: equal budget); --models DIR saves the fitted estimators, so the
limits can be recomputed elsewhere (``--evaluate DIR`` skips simulation and training and reads them).
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
METHODS = ("ALICES", "CARL")
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
        at_truth = simulator.joint_log_prob(None, z, TRUTH.expand(n, 2))
        return torch.stack([(simulator.joint_log_prob(None, z, point.expand(n, 2)) - at_truth).mean()
                            for point in grid]).float()


def fmt(bounds) -> str:
    low, high = bounds
    show = lambda v: "open" if v != v else f"{v:.3f}"  # noqa: E731  (nan: the interval reaches the grid's edge)
    return f"[{show(low)}, {show(high)}]"


def fitted_estimators(args, simulator: Lensing, say) -> dict:
    """Simulate the training images and fit ALICES and CARL on them (or read them from ``--evaluate``)."""
    if args.evaluate:
        return {name: sluice.load(os.path.join(args.evaluate, f"{name}.pt")) for name in METHODS}
    if simulator.device is None:
        rates = {threads: images_per_minute(simulator, threads) for threads in (1, 2)}
        say(f"simulation: {rates[1]:,.0f} images/min with 1 torch thread, {rates[2]:,.0f} with 2 "
            f"(Lensing.sample, 2048 images, this machine under its current load)")
    clock = time.perf_counter()
    batch = 1024 if simulator.device is None else 8192
    data = sluice.simulate(simulator, simulator.default_prior(), n=args.train, seed=0, progress=False,
                           batch_size=batch)
    seconds = time.perf_counter() - clock
    say(f"simulated and mined {len(data):,} images in {seconds:.0f} s ({60 * len(data) / seconds:,.0f} per minute, "
        f"rendering on {simulator.device or 'the CPU'}; {simulator.n_capped} runs capped at "
        f"{simulator.max_subhaloes} subhaloes)")
    settings = dict(channels=args.channels, device=args.device, learning_rate=args.learning_rate)
    epochs = args.epochs
    if args.time_limit:  # one epoch on a tenth of the data (after a warm-up on 1%), to size the run
        for part in (100, 10):  # the last one timed
            clock = time.perf_counter()
            sluice.estimators.ALICES(**settings).fit(data[: len(data) // part], epochs=1,
                                                     batch_size=args.batch_size, progress=False)
        per_epoch = 10 * (time.perf_counter() - clock)
        epochs = max(1, min(epochs, int(args.time_limit / (2 * per_epoch))))
        say(f"one epoch ≈ {per_epoch:.0f} s (timed on a tenth of the data): {epochs} epochs each within "
            f"--time-limit {args.time_limit:.0f} s")
    fitted = {}
    for name in METHODS:
        clock = time.perf_counter()
        estimator = getattr(sluice.estimators, name)(**settings).fit(data, epochs=epochs, batch_size=args.batch_size,
                                                                    seed=0, progress=False)
        history = estimator.history_
        say(f"{name}: trained {len(history.train_loss)} epochs in {time.perf_counter() - clock:.0f} s; validation "
            f"loss by epoch {[round(v, 4) for v in history.validation_loss]} (best epoch {history.best_epoch})")
        if args.models:
            os.makedirs(args.models, exist_ok=True)
            estimator.save(os.path.join(args.models, f"{name}.pt"), overwrite=True)
        fitted[name] = estimator
    return fitted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=30_000, help="simulated images for training (both methods)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--test", type=int, default=5000, help="images at the truth for the expected limits")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default=None, help="render and train on this device, e.g. cuda")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--channels", default="16,32,64", help="the conv encoder's channels per stage")
    parser.add_argument("--time-limit", type=float, default=None, help="seconds for both fits together")
    parser.add_argument("--models", default=None, help="save the fitted estimators in this folder")
    parser.add_argument("--evaluate", default=None, help="read ALICES.pt and CARL.pt from this folder instead")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--report", default="lensing_limits.md", help="the table's file name in --out")
    args = parser.parse_args()
    args.channels = tuple(int(c) for c in args.channels.split(","))
    args.device = args.device or "cpu"
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    simulator = Lensing(device=None if args.device == "cpu" else args.device)
    lines, started = [], time.perf_counter()

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    fitted = fitted_estimators(args, simulator, say)
    x_test, _ = simulator.sample(TRUTH.expand(args.test, 2), torch.Generator().manual_seed(1))
    grid = torch.stack([torch.linspace(0.001, 0.2, 400), torch.full((400,), float(TRUTH[1]))], dim=1)
    expected = {name: estimator.log_ratio_table(x_test, grid, TRUTH).mean(dim=1)
                for name, estimator in fitted.items()}
    expected["oracle (subhalo catalogue)"] = oracle_expected_log_ratio(simulator, grid)

    source = f"models read from {args.evaluate}" if args.evaluate else \
        f"training {args.train:,} images, at most {args.epochs} epochs"
    say()
    say(f"Expected 95% intervals on f_sub at β = −0.9 (truth f_sub = 0.05; {args.test:,} test images; "
        f"{source}):")
    say()
    say("| method | " + " | ".join(f"{n} lenses" for n in LENSES) + " | f̂ (max of E[log r̂]) |")
    say("|---|" + "---|" * (len(LENSES) + 1))
    for name, values in expected.items():
        best = float(grid[int(torch.argmax(values)), 0])
        say(f"| {name} | " + " | ".join(fmt(interval(grid, values, n)) for n in LENSES) + f" | {best:.3f} |")
    say("| published (Brehmer et al. 2019) | " + " | ".join(fmt(PUBLISHED[n]) for n in LENSES) + " | 0.05 |")
    say()
    say(f"total {time.perf_counter() - started:.0f} s; command: python benchmarks/lensing_limits.py "
        + " ".join(f"--{k.replace('_', '-')} {','.join(map(str, v)) if isinstance(v, tuple) else v}"
                   for k, v in vars(args).items() if v is not None and k != "out"))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, args.report), "w") as handle:
        log = lines.index("")  # the run's log, then the table
        handle.write("# Expected limits on f_sub from strong-lensing images\n\n```\n" + "\n".join(lines[:log])
                     + "\n```\n\n" + "\n".join(lines[log + 1:]) + "\n")


if __name__ == "__main__":
    main()
