"""`sluice infer --posterior` (posterior draws, their summary, a self-contained HTML report with the sampler's
diagnostics, a predictive check and calibration) and `sluice benchmark sbibm` through the command line. Most run in
this process through click's runner (same stdout, stderr and exit status as a subprocess) to keep the suite fast."""

import base64
import csv
import json
import os
import re
import warnings

import numpy as np
import pytest
import torch

import sluice
from cli_helpers import assert_one_line_error, invoke


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The samplers evaluate small batches, step after step: on a busy machine torch's thread pool costs far more
    than the work (ms against µs per call), so these tests run on one thread, as the benchmarks' fits do."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read_draws(path):
    with open(path, newline="") as file:
        rows = list(csv.reader(file))
    return rows[0], np.array(rows[1:], dtype=np.float64)


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


@pytest.fixture(scope="module")
def mixture_events(tmp_path_factory):
    """20 events of the Gaussian mixture at a = 0.3, b = −0.2 (x [20, 2]) and one of them alone."""
    folder = tmp_path_factory.mktemp("observed")
    mixture = sluice.simulators.GaussianMixture()
    x, _ = mixture.sample(sluice.simulators.priors.Point([0.3, -0.2]).sample((20,)),
                          generator=torch.Generator().manual_seed(5))
    np.savetxt(folder / "events.csv", x.numpy(), delimiter=",")
    np.savetxt(folder / "one.csv", x[:1].numpy(), delimiter=",")
    return folder


@pytest.fixture(scope="module")
def exact_run(tmp_path_factory, mixture_events):
    out = tmp_path_factory.mktemp("posterior") / "out"
    result = invoke("infer", "exact:mixture", "--posterior", "--observed", mixture_events / "events.csv", "--out", out,
                    "--samples", 400, "--truth", "0.3,-0.2", "--seed", 1)
    assert result.returncode == 0, result.stderr
    return out, result


