"""The simulator's side of PPX in Python: serve a Python function as a PPX simulator process.

``serve(model, address)`` binds a ZeroMQ REP socket at ``address`` and answers the controller (sluice's
``from_ppx``, or any PPX controller): a Handshake with the model's name, each Run with one call
``model(ppx)``, a Reset by ending. Inside the model every random draw goes through the controller::

    def model(ppx):
        energy = ppx.sample(Distribution("Normal", mean=10.0, stddev=2.0), address="energy")
        ppx.tag(energy ** 2, address="energy_squared")
        ppx.observe(Distribution("Poisson", rate=energy), address="counts")  # x, drawn by the controller
        return energy                                                        # the run's result

    if __name__ == "__main__":
        serve(model, sys.argv[-1])    # sluice passes the address to bind as the last argument

``sample`` returns the value that the controller chose, a float64 numpy array (0-d for a scalar); the model
must not draw random numbers of its own, or its runs cannot be replayed. An exception in the model ends the
process with its traceback, which the controller reports as a crash of that run.

This module imports neither torch nor the rest of sluice (only numpy, pyzmq and flatbuffers), so that a
Python simulator process starts in a fraction of a second.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import PPXProtocolError
from .messages import (
    INSTALL_HINT,
    Distribution,
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

__all__ = ["serve", "PPXModelRun", "Distribution"]

PARENT_CHECK_MS = 1000  # how often a waiting server checks that the process that started it is still there


def _zmq():
    try:
        import zmq
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return zmq


class _Channel:
    """The REP socket: receive a request, send its reply, and give up when the parent process is gone (a
    controller that died without a Reset must not leave the simulator waiting forever)."""

    def __init__(self, socket, parent: int | None):
        self.socket, self.parent = socket, parent

    def receive(self):
        while not self.socket.poll(PARENT_CHECK_MS):
            if self.parent is not None and os.getppid() != self.parent:
                raise SystemExit(f"PPX server at pid {os.getpid()}: the controller's process is gone")
        return decode(self.socket.recv())

    def send(self, message) -> None:
        self.socket.send(encode(message))


class PPXModelRun:
    """What a model served by ``serve`` calls during one run: ``sample``, ``observe`` and ``tag``."""

    def __init__(self, channel: _Channel):
        self._channel = channel

    def _exchange(self, message, expected: type):
        self._channel.send(message)
        reply = self._channel.receive()
        if not isinstance(reply, expected):
            raise PPXProtocolError(f"expected {expected.__name__} from the controller, got {type(reply).__name__}",
                                   address=message.address)
        return reply

    def sample(self, distribution: Distribution, address: str, name: str = "", control: bool = True) -> np.ndarray:
        """The value the controller chose for this draw from ``distribution`` (float64 array, 0-d for a scalar).

        ``address`` names the site; a site met again in a loop keeps its address (the controller counts it)."""
        reply = self._exchange(Sample(address=address, name=name, distribution=distribution, control=control),
                               SampleResult)
        if reply.result is None:
            raise PPXProtocolError("the controller's SampleResult carries no value", address=address)
        return reply.result

    def observe(self, distribution: Distribution, value=None, address: str = "", name: str = "") -> None:
        """Declare an observation from ``distribution``: with ``value`` the run's own, without it drawn by the
        controller (the model does not see it)."""
        self._exchange(Observe(address=address, name=name, distribution=distribution,
                               value=None if value is None else np.asarray(value, dtype=np.float64)), ObserveResult)

    def tag(self, value, address: str, name: str = "") -> None:
        """Record a value computed by the run (not random)."""
        self._exchange(Tag(address=address, name=name, value=np.asarray(value, dtype=np.float64)), TagResult)


def serve(model, address: str, model_name: str | None = None, system_name: str = "sluice.ppx.server") -> None:
    """Serve ``model(ppx) -> result`` as a PPX simulator bound at ``address`` until the controller sends Reset.

    ``address``: a ZeroMQ endpoint to bind, ``ipc:///tmp/name`` or ``tcp://127.0.0.1:5555``. The result of a run
    (a number, an array or None) is sent as its RunResult."""
    zmq = _zmq()
    context = zmq.Context()
    socket = context.socket(zmq.REP)
    socket.bind(address)
    channel = _Channel(socket, parent=os.getppid())
    try:
        while True:
            request = channel.receive()
            if isinstance(request, Handshake):
                channel.send(HandshakeResult(system_name=system_name,
                                             model_name=model_name or getattr(model, "__name__", "model")))
            elif isinstance(request, Run):
                result = model(PPXModelRun(channel))
                channel.send(RunResult(result=None if result is None else np.asarray(result, dtype=np.float64)))
            elif isinstance(request, Reset):
                channel.send(Reset())
                return
            else:
                raise PPXProtocolError(f"expected Handshake, Run or Reset from the controller, got "
                                       f"{type(request).__name__}")
    finally:
        socket.close(linger=200)  # long enough for the reply to a Reset to leave
        context.term()
