"""`sluice train` and `sluice infer`: files in and out and TOML configs (flags override them) in subprocesses; one line
with exit status 2 for every mistake (the long list of mistakes runs in-process through click's runner, which sees
the same stderr and exit status, to keep the suite fast; a few also run in subprocesses)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import sluice
from cli_helpers import assert_one_line_error, invoke

SLUICE = [sys.executable, "-m", "sluice.app.cli"]


def run(*args, cwd=None):
    return subprocess.run(SLUICE + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=180)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Training data, 100 observed events at θ = −0.7 (as .h5, .npy, .csv and .txt) and a 3-epoch ALICES model."""
    folder = tmp_path_factory.mktemp("pipeline")
    assert run("simulate", "galton", "--n", 400, "--out", folder / "train.h5", "--seed", 1).returncode == 0
    assert run("simulate", "galton", "--n", 100, "--out", folder / "observed.h5", "--prior", "point:-0.7",
               "--seed", 2).returncode == 0
    x = sluice.AugmentedData.load(folder / "observed.h5").x.numpy()
    np.save(folder / "observed.npy", x[:, 0])
    np.savetxt(folder / "observed.csv", x, delimiter=",", header="x", comments="")
    np.savetxt(folder / "observed.txt", x)
    result = run("train", "ALICES", "--data", folder / "train.h5", "--out", folder / "alices.pt", "--epochs", 3)
    assert result.returncode == 0, result.stderr
    (folder / "train.log").write_text(result.stdout)
    return folder


@pytest.mark.parametrize("command", ["demo", "simulate", "train", "infer"])
def test_every_command_has_help(command):
    result = invoke(command, "--help")
    assert result.returncode == 0 and "Usage:" in result.stdout and "--out" in result.stdout


def test_train_writes_a_model_that_loads_and_reports_its_fit(files):
    model = sluice.load(files / "alices.pt")
    assert isinstance(model, sluice.estimators.ALICES)
    assert "trained ALICES on 400 rows for 3 epochs" in (files / "train.log").read_text()
    x = torch.arange(5.0, 26.0)[:, None]
    assert model.log_ratio(x, torch.tensor([-0.8]), torch.tensor([-0.6])).shape == (21,)


def test_train_accepts_hyperparameters_any_case(tmp_path, files):
    out = tmp_path / "carl.pt"
    result = invoke("train", "carl", "--data", files / "train.h5", "--out", out, "--epochs", 2, "--hidden", "16,16",
                    "--alpha", 0.5, "--validation-fraction", 0.25, "--batch-size", 64)
    assert result.returncode == 0, result.stderr
    assert "trained CARL" in result.stdout
    model = sluice.load(out)
    assert model.hidden == (16, 16) and model.alpha == 0.5


def test_infer_writes_scan_files_with_mle_and_intervals(tmp_path, files):
    out = tmp_path / "scan"
    result = run("infer", files / "alices.pt", "--observed", files / "observed.h5", "--grid", "-1:-0.4:61",
                 "--out", out, "--truth", "-0.7")
    assert result.returncode == 0, result.stderr
    assert {"scan.json", "scan.csv", "scan.png"} <= set(os.listdir(out))
    summary = json.loads((out / "scan.json").read_text())
    assert summary["n_events"] == 100 and summary["grid_points"] == 61
    assert -1.0 <= summary["mle"]["theta"] <= -0.4
    assert set(summary["regions"]) == {"0.68", "0.95"}
    table = np.loadtxt(out / "scan.csv", delimiter=",", skiprows=1)
    assert table.shape == (61, 3) and table[:, 2].min() >= -1e-6  # q = −2 Δ log L is 0 at the MLE, positive elsewhere


