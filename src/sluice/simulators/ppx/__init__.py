"""PPX: simulators in any language that hand every random draw to sluice (FlatBuffers messages over ZeroMQ).

``from_ppx`` makes such a simulator a sluice Simulator (``simulator.py``); ``serve`` makes a Python function
such a simulator (``server.py``). The wire format is ``ppx.fbs`` (shipped with the package), read and written by
``messages.py``; the controller's side of the protocol is ``controller.py``. pyzmq and flatbuffers are imported
only when a simulator is started or served: ``pip install "sluice-sbi[ppx]"``.
"""

import pathlib

from .errors import (
    PPXCrashError,
    PPXDistributionError,
    PPXError,
    PPXProtocolError,
    PPXReplayError,
    PPXRunError,
    PPXRunFailedWarning,
    PPXStartError,
    PPXTimeoutError,
    PPXTraceError,
    PPXUnknownDistributionError,
)
from .messages import Distribution
from .server import serve
from .simulator import PPXSimulator, from_ppx

__all__ = ["from_ppx", "PPXSimulator", "serve", "Distribution", "PPXError", "PPXRunError", "PPXCrashError",
           "PPXDistributionError", "PPXTimeoutError", "PPXProtocolError", "PPXUnknownDistributionError",
           "PPXTraceError", "PPXReplayError", "PPXStartError", "PPXRunFailedWarning", "SCHEMA"]

SCHEMA = str(pathlib.Path(__file__).with_name("ppx.fbs"))  # the schema shipped with the package, for `flatc --cpp`
