"""The outputs of `sluice demo`: the summary rows (CSV, JSON, a rich table on the terminal) and report.html, one
self-contained page (inline CSS, figures embedded as base64 PNG data URIs, no external resources)."""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import os
import platform
import statistics
from datetime import datetime, timezone

__all__ = ["SECTIONS", "summary_rows", "write_summary", "summary_table", "render_report", "write_report", "CSS",
           "html_table", "html_figure", "html_section", "html_text", "html_page"]

SECTIONS = ("Summary", "Sample efficiency", "Learned against exact log r(x)", "Inference on the observed events",
            "Fisher information", "Timings", "How this was made")
COLUMNS = ("method", "kind", "n", "seeds", "mse_median", "mse_min", "mse_max", "mle", "low68", "high68", "low95",
           "high95", "fisher_at_truth", "fit_seconds", "scan_seconds")

CSS = """
body { font: 15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222; margin: 0;
       background: #f6f7f9; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; }
h1 { font-size: 26px; margin: 8px 0 4px; } h2 { font-size: 20px; margin-top: 36px;
     border-bottom: 2px solid #e3e6ea; padding-bottom: 4px; }
p.lead { color: #444; font-size: 16px; } .facts { display: flex; flex-wrap: wrap; gap: 8px 24px;
     background: #f1f4f8; padding: 10px 16px; border-radius: 6px; font-size: 14px; }
figure { margin: 16px 0; } figure img { max-width: 100%; border: 1px solid #e3e6ea; }
figcaption { font-size: 13px; color: #555; }
table { border-collapse: collapse; font-size: 13px; margin: 12px 0; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e3e6ea; text-align: right; }
th { background: #f1f4f8; } td:first-child, th:first-child { text-align: left; }
tr.exact td { font-weight: 600; background: #fbfbf2; } code, pre { background: #f1f4f8; border-radius: 4px; }
pre { padding: 8px 12px; overflow-x: auto; } .note { color: #666; font-size: 13px; }
.finding { border-left: 4px solid #2b7bb9; background: #eef5fb; padding: 8px 12px; }
"""


def _number(value, digits: int = 3) -> str:
    return "…" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _interval(low, high) -> str:
    return f"[{_number(low)}, {_number(high)}]"


def summary_rows(result) -> list[dict]:
    """One row per (method, budget), the seeds aggregated (median, min, max MSE; median fit time); the inference
    columns come from the seed-0 fit. The exact likelihood comes first."""
    exact = result.exact
    rows = [dict(method="exact", kind="exact", n=None, seeds=None, mse_median=0.0, mse_min=0.0, mse_max=0.0,
                 mle=exact.mle, low68=exact.intervals[0.68][0], high68=exact.intervals[0.68][1],
                 low95=exact.intervals[0.95][0], high95=exact.intervals[0.95][1],
                 fisher_at_truth=exact.fisher_at_truth, fit_seconds=None, scan_seconds=exact.seconds)]
    for fit in result.inference_fits():
        group = [f for f in result.fits if f.method == fit.method and f.n == fit.n]
        errors, inference = [f.error for f in group], fit.inference
        rows.append(dict(method=fit.method, kind="black box" if fit.black_box else "augmented", n=fit.n,
                         seeds=len(group), mse_median=statistics.median(errors), mse_min=min(errors),
                         mse_max=max(errors), mle=inference.mle, low68=inference.intervals[0.68][0],
                         high68=inference.intervals[0.68][1], low95=inference.intervals[0.95][0],
                         high95=inference.intervals[0.95][1], fisher_at_truth=inference.fisher_at_truth,
                         fit_seconds=statistics.median(f.fit_seconds for f in group), scan_seconds=inference.seconds))
    return rows


def _settings(result) -> dict:
    s = result.settings
    return dict(budgets=list(s.budgets), seeds=s.seeds, epochs=s.epochs, methods=list(s.methods),
                theta_true=s.theta_true, n_observed=s.n_observed, theta0=-0.8, theta1=-0.6,
                grid_points=s.grid_points, training_range=[-1.0, -0.4], workers=s.workers)


