"""AugmentedData: simulated rows (θ0, θ1, y, x) with the mined joint ratio and scores, in memory or on disk.

Both containers keep their rows in a row source (``row_sources``): AugmentedData in tensors, OnDiskData (what
``AugmentedData.open`` returns) in HDF5 files. Slicing, columns, saving and loading go through the source's one
``read``, so data in memory and on disk answer alike; a slice of either is in memory.
"""

from __future__ import annotations

import numpy as np
import torch

from .fields import FIELDS, JOINT_FIELDS, MEANING, checked
from .row_sources import FileRows, TensorRows, row_numbers
from .storage import Header, read_headers, write_file

__all__ = ["FIELDS", "JOINT_FIELDS", "AugmentedData", "OnDiskData", "save_file"]

MAX_EXTREME_COLUMNS = 64  # statistics_sample adds the extreme rows of x only for x this narrow or narrower


class _Column:
    """A stored field, read from the row source on access (None where the data lack it); read-only, since the
    rows live in the source (a new AugmentedData takes changed arrays)."""

    def __set_name__(self, owner, name: str):
        self.name = name

    def __get__(self, data, owner=None):
        if data is None:
            return self
        return data._rows.read(slice(0, len(data), 1), [self.name])[self.name] if data.has(self.name) else None

    def __set__(self, data, value):
        raise AttributeError(f"AugmentedData's field '{self.name}' is read-only; build a new AugmentedData from "
                             "the changed arrays")


class AugmentedData:
    """Rows of augmented simulation data; row i holds

    ``theta0``, ``theta1`` [n, p]; ``y`` [n] (0: x drawn at θ0, 1: at θ1); ``x`` [n, d] (or [n, ...]);
    ``log_r_xz`` [n] = log p(x,z|θ0) − log p(x,z|θ1); ``t_xz0``, ``t_xz1`` [n, p], the joint scores.
    The joint fields may be None (black-box data). Derived: ``theta`` and ``t_xz``, the θ that generated
    x and the joint score there.

    Built from arrays, every field is checked: shapes, lengths that agree, y in {0, 1}, no NaN or inf;
    a bad field raises ``ValueError`` naming it.
    """

    # the stored fields: in memory a view of the tensor, on disk the whole column read
    theta0, theta1, y, x = _Column(), _Column(), _Column(), _Column()
    log_r_xz, t_xz0, t_xz1 = _Column(), _Column(), _Column()

    def __init__(self, theta0, theta1, y, x, log_r_xz=None, t_xz0=None, t_xz1=None,
                 parameter_names=None, simulator_name: str | None = None):
        given = dict(theta0=theta0, theta1=theta1, y=y, x=x, log_r_xz=log_r_xz, t_xz0=t_xz0, t_xz1=t_xz1)
        tensors, self.parameter_names = checked(given, parameter_names)
        self._rows = TensorRows(tensors)
        self.simulator_name = simulator_name

    @classmethod
    def _trusted(cls, fields: dict, parameter_names: tuple, simulator_name: str | None) -> AugmentedData:
        """Build from float32 tensors already known to be valid (slices, batches we checked), skipping checks."""
        data = object.__new__(cls)
        data._rows = TensorRows({name: fields.get(name) for name in FIELDS})
        data.parameter_names, data.simulator_name = tuple(parameter_names), simulator_name
        return data

    # --- views ------------------------------------------------------------------------------------------
    @property
    def theta(self) -> torch.Tensor:
        """The θ that generated each x: θ0 where y = 0, θ1 where y = 1. ``[n, p]``"""
        return torch.where(self.y[:, None] == 0, self.theta0, self.theta1)

    @property
    def t_xz(self) -> torch.Tensor | None:
        """The joint score at the θ that generated each x. ``[n, p]``, or None without scores."""
        if not (self.has("t_xz0") and self.has("t_xz1")):
            return None
        return torch.where(self.y[:, None] == 0, self.t_xz0, self.t_xz1)

    @property
    def n_parameters(self) -> int:
        return len(self.parameter_names)

    def has(self, field: str) -> bool:
        """Whether the data hold the stored field ``field`` (one of FIELDS), without reading it."""
        return field in self._rows.shapes

    def require(self, fields, user: str) -> None:
        """Raise a ValueError naming each field in ``fields`` that this data lacks."""
        missing = [name for name in fields if not self.has(name)]
        if missing:
            described = ", ".join(f"'{name}' ({MEANING[name]})" for name in missing)
            source = f"data from {self.simulator_name}" if self.simulator_name else "this data"
            raise ValueError(f"{user} needs {described}, which {source} does not have (black-box data: its simulator "
                             f"has no joint_log_prob); simulate it from a simulator with joint_log_prob, or pass "
                             f"the joint fields to AugmentedData. Black-box methods (CARL, NDE) train on it as it is")

    def fields(self) -> dict:
        """The stored fields by name (joint fields may be None)."""
        return {name: getattr(self, name) for name in FIELDS}

    def __len__(self) -> int:
        return self._rows.n

    def __getitem__(self, index) -> AugmentedData:
        """The rows ``index`` selects (an int, a slice, a boolean mask, row numbers; numpy's meaning), in memory."""
        read = self._rows.read(row_numbers(index, len(self)), list(self._rows.shapes))
        return self._trusted(read, self.parameter_names, self.simulator_name)

    def split(self, fraction: float, seed: int = 0) -> tuple[AugmentedData, AugmentedData]:
        """Random split into (the rest, a held-out part of ``round(fraction·n)`` rows), e.g. train/validation."""
        _check_fraction(fraction)
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
        if len({tuple(part.x.shape[1:]) for part in parts}) > 1:
            raise ValueError("concatenate: the parts have x of different shapes")
        merged = {}
        for name in FIELDS:
            values = [getattr(part, name) for part in parts]
            merged[name] = None if any(value is None for value in values) else torch.cat(values)
        return cls._trusted(merged, parts[0].parameter_names, parts[0].simulator_name)

    def __repr__(self) -> str:
        joint = [name for name in JOINT_FIELDS if self.has(name)]
        return (f"AugmentedData(n={len(self)}, parameters={list(self.parameter_names)}, "
                f"x={list(self._rows.shapes['x'])}, joint={joint}, simulator={self.simulator_name!r})")

    # --- files ------------------------------------------------------------------------------------------
    def _parts(self):
        """The rows in memory, in order, a bounded number at a time (for writing them to a file)."""
        yield self

    def save(self, path, overwrite: bool = False) -> None:
        """Write to an HDF5 file (layout in ``sluice.data.storage``). An existing file is kept unless
        ``overwrite=True``; the write is atomic (a temporary file in the same folder, flushed and renamed into
        place), so a crash never leaves half a file."""
        save_file(self, path, overwrite)

    @classmethod
    def load(cls, path) -> AugmentedData:
        """Read a whole file into memory; a missing, truncated, corrupt or foreign file gets a clear error.
        For files too large for memory use ``open``."""
        return cls.open(path)[:]

    @classmethod
    def open(cls, path, partial: bool = False, block_rows: int | None = None, blocks_in_memory: int = 4,
             statistics_rows: int = 100_000) -> OnDiskData:
        """The file as ``OnDiskData``: read-only, its rows read only when asked for, so a file larger than
        memory can be sliced, split and trained on (``Estimator.fit`` reads it block by block).

        ``partial=True`` opens the batches committed so far by an unfinished (or killed) ``sluice.simulate(...,
        path=path)`` when the file itself does not exist yet. ``block_rows`` (default: about n/64, at most
        16 384 and 16 MiB), ``blocks_in_memory`` and ``statistics_rows`` set how training reads it (see OnDiskData)."""
        return OnDiskData(FileRows(read_headers(path, partial), block_rows=block_rows), blocks_in_memory,
                          statistics_rows)


