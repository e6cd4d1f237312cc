"""The row layout of AugmentedData: its fields, what each means, and the one check of a dict of field arrays.

A row holds θ0 and θ1 ``[p]``, the label y (0: x drawn at θ0, 1: at θ1), the simulator output x ``[d]`` (or
``[...]``, e.g. an image), and, for simulators with a joint likelihood, the joint log ratio
log r(x,z|θ0,θ1) = log p(x,z|θ0) − log p(x,z|θ1) and the joint scores t(x,z|θ) = ∇θ log p(x,z|θ) at θ0 and θ1.
Every field is float32. Files on disk store the same fields (format ``FORMAT_NAME``, version ``FORMAT_VERSION``).

Arrays handed to the constructor get the whole check (``checked``); rows read from a file get ``check_values``
only, because the file's header has vouched for the shapes.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["FIELDS", "FORMAT_NAME", "FORMAT_VERSION", "JOINT_FIELDS", "MEANING", "REQUIRED", "check_values",
           "checked", "row_shapes"]

FORMAT_NAME = "sluice.AugmentedData"
FORMAT_VERSION = 1
REQUIRED = ("theta0", "theta1", "y", "x")
JOINT_FIELDS = ("log_r_xz", "t_xz0", "t_xz1")
FIELDS = REQUIRED + JOINT_FIELDS

MEANING = {
    "theta0": "θ0",
    "theta1": "θ1",
    "y": "the label (0: x drawn at θ0, 1: at θ1)",
    "x": "the simulator output",
    "log_r_xz": "the joint log ratio log r(x,z|θ0,θ1)",
    "t_xz0": "the joint score t(x,z|θ0)",
    "t_xz1": "the joint score t(x,z|θ1)",
}


def row_shapes(p: int) -> dict:
    """The shape of one row of each field but x, for ``p`` parameters (x may have any non-empty shape)."""
    return {"theta0": (p,), "theta1": (p,), "y": (), "log_r_xz": (), "t_xz0": (p,), "t_xz1": (p,)}


def _as_float32(name: str, value) -> torch.Tensor:
    try:
        array = np.asarray(value.detach().cpu() if torch.is_tensor(value) else value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"AugmentedData: field '{name}' cannot be read as a numeric array ({error})") from None
    if array.dtype.kind not in "biuf":
        raise ValueError(f"AugmentedData: field '{name}' must be numeric, got dtype {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _check_shapes(tensors: dict) -> tuple[int, int]:
    """(n, p) read from theta0; every other field must agree with them."""
    theta0 = tensors["theta0"]
    if theta0.ndim != 2:
        raise ValueError(f"AugmentedData: field 'theta0' must have shape [n, p], got {list(theta0.shape)}")
    n, p = theta0.shape
    for name, shape in row_shapes(p).items():
        tensor = tensors[name]
        if tensor is not None and tuple(tensor.shape) != (n,) + shape:
            raise ValueError(f"AugmentedData: field '{name}' must have shape {[n, *shape]} "
                             f"(n = {n} rows from theta0, p = {p}), got {list(tensor.shape)}")
    x = tensors["x"]
    if x.ndim < 2 or x.shape[0] != n:
        hint = "; use x[:, None] for a scalar output" if x.ndim == 1 and x.shape[0] == n else ""
        raise ValueError(f"AugmentedData: field 'x' must have shape [n, d] (or [n, ...], e.g. images "
                         f"[n, H, W]) with n = {n}, got {list(x.shape)}{hint}")
    return n, p


def check_values(tensors: dict, row_numbers: np.ndarray | None = None) -> None:
    """Raise a ValueError naming the first field of ``tensors`` (any of FIELDS, None for absent, rows first) with
    NaN or inf, or a y other than 0 and 1. Rows are reported by position, or by ``row_numbers[position]``."""
    # numpy's min and max, not torch.isfinite: over a 16 384-row block on 2 busy cores torch's threads took 75 ms,
    # these 0.03 ms; the rows at fault are looked for only when there are some
    for name, tensor in tensors.items():
        values = None if tensor is None or not len(tensor) else tensor.numpy()
        if values is None or (np.isfinite(values.min()) and np.isfinite(values.max())):  # NaN and ±inf show here
            continue
        bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
        first = int(np.flatnonzero(bad)[0])
        first = first if row_numbers is None else int(row_numbers[first])
        raise ValueError(f"AugmentedData: field '{name}' has NaN or inf in {int(bad.sum())} of {len(values)} rows "
                         f"(first at row {first})")
    y = tensors.get("y")
    if y is not None and not np.all((y.numpy() == 0) | (y.numpy() == 1)):
        raise ValueError("AugmentedData: field 'y' must hold only 0 (x drawn at θ0) and 1 (x drawn at θ1)")


def checked(arrays: dict, parameter_names=None) -> tuple[dict, tuple]:
    """The fields of ``arrays`` (name -> array-like or None) as float32 tensors, and the parameter names (default
    ``theta_0``, ``theta_1``, ...), after every check: numeric, the required fields present, shapes that agree
    (theta0, theta1, t_xz0, t_xz1 ``[n, p]``; y, log_r_xz ``[n]``; x ``[n, ...]``), no NaN or inf, y in {0, 1},
    one name per parameter. A failed check raises a ValueError naming the field."""
    tensors = {name: None if arrays.get(name) is None else _as_float32(name, arrays[name]) for name in FIELDS}
    for name in REQUIRED:
        if tensors[name] is None:
            raise ValueError(f"AugmentedData: field '{name}' ({MEANING[name]}) is required")
    _, p = _check_shapes(tensors)
    check_values(tensors)
    if parameter_names is None:
        parameter_names = tuple(f"theta_{j}" for j in range(p))
    parameter_names = tuple(str(name) for name in parameter_names)
    if len(parameter_names) != p:
        raise ValueError(f"AugmentedData: parameter_names has {len(parameter_names)} names but theta0 has {p} "
                         "columns")
    return tensors, parameter_names
