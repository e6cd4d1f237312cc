"""HDF5 files of AugmentedData rows: the layout, its header, one atomic writer and one reader of row ranges.

Layout (format ``sluice.AugmentedData``, version 1): one float32 dataset per field, rows first, in chunks of
16 384 rows (fewer for wide rows such as images: at most 1 MiB a chunk) with a Fletcher-32 checksum each (a
damaged chunk is a read error, never silent garbage); attributes ``parameter_names`` and ``simulator_name``
(JSON), ``n`` (rows stored) and, on files written by ``sluice.simulate``, ``simulation`` (JSON: the settings
that made the file) and ``dropped_rows``; on the batch files of a run, ``batch``.

Atomic writes: a file is written under a temporary name in its target's folder, flushed to disk (fsync) and
renamed into place. POSIX rename is atomic, so a file under its final name is always whole; a crash leaves at
most a ``.NAME.*.partial`` temporary, which nothing reads.

While ``sluice.simulate(..., path=NAME)`` runs, its committed batches are files ``NAME.parts/batch-00000012.h5``
beside ``NAME.parts/run.json`` (the run's settings); the resumable writer (``writer.py``) keeps that folder.

Files hold plain dicts of numpy arrays here: the rows are checked by the containers that read them.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field

import h5py
import numpy as np

from .fields import FIELDS, FORMAT_NAME, FORMAT_VERSION, REQUIRED, row_shapes

__all__ = ["CHUNK_ROWS", "Header", "batch_files", "read_header", "read_headers", "read_ranges", "unfinished_hint",
           "write_file"]

CHUNK_ROWS = 16_384  # rows per HDF5 chunk and the longest training block: 64 KiB per 1-column field
CHUNK_BYTES = 1 << 20  # at most 1 MiB per chunk, so wide rows (images) get fewer rows per chunk
RUN_FILE = "run.json"
BATCH_FILE = re.compile(r"batch-(\d{8})\.h5")


def chunk_rows(n: int, shape: tuple) -> int:
    """Rows per chunk of a field whose rows have the trailing ``shape`` (float32)."""
    row_bytes = 4 * int(np.prod(shape, dtype=np.int64))
    return int(max(1, min(n, CHUNK_ROWS, CHUNK_BYTES // max(row_bytes, 1))))


@dataclass(frozen=True)
class Header:
    """What a file says about itself, read without its rows: ``shapes`` maps each stored field to its trailing
    shape (``()`` for [n] fields), ``attributes`` holds the JSON attributes beyond the basic ones."""

    path: str
    n: int
    parameter_names: tuple
    simulator_name: str | None
    shapes: dict
    attributes: dict = field(default_factory=dict)


# --- the folder of an unfinished run ------------------------------------------------------------------------
def parts_folder(path) -> str:
    return os.fspath(path) + ".parts"


def batch_path(path, index: int) -> str:
    return os.path.join(parts_folder(path), f"batch-{index:08d}.h5")


def batch_files(path) -> list[str]:
    """The committed batch files of a run writing ``path``, in order ([] when there is no such run)."""
    folder = parts_folder(path)
    if not os.path.isdir(folder):
        return []
    return [os.path.join(folder, name) for name in sorted(os.listdir(folder)) if BATCH_FILE.fullmatch(name)]


def unfinished_hint(path) -> str:
    """A note on an unfinished run writing ``path``, for 'no such file' errors ('' where there is none)."""
    folder = parts_folder(path)
    if not os.path.isfile(os.path.join(folder, RUN_FILE)):
        return ""
    return (f" (a sluice.simulate run writing it is unfinished: {len(batch_files(path))} batches are committed in "
            f"{folder}; run the same call again to finish it, or read them with AugmentedData.open(path, "
            "partial=True))")


def temporary_prefix(path: str) -> str:
    return f".{os.path.basename(path)}."


# --- writing ------------------------------------------------------------------------------------------------
def fsync(path: str) -> None:
    """Flush a file or folder to disk (where the system lets a folder be opened)."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:  # a folder cannot be opened on some systems (Windows): nothing to sync there
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def write_file(path, header: Header, parts, overwrite: bool = False, sync_folder: bool = True) -> None:
    """Write ``header.n`` rows to ``path`` atomically (module notes). ``parts`` gives them in order, each a dict
    of float32 arrays ``[rows, *header.shapes[name]]`` for every field in ``header.shapes``.

    Only one part is held at a time, so a file of any size is written in bounded memory. The file is flushed
    before the rename (so a power cut cannot leave a renamed but empty file); ``sync_folder`` also flushes the
    rename itself, which a file that may simply be redone if lost (a batch) can skip."""
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=".partial", dir=folder)
    os.close(handle)
    try:
        with h5py.File(temporary, "w") as file:
            file.attrs["format"] = FORMAT_NAME
            file.attrs["version"] = FORMAT_VERSION
            file.attrs["parameter_names"] = json.dumps(list(header.parameter_names))
            file.attrs["simulator_name"] = json.dumps(header.simulator_name)
            file.attrs["n"] = header.n
            for key, value in header.attributes.items():
                file.attrs[key] = json.dumps(value, sort_keys=True)
            datasets = {}
            for name in FIELDS:
                if name in header.shapes:
                    shape = (header.n,) + tuple(header.shapes[name])
                    chunks = (chunk_rows(header.n, shape[1:]),) + shape[1:] if header.n else None
                    datasets[name] = file.create_dataset(name, shape=shape, dtype="f4", chunks=chunks,
                                                         fletcher32=bool(chunks), track_times=False)
            offset = 0
            for part in parts:
                rows = len(part["x"])
                for name, dataset in datasets.items():
                    dataset[offset:offset + rows] = part[name]
                offset += rows
            if offset != header.n:
                raise RuntimeError(f"write_file: {offset} rows were given for a file of {header.n}")
        fsync(temporary)
        os.replace(temporary, path)
        if sync_folder:
            fsync(folder)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