def write_summary(result, out_dir: str) -> None:
    """summary.csv (the rows of ``summary_rows``) and summary.json (settings, timings, rows and every fit)."""
    rows = summary_rows(result)
    with open(os.path.join(out_dir, "summary.csv"), "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    fits = [dict(method=f.method, n=f.n, seed=f.seed, mse=f.error, fit_seconds=f.fit_seconds, epochs=f.epochs)
            for f in result.fits]
    document = dict(generator="sluice demo", settings=_settings(result), trivial_mse=result.trivial_error,
                    timings=result.timings, machine=result.machine, rows=rows, fits=fits)
    with open(os.path.join(out_dir, "summary.json"), "w") as file:
        json.dump(finite_json(document), file, indent=2, allow_nan=False)


def finite_json(value):
    """``value`` (nested dicts and lists) with NaN and inf as None: JSON has neither (an interval open at the edge
    of the scan, an ESS of too few draws)."""
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_json(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def summary_table(result):
    """The summary as a ``rich.table.Table`` narrow enough for an 80-column terminal."""
    from rich import box
    from rich.table import Table

    s = result.settings
    table = Table(title=f"sluice demo: the Galton board, θ from {len(result.observed)} events at a hidden θ = "
                        f"{s.theta_true}", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False,
                  collapse_padding=True,
                  caption=f"MSE: of log r̂(x|−0.8,−0.6), median over {s.seeds} seed(s). θ̂, 68%/95%: MLE and Wilks "
                          "intervals (… = edge of the range scanned). Fisher: I(θ) per event at the true θ. "
                          "*: black box (trained on x and θ only).", caption_justify="left")
    for name in ("method", "N", "MSE", "θ̂", "68%", "95%", "Fisher", "fit s"):
        table.add_column(name, justify="left" if name == "method" else "right")

    def interval(low, high) -> str:
        return f"[{_number(low, 2)}, {_number(high, 2)}]"

    for row in summary_rows(result):
        table.add_row(row["method"] + ("*" if row["kind"] == "black box" else ""),
                      "–" if row["n"] is None else f"{row['n']:,}", f"{row['mse_median']:.2g}",
                      _number(row["mle"], 2), interval(row["low68"], row["high68"]),
                      interval(row["low95"], row["high95"]), _number(row["fisher_at_truth"], 2),
                      "–" if row["fit_seconds"] is None else f"{row['fit_seconds']:.1f}",
                      style="bold" if row["kind"] == "exact" else None, end_section=row["kind"] == "exact")
    return table


def html_table(headers, rows, classes=None) -> str:
    """A <table> of ``headers`` and ``rows`` (cells escaped); ``classes`` maps a row's index to its CSS class."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(f"<tr class=\"{html.escape((classes or {}).get(k, ''))}\">"
                   + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
                   for k, row in enumerate(rows))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(path: str, caption: str) -> str:
    with open(path, "rb") as file:
        return html_figure(file.read(), caption)


def html_figure(png: bytes, caption: str) -> str:
    """A PNG image embedded as a base64 data URI, with its caption."""
    data = base64.b64encode(png).decode("ascii")
    return (f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{html.escape(caption)}\">"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def html_section(title: str, *parts: str) -> str:
    """A <section> with an <h2> and an anchor made from the title."""
    anchor = title.lower().replace(" ", "-").replace("(", "").replace(")", "")
    return f"<section id=\"{html.escape(anchor)}\"><h2>{html.escape(title)}</h2>{''.join(parts)}</section>"


def html_text(text: str, css: str = "") -> str:
    """A paragraph of escaped ``text`` with the CSS class ``css``."""
    return f"<p class=\"{css}\">{html.escape(text)}</p>"


def render_report(result, figures: dict) -> str:
    """The HTML page; ``figures`` maps the keys of ``demo_figures.FIGURES`` to PNG files."""
    from .benchmarks.sample_efficiency import goals

    s, rows = result.settings, summary_rows(result)
    budgets = sorted(s.budgets)
    table_rows = [[r["method"] + (" (black box)" if r["kind"] == "black box" else ""),
                   "–" if r["n"] is None else f"{r['n']:,}", f"{r['mse_median']:.2g}", _number(r["mle"]),
                   _interval(r["low68"], r["high68"]), _interval(r["low95"], r["high95"]),
                   _number(r["fisher_at_truth"], 2), "–" if r["fit_seconds"] is None else f"{r['fit_seconds']:.1f}"]
                  for r in rows]
    summary = html_table(("method", "N", "MSE log r̂", "θ̂", "68% interval", "95% interval", "I(θ_true)", "fit s"),
                     table_rows, {0: "exact"})
    fit_rows = [dict(method=f.method, n=f.n, seed=f.seed, error=f.error, fit_seconds=f.fit_seconds)
                for f in result.fits]
    verdict = goals(fit_rows, small=budgets[-2], large=budgets[-1]) if len(budgets) > 1 else ""
    exact = result.exact
    fisher_rows = [[r["method"], "–" if r["n"] is None else f"{r['n']:,}", f"{r['fisher_at_truth']:.3f}",
                    f"{r['fisher_at_truth'] / exact.fisher_at_truth:.2f}"] for r in rows]
    cramer_rao = 1 / math.sqrt(len(result.observed) * exact.fisher_at_truth)
    timing_rows = [[name, f"{seconds:.1f}"] for name, seconds in result.timings.items()]
    timing_rows.append(["scan, exact likelihood", f"{exact.seconds:.2f}"])
    per_method = [[m] + [f"{r['fit_seconds']:.2f}" for n in budgets for r in rows if r["method"] == m and r["n"] == n]
                  + [f"{r['scan_seconds']:.2f}" for r in rows if r["method"] == m and r["n"] == budgets[-1]]
                  for m in s.methods]
    method_timings = html_table(("method",) + tuple(f"fit s, N = {n:,}" for n in budgets) +
                            (f"scan s, N = {budgets[-1]:,}",), per_method)
    captions = {
        "sample_efficiency": f"MSE of log r̂(x|θ0=−0.8, θ1=−0.6) against the exact log r, weighted by p(x|θ1), "
                             f"against the number of training simulations; median over {s.seeds} seed(s), band: "
                             f"min–max. Dashed: black-box methods. log r̂ ≡ 0 scores {result.trivial_error:.3f}.",
        "log_ratio": "Each estimator's log r̂(x) (coloured, fainter for smaller budgets) against the exact log r "
                     "(black) for every x the board can produce; the last panel shows how much each x counts.",
        "scans": f"q(θ) = −2 Δ log L for the {len(result.observed)} observed events from each estimator (coloured) "
                 "and from the exact likelihood (black); dotted lines: the 68% and 95% Wilks thresholds.",
        "intervals": "MLE and Wilks intervals from every estimator, against the exact ones (grey band: exact 68%).",
        "fisher": "Fisher information per event across the training range: exact (black) and from each "
                  "estimator's score t̂(x|θ), averaged over the same simulated x at each θ.",
        "timings": "Fit time against the training budget (one torch thread per fit), and the times of the "
                   "simulation and of each scan.",
    }
    from .demo_figures import FIGURES

    figure = {key: _figure(figures[key], captions[key]) for key, _, _ in FIGURES}
    observed = (f"{len(result.observed)} (seed {s.observed_seed}, picked so that the exact 68% interval covers "
                "the true θ, as 68% of sets do)")
    facts = "".join(f"<div><b>{html.escape(k)}</b>: {html.escape(v)}</div>" for k, v in (
        ("budgets", ", ".join(f"{n:,}" for n in budgets)), ("seeds", str(s.seeds)),
        ("methods", ", ".join(s.methods)), ("observed events", observed),
        ("true θ (hidden from the fits)", str(s.theta_true)), ("total time", f"{result.timings['total']:.0f} s")))
    body = "".join([
        "<h1>sluice demo: mining gold from the Galton board</h1>",
        html_text("The generalised Galton board has one parameter θ and an exact likelihood, so every learned "
                  "answer can be checked. sluice simulated the board while mining the joint likelihood ratio "
                  "r(x,z|θ0,θ1) and the joint score t(x,z|θ) of every run, trained black-box estimators (NDE, CARL) "
                  "that see only (x, θ) and augmented ones (SCANDAL, ALICES, RASCAL) that also learn from r and t, "
                  "then inferred θ from a set of observed events drawn at a hidden true θ.", "lead"),
        f"<div class=\"facts\">{facts}</div>",
        html_section(SECTIONS[0], summary, html_text(verdict, "finding") if verdict else "",
                     html_text("MSE: median over seeds; θ̂, intervals (Wilks, from q(θ) on the observed events) and "
                               "I(θ_true) (Fisher information per event): the seed-0 fit. “…”: the interval reaches "
                               "the edge of the scanned range θ ∈ [−1, −0.4].", "note")),
        html_section(SECTIONS[1], figure["sample_efficiency"]),
        html_section(SECTIONS[2], figure["log_ratio"]),
        html_section(SECTIONS[3], figure["scans"], figure["intervals"]),
        html_section(SECTIONS[4], figure["fisher"],
                     html_table(("method", "N", "I(θ_true) per event", "ratio to exact"), fisher_rows, {0: "exact"}),
                     html_text(f"θ_true = {s.theta_true}; 1/√(N_obs · I) = {cramer_rao:.3f} is the smallest "
                               "standard error of θ̂ the observed events allow (Cramér–Rao).", "note")),
        html_section(SECTIONS[5], figure["timings"], html_table(("step", "seconds"), timing_rows), method_timings,
                     html_text(f"Fits: median over seeds, one torch thread each, {s.workers} at a time; scans: "
                               f"{s.grid_points} grid points and a refined MLE. Machine: {_machine(result)}.",
                               "note")),
        html_section(SECTIONS[6], html_text("Reproduce with the command below; summary.csv and summary.json beside "
                                            "this page hold the numbers, the PNG files the figures."),
                     f"<pre>{html.escape(_command(result))}</pre>",
                     html_text(f"sluice {_version()}, Python {platform.python_version()}, {platform.machine()}, "
                               f"written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.", "note")),
    ])
    return html_page("sluice demo report", body)


def html_page(title: str, body: str, css: str = CSS) -> str:
    """A whole page: ``body`` (HTML) in a <main> column with the inline ``css``; nothing loaded from elsewhere."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{css}</style></head><body><main>{body}</main></body></html>\n")


def _machine(result) -> str:
    machine = result.machine
    return (f"{machine['cpus']} CPU cores, load average {machine['load_before']:.1f} before the run and "
            f"{machine['load_after']:.1f} after it (other work shares the cores)")


def _command(result) -> str:
    from dataclasses import replace

    from .demo_settings import DEFAULT, QUICK

    s = result.settings
    if s == replace(QUICK, workers=s.workers):
        return "sluice demo --quick --out DIR"
    if s == replace(DEFAULT, workers=s.workers):
        return "sluice demo --out DIR"
    return f"sluice demo --budgets {','.join(map(str, s.budgets))} --seeds {s.seeds}" + \
        (f" --epochs {s.epochs}" if s.epochs else "") + " --out DIR"


def _version() -> str:
    from .. import __version__

    return __version__


def write_report(result, figures: dict, out_dir: str) -> str:
    """Write ``out_dir/report.html``; returns its path."""
    path = os.path.join(out_dir, "report.html")
    with open(path, "w", encoding="utf-8") as file:
        file.write(render_report(result, figures))
    return path

