"""What can go wrong with a simulator on the other side of PPX, each failure named by its run and address.

``PPXError`` is the base. A failed run (``PPXRunError``: the process crashed, hung, or sent a message that
sluice cannot read) is retried once by ``PPXSimulator`` on a fresh process and otherwise gives a NaN row; a run
that would fail the same way again (``repeats``: a distribution that torch refuses at this run's values,
``PPXDistributionError``) is not retried. A trace that the simulator cannot be mined from (``PPXTraceError``,
``PPXReplayError``), a failure that every run would meet (``every_run``: a distribution type sluice does not
know) and a simulator that cannot be started at all (``PPXStartError``) are raised.
"""

from __future__ import annotations

__all__ = ["PPXError", "PPXRunError", "PPXCrashError", "PPXTimeoutError", "PPXProtocolError",
           "PPXUnknownDistributionError", "PPXDistributionError", "PPXTraceError", "PPXReplayError", "PPXStartError",
           "PPXRunFailedWarning"]


DESCRIPTION_LIMIT = 300  # characters of a distribution quoted in an error


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
    """A run failed; its row becomes NaN. Unless ``repeats``, another process may succeed: it is retried once.
    Where ``every_run``, every run would fail so: it is raised instead."""

    repeats = False  # the same run would fail the same way again: no retry
    every_run = False  # not this run's trouble but the simulator's: raised, not a NaN row


class PPXCrashError(PPXRunError):
    """The simulator process exited in the middle of a run or handshake."""


class PPXTimeoutError(PPXRunError):
    """The simulator sent no reply within the timeout."""


class PPXProtocolError(PPXRunError):
    """A message that is not a PPX FlatBuffer, or not the message expected at this point of the protocol."""


class PPXUnknownDistributionError(PPXProtocolError):
    """A Sample or Observe with a distribution type that sluice does not know."""

    repeats = every_run = True


class PPXDistributionError(PPXRunError):
    """A distribution the simulator reported that cannot be drawn from or scored at this run's values (torch or
    numpy refused it: negative probabilities, a recorded category that does not exist at θ, …); ``distribution``
    is its description. The run's seed and θ fix its values, so it is not retried."""

    repeats = True

    def __init__(self, message: str, run: int | None = None, address: str | None = None, distribution: str = ""):
        self.distribution = distribution
        super().__init__(message, run, address)

    @classmethod
    def of(cls, error: Exception, message=None, run: int | None = None, address: str | None = None):
        """``error`` (raised by torch or numpy) at the site of PPX ``message``, as this error."""
        distribution = getattr(message, "distribution", None)
        described = "" if distribution is None else repr(distribution)
        if len(described) > DESCRIPTION_LIMIT:  # parameters may hold thousands of values
            described = described[:DESCRIPTION_LIMIT - 3] + "..."
        address = address if address is not None else getattr(message, "address", None) or None
        detail = f"{type(error).__name__}: {error}" + (f" (for {described})" if described else "")
        return cls(detail, run, address, described)

    def __reduce__(self):
        return _rebuild_distribution_error, (type(self), self.detail, self.run, self.address, self.distribution)


def _rebuild_distribution_error(cls, detail, run, address, distribution):
    return cls(detail, run, address, distribution)


class PPXTraceError(PPXError):
    """The runs cannot be mined as declared: a parameter or observed site that a run never meets, x of
    differing sizes, z that does not hold what a replay needs."""


class PPXReplayError(PPXError):
    """A replay met another sequence of addresses than the recorded run: its control flow depends on θ."""


class PPXStartError(PPXError):
    """The simulator could not be started or did not answer the handshake: nothing can run."""


class PPXRunFailedWarning(UserWarning):
    """Some runs failed (a crash, timeout or malformed message twice; a distribution torch refuses once) and their
    rows are NaN."""
