"""Throughput at scale: simulation in this process, in 1 and 2 local workers and on a 2-worker Dask LocalCluster;
streaming to HDF5; training from an HDF5 file against training in memory.

Run: .venv/bin/python benchmarks/scale_throughput.py [--galton-n 2000000] [--lv-n 40000] [--train-n 100000]
Prints a table and writes it to benchmarks/results/scale_throughput.md. Every ratio comes from this one run; the
load average (other jobs share the cores) is printed beside each section.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time

import torch

import sluice


def load() -> str:
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


def cpu_seconds(clients) -> float:
    """CPU time of this process (every thread), of its finished children (local workers, once their pool is shut
    down) and of the Dask workers: the work each backend costs, which the other jobs on the machine do not
    change as much as they change wall time."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = time.process_time() + children.ru_utime + children.ru_stime
    for client in clients.values():
        total += sum(client.run(time.process_time).values())
    return total


def _spin(seconds_of_work: int) -> None:
    total = 0
    for i in range(seconds_of_work * 4_000_000):
        total += i


def parallel_ceiling() -> float:
    """How much faster 2 processes get a fixed CPU-bound work done than 1, right now: 2.0 on two free cores,
    about 1 when other jobs already fill them. The most 2 workers could gain at this moment."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    times = []
    for count in (1, 2):
        processes = [context.Process(target=_spin, args=(1,)) for _ in range(count)]
        start = time.perf_counter()
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        times.append(time.perf_counter() - start)
    return 2 * times[0] / times[1]


def best_of(repeats: int, work, clients) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of the fastest of ``repeats`` runs."""
    runs = []
    for _ in range(repeats):
        cpu, start = cpu_seconds(clients), time.perf_counter()
        work()
        runs.append((time.perf_counter() - start, cpu_seconds(clients) - cpu))
    return min(runs)


def simulation_rows(name, simulator, prior, n, batch_size, clients, repeats, folder):
    """Seconds for each backend on the same n rows; the backends take turns, best of ``repeats``."""
    def run(**options):
        return lambda: sluice.simulate(simulator, prior, n, seed=0, batch_size=batch_size, **options)

    def to_file():
        path = os.path.join(folder, f"{name}.h5")
        sluice.simulate(simulator, prior, n, seed=0, batch_size=batch_size, path=path, overwrite=True)

    backends = {"this process (in memory)": run(), "this process, streamed to HDF5 (path=)": to_file,
                "1 local worker (workers=1)": run(workers=1), "2 local workers (workers=2)": run(workers=2)}
    for label, client in clients.items():
        backends[label] = run(scheduler=client)
    before, ceiling = load(), parallel_ceiling()
    seconds = {label: best_of(repeats, work, clients) for label, work in backends.items()}
    ceiling = (ceiling + parallel_ceiling()) / 2
    rows = [f"| **{name}**, n = {n:,}, batch {batch_size:,} (load {before} → {load()}; 2 plain busy processes "
            f"ran ×{ceiling:.2f} as fast as 1) | | | | | |"]
    one_wall, one_cpu = seconds["1 local worker (workers=1)"]
    for label, (wall, cpu) in seconds.items():
        rows.append(f"| {label} | {wall:.2f} | {n / wall:,.0f} | {one_wall / wall:.2f} | {cpu:.2f} | "
                    f"{one_cpu / cpu:.2f} |")
    return rows, seconds


