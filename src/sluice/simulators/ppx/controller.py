"""The controller's side of PPX: a ZeroMQ REQ socket to one simulator, a handshake, and runs driven by a callback.

``SimulatorConnection(address, command)`` starts ``command + [address]`` (the simulator binds a REP socket at
``address``) or, without a command, connects to a simulator already running there. ``run(answer, run=i)``
sends Run and then answers the simulator's messages until its RunResult: ``answer(message)`` gets each Sample
(and returns the value to send back), Observe and Tag.

Every reply is awaited for at most ``timeout`` seconds (the handshake, which includes the process's start, for
at least ``STARTUP_TIMEOUT``), polled in slices of ``POLL_SLICE`` seconds between which the process is checked:
a crash is reported when it happens, not at the timeout. A connection on which something failed mid-run is
left ``broken`` (a REQ socket cannot skip a reply, and the simulator is halfway through a run): close it and
open a new one.

A run whose answer fails with ``PPXReplayError`` is finished before the error is raised, so that the process
can serve the next run: its remaining draws come from one generator that advances (a loop that ends on a draw
must see new ones), for at most ``FINISH_MESSAGES`` messages and ``timeout`` seconds in all; a run that has not
ended by then (a loop that the forced values made endless) has its process stopped. The simulator's output goes
to a file that keeps its last ``LOG_KEEP`` bytes once it has grown past ``LOG_LIMIT``.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .distributions import sample as draw
from .errors import (
    PPXCrashError,
    PPXDistributionError,
    PPXError,
    PPXProtocolError,
    PPXReplayError,
    PPXStartError,
    PPXTimeoutError,
)
from .messages import (
    INSTALL_HINT,
    Handshake,
    HandshakeResult,
    Observe,
    ObserveResult,
    Reset,
    Run,
    RunResult,
    Sample,
    SampleResult,
    Tag,
    TagResult,
    decode,
    encode,
)

__all__ = ["SimulatorConnection", "STARTUP_TIMEOUT", "POLL_SLICE"]

STARTUP_TIMEOUT = 30.0  # seconds the handshake may take at least: it includes starting the process
POLL_SLICE = 0.05  # seconds between checks that the simulator process is alive while awaiting a reply
LOG_TAIL = 2000  # characters of the simulator's output quoted when it crashes
LOG_LIMIT = 1 << 20  # bytes of the simulator's output file beyond which only its tail is kept (checked after each run)
LOG_KEEP = 1 << 16  # bytes of the tail kept (at most half of LOG_LIMIT)
FINISH_MESSAGES = 10_000  # messages answered, at most, to finish a run after a replay failure


def _zmq():
    try:
        import zmq
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return zmq


def _describe(message) -> str:
    address = getattr(message, "address", None)
    return type(message).__name__ + (f" {address!r}" if address else "")


class SimulatorConnection:
    """One PPX simulator behind a REQ socket: a process started here (``command``) or one at ``address``."""

    def __init__(self, address: str, command: Sequence[str] | None = None, timeout: float = 10.0):
        self.address, self.command, self.timeout = address, None if command is None else list(command), timeout
        self.process: subprocess.Popen | None = None
        self.model_name = ""
        self.broken = False
        self._context = self._socket = self._log = None
        self._owner = os.getpid()

    # --- lifecycle ------------------------------------------------------------------------------------------

    def open(self) -> SimulatorConnection:
        """Start the process (if there is a command), connect and handshake; ``PPXStartError`` where that fails."""
        zmq = _zmq()
        if self.command is not None:
            # the simulator's output goes to a file, not a pipe: a pipe that nobody reads would block it once full
            self._log = tempfile.TemporaryFile()
            # appending: the child writes at the end of the file wherever it is, so that the tail can be kept
            flags = fcntl.fcntl(self._log.fileno(), fcntl.F_GETFL)
            fcntl.fcntl(self._log.fileno(), fcntl.F_SETFL, flags | os.O_APPEND)
            try:
                self.process = subprocess.Popen([*self.command, self.address], stdin=subprocess.DEVNULL,
                                                stdout=self._log, stderr=subprocess.STDOUT)
            except OSError as error:
                self._log.close()
                raise PPXStartError(f"could not start the simulator {self.command}: {error}") from error
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.REQ)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(self.address)
        try:
            reply = self.request(Handshake(system_name="sluice"), timeout=max(self.timeout, STARTUP_TIMEOUT))
        except PPXError as error:
            self.close()
            raise PPXStartError(f"the simulator did not complete the PPX handshake: {error}") from error
        if not isinstance(reply, HandshakeResult):
            self.close()
            raise PPXStartError(f"the simulator answered the handshake with {_describe(reply)}, not HandshakeResult")
        self.model_name = reply.model_name
        return self

    def close(self) -> None:
        """End the session: Reset to a process started here (then terminate it if it lingers), close the socket.

        A simulator reached at an address is left running (it is not ours). Only the process that opened the
        connection closes it: a forked copy must not stop its parent's simulator."""
        if os.getpid() != self._owner:
            return
        if self._socket is not None:
            if self.process is not None and not self.broken and self.process.poll() is None:
                try:  # a polite end; a simulator that does not answer Reset is stopped below anyway
                    self._socket.send(encode(Reset()))
                    self._socket.poll(200)
                except Exception:  # closing must not fail
                    pass
            self._socket.close(linger=0)
            self._context.term()
            self._socket = self._context = None
        if self.process is not None:
            # a simulator that was sent Reset is given a moment to end by itself; one that failed is stopped at once
            stops = (self.process.terminate, self.process.kill) if self.broken else \
                (None, self.process.terminate, self.process.kill)
            for stop in stops:
                if stop is not None:
                    stop()
                try:
                    self.process.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    continue
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        self.broken = True

    @property
    def is_open(self) -> bool:
        return self._socket is not None and not self.broken

    def output(self) -> str:
        """The last ``LOG_TAIL`` characters the simulator process wrote (stdout and stderr)."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0, os.SEEK_END)
        size = self._log.tell()
        self._log.seek(max(0, size - LOG_TAIL))
        return self._log.read().decode("utf-8", errors="replace")

    def _bound_log(self) -> None:
        """Keep only the last ``LOG_KEEP`` bytes (at most half of ``LOG_LIMIT``) of the output file once it holds
        more than ``LOG_LIMIT`` (a simulator that prints every run must not fill the disk). Output written while
        the tail is copied may be lost: it is a diagnostic, quoted when the process crashes."""
        if self._log is None or os.fstat(self._log.fileno()).st_size <= LOG_LIMIT:
            return
        self._log.flush()
        self._log.seek(-min(LOG_KEEP, LOG_LIMIT // 2), os.SEEK_END)
        tail = self._log.read()
        self._log.truncate(0)
        self._log.write(tail)
        self._log.flush()

    # --- messages -------------------------------------------------------------------------------------------

    def request(self, message, run: int | None = None, address: str | None = None, timeout: float | None = None):
        """Send ``message`` and return the simulator's reply, decoded.

        ``PPXCrashError`` if the process exits meanwhile, ``PPXTimeoutError`` after ``timeout`` seconds,
        ``PPXProtocolError`` for a reply that is not a PPX message; each leaves the connection broken."""
        zmq = _zmq()
        waiting_for = f"its reply to {_describe(message)}"
        try:
            self._socket.send(encode(message))
            deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
            while not self._socket.poll(int(POLL_SLICE * 1000)):
                if self.process is not None and self.process.poll() is not None:
                    output = self.output().strip()
                    raise PPXCrashError(
                        f"the simulator process (pid {self.process.pid}) exited with code {self.process.returncode} "
                        f"while sluice waited for {waiting_for}" +
                        (f"; its last output:\n{output}" if output else " (it wrote nothing)"), run, address)
                if time.monotonic() > deadline:
                    raise PPXTimeoutError(f"no reply within {self.timeout if timeout is None else timeout:g} s "
                                          f"while sluice waited for {waiting_for}", run, address)
            return decode(self._socket.recv())
        except PPXError as error:
            self.broken = True
            raise error.located(run, address) from None
        except zmq.ZMQError as error:
            self.broken = True
            raise PPXProtocolError(f"ZeroMQ failed while sluice waited for {waiting_for}: {error}", run,
                                   address) from None

    def run(self, answer: Callable, run: int | None = None) -> np.ndarray | None:
        """One run: send Run, answer the simulator until its RunResult, and return that result.

        ``answer(message)`` is called with each Sample (it returns the value to send back), Observe and Tag (its
        return value is ignored). An error raised by ``answer`` ends the run with that error, named by run and
        address (one that is not a ``PPXError``, such as torch refusing a distribution's parameters, becomes a
        ``PPXDistributionError``); a ``PPXReplayError`` lets the run finish first (module notes), so that the
        connection stays usable."""
        reply = self.request(Run(), run)
        failure, finish = None, None
        while not isinstance(reply, RunResult):
            if not isinstance(reply, (Sample, Observe, Tag)):
                self.broken = True
                raise PPXProtocolError(f"expected Sample, Observe, Tag or RunResult during a run, got "
                                       f"{_describe(reply)}", run)
            try:
                value = answer(reply) if failure is None else self._finish(reply, finish, failure)
            except PPXReplayError as error:
                if failure is not None:  # raised by _finish: the run did not end within the limits
                    raise
                failure, finish = error.located(run, reply.address), _Finish(run, self.timeout)
                value = self._finish(reply, finish, failure)
            except PPXError as error:
                self.broken = True
                raise error.located(run, reply.address) from None
            except Exception as error:  # torch or numpy refusing what the simulator reported: this run's failure
                self.broken = True
                raise PPXDistributionError.of(error, reply, run) from error
            except BaseException:
                self.broken = True
                raise
            if isinstance(reply, Sample):
                response = SampleResult(result=value)
            else:
                response = ObserveResult() if isinstance(reply, Observe) else TagResult()
            reply = self.request(response, run, reply.address)
        self._bound_log()
        if failure is not None:
            raise failure
        return reply.result

    def _finish(self, message, finish: _Finish, failure: PPXReplayError):
        """The answer to a message of a run that has already failed (a draw from its distribution, to reach the
        RunResult); past the limits the run is given up: its process is stopped and ``failure`` raised."""
        if finish.messages >= FINISH_MESSAGES or time.monotonic() > finish.deadline:
            self.broken = True
            self.close()  # stops the process: it is inside a run that the forced values may have made endless
            raise failure
        finish.messages += 1
        if not isinstance(message, Sample):
            return None
        try:
            return draw(message.distribution, finish.generator)
        except Exception:  # a distribution that cannot be drawn from: the run cannot be finished
            self.broken = True
            self.close()
            raise failure from None


class _Finish:
    """How a failed run is being finished: one generator that advances (seeded by the run), and the limits."""

    def __init__(self, run: int | None, timeout: float):
        self.generator = torch.Generator().manual_seed(0 if run is None else int(run))
        self.messages = 0
        self.deadline = time.monotonic() + timeout  # for the whole rest of the run, not per reply
