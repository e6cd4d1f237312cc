"""The work of `sluice benchmark NAME`: the options read, the runner of NAME called, and the report text returned
(galton and mixture: ``benchmarks.sample_efficiency``; suite: ``benchmarks.suite``; sbibm: ``benchmarks.sbibm``)."""

from __future__ import annotations

import os
import sys

from .specs import parse_vector

__all__ = ["NAMES", "SBIBM_WHEEL", "run_benchmark", "parse_observations", "default_wheel"]

NAMES = ("galton", "mixture", "suite", "sbibm")
DEFAULT_SEEDS = {"sbibm": 3}  # an sbibm cell is a fit plus 10 C2STs of 10,000 draws: 3 seeds, as the runner's default
DEFAULT_SEEDS_OTHERWISE = 5
SBIBM_WHEEL = os.path.join("sbibm", "sbibm-1.1.0-py2.py3-none-any.whl")  # where `make sbibm-data` puts it, in .venv
SBIBM_ONLY = ("observations", "samples", "wheel")


def parse_observations(text: str) -> tuple[int, ...]:
    """sbibm's observation numbers (1 … 10) from ``"1-10"``, ``"1,2,3"`` or a mix (``"1-3,7"``), sorted, once each."""
    numbers: set[int] = set()
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        try:
            first, last = int(low), int(high if dash else low)
        except ValueError:
            raise ValueError(f"cannot read --observations {text!r}: use e.g. 1-10 or 1,2,3") from None
        if not 1 <= first <= last <= 10:
            raise ValueError(f"--observations {text!r}: sbibm's observations are numbered 1 … 10, each range "
                             "LOW-HIGH with LOW ≤ HIGH")
        numbers.update(range(first, last + 1))
    return tuple(sorted(numbers))


def default_wheel() -> str | None:
    """The sbibm wheel: the environment variable SLUICE_SBIBM_WHEEL, else ``.venv/sbibm/…whl`` under the working
    folder or under the running environment (``sys.prefix``) where one exists, else None (the runner then says how
    to get it)."""
    from ..simulators.sbibm import WHEEL_ENVIRONMENT_VARIABLE

    if os.environ.get(WHEEL_ENVIRONMENT_VARIABLE):
        return os.environ[WHEEL_ENVIRONMENT_VARIABLE]
    for candidate in (os.path.join(".venv", SBIBM_WHEEL), os.path.join(sys.prefix, SBIBM_WHEEL)):
        if os.path.isfile(candidate):
            return candidate
    return None


def run_benchmark(name: str, options: dict, report) -> str:
    """Run benchmark ``name`` with the command's ``options`` (budgets, seeds, methods, tasks, out_dir, workers, and
    for sbibm observations, samples, wheel; None: the default), reporting progress lines to ``report``; returns
    the Markdown report (also written to OUT)."""
    stray = [key for key in SBIBM_ONLY if options[key] is not None]
    if name != "sbibm" and stray:
        raise ValueError(f"--{stray[0]} is for sbibm only")
    seeds = options["seeds"] if options["seeds"] is not None else DEFAULT_SEEDS.get(name, DEFAULT_SEEDS_OTHERWISE)
    budgets, methods, tasks, out_dir = options["budgets"], options["methods"], options["tasks"], options["out_dir"]
    workers = options["workers"]
    if name == "sbibm":
        from .benchmarks import sbibm

        observations = parse_observations(options["observations"] or "1-10")
        os.makedirs(out_dir, exist_ok=True)
        rows = sbibm.run(tasks=tuple(tasks.split(",")) if tasks else sbibm.TASKS,
                         methods=tuple(methods.split(",")) if methods else sbibm.METHODS,
                         budgets=tuple(int(v) for v in parse_vector(budgets or "1000,10000")), seeds=seeds,
                         observations=observations, n_samples=options["samples"] or 10_000,
                         wheel=options["wheel"] or default_wheel(), path=os.path.join(out_dir, "sbibm.csv"),
                         workers=workers, report=report)
        return sbibm.report_files(rows, out_dir, observations)
    if name == "suite":
        from .benchmarks import suite

        chosen, names = suite.choose(methods, tasks)
        sizes = tuple(int(v) for v in parse_vector(budgets or "100,1000,10000"))
        os.makedirs(out_dir, exist_ok=True)
        rows = suite.run_jobs(suite.suite_jobs(names, chosen, sizes, seeds), os.path.join(out_dir, "suite.csv"),
                              workers=workers, report=report)
        return suite.report_files([r for r in rows if r["config"] == "default"], out_dir)
    from .benchmarks import sample_efficiency

    if tasks:
        raise ValueError("--tasks is for the suite and sbibm only")
    chosen = tuple(methods.split(",")) if methods else sample_efficiency.METHODS
    sample_efficiency.refuse_unknown("methods", chosen, sample_efficiency.CHOICES)
    sizes = tuple(int(v) for v in parse_vector(budgets or "200,1000,10000"))
    rows = sample_efficiency.run(name, chosen, sizes, seeds, out_dir, workers=workers, report=report)
    return sample_efficiency.report_files(name, rows, out_dir)