# --- reading ------------------------------------------------------------------------------------------------
def read_header(path) -> Header:
    """The header of a sluice HDF5 file; a missing, truncated, foreign or inconsistent file gets a clear error."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such data file: {path}{unfinished_hint(path)}")
    try:
        with h5py.File(path, "r") as file:
            if file.attrs.get("format") != FORMAT_NAME:
                raise ValueError(f"{path} is an HDF5 file but not sluice AugmentedData (no '{FORMAT_NAME}' mark)")
            version = int(file.attrs.get("version", -1))
            if version > FORMAT_VERSION:
                raise ValueError(f"{path} has format version {version}; this sluice reads up to {FORMAT_VERSION}")
            attributes = {key: json.loads(value) for key, value in file.attrs.items()
                          if key in ("simulation", "dropped_rows", "batch")}
            shapes = {name: file[name].shape for name in FIELDS if name in file}  # one look-up per field
            header = Header(path, int(file.attrs["n"]), tuple(json.loads(file.attrs["parameter_names"])),
                            json.loads(file.attrs["simulator_name"]),
                            {name: tuple(shape[1:]) for name, shape in shapes.items()}, attributes)
            lengths = {name: shape[0] if shape else -1 for name, shape in shapes.items()}
    except OSError as error:
        raise ValueError(f"{path} cannot be read as HDF5 (truncated or corrupt?): {error}") from None
    except KeyError as error:
        raise ValueError(f"{path} lacks the attribute {error} that sluice writes") from None
    missing = [name for name in REQUIRED if name not in header.shapes]
    if missing:
        raise ValueError(f"{path} lacks the field(s) {missing}")
    for name, length in lengths.items():
        if length != header.n:
            raise ValueError(f"{path} holds {length} rows of '{name}' but says it holds {header.n}: the file is "
                             "incomplete")
    p = len(header.parameter_names)
    for name, shape in row_shapes(p).items():
        if name in header.shapes and header.shapes[name] != shape:
            raise ValueError(f"{path}: field '{name}' has rows of shape {list(header.shapes[name])}, expected "
                             f"{list(shape)} for {p} parameters")
    if not header.shapes["x"]:
        raise ValueError(f"{path}: field 'x' must have shape [n, d]")
    return header


def read_headers(path, partial: bool = False) -> list[Header]:
    """The headers of the files holding the rows of ``path``: the file itself or, with ``partial`` and no such
    file yet, the batches an unfinished ``sluice.simulate`` run has committed so far."""
    if not partial or os.path.exists(path):
        return [read_header(path)]
    batches = batch_files(path)
    if not batches:
        raise FileNotFoundError(f"no such data file: {os.fspath(path)}, and no committed batches of a run writing it")
    return [read_header(batch) for batch in batches]


def read_ranges(header: Header, ranges, names) -> dict:
    """The rows ``low`` to ``high`` (exclusive) for each ``(low, high)`` of ``ranges``, one after another, of the
    fields ``names`` of the file ``header`` describes: float32 numpy arrays, as stored (unchecked)."""
    lengths = [high - low for low, high in ranges]
    arrays = {name: np.empty((sum(lengths),) + tuple(header.shapes[name]), np.float32) for name in names}
    try:
        with h5py.File(header.path, "r") as file:
            for name in names:
                dataset, offset = file[name], 0
                for (low, high), length in zip(ranges, lengths, strict=True):
                    if length:
                        dataset.read_direct(arrays[name], np.s_[low:high], np.s_[offset:offset + length])
                    offset += length
    except OSError as error:
        raise ValueError(f"{header.path}: rows cannot be read (truncated or corrupt?): {error}") from None
    return arrays
