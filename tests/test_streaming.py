"""simulate(path=...): streamed files equal the in-memory data, resume after kill -9 gives the same bytes, damaged
or foreign files get clear errors, and training reads an on-disk file in bounded memory."""

import hashlib
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sluice
import sluice.data.storage
import sluice.data.writer
from sluice.data import OnDiskData
from sluice.data.augmented import FIELDS
from sluice.data.writer import ResumeError
from toys import BlackBox, Exponential

TESTS = os.path.dirname(os.path.abspath(__file__))


class SlowExponential(Exponential):
    """Exponential that waits ``pause`` seconds per batch (long enough to be killed mid-run) and counts its batches."""

    pause = float(os.environ.get("SLUICE_TEST_PAUSE", "0"))
    calls = 0

    def sample(self, theta, generator=None):
        type(self).calls += 1
        time.sleep(self.pause)
        return super().sample(theta, generator)


def run_slow(path, n=4000, **options):
    return sluice.simulate(SlowExponential(), Exponential().default_prior(), n, seed=5, batch_size=200, path=path,
                           **options)


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def assert_same_rows(a, b):
    for name in FIELDS:
        left, right = getattr(a, name), getattr(b, name)
        assert (left is None and right is None) or torch.equal(left, right), name


def test_streamed_file_equals_the_in_memory_result_and_reads_lazily(tmp_path):
    board = sluice.simulators.GaltonBoard()
    in_memory = sluice.simulate(board, board.default_prior(), 5000, seed=2, batch_size=1200)
    on_disk = sluice.simulate(board, board.default_prior(), 5000, seed=2, batch_size=1200, path=tmp_path / "g.h5")
    assert isinstance(on_disk, sluice.AugmentedData) and on_disk.rows_read == 0
    assert len(on_disk) == 5000 and on_disk.parameter_names == ("theta",) and on_disk.simulator_name == "GaltonBoard"
    assert on_disk.settings["n"] == 5000 and on_disk.settings["seed"] == 2 and on_disk.settings["batch_size"] == 1200
    part = on_disk[1000:1010]
    assert on_disk.rows_read == 10 and torch.equal(part.t_xz0, in_memory.t_xz0[1000:1010])
    assert torch.equal(on_disk[[4999, 3, 3]].x, in_memory.x[[4999, 3, 3]])
    assert_same_rows(on_disk, in_memory)
    assert_same_rows(sluice.AugmentedData.load(tmp_path / "g.h5"), in_memory)
    assert sorted(os.listdir(tmp_path)) == ["g.h5"]  # the batch folder is gone
    black_box = sluice.simulate(BlackBox(), sluice.priors.BoxUniform([-1.0], [1.0]), 300, path=tmp_path / "b.h5")
    assert not black_box.has("log_r_xz") and black_box.t_xz is None and len(black_box[:5]) == 5


def test_same_call_on_a_finished_file_returns_it_without_simulating(tmp_path):
    first = run_slow(tmp_path / "d.h5", n=1000)
    before, SlowExponential.calls = os.stat(tmp_path / "d.h5").st_mtime_ns, 0
    again = run_slow(tmp_path / "d.h5", n=1000)
    assert SlowExponential.calls == 0 and os.stat(tmp_path / "d.h5").st_mtime_ns == before
    assert_same_rows(again, first)


def test_run_killed_with_sigkill_resumes_to_a_byte_identical_file(tmp_path):
    run_slow(tmp_path / "reference.h5")
    path = tmp_path / "killed.h5"
    script = (f"import sys; sys.path.insert(0, {TESTS!r}); from test_streaming import run_slow; "
              f"run_slow({str(path)!r})")
    child = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ, SLUICE_TEST_PAUSE="0.1"))
    folder, deadline = tmp_path / "killed.h5.parts", time.monotonic() + 90
    while not (folder.is_dir() and sum(name.startswith("batch-") for name in os.listdir(folder)) >= 3):
        assert child.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not path.exists()
    committed = sum(name.startswith("batch-") and name.endswith(".h5") for name in os.listdir(folder))
    assert 3 <= committed < 20
    partial = sluice.AugmentedData.open(path, partial=True)  # a run left by a crash reads its committed rows only
    assert len(partial) == 200 * committed and len(partial.split(0.5)[1]) > 0
    SlowExponential.calls = 0
    resumed = run_slow(path)
    assert SlowExponential.calls == 20 - committed  # the committed batches were kept, the rest simulated once
    assert digest(path) == digest(tmp_path / "reference.h5") and len(resumed) == 4000
    assert sorted(os.listdir(tmp_path)) == ["killed.h5", "reference.h5"]