def test_infer_with_the_exact_likelihood_matches_the_library_for_every_observed_format(tmp_path, files):
    board = sluice.simulators.GaltonBoard()
    x = sluice.AugmentedData.load(files / "observed.h5").x
    expected = sluice.inference.scan(sluice.inference.ExactLikelihood(board), x,
                                     sluice.inference.make_grid([-1.0], [-0.4], 61))
    for name in ("observed.h5", "observed.npy", "observed.csv", "observed.txt"):
        out = tmp_path / name
        result = invoke("infer", "exact:galton", "--observed", files / name, "--grid", "-1:-0.4:61", "--out", out,
                        "--levels", "0.68")
        assert result.returncode == 0, result.stderr
        summary = json.loads((out / "scan.json").read_text())
        assert summary["mle"]["theta"] == pytest.approx(float(expected.mle[0]), abs=1e-4), name
        assert summary["regions"]["0.68"]["interval"] == pytest.approx(list(expected.interpolated_interval(0.68)),
                                                                       abs=1e-4)


def test_one_toml_file_drives_simulate_train_and_infer_and_flags_override_it(tmp_path, files):
    config = tmp_path / "pipeline.toml"
    config.write_text(f"""
seed = 4
[simulate]
simulator = "galton"
n = 300
out = "data.h5"
[train]
method = "SCANDAL"
data = "data.h5"
out = "scandal.pt"
epochs = 5
[infer]
model = "scandal.pt"
observed = "{files / 'observed.npy'}"
grid = "-1:-0.4:31"
levels = [0.68, 0.9]
out = "scan"
""")
    assert run("simulate", "--config", config, cwd=tmp_path).returncode == 0
    assert len(sluice.AugmentedData.load(tmp_path / "data.h5")) == 300
    result = run("train", "--config", config, cwd=tmp_path)
    assert result.returncode == 0 and "trained SCANDAL on 300 rows for 5 epochs" in result.stdout, result.stderr
    result = run("train", "--config", config, "--epochs", 2, "--out", "short.pt", cwd=tmp_path)
    assert result.returncode == 0 and "for 2 epochs" in result.stdout and (tmp_path / "short.pt").exists()
    result = run("infer", "--config", config, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "scan" / "scan.json").read_text())
    assert set(summary["regions"]) == {"0.68", "0.9"} and summary["grid_points"] == 31


@pytest.mark.parametrize("text, message", [
    ('bogus = 1\n', "unknown key 'bogus' at the top level"),
    ('[train]\nn = 5\n', "unknown key 'n' in [train]"),
    ('[train]\nepochs = "many"\n', "key 'epochs'"),
    ('epochs = [\n', "cannot read config file"),
    ('train = 3\n', "must be a table"),
])
def test_bad_config_files_get_one_line(tmp_path, files, text, message):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    result = invoke("train", "alices", "--data", files / "train.h5", "--out", tmp_path / "m.pt", "--config", config)
    assert_one_line_error(result, message)
    assert not (tmp_path / "m.pt").exists()


