"""What can go wrong with a simulator on the other side of PPX, each failure named by its run and address.

``PPXError`` is the base. A failed run (``PPXRunError``: the process crashed, hung, or sent a message that
sluice cannot read) is retried once by ``PPXSimulator.sample`` on a fresh process and otherwise gives a NaN
row; a trace that the simulator cannot be mined from (``PPXTraceError``, ``PPXReplayError``) and a simulator
that cannot be started at all (``PPXStartError``) are raised.
"""

from __future__ import annotations

__all__ = ["PPXError", "PPXRunError", "PPXCrashError", "PPXTimeoutError", "PPXProtocolError",
           "PPXUnknownDistributionError", "PPXTraceError", "PPXReplayError", "PPXStartError", "PPXRunFailedWarning"]


class PPXError(RuntimeError):
    """A PPX failure; ``run`` (the row of the batch) and ``address`` (the site last met) say where, when known."""

    def __init__(self, message: str, run: int | None = None, address: str | None = None):
        self.detail, self.run, self.address = message, run, address
        super().__init__(self._text())

    def _text(self) -> str:
        where = []
        if self.run is not None:
            where.append(f"run {self.run}")
        if self.address is not None:
            where.append(f"address {self.address!r}")
        return f"{', '.join(where)}: {self.detail}" if where else self.detail

    def located(self, run: int | None = None, address: str | None = None) -> PPXError:
        """This error with its run and address filled in where it did not know them yet (returns self)."""
        if self.run is None:
            self.run = run
        if self.address is None:
            self.address = address
        self.args = (self._text(),)
        return self

    def __reduce__(self):  # pickles across worker processes with its run and address
        return _rebuild, (type(self), self.detail, self.run, self.address)


def _rebuild(cls, detail, run, address):
    return cls(detail, run, address)


class PPXRunError(PPXError):
    """A run failed on the simulator's side; another process may succeed (``sample`` retries it once)."""


class PPXCrashError(PPXRunError):
    """The simulator process exited in the middle of a run or handshake."""


class PPXTimeoutError(PPXRunError):
    """The simulator sent no reply within the timeout."""


class PPXProtocolError(PPXRunError):
    """A message that is not a PPX FlatBuffer, or not the message expected at this point of the protocol."""


class PPXUnknownDistributionError(PPXProtocolError):
    """A Sample or Observe with a distribution type that sluice does not know."""


class PPXTraceError(PPXError):
    """The runs cannot be mined as declared: a parameter or observed site that a run never meets, x of
    differing sizes, z that does not hold what a replay needs."""


class PPXReplayError(PPXError):
    """A replay met another sequence of addresses than the recorded run: its control flow depends on θ."""


class PPXStartError(PPXError):
    """The simulator could not be started or did not answer the handshake: nothing can run."""


class PPXRunFailedWarning(UserWarning):
    """Some runs failed twice (crash, timeout, malformed message) and their rows are NaN."""
