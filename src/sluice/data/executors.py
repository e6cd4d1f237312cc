"""Where simulation batches run: in this process, in local worker processes, or on a Dask cluster.

One engine drives both parallel backends through the ``concurrent.futures`` interface: a
``ProcessPoolExecutor`` for ``workers=K``, and ``Client.get_executor()`` (a ``concurrent.futures.Executor``)
for ``scheduler="tcp://..."`` or a ``dask.distributed.Client``. It keeps a window of about two batches per
worker in flight (so finished batches never pile up in memory) and hands each result back as it finishes,
in whatever order; the caller stores results by batch index, so the output does not depend on the order.

Failures. A local worker that dies (killed, out of memory, ``os._exit``) breaks the whole pool
(``BrokenProcessPool``): the engine keeps the batches that had finished, starts a new pool and resubmits the
rest, up to ``RETRIES`` times in a row before ``WorkerCrashError``. On Dask the scheduler reruns the tasks of
a worker that died by itself, and ``retries=RETRIES`` reruns a task that raised. An exception raised by the
simulator in a local worker is not retried: it reaches the caller as it was raised.

Local workers are forked on Linux (they start in a tenth of a second, need no ``if __name__ == "__main__"``
guard and see simulators defined anywhere, notebooks included) and spawned elsewhere; each runs torch on one
thread. The job (simulator, prior, ...) must pickle: it is pickled once per pool (cloudpickle once per task on
Dask), and a job that cannot be pickled is refused before anything runs.
"""

from __future__ import annotations

import multiprocessing
import pickle
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

import torch

__all__ = ["WorkerCrashError", "batch_runner", "RETRIES"]

RETRIES = 3  # pool restarts after worker deaths in a row (local); task retries (Dask)


class WorkerCrashError(RuntimeError):
    """Worker processes kept dying while running batches."""


def _pickled(job, dumps, option: str) -> bytes:
    try:
        return dumps(job)
    except Exception as error:  # pickling raises many kinds (PicklingError, TypeError, AttributeError)
        raise TypeError(f"{option} runs batches in other processes, so the simulator and prior must pickle, and "
                        f"this one does not ({type(error).__name__}: {str(error).splitlines()[0]}); define classes at "
                        "module level and keep lambdas, open files and locks out of their attributes") from None


_installed_job = None


def _install(payload: bytes) -> None:
    global _installed_job
    torch.set_num_threads(1)  # K workers on K cores: one thread each
    _installed_job = pickle.loads(payload)


def _run_installed(index: int):
    return _installed_job(index)


class _LocalProcesses:
    def __init__(self, job, workers: int):
        self.payload = _pickled(job, pickle.dumps, f"workers={workers}")
        self.workers, self.window = workers, 2 * workers
        self.context = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
        self._start()

    def _start(self) -> None:
        self.executor = ProcessPoolExecutor(self.workers, mp_context=self.context, initializer=_install,
                                            initargs=(self.payload,))

    def submit(self, index: int):
        return self.executor.submit(_run_installed, index)

    def restart(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self._start()

    def close(self, failed: bool) -> None:
        self.executor.shutdown(wait=not failed, cancel_futures=True)


class _DaskCluster:
    def __init__(self, job, scheduler):
        try:
            import cloudpickle
            from distributed import Client
        except ImportError:
            raise ImportError("scheduler= runs batches on a Dask cluster, which needs Dask: "
                              "pip install 'sluice-sbi[dask]'") from None
        if isinstance(scheduler, Client):
            self.client, self.owned = scheduler, False
        elif isinstance(scheduler, str):
            self.client, self.owned = Client(scheduler, set_as_default=False), True
        else:
            raise TypeError(f"scheduler must be an address such as 'tcp://host:8786' or a dask.distributed.Client, "
                            f"got {type(scheduler).__name__}")
        _pickled(job, cloudpickle.dumps, "scheduler=")
        self.job = job
        self.executor = self.client.get_executor(retries=RETRIES, pure=False)
        self._window, self._checked = 4, 0.0

    @property
    def window(self) -> int:
        """Two batches per worker thread, re-read every few seconds (a cluster may grow or shrink)."""
        if time.monotonic() - self._checked > 5.0:
            self._window = max(4, 2 * sum(self.client.nthreads().values()))
            self._checked = time.monotonic()
        return self._window

    def submit(self, index: int):
        return self.executor.submit(self.job, index)

    def restart(self) -> None:
        raise AssertionError("a Dask executor never breaks like a process pool")

    def close(self, failed: bool) -> None:
        self.executor.shutdown(wait=False)
        if self.owned:
            self.client.close()


def _drive(backend, indices) -> Iterator:
    pending, running, crashes = deque(indices), {}, 0
    while pending or running:
        broken = False
        try:
            while pending and len(running) < backend.window:
                running[backend.submit(pending[0])] = pending[0]
                pending.popleft()
        except BrokenProcessPool:
            broken = True
        lost, done = [], ()
        if running:
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in done:
                index = running.pop(future)
                if isinstance(future.exception(), BrokenProcessPool):
                    lost.append(index)
                else:
                    yield future.result()  # a simulator's own exception is raised here
        if lost or broken:  # the pool is gone: keep what finished, redo the rest in a new pool
            for future, index in running.items():
                if future.done() and future.exception() is None:
                    yield future.result()
                else:
                    lost.append(index)
            running.clear()
            crashes += 1
            if crashes > RETRIES:
                raise WorkerCrashError(f"worker processes died {crashes} times while running batches "
                                       f"{sorted(lost)}: the simulator crashes its process (or memory runs out)")
            backend.restart()
            pending.extendleft(sorted(lost, reverse=True))
        elif done:
            crashes = 0


@contextmanager
def batch_runner(job: Callable, workers: int | None = None, scheduler=None):
    """A context giving ``results(indices)``, an iterator over ``job(index)`` for each index, run in this process
    (the default), in ``workers`` local processes, or on the Dask cluster ``scheduler`` (module notes)."""
    if workers is not None and scheduler is not None:
        raise ValueError("give workers (local processes) or scheduler (a Dask cluster), not both")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive whole number, got {workers!r}")
    backend = None
    if scheduler is not None:
        backend = _DaskCluster(job, scheduler)
    elif workers is not None:
        backend = _LocalProcesses(job, workers)
    failed = True
    try:
        yield (lambda indices: (job(index) for index in indices)) if backend is None else \
            (lambda indices: _drive(backend, indices))
        failed = False
    finally:
        if backend is not None:
            backend.close(failed)
