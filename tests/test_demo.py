"""`sluice demo` on tiny budgets in a subprocess: the files it writes, a self-contained report that holds every
figure and section, a folder of the user's own files refused, and the report rendered by headless Chromium."""

import base64
import csv
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

import sluice
from sluice.app.demo import MARKER, prepare_output_dir
from sluice.app.demo_figures import FIGURES
from sluice.app.report import SECTIONS
from sluice.simulators import GaltonBoard

SLUICE = [sys.executable, "-m", "sluice.app.cli"]
TINY = ["--budgets", "100,300", "--seeds", "1", "--epochs", "3", "--workers", "1"]
METHODS = ("NDE", "CARL", "SCANDAL", "ALICES", "RASCAL")
SUPPORT = torch.arange(5.0, 26.0)[:, None]  # every final nail of the Galton board
EMBEDDED_PNG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def run(*args):
    return subprocess.run(SLUICE + [str(a) for a in args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One tiny demo run: (its output folder, the finished process)."""
    out = tmp_path_factory.mktemp("demo") / "report"
    result = run("demo", *TINY, "--out", out)
    assert result.returncode == 0, result.stderr
    return out, result


def test_demo_writes_the_report_figures_and_summaries(demo):
    out, _ = demo
    expected = {"report.html", "summary.csv", "summary.json", MARKER} | {name for _, name, _ in FIGURES}
    assert expected == set(os.listdir(out))
    for _, name, _ in FIGURES:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_embeds_every_figure_and_section_and_needs_nothing_outside(demo):
    out, _ = demo
    page = (out / "report.html").read_text(encoding="utf-8")
    images = EMBEDDED_PNG.findall(page)
    assert len(images) == len(FIGURES) == page.count("<img")
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page
    assert "<style>" in page
    for outside in ("<link", "<script", 'src="http', "src='http", "url(", "@import"):
        assert outside not in page


def test_summary_holds_the_exact_answer_and_every_method_at_every_budget(demo):
    out, _ = demo
    with open(out / "summary.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert rows[0]["method"] == "exact" and float(rows[0]["mse_median"]) == 0.0
    assert {(row["method"], row["n"]) for row in rows[1:]} == {(m, n) for m in METHODS for n in ("100", "300")}
    exact = rows[0]
    assert float(exact["low68"]) < float(exact["mle"]) < float(exact["high68"])
    assert float(exact["low95"]) < float(exact["low68"]) and float(exact["high68"]) < float(exact["high95"])
    # the exact row's Fisher information against I(θ) computed here by autograd (float32 rounding: 1e-5 relative)
    assert float(exact["fisher_at_truth"]) == pytest.approx(fisher_information_at(-0.7), rel=1e-5)
    document = json.loads((out / "summary.json").read_text())
    assert document["generator"] == "sluice demo" and document["settings"]["budgets"] == [100, 300]
    assert len(document["fits"]) == len(METHODS) * 2
    assert {"simulation", "training (wall)", "total"} <= set(document["timings"])


def exact_log_likelihood(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """log p(x|θ) [n] in float64 from the board's dynamic program, for one θ (a float64 scalar tensor)."""
    return GaltonBoard().log_likelihood(x.double(), theta.reshape(1, 1).expand(len(x), 1))


def fisher_information_at(theta: float) -> float:
    """I(θ) = Σ_x p(x|θ) (∂θ log p(x|θ))² per event, summed over the board's whole support x = 5…25."""
    point = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    scores = torch.stack([torch.autograd.grad(value, point, retain_graph=True)[0]
                          for value in exact_log_likelihood(SUPPORT, point)])
    return float((exact_log_likelihood(SUPPORT, point).detach().exp() * scores**2).sum())


def mse_of_log_ratio(log_ratio: torch.Tensor) -> tuple[float, float]:
    """The demo's error, computed here: Σ_x p(x|θ1) (log r̂(x|θ0,θ1) − log r(x|θ0,θ1))² over x = 5…25 (the whole
    support, so the weights sum to 1) at θ0 = −0.8, θ1 = −0.6, in float64; with a bound on what the demo's float32
    arithmetic can change in it: log r̂ and log r rounded (2⁻²⁴ relative each), and its weights, 21 products and
    their sum rounded (at most (21 + 3) · 2⁻²⁴ relative to the MSE)."""
    theta0, theta1 = torch.tensor(-0.8, dtype=torch.float64), torch.tensor(-0.6, dtype=torch.float64)
    log_p1 = exact_log_likelihood(SUPPORT, theta1)
    exact = exact_log_likelihood(SUPPORT, theta0) - log_p1
    difference = log_ratio.double() - exact
    rounding = 2.0**-24 * (log_ratio.double().abs() + exact.abs())  # per x
    mse = float((log_p1.exp() * difference**2).sum())
    summing = (len(SUPPORT) + 3) * 2.0**-24 * mse
    return mse, float((log_p1.exp() * (2 * difference.abs() * rounding + rounding**2)).sum()) + summing


def test_reported_mses_equal_an_independent_computation_from_the_exact_ratio(demo):
    """The trivial MSE (log r̂ ≡ 0) is an exact answer; a reported fit's MSE is recomputed from the same fit redone
    here (the demo's seed-0 data: the first n of its simulation, fit seed 0, 3 epochs) and the exact log r."""
    out, _ = demo
    document = json.loads((out / "summary.json").read_text())
    trivial, rounding = mse_of_log_ratio(torch.zeros(len(SUPPORT)))
    assert document["trivial_mse"] == pytest.approx(trivial, abs=rounding)
    reported = next(f["mse"] for f in document["fits"] if (f["method"], f["n"], f["seed"]) == ("CARL", 100, 0))
    board = GaltonBoard()
    # as run_demo simulates for TINY: seeds × the largest budget, seed 0, batch_size max(1000, that / 20)
    simulated = sluice.simulate(board, board.default_prior(), 300, seed=0, batch_size=1_000, progress=False)
    model = sluice.estimators.CARL().fit(simulated[:100], epochs=3, seed=0, progress=False)
    log_ratio = model.log_ratio(SUPPORT.float(), torch.tensor([-0.8]), torch.tensor([-0.6]))
    mse, rounding = mse_of_log_ratio(log_ratio)
    assert reported == pytest.approx(mse, abs=rounding)


def test_demo_prints_a_summary_table_and_progress_lines(demo):
    _, result = demo
    assert "exact" in result.stdout and "68%" in result.stdout and "Fisher" in result.stdout
    assert "report.html" in result.stdout
    for method in METHODS:
        assert method in result.stdout
    assert "simulated" in result.stderr and "[10/10]" in result.stderr


def test_demo_refuses_a_folder_holding_the_users_own_files(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.html").write_text("the user's own report")
    result = run("demo", *TINY, "--out", out)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "did not write" in result.stderr
    assert (out / "report.html").read_text() == "the user's own report" and os.listdir(out) == ["report.html"]


def test_output_folder_rules(tmp_path):
    prepare_output_dir(str(tmp_path / "new"))  # a new folder
    assert os.listdir(tmp_path / "new") == [MARKER]
    (tmp_path / "empty").mkdir()
    prepare_output_dir(str(tmp_path / "empty"))  # an empty one
    (tmp_path / "new" / "report.html").write_text("an earlier demo's")
    prepare_output_dir(str(tmp_path / "new"))  # an earlier demo's folder
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        prepare_output_dir(str(tmp_path / "file"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="did not write"):
        prepare_output_dir(str(tmp_path / "other"))
    assert os.listdir(tmp_path / "other") == ["notes.txt"]


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="no chromium on this machine (apt-get install chromium) to render "
                                                "the report")
def test_report_renders_in_headless_chromium(demo, tmp_path):
    from PIL import Image

    out, _ = demo
    shot = tmp_path / "report.png"
    result = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                             f"--screenshot={shot}", "--window-size=1200,3000", (out / "report.html").as_uri()],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    image = Image.open(shot).convert("L")
    assert image.size == (1200, 3000)
    darkest, lightest = image.getextrema()
    assert lightest > 200 and darkest < 60  # text and figures drawn on a light page, not a blank or error page
    histogram = image.histogram()
    assert sum(histogram[:200]) > 0.02 * image.size[0] * image.size[1]  # a real amount of ink
