"""Resumable output of ``sluice.simulate(..., path=...)``: one file per committed batch, assembled at the end.

While ``simulate(..., path="data.h5")`` runs, each finished batch goes to ``data.h5.parts/batch-00000012.h5``
through ``storage.write_file`` (temporary name, fsync, rename). The rename is the commit, and POSIX rename is
atomic: a batch file under its final name is whole, and nothing else is ever read. The folder is born with
its ``run.json`` (the settings) already inside: both are made under a temporary name and renamed into place.
When every batch is in, they are copied in order into ``data.h5`` (temporary name, fsync, rename) and the
folder is removed.

So a kill -9 at any moment leaves one of: nothing; the folder with some committed batches (and perhaps a
dead ``*.partial``, deleted on resume); the folder with every batch (the assembly is redone); the finished
file beside a leftover folder (removed). A rerun of the same call keeps the committed batches and redoes
the rest, and, since a batch's rows depend only on (seed, batch index), writes the same file as an
uninterrupted run, byte for byte. Committed batches are re-read on resume (each chunk carries a Fletcher-32
checksum): a damaged one is reported and simulated again. A call with other settings (simulator and its
constructor arguments, prior, n, seed, batch size, reference, finite-difference step) is refused with
``ResumeError``, never mixed in; ``overwrite=True`` discards the unfinished run and starts afresh.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..simulators.priors import sample_prior
from .augmented import AugmentedData, save_file
from .storage import (
    BATCH_FILE,
    RUN_FILE,
    Header,
    batch_path,
    fsync,
    parts_folder,
    read_header,
    read_ranges,
    temporary_prefix,
    write_file,
)

__all__ = ["ResumeError", "Checkpoint", "describe_run", "prior_digest"]


class ResumeError(ValueError):
    """An unfinished simulation at this path was started with other settings."""


def _plain(value):
    """A JSON description of a setting; tensors and arrays by value, or by digest when large."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if torch.is_tensor(value) or isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value.detach().cpu().numpy() if torch.is_tensor(value) else value)
        if array.size <= 64:
            return array.tolist()
        return {"shape": list(array.shape), "sha256": hashlib.sha256(array.tobytes()).hexdigest()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    return type(value).__qualname__


def prior_digest(prior) -> str:
    """SHA-256 of 256 draws of ``prior`` at a fixed seed: equal digests mean (almost surely) the same prior."""
    draws = sample_prior(prior, 256, seed=20_240_601).numpy()
    return hashlib.sha256(draws.tobytes()).hexdigest()


def describe_run(simulator, prior, n: int, seed: int, batch_size: int, reference, fd_step: float) -> dict:
    """The settings that fix a simulation's rows. The simulator is described by its name, class and constructor
    arguments (read back from attributes of the same names); the prior by its class and a digest of 256 draws at
    a fixed seed (any change to its parameters changes them). ``about`` is information only, never compared."""
    arguments = [name for name, parameter in inspect.signature(type(simulator).__init__).parameters.items()
                 if name != "self" and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)]
    settings = {
        "simulator": simulator.name, "simulator_class": type(simulator).__qualname__,
        "simulator_arguments": {name: _plain(getattr(simulator, name)) for name in arguments
                                if hasattr(simulator, name)},
        "parameter_names": list(simulator.parameter_names),
        "prior": {"class": type(prior).__qualname__, "draws_sha256": prior_digest(prior)},
        "n": n, "seed": seed, "batch_size": batch_size, "reference": _plain(reference), "fd_step": fd_step,
        "about": {"prior": repr(prior)},
    }
    return json.loads(json.dumps(settings, sort_keys=True))


def _differences(theirs: dict, ours: dict) -> list[str]:
    keys = sorted((set(theirs) | set(ours)) - {"about"})
    return [f"{key}: {theirs.get(key)!r} there, {ours.get(key)!r} here" for key in keys
            if theirs.get(key) != ours.get(key)]


def _digest(settings: dict) -> str:
    compared = {key: value for key, value in settings.items() if key != "about"}
    return hashlib.sha256(json.dumps(compared, sort_keys=True).encode()).hexdigest()


@dataclass
class Committed:
    """A committed batch: its rows (after dropping NaN/inf rows) and the dropped counts by field."""

    rows: int
    dropped: dict


