"""The `sluice` command line: demo, simulate, train, infer, check, info and benchmark."""

from __future__ import annotations

import inspect
import os
import sys
from functools import wraps

import click
from click.core import ParameterSource

from ..data.augmented import AugmentedData
from ..data.simulation import MiningError, WorkerCrashError
from ..data.simulation import simulate as simulate_data
from ..estimators.training import NonFiniteLossError
from ..mining.checks import check_simulator
from .config import apply_config, require
from .specs import estimator_class, load_model, load_simulator, parse_prior, parse_vector, training_prior

# OSError covers missing, unreadable and unwritable files and folders
USER_ERRORS = (ValueError, TypeError, OSError, ImportError, AttributeError, KeyError, MiningError, NonFiniteLossError,
               WorkerCrashError)
CONFIG_HELP = "TOML file of option values (flags override it); see `sluice COMMAND --help`."


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


class OneLineGroup(click.Group):
    """A click group whose usage errors (unknown option, bad value, missing argument) are one line on stderr,
    like every other user error, with exit status 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as error:
            hint = ""
            if isinstance(error, click.UsageError) and error.ctx is not None:
                hint = f" (see '{error.ctx.command_path} --help')"
            message = " ".join(error.format_message().split())
            click.echo(f"sluice: error: {message}{hint}", err=True)
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sluice-sbi")
def main():
    """sluice: simulation-based inference with the joint likelihood ratio and joint score.

    Start with `sluice demo --quick`. Every command has --help; a mistake gives one line and exit status 2.
    """


@main.command()
@click.option("--quick", is_flag=True, help="Budgets of 200 and 1,000 simulations, one seed (about a minute).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="sluice-demo", show_default=True,
              help="Folder for report.html, the PNG figures and summary.csv/json; a new, empty or earlier demo folder.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True, help="Processes training at once.")
@click.option("--budgets", default=None, hidden=True, help="Training simulations, comma-separated (tests).")
@click.option("--seeds", type=click.IntRange(min=1), default=None, hidden=True, help="Seeds per method and budget.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, hidden=True, help="Fixed epochs per fit (tests).")
@one_line_errors
def demo(quick, out_dir, workers, budgets, seeds, epochs):
    """Simulate the Galton board, train black-box (NDE, CARL) and augmented (SCANDAL, ALICES, RASCAL) estimators
    at small to large budgets, infer θ from 100 observed events, and compare all with the exact likelihood.

    Writes OUT/report.html (self-contained: open it in any browser) with the PNG figures and summary.csv and
    summary.json beside it, and prints a summary table. The default (budgets 200, 1,000 and 10,000, three seeds)
    takes a few minutes on two cores; --quick about a minute. OUT is refused if it holds files the demo did not
    write; in an earlier demo's folder only the demo's own files are replaced.
    """
    from dataclasses import replace

    from rich.console import Console

    from .demo import DEFAULT, QUICK, run_demo
    from .report import summary_table

    settings = replace(QUICK if quick else DEFAULT, workers=workers)
    if budgets is not None:
        settings = replace(settings, budgets=tuple(sorted({int(v) for v in parse_vector(budgets)})))
    if seeds is not None:
        settings = replace(settings, seeds=seeds)
    settings = replace(settings, epochs=epochs)
    result = run_demo(out_dir, settings, report=lambda line: click.echo(line, err=True))
    console = Console(width=None if sys.stdout.isatty() else 100)
    console.print(summary_table(result))
    click.echo(f"report: {os.path.join(out_dir, 'report.html')} ({result.timings['total']:.0f} s in all)")


@main.command()
@click.argument("simulator", required=False)
@click.option("--n", "n", type=int, default=None, help="Number of simulated runs (required).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="HDF5 file to write (required).")
@click.option("--prior", default=None, help="box:LOW:HIGH or point:THETA (default: the simulator's own).")
@click.option("--reference", default=None, help="Fixed θ1, comma-separated (default: drawn from the prior).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=int, default=None, help="Runs per batch (default: the simulator's).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Run the batches in this many local processes (default: in this one).")
@click.option("--scheduler", default=None, help="Run the batches on the Dask cluster at this address (tcp://HOST:8786; "
              "needs pip install 'sluice-sbi[dask]').")
@click.option("--overwrite", is_flag=True, help="Replace FILE, or discard an unfinished run writing it; start afresh.")
@click.option("--config", type=click.Path(dir_okay=False), default=None, help=CONFIG_HELP)
@click.pass_context
@one_line_errors
def simulate(ctx, **options):
    """Simulate N runs of SIMULATOR (a built-in name or module:Class) with joint ratio and scores into FILE.

    Batches are written to FILE as they finish (each committed atomically), so the same command run again after
    an interruption (Ctrl-C, kill -9, a lost node) keeps the finished batches and completes FILE, identical to an
    uninterrupted run; run on a finished FILE it does nothing. Other settings on an existing FILE are refused unless
    --overwrite is given. --workers K and --scheduler ADDR give the same data as one process.

    A --config TOML file may give any option (simulator = "galton", n = 10000, out = "galton.h5", …), flat or
    in a [simulate] table; flags override it.
    """
    options = apply_config(ctx, options, options.pop("config"))
    require(options, "simulator", "n", "out")
    simulator, n, out, prior, reference = (options[k] for k in ("simulator", "n", "out", "prior", "reference"))
    sim = load_simulator(simulator)
    prior_distribution = parse_prior(prior, sim)
    data = simulate_data(sim, prior_distribution, n, reference=None if reference is None else parse_vector(reference),
                         seed=options["seed"], batch_size=options["batch_size"], path=out,
                         overwrite=options["overwrite"], workers=options["workers"], scheduler=options["scheduler"])
    click.echo(f"wrote {len(data)} rows to {out}: {data}")


IN_MEMORY_BYTES = 2 << 30  # `sluice train` loads files up to 2 GiB; larger ones are read in shuffled blocks


@main.command()
@click.argument("method", required=False)
@click.option("--data", type=click.Path(dir_okay=False), default=None, help="AugmentedData HDF5 file (required).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Model file to write (required).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Maximum epochs (default: ~6,000 steps).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Rows per step (default: the method's).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--validation-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.2, show_default=True,
              help="Rows held out for early stopping (0: none).")
@click.option("--alpha", type=click.FloatRange(min=0), default=None, help="Weight of the score term.")
@click.option("--hidden", default=None, help="Hidden layer widths, comma-separated (default 64,64).")
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--device", default=None, help="Train on this device, e.g. cuda (default: cpu).")
@click.option("--prior", default=None, help="Posterior estimators (NPE, AugmentedNPE): the prior the data's θ were "
              "drawn from, box:LOW:HIGH or flat [default: the data's simulator's own, if the file's record matches].")
@click.option("--overwrite", is_flag=True, help="Replace MODEL if it exists.")
@click.option("--config", type=click.Path(dir_okay=False), default=None, help=CONFIG_HELP)
@click.pass_context
@one_line_errors
def train(ctx, **options):
    """Train METHOD (CARL, ROLR, ALICE, CASCAL, RASCAL, ALICES, NDE, SCANDAL, SALLY, SALLINO) on --data and save
    it to --out, for `sluice infer` or `sluice.load`.

    A --config TOML file may give any option (method = "ALICES", data = "galton.h5", epochs = 50, …), flat or in a
    [train] table; flags override it.
    """
    import time

    options = apply_config(ctx, options, options.pop("config"))
    require(options, "method", "data", "out")
    cls = estimator_class(options["method"])
    hyperparameters = {name: options[name] for name in ("alpha", "learning_rate", "device")
                       if options[name] is not None}
    if options["hidden"] is not None:
        widths = parse_vector(options["hidden"])
        if any(w < 1 or w != int(w) for w in widths):
            raise ValueError(f"--hidden takes positive whole numbers, got {options['hidden']!r}")
        hyperparameters["hidden"] = tuple(int(w) for w in widths)
    known = cls().get_params()
    for name in hyperparameters:
        if name not in known:
            raise ValueError(f"{cls.__name__} has no hyperparameter '{name}'")
    out = options["out"]
    if not options["overwrite"] and os.path.exists(out):  # refuse before spending compute
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    data = AugmentedData.open(options["data"])  # read lazily: a file larger than IN_MEMORY_BYTES trains from disk
    recorded = data.settings  # how the file was simulated (its prior included), before loading drops it
    if data.nbytes <= IN_MEMORY_BYTES:
        data = data.load()
    fit_options = {}
    if "prior" in inspect.signature(cls.fit).parameters:
        fit_options["prior"] = training_prior(cls, data.simulator_name, recorded, options["prior"])
    elif options["prior"] is not None:
        raise ValueError(f"{cls.__name__} does not take --prior: only posterior estimators (NPE, AugmentedNPE) "
                         "learn the prior")
    started = time.perf_counter()
    estimator = cls(**hyperparameters).fit(data, epochs=options["epochs"], batch_size=options["batch_size"],
                                           validation_fraction=options["validation_fraction"], seed=options["seed"],
                                           **fit_options)
    seconds = time.perf_counter() - started
    estimator.save(out, overwrite=options["overwrite"])
    history = estimator.history_
    best = f"; best held-out loss {min(history.validation_loss):.4g}" if history.validation_loss else ""
    click.echo(f"trained {cls.__name__} on {len(data)} rows for {len(history.train_loss)} epochs in {seconds:.1f} s"
               f"{best}; wrote {out}")


POSTERIOR_OPTIONS = ("simulator", "prior", "samples", "seed", "calibration")


@main.command()
@click.argument("model", required=False)
@click.option("--observed", type=click.Path(dir_okay=False), default=None,
              help="Observed events (required): .h5 (AugmentedData, its x), .npy, .csv or .txt (one event per row).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder for scan.json, scan.csv and scan.png, or with --posterior for posterior.csv, "
                   "posterior.json, corner.png and posterior.html (required).")
@click.option("--grid", default=None, help="LOW:HIGH:POINTS, vectors comma-separated (required for a scan), e.g. "
              "-1:-0.4:121 or -1,-1:1,1:41.")
@click.option("--levels", default="0.68,0.95", show_default=True,
              help="Confidence levels (with --posterior: central credible intervals), comma-separated.")
@click.option("--truth", default=None, help="A θ to mark in the plot, comma-separated (optional).")
@click.option("--posterior", is_flag=True, help="Draw from the posterior p(θ|x) instead of scanning q(θ), and write "
              "an HTML report with the summary, a corner plot, sampler diagnostics and checks.")
@click.option("--simulator", default=None, help="--posterior: the simulator of the model (built-in name or "
              "module:Class): its default prior, predictive check and calibration [default: exact:SIMULATOR's].")
@click.option("--prior", default=None, help="--posterior: box:LOW:HIGH [default: the simulator's, else the "
              "posterior estimator's own].")
@click.option("--samples", type=click.IntRange(min=2), default=10_000, show_default=True,
              help="--posterior: posterior draws.")
@click.option("--seed", type=int, default=0, show_default=True, help="--posterior: seed of the draws and checks.")
@click.option("--calibration", type=click.IntRange(min=2), default=None, help="--posterior: SBC and TARP over N "
              "data sets simulated from the prior, one posterior each (fast for NPE, slow for MCMC samplers).")
@click.option("--overwrite", is_flag=True, help="Replace the files of this mode in OUT if they exist.")
@click.option("--config", type=click.Path(dir_okay=False), default=None, help=CONFIG_HELP)
@click.pass_context
@one_line_errors
def infer(ctx, **options):
    """Scan q(θ) = −2 Δ log L of MODEL (a file from `sluice train`, or exact:SIMULATOR) over a θ grid for the
    observed events; write the MLE and Wilks intervals (scan.json), q on the grid (scan.csv) and a plot.

    With --posterior, draw from p(θ|x) instead (an NPE's own sampler, else MCMC on the prior; sluice.inference.
    sample_posterior) and write posterior.csv (the draws), posterior.json (mean, std, central intervals, ESS,
    R-hat, warnings), corner.png and posterior.html, a self-contained report with a posterior predictive check
    when the simulator is known, and SBC and TARP with --calibration N.

    A --config TOML file may give any option (model = "alices.pt", grid = "-1:-0.4:121", levels = [0.68, 0.95],
    …), flat or in an [infer] table; flags override it.
    """
    options = apply_config(ctx, options, options.pop("config"))
    # an option of the other mode given as a flag is a mistake; from a config file shared by both modes it is not
    given = {name for name in ctx.params if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
    stray = sorted(given & ({"grid"} if options["posterior"] else set(POSTERIOR_OPTIONS)))
    if stray:
        raise ValueError(f"--{stray[0]} is for {'a scan, not --posterior' if options['posterior'] else '--posterior'}")
    if options["posterior"]:
        from .posterior_report import infer_posterior

        for line in infer_posterior(options, report=lambda line: click.echo(line, err=True)):
            click.echo(line)
        return
    from ..inference import scan
    from .scan_io import OUTPUT_FILES, parse_grid, read_observed, write_scan

    require(options, "model", "observed", "out", "grid")
    levels = parse_vector(options["levels"])
    if not all(0 < level < 1 for level in levels):
        raise ValueError(f"--levels must lie strictly between 0 and 1, got {options['levels']!r}")
    out = options["out"]
    for name in OUTPUT_FILES:
        if not options["overwrite"] and os.path.exists(os.path.join(out, name)):
            raise FileExistsError(f"{os.path.join(out, name)} exists; pass --overwrite to replace it")
    model = load_model(options["model"])
    grid = parse_grid(options["grid"], len(model.parameter_names_))
    x = read_observed(options["observed"])
    try:
        result = scan(model, x, grid)
    except RuntimeError as error:  # torch: the events do not fit the model's input
        raise ValueError(f"{options['model']} cannot evaluate the observed events of shape {list(x.shape)}: "
                         f"{str(error).splitlines()[0]}") from None
    truth = parse_vector(options["truth"]) if options["truth"] else None
    summary = write_scan(result, out, levels, os.path.basename(options["model"]), truth)
    mle = ", ".join(f"{name} = {value:.4g}" for name, value in summary["mle"].items())
    click.echo(f"MLE {mle} from {len(x)} events")
    for level, region in summary["regions"].items():
        if "interval" in region:
            low, high = ("edge" if v is None else f"{v:.4g}" for v in region["interval"])
            click.echo(f"{float(level):.0%} interval: [{low}, {high}]")
    click.echo(f"wrote {', '.join(os.path.join(out, n) for n in OUTPUT_FILES if os.path.exists(os.path.join(out, n)))}")


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
@click.argument("name", type=click.Choice(["galton", "mixture", "suite", "sbibm"]))
@click.option("--budgets", default=None, help="Training simulations, comma-separated [default: 200,1000,10000; "
              "suite: 100,1000,10000; sbibm: 1000,10000].")
@click.option("--seeds", type=click.IntRange(min=1), default=None, help="Seeds per method and budget [default: 5; "
              "sbibm: 3].")
@click.option("--methods", default=None, help="Comma-separated estimator names (default: all ten; suite: also Auto, "
              "and sbi's NRE and NLE where sbi is installed; sbibm: NPE, AugmentedNPE, SCANDAL, or NDE, ALICES, "
              "exact).")
@click.option("--tasks", default=None, help="suite and sbibm only: comma-separated task names (default: all).")
@click.option("--observations", default=None, help="sbibm only: observation numbers, e.g. 1-10 or 1,2,3 [default: "
              "1-10].")
@click.option("--samples", type=click.IntRange(min=10, max=10_000), default=None,
              help="sbibm only: posterior draws per observation, scored against as many reference draws [default: "
                   "10000].")
@click.option("--wheel", default=None, help="sbibm only: the sbibm 1.1.0 wheel with the reference posteriors "
              "[default: $SLUICE_SBIBM_WHEEL, else .venv/sbibm/sbibm-1.1.0-py2.py3-none-any.whl].")
@click.option("--out", "out_dir", default="benchmark-results", show_default=True, help="Folder for CSV, table, plot.")
@click.option("--workers", type=int, default=2, show_default=True, help="Processes running fits at once.")
@one_line_errors
def benchmark(name, **options):
    """Sample efficiency of every method against the exact likelihood (CSV, Markdown table, PNG plot).

    NAME: galton or mixture (their published settings), suite (every task of docs/tasks.md, scored by the
    normalised MSE of log r̂), or sbibm (sbibm's tasks, C2ST of posterior draws against its reference posteriors,
    beside the published NPE, NLE and NRE; docs/sbibm.md). Rows already in OUT/NAME.csv are kept and skipped, so
    an interrupted run resumes.
    """
    from .benchmark_command import run_benchmark

    click.echo(run_benchmark(name, options, report=lambda line: click.echo(line, err=True)))


@main.command()
@click.argument("path", type=click.Path(dir_okay=False))
@one_line_errors
def info(path):
    """Describe an AugmentedData file (from its header: the rows are not read)."""
    click.echo(str(AugmentedData.open(path)))


if __name__ == "__main__":
    main()
