"""The `sluice demo` study on the Galton board: simulate, train black-box and augmented estimators at several
budgets, infer θ from observed events, and compare everything with the exact likelihood."""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context

import torch

from ..data.augmented import AugmentedData
from ..data.simulation import simulate
from ..inference import ExactLikelihood, Scan, exact_fisher_information, fisher_information, make_grid, scan
from .benchmarks.sample_efficiency import BLACK_BOX
from .benchmarks.tasks import GaltonTask
from .demo_settings import DEFAULT, QUICK, DemoSettings

__all__ = ["DemoSettings", "QUICK", "DEFAULT", "FitResult", "InferenceResult", "DemoResult", "run_demo",
           "prepare_output_dir", "MARKER"]

MARKER = ".sluice-demo"  # written first into the output folder: the demo only ever reuses a folder holding it
LEVELS = (0.68, 0.95)


@dataclass
class InferenceResult:
    """One model's answer on the observed events: the scan, the MLE and Wilks intervals {level: (low, high)},
    the seconds the scan took, and the Fisher information per event on ``fisher_thetas`` and at θ_true."""

    scan: Scan
    mle: float
    intervals: dict
    seconds: float
    fisher_curve: torch.Tensor
    fisher_at_truth: float


@dataclass
class FitResult:
    """One fit: its error (MSE of log r̂ against the exact log r, docs/theory.md), its log r̂(x|θ0,θ1) at
    x = 5…25, the training time, and (seed 0 only) its inference."""

    method: str
    n: int
    seed: int
    error: float
    fit_seconds: float
    epochs: int
    log_ratio: torch.Tensor
    inference: InferenceResult | None = None

    @property
    def black_box(self) -> bool:
        return self.method in BLACK_BOX


@dataclass
class DemoResult:
    """Everything the report shows."""

    settings: DemoSettings
    fits: list[FitResult]
    exact: InferenceResult
    exact_log_ratio: torch.Tensor
    weight: torch.Tensor
    trivial_error: float
    fisher_thetas: torch.Tensor
    observed: torch.Tensor
    timings: dict = field(default_factory=dict)
    machine: dict = field(default_factory=dict)

    def inference_fits(self) -> list[FitResult]:
        """The seed-0 fits, which carry an inference, in method then budget order."""
        order = {m: k for k, m in enumerate(self.settings.methods)}
        chosen = [f for f in self.fits if f.inference is not None]
        return sorted(chosen, key=lambda f: (order[f.method], f.n))