def save_file(data: AugmentedData, path, overwrite: bool = False, attributes: dict | None = None,
              sync_folder: bool = True) -> None:
    """``data.save``, with extra JSON ``attributes`` for the file's header (see ``storage.write_file``)."""
    shapes = {name: tuple(shape) for name, shape in data._rows.shapes.items()}
    header = Header("", len(data), tuple(data.parameter_names), data.simulator_name, shapes, dict(attributes or {}))
    parts = ({name: getattr(part, name).numpy() for name in shapes} for part in data._parts())
    write_file(path, header, parts, overwrite, sync_folder)


def _check_fraction(fraction: float) -> None:
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"split: fraction must lie strictly between 0 and 1, got {fraction}")


class OnDiskData(AugmentedData):
    """A read-only AugmentedData whose rows stay in HDF5 files (``AugmentedData.open(path)``, or ``simulate(...,
    path=path)``) and are read only when asked for, every read checked like the constructor's arrays.

    ``len``, ``parameter_names``, ``simulator_name``, ``settings`` (how ``sluice.simulate`` made it), ``nbytes``
    need no reading. ``data[i:j]``, ``data[mask]``, ``data[indices]`` read just those rows into an in-memory
    AugmentedData; ``data.x`` (any field) reads that whole column; ``load()`` reads everything. ``split(fraction,
    seed)`` holds out whole blocks of ``block_rows`` consecutive rows (round(fraction · blocks), at least one),
    as on-disk views. For training (``sluice.estimators.training``): ``read_blocks`` reads chosen blocks,
    ``statistics_sample`` a bounded sample; ``blocks_in_memory`` blocks are shuffled together in each step.
    """

    def __init__(self, rows: FileRows, blocks_in_memory: int = 4, statistics_rows: int = 100_000):
        self._rows = rows
        first = rows.headers[0]
        self.parameter_names, self.simulator_name = first.parameter_names, first.simulator_name
        self.blocks_in_memory = int(blocks_in_memory)
        self.statistics_rows = int(statistics_rows)

    @classmethod
    def _trusted(cls, fields, parameter_names, simulator_name) -> AugmentedData:
        return AugmentedData._trusted(fields, parameter_names, simulator_name)  # anything read is in memory

    def _view(self, blocks: list) -> OnDiskData:
        return OnDiskData(self._rows.with_blocks(blocks), self.blocks_in_memory, self.statistics_rows)

    # --- what needs no reading ------------------------------------------------------------------------------
    @property
    def path(self) -> str:
        return self._rows.headers[0].path

    @property
    def settings(self) -> dict | None:
        """The settings ``sluice.simulate`` recorded in the file (None for files written otherwise)."""
        return self._rows.headers[0].attributes.get("simulation")

    @property
    def blocks(self) -> list:
        """The view's blocks, each ``(first, end)`` in file-wide row numbers (across the batch files, if several)."""
        return self._rows.blocks

    @property
    def block_rows(self) -> int:
        return self._rows.block_rows

    @property
    def rows_read(self) -> int:
        """Rows read through this view so far."""
        return self._rows.rows_read

    @property
    def nbytes(self) -> int:
        """The bytes these rows take once read into memory (float32 fields), from the header alone."""
        return len(self) * self._rows.row_bytes

    def __repr__(self) -> str:
        joint = [name for name in JOINT_FIELDS if self.has(name)]
        files = len(self._rows.headers)
        where = self.path if files == 1 else f"{files} batch files"
        return (f"OnDiskData({where!r}, n={len(self)}, parameters={list(self.parameter_names)}, "
                f"x={list(self._rows.shapes['x'])}, joint={joint}, simulator={self.simulator_name!r})")

    # --- reading --------------------------------------------------------------------------------------------
    def read_blocks(self, indices) -> AugmentedData:
        """The rows of the view's blocks ``indices`` (in that order), in memory."""
        return self[self._rows.rows_of_blocks(indices)]

    def load(self) -> AugmentedData:
        """Every row in memory."""
        return self[:]

    def _parts(self):
        return (self.read_blocks([k]) for k in range(len(self.blocks)))

    # --- splitting and sampling -----------------------------------------------------------------------------
    def split(self, fraction: float, seed: int = 0) -> tuple[OnDiskData, OnDiskData]:
        """(the rest, a held-out part) of whole blocks, both on disk; round(fraction · blocks) are held out."""
        _check_fraction(fraction)
        count = len(self.blocks)
        if count < 2:
            raise ValueError(f"split: {len(self)} rows in {count} block of {self.block_rows} rows cannot be split; "
                             "open the file with a smaller block_rows")
        held = min(count - 1, max(1, round(fraction * count)))
        order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
        return self._view([self.blocks[k] for k in sorted(order[held:])]), \
            self._view([self.blocks[k] for k in sorted(order[:held])])

    def statistics_sample(self, seed: int = 0) -> AugmentedData:
        """A bounded in-memory sample for the statistics an estimator fits once (standardisation, Var(t)):
        random whole blocks until ``statistics_rows`` rows, plus the rows where each column of x is smallest and
        largest (one pass over x; for x of at most MAX_EXTREME_COLUMNS entries, not images), so a range read
        from the sample (a discrete support) covers the whole file.
        All of the data where it has at most ``statistics_rows`` rows."""
        order = torch.randperm(len(self.blocks), generator=torch.Generator().manual_seed(seed)).tolist()
        chosen, rows = [], 0
        for k in order:
            if rows >= self.statistics_rows:
                break
            chosen.append(k)
            rows += self.blocks[k][1] - self.blocks[k][0]
        sample = self.read_blocks(sorted(chosen))
        if len(chosen) == len(self.blocks) or np.prod(self._rows.shapes["x"]) > MAX_EXTREME_COLUMNS:
            return sample
        candidates = []  # per block and column of x: the smallest value and its row, the largest and its row
        for k in range(len(self.blocks)):
            rows_of_block = self._rows.rows_of_blocks([k])
            flat = self._rows.read(rows_of_block, ["x"])["x"].numpy().reshape(len(rows_of_block), -1)
            low, high, columns = flat.argmin(axis=0), flat.argmax(axis=0), np.arange(flat.shape[1])
            first = rows_of_block[0]
            candidates.append((flat[low, columns], first + low, flat[high, columns], first + high))
        low_values, low_rows, high_values, high_rows = (np.stack(column) for column in zip(*candidates, strict=True))
        columns = np.arange(low_values.shape[1])
        extremes = np.unique(np.concatenate([low_rows[low_values.argmin(axis=0), columns],
                                             high_rows[high_values.argmax(axis=0), columns]]))
        return AugmentedData.concatenate([sample, self[extremes]])
