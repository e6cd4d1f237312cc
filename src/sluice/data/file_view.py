"""OnDiskData: a read-only AugmentedData whose rows stay in an HDF5 file and are read only when asked for.

A slice reads those rows, a column one dataset, a block (``block_rows`` consecutive rows) a chunk or two, and
consecutive blocks are read in one go; every read is checked like AugmentedData's constructor (no NaN or inf,
y in {0, 1}). It subclasses AugmentedData, so code written for data in memory runs on it (``data.x`` reads
the whole column). ``Estimator.fit`` trains from it block by block in bounded memory (``sluice.training``).
A view may span several files: the committed batches of an unfinished run (``AugmentedData.open(path,
partial=True)``).
"""

from __future__ import annotations

import math

import h5py
import numpy as np
import torch

from .augmented import FIELDS, JOINT_FIELDS, AugmentedData
from .storage import CHUNK_ROWS, Header, read_header, write_file

__all__ = ["OnDiskData"]


MAX_EXTREME_COLUMNS = 64  # statistics_sample adds the extreme rows of x only for x this narrow or narrower
BLOCK_BYTES = 16 << 20  # at most 16 MiB of rows per block by default (wide rows, such as images, get fewer)


def default_block_rows(n: int, row_bytes: int) -> int:
    """Blocks of about n/64 rows, between 256 and CHUNK_ROWS (enough blocks to hold out a share of them), and
    at most BLOCK_BYTES."""
    return int(max(1, min(n, CHUNK_ROWS, BLOCK_BYTES // max(row_bytes, 1), max(256, math.ceil(n / 64)))))


class _Column:
    """A field of OnDiskData, read in full on access (as a tensor, like AugmentedData's)."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, data, owner=None):
        return self if data is None else data._column(self.name)


class OnDiskData(AugmentedData):
    """A read-only, lazily read AugmentedData file (``sluice.AugmentedData.open(path)``): rows stay on disk.

    ``len``, ``parameter_names``, ``simulator_name``, ``settings`` (how ``sluice.simulate`` made it) need no
    reading. ``data[i:j]``, ``data[mask]``, ``data[indices]`` read just those rows into an in-memory
    AugmentedData; ``data.x`` (any field) reads that whole column. ``split(fraction, seed)`` holds out whole
    blocks of ``block_rows`` consecutive rows (round(fraction · blocks), at least one), as on-disk views.
    For training: ``read_blocks`` reads chosen blocks, ``statistics_sample`` a bounded sample (see there);
    ``blocks_in_memory`` blocks are shuffled together in each step of an epoch.
    """

    def __init__(self, sources: list, blocks: list | None = None, block_rows: int | None = None,
                 blocks_in_memory: int = 4, statistics_rows: int = 100_000):
        self._sources = list(sources)
        first = self._sources[0]
        self.parameter_names, self.simulator_name = first.parameter_names, first.simulator_name
        self._source_starts = np.cumsum([0] + [source.n for source in self._sources], dtype=np.int64)
        total = int(self._source_starts[-1])
        self._row_bytes = sum(4 * int(np.prod(shape, dtype=np.int64)) for shape in first.shapes.values())
        self.block_rows = int(block_rows or default_block_rows(total, self._row_bytes))
        if self.block_rows < 1:
            raise ValueError(f"block_rows must be positive, got {block_rows}")
        if blocks is None:  # blocks never straddle two source files
            blocks = [(start, min(start + self.block_rows, int(stop)))
                      for begin, stop in zip(self._source_starts[:-1], self._source_starts[1:], strict=True)
                      for start in range(int(begin), int(stop), self.block_rows)]
        self.blocks = list(blocks)
        self._block_ends = np.cumsum([stop - start for start, stop in self.blocks], dtype=np.int64)
        self.blocks_in_memory = int(blocks_in_memory)
        self.statistics_rows = int(statistics_rows)
        self.rows_read = 0  # rows read through this view so far

    @classmethod
    def open(cls, path, **options) -> OnDiskData:
        return cls([read_header(path)], **options)

    @classmethod
    def _trusted(cls, fields, parameter_names, simulator_name) -> AugmentedData:
        return AugmentedData._trusted(fields, parameter_names, simulator_name)  # anything derived is in memory

    def _view(self, blocks) -> OnDiskData:
        return OnDiskData(self._sources, blocks, self.block_rows, self.blocks_in_memory, self.statistics_rows)

    # --- what needs no reading ------------------------------------------------------------------------------
    @property
    def path(self) -> str:
        return self._sources[0].path

    @property
    def settings(self) -> dict | None:
        """The settings ``sluice.simulate`` recorded in the file (None for files written otherwise)."""
        return self._sources[0].attributes.get("simulation")

    def __len__(self) -> int:
        return int(self._block_ends[-1]) if self.blocks else 0

    @property
    def nbytes(self) -> int:
        """The bytes these rows take once read into memory (float32 fields), from the header alone."""
        return len(self) * self._row_bytes

    @property
    def n_parameters(self) -> int:
        return len(self.parameter_names)

    def has(self, field: str) -> bool:
        return field in self._sources[0].shapes

    def __repr__(self) -> str:
        joint = [name for name in JOINT_FIELDS if self.has(name)]
        where = self.path if len(self._sources) == 1 else f"{len(self._sources)} batch files"
        return (f"OnDiskData({where!r}, n={len(self)}, parameters={list(self.parameter_names)}, "
                f"x={list(self._sources[0].shapes['x'])}, joint={joint}, simulator={self.simulator_name!r})")

    # --- reading --------------------------------------------------------------------------------------------
    def _file_rows(self, rows: np.ndarray) -> np.ndarray:
        """File-wide row numbers of the view's rows."""
        block = np.searchsorted(self._block_ends, rows, side="right")
        starts = np.array([start for start, _ in self.blocks], dtype=np.int64)
        before = np.concatenate([[0], self._block_ends[:-1]]).astype(np.int64)
        return starts[block] + rows - before[block]

    def _read(self, file_rows: np.ndarray, names) -> dict:
        """Arrays of ``names`` at the (sorted) file rows: one contiguous read per source file and block touched."""
        pieces = {name: [] for name in names}
        source_of = np.searchsorted(self._source_starts, file_rows, side="right") - 1
        for index in np.unique(source_of):
            source, offset = self._sources[index], int(self._source_starts[index])
            local = file_rows[source_of == index] - offset
            spans = []  # (first row, end, rows to pick or None for all): a block's span, or consecutive blocks
            for group in np.split(local, np.flatnonzero(np.diff(local // self.block_rows)) + 1):
                low, high = int(group[0]), int(group[-1]) + 1
                whole = bool(np.all(np.diff(group) == 1))  # every row from low to high, once
                if whole and spans and spans[-1][2] is None and spans[-1][1] == low:
                    spans[-1] = (spans[-1][0], high, None)
                else:
                    spans.append((low, high, None if whole else group - low))
            try:
                with h5py.File(source.path, "r") as file:
                    datasets = [file[name] for name in names]
                    for low, high, picks in spans:
                        for name, dataset in zip(names, datasets, strict=True):
                            values = dataset[low:high]
                            pieces[name].append(values if picks is None else values[picks])
            except OSError as error:
                raise ValueError(f"{source.path}: rows cannot be read (truncated or corrupt?): {error}") from None
        self.rows_read += len(file_rows)
        shapes = self._sources[0].shapes
        return {name: np.concatenate(parts) if parts else np.zeros((0,) + shapes[name], np.float32)
                for name, parts in pieces.items()}

    def _rows(self, index) -> np.ndarray:
        n = len(self)
        if isinstance(index, (int, np.integer)):
            if not -n <= index < n:
                raise IndexError(f"row {index} is out of range for {n} rows")
            return np.array([index % n])
        if isinstance(index, slice):
            return np.arange(n)[index]
        rows = np.asarray(index.numpy() if torch.is_tensor(index) else index)
        if rows.dtype == bool:
            if rows.shape != (n,):
                raise IndexError(f"a boolean mask must have one entry per row ({n}), got shape {list(rows.shape)}")
            return np.flatnonzero(rows)
        rows = np.where(rows < 0, rows + n, rows).astype(np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise IndexError(f"row indices must lie in [-{n}, {n}) for {n} rows")
        return rows

    def __getitem__(self, index) -> AugmentedData:
        rows = self._rows(index)
        file_rows = self._file_rows(rows)
        order = np.argsort(file_rows, kind="stable")
        names = [name for name in FIELDS if self.has(name)]
        arrays = self._read(file_rows[order], names)
        if np.any(np.diff(file_rows) < 0):  # back into the order asked for
            inverse = np.empty_like(order)
            inverse[order] = np.arange(len(order))
            arrays = {name: value[inverse] for name, value in arrays.items()}
        if not len(rows):  # nothing to check (and the constructor's checks need rows)
            return AugmentedData._trusted({name: torch.from_numpy(value) for name, value in arrays.items()},
                                          self.parameter_names, self.simulator_name)
        try:
            return AugmentedData(**arrays,
                                 parameter_names=self.parameter_names, simulator_name=self.simulator_name)
        except ValueError as error:
            raise ValueError(f"{self.path}: {error}") from None

    def _column(self, name: str) -> torch.Tensor | None:
        if not self.has(name):
            return None
        values = torch.from_numpy(self._read(self._file_rows(np.arange(len(self))), [name])[name])
        if not torch.isfinite(values.reshape(len(values), -1)).all():
            raise ValueError(f"{self.path}: field '{name}' has NaN or inf")
        return values

    def read_blocks(self, indices) -> AugmentedData:
        """The rows of the view's blocks ``indices`` (in that order), in memory."""
        rows = [np.arange(int(self._block_ends[k]) - (stop - start), int(self._block_ends[k]))
                for k in indices for start, stop in [self.blocks[k]]]
        return self[np.concatenate(rows) if rows else np.zeros(0, np.int64)]

    def load(self) -> AugmentedData:
        """Every row in memory."""
        return self[:]

    def save(self, path, overwrite: bool = False) -> None:
        """Copy the view to a new file, block by block (bounded memory)."""
        parts = (self.read_blocks([k]) for k in range(len(self.blocks)))
        header = Header("", len(self), self.parameter_names, self.simulator_name, dict(self._sources[0].shapes))
        write_file(path, header, parts, overwrite)

    # --- splitting and sampling -----------------------------------------------------------------------------
    def split(self, fraction: float, seed: int = 0) -> tuple[OnDiskData, OnDiskData]:
        """(the rest, a held-out part) of whole blocks, both on disk; round(fraction · blocks) are held out."""
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"split: fraction must lie strictly between 0 and 1, got {fraction}")
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
        if len(chosen) == len(self.blocks) or np.prod(self._sources[0].shapes["x"]) > MAX_EXTREME_COLUMNS:
            return sample
        candidates = []  # per block and column of x: the smallest value and its row, the largest and its row
        for k in range(len(self.blocks)):
            first = int(self._block_ends[k]) - (self.blocks[k][1] - self.blocks[k][0])
            x = self._read(self._file_rows(np.arange(first, int(self._block_ends[k]))), ["x"])["x"]
            flat = x.reshape(len(x), -1)
            low, high, columns = flat.argmin(axis=0), flat.argmax(axis=0), np.arange(flat.shape[1])
            candidates.append((flat[low, columns], first + low, flat[high, columns], first + high))
        low_values, low_rows, high_values, high_rows = (np.stack(column) for column in zip(*candidates, strict=True))
        columns = np.arange(low_values.shape[1])
        extremes = np.unique(np.concatenate([low_rows[low_values.argmin(axis=0), columns],
                                             high_rows[high_values.argmax(axis=0), columns]]))
        return AugmentedData.concatenate([sample, self[extremes]])


for _name in FIELDS:
    setattr(OnDiskData, _name, _Column(_name))