def prepare_output_dir(path: str) -> None:
    """Create ``path``, or accept it when it is empty or holds a previous demo (the marker file). A folder with
    other files is refused, so the demo never overwrites a user's own files."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f"{path} exists and is not a folder; choose another --out")
    if os.path.isdir(path):
        entries = os.listdir(path)
        if entries and MARKER not in entries:
            raise FileExistsError(f"{path} holds files that sluice demo did not write; choose another --out or "
                                  "empty it")
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, MARKER), "w") as file:
        file.write("written by sluice demo: it may overwrite its own files (report.html, *.png, summary.*) here\n")


def fisher_thetas(settings: DemoSettings) -> torch.Tensor:
    """The θ points [fisher_points, 1] across the training range where the Fisher information is compared."""
    prior = GaltonTask().prior
    return make_grid(prior.low, prior.high, settings.fisher_points)


def fisher_curve(model, settings: DemoSettings) -> tuple[torch.Tensor, float]:
    """I(θ) per event on ``fisher_thetas`` and at θ_true: summed exactly over x for ``ExactLikelihood``, else
    n⁻¹ Σ_i t̂(x_i|θ)² over ``fisher_samples`` runs at each θ, the same runs (fixed seed) for every model."""
    points = torch.cat([fisher_thetas(settings), torch.tensor([[settings.theta_true]])])
    board = GaltonTask().simulator
    if isinstance(model, ExactLikelihood):
        values = [exact_fisher_information(board, theta).matrix[0, 0] for theta in points]
    else:
        generator = torch.Generator().manual_seed(settings.seed + 7)
        values = []
        for theta in points:
            with torch.no_grad():
                x, _ = board.sample(theta.expand(settings.fisher_samples, 1), generator=generator)
            values.append(fisher_information(model, x, theta).matrix[0, 0])
    values = torch.stack(values)
    return values[:-1], float(values[-1])


def infer(model, observed: torch.Tensor, settings: DemoSettings) -> InferenceResult:
    """Scan q(θ) over the training range for the observed events (timed), with Wilks intervals and the model's
    Fisher information."""
    prior = GaltonTask().prior
    grid = make_grid(prior.low, prior.high, settings.grid_points)
    started = time.perf_counter()
    result = scan(model, observed, grid)
    seconds = time.perf_counter() - started
    intervals = {level: result.interpolated_interval(level) for level in LEVELS}
    curve, at_truth = fisher_curve(model, settings)
    return InferenceResult(result, float(result.mle[0]), intervals, seconds, curve, at_truth)


@dataclass
class FitJob:
    method: str
    n: int
    seed: int
    data: AugmentedData
    settings: DemoSettings
    observed: torch.Tensor | None


def fit_and_evaluate(job: FitJob) -> FitResult:
    """Train one estimator (one torch thread) and score it; seed-0 fits also infer θ. Runs in a worker process."""
    from .. import estimators

    torch.set_num_threads(1)
    task = GaltonTask()
    started = time.perf_counter()
    model = getattr(estimators, job.method)().fit(job.data, epochs=job.settings.epochs, seed=job.seed, progress=False)
    seconds = time.perf_counter() - started
    log_ratio = model.log_ratio(task.x, torch.tensor([task.theta0]), torch.tensor([task.theta1]))
    result = FitResult(job.method, job.n, job.seed, task.error(model), seconds, len(model.history_.train_loss),
                       log_ratio)
    if job.observed is not None:
        result.inference = infer(model, job.observed, job.settings)
    return result


def _progress(enabled: bool | None):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("training {task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=Console(stderr=True), transient=True)


def run_fits(jobs: list[FitJob], workers: int, progress: bool | None, report) -> list[FitResult]:
    """Run the jobs, ``workers`` processes at a time (1: in this process), with a progress bar on a terminal."""
    bar = _progress(progress)
    task = bar.add_task("", total=len(jobs)) if bar else None
    results = []

    def done(result: FitResult) -> None:
        results.append(result)
        line = (f"[{len(results)}/{len(jobs)}] {result.method:8s} N={result.n:<6,d} seed {result.seed}: "
                f"MSE {result.error:.5f} ({result.fit_seconds:.1f} s)")
        if bar:
            bar.update(task, advance=1, description=line.split("] ", 1)[1])
        else:
            report(line)

    if bar:
        bar.start()
    try:
        if workers <= 1:
            for job in jobs:
                done(fit_and_evaluate(job))
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                for future in as_completed([pool.submit(fit_and_evaluate, job) for job in jobs]):
                    done(future.result())
    finally:
        if bar:
            bar.stop()
    return results


def run_demo(out_dir: str, settings: DemoSettings = DEFAULT, progress: bool | None = None, report=print) -> DemoResult:
    """The whole study; writes the figures, summary.csv, summary.json and report.html into ``out_dir``."""
    from .demo_figures import write_figures
    from .report import write_report, write_summary

    unknown = sorted(set(settings.methods) - _known_methods())
    if unknown:
        raise ValueError(f"unknown methods {unknown}: the demo runs {sorted(_known_methods())}")
    if not settings.budgets or min(settings.budgets) < 20 or settings.seeds < 1:
        raise ValueError("demo budgets must be at least 20 simulations each, with at least one seed")
    prepare_output_dir(out_dir)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    task = GaltonTask()
    largest = max(settings.budgets)
    timings = {}
    clock = time.perf_counter()
    data = simulate(task.simulator, task.prior, settings.seeds * largest, seed=settings.seed,
                    batch_size=max(1_000, settings.seeds * largest // 20), progress=progress)
    timings["simulation"] = time.perf_counter() - clock
    report(f"simulated {len(data):,} Galton runs with joint log r and scores in {timings['simulation']:.1f} s")
    generator = torch.Generator().manual_seed(settings.observed_seed)
    with torch.no_grad():
        observed, _ = task.simulator.sample(torch.full((settings.n_observed, 1), settings.theta_true), generator)
    # each job gets a copy of its own rows (a slice would carry the whole simulation to the worker)
    jobs = [FitJob(method, n, seed, AugmentedData.concatenate([data[seed * largest: seed * largest + n]]), settings,
                   observed if seed == 0 else None)
            for n in sorted(settings.budgets, reverse=True) for seed in range(settings.seeds)
            for method in settings.methods]  # the big budgets first, so the pool drains evenly
    clock = time.perf_counter()
    fits = run_fits(jobs, settings.workers, progress, report)
    timings["training (wall)"] = time.perf_counter() - clock
    exact = infer(ExactLikelihood(task.simulator), observed, settings)
    machine = {"cpus": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg()[0]}
    result = DemoResult(settings, fits, exact, task.exact, task.weight, task.trivial_error(), fisher_thetas(settings),
                        observed, timings, machine)
    clock = time.perf_counter()
    figures = write_figures(result, out_dir)
    timings["figures"] = time.perf_counter() - clock
    timings["total"] = time.perf_counter() - started
    write_summary(result, out_dir)
    write_report(result, figures, out_dir)
    return result


def _known_methods() -> set[str]:
    from .. import estimators

    return set(estimators.__all__) - {"Estimator", "Ensemble", "Auto", "load", "SALLY", "SALLINO"}