class Crash(Exception):
    pass


@pytest.mark.parametrize("moment", ["in a batch", "before the assembled file is renamed", "before the clean-up"])
def test_a_run_stopped_at_any_moment_resumes_to_a_byte_identical_file(tmp_path, monkeypatch, moment):
    run_slow(tmp_path / "reference.h5", n=1000)
    path = tmp_path / "d.h5"
    with monkeypatch.context() as patch:
        if moment == "in a batch":
            original = SlowExponential.sample

            def sample(self, theta, generator=None):
                if SlowExponential.calls >= 3:
                    raise Crash
                return original(self, theta, generator)

            patch.setattr(SlowExponential, "sample", sample)
        elif moment == "before the assembled file is renamed":
            original_replace = os.replace
            patch.setattr(sluice.data.storage.os, "replace", lambda a, b: (_ for _ in ()).throw(Crash) if b == str(path)
                          else original_replace(a, b))
        else:
            patch.setattr(sluice.data.writer.shutil, "rmtree", lambda folder: (_ for _ in ()).throw(Crash))
        SlowExponential.calls = 0
        with pytest.raises(Crash):
            run_slow(path, n=1000)
    run_slow(path, n=1000)
    assert digest(path) == digest(tmp_path / "reference.h5")
    assert sorted(os.listdir(tmp_path)) == ["d.h5", "reference.h5"]


@pytest.mark.parametrize("change", [dict(n=1200), dict(seed=6), dict(batch_size=100), dict(reference=[0.1]),
                                    dict(prior=sluice.priors.BoxUniform([-0.5], [0.6]))],
                         ids=["n", "seed", "batch_size", "reference", "prior"])
def test_resume_with_other_settings_is_refused_and_overwrite_starts_afresh(tmp_path, change):
    path = tmp_path / "d.h5"
    settings = dict(n=1000, seed=5, batch_size=200, reference=None, prior=Exponential().default_prior())
    with pytest.raises(Crash), pytest.MonkeyPatch.context() as patch:
        patch.setattr(sluice.data.writer.Checkpoint, "assemble", lambda self, dropped: (_ for _ in ()).throw(Crash))
        sluice.simulate(SlowExponential(), path=path, **settings)
    other = dict(settings, **change)
    with pytest.raises(ResumeError, match=f"other settings \\({list(change)[0]}: .* there, .* here"):
        sluice.simulate(SlowExponential(), path=path, **other)
    data = sluice.simulate(SlowExponential(), path=path, overwrite=True, **other)
    assert_same_rows(data, sluice.simulate(SlowExponential(), **other))


def test_an_existing_file_is_never_overwritten_unless_asked(tmp_path):
    path = tmp_path / "d.h5"
    path.write_bytes(b"the user's own file")
    with pytest.raises(FileExistsError, match="not a file written by sluice.simulate.*overwrite=True"):
        run_slow(path, n=400)
    assert path.read_bytes() == b"the user's own file"
    run_slow(path, n=400, overwrite=True)
    kept = digest(path)
    with pytest.raises(FileExistsError, match="other settings: n: 400 there, 600 here"):
        run_slow(path, n=600)
    assert digest(path) == kept
    os.mkdir(tmp_path / "e.h5.parts")  # a folder that is not sluice's is never deleted
    with pytest.raises(FileExistsError, match="not a sluice batch folder"):
        run_slow(tmp_path / "e.h5", n=400, overwrite=True)