class Checkpoint:
    """The batch folder of one output file (module notes). ``start``, then ``committed``, ``commit`` per batch,
    and ``assemble`` once every batch is in."""

    def __init__(self, path, settings: dict, n_batches: int):
        self.path, self.folder = os.fspath(path), parts_folder(path)
        self.settings, self.n_batches, self.digest = settings, n_batches, _digest(settings)

    def _run(self) -> dict | None:
        if not os.path.exists(self.folder):
            return None
        try:
            with open(os.path.join(self.folder, RUN_FILE)) as file:
                return json.load(file)
        except (OSError, ValueError):
            raise FileExistsError(f"{self.folder} exists but is not a sluice batch folder (no readable {RUN_FILE}); "
                                  "move it away") from None

    def _finished_settings(self) -> tuple[bool, dict | None]:
        """(whether the output file exists, the settings it records if sluice.simulate wrote it)."""
        if not os.path.exists(self.path):
            return False, None
        try:
            return True, read_header(self.path).attributes.get("simulation")
        except ValueError:
            return True, None

    def _refuse_existing(self, recorded: dict | None):
        detail = " (not a file written by sluice.simulate)" if recorded is None else \
            f" (a simulation with other settings: {'; '.join(_differences(recorded, self.settings))})"
        raise FileExistsError(f"{self.path} exists{detail}; pass overwrite=True (--overwrite on the command line) "
                              "to replace it")

    def start(self, overwrite: bool) -> bool:
        """Prepare to run; True when the finished file with these very settings exists (nothing to do)."""
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"cannot write {self.path}: the folder {folder} does not exist")
        for name in os.listdir(folder):  # temporaries of a run that died: nothing reads them
            full = os.path.join(folder, name)
            if name.startswith(temporary_prefix(self.path)) and name.endswith((".partial", ".parts-partial")):
                shutil.rmtree(full) if os.path.isdir(full) else os.remove(full)
        run = self._run()
        exists, recorded = self._finished_settings()
        if overwrite:
            if run is not None:
                shutil.rmtree(self.folder)
            self._create(replaces=True)
            return False
        if recorded is not None and not _differences(recorded, self.settings):
            if run is not None and not _differences(run["settings"], self.settings):
                shutil.rmtree(self.folder)  # killed after the assembly, before the clean-up
            return True
        if run is not None:
            if _differences(run["settings"], self.settings):
                raise ResumeError(f"{self.path}: the unfinished simulation in {self.folder} has other settings "
                                  f"({'; '.join(_differences(run['settings'], self.settings))}); rerun it with its "
                                  "own settings to finish it, or pass overwrite=True (--overwrite) to discard it")
            if exists and not run["replaces"]:
                self._refuse_existing(recorded)
            return False
        if exists:
            self._refuse_existing(recorded)
        self._create(replaces=False)
        return False

    def _create(self, replaces: bool) -> None:
        folder = os.path.dirname(os.path.abspath(self.path))
        temporary = tempfile.mkdtemp(prefix=temporary_prefix(self.path), suffix=".parts-partial", dir=folder)
        with open(os.path.join(temporary, RUN_FILE), "w") as file:
            json.dump({"settings": self.settings, "replaces": replaces, "n_batches": self.n_batches}, file,
                      indent=1, sort_keys=True)
        fsync(os.path.join(temporary, RUN_FILE))
        os.rename(temporary, self.folder)
        fsync(folder)

    def committed(self) -> dict[int, Committed]:
        """The committed batches by index, each re-read in full; a damaged one is removed (and redone)."""
        found = {}
        for name in sorted(os.listdir(self.folder)):
            full = os.path.join(self.folder, name)
            if name.endswith(".partial"):
                os.remove(full)  # a batch being written when the run died
                continue
            match = BATCH_FILE.fullmatch(name)
            if not match:
                continue
            index = int(match[1])
            try:
                header = read_header(full)
                batch = header.attributes["batch"]
                if batch["index"] != index or batch["digest"] != self.digest or index >= self.n_batches:
                    raise ValueError("it belongs to another batch or run")
                AugmentedData.load(full)  # reads every chunk: a checksum or a value that is off is an error
            except (ValueError, KeyError, OSError) as error:
                warnings.warn(f"{full} is damaged ({str(error).splitlines()[0]}); batch {index} will be simulated "
                              "again", RuntimeWarning, stacklevel=3)
                os.remove(full)
                continue
            found[index] = Committed(header.n, batch["dropped"])
        return found

    def commit(self, index: int, start: int, stop: int, data: AugmentedData, dropped: dict) -> None:
        batch = {"index": index, "start": start, "stop": stop, "dropped": dropped, "digest": self.digest}
        save_file(data, batch_path(self.path, index), overwrite=True, attributes={"batch": batch},
                  sync_folder=False)  # a batch lost with its folder entry in a power cut is simply redone

    def assemble(self, dropped: dict) -> None:
        """Copy every batch, in order, into the output file (atomically), then remove the folder."""
        paths = [batch_path(self.path, index) for index in range(self.n_batches)]
        headers = [read_header(path) for path in paths]
        first = headers[0]
        header = Header(self.path, sum(h.n for h in headers), first.parameter_names, first.simulator_name,
                        first.shapes, {"simulation": self.settings, "dropped_rows": dropped})
        # batches were checked when committed (or re-read on resume): copied as stored
        parts = (read_ranges(part, [(0, part.n)], list(part.shapes)) for part in headers)
        write_file(self.path, header, parts, overwrite=True)
        shutil.rmtree(self.folder)
