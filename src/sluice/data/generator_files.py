"""Generator files in: Les Houches event files (pylhe) and ROOT ntuples (uproot) as ``WeightedEvents``.

An event generator run with reweighting (MadGraph's reweight module, or any generator's named weights) stores,
for every event, its weight at each basis point of a morphing and, for systematics, at the ±1σ variations.
``read_lhe`` and ``read_root`` collect those weights by name, in the order of the morphing's basis points,
with the observables x of each event, and return the ``WeightedEvents`` that mines the joint ratio and score
(docs/morphing.md, docs/systematics.md). pylhe and uproot are optional: pip install "sluice-sbi[hep]".
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

import torch

from ..simulators.morphing import Morphing
from .weighted_events import WeightedEvents

__all__ = ["read_lhe", "read_root"]

EVENT_NORMS = ("average", "sum")


def _import_optional(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"reading generator files needs {module}, an optional dependency of sluice: "
                          f'pip install "sluice-sbi[hep]"') from error


def _names(names, count: int, what: str) -> list:
    """``names`` as a list of ``count`` weight names (None allowed: the event's own weight in an LHE file)."""
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ValueError(f"{what} must list one weight name per basis point ({count}), got {names!r}")
    names = list(names)
    if len(names) != count:
        raise ValueError(f"{what} must list one weight name per basis point of the morphing ({count}), got "
                         f"{len(names)}: {names}")
    return names


def _variation_layout(variations, n_basis: int) -> dict:
    """{nuisance: (down, up)} with each side a single weight name ([n] variations, at ``variations_at``) or one
    name per basis point ([n, B] variations), as lists of names."""
    layout = {}
    for nuisance, pair in dict(variations or {}).items():
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ValueError(f"variations['{nuisance}'] must be a pair (down, up) of weight names, got {pair!r}")
        sides = []
        for side in pair:
            sides.append([side] if isinstance(side, str) else _names(side, n_basis, f"variations['{nuisance}']"))
        layout[nuisance] = tuple(sides)
    return layout


def _build(x, columns: dict, weight_names: list, layout: dict, morphing: Morphing, basis_cross_sections,
           nuisances, variations_at, scale: float) -> WeightedEvents:
    """WeightedEvents from per-name weight columns (each [n])."""
    def stack(names: list) -> torch.Tensor:
        table = torch.stack([columns[name] for name in names], dim=1) * scale
        return table[:, 0] if len(names) == 1 else table

    basis = torch.stack([columns[name] for name in weight_names], dim=1) * scale
    variations = {nuisance: (stack(down), stack(up)) for nuisance, (down, up) in layout.items()}
    return WeightedEvents(x, basis, morphing, basis_cross_sections=basis_cross_sections, nuisances=nuisances,
                          variations=variations, variations_at=variations_at)


def read_lhe(path, morphing: Morphing, weight_names, observables: Callable, event_norm: str = "average",
             basis_cross_sections=None, nuisances=(), variations=None, variations_at=None,
             max_events: int | None = None) -> WeightedEvents:
    """The events of a Les Houches event file (plain or gzipped) as ``WeightedEvents``.

    ``weight_names``: the event weight ids (``<wgt id=...>``) at the basis points of ``morphing``, in its
    order; None stands for the event's own weight (XWGTUP). ``observables(event)`` maps one pylhe event
    (``event.particles`` with ``px, py, pz, e, id, status``; ``event.weights``) to its observables x, a
    sequence of d numbers. ``event_norm``: "average" (each weight estimates σ, MadGraph's default: the
    weights are divided by the number of events) or "sum" (the weights already sum to σ). ``variations``:
    ``{nuisance: (down, up)}`` with a weight id per side ([n] variations) or one per basis point, with the
    ``Nuisance`` objects in ``nuisances`` (WeightedEvents' arguments). A weight id an event lacks is a
    ValueError naming it and the ids the event has.
    """
    if event_norm not in EVENT_NORMS:
        raise ValueError(f"read_lhe: event_norm must be one of {EVENT_NORMS}, got {event_norm!r}")
    weight_names = _names(weight_names, morphing.n_basis, "read_lhe: weight_names")
    layout = _variation_layout(variations, morphing.n_basis)
    wanted = list(dict.fromkeys(weight_names + [name for pair in layout.values() for side in pair for name in side]))
    rows, columns = [], {name: [] for name in wanted}
    for index, event in enumerate(_lhe_events(path)):
        if max_events is not None and index >= max_events:
            break
        weights = dict(getattr(event, "weights", None) or {})
        for name in wanted:
            if name is None:
                columns[name].append(float(event.eventinfo.weight))
            elif name in weights:
                columns[name].append(float(weights[name]))
            else:
                raise ValueError(f"read_lhe: event {index} of {path} has no weight named {name!r}; its weights are "
                                 f"{sorted(weights)} (MadGraph names reweighting points by their launch names)")
        values = observables(event)
        rows.append([float(value) for value in values])
    if not rows:
        raise ValueError(f"read_lhe: {path} holds no events")
    widths = {len(row) for row in rows}
    if len(widths) != 1:
        raise ValueError(f"read_lhe: observables gave {sorted(widths)} numbers for different events; it must give the "
                         f"same d for every event")
    x = torch.tensor(rows, dtype=torch.float64)
    tensors = {name: torch.tensor(values, dtype=torch.float64) for name, values in columns.items()}
    scale = 1.0 / len(rows) if event_norm == "average" else 1.0
    return _build(x, tensors, weight_names, layout, morphing, basis_cross_sections, nuisances, variations_at, scale)


def _lhe_events(path):
    """The events of an LHE file, through pylhe's reader (``LHEFile.fromfile`` in pylhe ≥ 1, else
    ``read_lhe_with_attributes``)."""
    pylhe = _import_optional("pylhe")
    reader = getattr(pylhe, "LHEFile", None)
    if reader is not None and hasattr(reader, "fromfile"):
        return reader.fromfile(str(path)).events
    return pylhe.read_lhe_with_attributes(str(path))


def read_root(path, tree: str, branches: Sequence[str], weight_branches: Sequence[str], morphing: Morphing,
              basis_cross_sections=None, nuisances=(), variations=None, variations_at=None,
              weight_scale: float = 1.0) -> WeightedEvents:
    """The events of a ROOT ntuple as ``WeightedEvents``: ``tree`` in the file, the observables x from the
    ``branches`` (one number per event each, in order), the weights at the basis points of ``morphing`` from
    ``weight_branches`` (in its order), systematics from ``variations`` ``{nuisance: (down, up)}`` (a branch
    per side, or one per basis point) with their ``nuisances``. The weights are multiplied by
    ``weight_scale`` so that they sum to σ (any common factor cancels in r and t; σ matters for the rate).
    A missing tree or branch is a ValueError naming it and what the file has."""
    uproot = _import_optional("uproot")
    weight_branches = _names(weight_branches, morphing.n_basis, "read_root: weight_branches")
    layout = _variation_layout(variations, morphing.n_basis)
    branches = [branches] if isinstance(branches, str) else list(branches)
    if not branches:
        raise ValueError("read_root: branches must name at least one observable")
    wanted = list(dict.fromkeys(branches + weight_branches + [name for pair in layout.values() for side in pair
                                                              for name in side]))
    with uproot.open(str(path)) as file:
        if tree not in file:
            raise ValueError(f"read_root: {path} has no tree {tree!r}; it holds {sorted(file.keys(cycle=False))}")
        ntuple = file[tree]
        missing = [name for name in wanted if name not in ntuple.keys()]
        if missing:
            raise ValueError(f"read_root: tree {tree!r} of {path} has no branch {missing[0]!r}; its branches are "
                             f"{sorted(ntuple.keys())}")
        arrays = ntuple.arrays(wanted, library="np")
    columns = {}
    for name in wanted:
        if arrays[name].dtype.kind not in "biuf":  # jagged branches come as arrays of arrays
            raise ValueError(f"read_root: branch {name!r} does not hold one number per event (dtype "
                             f"{arrays[name].dtype}); give branches with one number per event")
        column = torch.as_tensor(arrays[name].astype("float64"))
        if column.ndim != 1:
            raise ValueError(f"read_root: branch {name!r} holds {list(column.shape[1:])} numbers per event; give "
                             f"branches with one number per event")
        columns[name] = column
    x = torch.stack([columns[name] for name in branches], dim=1)
    return _build(x, columns, weight_branches, layout, morphing, basis_cross_sections, nuisances, variations_at,
                  float(weight_scale))