def test_truncated_and_corrupt_files_fail_with_clear_errors(tmp_path):
    path = tmp_path / "d.h5"
    sluice.simulate(Exponential(), Exponential().default_prior(), 40_000, path=path)
    whole = path.read_bytes()
    (tmp_path / "truncated.h5").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        sluice.AugmentedData.open(tmp_path / "truncated.h5")
    with h5py.File(path, "r") as file:  # damage a data chunk in the middle of the file: its checksum catches it
        offset = file["x"].id.get_chunk_info(1).byte_offset
    damaged = bytearray(whole)
    damaged[offset + 100: offset + 108] = b"\xff" * 8
    (tmp_path / "damaged.h5").write_bytes(bytes(damaged))
    data = sluice.AugmentedData.open(tmp_path / "damaged.h5")  # the header is intact
    assert len(data[:1000]) == 1000
    with pytest.raises(ValueError, match="damaged.h5: rows cannot be read"):
        data[20_000:21_000]
    with pytest.raises(FileNotFoundError, match="no such data file"):
        sluice.AugmentedData.open(tmp_path / "absent.h5")


@pytest.mark.parametrize("field, value, message", [
    ("x", np.nan, r"'x' has NaN or inf in 1 of 1000 rows \(first at row 1234\)"),
    ("t_xz1", np.inf, r"'t_xz1' has NaN or inf in 1 of 1000 rows \(first at row 1234\)"),
    ("y", 0.5, "'y' must hold only 0 .* and 1"),
])
def test_rows_read_from_a_file_are_checked_like_arrays_given_to_the_constructor(tmp_path, field, value, message):
    path = tmp_path / "d.h5"
    sluice.simulate(Exponential(), Exponential().default_prior(), 3000, path=path)
    with h5py.File(path, "r+") as file:  # a value the constructor refuses, written behind sluice's back
        file[field][1234] = value
    data = sluice.AugmentedData.open(path)
    assert len(data[:1000]) == 1000 and len(data[2000:]) == 1000  # rows without it read as ever
    with pytest.raises(ValueError, match=f"d.h5: AugmentedData: field {message}"):
        data[1000:2000]
    with pytest.raises(ValueError, match=f"d.h5: AugmentedData: field '{field}'"):
        getattr(data, field)  # the whole column
    with pytest.raises(ValueError, match=f"d.h5: AugmentedData: field '{field}'"):
        sluice.AugmentedData.load(path)


def test_a_damaged_committed_batch_is_redone_on_resume(tmp_path):
    run_slow(tmp_path / "reference.h5", n=1000)
    path = tmp_path / "d.h5"
    with pytest.raises(Crash), pytest.MonkeyPatch.context() as patch:
        patch.setattr(sluice.data.writer.Checkpoint, "assemble", lambda self, dropped: (_ for _ in ()).throw(Crash))
        run_slow(path, n=1000)
    folder = tmp_path / "d.h5.parts"
    batch = folder / "batch-00000002.h5"
    batch.write_bytes(batch.read_bytes()[:3000])  # cut short by a failing disk
    (folder / ".batch-00000003.h5.x1y2.partial").write_bytes(b"half a batch")  # a write that never committed
    with pytest.raises(FileNotFoundError, match="unfinished: 5 batches are committed"):
        sluice.AugmentedData.open(path)
    SlowExponential.calls = 0
    with pytest.warns(RuntimeWarning, match="batch-00000002.h5 is damaged .* batch 2 will be simulated again"):
        run_slow(path, n=1000)
    assert SlowExponential.calls == 1 and digest(path) == digest(tmp_path / "reference.h5")


