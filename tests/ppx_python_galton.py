"""The Galton board of sluice.simulators.GaltonBoard, written as a PPX simulator and served from Python.

    python tests/ppx_python_galton.py [--observe] [--fault KIND[:ARGUMENT]] ADDRESS

binds ADDRESS (sluice appends it to the command) and serves runs of the board: θ from the Sample site "theta",
the 20 decisions from the Bernoulli Sample site "level" (1: right, with the built-in's probability), the final
nail as the RunResult. With --observe the run returns nothing and reports x through other sites instead: a
reading of the nail, Normal(nail, 1.5) at the Observe site "reading" (drawn by the controller), and the nail
itself at the Tag site "nail". The faults make the misbehaving simulators of tests/test_ppx_simulator.py:

    crash-below:T         the process dies (an exception) when θ < T
    crash-once:PATH       the process dies in its second run if PATH does not exist (and creates it)
    hang-below:T          the run stops answering when θ < T
    malformed-below:T     sends bytes that are no PPX message when θ < T
    unknown-distribution  draws the decisions from a distribution type that is not in the schema
    theta-branch          an extra Normal draw "kick" before the board when θ > −0.7 (control flow that depends on θ)
    rejection             draws u ~ U(0, 1) at "u" until u ≤ θ + 1.3 before the board (a loop that θ ends)
    observe-theta         an Observe at "o" of its own value 3(θ + 1) from Normal(0, 1), before the board
    shape-theta           a Normal draw at "vector" of 1 value when θ < −0.7, else 2, before the board
    address:NAME          an extra Normal draw at the address NAME before the board
    theta-in-x            x depends on θ beyond the draws: the Tag "nail" (--observe) or the RunResult is nail + θ
    heavy                 an Observe at "heavy" of the value 141 from Normal(0, 1): log p ≈ −1e4, θ-free
    chatty                writes 4 kB to its output in each run
    negative-probs-below:T  a Categorical draw at "bad" with probs (0.5, −0.05) when θ < T (torch refuses it)
    categories            a Categorical draw at "category": probs (0.01, 0.99) when θ > −0.7, else one category

It imports sluice's server module without sluice itself (no torch), so that a process starts in a fraction of a
second: the tests start a dozen.
"""

from __future__ import annotations

import argparse
import importlib
import math
import pathlib
import sys
import time
import types


def load_server():
    """sluice.simulators.ppx.server, loaded from the source tree as a package of its own: importing sluice
    would import torch, seconds per process."""
    folder = pathlib.Path(__file__).resolve().parents[1] / "src" / "sluice" / "simulators" / "ppx"
    if not (folder / "server.py").exists():
        return importlib.import_module("sluice.simulators.ppx.server")
    package = types.ModuleType("_sluice_ppx")
    package.__path__ = [str(folder)]
    sys.modules["_sluice_ppx"] = package
    return importlib.import_module("_sluice_ppx.server")


server = load_server()
messages = sys.modules[server.__name__.rpartition(".")[0] + ".messages"]
Distribution = messages.Distribution

N_LEVELS, N_NAILS, START = 20, 31, 15


def probability_right(level: int, nail: int, theta: float) -> float:
    """1 − P_left(ℓ, p; θ) = ½(1 − s) + s σ(−10 θ (2p/30 − 1)), s = sin(πℓ/19): GaltonBoard's, written out."""
    wiggle = math.sin(math.pi * level / (N_LEVELS - 1))
    slope = 10.0 * theta * (2.0 * nail / (N_NAILS - 1) - 1.0)
    return 0.5 * (1.0 - wiggle) + wiggle / (1.0 + math.exp(slope))


READING_WIDTH = 1.5


def make_model(fault: str | None, observe: bool):
    kind, _, argument = (fault or "").partition(":")
    runs = 0

    def galton(ppx):
        nonlocal runs
        runs += 1
        theta = float(ppx.sample(Distribution("Uniform", low=-1.0, high=-0.4), address="theta"))
        below = kind.endswith("-below") and theta < float(argument)
        if kind == "crash-below" and below:
            raise RuntimeError(f"deliberate crash at theta = {theta}")
        if kind == "crash-once" and runs == 2 and not pathlib.Path(argument).exists():
            pathlib.Path(argument).touch()
            raise RuntimeError("deliberate crash, once")
        if kind == "hang-below" and below:
            time.sleep(3600)
        if kind == "malformed-below" and below:
            ppx._channel.socket.send(b"this is not a PPX message")
            ppx._channel.socket.recv()  # the controller gives up on us; wait to be stopped
        if kind == "theta-branch" and theta > -0.7:
            ppx.sample(Distribution("Normal", mean=0.0, stddev=1.0), address="kick")
        if kind == "rejection":
            while float(ppx.sample(Distribution("Uniform", low=0.0, high=1.0), address="u")) > theta + 1.3:
                pass
        if kind == "observe-theta":
            ppx.observe(Distribution("Normal", mean=0.0, stddev=1.0), value=3.0 * (theta + 1.0), address="o")
        if kind == "shape-theta":
            ppx.sample(Distribution("Normal", mean=[0.0] * (1 if theta < -0.7 else 2), stddev=1.0), address="vector")
        if kind == "address":
            ppx.sample(Distribution("Normal", mean=0.0, stddev=1.0), address=argument)
        if kind == "heavy":
            ppx.observe(Distribution("Normal", mean=0.0, stddev=1.0), value=141.0, address="heavy")
        if kind == "chatty":
            sys.stdout.write("chatter " * 512)
            sys.stdout.flush()
        if kind == "negative-probs-below" and below:
            ppx.sample(Distribution("Categorical", probs=[0.5, -0.05]), address="bad")
        if kind == "categories":
            ppx.sample(Distribution("Categorical", probs=[0.01, 0.99] if theta > -0.7 else [1.0]), address="category")
        nail = START
        for level in range(N_LEVELS):
            right = probability_right(level, nail, theta)
            distribution = messages.UnknownDistribution(42) if kind == "unknown-distribution" else \
                Distribution("Bernoulli", probs=right)
            nail += int(ppx.sample(distribution, address="level")) - level % 2
        shown = float(nail) + (theta if kind == "theta-in-x" else 0.0)
        if observe:
            ppx.observe(Distribution("Normal", mean=float(nail), stddev=READING_WIDTH), address="reading")
            ppx.tag(shown, address="nail")
            return None
        return shown

    return galton


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fault", default=None)
    parser.add_argument("--observe", action="store_true")
    parser.add_argument("address")
    arguments = parser.parse_args()
    server.serve(make_model(arguments.fault, arguments.observe), arguments.address, model_name="galton")


if __name__ == "__main__":
    main()
