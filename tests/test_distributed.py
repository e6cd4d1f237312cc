"""Batches in local worker processes and on a Dask cluster: the data do not depend on where batches run, a worker
that dies is replaced without losing a batch, and jobs that cannot run elsewhere are refused clearly."""

import hashlib
import os
import subprocess
import sys

import pytest
import torch

import sluice
from sluice.data.augmented import FIELDS
from sluice.data.executors import RETRIES, WorkerCrashError
from toys import Exponential


class DiesOnce(Exponential):
    """Kills its worker process the first time any worker runs it (a flag file marks that it happened)."""

    def __init__(self, flag):
        self.flag = str(flag)

    def sample(self, theta, generator=None):
        try:
            os.close(os.open(self.flag, os.O_CREAT | os.O_EXCL))  # exactly one attempt wins the flag...
            os._exit(3)  # ...and dies; the batch must be run again
        except FileExistsError:
            return super().sample(theta, generator)


class AlwaysDies(Exponential):
    def sample(self, theta, generator=None):
        os._exit(3)


class HoldsALambda(Exponential):
    def __init__(self):
        self.transform = lambda u: u


def assert_same_rows(a, b):
    for name in FIELDS:
        left, right = getattr(a, name), getattr(b, name)
        assert (left is None and right is None) or torch.equal(left, right), name


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_one_two_and_three_workers_give_the_data_of_one_process(tmp_path):
    board = sluice.simulators.GaltonBoard()
    prior = board.default_prior()
    here = sluice.simulate(board, prior, 6000, seed=4, batch_size=1000)
    for workers in (1, 2, 3):
        assert_same_rows(sluice.simulate(board, prior, 6000, seed=4, batch_size=1000, workers=workers), here)
    sluice.simulate(board, prior, 6000, seed=4, batch_size=1000, path=tmp_path / "here.h5")
    sluice.simulate(board, prior, 6000, seed=4, batch_size=1000, path=tmp_path / "two.h5", workers=2)
    assert digest(tmp_path / "here.h5") == digest(tmp_path / "two.h5")


def test_a_worker_that_dies_is_replaced_and_no_batch_is_lost_or_doubled(tmp_path):
    expected = sluice.simulate(Exponential(), Exponential().default_prior(), 3000, seed=1, batch_size=250)
    data = sluice.simulate(DiesOnce(tmp_path / "died"), Exponential().default_prior(), 3000, seed=1, batch_size=250,
                           workers=2, path=tmp_path / "d.h5")
    assert (tmp_path / "died").exists(), "no worker died: the test proved nothing"
    assert_same_rows(data, expected)


def test_workers_that_keep_dying_stop_the_run_with_a_clear_error():
    with pytest.raises(WorkerCrashError, match=f"died {RETRIES + 1} times while running batches"):
        sluice.simulate(AlwaysDies(), Exponential().default_prior(), 400, batch_size=100, workers=2)


def test_jobs_that_cannot_run_elsewhere_are_refused_before_anything_runs(tmp_path):
    prior = Exponential().default_prior()
    with pytest.raises(TypeError, match="workers=2 runs batches in other processes, so the simulator and prior must "
                                        "pickle"):
        sluice.simulate(HoldsALambda(), prior, 100, workers=2, path=tmp_path / "d.h5")
    with pytest.raises(ValueError, match="not both"):
        sluice.simulate(Exponential(), prior, 100, workers=2, scheduler="tcp://127.0.0.1:1")
    with pytest.raises(ValueError, match="positive whole number"):
        sluice.simulate(Exponential(), prior, 100, workers=0)
    with pytest.raises(TypeError, match="scheduler must be an address"):
        sluice.simulate(Exponential(), prior, 100, scheduler=8786)


def test_command_line_workers_write_the_file_of_one_process(tmp_path):
    command = [sys.executable, "-m", "sluice.app.cli", "simulate", "galton", "--n", "3000", "--batch-size", "1000",
               "--seed", "2"]
    one = subprocess.run(command + ["--out", str(tmp_path / "one.h5")], capture_output=True, text=True, timeout=120)
    two = subprocess.run(command + ["--out", str(tmp_path / "two.h5"), "--workers", "2"], capture_output=True,
                         text=True, timeout=120)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert digest(tmp_path / "one.h5") == digest(tmp_path / "two.h5")


def test_a_dask_cluster_gives_the_data_of_one_process_and_survives_a_dying_worker(tmp_path):
    distributed = pytest.importorskip("distributed", reason="Dask is an optional extra: pip install 'sluice-sbi[dask]'")
    board = sluice.simulators.GaltonBoard()
    here = sluice.simulate(board, board.default_prior(), 4000, seed=3, batch_size=500)
    sluice.simulate(board, board.default_prior(), 4000, seed=3, batch_size=500, path=tmp_path / "here.h5")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        assert_same_rows(sluice.simulate(board, board.default_prior(), 4000, seed=3, batch_size=500,
                                         scheduler=client), here)
        command = subprocess.run([sys.executable, "-m", "sluice.app.cli", "simulate", "galton", "--n", "4000", "--seed",
                                  "3", "--batch-size", "500", "--out", str(tmp_path / "dask.h5"), "--scheduler",
                                  cluster.scheduler_address], capture_output=True, text=True, timeout=120)
        assert command.returncode == 0, command.stderr
        expected = sluice.simulate(Exponential(), Exponential().default_prior(), 2000, seed=1, batch_size=250)
        survived = sluice.simulate(DiesOnce(tmp_path / "died"), Exponential().default_prior(), 2000, seed=1,
                                   batch_size=250, scheduler=client)
    assert digest(tmp_path / "here.h5") == digest(tmp_path / "dask.h5")
    assert (tmp_path / "died").exists(), "no worker died: the test proved nothing"
    assert_same_rows(survived, expected)