def test_on_disk_split_holds_out_whole_blocks_reproducibly(tmp_path):
    data = sluice.AugmentedData.open(run_slow(tmp_path / "d.h5", n=3000).path, block_rows=100)
    rest, held = data.split(0.2, seed=1)
    assert isinstance(held, OnDiskData) and len(held) == 600 and len(rest) == 2400
    assert all(stop - start == 100 for start, stop in held.blocks)
    everything = torch.cat([rest.x[:, 0], held.x[:, 0]]).sort().values
    assert torch.equal(everything, data.x[:, 0].sort().values)
    assert held.blocks == data.split(0.2, seed=1)[1].blocks != data.split(0.2, seed=2)[1].blocks


def test_training_reads_an_on_disk_file_in_bounded_memory(tmp_path, monkeypatch):
    board = sluice.simulators.GaltonBoard()
    path = tmp_path / "g.h5"
    sluice.simulate(board, board.default_prior(), 20_000, seed=0, path=path)
    data = sluice.AugmentedData.open(path, block_rows=500, blocks_in_memory=2, statistics_rows=2000)
    largest, unwatched_getitem = [], OnDiskData.__getitem__

    def recording_reads(self, index):
        rows = unwatched_getitem(self, index)
        largest.append(len(rows))
        return rows

    monkeypatch.setattr(OnDiskData, "__getitem__", recording_reads)
    torch.manual_seed(0)
    from_disk = sluice.estimators.ALICES().fit(data, epochs=3)
    assert max(largest) <= 2000 + 500 + 2  # the statistics sample; training holds 2 blocks of 500 at a time
    assert sum(size == 1000 for size in largest) > 20 and data.rows_read == 0  # views were split off and read
    monkeypatch.undo()
    in_memory = sluice.estimators.ALICES().fit(data.load(), epochs=3)
    x = torch.arange(5.0, 26.0)[:, None]
    assert np.isfinite(from_disk.history_.validation_loss).all()
    assert from_disk.history_.validation_loss[-1] == pytest.approx(in_memory.history_.validation_loss[-1], rel=0.1)
    assert torch.allclose(from_disk.score(x, torch.tensor([-0.7])), in_memory.score(x, torch.tensor([-0.7])),
                          atol=0.5)


@st.composite
def views_and_indices(draw):
    n = draw(st.integers(2, 300))
    block_rows = draw(st.integers(1, 64))
    split = draw(st.sampled_from([None, "rest", "held"]))
    kind = draw(st.sampled_from(["slice", "int", "indices", "mask"]))
    return n, block_rows, split, kind, draw(st.randoms(use_true_random=False))


@settings(max_examples=40, deadline=None)
@given(views_and_indices())
def test_any_read_of_an_on_disk_view_equals_the_same_read_in_memory(tmp_path_factory, case):
    n, block_rows, split, kind, random = case
    rng = np.random.default_rng(random.randrange(2**32))
    in_memory = sluice.AugmentedData(theta0=rng.normal(size=(n, 2)), theta1=rng.normal(size=(n, 2)),
                                     y=rng.integers(0, 2, n), x=rng.normal(size=(n, 3)), log_r_xz=rng.normal(size=n))
    path = tmp_path_factory.mktemp("view") / "d.h5"
    in_memory.save(path)
    view = sluice.AugmentedData.open(path, block_rows=block_rows)
    if split is not None and len(view.blocks) > 1:
        view = view.split(0.3, seed=random.randrange(100))[0 if split == "rest" else 1]
        in_memory = in_memory[np.concatenate([np.arange(start, stop) for start, stop in view.blocks])]
    m = len(view)
    index = {"slice": slice(random.randrange(-m, m), random.randrange(-m, m + 5), random.choice([1, 2, 3, -1])),
             "int": random.randrange(-m, m),
             "indices": [random.randrange(-m, m) for _ in range(random.randrange(0, 20))],
             "mask": rng.random(m) < 0.4}[kind]
    rows = np.atleast_1d(np.arange(m)[index])  # numpy's meaning of the index
    assert_same_rows(view[index], in_memory[rows])
    assert_same_rows(in_memory[index], in_memory[rows])  # one meaning in memory and on disk
    assert view.parameter_names == in_memory.parameter_names and len(view) == len(in_memory)
