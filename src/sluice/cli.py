"""The `sluice` command line: simulate augmented data and check a simulator (more commands to come)."""

from __future__ import annotations

import importlib
import os
import sys
from functools import wraps

import click

from . import priors, simulators
from .data import AugmentedData
from .doctor import check_simulator
from .simulate import simulate as simulate_data
from .simulator import Simulator

USER_ERRORS = (ValueError, TypeError, FileExistsError, FileNotFoundError, ImportError, AttributeError, KeyError)


def one_line_errors(command):
    """Turn a user's mistake into one line on stderr and exit status 2, never a traceback."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as error:
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            click.echo(f"sluice: error: {message}", err=True)
            sys.exit(2)

    return wrapper


def load_simulator(spec: str) -> Simulator:
    """A built-in name (``galton``, ``mixture`` or the class name) or ``module:Class``."""
    by_name = dict(simulators.BUILT_IN)
    by_name.update({cls.__name__.lower(): cls for cls in simulators.BUILT_IN.values()})
    if spec.lower() in by_name:
        return by_name[spec.lower()]()
    if ":" not in spec:
        raise ValueError(f"unknown simulator {spec!r}: use one of {sorted(simulators.BUILT_IN)} or module:Class")
    module_name, class_name = spec.split(":", 1)
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot load simulator {spec!r}: {error}") from None
    instance = cls() if isinstance(cls, type) else cls
    if not isinstance(instance, Simulator):
        raise TypeError(f"{spec} is not a sluice.Simulator")
    return instance


def parse_vector(text: str) -> list[float]:
    try:
        return [float(value) for value in text.split(",")]
    except ValueError:
        raise ValueError(f"cannot read {text!r} as comma-separated numbers") from None


def parse_prior(spec: str | None, simulator: Simulator):
    """``box:LOW:HIGH`` or ``point:THETA`` with comma-separated vectors; default: the simulator's own."""
    if spec is None:
        if not hasattr(simulator, "default_prior"):
            raise ValueError(f"{simulator.name} has no default prior; give --prior box:LOW:HIGH")
        return simulator.default_prior()
    kind, _, rest = spec.partition(":")
    if kind == "box" and rest.count(":") == 1:
        low, high = rest.split(":")
        return priors.BoxUniform(parse_vector(low), parse_vector(high))
    if kind == "point" and rest:
        return priors.Point(parse_vector(rest))
    raise ValueError(f"cannot read prior {spec!r}: use box:LOW:HIGH or point:THETA (comma-separated vectors)")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sluice-sbi")
def main():
    """sluice: simulation-based inference with the joint likelihood ratio and joint score."""


@main.command()
@click.argument("simulator")
@click.option("--n", "n", type=int, required=True, help="Number of simulated runs.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="HDF5 file to write.")
@click.option("--prior", default=None, help="box:LOW:HIGH or point:THETA (default: the simulator's own).")
@click.option("--reference", default=None, help="Fixed θ1, comma-separated (default: drawn from the prior).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=int, default=None, help="Runs per batch (default: the simulator's).")
@click.option("--overwrite", is_flag=True, help="Replace FILE if it exists.")
@one_line_errors
def simulate(simulator, n, out, prior, reference, seed, batch_size, overwrite):
    """Simulate N runs of SIMULATOR (a built-in name or module:Class) with joint ratio and scores."""
    sim = load_simulator(simulator)
    prior_distribution = parse_prior(prior, sim)
    if not overwrite and os.path.exists(out):  # refuse before spending compute
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    data = simulate_data(sim, prior_distribution, n, reference=None if reference is None else parse_vector(reference),
                         seed=seed, batch_size=batch_size)
    data.save(out, overwrite=overwrite)
    click.echo(f"wrote {len(data)} rows to {out}: {data}")


@main.command()
@click.argument("simulator")
@click.option("--prior", default=None, help="box:LOW:HIGH or point:THETA (default: the simulator's own).")
@click.option("--n", "n", type=int, default=2000, show_default=True, help="Runs per parameter point.")
@click.option("--seed", type=int, default=0, show_default=True)
@one_line_errors
def check(simulator, prior, n, seed):
    """Check that SIMULATOR can be mined (exit status 1 if a check fails)."""
    sim = load_simulator(simulator)
    report = check_simulator(sim, parse_prior(prior, sim), n=n, seed=seed)
    click.echo(str(report))
    sys.exit(0 if report.ok else 1)


@main.command()
@click.argument("name", type=click.Choice(["galton", "mixture"]))
@click.option("--budgets", default="200,1000,10000", show_default=True, help="Training simulations, comma-separated.")
@click.option("--seeds", type=int, default=5, show_default=True, help="Seeds per method and budget.")
@click.option("--methods", default=None, help="Comma-separated estimator names (default: all ten).")
@click.option("--out", "out_dir", default="benchmark-results", show_default=True, help="Folder for CSV, table, plot.")
@click.option("--workers", type=int, default=2, show_default=True, help="Processes running fits at once.")
@one_line_errors
def benchmark(name, budgets, seeds, methods, out_dir, workers):
    """Sample efficiency of every method against the exact likelihood (CSV, Markdown table, PNG plot).

    Rows already in OUT/NAME.csv are kept and skipped, so an interrupted run resumes.
    """
    from .benchmarks import sample_efficiency

    chosen = tuple(methods.split(",")) if methods else sample_efficiency.METHODS
    unknown = sorted(set(chosen) - set(sample_efficiency.METHODS))
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(sample_efficiency.METHODS)}")
    sizes = tuple(int(v) for v in parse_vector(budgets))
    rows = sample_efficiency.run(name, chosen, sizes, seeds, out_dir, workers=workers,
                                 report=lambda line: click.echo(line, err=True))
    click.echo(sample_efficiency.report_files(name, rows, out_dir))


@main.command()
@click.argument("path", type=click.Path(dir_okay=False))
@one_line_errors
def info(path):
    """Describe an AugmentedData file."""
    click.echo(str(AugmentedData.load(path)))


if __name__ == "__main__":
    main()
