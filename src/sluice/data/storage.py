"""HDF5 storage of AugmentedData: the file layout, one atomic writer for every file, and the header reader.

Layout (format ``sluice.AugmentedData``, version 1): one float32 dataset per field, rows first, in chunks of
16 384 rows (fewer for wide rows such as images: at most 1 MiB a chunk) with a Fletcher-32 checksum each (a
damaged chunk is a read error, never silent garbage); attributes ``parameter_names`` and ``simulator_name``
(JSON), ``n`` (rows stored) and, on files written by ``sluice.simulate``, ``simulation`` (JSON: the settings
that made the file) and ``dropped_rows``.

Atomic writes: a file is written under a temporary name in its target's folder, flushed to disk (fsync) and
renamed into place. POSIX rename is atomic, so a file under its final name is always whole; a crash leaves at
most a ``.NAME.*.partial`` temporary, which nothing reads.

The lazily read view of a file is ``sluice.ondisk.OnDiskData``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field

import h5py
import numpy as np
import torch

from .augmented import FIELDS, FORMAT_NAME, FORMAT_VERSION, AugmentedData

__all__ = ["Header", "read_header", "read_rows", "write_file", "CHUNK_ROWS"]

CHUNK_ROWS = 16_384  # rows per HDF5 chunk and the longest training block: 64 KiB per 1-column field
CHUNK_BYTES = 1 << 20  # at most 1 MiB per chunk, so wide rows (images) get fewer rows per chunk


def chunk_rows(n: int, shape: tuple) -> int:
    """Rows per chunk of a field whose rows have the trailing ``shape`` (float32)."""
    row_bytes = 4 * int(np.prod(shape, dtype=np.int64))
    return int(max(1, min(n, CHUNK_ROWS, CHUNK_BYTES // max(row_bytes, 1))))
REQUIRED = ("theta0", "theta1", "y", "x")


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


def header_of(data: AugmentedData, path: str = "", attributes: dict | None = None) -> Header:
    shapes = {name: tuple(value.shape[1:]) for name, value in data.fields().items() if value is not None}
    return Header(path, len(data), tuple(data.parameter_names), data.simulator_name, shapes, dict(attributes or {}))


def _fsync(path: str) -> None:
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


def temporary_prefix(path: str) -> str:
    return f".{os.path.basename(path)}."


def write_file(path, header: Header, parts, overwrite: bool = False, sync_folder: bool = True) -> None:
    """Write ``header.n`` rows, given as AugmentedData ``parts`` in order, to ``path`` atomically (module notes).

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
                rows = len(part)
                for name, dataset in datasets.items():
                    dataset[offset:offset + rows] = getattr(part, name).numpy()
                offset += rows
            if offset != header.n:
                raise RuntimeError(f"write_file: {offset} rows were given for a file of {header.n}")
        _fsync(temporary)
        os.replace(temporary, path)
        if sync_folder:
            _fsync(folder)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def read_header(path) -> Header:
    """The header of a sluice HDF5 file; a missing, truncated, foreign or inconsistent file gets a clear error."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such data file: {path}")
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
    expected = {"theta0": (p,), "theta1": (p,), "y": (), "log_r_xz": (), "t_xz0": (p,), "t_xz1": (p,)}
    for name, shape in expected.items():
        if name in header.shapes and header.shapes[name] != shape:
            raise ValueError(f"{path}: field '{name}' has rows of shape {list(header.shapes[name])}, expected "
                             f"{list(shape)} for {p} parameters")
    if not header.shapes["x"]:
        raise ValueError(f"{path}: field 'x' must have shape [n, d]")
    return header


def read_rows(header: Header) -> AugmentedData:
    """Every row of a file whose contents are known to be valid (a batch checked when committed), unchecked."""
    try:
        with h5py.File(header.path, "r") as file:
            fields = {name: torch.from_numpy(file[name][...]) for name in header.shapes}
    except OSError as error:
        raise ValueError(f"{header.path} cannot be read (truncated or corrupt?): {error}") from None
    return AugmentedData._trusted(fields, header.parameter_names, header.simulator_name)