def _bad_files(folder):
    (folder / "corrupt.pt").write_bytes(b"not a model")
    (folder / "corrupt.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 50)
    (folder / "two_columns.csv").write_text("1,2\n3,4\n")
    (folder / "nan.csv").write_text("5\nnan\n")
    (folder / "words.txt").write_text("left right\n")
    (folder / "events.json").write_text("[5, 6]")


@pytest.mark.parametrize("args, message", [
    (["train"], "missing METHOD, --data, --out"),
    (["train", "nosuch", "--data", "{files}/train.h5", "--out", "{tmp}/m.pt"], "unknown method 'nosuch'"),
    (["train", "sally", "--data", "{files}/train.h5", "--out", "{tmp}/m.pt", "--alpha", "1"],
     "SALLY has no hyperparameter 'alpha'"),
    (["train", "alices", "--data", "{tmp}/none.h5", "--out", "{tmp}/m.pt"], "none.h5"),
    (["train", "alices", "--data", "{tmp}/corrupt.h5", "--out", "{tmp}/m.pt"], "truncated or corrupt"),
    (["train", "alices", "--data", "{files}/train.h5", "--out", "{tmp}/m.pt", "--epochs", "0"], "--epochs"),
    (["train", "alices", "--data", "{files}/train.h5", "--out", "{tmp}/m.pt", "--hidden", "8,x"], "8,x"),
    (["train", "alices", "--bogus"], "No such option"),
    (["infer", "{files}/alices.pt", "--observed", "{files}/observed.h5", "--out", "{tmp}/s"], "missing --grid"),
    (["infer", "{files}/alices.pt", "--observed", "{files}/observed.h5", "--out", "{tmp}/s", "--grid", "-1:-0.4"],
     "cannot read grid"),
    (["infer", "{files}/alices.pt", "--observed", "{files}/observed.h5", "--out", "{tmp}/s", "--grid",
      "-1,0:-0.4,1:11"], "one LOW, HIGH"),
    (["infer", "{files}/alices.pt", "--observed", "{files}/observed.h5", "--out", "{tmp}/s", "--grid",
      "-1:-0.4:11", "--levels", "95"], "--levels"),
    (["infer", "{tmp}/none.pt", "--observed", "{files}/observed.h5", "--out", "{tmp}/s", "--grid", "-1:-0.4:11"],
     "no such model file"),
    (["infer", "{tmp}/corrupt.pt", "--observed", "{files}/observed.h5", "--out", "{tmp}/s", "--grid",
      "-1:-0.4:11"], "not a readable sluice model"),
    (["infer", "exact:nosuch", "--observed", "{files}/observed.h5", "--out", "{tmp}/s", "--grid", "-1:-0.4:11"],
     "unknown simulator"),
    (["infer", "{files}/alices.pt", "--observed", "{tmp}/none.npy", "--out", "{tmp}/s", "--grid", "-1:-0.4:11"],
     "no such observed-events file"),
    (["train", "alices", "--data", "{files}/train.h5", "--out", "{tmp}/m.pt", "--device", "gpu"],
     "device='gpu' is not a device name"),
    (["infer", "{files}/alices.pt", "--observed", "{tmp}/two_columns.csv", "--out", "{tmp}/s", "--grid",
      "-1:-0.4:11"], "cannot evaluate the observed events of shape [2, 2]"),
    (["infer", "{files}/alices.pt", "--observed", "{tmp}/nan.csv", "--out", "{tmp}/s", "--grid", "-1:-0.4:11"],
     "NaN or inf"),
    (["infer", "{files}/alices.pt", "--observed", "{tmp}/words.txt", "--out", "{tmp}/s", "--grid", "-1:-0.4:11"],
     "cannot read"),
    (["infer", "{files}/alices.pt", "--observed", "{tmp}/events.json", "--out", "{tmp}/s", "--grid",
      "-1:-0.4:11"], "use .h5 (AugmentedData), .npy, .csv or .txt"),
])
def test_bad_arguments_and_files_get_one_line_and_exit_status_2(tmp_path, files, args, message):
    _bad_files(tmp_path)
    result = invoke(*[a.format(files=files, tmp=tmp_path) for a in args])
    assert_one_line_error(result, message)
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "s").exists()


@pytest.mark.parametrize("args, message", [
    (["train", "alices", "--data", "{tmp}/corrupt.h5", "--out", "{tmp}/m.pt"], "truncated or corrupt"),
    (["infer", "{tmp}/corrupt.pt", "--observed", "{tmp}/nan.csv", "--out", "{tmp}/s", "--grid", "-1:-0.4:11"],
     "not a readable sluice model"),
    (["infer", "--bogus"], "No such option"),
])
def test_a_real_process_prints_one_line_and_no_traceback(tmp_path, args, message):
    _bad_files(tmp_path)
    assert_one_line_error(run(*[a.format(tmp=tmp_path) for a in args]), message)


