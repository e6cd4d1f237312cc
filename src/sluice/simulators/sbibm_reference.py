"""sbibm's reference data, read from the sbibm 1.1.0 wheel (a zip archive; sbibm itself is never imported, since its
dependency pins conflict with sluice's): per task and observation 1 … 10, the observation x_o, the reference
posterior samples and the true parameters (Lueckmann et al., "Benchmarking simulation-based inference", 2021)."""

from __future__ import annotations

import bz2
import io
import os
import zipfile

import numpy as np
import torch

__all__ = ["load_reference", "WHEEL_ENVIRONMENT_VARIABLE"]

WHEEL_ENVIRONMENT_VARIABLE = "SLUICE_SBIBM_WHEEL"


def _wheel_path(wheel) -> str:
    """The wheel to read: ``wheel`` if given, else the environment variable, else a FileNotFoundError saying how to
    get it."""
    wheel = wheel if wheel is not None else os.environ.get(WHEEL_ENVIRONMENT_VARIABLE)
    if not wheel:
        raise FileNotFoundError(
            "the sbibm reference data come from the sbibm 1.1.0 wheel: download it with "
            "`pip download sbibm==1.1.0 --no-deps -d DIR` and pass wheel=DIR/sbibm-1.1.0-py2.py3-none-any.whl, or set "
            f"{WHEEL_ENVIRONMENT_VARIABLE} to that path")
    if not os.path.isfile(wheel):
        raise FileNotFoundError(f"no sbibm wheel at {wheel!r} (get it with "
                                "`pip download sbibm==1.1.0 --no-deps -d DIR`)")
    return str(wheel)


def _read_csv(archive: zipfile.ZipFile, member: str) -> np.ndarray:
    """A csv of sbibm's (one header line, then rows of floats), ``.bz2`` decompressed, as float32 ``[rows, cols]``."""
    raw = archive.read(member)
    if member.endswith(".bz2"):
        raw = bz2.decompress(raw)
    return np.atleast_2d(np.loadtxt(io.StringIO(raw.decode("ascii")), delimiter=",", skiprows=1, dtype=np.float64)) \
        .astype(np.float32)


def load_reference(task, observation: int, wheel=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """sbibm's reference data for ``task`` (its name, e.g. ``"two_moons"``, or one of the simulators here) and
    ``observation`` (1 … 10), read from the sbibm 1.1.0 wheel at ``wheel`` (else the path in the environment
    variable ``SLUICE_SBIBM_WHEEL``).

    Returns float32 tensors: the observation x_o ``[1, d]``, the reference posterior samples ``[10000, p]`` and the
    true parameters θ* ``[p]`` from which x_o was simulated.
    """
    name = str(getattr(task, "task_name", task))  # a simulator of sluice.simulators.sbibm, or a name
    if isinstance(observation, bool) or not isinstance(observation, int) or not 1 <= observation <= 10:
        raise ValueError(f"sbibm observations are numbered 1 … 10, got {observation!r}")
    with zipfile.ZipFile(_wheel_path(wheel)) as archive:
        folder = f"sbibm/tasks/{name}/files/num_observation_{observation}/"
        members = set(archive.namelist())
        if folder + "observation.csv" not in members:
            known = sorted({member.split("/")[2] for member in members
                            if member.startswith("sbibm/tasks/") and "/files/num_observation_" in member})
            raise ValueError(f"the sbibm wheel has no task {name!r}; it has {known}")
        x_o = _read_csv(archive, folder + "observation.csv")
        samples = _read_csv(archive, folder + "reference_posterior_samples.csv.bz2")
        true_theta = _read_csv(archive, folder + "true_parameters.csv")[0]
    return torch.from_numpy(x_o), torch.from_numpy(samples), torch.from_numpy(true_theta)
