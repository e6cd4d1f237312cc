"""`sluice infer --posterior`: draws from p(θ | x_o) for observed data with a trained model (or the exact
likelihood), and their files in OUT:

- posterior.csv: the draws [S, p], one column per parameter;
- posterior.json: per parameter the mean, the standard deviation (n − 1 normalised) and the central credible
  intervals [q_(1−ℓ)/2, q_(1+ℓ)/2] at each level ℓ (numpy's linear quantiles of the draws), the sampler's ESS and
  R-hat, its warnings, and the checks below;
- corner.png: the corner plot of the draws;
- posterior.html: one self-contained page (inline CSS, figures as base64 PNG) with the summary table, the corner
  plot, the sampler diagnostics (a banner when the chains have not mixed), a posterior predictive check when the
  simulator is known and, with ``calibration``, SBC ranks and TARP coverage over data sets simulated from the prior.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import platform
import time
import warnings
from datetime import datetime, timezone

import numpy as np
import torch

from ..inference.diagnostics import mean_of_events, posterior_predictive_check, sbc_ranks, sbc_uniformity, tarp
from ..inference.posterior import R_HAT_LIMIT, sample_posterior
from ..plots import corner_plot, plot_predictive_check, plot_sbc_ranks, plot_tarp
from ..simulators.priors import BoxUniform, sample_prior
from .report import CSS, finite_json, html_figure, html_page, html_section, html_table, html_text
from .scan_io import read_observed
from .specs import load_model, load_simulator, parse_prior, parse_vector

__all__ = ["OUTPUT_FILES", "infer_posterior", "summarise", "render_html"]

OUTPUT_FILES = ("posterior.csv", "posterior.json", "corner.png", "posterior.html")
PREDICTIVE_DRAWS = 1000  # posterior draws, evenly spaced among all, at which the predictive check simulates data
# SBC: 99 posterior draws per data set give 100 rank values 0…99, which SBC_BINS groups split evenly (20 each)
CALIBRATION_DRAWS = 99
SBC_BINS = 5
NOT_MIXED = "have not mixed"  # in the warning of sluice.inference.posterior.mcmc_posterior
WARNING_CSS = """
.warning { border-left: 4px solid #c0392b; background: #fdecea; padding: 8px 12px; font-weight: 600; }
"""


def infer_posterior(options: dict, report=print) -> list[str]:
    """Carry out `sluice infer --posterior` for the command's ``options`` (model, observed, out, levels, truth,
    simulator, prior, samples, seed, calibration, overwrite); progress lines go to ``report``. Returns the lines
    to print: the summary per parameter and the files written."""
    from .config import require

    require(options, "model", "observed", "out")
    levels = parse_vector(options["levels"])
    if not all(0 < level < 1 for level in levels):
        raise ValueError(f"--levels must lie strictly between 0 and 1, got {options['levels']!r}")
    out = options["out"]
    for name in OUTPUT_FILES:  # refuse before spending compute
        if not options["overwrite"] and os.path.exists(os.path.join(out, name)):
            raise FileExistsError(f"{os.path.join(out, name)} exists; pass --overwrite to replace it")
    model = load_model(options["model"])
    simulator = load_simulator(options["simulator"]) if options["simulator"] else getattr(model, "simulator", None)
    names = _parameter_names(model, simulator)
    prior = _prior(options["prior"], simulator, model, len(names))
    x = read_observed(options["observed"])
    truth = parse_vector(options["truth"]) if options["truth"] else None
    if truth is not None and len(truth) != len(names):
        raise ValueError(f"--truth gives {len(truth)} values for the model's {len(names)} parameters")
    seed, calibration = options["seed"], options["calibration"]

    started = time.perf_counter()
    posterior, sampler_warnings = _draw(model, x, prior, options["samples"], seed, options["model"])
    timings = {"sampling": time.perf_counter() - started}
    report(f"drew {len(posterior.samples)} posterior samples ({posterior.method}) in {timings['sampling']:.1f} s")
    document = {"model": options["model"], "observed": options["observed"], "n_events": len(x),
                "simulator": None if simulator is None else simulator.name, "prior": describe_prior(prior),
                "seed": seed, **summarise(posterior, names, levels, sampler_warnings), "warnings": sampler_warnings}
    figures = {}
    if simulator is not None:
        started = time.perf_counter()
        check = _predictive_check(simulator, posterior.samples, x, seed)
        timings["predictive check"] = time.perf_counter() - started
        if check is not None:
            document["predictive_check"] = check[0]
            figures["predictive"] = check[1]
    if calibration:
        if simulator is None:
            raise ValueError("--calibration simulates data sets: give --simulator")
        if not callable(getattr(model, "sample", None)):
            report(f"warning: --calibration {calibration} runs {calibration} MCMC samplers of {CALIBRATION_DRAWS} "
                   "draws each (a posterior estimator such as NPE samples in an instant); this may take long")
        started = time.perf_counter()
        document["calibration"], figures["sbc"], figures["tarp"] = _calibrate(model, simulator, prior, len(x),
                                                                              calibration, seed, names)
        timings["calibration"] = time.perf_counter() - started
    document["seconds"] = {key: round(value, 2) for key, value in timings.items()}

    os.makedirs(out, exist_ok=True)
    _write_draws(posterior.samples, names, os.path.join(out, "posterior.csv"))
    with open(os.path.join(out, "posterior.json"), "w") as file:
        json.dump(finite_json(document), file, indent=2, allow_nan=False)
    corner_plot(posterior.samples, truth=truth, names=names, path=os.path.join(out, "corner.png"))
    with open(os.path.join(out, "corner.png"), "rb") as file:
        figures["corner"] = file.read()
    with open(os.path.join(out, "posterior.html"), "w", encoding="utf-8") as file:
        file.write(render_html(document, figures, truth, _command(options)))
    lines = [_summary_line(name, document["summary"][name]) for name in names]
    if document["mixed"] is False:
        lines.append("warning: the chains have not mixed (see posterior.html)")
    return lines + [f"wrote {', '.join(os.path.join(out, name) for name in OUTPUT_FILES)}"]


def _parameter_names(model, simulator) -> list[str]:
    names = list(getattr(model, "parameter_names_", ()) or ())
    if simulator is not None and names and len(simulator.parameter_names) != len(names):
        raise ValueError(f"the model has {len(names)} parameters and simulator {simulator.name} has "
                         f"{len(simulator.parameter_names)}")
    if not names and simulator is not None:
        names = list(simulator.parameter_names)
    if not names:
        raise ValueError("the model does not say how many parameters it has")
    return names


def _prior(spec: str | None, simulator, model, p: int):
    """--prior if given, else the simulator's default prior, else a posterior estimator's own (NPE's prior_)."""
    if spec is not None:
        prior = parse_prior(spec, simulator)
    elif simulator is not None:
        prior = parse_prior(None, simulator)
    elif getattr(model, "prior_", None) is not None:
        prior = model.prior_
    else:
        raise ValueError("--posterior needs a prior: give --simulator NAME (its default prior) or --prior box:LOW:HIGH")
    dimension = sample_prior(prior, 1, 0).shape[-1]
    if dimension != p:
        raise ValueError(f"the prior has {dimension} parameters and the model {p}")
    return prior


def describe_prior(prior) -> str:
    if isinstance(prior, BoxUniform):
        return f"uniform on the box [{', '.join(f'{v:g}' for v in prior.low.tolist())}] – " \
               f"[{', '.join(f'{v:g}' for v in prior.high.tolist())}]"
    return type(prior).__name__


def _draw(model, x, prior, n_samples: int, seed: int, label: str):
    """``sample_posterior``'s draws with the warnings it gave (the sampler's "not mixed" among them) as text."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            posterior = sample_posterior(model, x, prior, n_samples, seed=seed)
        except RuntimeError as error:  # torch: the events do not fit the model's input
            raise ValueError(f"{label} cannot evaluate the observed events of shape {list(x.shape)}: "
                             f"{str(error).splitlines()[0]}") from None
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    return posterior, list(dict.fromkeys(messages))


def summarise(posterior, names, levels, sampler_warnings=()) -> dict:
    """The numbers of posterior.json from the draws [S, p] (in float64): per parameter the mean, the standard
    deviation with n − 1 and the central intervals per level; and the sampler's ESS, R-hat (None for a posterior
    estimator's direct draws) and whether its chains mixed: MCMC warns exactly when some R-hat exceeds 1.01 or
    some ESS falls short of the draws asked for, so ``mixed`` is False when ``sampler_warnings`` hold that warning."""
    draws = posterior.samples.double().numpy()
    summary = {}
    for j, name in enumerate(names):
        column = draws[:, j]
        intervals = {f"{level:g}": [float(np.quantile(column, (1 - level) / 2)),
                                    float(np.quantile(column, (1 + level) / 2))] for level in levels}
        summary[name] = {"mean": float(column.mean()), "std": float(column.std(ddof=1)), "intervals": intervals}

    def per_parameter(values):
        return None if values is None else dict(zip(names, (float(v) for v in values), strict=True))

    mcmc = posterior.r_hat is not None
    return {"parameters": list(names), "method": posterior.method, "n_samples": len(draws), "summary": summary,
            "ess": per_parameter(posterior.ess), "r_hat": per_parameter(posterior.r_hat),
            "r_hat_limit": R_HAT_LIMIT if mcmc else None, "acceptance": posterior.acceptance,
            "chains": None if posterior.chains is None else int(posterior.chains.shape[0]),
            "thinning": getattr(posterior, "thinning", None), "steps": getattr(posterior, "steps", None),
            "mixed": None if not mcmc else not any(NOT_MIXED in message for message in sampler_warnings)}


def _predictive_check(simulator, samples, x, seed: int):
    """The posterior predictive check of the mean event at up to PREDICTIVE_DRAWS draws: its JSON entry and
    figure (PNG bytes), or None when the simulator cannot simulate."""
    picked = samples[torch.linspace(0, len(samples) - 1, min(len(samples), PREDICTIVE_DRAWS)).long()]
    try:
        check = posterior_predictive_check(simulator, picked, x, statistic=mean_of_events, seed=seed)
    except NotImplementedError:
        return None
    columns = [f"mean x_{j}" for j in range(check.observed.numel())]
    entry = {"statistic": "the mean observed event, per component", "draws": len(picked), "p_value": check.p_value,
             "components": columns, "observed": check.observed.tolist(), "percentiles": check.percentiles.tolist(),
             "p_values": check.p_values.tolist()}
    return entry, _png(plot_predictive_check(check, names=columns))


class _Remembered:
    """A ``posterior_sampler(x, n, seed)`` that keeps its draws: ``sbc_ranks`` and ``tarp`` simulate the same data
    sets from the same seed, so the second pass reuses the first one's draws (checked against its x) instead of
    sampling again. Counts the data sets whose sampler warned that its chains had not mixed."""

    def __init__(self, model, prior):
        self.model, self.prior, self.kept, self.not_mixed = model, prior, {}, 0

    def __call__(self, x, n, seed):
        kept = self.kept.get((seed, n))
        if kept is not None and torch.equal(kept[0], x):
            return kept[1]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            draws = sample_posterior(self.model, x, self.prior, n, seed=seed).samples
        self.not_mixed += any(NOT_MIXED in str(w.message) for w in caught)
        self.kept[(seed, n)] = (x.clone(), draws)
        return draws


def _calibrate(model, simulator, prior, n_events: int, n_sets: int, seed: int, names):
    """SBC ranks and TARP over ``n_sets`` data sets (θ* ~ prior, ``n_events`` events at θ*), CALIBRATION_DRAWS
    posterior draws each: the JSON entry and the two figures (PNG bytes)."""
    sampler = _Remembered(model, prior)
    ranks = sbc_ranks(sampler, simulator, prior, n_events, n_sets, CALIBRATION_DRAWS, seed=seed)
    p_values = sbc_uniformity(ranks, CALIBRATION_DRAWS, SBC_BINS)
    coverage = tarp(sampler, simulator, prior, n_events, n_sets, CALIBRATION_DRAWS, seed=seed)
    entry = {"data_sets": n_sets, "posterior_draws": CALIBRATION_DRAWS, "sbc_bins": SBC_BINS,
             "sbc_p_values": dict(zip(names, p_values.tolist(), strict=True)),
             "tarp": {"p_value": coverage.p_value, "max_deviation": coverage.max_deviation, "area": coverage.area},
             "not_mixed": sampler.not_mixed}
    return (entry, _png(plot_sbc_ranks(ranks, CALIBRATION_DRAWS, bins=SBC_BINS, names=names)),
            _png(plot_tarp(coverage)))


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def _write_draws(samples: torch.Tensor, names, path: str) -> None:
    """One row per draw; float32 values written as the shortest decimals that read back to the same float64."""
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(names)
        writer.writerows(samples.double().tolist())


def _summary_line(name: str, entry: dict) -> str:
    intervals = ", ".join(f"{float(level):.0%} [{low:.4g}, {high:.4g}]"
                          for level, (low, high) in entry["intervals"].items())
    return f"{name} = {entry['mean']:.4g} ± {entry['std']:.4g}; {intervals}"


def _command(options: dict) -> str:
    parts = ["sluice infer", options["model"], "--posterior", "--observed", options["observed"], "--out",
             options["out"], "--samples", str(options["samples"]), "--seed", str(options["seed"])]
    for name in ("simulator", "prior", "truth", "calibration"):
        if options[name] is not None:
            parts += [f"--{name}", str(options[name])]
    if options["levels"] != "0.68,0.95":
        parts += ["--levels", options["levels"]]
    return " ".join(parts)


def _number(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def render_html(document: dict, figures: dict, truth, command: str) -> str:
    """posterior.html from the posterior.json ``document`` and ``figures`` (name → PNG bytes: corner, and where
    made predictive, sbc, tarp)."""
    names, summary = document["parameters"], document["summary"]
    levels = list(next(iter(summary.values()))["intervals"])
    mcmc = document["r_hat"] is not None
    headers = ["parameter", "mean", "std"] + [f"{float(level):.0%} interval" for level in levels]
    headers += (["ESS", "R-hat"] if mcmc else []) + (["truth"] if truth is not None else [])
    rows = []
    for j, name in enumerate(names):
        entry = summary[name]
        row = [name, _number(entry["mean"]), _number(entry["std"])]
        row += [f"[{_number(low)}, {_number(high)}]" for low, high in entry["intervals"].values()]
        row += [_number(document["ess"][name], 5), f"{document['r_hat'][name]:.3f}"] if mcmc else []
        rows.append(row + ([_number(truth[j])] if truth is not None else []))
    facts = "".join(f"<div><b>{html.escape(k)}</b>: {html.escape(str(v))}</div>" for k, v in (
        ("model", document["model"]), ("observed", f"{document['observed']} ({document['n_events']} events)"),
        ("prior", document["prior"]), ("simulator", document["simulator"] or "not given"),
        ("sampler", document["method"]), ("draws", document["n_samples"]), ("seed", document["seed"])))
    sections = [
        html_section("Summary", html_table(headers, rows),
                     html_text("Mean and standard deviation of the draws; central credible intervals between the "
                               "quantiles (1 − level)/2 and (1 + level)/2. posterior.csv holds the draws, "
                               "posterior.json these numbers.", "note")),
        html_section("Corner plot", html_figure(figures["corner"], "The posterior draws: each parameter's histogram "
                                                "on the diagonal, each pair's below it" +
                                                ("; red: the truth given." if truth is not None else "."))),
        html_section("Sampler diagnostics", *_diagnostics(document)),
    ]
    if "predictive_check" in document:
        check = document["predictive_check"]
        table = html_table(("statistic", "observed", "percentile", "p-value"),
                           [[c, _number(o), f"{q:.3f}", f"{p:.3g}"] for c, o, q, p in
                            zip(check["components"], check["observed"], check["percentiles"], check["p_values"],
                                strict=True)])
        sections.append(html_section(
            "Posterior predictive check",
            html_figure(figures["predictive"], f"The mean event of {document['n_events']} events simulated at each "
                                               f"of {check['draws']} posterior draws (histogram) and of the observed "
                                               "events (red)."),
            table, html_text(f"Summary p-value (Mahalanobis distance of all components): {check['p_value']:.3g}. "
                             "Small: the model rarely makes data like the observed. Checked on the data the "
                             "posterior was conditioned on, the check is conservative: it finds a model that cannot "
                             "make such data, not a posterior too wide or too narrow (see Calibration).", "note")))
    if "calibration" in document:
        calibration = document["calibration"]
        sbc = ", ".join(f"{name} {p:.3g}" for name, p in calibration["sbc_p_values"].items())
        tarp_entry = calibration["tarp"]
        mixed = (f" The chains of {calibration['not_mixed']} data sets had not mixed."
                 if calibration["not_mixed"] else "")
        sections.append(html_section(
            "Calibration",
            html_text(f"{calibration['data_sets']} data sets θ* ~ prior, x ~ p(x|θ*) with {document['n_events']} "
                      f"events each, {calibration['posterior_draws']} posterior draws per data set.{mixed}"),
            html_figure(figures["sbc"], "SBC: the rank of θ* among the posterior draws, per parameter; uniform "
                                        "(inside the grey band) for a calibrated posterior."),
            html_text(f"SBC χ² p-values (uniform ranks, {calibration['sbc_bins']} bins): {sbc}."),
            html_figure(figures["tarp"], "TARP: expected coverage of random balls against their credibility; the "
                                         "diagonal for a calibrated posterior."),
            html_text(f"TARP p-value (Kolmogorov–Smirnov): {tarp_entry['p_value']:.3g}; largest gap from the "
                      f"diagonal {tarp_entry['max_deviation']:.3f}."),
            html_text("Small p-values: the posterior is too narrow, too wide or biased somewhere over the prior.",
                      "note")))
    from .. import __version__

    sections.append(html_section(
        "How this was made", f"<pre>{html.escape(command)}</pre>",
        html_text(f"sluice {__version__}, Python {platform.python_version()}, {platform.machine()}, written "
                  f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; seconds: "
                  f"{', '.join(f'{k} {v:.1f}' for k, v in document['seconds'].items())}.", "note")))
    banner = html_text(_banner(document), "warning") if document["mixed"] is False else ""
    body = "".join([f"<h1>sluice posterior: {html.escape(document['model'])}</h1>", banner,
                    html_text("Draws from the posterior p(θ | x) of the observed events under the prior, from "
                              "sluice.inference.sample_posterior.", "lead"),
                    f"<div class=\"facts\">{facts}</div>", *sections])
    return html_page(f"sluice posterior: {document['model']}", body, CSS + WARNING_CSS)


def _banner(document: dict) -> str:
    worst, fewest = max(document["r_hat"].values()), min(document["ess"].values())
    return (f"NOT MIXED: the sampler's chains have not converged (largest R-hat {worst:.3f}, limit "
            f"{document['r_hat_limit']}; smallest ESS {_number(fewest, 5)} for {document['n_samples']} draws). These "
            "draws may not represent the posterior: do not trust the numbers below.")


def _diagnostics(document: dict) -> list[str]:
    parts = []
    if document["r_hat"] is None:
        parts.append(html_text(f"{document['method']}: independent draws from the estimator's own posterior, no "
                               "chains to diagnose."))
    else:
        rows = [[name, _number(document["ess"][name], 5), f"{document['r_hat'][name]:.4f}"]
                for name in document["parameters"]]
        parts += [html_table(("parameter", "bulk ESS", "split R-hat"), rows),
                  html_text(f"{document['chains']} Metropolis–Hastings chains, {document['steps']} steps after "
                            f"warm-up, every {document['thinning']}th kept; acceptance "
                            f"{document['acceptance']:.2f}. Mixed means every R-hat ≤ {document['r_hat_limit']} "
                            f"and every ESS near the {document['n_samples']} draws: "
                            f"{'yes' if document['mixed'] else 'NO'}.",
                            "finding" if document["mixed"] else "warning")]
    parts += [html_text(f"Warning: {message}", "warning") for message in document["warnings"]]
    return parts