def test_existing_outputs_are_kept_unless_overwrite_is_given(tmp_path, files):
    model = tmp_path / "m.pt"
    model.write_bytes(b"the user's own file")
    result = invoke("train", "alices", "--data", files / "train.h5", "--out", model, "--epochs", 1)
    assert_one_line_error(result, "--overwrite")
    assert model.read_bytes() == b"the user's own file"
    out = tmp_path / "scan"
    out.mkdir()
    (out / "scan.json").write_text("mine")
    (out / "notes.txt").write_text("mine too")
    args = ["infer", "exact:galton", "--observed", files / "observed.npy", "--grid", "-1:-0.4:11", "--out", out]
    assert_one_line_error(invoke(*args), "--overwrite")
    assert (out / "scan.json").read_text() == "mine"
    assert invoke(*args, "--overwrite").returncode == 0
    assert json.loads((out / "scan.json").read_text())["grid_points"] == 11
    assert (out / "notes.txt").read_text() == "mine too"


def test_train_reads_a_file_larger_than_its_memory_limit_in_blocks(tmp_path, files, monkeypatch):
    """Files over IN_MEMORY_BYTES train from disk (OnDiskData); smaller ones are loaded into memory."""
    import sluice.app.cli

    fitted = []
    original = sluice.estimators.CARL.fit
    monkeypatch.setattr(sluice.estimators.CARL, "fit",
                        lambda self, data, **kw: fitted.append(type(data).__name__) or original(self, data, **kw))
    assert sluice.AugmentedData.open(files / "train.h5").nbytes == 400 * 4 * 7  # θ0, θ1, y, x, log r, t0, t1
    for name in ("a.pt", "b.pt"):
        result = invoke("train", "carl", "--data", files / "train.h5", "--out", tmp_path / name, "--epochs", 2)
        assert result.returncode == 0, result.stderr
        monkeypatch.setattr(sluice.app.cli, "IN_MEMORY_BYTES", 100)
    assert fitted == ["AugmentedData", "OnDiskData"]
    assert isinstance(sluice.load(tmp_path / "b.pt"), sluice.estimators.CARL)


def test_train_npe_takes_the_prior_the_file_records_and_refuses_another(tmp_path, files):
    """NPE learns p(θ|x) under the prior of the data's θ: by default the simulator's own, used only when the file's
    record of the prior matches it; a --prior that contradicts the record, or --prior for a ratio method, is refused."""
    out = tmp_path / "npe.pt"
    result = invoke("train", "NPE", "--data", files / "train.h5", "--out", out, "--epochs", 1)
    assert result.returncode == 0, result.stderr
    prior = sluice.simulators.GaltonBoard().default_prior()
    model = sluice.load(out)
    assert torch.equal(model.prior_.low, prior.low) and torch.equal(model.prior_.high, prior.high)
    assert invoke("train", "NPE", "--data", files / "train.h5", "--out", tmp_path / "flat.pt", "--epochs", 1,
                  "--prior", "flat").returncode == 0
    assert sluice.load(tmp_path / "flat.pt").prior_ is None
    assert_one_line_error(invoke("train", "NPE", "--data", files / "train.h5", "--out", tmp_path / "b.pt",
                                 "--prior", "box:-2:0"), "is not the prior this data was simulated with")
    assert_one_line_error(invoke("train", "ALICES", "--data", files / "train.h5", "--out", tmp_path / "a.pt",
                                 "--prior", "box:-1:-0.4"), "ALICES does not take --prior")


def test_train_npe_on_data_from_another_prior_asks_for_it(tmp_path):
    data = tmp_path / "narrow.h5"
    assert invoke("simulate", "galton", "--n", 200, "--out", data, "--prior", "box:-0.9:-0.5").returncode == 0
    assert_one_line_error(invoke("train", "NPE", "--data", data, "--out", tmp_path / "n.pt", "--epochs", 1),
                          "give --prior box:LOW:HIGH")
    result = invoke("train", "NPE", "--data", data, "--out", tmp_path / "n.pt", "--epochs", 1,
                    "--prior", "box:-0.9:-0.5")
    assert result.returncode == 0, result.stderr
