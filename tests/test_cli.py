"""The `sluice` command: simulate, check and info in subprocesses; mistakes give one line and exit status 2."""

import os
import subprocess
import sys

import pytest
import torch

import sluice

SLUICE = [sys.executable, "-m", "sluice.app.cli"]


def run(*args, cwd=None):
    return subprocess.run(SLUICE + list(args), capture_output=True, text=True, cwd=cwd, timeout=120)


def test_help_lists_the_commands():
    result = run("--help")
    assert result.returncode == 0
    for command in ("simulate", "check", "info"):
        assert command in result.stdout


def test_simulate_writes_a_file_that_loads_and_matches_the_library(tmp_path):
    out = tmp_path / "galton.h5"
    result = run("simulate", "galton", "--n", "300", "--out", str(out), "--seed", "3")
    assert result.returncode == 0, result.stderr
    data = sluice.AugmentedData.load(out)
    board = sluice.simulators.GaltonBoard()
    expected = sluice.simulate(board, board.default_prior(), 300, seed=3)
    assert torch.equal(data.x, expected.x) and torch.equal(data.t_xz0, expected.t_xz0)
    assert "n=300" in run("info", str(out)).stdout


def test_simulate_accepts_module_class_prior_and_reference(tmp_path):
    out = tmp_path / "mixture.h5"
    result = run("simulate", "sluice.simulators.mixture:GaussianMixture", "--n", "50", "--out", str(out),
                 "--prior", "box:-1,-1:1,1", "--reference", "0.5,0.5")
    assert result.returncode == 0, result.stderr
    assert torch.all(sluice.AugmentedData.load(out).theta1 == 0.5)


@pytest.mark.parametrize("args, message", [
    (["simulate", "nosuch", "--n", "10"], "unknown simulator 'nosuch'"),
    (["simulate", "galton", "--n", "10", "--prior", "box:1"], "cannot read prior"),
    (["simulate", "galton", "--n", "10", "--prior", "box:-1,-1:1,1"], "event shape [1]"),
    (["simulate", "galton", "--n", "10", "--reference", "0.3"], "outside the prior"),
    (["simulate", "galton", "--n", "-5"], "positive whole number"),
    (["simulate", "nomodule:Thing", "--n", "10"], "cannot load simulator"),
])
def test_bad_arguments_get_one_line_and_exit_status_2(tmp_path, args, message):
    result = run(*args, "--out", str(tmp_path / "x.h5"))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "x.h5")


def test_existing_output_is_kept_unless_overwrite_is_given(tmp_path):
    out = tmp_path / "d.h5"
    out.write_bytes(b"the user's own file")
    result = run("simulate", "galton", "--n", "10", "--out", str(out))
    assert result.returncode == 2 and "--overwrite" in result.stderr
    assert out.read_bytes() == b"the user's own file"
    assert run("simulate", "galton", "--n", "10", "--out", str(out), "--overwrite").returncode == 0


def test_info_on_a_truncated_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 50)
    result = run("info", str(bad))
    assert result.returncode == 2 and "truncated or corrupt" in result.stderr and "Traceback" not in result.stderr


def test_check_reports_a_sound_simulator():
    result = run("check", "mixture", "--n", "500")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all checks passed" in result.stdout