def training_rows(n: int, epochs: int, folder: str):
    """ALICES on Galton, the same epochs (so nearly the same steps) from memory and from an HDF5 file."""
    board = sluice.simulators.GaltonBoard()
    path = os.path.join(folder, "train.h5")
    on_disk = sluice.simulate(board, board.default_prior(), n, seed=1, path=path, overwrite=True)
    in_memory = on_disk.load()
    before = load()
    seconds = {}
    for label, data in (("in memory (AugmentedData)", in_memory), ("from HDF5 (AugmentedData.open)", on_disk)) * 3:
        estimator = sluice.estimators.ALICES()
        cpu, start = time.process_time(), time.perf_counter()
        estimator.fit(data, epochs=epochs, progress=False)
        run = (time.perf_counter() - start, time.process_time() - cpu)
        seconds[label] = min(seconds.get(label, run), run)
    steps = epochs * -(-int(0.8 * n) // 128)
    rows = [f"| **ALICES on Galton**, n = {n:,}, {epochs} epochs of about {steps // epochs:,} steps, batch 128 "
            f"(load {before} → {load()}) | | | | | |"]
    memory_wall, memory_cpu = seconds["in memory (AugmentedData)"]
    for label, (wall, cpu) in seconds.items():
        rows.append(f"| {label} | {wall:.2f} | {steps / wall:,.0f} steps/s | {wall / memory_wall:.2f} | {cpu:.2f} | "
                    f"{cpu / memory_cpu:.2f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--galton-n", type=int, default=2_000_000)
    parser.add_argument("--galton-batch", type=int, default=20_000)
    parser.add_argument("--lv-n", type=int, default=40_000)
    parser.add_argument("--lv-batch", type=int, default=10_000)
    parser.add_argument("--train-n", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "scale_throughput.md"))
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    clients, clusters = {}, []
    try:
        import dask
        from distributed import Client, LocalCluster

        # Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in its workers; glibc then maps and unmaps every large
        # buffer, which slows torch's big temporaries down (docs/scale.md): measure with and without it
        # the unset one first: a nanny leaves its pre-spawn variables in this process's environment
        for label, trim in (("Dask LocalCluster, 2 workers, MALLOC_TRIM_THRESHOLD_ unset", None),
                            ("Dask LocalCluster, 2 workers (Dask's defaults)", 65536)):
            dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": trim})
            clusters.append(LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                         dashboard_address=None))
            clients[label] = Client(clusters[-1])
            found = set(clients[label].run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")).values())
            assert found == {None if trim is None else str(trim)}, found
    except ImportError:
        print("Dask is not installed: no Dask rows (pip install 'sluice-sbi[dask]')")
    lines = ["# Throughput at scale", "",
             f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; every batch runs on one torch "
             "thread. Load average (1/5/15 min) before → after each section: other jobs share these cores.", "",
             "Wall time is what you wait; on a shared machine it depends on the other jobs. CPU seconds (this "
             "process, its workers, the Dask workers) is what each backend costs: where 2 workers cost no more CPU "
             "than 1, two free cores would run them twice as fast. Best of the repeats, the backends taking turns. "
             "The ceiling beside each section (2 plain CPU-bound processes against 1, measured before and after it) "
             "is the most any 2 workers could gain on the machine at that time.",
             "", "| simulation | wall s | rows/s | × 1 worker (wall) | CPU s | CPU efficiency vs 1 worker |",
             "|---|---|---|---|---|---|"]
    try:
        with tempfile.TemporaryDirectory() as folder:
            board = sluice.simulators.GaltonBoard()
            rows, _ = simulation_rows("Galton", board, board.default_prior(), arguments.galton_n,
                                      arguments.galton_batch, clients, arguments.repeats, folder)
            lines += rows
            if arguments.lv_n:
                volterra = sluice.simulators.LotkaVolterra()
                rows, _ = simulation_rows("Lotka–Volterra", volterra, volterra.default_prior(), arguments.lv_n,
                                          arguments.lv_batch, clients, 1, folder)
                lines += rows
            lines += ["", "| training | wall s | throughput | × in memory (wall) | CPU s | × in memory (CPU) |",
                      "|---|---|---|---|---|---|"]
            lines += training_rows(arguments.train_n, arguments.epochs, folder)
    finally:
        for client in clients.values():
            client.close()
        for cluster in clusters:
            cluster.close()
    text = "\n".join(lines) + "\n"
    print(text)
    with open(arguments.out, "w") as file:
        file.write(text)
    print(f"wrote {arguments.out}")


if __name__ == "__main__":
    main()