def test_posterior_writes_draws_summary_corner_plot_and_report(exact_run):
    out, result = exact_run
    assert sorted(os.listdir(out)) == ["corner.png", "posterior.csv", "posterior.html", "posterior.json"]
    names, draws = read_draws(out / "posterior.csv")
    assert names == ["a", "b"] and draws.shape == (400, 2)
    assert (out / "corner.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert re.search(r"^a = .* 68% \[.*\], 95% \[.*\]$", result.stdout, re.MULTILINE)
    assert "posterior.html" in result.stdout.splitlines()[-1]


def test_json_numbers_are_those_of_the_csv_draws(exact_run):
    out, _ = exact_run
    document = json.loads((out / "posterior.json").read_text())
    names, draws = read_draws(out / "posterior.csv")
    assert document["parameters"] == names and document["n_samples"] == len(draws)
    for j, name in enumerate(names):
        entry = document["summary"][name]
        # the same float64 numbers (the CSV holds the draws exactly): equal up to round-off
        assert entry["mean"] == pytest.approx(draws[:, j].mean(), rel=1e-12, abs=1e-15)
        assert entry["std"] == pytest.approx(draws[:, j].std(ddof=1), rel=1e-12)
        for level, (low, high) in entry["intervals"].items():
            inside = np.mean((draws[:, j] >= low) & (draws[:, j] <= high))
            assert inside == pytest.approx(float(level), abs=2 / len(draws))  # central: level of the draws inside
            assert low == pytest.approx(np.quantile(draws[:, j], (1 - float(level)) / 2), rel=1e-12)
    assert set(document["ess"]) == set(document["r_hat"]) == {"a", "b"}
    assert document["mixed"] is True and document["warnings"] == []
    assert max(document["r_hat"].values()) <= 1.01


def test_posterior_of_the_exact_likelihood_covers_the_truth(exact_run):
    """20 events constrain a and b to about ±0.1: the truth lies within 5 posterior standard deviations of the
    mean (a wrong prior, likelihood or sampler would put it far outside)."""
    out, _ = exact_run
    document = json.loads((out / "posterior.json").read_text())
    for name, truth in (("a", 0.3), ("b", -0.2)):
        entry = document["summary"][name]
        assert abs(entry["mean"] - truth) < 5 * entry["std"]


def test_report_is_self_contained_with_table_images_diagnostics_and_predictive_check(exact_run):
    out, _ = exact_run
    page = (out / "posterior.html").read_text()
    document = json.loads((out / "posterior.json").read_text())
    assert "<table>" in page and "95% interval" in page and "R-hat" in page and "ESS" in page
    assert f"{document['summary']['a']['mean']:.4g}" in page
    images = embedded_pngs(page)
    assert len(images) == 2 and all(image[:4] == b"\x89PNG" for image in images)  # corner, predictive check
    assert images[0] == (out / "corner.png").read_bytes()
    for section in ("Summary", "Corner plot", "Sampler diagnostics", "Posterior predictive check"):
        assert f"<h2>{section}</h2>" in page
    assert "NOT MIXED" not in page
    check = document["predictive_check"]
    assert 0 < check["p_value"] <= 1 and len(check["p_values"]) == 2
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # nothing loaded from elsewhere


def test_a_sampler_that_warns_gets_a_not_mixed_banner(tmp_path, mixture_events, monkeypatch):
    import sluice.app.posterior_report as posterior_report

    original = posterior_report.sample_posterior

    def unmixed(*args, **kwargs):
        posterior = original(*args, **kwargs)
        warnings.warn("mcmc_posterior: the chains have not mixed after 10 steps", UserWarning, stacklevel=2)
        return posterior

    monkeypatch.setattr(posterior_report, "sample_posterior", unmixed)
    result = invoke("infer", "exact:mixture", "--posterior", "--observed", mixture_events / "events.csv",
                    "--out", tmp_path, "--samples", 100)
    assert result.returncode == 0, result.stderr
    assert "have not mixed" in result.stdout
    document = json.loads((tmp_path / "posterior.json").read_text())
    assert document["mixed"] is False and "have not mixed" in document["warnings"][0]
    assert "NOT MIXED" in (tmp_path / "posterior.html").read_text()


def test_npe_posterior_with_calibration(tmp_path, mixture_events):
    """A tiny NPE (its own prior, no --simulator needed to sample) with SBC and TARP over 20 simulated data sets."""
    mixture = sluice.simulators.GaussianMixture()
    data = sluice.simulate(mixture, mixture.default_prior(), 500, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        npe = sluice.estimators.NPE(hidden=(16, 16)).fit(data, epochs=2, prior=mixture.default_prior(), seed=0,
                                                         progress=False)
    npe.save(tmp_path / "npe.pt")
    out = tmp_path / "out"
    result = invoke("infer", tmp_path / "npe.pt", "--posterior", "--observed", mixture_events / "one.csv", "--out",
                    out, "--samples", 300, "--simulator", "mixture", "--calibration", 20)
    assert result.returncode == 0, result.stderr
    document = json.loads((out / "posterior.json").read_text())
    assert document["method"] == "NPE.sample" and document["r_hat"] is None and document["mixed"] is None
    calibration = document["calibration"]
    assert calibration["data_sets"] == 20 and set(calibration["sbc_p_values"]) == {"a", "b"}
    assert 0 <= calibration["tarp"]["p_value"] <= 1
    page = (out / "posterior.html").read_text()
    assert "<h2>Calibration</h2>" in page and "SBC" in page and "TARP" in page
    assert len(embedded_pngs(page)) == 4  # corner, predictive check, SBC ranks, TARP
    # the draws stay inside the box prior the NPE was trained under
    _, draws = read_draws(out / "posterior.csv")
    assert draws.shape == (300, 2) and np.all(np.abs(draws) <= 1)


def test_existing_files_are_kept_without_overwrite(tmp_path, mixture_events):
    (tmp_path / "posterior.json").write_text("mine")
    args = ["infer", "exact:mixture", "--posterior", "--observed", mixture_events / "events.csv", "--out", tmp_path,
            "--samples", 100]
    assert_one_line_error(invoke(*args), "--overwrite")
    assert (tmp_path / "posterior.json").read_text() == "mine"
    assert invoke(*args, "--overwrite").returncode == 0
    assert json.loads((tmp_path / "posterior.json").read_text())["n_samples"] == 100


@pytest.mark.parametrize("extra, message", [
    (["--grid", "-1:1:11"], "--grid is for a scan"),
    (["--prior", "box:0"], "cannot read prior"),
    (["--prior", "box:-1:1"], "the prior has 1 parameters and the model 2"),
    (["--levels", "0.5,1.2"], "--levels"),
    (["--samples", "1"], "--samples"),
    (["--truth", "0.1"], "--truth gives 1 values"),
    (["--simulator", "galton"], "simulator GaltonBoard has 1"),
    (["--calibration", "x"], "--calibration"),
])
def test_bad_posterior_options_get_one_line(tmp_path, mixture_events, extra, message):
    result = invoke("infer", "exact:mixture", "--posterior", "--observed", mixture_events / "events.csv", "--out",
                    tmp_path / "out", *extra)
    assert_one_line_error(result, message)
    assert not (tmp_path / "out").exists()


def test_posterior_options_without_posterior_get_one_line(tmp_path, mixture_events):
    result = invoke("infer", "exact:mixture", "--observed", mixture_events / "events.csv", "--out", tmp_path,
                    "--grid", "-1,-1:1,1:5", "--samples", 100)
    assert_one_line_error(result, "--samples is for --posterior")


# --- sluice benchmark sbibm ---------------------------------------------------------------------------------------

WHEEL = os.environ.get("SLUICE_SBIBM_WHEEL", "")
needs_wheel = pytest.mark.skipif(not os.path.isfile(WHEEL), reason="SLUICE_SBIBM_WHEEL is unset or not a file: the "
                                 "sbibm 1.1.0 wheel holds the reference posteriors (make sbibm-data)")


@needs_wheel
def test_benchmark_sbibm_runs_one_cell_and_writes_csv_and_table(tmp_path):
    result = invoke("benchmark", "sbibm", "--tasks", "gaussian_linear", "--methods", "exact", "--observations", 1,
                    "--samples", 500, "--seeds", 1, "--wheel", WHEEL, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "sbibm.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 1
    row = rows[0]
    assert (row["task"], row["method"], row["n"], row["seed"], row["observation"]) == \
        ("gaussian_linear", "exact", "0", "0", "1")
    assert 0 <= float(row["c2st"]) <= 1
    table = (tmp_path / "sbibm.md").read_text()
    assert "### gaussian_linear" in table and "| exact | – |" in table
    from sluice.app.benchmarks.sbibm_published import best_published

    for n in (1000, 10_000, 100_000):  # the published best at each budget, median over observation 1
        algorithm, value = best_published("gaussian_linear", n, (1,))
        assert f"| published best: {algorithm} |" in table and f"{value:.3f}" in table
    assert table.strip() in result.stdout


@pytest.mark.parametrize("extra, message", [
    (["--observations", "0-3"], "numbered 1 … 10"),
    (["--observations", "5-2"], "LOW ≤ HIGH"),
    (["--observations", "one"], "cannot read --observations"),
    (["--methods", "nosuch"], "nosuch"),
    (["--wheel", "{tmp}/none.whl"], "no sbibm wheel"),
])
def test_bad_sbibm_options_get_one_line(tmp_path, extra, message):
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    wheel = [] if "--wheel" in extra else ["--wheel", str(tmp_path / "absent.whl")]
    result = invoke("benchmark", "sbibm", "--tasks", "gaussian_linear", *wheel, *extra, "--out", tmp_path / "out")
    assert_one_line_error(result, message)
    assert not (tmp_path / "out" / "sbibm.csv").exists()


def test_sbibm_options_are_refused_for_other_benchmarks(tmp_path):
    assert_one_line_error(invoke("benchmark", "galton", "--observations", "1", "--out", tmp_path), "sbibm only")
