"""from_ppx: a simulator in any language that speaks PPX becomes a sluice Simulator (record to sample, replay to
re-score).

The controller chooses every random value of a run. ``sample(theta)`` answers the Sample requests at the
parameter sites with θ's components and draws every other value itself, from the distribution the simulator
reports, with a torch generator seeded per row (the runs are reproducible and do not depend on which process
ran them). ``joint_log_prob(x, z, theta)`` replays each run at θ: the simulator runs again with every recorded
value forced, and the float64 log-densities of the distributions it reports at θ are summed over the z and x
sites (not the parameter sites: their prior is not part of p(x, z|θ)). There is no autograd through another
process, so the joint score comes from sluice's central finite differences (``differentiable = False``).

What a run records:

- θ: each parameter answers the Sample site(s) of its address (or name) with its component, a scalar.
- x: the values at the ``observed`` sites (Sample, Observe or Tag sites by address or name, each site's values
  concatenated in the order met, the sites in the order given), or the RunResult tensor, flattened, when
  ``observed`` is None. An Observe without a value is drawn by the controller. sluice keeps x in float32, so x's
  values are rounded to float32 when recorded, and a drawn one before the simulator sees it: the replay forces
  the same value.
  Values that are not drawn (a Tag, the RunResult) must depend on θ only through the draws; the replay checks it.
- z: every other draw, a dict of float64 tensors ``[n, *shape]`` keyed by site in the order met (the address, or
  the name where the address is empty; a site met again gets an instance counter: "level", "level#1", …; a
  site whose address or name contains "#", reserved for these counters and for the bookkeeping, is refused).
  Runs that meet different sites are padded with NaN; ``z["#sites"]`` [n] counts the sites each run met (−1:
  the run failed) and ``z["#order"]`` [n, L] lists them by their position among z's site keys (−1 past the
  end), so that a replay can check the sequence. With ``observed``, ``z["#x_start"]`` [n, k] is the column of
  x where each observed site's values start. A z without the ``#`` entries is read as runs that all met every
  site, in the dict's order (a z mapped from another simulator).

A replay that meets another sequence of sites than the recorded run (control flow that depends on θ), a site
whose value has another shape, or an Observe (or observed Tag, or RunResult) that reports another value than
the recorded one raises ``PPXReplayError`` naming the run, and the position and addresses or the site. A run
that fails (the process crashes, hangs past ``timeout``, or sends a malformed message) is retried once on a
fresh process; after that its row is NaN (sluice.simulate drops and counts it, up to its
max_dropped_fraction) with a ``PPXRunFailedWarning``. A distribution that torch refuses at a run's values
(``PPXDistributionError``) makes that row NaN without a retry. A distribution type that sluice does not know
(every run would meet it), and a batch in which no run has ever worked (x's width is unknown), raise.
"""

from __future__ import annotations

import multiprocessing.util
import os
import queue
import shutil
import tempfile
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..base import Simulator, as_theta_batch
from .controller import SimulatorConnection
from .distributions import log_prob_sums, value_shape
from .distributions import sample as draw
from .errors import (
    PPXDistributionError,
    PPXError,
    PPXReplayError,
    PPXRunError,
    PPXRunFailedWarning,
    PPXTraceError,
)
from .messages import Observe, Sample, Tag

__all__ = ["from_ppx", "PPXSimulator", "SITES", "ORDER", "X_START"]

SITES, ORDER, X_START = "#sites", "#order", "#x_start"  # z's bookkeeping entries (module notes)
MAX_SEED = 2**62


def _site(message) -> str:
    return message.address or message.name or "?"


def _lookup(table: dict, message) -> int | None:
    """The index of a site in ``table`` (names of parameters or of observed sites): by address, else by name."""
    index = table.get(message.address) if message.address else None
    if index is None and message.name:
        index = table.get(message.name)
    return index


class _Keys:
    """The z key of each site met in one run: its address, with an instance counter from its second visit."""

    def __init__(self):
        self.visits = Counter()

    def __call__(self, message) -> str:
        site = _site(message)
        if "#" in site:
            raise PPXTraceError(f"the site {site!r} contains '#', which from_ppx reserves for the visit counter of "
                                "a site met again (\"level#1\") and for z's bookkeeping (\"#sites\"): rename it")
        count = self.visits[site]
        self.visits[site] += 1
        return site if count == 0 else f"{site}#{count}"


