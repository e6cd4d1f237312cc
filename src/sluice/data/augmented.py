"""AugmentedData: simulated rows (θ0, θ1, y, x) with the mined joint ratio and scores; HDF5 storage."""

from __future__ import annotations

import os
from dataclasses import dataclass

import h5py
import numpy as np
import torch

__all__ = ["AugmentedData"]

FORMAT_NAME = "sluice.AugmentedData"
FORMAT_VERSION = 1
JOINT_FIELDS = ("log_r_xz", "t_xz0", "t_xz1")
FIELDS = ("theta0", "theta1", "y", "x") + JOINT_FIELDS

_MEANING = {
    "theta0": "θ0",
    "theta1": "θ1",
    "y": "the label (0: x drawn at θ0, 1: at θ1)",
    "x": "the simulator output",
    "log_r_xz": "the joint log ratio log r(x,z|θ0,θ1)",
    "t_xz0": "the joint score t(x,z|θ0)",
    "t_xz1": "the joint score t(x,z|θ1)",
}


def _as_float_tensor(name: str, value) -> torch.Tensor:
    try:
        array = np.asarray(value.detach().cpu() if torch.is_tensor(value) else value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"AugmentedData: field '{name}' cannot be read as a numeric array ({error})") from None
    if array.dtype.kind not in "biuf":
        raise ValueError(f"AugmentedData: field '{name}' must be numeric, got dtype {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


@dataclass(frozen=True)
class _Shapes:
    n: int
    p: int


class AugmentedData:
    """Rows of augmented simulation data; row i holds

    ``theta0``, ``theta1`` [n, p]; ``y`` [n] (0: x drawn at θ0, 1: at θ1); ``x`` [n, d] (or [n, ...]);
    ``log_r_xz`` [n] = log p(x,z|θ0) − log p(x,z|θ1); ``t_xz0``, ``t_xz1`` [n, p], the joint scores.
    The joint fields may be None (black-box data). Derived: ``theta`` and ``t_xz``, the θ that generated
    x and the joint score there.

    Built from arrays, every field is checked: shapes, lengths that agree, y in {0, 1}, no NaN or inf;
    a bad field raises ``ValueError`` naming it.
    """

    def __init__(self, theta0, theta1, y, x, log_r_xz=None, t_xz0=None, t_xz1=None,
                 parameter_names=None, simulator_name: str | None = None):
        given = dict(theta0=theta0, theta1=theta1, y=y, x=x, log_r_xz=log_r_xz, t_xz0=t_xz0, t_xz1=t_xz1)
        tensors = {name: None if value is None else _as_float_tensor(name, value) for name, value in given.items()}
        for name in ("theta0", "theta1", "y", "x"):
            if tensors[name] is None:
                raise ValueError(f"AugmentedData: field '{name}' ({_MEANING[name]}) is required")
        shapes = self._check_shapes(tensors)
        for name, tensor in tensors.items():
            if tensor is not None:
                bad = ~torch.isfinite(tensor.reshape(shapes.n, -1)).all(dim=1)
                if bad.any():
                    raise ValueError(f"AugmentedData: field '{name}' has NaN or inf in {int(bad.sum())} of "
                                     f"{shapes.n} rows (first at row {int(bad.nonzero()[0, 0])})")
        y_values = tensors["y"]
        if not torch.all((y_values == 0) | (y_values == 1)):
            raise ValueError("AugmentedData: field 'y' must hold only 0 (x drawn at θ0) and 1 (x drawn at θ1)")
        if parameter_names is None:
            parameter_names = tuple(f"theta_{j}" for j in range(shapes.p))
        parameter_names = tuple(str(name) for name in parameter_names)
        if len(parameter_names) != shapes.p:
            raise ValueError(f"AugmentedData: parameter_names has {len(parameter_names)} names but theta0 has "
                             f"{shapes.p} columns")
        for name, tensor in tensors.items():
            setattr(self, name, tensor)
        self.parameter_names = parameter_names
        self.simulator_name = simulator_name

    @classmethod
    def _trusted(cls, fields: dict, parameter_names: tuple, simulator_name: str | None) -> AugmentedData:
        """Build from float32 tensors already known to be valid (slices, batches we checked), skipping checks."""
        data = object.__new__(cls)
        for name in FIELDS:
            setattr(data, name, fields.get(name))
        data.parameter_names, data.simulator_name = parameter_names, simulator_name
        return data

    @staticmethod
    def _check_shapes(tensors: dict) -> _Shapes:
        theta0 = tensors["theta0"]
        if theta0.ndim != 2:
            raise ValueError(f"AugmentedData: field 'theta0' must have shape [n, p], got {list(theta0.shape)}")
        n, p = theta0.shape
        expected = {"theta1": (n, p), "y": (n,), "log_r_xz": (n,), "t_xz0": (n, p), "t_xz1": (n, p)}
        for name, shape in expected.items():
            tensor = tensors[name]
            if tensor is not None and tuple(tensor.shape) != shape:
                raise ValueError(f"AugmentedData: field '{name}' must have shape {list(shape)} "
                                 f"(n = {n} rows from theta0, p = {p}), got {list(tensor.shape)}")
        x = tensors["x"]
        if x.ndim < 2 or x.shape[0] != n:
            hint = "; use x[:, None] for a scalar output" if x.ndim == 1 and x.shape[0] == n else ""
            raise ValueError(f"AugmentedData: field 'x' must have shape [n, d] (or [n, ...], e.g. images "
                             f"[n, H, W]) with n = {n}, got {list(x.shape)}{hint}")
        return _Shapes(n, p)

    # --- views ------------------------------------------------------------------------------------------
    @property
    def theta(self) -> torch.Tensor:
        """The θ that generated each x: θ0 where y = 0, θ1 where y = 1. ``[n, p]``"""
        return torch.where(self.y[:, None] == 0, self.theta0, self.theta1)

    @property
    def t_xz(self) -> torch.Tensor | None:
        """The joint score at the θ that generated each x. ``[n, p]``, or None without scores."""
        if self.t_xz0 is None or self.t_xz1 is None:
            return None
        return torch.where(self.y[:, None] == 0, self.t_xz0, self.t_xz1)

    @property
    def n_parameters(self) -> int:
        return self.theta0.shape[1]

    def has(self, field: str) -> bool:
        return getattr(self, field, None) is not None

    def require(self, fields, user: str) -> None:
        """Raise a ValueError naming each field in ``fields`` that this data lacks."""
        missing = [name for name in fields if not self.has(name)]
        if missing:
            described = ", ".join(f"'{name}' ({_MEANING[name]})" for name in missing)
            source = f"data from {self.simulator_name}" if self.simulator_name else "this data"
            raise ValueError(f"{user} needs {described}, which {source} does not have (black-box data: its simulator "
                             f"has no joint_log_prob); simulate it from a simulator with joint_log_prob, or pass "
                             f"the joint fields to AugmentedData. Black-box methods (CARL, NDE) train on it as it is")

    def fields(self) -> dict:
        """The stored fields by name (joint fields may be None)."""
        return {name: getattr(self, name) for name in FIELDS}

    def __len__(self) -> int:
        return self.theta0.shape[0]

    def __getitem__(self, index) -> AugmentedData:
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        elif not isinstance(index, slice):
            index = torch.as_tensor(np.asarray(index) if not torch.is_tensor(index) else index)
        parts = {name: None if value is None else value[index] for name, value in self.fields().items()}
        return self._trusted(parts, self.parameter_names, self.simulator_name)

    def split(self, fraction: float, seed: int = 0) -> tuple[AugmentedData, AugmentedData]:
        """Random split into (the rest, a held-out part of ``round(fraction·n)`` rows), e.g. train/validation."""
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"split: fraction must lie strictly between 0 and 1, got {fraction}")
        held = int(round(fraction * len(self)))
        if held == 0 or held == len(self):
            raise ValueError(f"split: a fraction of {fraction} of {len(self)} rows leaves one part empty")
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        return self[order[held:]], self[order[:held]]

    @classmethod
    def concatenate(cls, parts) -> AugmentedData:
        """Rows of several AugmentedData with the same parameters, one after another."""
        parts = list(parts)
        if not parts:
            raise ValueError("concatenate: no parts given")
        names = {part.parameter_names for part in parts}
        if len(names) > 1:
            raise ValueError(f"concatenate: the parts have different parameter names {sorted(names)}")
        merged = {}
        for name in FIELDS:
            values = [getattr(part, name) for part in parts]
            merged[name] = None if any(value is None for value in values) else torch.cat(values)
        if len({tuple(part.x.shape[1:]) for part in parts}) > 1:
            raise ValueError("concatenate: the parts have x of different shapes")
        return cls._trusted(merged, parts[0].parameter_names, parts[0].simulator_name)

    def __repr__(self) -> str:
        joint = [name for name in JOINT_FIELDS if self.has(name)]
        return (f"AugmentedData(n={len(self)}, parameters={list(self.parameter_names)}, "
                f"x={list(self.x.shape[1:])}, joint={joint}, simulator={self.simulator_name!r})")

    # --- storage ----------------------------------------------------------------------------------------
    def save(self, path, overwrite: bool = False) -> None:
        """Write to an HDF5 file (layout in ``sluice.storage``). An existing file is kept unless
        ``overwrite=True``; the write is atomic (a temporary file in the same folder, flushed and renamed into
        place), so a crash never leaves half a file."""
        from .storage import header_of, write_file

        write_file(path, header_of(self), [self], overwrite)

    @classmethod
    def load(cls, path) -> AugmentedData:
        """Read a whole file into memory; a missing, truncated, corrupt or foreign file gets a clear error.
        For files too large for memory use ``open``."""
        from .storage import read_header
        from .writer import unfinished_hint

        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such data file: {path}{unfinished_hint(path)}")
        header = read_header(path)
        try:
            with h5py.File(path, "r") as file:
                arrays = {name: torch.from_numpy(file[name][...]) if name in file else None for name in FIELDS}
        except OSError as error:
            raise ValueError(f"{path} cannot be read as HDF5 (truncated or corrupt?): {error}") from None
        return cls(**arrays, parameter_names=header.parameter_names, simulator_name=header.simulator_name)

    @classmethod
    def open(cls, path, partial: bool = False, block_rows: int | None = None, blocks_in_memory: int = 4,
             statistics_rows: int = 100_000):
        """The file as ``sluice.ondisk.OnDiskData``: read-only, its rows read only when asked for, so a file
        larger than memory can be sliced, split and trained on (``Estimator.fit`` reads it block by block).

        ``partial=True`` opens the batches committed so far by an unfinished (or killed) ``sluice.simulate(...,
        path=path)`` when the file itself does not exist yet. ``block_rows`` (default: about n/64, at most
        16 384 and 16 MiB), ``blocks_in_memory`` and ``statistics_rows`` set how training reads it (see OnDiskData)."""
        from .writer import open_data

        return open_data(path, partial, block_rows=block_rows, blocks_in_memory=blocks_in_memory,
                         statistics_rows=statistics_rows)
