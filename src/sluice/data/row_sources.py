"""Where AugmentedData's rows live: tensors in memory (TensorRows) or sluice files on disk (FileRows).

Both answer the same questions: ``n`` (rows), ``shapes`` (the stored fields and the shape of one row of each),
and ``read(rows, names)``, the fields ``names`` at the rows ``rows`` (a slice with a positive step, or an int64
array of row numbers in [0, n), any order, repeats allowed) as float32 tensors. Memory rows were checked when
they were made; rows read from a file are checked on every read (``fields.check_values``).

A FileRows spans one file, or the committed batches of an unfinished run, and sees them as blocks of
``block_rows`` consecutive rows that never straddle two files. A view (``with_blocks``) keeps some blocks: its
row i is the i-th row of its blocks, in their order.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .fields import check_values
from .storage import CHUNK_ROWS, Header, read_ranges

__all__ = ["BLOCK_BYTES", "FileRows", "TensorRows", "row_numbers"]

BLOCK_BYTES = 16 << 20  # at most 16 MiB of rows per block by default (wide rows, such as images, get fewer)


def row_numbers(index, n: int) -> slice | np.ndarray:
    """What ``data[index]`` selects of ``n`` rows, numpy's way: a slice with a positive step, or an int64 array
    (an int, a slice with a negative step, a boolean mask of n entries, integer indices, negative from the end)."""
    if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
        if not -n <= index < n:
            raise IndexError(f"row {index} is out of range for {n} rows")
        return slice(index % n, index % n + 1, 1)
    if isinstance(index, slice):
        start, stop, step = index.indices(n)
        return slice(start, max(start, stop), step) if step > 0 else np.arange(start, stop, step)
    rows = np.asarray(index.cpu().numpy() if torch.is_tensor(index) else index)
    if rows.ndim == 0 and rows.dtype.kind in "iu":  # a numpy or torch integer scalar
        return row_numbers(int(rows), n)
    if rows.dtype == bool:
        if rows.shape != (n,):
            raise IndexError(f"a boolean mask must have one entry per row ({n}), got shape {list(rows.shape)}")
        return np.flatnonzero(rows)
    if rows.size == 0:
        return np.zeros(0, np.int64)
    if rows.dtype.kind not in "iu" or rows.ndim != 1:
        raise IndexError(f"rows are selected by an int, a slice, a boolean mask or a list of row numbers, got an "
                         f"array of {rows.dtype} with shape {list(rows.shape)}")
    rows = np.where(rows < 0, rows + n, rows).astype(np.int64)
    if rows.min() < 0 or rows.max() >= n:
        raise IndexError(f"row indices must lie in [-{n}, {n}) for {n} rows")
    return rows


class TensorRows:
    """Rows held as float32 tensors, one per stored field (all with the same number of rows)."""

    def __init__(self, tensors: dict):
        self.tensors = {name: tensor for name, tensor in tensors.items() if tensor is not None}
        self.n = len(self.tensors["x"])
        self.shapes = {name: tuple(tensor.shape[1:]) for name, tensor in self.tensors.items()}

    def read(self, rows: slice | np.ndarray, names) -> dict:
        rows = rows if isinstance(rows, slice) else torch.from_numpy(rows)  # a slice keeps a view, no copy
        return {name: self.tensors[name][rows] for name in names}


class FileRows:
    """Rows in sluice files (``headers``, one per file, all alike), in blocks of ``block_rows`` (default: about
    n/64, between 256 and CHUNK_ROWS rows and at most BLOCK_BYTES). ``rows_read`` counts the rows read so far."""

    def __init__(self, headers: list[Header], blocks: list | None = None, block_rows: int | None = None):
        self.headers = list(headers)
        self.shapes = dict(self.headers[0].shapes)
        self.file_starts = np.cumsum([0] + [header.n for header in self.headers], dtype=np.int64)
        self.row_bytes = sum(4 * int(np.prod(shape, dtype=np.int64)) for shape in self.shapes.values())
        total = int(self.file_starts[-1])
        self.block_rows = int(block_rows or max(1, min(total, CHUNK_ROWS, BLOCK_BYTES // max(self.row_bytes, 1),
                                                       max(256, math.ceil(total / 64)))))
        if self.block_rows < 1:
            raise ValueError(f"block_rows must be positive, got {block_rows}")
        if blocks is None:  # (first, end) file-wide row numbers of every block, file by file
            blocks = [(start, min(start + self.block_rows, int(stop)))
                      for begin, stop in zip(self.file_starts[:-1], self.file_starts[1:], strict=True)
                      for start in range(int(begin), int(stop), self.block_rows)]
        self.blocks = list(blocks)
        self.block_starts = np.array([start for start, _ in self.blocks], dtype=np.int64)  # file-wide
        lengths = np.array([stop - start for start, stop in self.blocks], dtype=np.int64)
        self.block_ends = np.cumsum(lengths)  # in the view: the row after each block
        self.block_firsts = self.block_ends - lengths  # in the view: each block's first row
        self.n = int(self.block_ends[-1]) if self.blocks else 0
        self.rows_read = 0

    def with_blocks(self, blocks: list) -> FileRows:
        """A view of these files that holds ``blocks`` (of ``self.blocks``), in that order."""
        return FileRows(self.headers, blocks, self.block_rows)

    def rows_of_blocks(self, indices) -> np.ndarray:
        """The view's row numbers of its blocks ``indices``, in that order."""
        pieces = [np.arange(self.block_firsts[k], self.block_ends[k]) for k in indices]
        return np.concatenate(pieces) if pieces else np.zeros(0, np.int64)

    def read(self, rows: slice | np.ndarray, names) -> dict:
        """The fields ``names`` at the view's ``rows``, checked. Each file is opened once and read in a few ranges:
        runs of whole blocks, or the span of the rows asked for within a block."""
        rows = np.arange(self.n)[rows] if isinstance(rows, slice) else rows
        block = np.searchsorted(self.block_ends, rows, side="right")
        file_rows = self.block_starts[block] + rows - self.block_firsts[block]  # across the files, in order
        order = None if np.all(file_rows[1:] >= file_rows[:-1]) else np.argsort(file_rows, kind="stable")
        wanted, view_rows = (file_rows, rows) if order is None else (file_rows[order], rows[order])
        pieces = {name: [] for name in names}
        which_file = np.searchsorted(self.file_starts, wanted, side="right") - 1
        for index in np.unique(which_file):
            in_file = which_file == index
            ranges, positions = _covering_ranges(wanted[in_file] - self.file_starts[index], self.block_rows)
            arrays = read_ranges(self.headers[index], ranges, names)
            picked = {name: torch.from_numpy(values if positions is None else values[positions])
                      for name, values in arrays.items()}
            try:
                check_values(picked, view_rows[in_file])
            except ValueError as error:
                raise ValueError(f"{self.headers[index].path}: {error}") from None
            for name in names:
                pieces[name].append(picked[name].numpy())
        self.rows_read += len(rows)
        inverse = None if order is None else np.argsort(order, kind="stable")
        tensors = {}
        for name, parts in pieces.items():
            values = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else \
                np.zeros((0,) + self.shapes[name], np.float32)
            tensors[name] = torch.from_numpy(values if inverse is None else values[inverse])  # in the order asked
        return tensors


def _covering_ranges(rows: np.ndarray, block_rows: int) -> tuple[list, np.ndarray | None]:
    """Few disjoint ranges ``(low, high)`` of one file that hold the sorted ``rows``: per block of ``block_rows``,
    the span from its first row asked for to its last, with touching spans merged. Also the position of each row
    in the ranges' rows laid end to end, or None where those are exactly the rows asked for."""
    if not len(rows):
        return [], None
    breaks = np.flatnonzero(np.diff(rows // block_rows)) + 1
    lows, highs = rows[np.r_[0, breaks]], rows[np.r_[breaks - 1, len(rows) - 1]] + 1
    separate = np.r_[True, lows[1:] != highs[:-1]]  # a span that does not start where the one before ends
    lows, highs = lows[separate], highs[np.r_[separate[1:], True]]
    ranges = list(zip(lows.tolist(), highs.tolist(), strict=True))
    if np.all(np.diff(rows) == 1):
        return ranges, None
    span = np.searchsorted(lows, rows, side="right") - 1
    before = np.r_[0, np.cumsum(highs - lows)[:-1]]
    return ranges, rows - lows[span] + before[span]