@dataclass
class _Recorded:
    """One run as ``sample`` records it."""

    sites: list = field(default_factory=list)  # (z key, value) in the order met
    observed: list = field(default_factory=list)  # per observed site: its values in the order met
    result: np.ndarray | None = None


def _as_float32(value: np.ndarray) -> np.ndarray:
    """``value`` rounded to float32, the precision of x in sluice (kept as float64)."""
    return np.asarray(value, dtype=np.float64).astype(np.float32).astype(np.float64)


def _close_all(connections: list, directory: str) -> None:
    """Close every connection and remove the folder of the ipc sockets (also run at exit, or when the simulator
    is collected)."""
    for index, connection in enumerate(connections):
        if connection is not None:
            connection.close()
            connections[index] = None
    shutil.rmtree(directory, ignore_errors=True)


class PPXSimulator(Simulator):
    """A simulator behind PPX (module notes): build it with ``from_ppx``."""

    differentiable = False  # the density is computed in another process: scores by finite differences
    default_batch_size = 1024  # each run is a conversation with another process: small batches keep workers busy

    def __init__(self, command_or_address: Sequence[str] | str, parameter_names: Sequence[str],
                 parameter_addresses: Sequence[str] | None = None, observed: Sequence[str] | None = None,
                 prior=None, processes: int = 1, timeout: float = 10.0, fd_step: float = 1e-3):
        if isinstance(command_or_address, str):
            if "://" not in command_or_address:
                raise ValueError(f"from_ppx: {command_or_address!r} is not a ZeroMQ address (ipc://…, tcp://…); "
                                 f"to start a program, pass its argv as a list: [{command_or_address!r}]")
            self.command, self.address = None, command_or_address
        else:
            self.command, self.address = [str(part) for part in command_or_address], None
            if not self.command:
                raise ValueError("from_ppx: the command is empty")
        self.parameter_names = tuple(parameter_names)
        if not self.parameter_names:
            raise ValueError("from_ppx: give the parameters' names")
        self.parameter_addresses = tuple(parameter_addresses) if parameter_addresses is not None else \
            self.parameter_names
        if len(self.parameter_addresses) != len(self.parameter_names):
            raise ValueError(f"from_ppx: {len(self.parameter_names)} parameter names but "
                             f"{len(self.parameter_addresses)} parameter addresses")
        self.observed = None if observed is None else tuple(observed)
        if self.observed is not None and set(self.observed) & set(self.parameter_addresses):
            raise ValueError(f"from_ppx: {sorted(set(self.observed) & set(self.parameter_addresses))} are both "
                             "parameters and observed")
        if int(processes) < 1 or (self.address is not None and int(processes) != 1):
            raise ValueError(f"from_ppx: processes must be 1 for a simulator at an address (it is one process), and "
                             f"at least 1 otherwise; got {processes}")
        self.prior, self.processes, self.timeout, self.fd_step = prior, int(processes), float(timeout), fd_step
        self._x_width = None  # x's width, once a run has given it: a batch whose runs all fail still has a shape
        self._start_runtime()

    # --- the processes --------------------------------------------------------------------------------------

    def _start_runtime(self) -> None:
        self._connections: list[SimulatorConnection | None] = [None] * self.processes
        self._lock = threading.Lock()
        self._directory = None
        self._finalizer = None
        self._generation = 0

    def __getstate__(self) -> dict:
        # the processes stay with this object: a copy (a worker's) starts its own when it first runs
        state = dict(self.__dict__)
        for name in ("_connections", "_lock", "_directory", "_finalizer", "_generation"):
            state.pop(name)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._start_runtime()

    def _connection(self, slot: int) -> SimulatorConnection:
        """The open connection of ``slot``, started (and handshaken) if there is none."""
        connection = self._connections[slot]
        if connection is not None and connection.is_open:
            return connection
        if connection is not None:
            connection.close()
        with self._lock:
            if self._finalizer is None or not self._finalizer.still_active():
                self._directory = tempfile.mkdtemp(prefix="sluice-ppx-")
                # closes the processes when this object is collected or the process exits; a multiprocessing
                # Finalize also runs in sluice's worker processes when they end, and never in a forked copy
                self._finalizer = multiprocessing.util.Finalize(self, _close_all,
                                                                args=(self._connections, self._directory),
                                                                exitpriority=10)
            self._generation += 1
            address = self.address or f"ipc://{self._directory}/{slot}-{self._generation}"
        self._connections[slot] = SimulatorConnection(address, self.command, self.timeout).open()
        return self._connections[slot]

    def _discard(self, slot: int) -> None:
        if self._connections[slot] is not None:
            self._connections[slot].close()
            self._connections[slot] = None

    def close(self) -> None:
        """Stop the simulator processes (a later call starts new ones)."""
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None

    def __enter__(self) -> PPXSimulator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _each_row(self, rows: Sequence[int], work: Callable) -> dict:
        """``work(connection, row)`` for every row, spread over the processes (one thread each: the threads wait
        on ZeroMQ, which releases the GIL). A ``PPXRunError`` is retried once on a fresh process (unless it
        ``repeats``); if it fails again the error takes the result's place; one that every run would meet
        (``every_run``) is raised at once. Returns {row: result or error}."""
        results = {}

        def attempt(slot: int, row: int):
            for retry in (False, True):
                try:
                    return work(self._connection(slot), row)
                except PPXRunError as error:
                    self._discard(slot)
                    if error.every_run:  # every other row would fail so too: stop the batch
                        raise
                    if retry or error.repeats:
                        return error
            raise AssertionError("unreachable")

        slots = min(self.processes, len(rows))
        if slots <= 1:
            for row in rows:
                results[row] = attempt(0, row)
            return results
        pending, failures = queue.SimpleQueue(), []
        for row in rows:
            pending.put(row)

        def serve(slot: int) -> None:
            try:
                while not failures:
                    try:
                        row = pending.get_nowait()
                    except queue.Empty:
                        return
                    results[row] = attempt(slot, row)
            except BaseException as error:  # raised after the other threads have stopped
                failures.append(error)

        threads = [threading.Thread(target=serve, args=(slot,), daemon=True) for slot in range(slots)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]
        return results

    def _warn_failures(self, failed: dict, n: int, what: str) -> None:
        if failed:
            first = min(failed)
            warnings.warn(f"{self.name}: {len(failed)} of {n} runs failed while {what} (after a retry on a fresh "
                          f"process, where one may help) and give NaN rows; the first: "
                          f"{type(failed[first]).__name__}: {failed[first]}", PPXRunFailedWarning, stacklevel=3)

    # --- sample: record -------------------------------------------------------------------------------------

    def _record(self, connection: SimulatorConnection, row: int, theta: np.ndarray, seed: int) -> _Recorded:
        generator = torch.Generator().manual_seed(seed)
        parameters = {name: index for index, name in enumerate(self.parameter_addresses)}
        observed = {name: index for index, name in enumerate(self.observed or ())}
        recorded = _Recorded(observed=[[] for _ in observed])
        keys, asked = _Keys(), set()

        def answer(message):
            if isinstance(message, Tag):
                entry = _lookup(observed, message)
                if entry is not None:
                    if message.value is None:
                        raise PPXTraceError(f"the observed Tag {_site(message)!r} carries no value")
                    recorded.observed[entry].append(_as_float32(message.value))
                return None
            parameter = _lookup(parameters, message)
            if parameter is not None and isinstance(message, Sample):
                asked.add(parameter)
                return np.asarray(theta[parameter])
            key = keys(message)
            value_shape(message.distribution)  # an unknown distribution is an error here, not at the replay
            if isinstance(message, Observe) and message.value is not None:
                value = message.value
            else:
                value = draw(message.distribution, generator).numpy()
            entry = _lookup(observed, message)
            if entry is not None:
                value = _as_float32(value)  # x is stored in float32: the run sees the value the replay will force
                recorded.observed[entry].append(value)
            else:
                recorded.sites.append((key, value))
            return value if isinstance(message, Sample) else None

        recorded.result = connection.run(answer, run=row)
        missing = [self.parameter_addresses[j] for j in range(self.n_parameters) if j not in asked]
        if missing:
            raise PPXTraceError(f"the run never sampled the parameter site(s) {missing}: θ would not reach the "
                                "simulator (check parameter_addresses against its Sample addresses and names)", row)
        return recorded

    def _x_row(self, recorded: _Recorded, row: int) -> tuple[np.ndarray, list[int]]:
        """x of one run, flat, and the column where each observed site starts."""
        if self.observed is None:
            if recorded.result is None:
                raise PPXTraceError("the RunResult carries no result, and no observed sites are declared: give "
                                    "observed=[...] or return x from the simulator", row)
            return _as_float32(recorded.result.reshape(-1)), []
        starts, parts, column = [], [], 0
        for name, values in zip(self.observed, recorded.observed, strict=True):
            if not values:
                raise PPXTraceError(f"the run never met the observed site {name!r}", row)
            starts.append(column)
            for value in values:
                parts.append(value.reshape(-1))
                column += value.size
        return np.concatenate(parts), starts

    def sample(self, theta, generator=None):
        """Run the simulator once per row of θ [n, p]: x [n, d] (float64) and z (module notes)."""
        theta = as_theta_batch(theta, None, self.n_parameters).detach().to(torch.float64)
        n = theta.shape[0]
        if n == 0:
            raise ValueError(f"{self.name}.sample needs at least one row of θ")
        # one seed per run, drawn up front: a run's draws do not depend on which process runs it, or how often
        seeds = torch.randint(0, MAX_SEED, (n,), generator=generator).tolist()
        theta_rows = theta.numpy()
        runs = self._each_row(range(n), lambda connection, row: self._record(connection, row, theta_rows[row],
                                                                              seeds[row]))
        failed = {row: run for row, run in runs.items() if isinstance(run, PPXError)}
        x_rows = {row: self._x_row(run, row) for row, run in runs.items() if row not in failed}
        widths = {row: len(x_row) for row, (x_row, _) in x_rows.items()}
        if len(set(widths.values())) > 1:
            first = min(widths)
            other = next(row for row in sorted(widths) if widths[row] != widths[first])
            raise PPXTraceError(f"runs give x of differing sizes (run {first}: {widths[first]} values, run {other}: "
                                f"{widths[other]}); declare observed sites of a fixed size")
        if widths:
            self._x_width = next(iter(widths.values()))
        elif self._x_width is None:  # every run failed, and none ever worked: no width to shape the NaN rows by
            raise failed[min(failed)]
        self._warn_failures(failed, n, "sampling")
        d = self._x_width
        x = torch.full((n, d), float("nan"), dtype=torch.float64)
        for row, (x_row, _) in x_rows.items():
            x[row] = torch.from_numpy(x_row)
        return x, self._latents(runs, failed, x_rows, n)

    def _latents(self, runs: dict, failed: dict, x_rows: dict, n: int) -> dict:
        shapes = {}
        for row in sorted(runs):
            if row in failed:
                continue
            for key, value in runs[row].sites:
                if shapes.setdefault(key, value.shape) != value.shape:
                    raise PPXTraceError(f"the site {key!r} has shape {list(shapes[key])} in one run and "
                                        f"{list(value.shape)} in run {row}", row)
        position = {key: index for index, key in enumerate(shapes)}
        length = max((len(runs[row].sites) for row in runs if row not in failed), default=0)
        z = {key: torch.full((n, *shape), float("nan"), dtype=torch.float64) for key, shape in shapes.items()}
        counts = torch.full((n,), -1, dtype=torch.int64)
        order = torch.full((n, length), -1, dtype=torch.int64)
        for row, run in runs.items():
            if row in failed:
                continue
            counts[row] = len(run.sites)
            for index, (key, value) in enumerate(run.sites):
                z[key][row] = torch.from_numpy(np.asarray(value))
                order[row, index] = position[key]
        z[SITES], z[ORDER] = counts, order
        if self.observed is not None:
            starts = torch.zeros((n, len(self.observed)), dtype=torch.int64)
            for row, (_, row_starts) in x_rows.items():
                starts[row] = torch.tensor(row_starts, dtype=torch.int64)
            z[X_START] = starts
        return z

    # --- joint_log_prob: replay -----------------------------------------------------------------------------

    def _replay(self, connection: SimulatorConnection, row: int, theta: np.ndarray, expected: list,
                values: dict, x: np.ndarray, starts: list) -> list:
        """Run ``row`` again at θ with every recorded value forced; the (key, distribution, value) of each scored
        site."""
        parameters = {name: index for index, name in enumerate(self.parameter_addresses)}
        observed = {name: index for index, name in enumerate(self.observed or ())}
        ends = starts[1:] + [len(x)]
        cursor = list(starts)
        keys, scored, position = _Keys(), [], 0
        where = f"θ = {theta.tolist()}"

        def take(entry: int, size: int, message) -> np.ndarray:
            if cursor[entry] + size > ends[entry]:
                raise PPXReplayError(f"the observed site {self.observed[entry]!r} takes more values on replay than "
                                     f"the recorded run gave it ({ends[entry] - starts[entry]})")
            cursor[entry] += size
            return x[cursor[entry] - size:cursor[entry]]

        def answer(message):
            nonlocal position
            if isinstance(message, Tag):
                entry = _lookup(observed, message)
                if entry is not None and message.value is not None:
                    recorded = take(entry, message.value.size, message)
                    if not np.array_equal(_as_float32(message.value.reshape(-1)), _as_float32(recorded)):
                        raise PPXReplayError(f"the observed Tag {_site(message)!r} has another value on replay at θ "
                                             f"= {theta.tolist()} than in the recorded run: x may depend on θ only "
                                             "through the random draws")
                return None
            parameter = _lookup(parameters, message)
            if parameter is not None and isinstance(message, Sample):
                return np.asarray(theta[parameter])
            key = keys(message)
            entry = _lookup(observed, message)
            given = isinstance(message, Observe) and message.value is not None
            shape = message.value.shape if given else value_shape(message.distribution)
            if entry is not None:
                value = take(entry, int(np.prod(shape, dtype=np.int64)), message).reshape(shape)
                if given and not np.array_equal(_as_float32(message.value), value):
                    raise PPXReplayError(f"the observed Observe {key!r} has another value on replay at {where} "
                                         "than in the recorded run: x may depend on θ only through the random draws")
            else:
                if position >= len(expected):
                    raise PPXReplayError(f"at position {position} the recorded run had ended, but the replay met "
                                         f"{key!r}: the control flow depends on θ, which replay cannot score")
                if expected[position] != key:
                    raise PPXReplayError(f"at position {position} the recorded run met {expected[position]!r}, the "
                                         f"replay {key!r}: the control flow depends on θ, which replay cannot score")
                position += 1
                value = values[key]
                if value.shape != shape:
                    raise PPXReplayError(f"the site {key!r} has shape {list(shape)} on replay at {where}, "
                                         f"{list(value.shape)} in the recorded run: its shape may not depend on θ")
                if given and not np.array_equal(message.value, value):
                    raise PPXReplayError(f"the Observe {key!r} has another value on replay at {where} "
                                         f"({message.value.tolist()}) than in the recorded run ({value.tolist()}): "
                                         "an Observe's own value may depend on θ only through the random draws")
            scored.append((key, message.distribution, value))
            return value if isinstance(message, Sample) else None

        result = connection.run(answer, run=row)
        if position < len(expected):
            raise PPXReplayError(f"at position {position} the replay ended, but the recorded run met "
                                 f"{expected[position]!r}: the control flow depends on θ, which replay cannot score",
                                 row)
        for entry, name in enumerate(self.observed or ()):
            if cursor[entry] != ends[entry]:
                raise PPXReplayError(f"the observed site {name!r} took {cursor[entry] - starts[entry]} values on "
                                     f"replay, {ends[entry] - starts[entry]} in the recorded run", row)
        if self.observed is None:
            replayed = None if result is None else _as_float32(result.reshape(-1))
            if replayed is None or replayed.shape != x.shape or not np.array_equal(replayed, _as_float32(x)):
                raise PPXReplayError(f"the RunResult differs on replay at θ = {theta.tolist()}: x may depend on θ "
                                     "only through the random draws (declare observed sites for x that is drawn)",
                                     row)
        return scored

    def _expected_sites(self, z: dict, n: int) -> tuple[list, list]:
        """z's site keys, and per row the sequence of keys its run met (None for a failed run)."""
        keys = [key for key in z if not key.startswith("#")]
        if ORDER not in z:
            return keys, [list(keys)] * n
        order, counts = z[ORDER].tolist(), z[SITES].tolist() if SITES in z else [0] * n
        sequences = []
        for row in range(n):
            if counts[row] < 0:
                sequences.append(None)
            else:
                sequences.append([keys[index] for index in order[row] if index >= 0])
        return keys, sequences

    def joint_log_prob(self, x, z, theta):
        """log p(x, z | θ) [n] in float64 by replay (module notes); NaN for a run that failed."""
        if not isinstance(z, dict):
            raise PPXTraceError(f"{self.name}: z must be the dict that sample() returned, got {type(z).__name__}")
        x = torch.as_tensor(x)
        n = x.shape[0]
        theta_rows = as_theta_batch(theta, n, self.n_parameters).detach().to(torch.float64).numpy()
        x_rows = x.detach().to(torch.float64).reshape(n, -1).numpy()
        keys, sequences = self._expected_sites(z, n)
        values = {key: z[key].detach().to(torch.float64).numpy() for key in keys}
        if self.observed is not None and X_START in z:
            starts = z[X_START].tolist()
        elif self.observed is not None and len(self.observed) == 1:
            starts = [[0]] * n
        elif self.observed is not None:
            raise PPXTraceError(f"{self.name}: z has no {X_START!r} to say where each observed site starts in x")
        else:
            starts = [[]] * n
        rows = [row for row in range(n) if sequences[row] is not None and np.isfinite(x_rows[row]).all()]

        def replay(connection, row):
            sequence = sequences[row]
            return self._replay(connection, row, theta_rows[row], sequence,
                                {key: values[key][row] for key in sequence}, x_rows[row], starts[row])

        scored = self._each_row(rows, replay)
        failed = {row: result for row, result in scored.items() if isinstance(result, PPXError)}
        owners, distributions, site_values = [], [], []
        for row, result in scored.items():
            if row not in failed:
                for key, distribution, value in result:
                    owners.append((row, key))
                    distributions.append(distribution)
                    site_values.append(value)
        sums = None
        while sums is None:
            try:
                sums = log_prob_sums(distributions, site_values)
            except PPXDistributionError as error:  # a value torch cannot score at θ: that run's row is NaN
                row = owners[error.pair][0]
                failed[row] = error.located(row, owners[error.pair][1])
                keep = [index for index, (owner, _) in enumerate(owners) if owner != row]
                owners, distributions, site_values = ([items[index] for index in keep] for items in
                                                      (owners, distributions, site_values))
        self._warn_failures(failed, n, "replaying")
        log_prob = torch.full((n,), float("nan"), dtype=torch.float64)
        replayed = [row for row in rows if row not in failed]
        log_prob[replayed] = 0.0
        if owners:
            rows_of_sites = torch.tensor([owner for owner, _ in owners], dtype=torch.int64)
            log_prob.index_add_(0, rows_of_sites, sums)
        return log_prob

    # --- description ----------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        if self.command is None:
            return f"PPX({self.address})"
        shown = " ".join(os.path.basename(part) if os.path.isfile(part) else part for part in self.command)
        return f"PPX({shown if len(shown) <= 60 else shown[:57] + '...'})"

    def default_prior(self):
        """The ``prior`` given to ``from_ppx``."""
        if self.prior is None:
            raise ValueError(f"{self.name} has no prior: pass prior= to from_ppx")
        return self.prior


