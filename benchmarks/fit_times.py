"""Fit time of the slowest methods at N = 10 000 on one thread, one fit at a time (quiet-machine timing).

Run: .venv/bin/python benchmarks/fit_times.py   (prints; the last run is in benchmarks/results/fit_times.txt)
"""

import time

import torch

import sluice
from sluice.app.benchmarks import TASKS

SLOWEST = {"mixture": ["SCANDAL", "SALLY", "SALLINO", "ALICES", "CASCAL", "NDE"], "galton": ["ALICES", "SCANDAL"]}

if __name__ == "__main__":
    torch.set_num_threads(1)
    for task_name, methods in SLOWEST.items():
        task = TASKS[task_name]()
        for method in methods:
            data = task.training_data(method, 10_000, 0)
            started = time.perf_counter()
            estimator = getattr(sluice.estimators, method)().fit(data, seed=0, progress=False)
            seconds = time.perf_counter() - started
            print(f"{task_name:8s} {method:8s} fit {seconds:6.1f} s  error {task.error(estimator):.5f}", flush=True)
