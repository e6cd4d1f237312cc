"""Fit time of the slowest methods at N = 10 000 on one thread, one fit at a time (quiet-machine timing).

Run: .venv/bin/python benchmarks/fit_times.py
"""
import time

import torch

import sluice
from sluice.benchmarks import TASKS

torch.set_num_threads(1)
for task_name, methods in [("mixture", ["SCANDAL", "SALLY", "SALLINO", "ALICES", "CASCAL", "NDE"]), ("galton", ["ALICES", "SCANDAL"])]:
    task = TASKS[task_name]()
    for m in methods:
        data = task.training_data(m, 10_000, 0)
        t = time.perf_counter(); est = getattr(sluice.estimators, m)().fit(data, seed=0, progress=False)
        print(f"{task_name:8s} {m:8s} fit {time.perf_counter()-t:6.1f} s  error {task.error(est):.5f}", flush=True)