def from_ppx(command_or_address: Sequence[str] | str, parameter_names: Sequence[str],
             parameter_addresses: Sequence[str] | None = None, observed: Sequence[str] | None = None, prior=None,
             processes: int = 1, timeout: float = 10.0, fd_step: float = 1e-3) -> PPXSimulator:
    """A PPX simulator (one that hands its random draws to a controller) as a sluice Simulator.

    ``command_or_address``: the program's argv as a list (sluice starts it, appending the ZeroMQ address it must
    bind, e.g. ``["./galton"]`` runs ``./galton ipc:///tmp/sluice-ppx-…/0-1``), or the address of a simulator
    already running (then ``processes`` must be 1, and only one controller may use it at a time: ``workers=``
    and Dask need a command, so that each worker starts its own). ``parameter_names``: θ's components;
    ``parameter_addresses`` (default: the names): the Sample sites, by address or name, that they answer.
    ``observed``: the sites that make up x (default: the RunResult). ``prior``: returned by
    ``default_prior()``. ``processes``: simulator processes that share each batch. ``timeout``: seconds to wait
    for each reply. ``fd_step``: the finite-difference step for the joint score, a fraction of each parameter's
    prior scale (kept as ``simulator.fd_step``).

    The processes start on first use and stop with ``close()``, at the end of a ``with`` block, when the
    simulator is collected, or at exit. The simulator pickles (its copies start their own processes).
    """
    return PPXSimulator(command_or_address, parameter_names, parameter_addresses, observed, prior, processes,
                        timeout, fd_step)
