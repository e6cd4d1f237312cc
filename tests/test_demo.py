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

from sluice.app.demo import MARKER, prepare_output_dir
from sluice.app.demo_figures import FIGURES
from sluice.app.report import SECTIONS

SLUICE = [sys.executable, "-m", "sluice.app.cli"]
TINY = ["--budgets", "100,300", "--seeds", "1", "--epochs", "3", "--workers", "1"]
METHODS = ("NDE", "CARL", "SCANDAL", "ALICES", "RASCAL")
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
    assert 1.5 < float(exact["fisher_at_truth"]) < 1.9  # the board's exact I(θ = −0.7) per event is about 1.70
    document = json.loads((out / "summary.json").read_text())
    assert document["generator"] == "sluice demo" and document["settings"]["budgets"] == [100, 300]
    assert len(document["fits"]) == len(METHODS) * 2
    assert {"simulation", "training (wall)", "total"} <= set(document["timings"])


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
